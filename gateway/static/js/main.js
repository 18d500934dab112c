// The dashboard: a hash router over the views, the live connection, theme and token controls.

import { api, getToken, promptToken, setToken, syncSession } from "./api.js";
import { LiveConnection } from "./live.js";
import { JobStore } from "./store.js";
import { FINAL_JOB_STATES, announce, clear, el, text, toast } from "./dom.js";
import { JobView, JobsListView } from "./views/jobs.js";
import { ResultsView } from "./views/results.js";
import { SystemView } from "./views/system.js";
import { DownloadsView } from "./views/downloads.js";
import { SubmitView } from "./views/submit.js";
import { ReportsView } from "./views/reports.js";
import { initReportViewer } from "./reportviewer.js";

const THEME_KEY = "gateway.theme";
const store = new JobStore();
const live = new LiveConnection(store);
const ctx = { store, live };
// For the console and the browser tests: the live connection and the jobs it keeps current.
window.dashboard = ctx;
const main = document.getElementById("main");
let current = null;

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts[1] && parts[2] === "videos" && parts[3] !== undefined) {
    return { nav: "jobs", view: new ResultsView(ctx, parts[1], Number(parts[3])) };
  }
  if (parts[0] === "jobs" && parts[1]) return { nav: "jobs", view: new JobView(ctx, parts[1]) };
  if (parts[0] === "submit") return { nav: "submit", view: new SubmitView(ctx) };
  if (parts[0] === "system") return { nav: "system", view: new SystemView(ctx) };
  if (parts[0] === "downloads") return { nav: "downloads", view: new DownloadsView(ctx) };
  if (parts[0] === "reports") return { nav: "reports", view: new ReportsView(ctx) };
  return { nav: "jobs", view: new JobsListView(ctx) };
}

async function show() {
  if (current && current.destroy) current.destroy();
  const { nav, view } = route();
  current = view;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.nav === nav) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clear(main);
  main.setAttribute("aria-busy", "true");
  const rendering = view.render(main);
  focusHeading();
  try {
    await rendering;
  } catch (error) {
    toast(`This view failed: ${error.message}`, "error");
  } finally {
    main.setAttribute("aria-busy", "false");
  }
  if (view === current) {
    const heading = main.querySelector("h1");
    if (heading) document.title = `${heading.textContent} · Video analysis`;
    // The heading may have been replaced while loading; keep focus on the view.
    if (!main.contains(document.activeElement)) focusHeading();
  }
}

/** Focus moves to the new view's heading, so keyboard and screen-reader users land there. */
function focusHeading() {
  const heading = main.querySelector("h1");
  if (heading) heading.focus({ preventScroll: false });
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const button = document.getElementById("theme-toggle");
  button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  text(button.querySelector(".label"), "Dark theme");
}

function initTheme() {
  const saved = localStorage.getItem(THEME_KEY);
  const prefersDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  applyTheme(saved || (prefersDark ? "dark" : "light"));
  document.getElementById("theme-toggle").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    localStorage.setItem(THEME_KEY, next);
    applyTheme(next);
  });
}

function initToken() {
  const button = document.getElementById("token-button");
  const refresh = () => text(button.querySelector(".label"), getToken() ? "Token set" : "Set token");
  button.addEventListener("click", async () => {
    if (getToken() && window.confirm("Forget the access token of this tab?")) {
      setToken("");
      refresh();
      syncSession();
      live.reconnectNow();
      return;
    }
    await promptToken("");
    refresh();
  });
  window.addEventListener("tokenchange", () => {
    refresh();
    syncSession();
  });
  document.getElementById("token-cancel").addEventListener("click", () => document.getElementById("token-dialog").close());
  refresh();
}

function initStatus() {
  const banner = document.getElementById("banner");
  const status = document.getElementById("live-status");
  const update = () => {
    let message = "";
    let state = "ok";
    if (!live.connected) {
      message = "Live updates disconnected: reconnecting…";
      state = "down";
    } else if (live.orchestratorConnected === false) {
      message = "The orchestrator is disconnected: the jobs shown may be out of date.";
      state = "degraded";
    }
    status.dataset.state = state;
    text(status.querySelector(".label"), state === "ok" ? "Live" : state === "down" ? "Offline" : "Orchestrator down");
    banner.hidden = !message;
    text(banner, message);
  };
  live.addEventListener("status", update);
  live.addEventListener("needtoken", () => toast("Live updates are off until a token is set.", "error"));
  live.addEventListener("servererror", (event) => toast(`Gateway: ${event.detail}`, "error"));
  live.addEventListener("event", (event) => {
    const e = event.detail;
    if (e.kind === "state" && FINAL_JOB_STATES.has(e.state)) {
      const job = store.get(e.job_id);
      const name = (job && (job.label || job.job_id)) || e.job_id;
      toast(`Job ${name}: ${e.state.replace(/_/g, " ")}`, e.state === "completed" ? "success" : "error");
    }
  });
  store.addEventListener("missing", async (event) => {
    try {
      store.put(await api.job(event.detail.jobId));
    } catch {
      // the next snapshot brings it
    }
  });
  update();
}

async function loadJobs() {
  try {
    const body = await api.jobs(100);
    for (const job of body.jobs || []) if (!store.get(job.job_id)) store.put(job);
  } catch (error) {
    toast(`Could not load the jobs: ${error.message}`, "error");
  }
}

initTheme();
initToken();
initStatus();
initReportViewer();
window.addEventListener("hashchange", show);
live.start();
// The read cookie first, so that the first view's <video> and <img> may load.
syncSession().then(show);
loadJobs().then(() => announce("Jobs loaded"));
