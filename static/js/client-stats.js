// The page's numbers: how late the ticks it received were, on its own clock, and
// how they are shown. Pure: numbers in, numbers out; no DOM, no sockets. (The
// server's own counts are src/ticker/server_tally.py's; `ticker watch` fits
// lateness with src/ticker/client_stats.py, the same definition as here.)

export const MAX_TICKS_SHOWN = 200; // list items kept on the page
export const CHART_TICKS = 120; // ticks plotted on the chart
export const DEVIATION_WINDOW = 10_000; // ticks the p95 is computed over

/** The schedule's start t0 on the page's clock, fitted as ticks arrive (times
 * in ms). The server's t0 is not on our clock: tick `seq` is due at
 * t0 + seq × interval, so arriving at `arrival` it proves
 * t0 ≤ arrival − seq × interval, as `started` arriving proves t0 ≤ that moment.
 * Each tick's lateness is measured on the t0 proved so far, so it is never
 * negative; a later, more punctual tick lowers t0 for the ticks after it. */
export class LatenessFit {
  constructor(intervalMs, startedMs) {
    this.intervalMs = intervalMs;
    this.t0 = startedMs;
  }

  /** Lateness (ms, ≥ 0) of tick `seq` arriving at `arrivalMs`. */
  lateness(seq, arrivalMs) {
    const start = arrivalMs - seq * this.intervalMs;
    this.t0 = Math.min(this.t0, start);
    return start - this.t0;
  }
}

/** Deviation statistics of one schedule, in milliseconds, in constant memory. */
export class ScheduleStats {
  constructor() {
    this.received = 0;
    this.skipped = 0;
    this.outOfOrder = 0; // ticks whose seq was not above the newest before them
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
