// The page's "Groups" view: the people the service grouped from photos added without names, with their faces'
// crops (when the service keeps crops); name a group, merge groups, say "not this person" of a face, group new faces.
// Uses app.js's api(), $() and gallery() (loaded before this file).
"use strict";

const groups = { offset: 0, urls: [], loading: false };
const SHOWN_FACES = 12; // faces shown per group

function groupsStatus(text, isError = false) {
  const status = $("#groups-status");
  status.classList.toggle("error", isError);
  status.textContent = text;
}

function forgetCrops() {
  for (const url of groups.urls) URL.revokeObjectURL(url);
  groups.urls = [];
}

async function cropUrl(faceId) {
  const response = await fetch(`/v1/galleries/${gallery()}/faces/${faceId}/crop`, {
    headers: { Authorization: `Bearer ${state.key}` },
  });
  if (!response.ok) return null; // stored without its crop
  const url = URL.createObjectURL(await response.blob());
  groups.urls.push(url);
  return url;
}

function faceTile(face, person) {
  const tile = document.createElement("figure");
  tile.className = "face";
  tile.dataset.face = face.id;
  const picture = document.createElement("div");
  picture.className = "crop";
  picture.textContent = face.reference.split("/").pop();
  picture.title = `${face.reference} · quality ${face.quality.toFixed(2)}`;
  if (face.has_crop) {
    cropUrl(face.id).then((url) => {
      if (!url) return;
      const img = document.createElement("img");
      img.src = url;
      img.alt = `face ${face.id} from ${face.reference}`;
      img.width = img.height = 64;
      picture.replaceChildren(img);
    });
  }
  const reject = document.createElement("button");
  reject.type = "button";
  reject.className = "reject";
  reject.textContent = "✕";
  reject.setAttribute("aria-label", `Not this person: face ${face.id} from ${face.reference}`);
  reject.addEventListener("click", async () => {
    reject.disabled = true;
    try {
      const moved = await api("POST", `/v1/galleries/${gallery()}/faces/${face.id}/reject`, { person: person.id });
      tile.remove();
      const where = moved.person_id ? `group ${moved.person_id}` : "unsorted";
      groupsStatus(`Face ${face.id} is not ${person.name || "that group"}; it went to ${where}.`);
    } catch (error) {
      reject.disabled = false;
      groupsStatus(error.message, true);
    }
  });
  tile.append(picture, reject);
  return tile;
}

function groupCard(person) {
  const card = document.createElement("li");
  card.className = "group";
  card.dataset.person = person.id;
  const head = document.createElement("div");
  head.className = "group-head";
  const pick = document.createElement("input");
  pick.type = "checkbox";
  pick.className = "pick";
  pick.id = `pick-${person.id}`;
  pick.value = person.id;
  const label = document.createElement("label");
  label.htmlFor = pick.id;
  label.textContent = `${person.name || "Unnamed"} · ${person.faces} face(s)`;
  head.append(pick, label);
  const form = document.createElement("form");
  form.className = "name-form";
  const input = document.createElement("input");
  input.type = "text";
  input.maxLength = 200;
  input.required = true;
  input.placeholder = person.name ? "new name" : "who is this?";
  input.setAttribute("aria-label", `Name for group ${person.id}`);
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = person.name ? "Rename" : "Name";
  form.append(input, save);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const named = await api("PATCH", `/v1/galleries/${gallery()}/people/${person.id}`, { name: input.value.trim() });
      person.name = named.name;
      label.textContent = `${named.name} · ${named.faces} face(s)`;
      groupsStatus(`Named ${named.name}: identify finds them from now on.`);
      input.value = "";
    } catch (error) {
      groupsStatus(error.message, true);
    }
  });
  const faces = document.createElement("div");
  faces.className = "faces";
  api("GET", `/v1/galleries/${gallery()}/people/${person.id}/faces?limit=${SHOWN_FACES}`)
    .then((page) => faces.append(...page.faces.map((face) => faceTile(face, person))))
    .catch((error) => groupsStatus(error.message, true));
  card.append(head, faces, form);
  return card;
}

async function loadGroups(fresh) {
  groups.loading = true;
  setTimeout(() => (groups.loading = false), 0); // a click's focus and click events load once
  const list = $("#groups");
  if (fresh) {
    forgetCrops();
    list.replaceChildren();
    groups.offset = 0;
  }
  try {
    const page = await api("GET", `/v1/galleries/${gallery()}/people?limit=20&offset=${groups.offset}`);
    const s = page.summary;
    $("#groups-summary").textContent =
      `${s.faces} face(s) in ${s.photos} photo(s): ${s.people} group(s) (${s.named} named), ` +
      `${s.unsorted} unsorted (${s.low_quality} of low quality), ${s.pending} waiting.`;
    list.append(...page.people.map(groupCard));
    groups.offset = page.next_offset ?? groups.offset;
    $("#groups-more").hidden = page.next_offset === null;
    if (!list.children.length) groupsStatus("No groups yet: add photos (ghostfacenets people add, or the API).");
  } catch (error) {
    $("#groups-summary").textContent = "";
    groupsStatus(error.code === "NOT_FOUND" ? "No photos added to this gallery yet." : error.message, error.code !== "NOT_FOUND");
  }
}

async function mergeGroups() {
  const chosen = [...document.querySelectorAll("#groups .pick:checked")].map((box) => Number(box.value));
  if (chosen.length < 2) {
    groupsStatus("Tick two groups or more to merge them (into the first).", true);
    return;
  }
  try {
    const merged = await api("POST", `/v1/galleries/${gallery()}/people/${chosen[0]}/merge`, { people: chosen.slice(1) });
    groupsStatus(`Merged ${chosen.length} groups: ${merged.name || "unnamed"}, ${merged.faces} face(s).`);
    await loadGroups(true);
  } catch (error) {
    groupsStatus(error.message, true);
  }
}

async function clusterNew() {
  try {
    const result = await api("POST", `/v1/galleries/${gallery()}/people/cluster`, {});
    groupsStatus(`Placed ${result.grouping.placed} face(s).`);
    await loadGroups(true);
  } catch (error) {
    groupsStatus(error.message, true);
  }
}

function startGroups() {
  const visible = () => !$("#panel-groups").hidden;
  // app.js's tab handlers show the panel first: a click, or the arrow keys (which focus the tab)
  for (const name of ["click", "focus"]) {
    $("#tab-groups").addEventListener(name, () => visible() && !groups.loading && loadGroups(true));
  }
  $("#gallery").addEventListener("change", () => visible() && loadGroups(true));
  $("#groups-refresh").addEventListener("click", () => loadGroups(true));
  $("#groups-more").addEventListener("click", () => loadGroups(false));
  $("#groups-merge").addEventListener("click", mergeGroups);
  $("#groups-cluster").addEventListener("click", clusterNew);
}

document.addEventListener("DOMContentLoaded", startGroups);
