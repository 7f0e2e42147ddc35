// RetinaFace's pre- and post-processing for the browser module (ghostfacenets.mjs), with the package's numbers
// (ghostfacenets.models.retinaface): the detector's input, anchors, decoding and OpenCV's NMSBoxes.

import { FaceError, resizeArea, roundHalfEven } from "./image.mjs";

const f32 = Math.fround;

// RetinaFace (Deng et al. 2020) MobileNet-0.25 as trained by biubug6/Pytorch_Retinaface: three FPN levels, two square
// anchors per cell, SSD-style variances, BGR input minus the training mean, padded to a multiple of 32.
const STRIDES = [8, 16, 32];
const ANCHOR_SIZES = [
  [16, 32],
  [64, 128],
  [256, 512],
];
const VARIANCES = [0.1, 0.2];
const BGR_MEAN = [104, 117, 123];
const RGB_MEAN = [123, 117, 104];

/** Anchors (cx, cy, w, h) for an input of height x width, in the network's output order. */
export function retinafaceAnchors(height, width) {
  const anchors = [];
  STRIDES.forEach((stride, level) => {
    const rows = Math.ceil(height / stride);
    const cols = Math.ceil(width / stride);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        for (const size of ANCHOR_SIZES[level]) anchors.push([(c + 0.5) * stride, (r + 0.5) * stride, size, size]);
      }
    }
  });
  return anchors;
}

/** An RGB image shrunk (INTER_AREA) so that its longer side is at most maxSize, never enlarged: {pixels, w, h,
 * scale: the (x, y) scales of the shrinking}. */
function shrinkForDetection(image, maxSize) {
  const { width, height } = image;
  const factor = Math.min(1, maxSize / Math.max(height, width));
  if (factor >= 1) return { pixels: image.data, w: width, h: height, scale: [1, 1] };
  const w = Math.max(1, roundHalfEven(width * factor));
  const h = Math.max(1, roundHalfEven(height * factor));
  return { pixels: resizeArea(image, w, h), w, h, scale: [w / width, h / height] };
}

/** The detector's input for an RGB image: shrunk (INTER_AREA) so that its longer side is at most maxSize, BGR minus
 * the mean, padded to a multiple of 32, NCHW float32; with the (x, y) scales of the shrinking. */
export function detectorInput(image, maxSize) {
  const { pixels, w, h, scale } = shrinkForDetection(image, maxSize);
  const ph = Math.ceil(h / 32) * 32;
  const pw = Math.ceil(w / 32) * 32;
  const tensor = new Float32Array(3 * ph * pw);
  const plane = ph * pw;
  const [blue, green, red] = BGR_MEAN;
  for (let y = 0; y < h; y++) {
    let s = y * w * 3;
    for (let d = y * pw, end = d + w; d < end; d++, s += 3) {
      tensor[d] = pixels[s + 2] - blue;
      tensor[plane + d] = pixels[s + 1] - green;
      tensor[2 * plane + d] = pixels[s] - red;
    }
  }
  return { tensor, dims: [1, 3, ph, pw], scale };
}

/** The masked detector's input (the LiteRT file): the shrunk photo RGB minus the mean at the top left of the
 * smallest of the file's inputs ([height, width]) that holds it padded to 32, zeros elsewhere, NHWC float32; with
 * the area (the padded photo), the input's shape and the scales. dims are the area's, as detectorInput's. */
export function maskedDetectorInput(image, maxSize, inputs) {
  const { pixels, w, h, scale } = shrinkForDetection(image, maxSize);
  const ph = Math.ceil(h / 32) * 32;
  const pw = Math.ceil(w / 32) * 32;
  const fitting = inputs.filter(([H, W]) => H >= ph && W >= pw).sort((a, b) => a[0] * a[1] - b[0] * b[1]);
  if (!fitting.length) throw new FaceError(`no detector input holds a ${pw}x${ph} photo`, "INTERNAL");
  const [H, W] = fitting[0];
  const tensor = new Float32Array(H * W * 3);
  const [red, green, blue] = RGB_MEAN;
  for (let y = 0; y < h; y++) {
    for (let x = 0, s = y * w * 3, d = y * W * 3; x < w; x++, s += 3, d += 3) {
      tensor[d] = pixels[s] - red;
      tensor[d + 1] = pixels[s + 1] - green;
      tensor[d + 2] = pixels[s + 2] - blue;
    }
  }
  return { tensor, shape: [H, W], area: [ph, pw], dims: [1, 3, ph, pw], scale };
}

/** Where the anchors of the top-left area (ph x pw) of an input of height x width lie among the input's anchors, as
 * runs [first, count] in the area's anchor order (what the network gives for the area alone): one run per row of
 * each level, a single run when the area is the whole input. */
export function areaAnchors([height, width], [ph, pw]) {
  if (ph === height && pw === width) {
    const total = STRIDES.reduce((n, stride) => n + 2 * (height / stride) * (width / stride), 0);
    return [[0, total]];
  }
  const runs = [];
  let offset = 0;
  for (const stride of STRIDES) {
    const cells = width / stride;
    for (let r = 0; r < ph / stride; r++) runs.push([offset + 2 * r * cells, 2 * (pw / stride)]);
    offset += 2 * (height / stride) * cells;
  }
  return runs;
}

function iou(a, b) {
  // OpenCV's rectOverlap of Rect2d (x, y, w, h)
  const x1 = Math.max(a[0], b[0]);
  const y1 = Math.max(a[1], b[1]);
  const x2 = Math.min(a[0] + a[2], b[0] + b[2]);
  const y2 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = x2 > x1 && y2 > y1 ? (x2 - x1) * (y2 - y1) : 0;
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

/** OpenCV's dnn.NMSBoxes: indices of the kept (x, y, w, h) boxes, highest score first (ties: lower index first). */
export function nmsBoxes(boxes, scores, scoreThreshold, nmsThreshold) {
  const order = scores
    .map((score, i) => [score, i])
    .filter(([score]) => f32(score) > f32(scoreThreshold))
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .map(([, i]) => i);
  const kept = [];
  for (const i of order) {
    if (kept.every((k) => f32(iou(boxes[i], boxes[k])) <= f32(nmsThreshold))) kept.push(i);
  }
  return kept;
}

/** Faces from the detector's outputs (loc (A, 4), conf (A, 2), landmarks (A, 10)), in image pixels, highest score
 * first; what ghostfacenets.pipeline.detect.RetinaFaceDetector.detect returns. */
export function decodeDetections(outputs, input, image, options) {
  const { loc, conf, landmarks } = outputs;
  const { scoreThreshold, nmsThreshold, minFace } = options;
  const anchors = retinafaceAnchors(input.dims[2], input.dims[3]);
  const [sx, sy] = input.scale;
  const [cv, sv] = VARIANCES;
  const candidates = [];
  for (let a = 0; a < anchors.length; a++) {
    const score = conf[a * 2 + 1];
    if (!(f32(score) >= f32(scoreThreshold))) continue;
    const [acx, acy, aw, ah] = anchors[a];
    const cx = f32(acx + f32(f32(f32(loc[a * 4] * f32(cv)) * aw)));
    const cy = f32(acy + f32(f32(f32(loc[a * 4 + 1] * f32(cv)) * ah)));
    const w = f32(aw * f32(Math.exp(f32(loc[a * 4 + 2] * f32(sv)))));
    const h = f32(ah * f32(Math.exp(f32(loc[a * 4 + 3] * f32(sv)))));
    const clip = (v, limit) => Math.min(Math.max(v, 0), limit);
    const box = [
      clip(f32(f32(cx - f32(w / 2)) / sx), image.width),
      clip(f32(f32(cy - f32(h / 2)) / sy), image.height),
      clip(f32(f32(cx + f32(w / 2)) / sx), image.width),
      clip(f32(f32(cy + f32(h / 2)) / sy), image.height),
    ];
    const points = [];
    for (let p = 0; p < 5; p++) {
      const px = f32(acx + f32(f32(landmarks[a * 10 + 2 * p] * f32(cv)) * aw));
      const py = f32(acy + f32(f32(landmarks[a * 10 + 2 * p + 1] * f32(cv)) * ah));
      points.push([f32(px / sx), f32(py / sy)]);
    }
    candidates.push({ box, score, landmarks: points });
  }
  const xywh = candidates.map(({ box }) => [box[0], box[1], f32(box[2] - box[0]), f32(box[3] - box[1])]);
  const kept = nmsBoxes(
    xywh,
    candidates.map((c) => c.score),
    scoreThreshold,
    nmsThreshold,
  );
  const faces = kept
    .filter((i) => Math.min(xywh[i][2], xywh[i][3]) >= Math.max(minFace, 1))
    .map((i) => candidates[i]);
  return faces.sort((a, b) => b.score - a.score);
}

export const faceArea = (face) => Math.max(face.box[2] - face.box[0], 0) * Math.max(face.box[3] - face.box[1], 0);
