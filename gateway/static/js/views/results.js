// One video's results: the player with the face tracks drawn over it, the shot strip with
// thumbnails, the speaker timeline, and the downloads.

import { api } from "../api.js";
import { FaceOverlay } from "../overlay.js";
import { basename, chip, clear, el, formatSeconds, text } from "../dom.js";

const ARTIFACTS = [
  ["scenes", "Scenes (CSV)"],
  ["audio", "Audio (JSON)"],
  ["tracking", "Tracking (JSON)"],
  ["docs_tracking", "After Effects tracking"],
  ["docs_audio", "After Effects audio"],
  ["archive", "Archive (zip)"],
];

function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${String(m).padStart(2, "0")}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

export class ResultsView {
  constructor(ctx, jobId, index) {
    this.ctx = ctx;
    this.jobId = jobId;
    this.index = index;
    this.overlay = null;
  }

  async render(root) {
    this.heading = el("h1", { tabindex: "-1" }, "Results");
    root.append(
      el("p", { class: "breadcrumbs" },
        el("a", { href: "#/jobs" }, "Jobs"), " / ",
        el("a", { href: `#/jobs/${encodeURIComponent(this.jobId)}` }, this.jobId), " / ",
        el("span", {}, `video ${this.index + 1}`)),
      this.heading);
    let job;
    try {
      job = this.ctx.store.get(this.jobId) || await api.job(this.jobId);
    } catch (error) {
      root.append(el("p", { role: "alert" }, error.message));
      return;
    }
    const video = (job.videos || []).find((v) => v.index === this.index);
    if (!video) {
      root.append(el("p", { role: "alert" }, `This job has no video ${this.index + 1}.`));
      return;
    }
    text(this.heading, basename(video.path));
    root.append(el("p", { class: "muted" }, chip(video.state), " ", video.path,
      video.from_cache ? el("span", { class: "badge" }, "from cache") : null));

    const media = (rest) => api.videoPath(this.jobId, this.index, rest);
    this.video = el("video", {
      controls: true, muted: true, playsinline: true, preload: "auto", src: media("media"),
      "aria-label": `Video ${basename(video.path)}`,
    });
    this.video.muted = true;
    this.canvas = el("canvas", { class: "overlay", role: "img", "aria-label": "Face tracks" });
    this.toggle = el("input", { type: "checkbox", id: "overlay-toggle", checked: true,
      onchange: () => this.overlay && this.overlay.setEnabled(this.toggle.checked) });
    this.time = el("span", { class: "muted", "aria-live": "off" });
    this.shots = el("ol", { class: "shot-strip", "aria-label": "Shots" });
    this.speakers = el("div", { class: "speaker-timeline" });
    this.legend = el("p", { class: "muted small" });
    const downloads = el("ul", { class: "downloads" });
    for (const [kind, label] of ARTIFACTS) {
      downloads.append(el("li", {}, el("a", { href: media(`artifacts/${kind}`), download: "" }, label)));
    }
    downloads.append(el("li", {}, el("a", {
      href: `/reports/jobs/${encodeURIComponent(this.jobId)}/videos/${this.index}`, "data-report": "", target: "_blank", rel: "noopener",
    }, "Video report")));

    root.append(
      el("div", { class: "results-layout" },
        el("section", { "aria-labelledby": "h-player", class: "player-section" },
          el("h2", { id: "h-player", class: "visually-hidden" }, "Player"),
          el("div", { class: "player" }, this.video, this.canvas),
          el("div", { class: "player-tools" },
            el("label", { for: "overlay-toggle" }, this.toggle, " Show face tracks"), this.time),
          el("p", { class: "muted small" },
            "Boxes: solid green = speaking, dashed yellow = not speaking; the label is the attributed speaker.")),
        el("section", { "aria-labelledby": "h-downloads" }, el("h2", { id: "h-downloads" }, "Downloads"), downloads)),
      el("section", { "aria-labelledby": "h-shots" }, el("h2", { id: "h-shots" }, "Shots"), this.shots),
      el("section", { "aria-labelledby": "h-speakers" },
        el("h2", { id: "h-speakers" }, "Speakers"), this.legend, this.speakers),
    );

    this.video.addEventListener("timeupdate", () => this.onTime());
    this.video.addEventListener("seeked", () => this.onTime());
    const [scenes, speakers, faces] = await Promise.allSettled([
      api.videoJson(this.jobId, this.index, "scenes"),
      api.videoJson(this.jobId, this.index, "speakers"),
      api.videoJson(this.jobId, this.index, "faces"),
    ]);
    if (!this.canvas.isConnected) return; // the user left meanwhile
    this.renderShots(scenes);
    this.renderSpeakers(speakers);
    if (faces.status === "fulfilled") {
      this.overlay = new FaceOverlay(this.video, this.canvas, faces.value);
      this.canvas.dataset.ready = "true";
      this.overlay.draw();
    } else {
      this.canvas.dataset.ready = "error";
      root.querySelector(".player-tools").append(el("span", { class: "error-item" }, `No face tracks: ${faces.reason.message}`));
    }
  }

  destroy() {
    if (this.overlay) this.overlay.destroy();
    if (this.video) this.video.pause();
  }

  seekFrame(frame, fps) {
    this.video.currentTime = Math.max(0, (frame - 1) / fps + 0.5 / fps);
  }

  renderShots(result) {
    clear(this.shots);
    if (result.status !== "fulfilled") {
      this.shots.append(el("li", { class: "error-item" }, `No shots: ${result.reason.message}`));
      return;
    }
    const { fps = 25, shots = [] } = result.value;
    this.fps = fps;
    this.shotList = shots;
    for (const shot of shots) {
      const label = `Shot ${shot.no}, ${shot.timecode_in} to ${shot.timecode_out}`;
      const button = el("button", { type: "button", class: "shot", "aria-label": label, title: label,
        onclick: () => this.seekFrame(shot.frame_in, fps) },
        el("img", { src: api.videoPath(this.jobId, this.index, `thumbnails/${shot.frame_in}.jpg`), alt: "", loading: "lazy", width: "128", height: "72" }),
        el("span", {}, `#${shot.no} · ${shot.timecode_in.slice(3, 8)}`));
      this.shots.append(el("li", { dataset: { no: String(shot.no) } }, button));
    }
  }

  renderSpeakers(result) {
    clear(this.speakers);
    if (result.status !== "fulfilled") {
      this.speakers.append(el("p", { class: "error-item" }, `No speakers: ${result.reason.message}`));
      return;
    }
    const { fps = 25, total_frames: total = 0, speakers = [], segments = [] } = result.value;
    this.speakerFps = fps;
    this.totalFrames = total;
    text(this.legend, speakers.length ? `${speakers.length} speaker(s), ${segments.length} turn(s)` : "No speech detected.");
    speakers.forEach((speaker, n) => {
      const track = el("div", { class: "speaker-track", role: "group", "aria-label": speaker });
      for (const segment of segments.filter((s) => s.speaker === speaker)) {
        const start = (segment.start_frame - 1) / fps;
        const end = segment.end_frame / fps;
        const button = el("button", {
          type: "button", class: "segment", dataset: { colour: String(n % 6) },
          "aria-label": `${speaker} from ${clock(start)} to ${clock(end)}`,
          title: `${speaker}: ${clock(start)}–${clock(end)} (${formatSeconds(end - start) || "< 1 s"})`,
          onclick: () => this.seekFrame(segment.start_frame, fps),
        });
        button.style.left = `${total ? ((segment.start_frame - 1) / total) * 100 : 0}%`;
        button.style.width = `${total ? Math.max(0.3, ((segment.end_frame - segment.start_frame + 1) / total) * 100) : 0}%`;
        track.append(button);
      }
      this.speakers.append(el("div", { class: "speaker-row" }, el("span", { class: "speaker-name" }, speaker), track));
    });
    this.playhead = el("div", { class: "playhead", "aria-hidden": "true" });
    this.speakers.append(this.playhead);
  }

  onTime() {
    const t = this.video.currentTime;
    text(this.time, `${clock(t)} · frame ${Math.floor(t * (this.fps || 25) + 1e-6) + 1}`);
    if (this.playhead && this.totalFrames) {
      const fraction = Math.min(1, (t * this.speakerFps) / this.totalFrames);
      this.playhead.style.setProperty("--at", String(fraction));
    }
    if (this.shotList) {
      const frame = Math.floor(t * this.fps + 1e-6) + 1;
      for (const item of this.shots.children) {
        const shot = this.shotList.find((s) => String(s.no) === item.dataset.no);
        const current = shot && frame >= shot.frame_in && frame <= shot.frame_out;
        item.classList.toggle("current", Boolean(current));
        const button = item.querySelector("button");
        if (button) button.setAttribute("aria-current", current ? "true" : "false");
      }
    }
  }
}
