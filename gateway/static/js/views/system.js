// Services health and the system monitor, polled every 5 s while the view is shown and the tab
// is visible (the legacy monitor kept polling hidden tabs).

import { api } from "../api.js";
import { chip, clear, el, formatBytes, setChip, text } from "../dom.js";

const POLL_MS = 5000;

function level(percent, medium, high) {
  if (percent > high) return "high";
  if (percent > medium) return "medium";
  return "low";
}

export class SystemView {
  constructor(ctx) {
    this.ctx = ctx;
    this.timer = null;
    this.onVisibility = () => this.schedule(0);
  }

  render(root) {
    this.services = el("tbody");
    this.meters = el("div", { class: "meters" });
    this.status = el("p", { class: "muted", "aria-live": "polite" });
    root.append(
      el("h1", { tabindex: "-1" }, "System"),
      el("section", { "aria-labelledby": "h-services" },
        el("h2", { id: "h-services" }, "Services"),
        el("table", {}, el("thead", {}, el("tr", {},
          el("th", { scope: "col" }, "Service"), el("th", { scope: "col" }, "Address"), el("th", { scope: "col" }, "Health"))),
        this.services)),
      el("section", { "aria-labelledby": "h-monitor" }, el("h2", { id: "h-monitor" }, "Monitor"), this.meters),
      this.status);
    document.addEventListener("visibilitychange", this.onVisibility);
    this.schedule(0);
  }

  destroy() {
    clearTimeout(this.timer);
    this.timer = null;
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.destroyed = true;
  }

  schedule(delay) {
    clearTimeout(this.timer);
    if (this.destroyed || document.hidden) return;
    this.timer = setTimeout(() => this.poll(), delay);
  }

  async poll() {
    const [services, system] = await Promise.allSettled([api.services(), api.system()]);
    if (this.destroyed) return;
    if (services.status === "fulfilled") this.renderServices(services.value.services || []);
    if (system.status === "fulfilled") this.renderSystem(system.value);
    const failed = [services, system].filter((r) => r.status === "rejected");
    text(this.status, failed.length ? `Update failed: ${failed[0].reason.message}` : `Updated ${new Date().toLocaleTimeString()}`);
    this.meters.classList.toggle("stale", failed.length > 0);
    this.schedule(POLL_MS);
  }

  renderServices(services) {
    clear(this.services);
    for (const service of services) {
      const badge = chip(service.status);
      setChip(badge, service.status);
      this.services.append(el("tr", { dataset: { service: service.name } },
        el("td", {}, service.name), el("td", {}, el("code", {}, service.address || "")), el("td", {}, badge)));
    }
  }

  meter(label, percent, detail, usage) {
    return el("div", { class: "meter-row", dataset: { usageLevel: usage } },
      el("span", { class: "meter-label" }, label),
      el("meter", { min: "0", max: "100", low: "60", high: "85", optimum: "10", value: String(percent), "aria-label": `${label} ${percent.toFixed(0)}%` }),
      el("span", { class: "meter-value" }, `${percent.toFixed(0)}%`, detail ? ` · ${detail}` : ""));
  }

  renderSystem(system) {
    clear(this.meters);
    const cpu = Number(system.cpu_percent) || 0;
    this.meters.append(this.meter("CPU", cpu, "", level(cpu, 60, 85)));
    for (const [label, part, medium] of [["Memory", system.memory, 70], ["Disk (media)", system.disk, 70]]) {
      if (!part || !part.total) continue;
      const pct = (part.used / part.total) * 100;
      this.meters.append(this.meter(label, pct, `${formatBytes(part.used)} / ${formatBytes(part.total)}`, level(pct, medium, 85)));
    }
    for (const [n, gpu] of (system.gpu || []).entries()) {
      const util = Number(gpu.utilization_percent ?? gpu.util ?? 0);
      const memory = gpu.memory_total ? ` · ${formatBytes(gpu.memory_used)} / ${formatBytes(gpu.memory_total)}` : "";
      const temp = gpu.temperature_c !== undefined ? ` · ${gpu.temperature_c} °C` : "";
      this.meters.append(this.meter(gpu.name || `GPU ${n}`, util, `${memory}${temp}`.replace(/^ · /, ""), level(util, 60, 85)));
    }
    if (!(system.gpu || []).length) this.meters.append(el("p", { class: "muted small" }, "No GPU."));
  }
}
