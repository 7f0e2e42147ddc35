// The ghostfacenets page: plain JavaScript over the service's /v1 API, no build step.
"use strict";

const KEY_STORAGE = "ghostfacenets-api-key";
const $ = (selector) => document.querySelector(selector);
const state = { key: sessionStorage.getItem(KEY_STORAGE) || "", files: {}, subjectsCursor: null };

// ------------------------------------------------------------------------------------------------ API
class ApiProblem extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || "request failed");
    this.code = problem.code;
    this.status = problem.status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.key}` };
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload });
  } catch (error) {
    throw new ApiProblem({ detail: "the server cannot be reached", code: "NETWORK" });
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
  if (!response.ok) throw new ApiProblem({ status: response.status, ...data });
  return data;
}

function gallery() {
  return encodeURIComponent($("#gallery").value || "default");
}

function showError(output, error) {
  output.classList.add("error");
  const code = error.code ? ` (${error.code})` : "";
  output.textContent = `${error.message}${code}`;
}

function busy(button, on) {
  button.disabled = on;
  button.setAttribute("aria-busy", String(on));
}

// ------------------------------------------------------------------------------------------------ key
async function useKey(key) {
  state.key = key.trim();
  const status = $("#key-status");
  status.classList.remove("error");
  if (!state.key) {
    sessionStorage.removeItem(KEY_STORAGE);
    status.textContent = "No key: create one with ghostfacenets keys create.";
    $("#key-forget").hidden = true;
    return;
  }
  try {
    const info = await api("GET", "/v1/info");
    sessionStorage.setItem(KEY_STORAGE, state.key);
    $("#api-key").value = "";
    $("#api-key").placeholder = "saved for this session";
    $("#key-forget").hidden = false;
    const t = info.threshold;
    status.textContent = `Key accepted. Model ${info.model} (${info.embedding_dim}-d), threshold ` +
      `${t.value.toFixed(4)} (${t.source}).`;
    await loadGalleries();
  } catch (error) {
    sessionStorage.removeItem(KEY_STORAGE);
    status.classList.add("error");
    status.textContent = `Key refused: ${error.message}`;
  }
}

async function loadGalleries() {
  const select = $("#gallery");
  const current = select.value;
  try {
    const data = await api("GET", "/v1/galleries");
    const names = data.galleries.map((g) => g.name);
    if (!names.length) names.push("default");
    select.replaceChildren(...names.map((name) => new Option(name, name)));
    if (names.includes(current)) select.value = current;
    else if (names.includes("default")) select.value = "default";
    const chosen = data.galleries.find((g) => g.name === select.value);
    $("#gallery-status").textContent = chosen
      ? `${chosen.subjects} people, ${chosen.faces} faces`
      : "empty: enrolling someone creates it";
  } catch (error) {
    $("#gallery-status").textContent = error.message;
  }
}

// ------------------------------------------------------------------------------------------------ tabs
function selectTab(tab) {
  for (const other of document.querySelectorAll('[role="tab"]')) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(`#${other.getAttribute("aria-controls")}`).hidden = !selected;
  }
  tab.focus();
  if (tab.id === "tab-subjects") loadSubjects(true);
}

function setUpTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (event) => {
      const moves = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 };
      if (event.key in moves) {
        event.preventDefault();
        selectTab(tabs[(moves[event.key] + tabs.length) % tabs.length]);
      }
    });
  });
}

// ------------------------------------------------------------------------------------------------ drawing
async function drawPhoto(canvas, file, faces = [], labels = []) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, 1280 / Math.max(bitmap.width, bitmap.height));
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const line = Math.max(2, Math.round(canvas.width / 250));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(14, Math.round(canvas.width / 40))}px system-ui, sans-serif`;
  faces.forEach((face, i) => {
    const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
    ctx.strokeStyle = labels[i] && labels[i].known === false ? "#f59e0b" : "#22c55e";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (labels[i]) {
      const text = labels[i].text;
      const height = parseInt(ctx.font, 10) + 6;
      const width = ctx.measureText(text).width + 8;
      const top = y1 > height ? y1 - height : y2;
      ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
      ctx.fillRect(x1 - line / 2, top, width, height);
      ctx.fillStyle = "#fff";
      ctx.fillText(text, x1 + 4, top + height - 6);
    }
  });
  canvas.hidden = false;
}

// ------------------------------------------------------------------------------------------------ verify
function setSlotFile(inputId, file) {
  state.files[inputId] = file;
  const slot = $(`#${inputId}`).closest("fieldset");
  drawPhoto(slot.querySelector("canvas"), file).catch(() => {
    slot.querySelector("canvas").hidden = true; // not an image the browser shows; the server will say why
  });
  $("#verify-result").textContent = "";
}

function setUpPhotoSlots() {
  for (const slot of document.querySelectorAll("fieldset.photo")) {
    const input = slot.querySelector('input[type="file"]');
    const drop = slot.querySelector(".drop");
    input.addEventListener("change", () => input.files[0] && setSlotFile(input.id, input.files[0]));
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (event) => {
        event.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      drop.addEventListener(name, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      const file = event.dataTransfer.files[0];
      if (file) setSlotFile(input.id, file);
    });
    drop.tabIndex = 0;
    drop.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
  }
}

// The answer of a verification (from the service, or computed on this device by ondevice.js) with both photos.
async function showVerification(r, a, b) {
  const output = $("#verify-result");
  const relation = r.is_same ? ">" : "≤";
  output.replaceChildren();
  const big = document.createElement("div");
  big.className = "big";
  big.textContent = `similarity ${r.similarity.toFixed(4)}`;
  const decision = document.createElement("div");
  decision.className = r.is_same ? "same" : "different";
  decision.textContent = r.is_same ? "Same person" : "Different people";
  const detail = document.createElement("div");
  detail.textContent = `${r.similarity.toFixed(4)} ${relation} threshold ${r.threshold.toFixed(4)} (${r.threshold_source})`;
  output.append(big, decision, detail);
  await drawPhoto($("#verify-a").closest("fieldset").querySelector("canvas"), a, [r.face_a]);
  await drawPhoto($("#verify-b").closest("fieldset").querySelector("canvas"), b, [r.face_b]);
}

async function verify(event) {
  event.preventDefault();
  const output = $("#verify-result");
  output.classList.remove("error");
  const a = state.files["verify-a"];
  const b = state.files["verify-b"];
  if (!a || !b) {
    showError(output, new Error("choose two photos first"));
    return;
  }
  const button = event.submitter || $('[data-testid="verify-submit"]');
  busy(button, true);
  output.textContent = "Comparing…";
  try {
    const form = new FormData();
    form.append("image_a", a);
    form.append("image_b", b);
    const r = await api("POST", "/v1/verify", form);
    await showVerification(r, a, b);
  } catch (error) {
    showError(output, error);
  } finally {
    busy(button, false);
  }
}

// ------------------------------------------------------------------------------------------------ camera
let cameraTarget = null;
let cameraStream = null;

async function openCamera(targetId) {
  const dialog = $("#camera");
  cameraTarget = targetId;
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
  } catch (error) {
    showError($("#verify-result"), new Error(`no camera: ${error.message}`));
    return;
  }
  $("#camera-video").srcObject = cameraStream;
  dialog.showModal();
  $("#camera-shoot").focus();
}

function closeCamera() {
  if (cameraStream) cameraStream.getTracks().forEach((track) => track.stop());
  cameraStream = null;
  $("#camera").close();
}

function shoot() {
  const video = $("#camera-video");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const target = cameraTarget;
  canvas.toBlob((blob) => {
    if (blob) setSlotFile(target, new File([blob], "camera.jpg", { type: "image/jpeg" }));
  }, "image/jpeg", 0.92);
  closeCamera();
}

// ------------------------------------------------------------------------------------------------ enroll
async function ensureGallery() {
  try {
    await api("GET", `/v1/galleries/${gallery()}`);
  } catch (error) {
    if (error.code !== "NOT_FOUND") throw error;
    await api("POST", "/v1/galleries", { name: decodeURIComponent(gallery()) });
  }
}

async function enroll(event) {
  event.preventDefault();
  const output = $("#enroll-result");
  output.classList.remove("error");
  const name = $("#enroll-name").value.trim();
  const photos = [...$("#enroll-photos").files];
  const button = event.submitter || $('[data-testid="enroll-submit"]');
  busy(button, true);
  output.textContent = "Enrolling…";
  let subject = null;
  try {
    await ensureGallery();
    subject = await api("POST", `/v1/galleries/${gallery()}/subjects`, { name });
    const form = new FormData();
    photos.forEach((file) => form.append("image", file));
    const result = await api("POST", `/v1/galleries/${gallery()}/subjects/${subject.id}/faces`, form);
    output.textContent = `Enrolled ${name} with ${result.faces.length} face(s).`;
    $("#enroll-form").reset();
    await loadGalleries();
  } catch (error) {
    if (subject) await api("DELETE", `/v1/galleries/${gallery()}/subjects/${subject.id}`).catch(() => {});
    showError(output, error);
  } finally {
    busy(button, false);
  }
}

// ------------------------------------------------------------------------------------------------ identify
// The faces of an identification (from the service, or from embeddings made on this device) on the photo.
async function showIdentification(r, file) {
  const output = $("#identify-result");
  const labels = r.faces.map((face) => {
    const best = face.candidates[0];
    return face.match !== null
      ? { text: `${best.name} ${best.similarity.toFixed(3)}`, known: true }
      : { text: "unknown", known: false };
  });
  await drawPhoto($("#identify-preview"), file, r.faces, labels);
  if (!r.faces.length) {
    output.textContent = "No face found.";
    return;
  }
  const table = document.createElement("table");
  table.innerHTML = "<thead><tr><th>Face</th><th>Who</th><th>Similarity</th></tr></thead>";
  const body = table.createTBody();
  r.faces.forEach((face, i) => {
    const row = body.insertRow();
    const best = face.candidates[0];
    row.insertCell().textContent = String(i + 1);
    row.insertCell().textContent = face.match !== null ? best.name : `unknown${best ? ` (closest: ${best.name})` : ""}`;
    row.insertCell().textContent = best ? best.similarity.toFixed(4) : "–";
  });
  const note = document.createElement("p");
  note.textContent = `threshold ${r.threshold.value.toFixed(4)} (${r.threshold.source})`;
  output.replaceChildren(table, note);
}

async function identify(event) {
  event.preventDefault();
  const output = $("#identify-result");
  output.classList.remove("error");
  const file = $("#identify-photo").files[0];
  const button = event.submitter || $('[data-testid="identify-submit"]');
  busy(button, true);
  output.textContent = "Looking…";
  try {
    const form = new FormData();
    form.append("image", file);
    const r = await api("POST", `/v1/galleries/${gallery()}/identify`, form);
    await showIdentification(r, file);
  } catch (error) {
    showError(output, error);
  } finally {
    busy(button, false);
  }
}

// ------------------------------------------------------------------------------------------------ people
function subjectItem(subject) {
  const item = document.createElement("li");
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = subject.name;
  const small = document.createElement("small");
  small.textContent = `${subject.faces} face(s) · id ${subject.id}`;
  who.append(small);
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "danger";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${subject.name} and every face of them`);
  remove.addEventListener("click", async () => {
    if (!confirm(`Delete ${subject.name} and all their faces?`)) return;
    try {
      await api("DELETE", `/v1/galleries/${gallery()}/subjects/${subject.id}`);
      item.remove();
      $("#subjects-status").textContent = `Deleted ${subject.name}.`;
      await loadGalleries();
    } catch (error) {
      $("#subjects-status").textContent = error.message;
    }
  });
  item.append(who, remove);
  return item;
}

async function loadSubjects(fresh) {
  const list = $("#subjects");
  const status = $("#subjects-status");
  if (fresh) {
    list.replaceChildren();
    state.subjectsCursor = null;
  }
  const cursor = state.subjectsCursor !== null ? `&cursor=${state.subjectsCursor}` : "";
  try {
    const page = await api("GET", `/v1/galleries/${gallery()}/subjects?limit=50${cursor}`);
    list.append(...page.subjects.map(subjectItem));
    state.subjectsCursor = page.next_cursor;
    $("#subjects-more").hidden = page.next_cursor === null;
    status.textContent = list.children.length ? "" : "Nobody enrolled yet.";
  } catch (error) {
    status.textContent = error.code === "NOT_FOUND" ? "Nobody enrolled yet." : error.message;
  }
}

// ------------------------------------------------------------------------------------------------ start
function start() {
  setUpTabs();
  setUpPhotoSlots();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("#api-key").value);
  });
  $("#key-forget").addEventListener("click", () => useKey(""));
  $("#gallery").addEventListener("change", () => {
    loadGalleries();
    if (!$("#panel-subjects").hidden) loadSubjects(true);
  });
  $("#verify-form").addEventListener("submit", verify);
  $("#enroll-form").addEventListener("submit", enroll);
  $("#identify-form").addEventListener("submit", identify);
  $("#subjects-refresh").addEventListener("click", () => loadSubjects(true));
  $("#subjects-more").addEventListener("click", () => loadSubjects(false));
  for (const button of document.querySelectorAll("button.camera")) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) button.hidden = true;
    button.addEventListener("click", () => openCamera(button.dataset.target));
  }
  $("#camera-shoot").addEventListener("click", shoot);
  $("#camera-cancel").addEventListener("click", closeCamera);
  $("#camera").addEventListener("cancel", closeCamera);
  if (state.key) useKey(state.key);
}

document.addEventListener("DOMContentLoaded", start);
