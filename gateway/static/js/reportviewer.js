// Reports open in a modal preview: fetched with the bearer token (so they work when reads need
// auth), shown in a sandboxed iframe (no scripts, no same-origin), with a download of the HTML.
// A plain click with a modifier (new tab) keeps the browser's behaviour.

import { request } from "./api.js";
import { toast } from "./dom.js";

function fileName(url) {
  const parts = new URL(url, location.href).pathname.split("/").filter(Boolean).slice(1);
  const slug = parts.map(decodeURIComponent).join("_").replace(/[^0-9A-Za-z._-]+/g, "_");
  return `rapport_${slug}_${new Date().toISOString().slice(0, 10)}.html`;
}

export async function openReport(url) {
  const dialog = document.getElementById("report-dialog");
  const frame = dialog.querySelector("iframe");
  const download = dialog.querySelector("a.download");
  const tab = dialog.querySelector("a.new-tab");
  let html;
  try {
    html = await request("GET", url, undefined, "text");
  } catch (error) {
    toast(`Report unavailable: ${error.message}`, "error");
    return;
  }
  frame.srcdoc = html;
  if (download.href.startsWith("blob:")) URL.revokeObjectURL(download.href);
  download.href = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  download.download = fileName(url);
  tab.href = url;
  dialog.showModal();
  dialog.querySelector("button.close").focus();
}

/** Report links anywhere in the page (`a[data-report]`) open in the preview. */
export function initReportViewer() {
  const dialog = document.getElementById("report-dialog");
  dialog.querySelector("button.close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (event) => {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[data-report]");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    openReport(link.getAttribute("href"));
  });
}
