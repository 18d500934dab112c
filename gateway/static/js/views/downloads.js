// The download monitor: its webhook status, the downloads it found (newest first) and the two
// actions on one (confirm a download that waits for it, retry a failed one). Polled every 5 s
// while shown and the tab is visible.

import { api, ApiError } from "../api.js";
import { chip, clear, el, formatBytes, formatTime, text, toast } from "../dom.js";

const POLL_MS = 5000;

function sizeOf(download) {
  const { done, total } = download.progress || {};
  if (download.state === "downloading" && total) return `${formatBytes(done)} / ${formatBytes(total)}`;
  return download.size_bytes ? formatBytes(download.size_bytes) : "";
}

export class DownloadsView {
  constructor(ctx) {
    this.ctx = ctx;
    this.timer = null;
    this.onVisibility = () => this.schedule(0);
  }

  render(root) {
    this.summary = el("p", { class: "downloads-summary", "aria-live": "polite" });
    this.rows = el("tbody");
    this.pollButton = el("button", { type: "button" }, "Check the webhook now");
    this.pollButton.addEventListener("click", () => this.act(() => api.pollDownloads(), "Webhook read"));
    this.status = el("p", { class: "muted", "aria-live": "polite" });
    root.append(
      el("h1", { tabindex: "-1" }, "Downloads"),
      el("div", { class: "title-row" }, this.summary, this.pollButton),
      el("table", { class: "downloads" },
        el("thead", {}, el("tr", {},
          ...["File", "Provider", "State", "Size", "Result", "Job", "Updated", ""].map((h) => el("th", { scope: "col" }, h)))),
        this.rows),
      this.status);
    document.addEventListener("visibilitychange", this.onVisibility);
    this.schedule(0);
  }

  destroy() {
    clearTimeout(this.timer);
    this.destroyed = true;
    document.removeEventListener("visibilitychange", this.onVisibility);
  }

  schedule(delay) {
    clearTimeout(this.timer);
    if (this.destroyed || document.hidden) return;
    this.timer = setTimeout(() => this.poll(), delay);
  }

  async poll() {
    try {
      const body = await api.downloads();
      if (this.destroyed) return;
      this.renderMonitor(body.monitor);
      this.renderRows(body.downloads || []);
      text(this.status, `Updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      if (this.destroyed) return;
      text(this.status, error instanceof ApiError && error.status === 503 ? error.message : `Update failed: ${error.message}`);
    }
    this.schedule(POLL_MS);
  }

  renderMonitor(monitor) {
    const parts = [
      monitor.webhook_available ? "Webhook reachable" : `Webhook unreachable${monitor.webhook_error ? `: ${monitor.webhook_error}` : ""}`,
      `${monitor.active_downloads} downloading`,
      `${monitor.history_count} in the history`,
      monitor.auto_submit ? "new downloads become jobs at once" : "new downloads wait for confirmation",
    ];
    if (monitor.dry_run) parts.push("dry run (nothing is downloaded)");
    text(this.summary, parts.join(" · "));
    this.summary.dataset.webhook = monitor.webhook_available ? "up" : "down";
  }

  renderRows(downloads) {
    clear(this.rows);
    if (!downloads.length) {
      this.rows.append(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "No downloads yet.")));
      return;
    }
    for (const download of downloads) {
      const job = download.job_id ? el("a", { href: `#/jobs/${encodeURIComponent(download.job_id)}` }, download.job_id) : "";
      const result = download.error || download.outcome || "";
      this.rows.append(el("tr", { dataset: { downloadId: download.download_id, state: download.state } },
        el("td", {}, download.filename || download.download_id),
        el("td", {}, download.provider || download.url_type || ""),
        el("td", {}, chip(download.state)),
        el("td", {}, sizeOf(download)),
        el("td", { class: "small" }, result),
        el("td", {}, job),
        el("td", { class: "small" }, formatTime(download.updated_at)),
        el("td", {}, this.action(download))));
    }
  }

  action(download) {
    const label = { awaiting_confirmation: "Confirm", failed: "Retry" }[download.state];
    if (!label) return "";
    const button = el("button", { type: "button", "aria-label": `${label} ${download.filename || download.download_id}` }, label);
    button.addEventListener("click", () => {
      button.disabled = true;
      const call = label === "Confirm" ? api.confirmDownload : api.retryDownload;
      this.act(() => call(download.download_id), `${label}ed ${download.filename || download.download_id}`);
    });
    return button;
  }

  async act(call, done) {
    try {
      await call();
      toast(done, "success");
    } catch (error) {
      toast(error.message, "error");
    }
    this.schedule(0);
  }
}
