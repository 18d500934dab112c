// The jobs the dashboard knows, kept current by websocket events; views subscribe to changes.

export class JobStore extends EventTarget {
  constructor() {
    super();
    this.jobs = new Map();
    this.logs = new Map(); // job id -> Map(seq -> log event), only for jobs whose logs were loaded
  }

  sorted() {
    return [...this.jobs.values()].sort((a, b) => String(b.created_at || "").localeCompare(String(a.created_at || "")));
  }

  get(id) {
    return this.jobs.get(id);
  }

  put(job) {
    if (!job || !job.job_id) return;
    this.jobs.set(job.job_id, job);
    this.changed(job.job_id, "job");
  }

  changed(jobId, what, detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { jobId, what, ...detail } }));
  }

  addLogs(jobId, events) {
    let lines = this.logs.get(jobId);
    if (!lines) {
      lines = new Map();
      this.logs.set(jobId, lines);
    }
    const added = [];
    for (const event of events) {
      if (!event || !event.log || lines.has(event.seq)) continue;
      lines.set(event.seq, event);
      added.push(event);
    }
    if (added.length) this.changed(jobId, "logs", { added });
  }

  /** Applies one websocket event (the contract's Event shape). */
  apply(event) {
    const job = this.jobs.get(event.job_id);
    switch (event.kind) {
      case "snapshot":
        this.put(event.job);
        break;
      case "state":
        if (job) {
          job.state = event.state;
          this.changed(job.job_id, "state");
        }
        break;
      case "step":
        if (job && event.step) this.applyStep(job, event.step);
        else if (!job) this.dispatchEvent(new CustomEvent("missing", { detail: { jobId: event.job_id } }));
        break;
      case "error":
        if (job && event.error) {
          job.errors = [...(job.errors || []), event.error];
          this.changed(job.job_id, "job");
        }
        break;
      case "log":
        if (this.logs.has(event.job_id)) this.addLogs(event.job_id, [event]);
        break;
      default:
        break;
    }
  }

  applyStep(job, { video, step }) {
    const videos = job.videos || [];
    const key = String(video);
    const target = videos.find((v) => String(v.index) === key || v.path === key);
    if (!target) {
      this.dispatchEvent(new CustomEvent("missing", { detail: { jobId: job.job_id } }));
      return;
    }
    const steps = target.steps || (target.steps = []);
    const at = steps.findIndex((s) => s.name === step.name);
    if (at >= 0) steps[at] = step;
    else steps.push(step);
    if (step.state === "running" && (target.state === "pending" || !target.state)) target.state = "running";
    if (job.state === "queued") job.state = "running";
    this.changed(job.job_id, "step", { video: target.index, step: step.name });
  }
}

/** Fraction of a job's work that is done, from its steps (0..1). */
export function jobProgress(job) {
  let done = 0;
  let total = 0;
  for (const video of job.videos || []) {
    for (const step of video.steps || []) {
      total += 1;
      done += stepFraction(step);
    }
  }
  if (!total) return ["completed", "completed_with_errors", "failed", "cancelled"].includes(job.state) ? 1 : 0;
  return done / total;
}

export function stepFraction(step) {
  if (["succeeded", "skipped", "failed", "cancelled"].includes(step.state)) return 1;
  const progress = step.progress || {};
  if (step.state === "running" && progress.total > 0) return Math.min(1, progress.done / progress.total);
  return 0;
}
