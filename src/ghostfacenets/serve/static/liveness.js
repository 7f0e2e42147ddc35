// Liveness on the page: the "check liveness" boxes of Verify and Enroll (ticked and locked when the service checks
// every face, `serve --liveness`), the decision shown with each face, and the check of every photo before anyone is
// enrolled (POST /v1/liveness). Uses app.js's api() and ApiProblem.
"use strict";

const Liveness = {
  // Whether the box with this id asks for the check.
  requested(id) {
    const box = document.getElementById(id);
    return Boolean(box && box.checked);
  },

  // The query string asking the service to check liveness ("" when the box is off).
  query(id) {
    return this.requested(id) ? "?liveness=true" : "";
  },

  // After the key is accepted: a service that checks every face keeps the boxes on.
  configure(info) {
    const required = Boolean(info.liveness && info.liveness.required);
    for (const box of document.querySelectorAll("input.liveness-box")) {
      if (required) box.checked = true;
      box.disabled = required;
      box.title = required ? "this service checks the liveness of every face" : "";
    }
  },

  describe(result) {
    const relation = result.is_live ? ">" : "≤";
    const word = result.is_live ? "live" : "not live";
    return `${word}: liveness ${result.score.toFixed(4)} ${relation} ${result.threshold.toFixed(4)} (${result.threshold_source})`;
  },

  // One line per photo with its face's liveness, under a verify result.
  renderVerify(output, r) {
    for (const [label, result] of [["Photo A", r.face_a.liveness], ["Photo B", r.face_b.liveness]]) {
      if (!result) continue;
      const line = document.createElement("div");
      line.className = result.is_live ? "live" : "spoof";
      line.dataset.testid = "liveness-line";
      line.textContent = `${label}: ${this.describe(result)}`;
      output.append(line);
    }
  },

  // Every photo's largest face must be live, before a subject is created; throws SPOOF_SUSPECTED otherwise.
  async precheck(files) {
    for (const file of files) {
      const form = new FormData();
      form.append("image", file);
      const r = await api("POST", "/v1/liveness?max_faces=1", form);
      const face = r.faces[0];
      if (face && !face.liveness.is_live) {
        throw new ApiProblem({
          code: "SPOOF_SUSPECTED",
          detail: `${file.name}: spoof suspected, the face does not look live (${this.describe(face.liveness)}); nobody was enrolled`,
        });
      }
    }
  },

  // What an enrolment reports about liveness ("" when it was not checked).
  enrolled(result) {
    const scores = result.faces.filter((f) => f.liveness).map((f) => f.liveness.score);
    if (!scores.length) return "";
    return ` Every face judged live (lowest liveness ${Math.min(...scores).toFixed(4)}).`;
  },
};
