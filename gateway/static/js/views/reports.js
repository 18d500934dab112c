// Links to the HTML reports: per project (from the jobs known), monthly, and per video from
// each job's page.

import { el } from "../dom.js";
import { openReport } from "../reportviewer.js";

export class ReportsView {
  constructor(ctx) {
    this.ctx = ctx;
  }

  render(root) {
    const projects = new Map();
    for (const job of this.ctx.store.sorted()) {
      for (const video of job.videos || []) {
        const name = String(video.output_dir || "").split("/").filter(Boolean).pop();
        if (name) projects.set(name, (projects.get(name) || 0) + 1);
      }
    }
    const list = el("ul", { class: "report-links" });
    for (const [name, count] of [...projects].sort()) {
      list.append(el("li", {}, el("a", { href: `/reports/projects/${encodeURIComponent(name)}`, "data-report": "", target: "_blank", rel: "noopener" }, name),
        el("span", { class: "muted" }, ` · ${count} video(s)`)));
    }
    if (!projects.size) list.append(el("li", { class: "muted" }, "No project has results yet."));
    const now = new Date();
    const month = el("input", { id: "report-month", type: "month", name: "month", required: true,
      value: `${now.getFullYear()}-${String(now.getMonth() + 1).padStart(2, "0")}` });
    const form = el("form", { class: "inline-form", onsubmit: (event) => {
      event.preventDefault();
      if (/^\d{4}-\d{2}$/.test(month.value)) openReport(`/reports/monthly/${month.value}`);
    } }, el("label", { for: "report-month" }, "Month"), month, el("button", { type: "submit" }, "Open the monthly report"));
    root.append(
      el("h1", { tabindex: "-1" }, "Reports"),
      el("section", { "aria-labelledby": "h-projects" }, el("h2", { id: "h-projects" }, "Projects"), list),
      el("section", { "aria-labelledby": "h-monthly" }, el("h2", { id: "h-monthly" }, "Monthly archive report"), form),
      el("p", { class: "muted" }, "Per-video reports are linked from each job's page and from the results view."));
  }

  destroy() {}
}
