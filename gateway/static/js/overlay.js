// Face tracks drawn over the playing video: boxes scaled from the analysed frame's pixels to the
// displayed picture (object-fit: contain, so letterboxing is accounted for), with the attributed
// speaker and the speaking state. What was drawn last is mirrored on the canvas's data attributes
// (data-frame, data-boxes, data-speaking, data-labels) for tests and assistive tooling.

/** Frame size of the tracking document: metadata when it says, else the video's own size. */
export function frameSize(faces, video) {
  const meta = (faces && faces.metadata) || {};
  const width = meta.frame_width || meta.width || (meta.frame_size && meta.frame_size.width) || video.videoWidth;
  const height = meta.frame_height || meta.height || (meta.frame_size && meta.frame_size.height) || video.videoHeight;
  return { width: Number(width) || 0, height: Number(height) || 0 };
}

/** The rectangle (CSS pixels, relative to the element) where the picture is displayed. */
export function pictureRect(elementWidth, elementHeight, frameWidth, frameHeight) {
  if (!frameWidth || !frameHeight || !elementWidth || !elementHeight) return null;
  const scale = Math.min(elementWidth / frameWidth, elementHeight / frameHeight);
  const width = frameWidth * scale;
  const height = frameHeight * scale;
  return { x: (elementWidth - width) / 2, y: (elementHeight - height) / 2, scale, width, height };
}

/** Index of the tracking frames by 1-based frame number. */
export function indexFrames(faces) {
  const byFrame = new Map();
  for (const frame of (faces && faces.frames) || []) {
    if (frame && Array.isArray(frame.tracked_objects) && frame.tracked_objects.length) {
      byFrame.set(Number(frame.frame), frame.tracked_objects);
    }
  }
  return byFrame;
}

export function frameAt(time, fps) {
  return Math.floor(time * fps + 1e-6) + 1;
}

export class FaceOverlay {
  constructor(video, canvas, faces) {
    this.video = video;
    this.canvas = canvas;
    this.faces = faces;
    this.fps = Number((faces && faces.metadata && faces.metadata.fps) || 25);
    this.byFrame = indexFrames(faces);
    this.enabled = true;
    this.lastKey = "";
    this.running = false;
    this.draw = this.draw.bind(this);
    this.tick = this.tick.bind(this);
    for (const name of ["loadedmetadata", "seeked", "pause", "timeupdate"]) video.addEventListener(name, this.draw);
    video.addEventListener("play", () => this.loop());
    this.resizeObserver = new ResizeObserver(() => { this.lastKey = ""; this.draw(); });
    this.resizeObserver.observe(video);
  }

  destroy() {
    this.running = false;
    this.resizeObserver.disconnect();
  }

  setEnabled(value) {
    this.enabled = value;
    this.lastKey = "";
    this.draw();
  }

  loop() {
    if (this.running) return;
    this.running = true;
    this.tick();
  }

  tick() {
    if (!this.running || !this.canvas.isConnected) {
      this.running = false;
      return;
    }
    this.draw();
    if (this.video.paused || this.video.ended) {
      this.running = false;
      return;
    }
    if (typeof this.video.requestVideoFrameCallback === "function") this.video.requestVideoFrameCallback(this.tick);
    else requestAnimationFrame(this.tick);
  }

  draw() {
    const { video, canvas } = this;
    const cssWidth = video.clientWidth;
    const cssHeight = video.clientHeight;
    const ratio = window.devicePixelRatio || 1;
    const frame = frameAt(video.currentTime, this.fps);
    const key = `${frame}|${cssWidth}x${cssHeight}|${this.enabled}`;
    if (key === this.lastKey) return;
    this.lastKey = key;
    if (canvas.width !== Math.round(cssWidth * ratio) || canvas.height !== Math.round(cssHeight * ratio)) {
      canvas.width = Math.round(cssWidth * ratio);
      canvas.height = Math.round(cssHeight * ratio);
    }
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, cssWidth, cssHeight);
    const size = frameSize(this.faces, video);
    const rect = pictureRect(cssWidth, cssHeight, size.width, size.height);
    const objects = (this.enabled && rect && this.byFrame.get(frame)) || [];
    const labels = [];
    let speaking = 0;
    const style = getComputedStyle(canvas);
    const colourSpeaking = style.getPropertyValue("--overlay-speaking").trim() || "#22c55e";
    const colourSilent = style.getPropertyValue("--overlay-silent").trim() || "#facc15";
    for (const face of objects) {
      const x = rect.x + Number(face.bbox_xmin) * rect.scale;
      const y = rect.y + Number(face.bbox_ymin) * rect.scale;
      const w = (Number(face.bbox_xmax) - Number(face.bbox_xmin)) * rect.scale;
      const h = (Number(face.bbox_ymax) - Number(face.bbox_ymin)) * rect.scale;
      const isSpeaking = Boolean(face.is_speaking);
      if (isSpeaking) speaking += 1;
      const colour = isSpeaking ? colourSpeaking : colourSilent;
      context.lineWidth = isSpeaking ? 3 : 2;
      context.setLineDash(isSpeaking ? [] : [6, 4]);
      context.strokeStyle = colour;
      context.strokeRect(x, y, w, h);
      const label = `${face.speaker_label || face.id || "face"}${isSpeaking ? " · speaking" : ""}`;
      labels.push(label);
      context.setLineDash([]);
      context.font = "600 13px system-ui, sans-serif";
      const textWidth = context.measureText(label).width + 8;
      const top = Math.max(0, y - 18);
      context.fillStyle = "rgba(0, 0, 0, 0.72)";
      context.fillRect(x, top, textWidth, 18);
      context.fillStyle = colour;
      context.fillText(label, x + 4, top + 13);
    }
    canvas.dataset.frame = String(frame);
    canvas.dataset.boxes = String(objects.length);
    canvas.dataset.speaking = String(speaking);
    canvas.dataset.labels = labels.join("|");
    canvas.setAttribute("aria-label", objects.length
      ? `Frame ${frame}: ${labels.join(", ")}`
      : `Frame ${frame}: no face`);
  }
}
