// Pure helpers: numbers in, numbers out. No DOM, no sockets.

export const MAX_TICKS_SHOWN = 200; // list items kept on the page
export const CHART_TICKS = 120; // ticks plotted on the chart
export const DEVIATION_WINDOW = 10_000; // ticks the p95 is computed over

export const BACKOFF_FIRST = 0.5; // seconds
export const BACKOFF_MAX = 10; // seconds

/** Seconds to wait before reconnect attempt `attempt` (0, 1, 2…): 0.5 s doubling
 * to at most 10 s, with ±20 % jitter so a restarted server is not hit by every
 * page at the same instant. */
export function backoffDelay(attempt, random = Math.random) {
  const base = Math.min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** attempt);
  return Math.min(BACKOFF_MAX, base * (0.8 + 0.4 * random()));
}

/** Deviation statistics of one schedule, in milliseconds, in constant memory. */
export class ScheduleStats {
  constructor() {
    this.received = 0;
    this.skipped = 0;
    this.sum = 0;
    this.window = new Float64Array(DEVIATION_WINDOW);
  }

  record(deviationMs) {
    this.window[this.received % DEVIATION_WINDOW] = deviationMs;
    this.received += 1;
    this.sum += deviationMs;
  }

  get mean() {
    return this.received ? this.sum / this.received : NaN;
  }

  get p95() {
    const n = Math.min(this.received, DEVIATION_WINDOW);
    if (!n) return NaN;
    const sorted = this.window.slice(0, n).sort();
    return sorted[Math.min(n - 1, Math.ceil(0.95 * n) - 1)];
  }
}

export function formatMs(ms) {
  if (!Number.isFinite(ms)) return "–";
  const sign = ms > 0 ? "+" : ms < 0 ? "−" : "±";
  return `${sign}${Math.abs(ms).toFixed(1)} ms`;
}

export function formatClock(date) {
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}
