// gradwatch live page: polls the service's JSON API and draws runs, diagnoses and charts.
// Everything from reports (run, layer and symptom names, summaries, advice) is untrusted:
// it reaches the DOM only through textContent / attributes, never as HTML.
"use strict";

const REFRESH_MS = 2000;
// A run that has not reported for this long (and did not finish) is shown as silent.
const SILENT_AFTER_S = 60;
const COLOURS = { loss: "#1f5fbf", val: "#e67e00", grad: "#6a1b9a", lr: "#2e7d32", bad: "#c62828" };
// Viridis-like stops for the heatmap's log scale (low gradient = dark, high = yellow).
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

let selected = decodeURIComponent((location.hash.match(/^#run=(.*)$/) || [])[1] || "");
// One poll at a time: a click that arrives mid-poll asks for another right after it.
let timer = null;
let running = false;
let again = false;
// Completed polls, on <body data-polls>: lets a test (or a person) see the page is live.
let polls = 0;

// --- small helpers -----------------------------------------------------------------------------

/** JSON numbers as the API writes them: "NaN"/"Infinity"/"-Infinity" strings, null for absent. */
function num(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "number") return v;
  if (v === "NaN") return NaN;
  if (v === "Infinity") return Infinity;
  if (v === "-Infinity") return -Infinity;
  return null;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function runPath(run) {
  // Run names may contain "/": encode each segment, keep the separators.
  return "v1/runs/" + run.split("/").map(encodeURIComponent).join("/");
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function fmt(v) {
  if (v === null) return "–";
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(2) : String(+v.toPrecision(4));
}

function fmtEvidence(v) {
  if (Array.isArray(v)) return "[" + v.slice(0, 8).map(fmtEvidence).join(", ") + (v.length > 8 ? ", …" : "") + "]";
  if (v !== null && typeof v === "object") {
    const parts = Object.entries(v).slice(0, 6).map(([k, x]) => `${k}: ${fmtEvidence(x)}`);
    return "{" + parts.join(", ") + "}";
  }
  const n = num(v);
  return typeof v === "number" || (typeof v === "string" && n !== null) ? fmt(n) : String(v);
}

// --- runs table ----------------------------------------------------------------------------------

function runState(run, now) {
  if (run.finished) return ["finished", "finished"];
  const age = now - run.last_report_time;
  if (age > SILENT_AFTER_S) return [`silent ${Math.round(age)} s`, "silent"];
  return ["live", "live"];
}

function renderRuns(runs) {
  const body = document.querySelector("#runs tbody");
  const now = Date.now() / 1000;
  const rows = runs.map((run) => {
    const [label, cls] = runState(run, now);
    const chips = el("td", { class: "symptoms" });
    for (const symptom of run.active_symptoms) chips.append(el("span", { class: "chip" }, symptom));
    const tr = el(
      "tr",
      { "data-run": run.run, class: run.run === selected ? "selected" : "" },
      el("td", { class: "run-name" }, run.run),
      el("td", { class: "state-" + cls }, label),
      el("td", {}, run.step),
      el("td", {}, `${run.ranks.length}/${run.world_size}`),
      el("td", {}, run.layers),
      chips,
    );
    tr.addEventListener("click", () => {
      location.hash = "run=" + encodeURIComponent(run.run);
    });
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("no-runs").hidden = runs.length > 0;
}

function pickRun(runs) {
  if (runs.some((r) => r.run === selected)) return selected;
  // Nothing chosen (or it is gone): the first run with a symptom, else the newest reporter.
  const sick = runs.find((r) => r.active_symptoms.length > 0);
  if (sick) return sick.run;
  const newest = [...runs].sort((a, b) => b.last_report_time - a.last_report_time)[0];
  return newest ? newest.run : "";
}

// --- diagnoses -------------------------------------------------------------------------------------

function renderDiagnoses(items) {
  const box = document.getElementById("symptoms");
  const sorted = [...items].sort((a, b) => Number(b.active) - Number(a.active) || a.step - b.step);
  const cards = sorted.map((d) => {
    const where = [d.layer !== null ? `layer ${d.layer}` : null, d.rank !== null ? `rank ${d.rank}` : null]
      .filter(Boolean)
      .join(", ");
    const status = d.active ? `active since step ${d.onset_step}` : `cleared at step ${d.cleared_step}`;
    const evidence = el("dl", { class: "evidence" });
    for (const [key, value] of Object.entries(d.evidence || {})) {
      evidence.append(el("dt", {}, key), el("dd", {}, fmtEvidence(value)));
    }
    return el(
      "article",
      { class: "diagnosis " + (d.active ? "active" : "cleared"), "data-symptom": d.symptom },
      el("h3", {}, el("span", { class: "symptom" }, d.symptom), ` — ${status}${where ? " (" + where + ")" : ""}`),
      el("div", { class: "summary" }, d.summary),
      el("p", { class: "advice" }, el("strong", {}, "Advice: "), d.advice),
      // The summary is frozen when the episode fires; the evidence is the rule's newest.
      el("div", { class: "evidence-title muted" }, `evidence at step ${d.last_seen_step}`),
      evidence,
    );
  });
  if (cards.length === 0) cards.push(el("p", { class: "muted" }, "No symptom found in this run."));
  box.replaceChildren(...cards);
}

// --- heatmap ---------------------------------------------------------------------------------------

function rampColour(t) {
  const x = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + f * (RAMP[i + 1][k] - c)));
}

function renderHeatmap(series) {
  const canvas = document.getElementById("heatmap");
  const layers = series.layers; // model order: index 0 is the input side
  const cols = series.stat_steps.length;
  const rows = layers.length;
  const matrix = series.layer_grad_norm.map((row) => row.map(num));
  let lo = Infinity;
  let hi = -Infinity;
  for (const row of matrix) {
    for (const v of row) {
      if (v !== null && Number.isFinite(v) && v > 0) {
        const l = Math.log10(v);
        lo = Math.min(lo, l);
        hi = Math.max(hi, l);
      }
    }
  }
  if (!(hi >= lo)) [lo, hi] = [0, 1];
  if (hi - lo < 1e-9) hi = lo + 1;

  // Row height keeps the whole net on screen: big nets get thin rows.
  const rowPx = Math.max(1, Math.min(18, Math.floor(420 / Math.max(rows, 1))));
  const colPx = Math.max(1, Math.floor(900 / Math.max(cols, 1)));
  canvas.width = Math.max(cols * colPx, 1);
  canvas.height = Math.max(rows * rowPx, 1);
  canvas.dataset.rows = String(rows);
  canvas.dataset.columns = String(cols);
  canvas.dataset.logMin = lo.toFixed(3);
  canvas.dataset.logMax = hi.toFixed(3);
  canvas.style.height = canvas.height + "px";
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(canvas.width, canvas.height);
  for (let r = 0; r < rows; r++) {
    const y0 = (rows - 1 - r) * rowPx; // input layers at the bottom
    for (let c = 0; c < cols; c++) {
      const v = matrix[r][c];
      let rgb;
      if (v === null) rgb = [225, 225, 228]; // not measured
      else if (!Number.isFinite(v)) rgb = [198, 40, 40]; // NaN / Inf
      else if (v <= 0) rgb = [20, 20, 20]; // exactly zero gradient
      else rgb = rampColour((Math.log10(v) - lo) / (hi - lo));
      for (let y = y0; y < y0 + rowPx; y++) {
        for (let x = c * colPx; x < (c + 1) * colPx; x++) {
          const o = (y * canvas.width + x) * 4;
          image.data[o] = rgb[0];
          image.data[o + 1] = rgb[1];
          image.data[o + 2] = rgb[2];
          image.data[o + 3] = 255;
        }
      }
    }
  }
  ctx.putImageData(image, 0, 0);

  // One label per row, top to bottom = output to input, as the canvas draws them. Rows thinner
  // than a line of text show every n-th label, positioned on its row.
  const labels = document.getElementById("heatmap-labels");
  const every = Math.ceil(14 / rowPx);
  const labelPx = Math.max(rowPx, 12);
  const items = [];
  for (let r = rows - 1; r >= 0; r--) {
    const count = series.layer_rows[r];
    const li = el("li", { "data-layer": layers[r], title: count > 1 ? `${count} layers` : layers[r] }, layers[r]);
    const top = (rows - 1 - r) * rowPx + rowPx / 2 - labelPx / 2;
    li.style.top = Math.max(0, Math.min(top, canvas.height - labelPx)) + "px";
    li.style.height = labelPx + "px";
    li.style.lineHeight = labelPx + "px";
    li.style.fontSize = Math.min(12, labelPx - 2) + "px";
    if (r % every !== 0) li.classList.add("skip");
    items.push(li);
  }
  labels.style.height = canvas.height + "px";
  labels.style.width = Math.min(Math.max(...layers.map((n) => n.length), 2) + 1, 24) + "ch";
  labels.replaceChildren(...items);

  const axis = document.getElementById("heatmap-axis");
  axis.replaceChildren(
    el("span", {}, cols ? `step ${series.stat_steps[0]}` : "no statistics yet"),
    el("span", {}, cols ? `step ${series.stat_steps[cols - 1]}` : ""),
  );
  renderLegend(lo, hi);
  canvas.onmousemove = (event) => {
    const box = canvas.getBoundingClientRect();
    const c = Math.floor(((event.clientX - box.left) / box.width) * cols);
    const r = rows - 1 - Math.floor(((event.clientY - box.top) / box.height) * rows);
    if (c < 0 || c >= cols || r < 0 || r >= rows) return;
    document.getElementById("heatmap-hover").textContent =
      `layer ${layers[r]} · step ${series.stat_steps[c]} · grad norm ${fmt(matrix[r][c])}`;
  };
}

function renderLegend(lo, hi) {
  const bar = el("canvas", { width: "14", height: "160" });
  const ctx = bar.getContext("2d");
  for (let y = 0; y < 160; y++) {
    const [r, g, b] = rampColour(1 - y / 159);
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(0, y, 14, 1);
  }
  const swatch = (colour) => {
    const s = el("span", { class: "swatch" });
    s.style.background = colour;
    return s;
  };
  document
    .getElementById("heatmap-legend")
    .replaceChildren(
      el("span", {}, fmt(10 ** hi)),
      bar,
      el("span", {}, fmt(10 ** lo)),
      el("span", {}, swatch("rgb(198,40,40)"), "NaN/Inf"),
      el("span", {}, swatch("rgb(225,225,228)"), "none"),
    );
}

// --- line charts -----------------------------------------------------------------------------------

/** Draw lines (and dots) of {xs, ys, colour, dots} on a canvas; non-finite points are red ticks. */
function drawChart(canvas, lines, { log = false } = {}) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width;
  const H = canvas.height;
  const pad = { l: 58, r: 10, t: 8, b: 22 };
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  const tx = (v) => (log ? Math.log10(v) : v);
  let xmin = Infinity;
  let xmax = -Infinity;
  let ymin = Infinity;
  let ymax = -Infinity;
  for (const line of lines) {
    line.xs.forEach((x, i) => {
      xmin = Math.min(xmin, x);
      xmax = Math.max(xmax, x);
      const y = line.ys[i];
      if (y !== null && Number.isFinite(y) && (!log || y > 0)) {
        ymin = Math.min(ymin, tx(y));
        ymax = Math.max(ymax, tx(y));
      }
    });
  }
  canvas.dataset.points = String(lines.reduce((n, l) => n + l.xs.length, 0));
  if (!Number.isFinite(xmin)) {
    ctx.fillStyle = "#6b6b70";
    ctx.fillText("no data yet", pad.l, H / 2);
    return;
  }
  if (!(ymax >= ymin)) [ymin, ymax] = [0, 1];
  if (ymax - ymin < 1e-12) {
    // A constant (a fixed learning rate): centre it rather than invent a range.
    const half = log ? 0.5 : Math.abs(ymin) * 0.5 || 0.5;
    [ymin, ymax] = [ymin - half, ymax + half];
  }
  if (xmax === xmin) xmax = xmin + 1;
  const px = (x) => pad.l + ((x - xmin) / (xmax - xmin)) * (W - pad.l - pad.r);
  const py = (y) => H - pad.b - ((tx(y) - ymin) / (ymax - ymin)) * (H - pad.t - pad.b);

  ctx.strokeStyle = "#d9d9de";
  ctx.fillStyle = "#6b6b70";
  ctx.strokeRect(pad.l, pad.t, W - pad.l - pad.r, H - pad.t - pad.b);
  for (let k = 0; k <= 4; k++) {
    const v = ymin + ((ymax - ymin) * k) / 4;
    const y = H - pad.b - ((H - pad.t - pad.b) * k) / 4;
    ctx.fillText(fmt(log ? 10 ** v : v), 2, y + 4);
  }
  ctx.fillText(`step ${xmin}`, pad.l, H - 6);
  const last = `step ${xmax}`;
  ctx.fillText(last, W - pad.r - ctx.measureText(last).width, H - 6);

  const bad = [];
  for (const line of lines) {
    ctx.strokeStyle = line.colour;
    ctx.fillStyle = line.colour;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    let pen = false;
    line.xs.forEach((x, i) => {
      const y = line.ys[i];
      if (y === null) return;
      if (!Number.isFinite(y) || (log && y <= 0)) {
        bad.push(x); // drawn after the lines, as red marks across the plot
        pen = false;
        return;
      }
      if (line.dots) {
        ctx.fillRect(px(x) - 2, py(y) - 2, 4, 4);
      } else if (pen) {
        ctx.lineTo(px(x), py(y));
      } else {
        ctx.moveTo(px(x), py(y));
        pen = true;
      }
    });
    if (!line.dots) ctx.stroke();
  }
  ctx.strokeStyle = COLOURS.bad;
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (const x of bad) {
    ctx.moveTo(px(x), pad.t);
    ctx.lineTo(px(x), H - pad.b);
  }
  ctx.stroke();
  canvas.dataset.nonfinite = String(bad.length);
}

function renderCharts(series) {
  const loss = series.loss.map(num);
  const positive = loss.filter((v) => v !== null && Number.isFinite(v));
  const logLoss = positive.length > 0 && Math.min(...positive) > 0 && Math.max(...positive) / Math.min(...positive) > 100;
  drawChart(
    document.getElementById("loss-chart"),
    [
      { xs: series.steps, ys: loss, colour: COLOURS.loss },
      { xs: series.val_steps, ys: series.val_loss.map(num), colour: COLOURS.val, dots: true },
    ],
    { log: logLoss },
  );
  drawChart(document.getElementById("grad-chart"), [{ xs: series.stat_steps, ys: series.grad_norm.map(num), colour: COLOURS.grad }], {
    log: true,
  });
  drawChart(document.getElementById("lr-chart"), [{ xs: series.steps, ys: series.lr.map(num), colour: COLOURS.lr }]);
}

// --- the refresh loop ------------------------------------------------------------------------------

function kick() {
  clearTimeout(timer);
  if (running) again = true;
  else refresh();
}

async function refresh() {
  running = true;
  const status = document.getElementById("status");
  try {
    const runs = await getJSON("v1/runs");
    selected = pickRun(runs);
    renderRuns(runs);
    const detail = document.getElementById("run-detail");
    if (!selected) {
      detail.hidden = true;
    } else {
      const [diagnoses, series] = await Promise.all([
        getJSON(runPath(selected) + "/diagnoses"),
        getJSON(runPath(selected) + "/series"),
      ]);
      const title = document.getElementById("run-title");
      title.replaceChildren(
        "Run ",
        el("span", { class: "run-name" }, selected),
        el("span", { class: "muted" }, ` — step ${series.step}, ${series.layer_count} layers${series.finished ? ", finished" : ""}`),
      );
      renderDiagnoses(diagnoses);
      renderHeatmap(series);
      renderCharts(series);
      detail.hidden = false;
      document.body.dataset.run = selected;
    }
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("error");
    document.body.dataset.polls = String(++polls);
  } catch (error) {
    status.textContent = `cannot reach the service (${error.message}); retrying`;
    status.classList.add("error");
  } finally {
    // Scheduled after finishing, so a slow service never gets overlapping polls.
    running = false;
    if (again) {
      again = false;
      kick();
    } else {
      timer = setTimeout(kick, REFRESH_MS);
    }
  }
}

window.addEventListener("hashchange", () => {
  selected = decodeURIComponent((location.hash.match(/^#run=(.*)$/) || [])[1] || "");
  kick();
});
kick();
