// The websocket to the gateway: auth first, one subscription to every job, resume after the
// last sequence seen when the connection comes back (with backoff), heartbeats watched.

import { getToken, promptToken } from "./api.js";

const HEARTBEAT_TIMEOUT_MS = 45000;

export class LiveConnection extends EventTarget {
  constructor(store) {
    super();
    this.store = store;
    this.lastSeq = 0;
    this.socket = null;
    this.backoffMs = 500;
    this.retryTimer = null;
    this.watchdog = null;
    this.connected = false;
    this.orchestratorConnected = null;
    this.stopped = false;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  start() {
    this.stopped = false;
    this.open();
    window.addEventListener("tokenchange", () => this.reconnectNow());
  }

  open() {
    clearTimeout(this.retryTimer);
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("open", () => {
      const token = getToken();
      if (token) this.send({ type: "auth", payload: { token } });
      this.send({ type: "subscribe", payload: { job_ids: [], after: this.lastSeq } });
      this.backoffMs = 500;
      this.setConnected(true);
      this.armWatchdog();
    });
    socket.addEventListener("message", (message) => this.onMessage(message));
    socket.addEventListener("close", (event) => this.onClose(socket, event));
  }

  send(envelope) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(envelope));
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      // No message (not even a heartbeat) for too long: the connection is dead.
      if (this.socket) this.socket.close(4000, "heartbeat timeout");
    }, HEARTBEAT_TIMEOUT_MS);
  }

  onMessage(message) {
    this.armWatchdog();
    let envelope;
    try {
      envelope = JSON.parse(message.data);
    } catch {
      return;
    }
    const payload = envelope.payload || {};
    switch (envelope.type) {
      case "hello":
        this.setOrchestrator(payload.orchestrator_connected !== false);
        break;
      case "orchestrator":
        this.setOrchestrator(Boolean(payload.connected));
        break;
      case "event":
        if (Number.isFinite(payload.seq)) this.lastSeq = Math.max(this.lastSeq, payload.seq);
        this.store.apply(payload);
        this.dispatchEvent(new CustomEvent("event", { detail: payload }));
        break;
      case "error":
        this.dispatchEvent(new CustomEvent("servererror", { detail: payload.message || "error" }));
        break;
      default:
        break; // heartbeat and anything new
    }
  }

  async onClose(socket, event) {
    if (socket !== this.socket) return;
    clearTimeout(this.watchdog);
    this.socket = null;
    this.setConnected(false);
    if (this.stopped) return;
    if (event.code === 4401) {
      const token = await promptToken("Live updates need an access token.");
      if (!token) {
        this.dispatchEvent(new CustomEvent("needtoken"));
        return;
      }
      this.open();
      return;
    }
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, 15000);
    this.retryTimer = setTimeout(() => this.open(), delay + Math.random() * 250);
  }

  reconnectNow() {
    if (this.socket) {
      this.socket.close(1000, "reconnect");
    } else {
      this.open();
    }
  }

  setConnected(value) {
    this.connected = value;
    this.dispatchEvent(new CustomEvent("status"));
  }

  setOrchestrator(value) {
    this.orchestratorConnected = value;
    this.dispatchEvent(new CustomEvent("status"));
  }
}
