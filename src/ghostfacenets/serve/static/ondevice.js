// The page's on-device mode: photos are detected, aligned and embedded in this browser by the browser module
// (/web/ghostfacenets.mjs); verify runs here, enroll and identify send embeddings only. It takes over the forms of
// app.js (whose helpers it uses: api, state, gallery, ensureGallery, loadGalleries, showVerification,
// showIdentification, showError, busy) while the switch is on.

const MODE_STORAGE = "ghostfacenets-on-device";
const byId = (id) => document.getElementById(id);
let model = null;
let loading = null;

function onDevice() {
  return byId("on-device").checked;
}

function statement() {
  byId("photo-statement").textContent = onDevice()
    ? "On-device mode: photos are processed in this browser and never leave it; the server receives face " +
      "embeddings (lists of numbers) only."
    : "Photos are sent to this server only to be processed; none is stored.";
}

async function loadModel() {
  if (model) return model;
  const status = byId("on-device-status");
  loading ??= (async () => {
    status.textContent = "Loading the model into this browser…";
    const started = performance.now();
    const { load } = await import("/web/ghostfacenets.mjs");
    const loaded = await load();
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    status.textContent = `On-device model ready (${loaded.model.name}, ${loaded.runtime.name}, ${loaded.threads} ` +
      `thread${loaded.threads > 1 ? "s" : ""}, ${seconds} s).`;
    model = loaded;
    return loaded;
  })().catch((error) => {
    loading = null;
    status.textContent = `The on-device model could not be loaded: ${error.message}`;
    throw error;
  });
  return loading;
}

function toggled() {
  statement();
  if (onDevice()) loadModel().catch(() => {});
  else byId("on-device-status").textContent = "";
}

async function sha256Hex(file) {
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Six decimals keep a cosine within 1e-5 and a face's JSON near 5 kB (the service bounds JSON bodies).
function faceJson(face) {
  return {
    embedding: Array.from(face.embedding, (v) => Number(v.toFixed(6))),
    box: Array.from(face.box),
    score: face.score,
    landmarks: face.landmarks.map((p) => Array.from(p)),
  };
}

async function largestFace(file, field) {
  try {
    return await model.largestFace(file, { singleFace: false });
  } catch (error) {
    error.message = `${field}: ${error.message}`;
    throw error;
  }
}

// Runs `work` instead of app.js's handler of the form when the mode is on.
function takeOver(formId, outputId, testId, busyText, work) {
  byId(formId).addEventListener(
    "submit",
    async (event) => {
      if (!onDevice()) return;
      event.preventDefault();
      event.stopImmediatePropagation();
      const output = byId(outputId);
      output.classList.remove("error");
      const button = event.submitter || document.querySelector(`[data-testid="${testId}"]`);
      busy(button, true);
      output.textContent = busyText;
      try {
        await loadModel();
        await work(output);
      } catch (error) {
        showError(output, error);
      } finally {
        busy(button, false);
      }
    },
    { capture: true },
  );
}

async function verifyHere(output) {
  const a = state.files["verify-a"];
  const b = state.files["verify-b"];
  if (!a || !b) throw new Error("choose two photos first");
  const started = performance.now();
  const faceA = await largestFace(a, "image_a");
  const faceB = await largestFace(b, "image_b");
  const result = model.verify(faceA.embedding, faceB.embedding);
  const t = model.threshold;
  await showVerification(
    {
      similarity: result.similarity,
      threshold: result.threshold,
      is_same: result.is_same,
      threshold_source: t.source,
      face_a: faceA,
      face_b: faceB,
    },
    a,
    b,
  );
  const note = document.createElement("div");
  note.className = "on-device-note";
  note.textContent = `computed in this browser in ${Math.round(performance.now() - started)} ms; nothing was sent`;
  output.append(note);
}

async function enrollHere(output) {
  const name = byId("enroll-name").value.trim();
  const photos = [...byId("enroll-photos").files];
  const faces = [];
  for (const [i, file] of photos.entries()) faces.push(await largestFace(file, `image[${i}]`));
  const hashes = await Promise.all(photos.map(sha256Hex));
  await ensureGallery();
  const subject = await api("POST", `/v1/galleries/${gallery()}/subjects`, { name });
  try {
    const result = await api("POST", `/v1/galleries/${gallery()}/subjects/${subject.id}/faces/embeddings`, {
      model: model.model,
      faces: faces.map(faceJson),
      image_sha256: hashes,
    });
    output.textContent = `Enrolled ${name} with ${result.faces.length} face(s), from embeddings made on this device.`;
    byId("enroll-form").reset();
    await loadGalleries();
  } catch (error) {
    await api("DELETE", `/v1/galleries/${gallery()}/subjects/${subject.id}`).catch(() => {});
    throw error;
  }
}

async function identifyHere() {
  const file = byId("identify-photo").files[0];
  const faces = await model.faces(file, { maxFaces: 20 });
  if (!faces.length) {
    await showIdentification({ faces: [], threshold: { value: model.threshold.value, source: "" } }, file);
    return;
  }
  const r = await api("POST", `/v1/galleries/${gallery()}/identify/embeddings`, {
    model: model.model,
    faces: faces.map(faceJson),
  });
  await showIdentification(r, file);
}

function start() {
  const box = byId("on-device");
  box.checked = sessionStorage.getItem(MODE_STORAGE) === "1";
  box.addEventListener("change", () => {
    if (onDevice()) sessionStorage.setItem(MODE_STORAGE, "1");
    else sessionStorage.removeItem(MODE_STORAGE);
    toggled();
  });
  takeOver("verify-form", "verify-result", "verify-submit", "Comparing on this device…", verifyHere);
  takeOver("enroll-form", "enroll-result", "enroll-submit", "Embedding on this device…", enrollHere);
  takeOver("identify-form", "identify-result", "identify-submit", "Looking on this device…", identifyHere);
  toggled();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
