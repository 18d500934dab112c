// The jobs list and one job's page: a timeline of steps per video with live progress and ETA,
// cancel, report links and the logs panel.

import { api } from "../api.js";
import { jobProgress, stepFraction } from "../store.js";
import {
  FINAL_JOB_STATES, announce, append, basename, chip, clear, el, formatSeconds, formatTime, setChip, text, toast,
} from "../dom.js";

const STEP_ORDER = ["extract", "normalize", "scene", "audio", "tracking", "fuse", "reduce", "finalize"];

function jobTitle(job) {
  if (job.label) return job.label;
  const inputs = job.inputs || [];
  return inputs.length ? inputs.map(basename).join(", ") : job.job_id;
}

function percent(fraction) {
  return `${Math.round(fraction * 100)}%`;
}

export class JobsListView {
  constructor(ctx) {
    this.ctx = ctx;
    this.rows = new Map();
  }

  render(root) {
    this.tbody = el("tbody");
    this.empty = el("p", { class: "muted", hidden: true }, "No jobs yet. ", el("a", { href: "#/submit" }, "Submit one"), ".");
    root.append(
      el("h1", { tabindex: "-1" }, "Jobs"),
      this.empty,
      el("table", { class: "jobs" },
        el("caption", { class: "visually-hidden" }, "Jobs, newest first"),
        el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "Job"),
          el("th", { scope: "col" }, "State"),
          el("th", { scope: "col" }, "Videos"),
          el("th", { scope: "col" }, "Progress"),
          el("th", { scope: "col" }, "Created"))),
        this.tbody),
    );
    this.refresh();
    this.onChange = () => this.refresh();
    this.ctx.store.addEventListener("change", this.onChange);
  }

  destroy() {
    this.ctx.store.removeEventListener("change", this.onChange);
  }

  refresh() {
    const jobs = this.ctx.store.sorted();
    this.empty.hidden = jobs.length > 0;
    const seen = new Set();
    jobs.forEach((job, position) => {
      seen.add(job.job_id);
      let row = this.rows.get(job.job_id);
      if (!row) {
        row = this.makeRow(job);
        this.rows.set(job.job_id, row);
      }
      this.updateRow(row, job);
      if (this.tbody.children[position] !== row.tr) this.tbody.insertBefore(row.tr, this.tbody.children[position] || null);
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        this.rows.delete(id);
      }
    }
  }

  makeRow(job) {
    const row = {
      link: el("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}` }),
      chip: chip(job.state),
      videos: el("td", { class: "num" }),
      bar: el("progress", { max: "100", value: "0" }),
      pct: el("span", { class: "muted" }),
      created: el("td"),
    };
    row.tr = el("tr", { dataset: { jobId: job.job_id } },
      el("td", {}, row.link, el("div", { class: "muted small" }, job.job_id)),
      el("td", {}, row.chip),
      row.videos,
      el("td", {}, row.bar, " ", row.pct),
      row.created);
    return row;
  }

  updateRow(row, job) {
    text(row.link, jobTitle(job));
    setChip(row.chip, job.state);
    text(row.videos, (job.videos || []).length);
    const fraction = jobProgress(job);
    row.bar.value = Math.round(fraction * 100);
    row.bar.setAttribute("aria-label", `Progress of ${jobTitle(job)}`);
    text(row.pct, percent(fraction));
    text(row.created, formatTime(job.created_at));
  }
}

export class JobView {
  constructor(ctx, jobId) {
    this.ctx = ctx;
    this.jobId = jobId;
    this.videoCards = new Map();
    this.lastStates = new Map();
  }

  async render(root) {
    this.root = root;
    this.heading = el("h1", { tabindex: "-1" }, "Job");
    this.stateChip = chip("queued");
    this.summary = el("p", { class: "muted" });
    this.cancelButton = el("button", { type: "button", class: "danger", onclick: () => this.cancel() }, "Cancel job");
    this.errors = el("ul", { class: "errors" });
    this.videos = el("div", { class: "videos" });
    this.logList = el("ol", { class: "log-lines", role: "log", "aria-label": "Job log", tabindex: "0" });
    this.logFilter = el("select", { "aria-label": "Minimum severity", onchange: () => this.renderLogs(true) },
      el("option", { value: "" }, "All lines"),
      el("option", { value: "warning" }, "Warnings and errors"),
      el("option", { value: "error" }, "Errors only"));
    this.follow = el("input", { type: "checkbox", id: "log-follow", checked: true });
    root.append(
      el("p", { class: "breadcrumbs" }, el("a", { href: "#/jobs" }, "Jobs"), " / ", el("span", { class: "crumb-current" })),
      el("div", { class: "title-row" }, this.heading, this.stateChip),
      this.summary,
      el("div", { class: "actions" }, this.cancelButton),
      this.errors,
      el("div", { class: "job-layout" },
        el("section", { "aria-labelledby": "h-timeline", class: "timeline" }, el("h2", { id: "h-timeline" }, "Timeline"), this.videos),
        el("section", { "aria-labelledby": "h-logs", class: "logs-panel" },
          el("h2", { id: "h-logs" }, "Logs"),
          el("div", { class: "log-tools" }, this.logFilter,
            el("label", { for: "log-follow" }, this.follow, " Follow")),
          this.logList)),
    );
    let job = this.ctx.store.get(this.jobId);
    try {
      job = await api.job(this.jobId);
      this.ctx.store.put(job);
    } catch (error) {
      if (!job) {
        clear(root).append(el("h1", { tabindex: "-1" }, "Job not found"), el("p", { role: "alert" }, error.message),
          el("p", {}, el("a", { href: "#/jobs" }, "Back to the jobs")));
        return;
      }
    }
    this.update();
    this.onChange = (event) => {
      if (event.detail.jobId !== this.jobId) return;
      if (event.detail.what === "logs") this.appendLogs(event.detail.added);
      else this.update();
    };
    this.ctx.store.addEventListener("change", this.onChange);
    this.loadLogs();
  }

  destroy() {
    if (this.onChange) this.ctx.store.removeEventListener("change", this.onChange);
  }

  async loadLogs() {
    try {
      const body = await api.logs(this.jobId, 0);
      this.ctx.store.addLogs(this.jobId, body.lines || []);
      this.renderLogs(true);
    } catch (error) {
      this.logList.append(el("li", { class: "sev-error" }, `Could not load the log: ${error.message}`));
    }
  }

  logVisible(event) {
    const minimum = this.logFilter.value;
    const severity = String(event.log.severity || "info").toLowerCase();
    if (minimum === "error") return severity === "error" || severity === "critical";
    if (minimum === "warning") return ["warning", "error", "critical"].includes(severity);
    return true;
  }

  logLine(event) {
    const severity = String(event.log.severity || "info").toLowerCase();
    return el("li", { class: `sev-${severity}` },
      el("time", { datetime: event.time || "" }, event.time ? new Date(event.time).toLocaleTimeString() : ""),
      " ",
      el("span", { class: "sev" }, severity.toUpperCase()),
      " ",
      event.log.video ? el("span", { class: "log-video" }, `[${basename(event.log.video)}] `) : null,
      // The message is text, never markup (the legacy UI escaped twice and still rendered HTML).
      el("span", { class: "msg", text: event.log.message || "" }));
  }

  renderLogs(all = false) {
    const lines = [...(this.ctx.store.logs.get(this.jobId) || new Map()).values()].sort((a, b) => a.seq - b.seq);
    if (all) clear(this.logList);
    for (const event of lines.filter((e) => this.logVisible(e))) this.logList.append(this.logLine(event));
    if (!this.logList.children.length) this.logList.append(el("li", { class: "muted placeholder" }, "No log lines yet."));
    this.scrollLogs();
  }

  appendLogs(added) {
    const placeholder = this.logList.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    for (const event of added.sort((a, b) => a.seq - b.seq)) {
      if (this.logVisible(event)) this.logList.append(this.logLine(event));
    }
    this.scrollLogs();
  }

  scrollLogs() {
    if (this.follow.checked) this.logList.scrollTop = this.logList.scrollHeight;
  }

  update() {
    const job = this.ctx.store.get(this.jobId);
    if (!job) return;
    text(this.heading, jobTitle(job));
    text(this.root.querySelector(".crumb-current"), job.job_id);
    const previous = this.stateChip.dataset.state;
    setChip(this.stateChip, job.state);
    if (previous && previous !== job.state && FINAL_JOB_STATES.has(job.state)) {
      announce(`Job ${jobTitle(job)}: ${job.state.replace(/_/g, " ")}`);
    }
    const parts = [`${(job.videos || []).length} video(s)`, `created ${formatTime(job.created_at)}`];
    if (job.finished_at) parts.push(`finished ${formatTime(job.finished_at)}`);
    parts.push(`overall ${percent(jobProgress(job))}`);
    text(this.summary, parts.join(" · "));
    this.cancelButton.hidden = FINAL_JOB_STATES.has(job.state);
    clear(this.errors);
    const errors = [...(job.error ? [{ message: job.error }] : []), ...(job.errors || [])];
    for (const error of errors) {
      this.errors.append(el("li", { class: "error-item" }, error.subject ? `${basename(error.subject)}: ` : "", error.message || error.reason || ""));
    }
    for (const video of job.videos || []) this.updateVideo(job, video);
    if (!(job.videos || []).length && !this.videos.querySelector(".placeholder")) {
      this.videos.append(el("p", { class: "muted placeholder" }, "Waiting for the videos of this job…"));
    } else if ((job.videos || []).length) {
      const placeholder = this.videos.querySelector(".placeholder");
      if (placeholder) placeholder.remove();
    }
  }

  updateVideo(job, video) {
    let card = this.videoCards.get(video.index);
    if (!card) {
      card = {
        title: el("h3", {}),
        chip: chip(video.state),
        steps: el("ol", { class: "steps" }),
        stepItems: new Map(),
        links: el("p", { class: "video-links" }),
        error: el("p", { class: "error-item", hidden: true }),
      };
      card.root = el("article", { class: "video-card", "aria-label": `Video ${video.index + 1}` },
        el("div", { class: "title-row" }, card.title, card.chip), card.error, card.steps, card.links);
      this.videoCards.set(video.index, card);
      this.videos.append(card.root);
    }
    text(card.title, basename(video.path));
    card.title.title = video.path || "";
    setChip(card.chip, video.state);
    card.error.hidden = !video.error;
    text(card.error, video.error || "");
    const steps = [...(video.steps || [])].sort((a, b) => STEP_ORDER.indexOf(a.name) - STEP_ORDER.indexOf(b.name));
    for (const step of steps) this.updateStep(card, video, step);
    const hasResults = Boolean(video.output_dir) && ["succeeded", "failed"].includes(video.state);
    if (hasResults && !card.links.childElementCount) {
      const base = `${encodeURIComponent(job.job_id)}`;
      append(card.links, [
        el("a", { class: "button", href: `#/jobs/${base}/videos/${video.index}` }, "Open results"),
        " ",
        el("a", { href: `/reports/jobs/${base}/videos/${video.index}`, "data-report": "", target: "_blank", rel: "noopener" }, "Video report"),
        video.from_cache ? el("span", { class: "badge" }, "from cache") : null,
      ]);
    }
  }

  updateStep(card, video, step) {
    let item = card.stepItems.get(step.name);
    if (!item) {
      item = {
        chip: chip(step.state),
        bar: el("progress", { max: "1", value: "0", "aria-label": `${step.name} progress` }),
        detail: el("span", { class: "step-detail muted" }),
        extra: el("dl", { class: "step-extra" }),
      };
      item.root = el("li", { class: "step", dataset: { step: step.name } },
        el("div", { class: "step-head" }, el("span", { class: "step-name" }, step.name), item.chip),
        item.bar, item.detail,
        el("details", {}, el("summary", {}, "Details"), item.extra));
      card.stepItems.set(step.name, item);
      // Keep the pipeline's order whatever order the events come in.
      const rank = (name) => (STEP_ORDER.includes(name) ? STEP_ORDER.indexOf(name) : STEP_ORDER.length);
      const next = [...card.steps.children].find((li) => rank(li.dataset.step) > rank(step.name));
      card.steps.insertBefore(item.root, next || null);
    }
    const key = `${video.index}/${step.name}`;
    const before = this.lastStates.get(key);
    if (before && before !== step.state) announce(`${basename(video.path)}: ${step.name} ${step.state}`);
    this.lastStates.set(key, step.state);
    item.root.dataset.state = step.state;
    setChip(item.chip, step.state);
    const progress = step.progress || {};
    const fraction = stepFraction(step);
    if (step.state === "running" && !(progress.total > 0)) item.bar.removeAttribute("value");
    else item.bar.value = fraction;
    const parts = [];
    if (step.state === "running") {
      if (progress.total > 0) parts.push(`${progress.done}/${progress.total} ${progress.unit || ""}`.trim());
      if (progress.stage) parts.push(progress.stage);
      const eta = formatSeconds(step.eta_s);
      if (eta) parts.push(`ETA ${eta}`);
    } else if (step.started_at && step.finished_at) {
      const seconds = (new Date(step.finished_at) - new Date(step.started_at)) / 1000;
      parts.push(seconds < 1 ? "< 1 s" : formatSeconds(seconds));
    }
    if (step.error) parts.push(step.error);
    text(item.detail, parts.join(" · "));
    clear(item.extra);
    const rows = [
      ["State", step.state],
      ["Attempts", step.attempts],
      ["Started", formatTime(step.started_at)],
      ["Finished", formatTime(step.finished_at)],
      ["Message", progress.message],
      ["Error", step.error],
    ];
    for (const [label, value] of rows) {
      if (value === undefined || value === null || value === "") continue;
      item.extra.append(el("dt", {}, label), el("dd", {}, String(value)));
    }
  }

  async cancel() {
    const job = this.ctx.store.get(this.jobId);
    if (!job || !window.confirm(`Cancel the job "${jobTitle(job)}"?`)) return;
    this.cancelButton.disabled = true;
    try {
      this.ctx.store.put(await api.cancel(this.jobId));
      toast("Cancellation requested.");
    } catch (error) {
      toast(`Could not cancel: ${error.message}`, "error");
    } finally {
      this.cancelButton.disabled = false;
    }
  }
}
