// vcex explorer: the grid of explained images, one image's path, local and global attributions.
// Plain JavaScript over the JSON API of vcex.report.serve; nothing is loaded from anywhere else.
"use strict";

const state = { runs: [], items: [], item: null };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function say(text) {
  $("message").textContent = text;
  $("message").hidden = !text;
}

function className(runId, k) {
  const names = state.runs[runId].class_names;
  return names && names[k] !== undefined ? names[k] : String(k);
}

function imageUrl(runId, index, kind) {
  return `/image/${runId}/${index}/${kind}.png`;
}

function fillSelect(select, values) {
  for (const value of values) {
    const option = document.createElement("option");
    option.value = option.textContent = value;
    select.appendChild(option);
  }
}

function matches(item) {
  const method = $("filter-method").value;
  const target = $("filter-target").value;
  const valid = $("filter-valid").value;
  return (!method || item.method === method)
    && (!target || className(item.run, item.target) === target)
    && (!valid || (valid === "valid") === item.valid);
}

function drawGrid() {
  const grid = $("grid");
  grid.replaceChildren();
  const shown = state.items.filter(matches);
  for (const item of shown) {
    const tile = document.createElement("button");
    tile.className = "tile " + (item.valid ? "valid" : "invalid");
    tile.dataset.run = item.run;
    tile.dataset.index = item.index;
    tile.dataset.valid = item.valid;
    tile.title = `${state.runs[item.run].name} #${item.index}: ${className(item.run, item.source)} → `
      + `${className(item.run, item.target)}, p(target) ${item.target_prob.toFixed(3)}`
      + (item.valid ? "" : " (not valid)");
    const image = document.createElement("img");
    image.src = imageUrl(item.run, item.index, "original");
    image.alt = tile.title;
    tile.appendChild(image);
    tile.addEventListener("click", () => showItem(item.run, item.index));
    if (state.item && state.item.run === item.run && state.item.index === item.index) tile.classList.add("selected");
    grid.appendChild(tile);
  }
  $("count").textContent = `${shown.length} of ${state.items.length} images`;
}

async function showItem(runId, index) {
  let item;
  try {
    item = await getJSON(`/api/item?run=${runId}&index=${index}`);
  } catch (error) {
    say(error.message);
    return;
  }
  state.item = item;
  for (const tile of document.querySelectorAll(".tile")) {
    tile.classList.toggle("selected", Number(tile.dataset.run) === runId && Number(tile.dataset.index) === index);
  }
  const run = state.runs[runId];
  $("detail").hidden = false;
  const where = run.name === "." || run.name === run.method ? "" : ` (${run.name})`;
  $("detail-title").textContent = `${run.method}${where}, image ${item.position}`;
  $("detail-caption").textContent = `${className(runId, item.source)} → ${className(runId, item.target)}: `
    + `p(target) ${item.original_prob.toFixed(3)} → ${item.target_prob.toFixed(3)} `
    + `(threshold ${item.threshold.toFixed(3)}, ${item.valid ? "reached" : "not reached"})`;
  for (const kind of ["original", "counterfactual", "difference"]) $(`img-${kind}`).src = imageUrl(runId, index, kind);
  $("fig-reconstruction").hidden = !item.reconstruction;
  if (item.reconstruction) $("img-reconstruction").src = imageUrl(runId, index, "reconstruction");
  $("path-note").textContent = {
    latent: "The latent path: the decoded interpolation from the original's latent to the counterfactual's.",
    sequence: "The method's own stages: the original, then each stage's image.",
    pixel: "The straight line in pixel space from the original to the counterfactual.",
    endpoints: "This run stores no path (written before vcex serve): the original and the counterfactual only.",
  }[item.kind] || "";
  const slider = $("slider");
  slider.max = item.path_prob.length - 1;
  slider.value = slider.max;
  for (let step = 0; step < item.path_prob.length; step++) new Image().src = imageUrl(runId, index, `path-${step}`);
  drawPlot(item);
  showStep(Number(slider.value));
  $("local-section").hidden = item.local.length === 0;
  drawBars($("local"), item.local);
}

function showStep(step) {
  const item = state.item;
  $("path-image").src = imageUrl(item.run, item.index, `path-${step}`);
  $("path-prob").textContent = item.path_prob[step].toFixed(3);
  const last = item.path_prob.length - 1;
  $("path-label").textContent = `point ${step} of ${last}` + (step === 0 ? " (start)" : step === last ? " (counterfactual)" : "");
  const marker = $("plot-marker");
  if (marker) {
    marker.setAttribute("cx", plotX(item.path_position[step]));
    marker.setAttribute("cy", plotY(item.path_prob[step]));
  }
}

const PLOT = { width: 280, height: 140, left: 30, right: 10, top: 10, bottom: 22 };
const plotX = (t) => PLOT.left + t * (PLOT.width - PLOT.left - PLOT.right);
const plotY = (p) => PLOT.top + (1 - p) * (PLOT.height - PLOT.top - PLOT.bottom);

function svg(tag, attributes, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

function drawPlot(item) {
  const plot = $("path-plot");
  plot.replaceChildren();
  const bottom = plotY(0);
  plot.appendChild(svg("line", { x1: plotX(0), y1: bottom, x2: plotX(1), y2: bottom, stroke: "#999" }));
  plot.appendChild(svg("line", { x1: plotX(0), y1: plotY(1), x2: plotX(0), y2: bottom, stroke: "#999" }));
  const threshold = plotY(item.threshold);
  plot.appendChild(svg("line", {
    x1: plotX(0), y1: threshold, x2: plotX(1), y2: threshold, stroke: "#3a3", "stroke-dasharray": "4 3",
  }));
  plot.appendChild(svg("text", { x: 2, y: plotY(1) + 4 }, "1"));
  plot.appendChild(svg("text", { x: 2, y: bottom }, "0"));
  plot.appendChild(svg("text", { x: plotX(0), y: PLOT.height - 4 }, "original"));
  plot.appendChild(svg("text", { x: plotX(1) - 78, y: PLOT.height - 4 }, "counterfactual"));
  const points = item.path_prob.map((p, k) => `${plotX(item.path_position[k])},${plotY(p)}`).join(" ");
  plot.appendChild(svg("polyline", { id: "plot-line", points, fill: "none", stroke: "#246", "stroke-width": 2 }));
  plot.appendChild(svg("circle", { id: "plot-marker", r: 5, fill: "#c33" }));
}

// rows: {name, score, low?, high?}; bars to the right for positive scores, left for negative, on one scale
function drawBars(container, rows) {
  container.replaceChildren();
  const extent = Math.max(1e-6, ...rows.map((r) => Math.max(Math.abs(r.score), Math.abs(r.low ?? 0), Math.abs(r.high ?? 0))));
  const at = (value) => 50 + (value / extent) * 50;  // percent of the track
  for (const row of rows) {
    const name = document.createElement("span");
    name.textContent = row.name;
    const track = document.createElement("div");
    track.className = "bar-track";
    track.appendChild(Object.assign(document.createElement("div"), { className: "axis" }));
    const bar = document.createElement("div");
    bar.className = "bar " + (row.score >= 0 ? "up" : "down");
    bar.style.left = `${Math.min(50, at(row.score))}%`;
    bar.style.width = `${Math.abs(at(row.score) - 50)}%`;
    track.appendChild(bar);
    if (row.low !== undefined && row.low !== null && row.high !== null) {
      const whisker = document.createElement("div");
      whisker.className = "whisker";
      whisker.style.left = `${at(row.low)}%`;
      whisker.style.width = `${Math.max(0.5, at(row.high) - at(row.low))}%`;
      track.appendChild(whisker);
    }
    const value = document.createElement("span");
    value.textContent = (row.score >= 0 ? "+" : "") + row.score.toFixed(3);
    container.append(name, track, value);
  }
}

function drawGlobal(outputs) {
  const charts = $("global-charts");
  for (const output of outputs) {
    for (const chart of output.charts) {
      const figure = document.createElement("div");
      const title = document.createElement("h3");
      const where = output.name === "." ? "" : ` (${output.name})`;
      title.textContent = `${output.dataset ? output.dataset + ": " : ""}${chart.title}${where} (n = ${chart.n})`;
      const bars = document.createElement("div");
      bars.className = "bars";
      drawBars(bars, chart.bars);
      figure.append(title, bars);
      charts.appendChild(figure);
    }
  }
  $("global").hidden = outputs.length === 0;
}

async function start() {
  try {
    const listing = await getJSON("/api/runs");
    state.runs = listing.runs;
    state.items = (await getJSON("/api/items")).items;
    const capped = listing.runs.filter((run) => !run.error && run.n > run.shown);
    // a run stores paths for its first images only (vcex.report.paths.PATH_IMAGES): say so where it has more
    const note = capped.map((run) => `the first ${run.shown} of ${run.n} images of ${run.name}`).join(", ");
    $("root").textContent = listing.root + (note ? ` (showing ${note})` : "");
    const broken = listing.runs.filter((run) => run.error).map((run) => `${run.name}: ${run.error}`);
    say(broken.join("; "));
    fillSelect($("filter-method"), [...new Set(state.items.map((item) => item.method))]);
    const targets = [...new Map(state.items.map((item) => [className(item.run, item.target), item.target])).entries()];
    targets.sort((a, b) => a[1] - b[1]);
    fillSelect($("filter-target"), targets.map((entry) => entry[0]));
    drawGlobal(listing.global);
    drawGrid();
  } catch (error) {
    say(`cannot load the runs: ${error.message}`);
  }
}

for (const id of ["filter-method", "filter-target", "filter-valid"]) $(id).addEventListener("change", drawGrid);
$("slider").addEventListener("input", (event) => showStep(Number(event.target.value)));
start();
