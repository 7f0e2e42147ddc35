"""Small evaluation sets written in the layouts the evaluation reads (MegaFace test pack, RFW, pairs files with
groups, .bin files), with synthetic identity patterns the pooled-colour toy models tell apart."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ghostfacenets.data.verification_bin import write_verification_bin

from .faces import another_image, identity_pattern, loose_crop

MEGAFACE_IDENTITIES = ["Aaron_Eckhart", "Ben_Affleck", "Carla_Gallo", "Dana_Delany", "Eva_Longoria"]
MEGAFACE_PER_IDENTITY = 4
MEGAFACE_DISTRACTORS = 150


def write_megaface_pack(root: Path, data_folder: bool = True) -> Path:
    """insightface's layout: images, lists and noise lists. Aaron_Eckhart_3.png shows Ben Affleck (listed as
    FaceScrub noise); distractor 12 (002/x5@N00/12_0.jpg) shows Carla Gallo (listed as MegaFace noise)."""
    rng = np.random.default_rng(11)
    base = root / "data" if data_folder else root
    patterns = {name: identity_pattern(rng) for name in MEGAFACE_IDENTITIES}
    facescrub = []
    for name in MEGAFACE_IDENTITIES:
        (base / "facescrub_images" / name).mkdir(parents=True)
        for k in range(MEGAFACE_PER_IDENTITY):
            shown = patterns["Ben_Affleck"] if (name, k) == ("Aaron_Eckhart", 3) else patterns[name]
            file = f"{name}_{k}.png"
            cv2.imwrite(str(base / "facescrub_images" / name / file), another_image(shown, rng)[..., ::-1])
            facescrub.append(f"{name}/{file}")
    megaface = []
    for k in range(MEGAFACE_DISTRACTORS):
        entry = f"{k % 10:03d}/x{k % 7}@N00/{k}_{k % 3}.jpg"
        (base / "megaface_images" / Path(entry).parent).mkdir(parents=True, exist_ok=True)
        image = another_image(patterns["Carla_Gallo"], rng, 5.0) if k == 12 else identity_pattern(rng)
        cv2.imwrite(str(base / "megaface_images" / entry), image[..., ::-1])
        megaface.append(entry)
    (base / "facescrub_lst").write_text("\n".join(facescrub) + "\n")
    (base / "megaface_lst").write_text("\n".join(megaface) + "\n")
    (base / "facescrub_noises.txt").write_text("#Please strictly follow the rules\nAaron_Eckhart_3.png\n")
    (base / "megaface_noises.txt").write_text(f"#Please strictly follow the rules\n1\t{megaface[12]}\n")
    return root


RFW_GROUPS = {"African": True, "Asian": True, "Zeta": False}  # group -> has a landmarks file (Zeta: aligned crops)
RFW_PHOTOS = 3


def write_rfw(root: Path, seed: int = 0) -> Path:
    """``root/test/{data,txts}``: per group 4 identities (two of them look alike) x 3 photos, 12 pairs."""
    rng = np.random.default_rng(seed)
    for group, loose in RFW_GROUPS.items():
        data, txts = root / "test" / "data" / group, root / "test" / "txts" / group
        txts.mkdir(parents=True)
        twin = identity_pattern(rng)
        patterns = [identity_pattern(rng), identity_pattern(rng), another_image(twin, rng, 8), twin]
        ids = [f"m.0{group.lower()}{i}" for i in range(4)]
        landmarks = []
        for identity, pattern in zip(ids, patterns):
            (data / identity).mkdir(parents=True)
            for n in range(1, RFW_PHOTOS + 1):
                file = f"{identity}_{n:04d}.jpg"
                photo = another_image(pattern, rng, 40)
                if loose:
                    photo, points = loose_crop(photo, rng)
                    landmarks.append(
                        f"/test/data/{group}/{identity}/{file}\t0\t" + "\t".join(f"{v:.3f}" for v in points.ravel())
                    )
                cv2.imwrite(str(data / identity / file), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
        same = [f"{ids[i]}\t{a}\t{b}" for i in range(4) for a, b in ((1, 2), (2, 3))]
        others = ((0, 1), (2, 3), (3, 2), (1, 2), (0, 3), (1, 3), (2, 0), (3, 1))
        diff = [f"{ids[i]}\t{1 + k % 3}\t{ids[j]}\t{1 + (k + 1) % 3}" for k, (i, j) in enumerate(others)]
        lines = [line for pair in zip(same, diff) for line in pair]  # interleaved: 8 same, 8 different
        (txts / f"{group}_pairs.txt").write_text("\n".join(lines) + "\n")
        if loose:
            (txts / f"{group}_lmk.txt").write_text("\n".join(landmarks) + "\n")
    (root / "test" / "data" / "Nopairs").mkdir()  # a photo folder without a pairs file is not a group
    return root


def write_group_pairs(root: Path, seed: int = 0) -> Path:
    """Aligned crops of 6 people (3 per group) and a CSV of pairs with a "region" column."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True)
    people = {}
    for person in range(6):
        pattern = identity_pattern(rng)
        for k in range(3):
            cv2.imwrite(str(root / "img" / f"p{person}_{k}.png"), another_image(pattern, rng, 45)[..., ::-1])
        people[person] = "north" if person < 3 else "south"
    rows = ["file_a,file_b,label,region,note"]
    for person, region in people.items():
        rows += [f"img/p{person}_0.png,img/p{person}_{k}.png,1,{region},x" for k in (1, 2)]
        other = person + 1 if person % 3 < 2 else person - 2
        rows += [f"img/p{person}_{k}.png,img/p{other}_{k}.png,0,{region},y" for k in (0, 1)]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def write_synthetic_bin(path: Path, seed: int, pairs: int = 20) -> Path:
    """``pairs`` pairs of smooth colour patterns (half the same pattern with noise): a set the toy model can score."""
    rng = np.random.default_rng(seed)
    images, issame = [], []
    for p in range(pairs):
        pattern = identity_pattern(rng)
        same = p % 2 == 0
        images += [another_image(pattern, rng, 40), another_image(pattern if same else identity_pattern(rng), rng, 40)]
        issame.append(same)
    return write_verification_bin(path, np.stack(images), issame)
