// Submitting work: upload files (multipart, with upload progress) or name paths already under
// the media root.

import { api, upload } from "../api.js";
import { el, formatBytes, text, toast } from "../dom.js";

function options(form) {
  const result = {};
  const speakers = Number(form.elements.num_speakers.value);
  const faces = Number(form.elements.max_faces.value);
  if (speakers > 0) result.num_speakers = speakers;
  if (faces > 0) result.max_faces = faces;
  if (form.elements.no_cache.checked) result.no_cache = true;
  return result;
}

function optionFields(prefix) {
  return el("fieldset", { class: "options" }, el("legend", {}, "Options"),
    el("label", { for: `${prefix}-speakers` }, "Speakers (0 = automatic)"),
    el("input", { id: `${prefix}-speakers`, name: "num_speakers", type: "number", min: "0", max: "20", value: "0" }),
    el("label", { for: `${prefix}-faces` }, "Max faces (0 = default)"),
    el("input", { id: `${prefix}-faces`, name: "max_faces", type: "number", min: "0", max: "20", value: "0" }),
    el("label", { class: "inline" }, el("input", { name: "no_cache", type: "checkbox" }), " Analyse again even if cached"));
}

export class SubmitView {
  constructor(ctx) {
    this.ctx = ctx;
  }

  render(root) {
    this.progress = el("progress", { max: "1", value: "0", hidden: true, "aria-label": "Upload progress" });
    this.progressText = el("span", { class: "muted", "aria-live": "polite" });
    this.error = el("p", { class: "error-item", role: "alert", hidden: true });
    const uploadForm = el("form", { class: "card-form", id: "upload-form", onsubmit: (e) => this.onUpload(e) },
      el("h2", {}, "Upload videos or an archive"),
      el("label", { for: "upload-files" }, "Files"),
      el("input", { id: "upload-files", name: "file", type: "file", multiple: true, required: true,
        accept: "video/*,.zip,.rar,.7z,.tar,.gz,.tgz,.bz2,.xz,.mkv,.mov,.avi,.webm,.mp4" }),
      el("label", { for: "upload-label" }, "Label"),
      el("input", { id: "upload-label", name: "label", type: "text", maxlength: "200" }),
      optionFields("upload"),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Upload and analyse"),
        this.progress, this.progressText));
    const pathForm = el("form", { class: "card-form", id: "path-form", onsubmit: (e) => this.onPaths(e) },
      el("h2", {}, "Analyse files already on the server"),
      el("label", { for: "path-inputs" }, "Paths relative to the media root, one per line"),
      el("textarea", { id: "path-inputs", name: "inputs", rows: "3", required: true, spellcheck: "false" }),
      el("label", { for: "path-label" }, "Label"),
      el("input", { id: "path-label", name: "label", type: "text", maxlength: "200" }),
      optionFields("path"),
      el("div", { class: "actions" }, el("button", { type: "submit", class: "primary" }, "Submit")));
    root.append(el("h1", { tabindex: "-1" }, "Submit"), this.error, el("div", { class: "forms" }, uploadForm, pathForm));
  }

  showError(message) {
    this.error.hidden = !message;
    text(this.error, message || "");
  }

  async onUpload(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const files = [...form.elements.file.files];
    if (!files.length) return;
    const data = new FormData();
    if (form.elements.label.value) data.append("label", form.elements.label.value);
    const chosen = options(form);
    if (Object.keys(chosen).length) data.append("options", JSON.stringify(chosen));
    for (const file of files) data.append("file", file, file.name);
    this.showError("");
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    this.progress.hidden = false;
    try {
      const job = await upload(data, (loaded, total) => {
        this.progress.value = loaded / total;
        text(this.progressText, `${formatBytes(loaded)} / ${formatBytes(total)}`);
      });
      this.done(job);
    } catch (error) {
      this.showError(`Upload refused: ${error.message}`);
    } finally {
      button.disabled = false;
      this.progress.hidden = true;
      text(this.progressText, "");
    }
  }

  async onPaths(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const inputs = form.elements.inputs.value.split("\n").map((s) => s.trim()).filter(Boolean);
    this.showError("");
    try {
      this.done(await api.submitPaths(inputs, form.elements.label.value, options(form)));
    } catch (error) {
      this.showError(`Submission refused: ${error.message}`);
    }
  }

  done(job) {
    this.ctx.store.put(job);
    toast(`Job ${job.label || job.job_id} submitted.`, "success");
    location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
  }
}
