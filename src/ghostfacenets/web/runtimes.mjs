// The runtimes the browser module (ghostfacenets.mjs) runs the detector and the embedder on, named by the manifest:
// onnxruntime-web and LiteRT.js, each with detect(image, maxSize) and embed(crops, flip); and the Cache Storage
// that keeps their files.

import { FaceError, embedderInput } from "./image.mjs";
import { detectorInput, maskedDetectorInput, areaAnchors } from "./detection.mjs";

// ------------------------------------------------------------------------------------------------ Cache Storage
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

export async function openCache(urls, enabled) {
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

export const RUNTIMES = { "onnxruntime-web": OnnxRuntime, "litert.js": LiteRtRuntime };
