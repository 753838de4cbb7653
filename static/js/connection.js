// The websocket to the ticker server, reconnecting with backoff when it drops.
import { backoffDelay } from "./stats.js";

export class TickerConnection {
  /**
   * @param {string} url  ws:// or wss:// URL of /ws
   * @param {{onStatus: (text: string, state: string) => void,
   *          onMessage: (message: object) => void}} handlers
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    window.addEventListener("online", () => this.connectNow());
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    this.handlers.onStatus("Connecting…", "connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => this.handlers.onStatus("Connected", "open"));
    socket.addEventListener("message", (event) => {
      if (typeof event.data !== "string") return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // not ours to answer: the protocol only sends JSON
      }
      if (message.type === "hello") {
        this.attempt = 0; // a server that says hello is a working server
        this.handlers.onStatus(`Connected to ticker ${message.version}`, "open");
      }
      this.handlers.onMessage(message);
    });
    socket.addEventListener("close", () => {
      if (this.socket === socket) {
        this.socket = null;
        this.scheduleReconnect();
      }
    });
  }

  send(message) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  connectNow() {
    if (this.socket !== null) return;
    clearInterval(this.timer);
    this.timer = null;
    this.connect();
  }

  scheduleReconnect() {
    if (!navigator.onLine) {
      this.handlers.onStatus("Disconnected (offline); waiting for the network…", "closed");
      return;
    }
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    const due = performance.now() + delay * 1000;
    const tick = () => {
      const left = (due - performance.now()) / 1000;
      if (left <= 0) {
        this.connectNow();
      } else {
        this.handlers.onStatus(`Reconnecting in ${Math.ceil(left)} s…`, "closed");
      }
    };
    tick();
    this.timer = setInterval(tick, 100);
  }
}
