// GhostFaceNets in the browser: detect (RetinaFace-MobileNet0.25), align (ArcFace 5-point template) and embed
// (a GhostFaceNet) on the user's device with LiteRT.js or onnxruntime-web (the manifest names the runtime and the
// files), so that photos never leave it.
//
//   import { load } from "https://faces.example.com/web/ghostfacenets.mjs";
//   const model = await load();                       // the files named by /web/manifest.json beside this module
//   const faces = await model.faces(file);            // largest first: {box, score, landmarks, embedding}
//   const result = model.verify(facesA[0].embedding, facesB[0].embedding);
//
// The numbers equal the Python package's pipeline (ghostfacenets.pipeline) with the same files: the detector's
// pre- and post-processing (shrinking with OpenCV's INTER_AREA, anchors, decoding, OpenCV's NMSBoxes), the
// similarity transform (least squares over the five points) and OpenCV's bilinear warpAffine, reproduced in
// float32 as OpenCV computes them. docs/browser.md has the whole story.

export const INPUT_SIZE = 112;
export const ARCFACE_TEMPLATE = [
  [38.2946, 51.6963],
  [73.5318, 51.5014],
  [56.0252, 71.7366],
  [41.5493, 92.3655],
  [70.7299, 92.2041],
];
export const LANDMARK_NAMES = ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"];

const f32 = Math.fround;

export class FaceError extends Error {
  constructor(message, code) {
    super(message);
    this.name = "FaceError";
    this.code = code;
  }
}

// ------------------------------------------------------------------------------------------------ pixels
/** An RGB image {data: Uint8Array (H*W*3), width, height} from a File/Blob, ImageBitmap, ImageData, image or canvas.
 * Decoded without colour-space conversion and with the EXIF orientation applied, as the package decodes. */
export async function readPixels(source) {
  if (source && source.data && source.width && source.height && source.data.length === source.width * source.height * 3) {
    return source; // already RGB pixels
  }
  let bitmap = source;
  let close = false;
  if (typeof Blob !== "undefined" && source instanceof Blob) {
    try {
      bitmap = await createImageBitmap(source, {
        colorSpaceConversion: "none",
        premultiplyAlpha: "none",
        imageOrientation: "from-image",
      });
    } catch (error) {
      throw new FaceError(`not an image this browser can decode (${error.message})`, "INVALID_IMAGE");
    }
    close = true;
  }
  let rgba;
  let width;
  let height;
  if (typeof ImageData !== "undefined" && bitmap instanceof ImageData) {
    ({ width, height } = bitmap);
    rgba = bitmap.data;
  } else {
    width = bitmap.width || bitmap.naturalWidth || bitmap.videoWidth;
    height = bitmap.height || bitmap.naturalHeight || bitmap.videoHeight;
    const canvas = new OffscreenCanvas(width, height);
    const ctx = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
    ctx.drawImage(bitmap, 0, 0);
    rgba = ctx.getImageData(0, 0, width, height, { colorSpace: "srgb" }).data;
    if (close) bitmap.close();
  }
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    data[j] = rgba[i];
    data[j + 1] = rgba[i + 1];
    data[j + 2] = rgba[i + 2];
  }
  return { data, width, height };
}

/** Round half to even (Python's round, OpenCV's cvRound). */
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

const saturateU8 = (value) => Math.min(255, Math.max(0, roundHalfEven(value)));

function areaTable(ssize, dsize, scale) {
  // OpenCV's computeResizeAreaTab: which source pixels (with which weights) make each destination pixel
  const dst = [];
  const src = [];
  const weight = [];
  const push = (d, s, w) => {
    dst.push(d);
    src.push(s);
    weight.push(w);
  };
  for (let d = 0; d < dsize; d++) {
    const fs1 = d * scale;
    const fs2 = fs1 + scale;
    const cell = Math.min(scale, ssize - fs1);
    let s1 = Math.ceil(fs1);
    let s2 = Math.floor(fs2);
    s2 = Math.min(s2, ssize - 1);
    s1 = Math.min(s1, s2);
    if (s1 - fs1 > 1e-3) push(d, s1 - 1, (s1 - fs1) / cell);
    for (let s = s1; s < s2; s++) push(d, s, 1 / cell);
    if (fs2 - s2 > 1e-3) push(d, s2, Math.min(Math.min(fs2 - s2, 1), cell) / cell);
  }
  return { dst: Int32Array.from(dst), src: Int32Array.from(src), weight: Float32Array.from(weight) };
}

/** OpenCV's resize with INTER_AREA (shrinking) of RGB pixels to width x height. */
export function resizeArea(image, width, height) {
  const { data, width: sw, height: sh } = image;
  const out = new Uint8Array(width * height * 3);
  const scaleX = sw / width;
  const scaleY = sh / height;
  const ix = Math.round(scaleX);
  const iy = Math.round(scaleY);
  if (Math.abs(scaleX - ix) < Number.EPSILON && Math.abs(scaleY - iy) < Number.EPSILON) {
    // integer factors: OpenCV's resizeAreaFast, the rounded mean of each block
    const area = ix * iy;
    const inverse = f32(1 / area);
    const rowStride = sw * 3;
    if (area === 4) {
      // halving (a 640x480 selfie for the fast path's 320): the same sums, without the general loop's indexing
      for (let y = 0; y < height; y++) {
        let top = 2 * y * rowStride;
        let bottom = top + rowStride;
        let o = y * width * 3;
        for (let x = 0; x < width; x++, top += 6, bottom += 6) {
          out[o++] = (data[top] + data[top + 3] + data[bottom] + data[bottom + 3] + 2) >> 2;
          out[o++] = (data[top + 1] + data[top + 4] + data[bottom + 1] + data[bottom + 4] + 2) >> 2;
          out[o++] = (data[top + 2] + data[top + 5] + data[bottom + 2] + data[bottom + 5] + 2) >> 2;
        }
      }
      return out;
    }
    for (let y = 0; y < height; y++) {
      const top = y * iy * rowStride;
      const o = y * width * 3;
      for (let x = 0; x < width * 3; x++) {
        const c = x % 3;
        const left = top + (x - c) * ix + c;
        let sum = 0;
        for (let dy = 0; dy < iy; dy++) {
          const row = left + dy * rowStride;
          for (let dx = 0; dx < ix * 3; dx += 3) sum += data[row + dx];
        }
        out[o + x] = saturateU8(f32(sum * inverse));
      }
    }
    return out;
  }
  const xtab = areaTable(sw, width, scaleX);
  const ytab = areaTable(sh, height, scaleY);
  const buf = new Float32Array(width * 3);
  const sum = new Float32Array(width * 3);
  const flush = (dy) => {
    for (let i = 0; i < sum.length; i++) out[dy * width * 3 + i] = saturateU8(sum[i]);
  };
  let previous = ytab.dst[0];
  for (let j = 0; j < ytab.dst.length; j++) {
    const dy = ytab.dst[j];
    const beta = ytab.weight[j];
    const row = ytab.src[j] * sw * 3;
    buf.fill(0);
    for (let k = 0; k < xtab.dst.length; k++) {
      const s = row + xtab.src[k] * 3;
      const d = xtab.dst[k] * 3;
      const alpha = xtab.weight[k];
      buf[d] += f32(data[s] * alpha); // the Float32Array rounds each sum to float32, as OpenCV's float buffer
      buf[d + 1] += f32(data[s + 1] * alpha);
      buf[d + 2] += f32(data[s + 2] * alpha);
    }
    if (dy !== previous) {
      flush(previous);
      for (let i = 0; i < sum.length; i++) sum[i] = beta * buf[i];
      previous = dy;
    } else {
      for (let i = 0; i < sum.length; i++) sum[i] += f32(beta * buf[i]);
    }
  }
  flush(previous);
  return out;
}

// ------------------------------------------------------------------------------------------------ detection
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

// ------------------------------------------------------------------------------------------------ alignment
/** The 2x3 similarity matrix [[a, -b, tx], [b, a, ty]] mapping the five landmarks onto the ArcFace template scaled
 * to size: the least-squares solution over all five points (what OpenCV's estimateAffinePartial2D refines to with
 * every point an inlier, and what the package's data.align.estimate_transform asks it for). */
export function estimateTransform(landmarks, size = INPUT_SIZE) {
  if (landmarks.length !== 5 || landmarks.some((p) => p.length !== 2 || !p.every(Number.isFinite))) {
    throw new FaceError("expected five finite (x, y) landmarks", "VALIDATION");
  }
  const k = size / INPUT_SIZE;
  const dst = ARCFACE_TEMPLATE.map(([x, y]) => [x * k, y * k]);
  const n = 5;
  let mx = 0;
  let my = 0;
  let ux = 0;
  let uy = 0;
  for (let i = 0; i < n; i++) {
    mx += landmarks[i][0] / n;
    my += landmarks[i][1] / n;
    ux += dst[i][0] / n;
    uy += dst[i][1] / n;
  }
  let norm = 0;
  let dot = 0;
  let cross = 0;
  for (let i = 0; i < n; i++) {
    const px = landmarks[i][0] - mx;
    const py = landmarks[i][1] - my;
    const qx = dst[i][0] - ux;
    const qy = dst[i][1] - uy;
    norm += px * px + py * py;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
  }
  if (norm < 1e-12) throw new FaceError("the five landmarks coincide; no transform can be estimated", "VALIDATION");
  const a = dot / norm;
  const b = cross / norm;
  return [
    [a, -b, ux - (a * mx - b * my)],
    [b, a, uy - (b * mx + a * my)],
  ];
}

/** OpenCV's warpAffine (INTER_LINEAR, BORDER_CONSTANT 0) of RGB pixels with a 2x3 matrix, to size x size: the
 * inverse map in double, then float32 coordinates and weights with fused multiply-adds, as its SIMD kernels do. */
export function warpAffine(image, matrix, size = INPUT_SIZE) {
  const { data, width: sw, height: sh } = image;
  const [[m0, m1, m2], [m3, m4, m5]] = matrix;
  let det = m0 * m4 - m1 * m3;
  det = det !== 0 ? 1 / det : 0;
  const i0 = m4 * det;
  const i4 = m0 * det;
  const i1 = -m1 * det;
  const i3 = -m3 * det;
  const i2 = -i0 * m2 - i1 * m5;
  const i5 = -i3 * m2 - i4 * m5;
  const M = [i0, i1, i2, i3, i4, i5].map(f32);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const mx = f32(f32(y * M[1]) + M[2]);
    const my = f32(f32(y * M[4]) + M[5]);
    for (let x = 0; x < size; x++) {
      // fused multiply-adds: a product of two float32 is exact in a double, so one rounding to float32 follows
      const sx = f32(M[0] * x + mx);
      const sy = f32(M[3] * x + my);
      const ix = Math.floor(sx);
      const iy = Math.floor(sy);
      if (ix < -1 || ix >= sw || iy < -1 || iy >= sh) continue; // all four neighbours outside: the border value
      const ax = f32(sx - ix);
      const ay = f32(sy - iy);
      const left = ix >= 0;
      const right = ix + 1 < sw;
      const top = iy >= 0;
      const bottom = iy + 1 < sh;
      const i00 = (iy * sw + ix) * 3;
      const i10 = i00 + sw * 3;
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) {
        const p00 = top && left ? data[i00 + c] : 0;
        const p01 = top && right ? data[i00 + 3 + c] : 0;
        const p10 = bottom && left ? data[i10 + c] : 0;
        const p11 = bottom && right ? data[i10 + 3 + c] : 0;
        const upper = f32(ax * (p01 - p00) + p00);
        const lower = f32(ax * (p11 - p10) + p10);
        out[o + c] = saturateU8(f32(ay * f32(lower - upper) + upper));
      }
    }
  }
  return out;
}

/** The size x size RGB crop whose five landmarks land on the ArcFace template (the package's align_face). */
export function alignFace(image, landmarks, size = INPUT_SIZE) {
  return warpAffine(image, estimateTransform(landmarks, size), size);
}

// ------------------------------------------------------------------------------------------------ embeddings
/** (pixel - mean) / std of RGB crops into one float32 batch (layout NCHW or NHWC); with flip, each crop followed by
 * its mirror. */
export function embedderInput(crops, size, mean, std, flip, layout = "NCHW") {
  const per = 3 * size * size;
  const nhwc = layout === "NHWC";
  const count = crops.length * (flip ? 2 : 1);
  const tensor = new Float32Array(count * per);
  crops.forEach((crop, n) => {
    const copies = flip ? [false, true] : [false];
    copies.forEach((mirror, m) => {
      const base = (n * copies.length + m) * per;
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const s = (y * size + (mirror ? size - 1 - x : x)) * 3;
          const d = base + (nhwc ? (y * size + x) * 3 : y * size + x);
          const step = nhwc ? 1 : size * size;
          for (let c = 0; c < 3; c++) tensor[d + c * step] = f32(f32(crop[s + c] - mean) / std);
        }
      }
    });
  });
  return { tensor, dims: nhwc ? [count, size, size, 3] : [count, 3, size, size] };
}

/** Cosine similarity of two embeddings (L2-normalised here, whatever their scale). */
export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return Math.max(-1, Math.min(1, dot / Math.sqrt(na * nb)));
}

// ------------------------------------------------------------------------------------------------ the model
const CACHE_NAME = "ghostfacenets-web";

/** The bytes of a content-addressed file: from this site's Cache Storage when it holds them (the model files are
 * larger than browsers keep in their HTTP cache), else fetched and kept there. */
async function cachedBytes(url, cache, onProgress) {
  let response = cache ? await cache.match(url) : undefined;
  const hit = Boolean(response);
  if (!response) {
    response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new FaceError(`${url}: HTTP ${response.status}`, "NETWORK");
    if (cache) await cache.put(url, response.clone()).catch(() => {}); // a full or refused cache: fetched next time
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (onProgress) onProgress({ url, bytes: bytes.length, cached: hit });
  return bytes;
}

async function openCache(urls, enabled) {
  if (!enabled || typeof caches === "undefined") return null;
  try {
    const cache = await caches.open(CACHE_NAME);
    for (const request of await cache.keys()) {
      if (!urls.includes(request.url)) await cache.delete(request); // files of an earlier model or runtime
    }
    return cache;
  } catch {
    return null; // Cache Storage refused (private mode, an insecure context): the HTTP cache still applies
  }
}

// ------------------------------------------------------------------------------------------------ runtimes
/** onnxruntime-web: the package's RetinaFace ONNX at any size padded to 32, an ONNX embedder taking a batch. */
class OnnxRuntime {
  static async load(manifest, at, cache, options, threads) {
    const urls = [manifest.runtime.wasm, manifest.detector.url, manifest.embedder.url].map(at);
    const [ort, wasm, detectorBytes, embedderBytes] = await Promise.all([
      import(at(manifest.runtime.module)),
      ...urls.map((url) => cachedBytes(url, cache, options.onProgress)),
    ]);
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.wasmPaths = { mjs: at(manifest.runtime.glue) };
    ort.env.wasm.wasmBinary = wasm;
    ort.env.logLevel = "error";
    const sessionOptions = { executionProviders: ["wasm"], graphOptimizationLevel: "all" };
    const detector = await ort.InferenceSession.create(detectorBytes, sessionOptions);
    // int8 weights (manifest "weights": "int8") are turned into float32 once, when the session is made, instead of
    // by their DequantizeLinear nodes on every call (onnxruntime keeps those by default, for int8 kernels to fuse)
    const embedderOptions =
      manifest.embedder.weights === "int8"
        ? { ...sessionOptions, extra: { session: { disable_quant_qdq: "1" } } }
        : sessionOptions;
    const embedder = await ort.InferenceSession.create(embedderBytes, embedderOptions);
    return new OnnxRuntime(ort, manifest, detector, embedder, threads);
  }

  constructor(ort, manifest, detector, embedder, threads) {
    Object.assign(this, { ort, manifest, detector, embedder, threads, name: "onnxruntime-web" });
  }

  /** The detector's outputs for the photo shrunk to maxSize: {input, outputs: {loc, conf, landmarks}}. */
  async detect(image, maxSize) {
    const config = this.manifest.detector;
    const input = detectorInput(image, maxSize);
    const feeds = { [config.input]: new this.ort.Tensor("float32", input.tensor, input.dims) };
    const results = await this.detector.run(feeds);
    const [loc, conf, landmarks] = config.outputs.map((name) => results[name].data);
    return { input, outputs: { loc, conf, landmarks } };
  }

  /** The raw embeddings (count x dim, Float32Array) of aligned crops, each followed by its mirror with flip. */
  async embed(crops, flip) {
    const config = this.manifest.embedder;
    const input = embedderInput(crops, config.input.size, config.input.mean, config.input.std, flip);
    const feeds = { [config.input.name]: new this.ort.Tensor("float32", input.tensor, input.dims) };
    return (await this.embedder.run(feeds))[config.output].data;
  }
}

/** LiteRT.js (XNNPACK in WebAssembly): the masked RetinaFace .tflite with one signature per input shape, and a
 * .tflite embedder of batch 1. */
class LiteRtRuntime {
  static async load(manifest, at, cache, options, threads) {
    const urls = [manifest.detector.url, manifest.embedder.url].map(at);
    const moduleUrl = at(manifest.runtime.module);
    const [lt, detectorBytes, embedderBytes] = await Promise.all([
      import(moduleUrl),
      ...urls.map((url) => cachedBytes(url, cache, options.onProgress)),
    ]);
    // its threaded build needs relaxed SIMD as well as cross-origin isolation; one LiteRT per page
    const threaded = threads > 1 && (await lt.supportsFeature("relaxedSimd"));
    if (!lt.getGlobalLiteRtPromise()) lt.loadLiteRt(new URL("./", moduleUrl).href, { threads: threaded });
    await lt.getGlobalLiteRtPromise();
    const compile = { accelerator: "wasm", cpuOptions: { numThreads: threaded ? threads : 1 } };
    const detector = await lt.loadAndCompile(detectorBytes, compile);
    const embedder = await lt.loadAndCompile(embedderBytes, compile);
    return new LiteRtRuntime(lt, manifest, detector, embedder, threaded ? threads : 1);
  }

  constructor(lt, manifest, detector, embedder, threads) {
    Object.assign(this, { lt, manifest, detector, embedder, threads, name: "litert.js" });
    this.areas = new Map(); // "H,W,ph,pw" -> the runs of the area's anchors (areaAnchors)
  }

  async _run(model, tensors, signature) {
    const inputs = tensors.map(([data, shape]) => new this.lt.Tensor(data, shape));
    try {
      const outputs = signature ? await model.run(signature, inputs) : await model.run(inputs);
      try {
        // copied: the tensors' memory is LiteRT's, freed below
        return outputs.map((t) => ({ shape: Array.from(t.type.layout.dimensions), data: t.toTypedArray().slice() }));
      } finally {
        for (const t of outputs) t.delete();
      }
    } finally {
      for (const t of inputs) t.delete();
    }
  }

  async detect(image, maxSize) {
    const input = maskedDetectorInput(image, maxSize, this.manifest.detector.inputs);
    const [H, W] = input.shape;
    const outputs = await this._run(
      this.detector,
      [
        [input.tensor, [1, H, W, 3]],
        [Float32Array.from(input.area), [1, 2]],
      ],
      `${H}x${W}`,
    );
    const key = [...input.shape, ...input.area].join(",");
    if (!this.areas.has(key)) this.areas.set(key, areaAnchors(input.shape, input.area));
    const runs = this.areas.get(key);
    const count = runs.reduce((n, [, length]) => n + length, 0);
    const pick = (values) => {
      const { data } = outputs.find((o) => o.shape[o.shape.length - 1] === values);
      if (runs.length === 1) return data;
      const out = new Float32Array(count * values);
      let at = 0;
      for (const [first, length] of runs) {
        out.set(data.subarray(first * values, (first + length) * values), at);
        at += length * values;
      }
      return out;
    };
    return { input, outputs: { loc: pick(4), conf: pick(2), landmarks: pick(10) } };
  }

  async embed(crops, flip) {
    const config = this.manifest.embedder;
    const size = config.input.size;
    const input = embedderInput(crops, size, config.input.mean, config.input.std, flip, "NHWC");
    const per = size * size * 3;
    const dim = this.manifest.model.embedding_dim;
    const out = new Float32Array(input.dims[0] * dim);
    for (let i = 0; i < input.dims[0]; i++) {
      const crop = input.tensor.subarray(i * per, (i + 1) * per);
      const [output] = await this._run(this.embedder, [[crop, [1, size, size, 3]]]); // batch 1
      out.set(output.data, i * dim);
    }
    return out;
  }
}

const RUNTIMES = { "onnxruntime-web": OnnxRuntime, "litert.js": LiteRtRuntime };

/** The detector, the embedder and their metadata, loaded from a manifest (default: manifest.json beside this
 * module). Options: manifest (URL); threads (default: 2 when the page is cross-origin isolated, else 1); cache
 * (default true: keep the model files (and onnxruntime-web's runtime) in Cache Storage, so that later visits
 * download nothing); onProgress({url, bytes, cached}). */
export async function load(options = {}) {
  const manifestUrl = new URL(options.manifest || "manifest.json", import.meta.url);
  const response = await fetch(manifestUrl, { credentials: "same-origin" });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new FaceError(problem.detail || `${manifestUrl}: HTTP ${response.status}`, problem.code || "NETWORK");
  }
  const manifest = await response.json();
  const Runtime = RUNTIMES[manifest.runtime.name];
  if (!Runtime) throw new FaceError(`unknown runtime ${manifest.runtime.name} in ${manifestUrl}`, "INTERNAL");
  const at = (path) => new URL(path, manifestUrl).href;
  const kept = [manifest.runtime.wasm, manifest.detector.url, manifest.embedder.url].filter(Boolean).map(at);
  const cache = await openCache(kept, options.cache ?? true);
  const isolated = typeof crossOriginIsolated !== "undefined" && crossOriginIsolated;
  const cores = (typeof navigator !== "undefined" && navigator.hardwareConcurrency) || 1;
  const threads = isolated ? (options.threads ?? Math.min(2, cores)) : 1; // WebAssembly threads need isolation
  const runtime = await Runtime.load(manifest, at, cache, options, threads);
  return new FaceModel(runtime, manifest);
}

export class FaceModel {
  constructor(runtime, manifest) {
    this.runtime = runtime;
    this.manifest = manifest;
    this.threads = runtime.threads;
  }

  /** What the service calls the embedding space: {name, sha256, embedding_dim, flip}; send it with embeddings. */
  get model() {
    return this.manifest.model;
  }

  /** The decision threshold {value, source, note} of the service's model. */
  get threshold() {
    return this.manifest.threshold;
  }

  /** Faces in an image (File/Blob/ImageBitmap/ImageData/RGB pixels), highest score first: {box [x1, y1, x2, y2],
   * score, landmarks [[x, y] x 5]} in image pixels. maxSize: the longer side the photo is shrunk to for detection
   * (default: the manifest's, 640). singleFace: the fast path for photos of one large face (selfies, ID photos):
   * detect at the manifest's fast size first and at maxSize only when no face, or no face wide enough at that size
   * (fast_path.min_face pixels), is found. */
  async detect(source, { maxSize, singleFace = false } = {}) {
    const image = await readPixels(source);
    const config = this.manifest.detector;
    const full = maxSize || config.max_size;
    const fast = config.fast_path;
    if (singleFace && fast && fast.size < full && Math.max(image.width, image.height) > fast.size) {
      const faces = await this._detectAt(image, fast.size);
      const shrink = fast.size / Math.max(image.width, image.height);
      if (faces.length && Math.max(...faces.map((f) => f.box[2] - f.box[0])) * shrink >= fast.min_face) return faces;
    }
    return this._detectAt(image, full);
  }

  async _detectAt(image, maxSize) {
    const config = this.manifest.detector;
    const { input, outputs } = await this.runtime.detect(image, maxSize);
    return decodeDetections(outputs, input, image, {
      scoreThreshold: config.score_threshold,
      nmsThreshold: config.nms_threshold,
      minFace: config.min_face,
    });
  }

  /** L2-normalised embeddings (Float32Array each) of aligned RGB crops (Uint8Array 112*112*3), the flip setting of
   * the manifest applied (embedding of the crop plus that of its mirror). */
  async embedCrops(crops) {
    if (!crops.length) return [];
    const flip = this.manifest.model.flip;
    const output = await this.runtime.embed(crops, flip);
    const dim = this.manifest.model.embedding_dim;
    return crops.map((_, n) => {
      const embedding = new Float32Array(dim);
      const copies = flip ? 2 : 1;
      for (let c = 0; c < copies; c++) {
        const base = (n * copies + c) * dim;
        for (let i = 0; i < dim; i++) embedding[i] = f32(embedding[i] + output[base + i]);
      }
      let norm = 0;
      for (let i = 0; i < dim; i++) norm += embedding[i] * embedding[i];
      norm = Math.sqrt(norm);
      if (!(norm > 0) || !Number.isFinite(norm)) throw new FaceError("the model produced a zero embedding", "INTERNAL");
      for (let i = 0; i < dim; i++) embedding[i] = f32(embedding[i] / norm);
      return embedding;
    });
  }

  /** Every face of an image, largest first, with its aligned crop and embedding (at most maxFaces). */
  async faces(source, { maxFaces = Infinity, singleFace = false, maxSize } = {}) {
    const image = await readPixels(source);
    const found = (await this.detect(image, { singleFace, maxSize })).sort((a, b) => faceArea(b) - faceArea(a));
    const chosen = found.slice(0, maxFaces);
    const crops = chosen.map((face) => alignFace(image, face.landmarks));
    const embeddings = await this.embedCrops(crops);
    return chosen.map((face, i) => ({ ...face, crop: crops[i], embedding: embeddings[i], facesInImage: found.length }));
  }

  /** The largest face of an image with its embedding; a FaceError NO_FACE when there is none. */
  async largestFace(source, options = {}) {
    const [face] = await this.faces(source, { ...options, maxFaces: 1, singleFace: options.singleFace ?? true });
    if (!face) throw new FaceError("no face found", "NO_FACE");
    return face;
  }

  /** Same person? The cosine similarity of two embeddings against the service's threshold (or the one given). */
  verify(a, b, threshold = this.threshold.value) {
    const similarity = cosine(a, b);
    return { similarity, threshold, is_same: similarity > threshold };
  }
}
