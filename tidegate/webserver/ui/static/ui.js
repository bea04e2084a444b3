// tidegate UI: the only script of the pages (no inline scripts; the CSP forbids them).
// Three behaviours, each started only when its element is on the page:
//   the run page follows its run (polls the server-rendered fragment until the run ends),
//   the launch form is checked by the server as it is filled in,
//   the partition grid is drawn on a canvas from run-length rows and browsed with the keyboard.
"use strict";

// The one place that talks to the server: same-origin requests carrying the session cookie.
async function request(url, options) {
  const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
  if (response.status === 401) {
    window.location.assign("/ui/login?next=" + encodeURIComponent(window.location.pathname));
    throw new Error("logged out");
  }
  return response;
}

function followRun(container) {
  const url = container.dataset.liveUrl;
  let delay = 1000;
  async function poll() {
    if (container.dataset.terminal === "yes") return;
    try {
      const response = await request(url, { headers: { "X-Tidegate-Fragment": "1" } });
      if (response.ok) {
        const focused = document.activeElement && document.activeElement.id;
        container.innerHTML = await response.text();
        const marker = container.querySelector("[data-run-terminal]");
        container.dataset.terminal = marker ? marker.dataset.runTerminal : "no";
        if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
        delay = 1000;
      } else {
        delay = Math.min(delay * 2, 10000);
      }
    } catch (error) {
      delay = Math.min(delay * 2, 10000);
    }
    if (container.dataset.terminal !== "yes") window.setTimeout(poll, delay);
  }
  window.setTimeout(poll, delay);
}

function checkLaunchForm(form) {
  const output = form.querySelector("#launch-check");
  let timer = null;
  async function check() {
    const response = await request(form.dataset.checkUrl, { method: "POST", body: new FormData(form) });
    if (!response.ok) return;
    const result = await response.json();
    output.textContent = result.ok ? "✓ " + result.message : "✗ " + result.message;
    output.className = result.ok ? "check ok" : "check invalid";
    form.querySelectorAll("input, textarea, select").forEach((field) => {
      if (field.type !== "hidden") field.setAttribute("aria-invalid", result.ok ? "false" : "true");
    });
  }
  form.addEventListener("input", () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(check, 300);
  });
  check();
}

const GRID_STYLE = {
  // status code -> how a cell is drawn: a fill and a mark, so colour is never the only cue.
  M: { name: "materialized", fill: "#2e7d32", mark: "none" },
  F: { name: "failed", fill: "#c62828", mark: "cross" },
  "-": { name: "missing", fill: "#d5d9de", mark: "none" },
  R: { name: "in progress", fill: "#1565c0", mark: "half" },
};

function drawPartitionGrid(canvas, data) {
  const cell = 6;
  const codes = [];
  for (const [code, count] of data.runs) for (let i = 0; i < count; i++) codes.push(code);
  const total = codes.length;
  const width = Math.max(canvas.parentElement.clientWidth - 4, 300);
  const perRow = Math.floor(width / cell);
  const rows = Math.ceil(total / perRow);
  canvas.width = perRow * cell;
  canvas.height = Math.max(rows * cell, cell);
  const ctx = canvas.getContext("2d");
  // One square a partition, drawn run by run (100,000 squares take a few tens of ms).
  let index = 0;
  for (const [code, count] of data.runs) {
    const style = GRID_STYLE[code];
    ctx.fillStyle = style.fill;
    ctx.strokeStyle = "#ffffff";
    if (style.mark === "cross") ctx.beginPath();
    for (let i = 0; i < count; i++, index++) {
      const x = (index % perRow) * cell, y = Math.floor(index / perRow) * cell;
      if (style.mark === "half") ctx.fillRect(x, y + cell / 2 - 1, cell - 1, cell / 2);
      else ctx.fillRect(x, y, cell - 1, cell - 1);
      if (style.mark === "cross") { ctx.moveTo(x, y); ctx.lineTo(x + cell - 1, y + cell - 1); }
    }
    if (style.mark === "cross") ctx.stroke();
  }
  canvas.dataset.drawn = "yes";
  const output = document.getElementById("grid-cell");
  let current = 0;
  function describe(position) {
    current = Math.max(0, Math.min(total - 1, position));
    output.textContent = "Partition " + (current + 1) + " of " + total + " (from " + data.first + "): " +
      GRID_STYLE[codes[current]].name;
  }
  canvas.addEventListener("mousemove", (event) => {
    const box = canvas.getBoundingClientRect();
    const col = Math.floor((event.clientX - box.left) / cell);
    const row = Math.floor((event.clientY - box.top) / cell);
    if (col < perRow && row * perRow + col < total) describe(row * perRow + col);
  });
  canvas.addEventListener("keydown", (event) => {
    const moves = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow, Home: -total, End: total };
    if (event.key in moves) {
      event.preventDefault();
      describe(current + moves[event.key]);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("run-live");
  if (live) followRun(live);
  const form = document.getElementById("launch-form");
  if (form && form.dataset.checkUrl) checkLaunchForm(form);
  const grid = document.getElementById("partition-grid");
  const gridData = document.getElementById("grid-data");
  if (grid && gridData) drawPartitionGrid(grid, JSON.parse(gridData.textContent));
});
