// The timing chart: inter-arrival gap of each tick against the target interval.
import { CHART_TICKS } from "./client-stats.js";

export class TimingChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.points = []; // {gap: ms | null, skippedBefore: n}
    this.targetMs = NaN;
    this.dirty = true;
  }

  reset(targetMs) {
    this.points = [];
    this.targetMs = targetMs;
    this.dirty = true;
  }

  add(gapMs, skippedBefore) {
    this.points.push({ gap: gapMs, skippedBefore });
    if (this.points.length > CHART_TICKS) this.points.shift();
    this.dirty = true;
  }

  /** Draw if anything changed; called from requestAnimationFrame. */
  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(canvas.clientWidth * ratio);
    const height = Math.round(canvas.clientHeight * ratio);
    if (!width || !height) return;
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      this.dirty = true;
    }
    if (!this.dirty) return;
    this.dirty = false;

    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim();
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const w = width / ratio;
    const h = height / ratio;
    ctx.clearRect(0, 0, w, h);
    const pad = { left: 8, right: 8, top: 18, bottom: 8 };

    const gaps = this.points.map((p) => p.gap).filter((g) => g !== null);
    const target = this.targetMs;
    if (!Number.isFinite(target)) {
      ctx.fillStyle = color("--muted");
      ctx.font = "13px system-ui, sans-serif";
      ctx.fillText("Start a schedule to see its timing.", pad.left, pad.top);
      return;
    }
    const top = Math.max(target * 2, ...gaps.map((g) => g * 1.1));
    const y = (ms) => pad.top + (h - pad.top - pad.bottom) * (1 - Math.min(ms, top) / top);
    const step = (w - pad.left - pad.right) / CHART_TICKS;
    const x = (i) => pad.left + step * (i + 0.5);

    // The target interval.
    ctx.strokeStyle = color("--muted");
    ctx.setLineDash([4, 4]);
    ctx.beginPath();
    ctx.moveTo(pad.left, y(target));
    ctx.lineTo(w - pad.right, y(target));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = color("--muted");
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(`target ${target.toFixed(target < 100 ? 1 : 0)} ms · top ${top.toFixed(0)} ms`, pad.left, 13);

    this.points.forEach((point, i) => {
      if (point.skippedBefore > 0) {
        ctx.fillStyle = color("--bad");
        ctx.fillRect(x(i) - step / 2, pad.top, Math.max(2, step / 4), h - pad.top - pad.bottom);
      }
      if (point.gap !== null) {
        ctx.fillStyle = color("--accent");
        ctx.beginPath();
        ctx.arc(x(i), y(point.gap), Math.max(1.5, Math.min(3, step / 2.5)), 0, 2 * Math.PI);
        ctx.fill();
      }
    });
  }
}
