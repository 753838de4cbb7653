// The websocket to the ticker server, reconnecting with backoff when it drops.

export const BACKOFF_FIRST = 0.5; // seconds
export const BACKOFF_MAX = 10; // seconds

/** What the status says from a lost connection until the next one opens, however
 * many attempts that takes: one announcement, not one per attempt. */
export const RECONNECTING = "Disconnected: reconnecting…";

/** Seconds to wait before reconnect attempt `attempt` (0, 1, 2…): 0.5 s doubling
 * to at most 10 s, with ±20 % jitter so a restarted server is not hit by every
 * page at the same instant. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt);
  return Math.min(BACKOFF_MAX, base * (0.8 + 0.4 * random()));
}

export class TickerConnection {
  /**
   * @param {string} url  ws:// or wss:// URL of /ws
   * @param {{onStatus: (text: string, state: string) => void,
   *          onCountdown: (text: string) => void,
   *          onMessage: (message: object) => void}} handlers
   *   onStatus: a change of state, in words (for a live region: never the same
   *   text twice in a row); onCountdown: the wait for the next attempt, every
   *   100 ms while there is one, for the eyes only.
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.socket = null;
    this.attempt = 0;
    this.timer = null;
    this.status = null; // the text last given to onStatus
    this.lost = false; // a connection dropped, and none has opened since
    window.addEventListener("online", () => this.connectNow());
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  setStatus(text, state) {
    if (text === this.status) return;
    this.status = text;
    this.handlers.onStatus(text, state);
  }

  connect() {
    if (this.lost) this.handlers.onCountdown("(connecting…)");
    else this.setStatus("Connecting…", "connecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.lost = false;
      this.handlers.onCountdown("");
      this.setStatus("Connected", "open");
    });
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
        this.setStatus(`Connected to ticker ${message.version}`, "open");
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
    this.lost = true;
    if (!navigator.onLine) {
      this.handlers.onCountdown("");
      this.setStatus("Disconnected (offline); waiting for the network…", "closed");
      return;
    }
    this.setStatus(RECONNECTING, "closed");
    const delay = backoffDelay(this.attempt);
    this.attempt += 1;
    const due = performance.now() + delay * 1000;
    const tick = () => {
      const left = (due - performance.now()) / 1000;
      if (left <= 0) {
        this.connectNow();
      } else {
        this.handlers.onCountdown(`(next attempt in ${Math.ceil(left)} s)`);
      }
    };
    tick();
    this.timer = setInterval(tick, 100);
  }
}
