"""The reference liveness predictor, built from Silent-Face-Anti-Spoofing's own files (vendored verbatim in
``silent_face_reference/``, Apache-2.0): its ``MiniFASNet.py`` networks with its released ``.pth`` weights, its
``CropImage`` patches and ``parse_model_name``. The few lines of ``AntiSpoofPredict.predict`` and of ``test.py``'s
fusion loop (files that also load a Caffe detector) are transcribed here, marked as such."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tests.helpers.silent_face_reference import MiniFASNet, generate_patches, utility

REFERENCE = Path(__file__).resolve().parent / "silent_face_reference"
MODEL_FILES = ("2.7_80x80_MiniFASNetV2.pth", "4_0_0_80x80_MiniFASNetV1SE.pth")
SAMPLES = REFERENCE / "sample"
# The repository's labelled samples: F = fake (attack), T = true (live).
SAMPLE_LABELS = {"image_F1.jpg": False, "image_F2.jpg": False, "image_T1.jpg": True}
MODEL_MAPPING = {"MiniFASNetV2": MiniFASNet.MiniFASNetV2, "MiniFASNetV1SE": MiniFASNet.MiniFASNetV1SE}


class ReferencePredictor:
    """``test.py``'s prediction for a BGR image and a ``[x, y, w, h]`` box: the sum of both models' softmax outputs."""

    def __init__(self) -> None:
        self.models = []
        for name in MODEL_FILES:
            # AntiSpoofPredict._load_model, transcribed: the model from its file name, 'module.' keys stripped.
            h_input, w_input, model_type, scale = utility.parse_model_name(name)
            kernel = utility.get_kernel(h_input, w_input)
            model = MODEL_MAPPING[model_type](conv6_kernel=kernel)
            state = torch.load(REFERENCE / name, map_location="cpu", weights_only=True)
            model.load_state_dict({k[7:] if k.startswith("module.") else k: v for k, v in state.items()})
            model.eval()
            self.models.append((model, h_input, w_input, scale))
        self.cropper = generate_patches.CropImage()

    def patches(self, image_bgr: np.ndarray, bbox: list[int]) -> list[np.ndarray]:
        return [
            self.cropper.crop(org_img=image_bgr, bbox=bbox, scale=scale, out_w=w, out_h=h, crop=True)
            for _, h, w, scale in self.models
        ]

    def predict(self, image_bgr: np.ndarray, bbox: list[int]) -> np.ndarray:
        """(3,) float64: the summed softmax of both models, as ``test.py``'s ``prediction``."""
        prediction = np.zeros((1, 3))
        for (model, *_), patch in zip(self.models, self.patches(image_bgr, bbox)):
            # AntiSpoofPredict.predict, transcribed: ToTensor without /255 (src/data_io/functional.py), softmax.
            tensor = torch.from_numpy(patch.transpose((2, 0, 1))).float().unsqueeze(0)
            with torch.no_grad():
                prediction += F.softmax(model.forward(tensor), dim=1).cpu().numpy()
        return prediction[0]

    def score(self, image_bgr: np.ndarray, bbox: list[int]) -> float:
        """``test.py``'s value for the real class: prediction[1] / 2."""
        return float(self.predict(image_bgr, bbox)[1] / 2)


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image
