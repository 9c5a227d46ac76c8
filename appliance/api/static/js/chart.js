// A live line chart on a canvas: the last WINDOW_S seconds of one series, x by the box's own read
// time. Drawing is batched to one animation frame, and nothing is drawn while the page is hidden,
// so a dashboard left open in a background tab costs nothing. A gap (null) breaks the line: no
// recall in a second is no latency, not zero latency.
import { number } from "./dom.js";

const WINDOW_S = 120;

export class LineChart {
  constructor(canvas, { digits = 1, color = "#2563eb" } = {}) {
    this.canvas = canvas;
    this.digits = digits;
    this.color = color;
    this.points = []; // [at, value | null]
    this.pending = false;
  }

  push(at, value) {
    this.points.push([at, value]);
    const oldest = at - WINDOW_S;
    while (this.points.length && this.points[0][0] < oldest) this.points.shift();
    this.schedule();
  }

  latest() {
    for (let i = this.points.length - 1; i >= 0; i -= 1) if (this.points[i][1] !== null) return this.points[i][1];
    return null;
  }

  schedule() {
    if (this.pending || document.hidden) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const values = this.points.map(([, v]) => v).filter((v) => v !== null);
    const top = Math.max(1e-9, ...values) * 1.15 || 1;
    const end = this.points.length ? this.points[this.points.length - 1][0] : 0;
    const x = (at) => width - ((end - at) / WINDOW_S) * width;
    const y = (v) => height - 4 - (v / top) * (height - 18);

    ctx.strokeStyle = "#e5e7eb";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, y(0) + 0.5);
    ctx.lineTo(width, y(0) + 0.5);
    ctx.stroke();
    ctx.fillStyle = "#6b7280";
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillText(number(values.length ? Math.max(...values) : 0, this.digits), 4, 11);

    ctx.strokeStyle = this.color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    for (const [at, value] of this.points) {
      if (value === null) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(at), y(value));
      else ctx.moveTo(x(at), y(value));
      drawing = true;
    }
    ctx.stroke();
  }
}
