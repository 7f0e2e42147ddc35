// Pixels for the browser module (ghostfacenets.mjs): decoding as the package decodes, OpenCV's INTER_AREA resize,
// the ArcFace alignment (least squares over five points, OpenCV's bilinear warpAffine) and the embedder's input,
// in float32 as OpenCV computes them.

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
