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
//
// Its parts, beside it: image.mjs (pixels, alignment), detection.mjs (RetinaFace's input and output), runtimes.mjs.

import { FaceError, readPixels, alignFace, cosine } from "./image.mjs";
import { decodeDetections, faceArea } from "./detection.mjs";
import { RUNTIMES, openCache } from "./runtimes.mjs";

export * from "./image.mjs";
export * from "./detection.mjs";

const f32 = Math.fround;

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
