// Small DOM helpers. Every piece of text from the server goes in through textContent (never
// innerHTML), so file names, labels and log lines can never become markup.

/**
 * el("a", {href: "#/x", class: "chip", dataset: {state: "running"}}, "text", childNode)
 * Attribute values are set with setAttribute (or as properties for `on*` handlers); children
 * that are strings become text nodes.
 */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

export function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function text(node, value) {
  const next = value === undefined || value === null ? "" : String(value);
  if (node.textContent !== next) node.textContent = next;
  return node;
}

const STATE_LABELS = {
  queued: "Queued",
  running: "Running",
  completed: "Completed",
  completed_with_errors: "Completed with errors",
  failed: "Failed",
  cancelled: "Cancelled",
  pending: "Pending",
  succeeded: "Succeeded",
  skipped: "Skipped",
  serving: "Serving",
  not_serving: "Not serving",
  unreachable: "Unreachable",
  downloading: "Downloading",
  awaiting_confirmation: "Awaiting confirmation",
  submitted: "Submitted",
  dry_run: "Dry run",
};

/** A state chip: the label is text, the colour comes from data-state in the CSS. */
export function chip(state) {
  const node = el("span", { class: "chip" });
  setChip(node, state);
  return node;
}

export function setChip(node, state) {
  const value = state || "unknown";
  node.dataset.state = value;
  text(node, STATE_LABELS[value] || value);
}

export const FINAL_JOB_STATES = new Set(["completed", "completed_with_errors", "failed", "cancelled"]);

export function formatSeconds(seconds) {
  if (!Number.isFinite(seconds) || seconds <= 0) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

export function formatTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function formatBytes(bytes) {
  if (!Number.isFinite(bytes)) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function basename(path) {
  const parts = String(path || "").split("/");
  return parts[parts.length - 1] || String(path || "");
}

/** Announces a short message to screen readers (the polite live region). */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A new text node in a separate task makes screen readers read repeated messages too.
  setTimeout(() => { region.textContent = message; }, 50);
}

/** A toast in the notifications area; errors use role=alert. */
export function toast(message, kind = "info") {
  const area = document.getElementById("toasts");
  if (!area) return;
  const item = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    el("span", { text: message }),
    el("button", { type: "button", class: "icon", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"));
  area.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 10000 : 5000);
}
