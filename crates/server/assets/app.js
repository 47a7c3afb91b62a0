// Interplab workbench: a single page over the server's JSON API (see crates/server/src/lib.rs).
// Routes (in the URL's hash): #/ the index, #/run/ID[/TAB] one run, #/compare/A|B two runs,
// #/attention a prompt's attention patterns. Charts are Apache ECharts (vendored).
"use strict";

const ilab = { charts: {}, timers: [] };
window.ilab = ilab;

// ---------------------------------------------------------------- helpers
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const main = () => document.getElementById("main");
const enc = (id) => id.split("/").map(encodeURIComponent).join("/");
function fmt(v) {
  if (typeof v !== "number") return v == null ? "" : String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(3);
  return String(Number(v.toPrecision(4)));
}
async function api(path, opts) {
  const r = await fetch(path, opts);
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}
function errorCard(title, msg) {
  return h("div", { class: "card error" }, h("h3", { text: title }), h("div", { class: "msg", text: msg }));
}
function clearPage() {
  for (const c of Object.values(ilab.charts)) c.dispose();
  ilab.charts = {};
  for (const t of ilab.timers) clearInterval(t);
  ilab.timers = [];
  main().replaceChildren();
}
let chartSeq = 0;
function chartDiv(cls) {
  const id = `chart-${++chartSeq}`;
  return h("div", { class: cls || "chart", id });
}
function mount(div, option) {
  const c = echarts.init(div, null, { renderer: "canvas" });
  // No animation: what is drawn is the data at once (and a screenshot shows it).
  c.setOption({ animation: false, ...option });
  ilab.charts[div.id] = c;
  return c;
}
window.addEventListener("resize", () => Object.values(ilab.charts).forEach((c) => c.resize()));

// ---------------------------------------------------------------- figures
// A figure is the report crate's JSON: {kind: heatmap|line|bar|grid, ...}.
const DIVERGING = ["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b"];
const SEQUENTIAL = ["#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"];

function figureNode(fig, opts) {
  if (fig.kind === "grid") {
    const wrap = h("div", {},
      fig.title ? h("h3", { text: fig.title }) : null,
      h("div", { class: "multiples" }));
    const grid = wrap.lastChild;
    const later = [];
    for (const sub of fig.figures) {
      const n = figureNode(sub, { small: true });
      grid.append(n.node);
      later.push(n.draw);
    }
    return { node: wrap, draw: () => later.forEach((d) => d()) };
  }
  const div = chartDiv();
  if (fig.kind === "heatmap") {
    const rows = fig.y_ticks.length;
    div.style.height = `${Math.min(1400, Math.max(opts && opts.small ? 300 : 360, rows * 20 + 150))}px`;
  }
  return { node: div, draw: () => mount(div, figureOption(fig)), div };
}

function figureOption(fig) {
  const title = { text: fig.title || "", left: "center", textStyle: { fontSize: 14 } };
  if (fig.kind === "heatmap") return heatmapOption(fig, title);
  if (fig.kind === "line") return lineOption(fig, title);
  if (fig.kind === "bar") return barOption(fig, title);
  return { title: { text: `unknown figure kind ${fig.kind}` } };
}

function heatmapOption(fig, title) {
  const data = [];
  let lo = Infinity, hi = -Infinity;
  fig.values.forEach((row, y) => row.forEach((v, x) => {
    data.push([x, y, v == null ? "-" : v]);
    if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }));
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  if (fig.range) [lo, hi] = fig.range;
  const diverging = fig.scale === "diverging";
  if (diverging && !fig.range) { const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1; lo = -m; hi = m; }
  const xl = fig.x_label || "x", yl = fig.y_label || "y";
  const manyX = fig.x_ticks.length > 40;
  return {
    title,
    tooltip: {
      className: "ilab-tip",
      formatter: (p) => {
        const [x, y, v] = p.data;
        // Tokens as ticks: also say which position.
        const tick = (ticks, i) => (String(ticks[i]) === String(i) ? esc(ticks[i]) : `${esc(ticks[i])} <span style="color:#888">(#${i})</span>`);
        return `<b>${esc(yl)}</b> ${tick(fig.y_ticks, y)}<br><b>${esc(xl)}</b> ${tick(fig.x_ticks, x)}` +
          `<br><b>${esc(fig.colorbar_label || "value")}</b> ${v === "-" ? "masked" : fmt(v)}`;
      },
    },
    grid: { left: 90, right: 90, top: 40, bottom: 80 },
    xAxis: { type: "category", data: fig.x_ticks, name: xl, nameLocation: "middle", nameGap: manyX ? 30 : 55,
      axisLabel: { rotate: fig.x_ticks.some((t) => t.length > 3) ? 45 : 0, interval: manyX ? "auto" : 0, fontSize: 11 },
      splitArea: { show: false } },
    yAxis: { type: "category", data: fig.y_ticks, name: yl, nameLocation: "middle", nameGap: 60, inverse: true,
      axisLabel: { interval: fig.y_ticks.length > 40 ? "auto" : 0, fontSize: 11 } },
    visualMap: { min: lo, max: hi, calculable: true, precision: 3, orient: "vertical", right: 5, top: "middle",
      itemHeight: 200, text: [fig.colorbar_label || "", ""], inRange: { color: diverging ? DIVERGING : SEQUENTIAL },
      outOfRange: { color: "#bbb" } },
    series: [{ type: "heatmap", data, emphasis: { itemStyle: { borderColor: "#000", borderWidth: 1 } },
      itemStyle: { borderWidth: 0 }, progressive: 0 }],
  };
}

function lineOption(fig, title) {
  const series = fig.series.map((s, i) => ({
    name: s.name || `series ${i + 1}`,
    type: s.style === "markers" ? "scatter" : "line",
    showSymbol: s.style !== "line",
    symbolSize: s.style === "line" ? 4 : 6,
    data: s.points.filter((p) => p[0] != null && p[1] != null && (!fig.log_y || p[1] > 0) && (!fig.log_x || p[0] > 0)),
    markLine: i === 0 && (fig.vlines.length || fig.hlines.length) ? {
      symbol: "none", silent: true, lineStyle: { type: "dashed", color: "#888" },
      data: [...fig.vlines.map(([x, l]) => ({ xAxis: x, label: { formatter: l } })),
             ...fig.hlines.map(([y, l]) => ({ yAxis: y, label: { formatter: l } }))],
    } : undefined,
    markArea: i === 0 && fig.bands.length ? {
      silent: true, itemStyle: { color: "rgba(120,120,120,0.10)" },
      data: fig.bands.map(([a, b, l]) => [{ xAxis: a, name: l }, { xAxis: b }]),
    } : undefined,
  }));
  return {
    title,
    legend: { top: 24, type: "scroll" },
    tooltip: { trigger: "axis", valueFormatter: fmt },
    grid: { left: 70, right: 30, top: 60, bottom: 80 },
    xAxis: { type: fig.log_x ? "log" : "value", name: fig.x_label, nameLocation: "middle", nameGap: 28, scale: true },
    yAxis: { type: fig.log_y ? "log" : "value", name: fig.y_label, nameLocation: "middle", nameGap: 50, scale: true },
    dataZoom: [{ type: "inside", xAxisIndex: 0 }, { type: "slider", xAxisIndex: 0, height: 18, bottom: 8 }],
    toolbox: { right: 10, feature: { dataZoom: { yAxisIndex: "none" }, restore: {} } },
    series,
  };
}

function barOption(fig, title) {
  const cat = { type: "category", data: fig.labels, axisLabel: { interval: 0, fontSize: 11,
    rotate: !fig.horizontal && fig.labels.some((l) => l.length > 4) ? 40 : 0 } };
  const val = { type: "value", name: fig.y_label, nameLocation: "middle", nameGap: 45 };
  const colors = fig.colors;
  const data = fig.values.map((v, i) => ({
    value: v,
    itemStyle: colors ? { color: echarts.color.lerp(Math.max(0, Math.min(1, colors[i])), SEQUENTIAL.slice(1)) } : undefined,
  }));
  return {
    title,
    tooltip: {
      trigger: "item",
      formatter: (p) => {
        const i = p.dataIndex;
        let s = `${esc(fig.labels[i])}: <b>${fmt(fig.values[i])}</b>`;
        if (fig.intervals) s += ` [${fmt(fig.intervals[i][0])}, ${fmt(fig.intervals[i][1])}]`;
        else if (fig.errors) s += ` ± ${fmt(fig.errors[i])}`;
        if (colors) s += `<br>${esc(fig.color_label)}: ${fmt(colors[i])}`;
        return s;
      },
    },
    grid: { left: fig.horizontal ? 160 : 70, right: 30, top: 45, bottom: 90 },
    xAxis: fig.horizontal ? val : cat,
    yAxis: fig.horizontal ? { ...cat, inverse: true } : val,
    series: [{ type: "bar", data }],
  };
}

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// ---------------------------------------------------------------- index
let indexState = { sort: "started", desc: true, filter: "" };

async function showIndex() {
  clearPage();
  const m = main();
  m.append(h("h1", { text: "Runs" }));
  let data;
  try { data = await api("/api/runs"); } catch (e) { m.append(errorCard("Could not list runs", e.message)); return; }
  const filter = h("input", { type: "search", id: "filter", placeholder: "filter: experiment, model, status, id…", size: 40, value: indexState.filter });
  const compare = h("button", { id: "compare", disabled: true, text: "Compare selected" });
  const count = h("span", { class: "muted", id: "count" });
  m.append(h("div", { class: "toolbar" }, filter, compare, count));
  const cols = [["id", "Run"], ["experiment", "Experiment"], ["models", "Model"], ["started", "Started (UTC)"], ["status", "Status"], ["key", "Key result"]];
  const thead = h("tr", {}, h("th", {}), cols.map(([k, label]) => h("th", { class: "sortable", "data-key": k, onclick: () => {
    indexState.desc = indexState.sort === k ? !indexState.desc : k === "started";
    indexState.sort = k; render();
  } }, label)));
  const tbody = h("tbody");
  const table = h("table", { id: "runs-table" }, h("thead", {}, thead), tbody);
  m.append(table);
  const selected = new Set();
  compare.addEventListener("click", () => { location.hash = `#/compare/${[...selected].map(enc).join("|")}`; });
  function render() {
    const q = filter.value.trim().toLowerCase();
    indexState.filter = filter.value;
    const rows = data.runs.filter((r) => !q || [r.id, r.experiment, r.models.join(" "), r.status, r.key.join(" ")].join(" ").toLowerCase().includes(q));
    const k = indexState.sort;
    const val = (r) => (Array.isArray(r[k]) ? r[k].join(" ") : r[k] || "");
    rows.sort((a, b) => (val(a) < val(b) ? -1 : val(a) > val(b) ? 1 : 0) * (indexState.desc ? -1 : 1));
    count.textContent = `${rows.length} of ${data.runs.length} runs`;
    tbody.replaceChildren(...rows.map((r) => h("tr", { "data-id": r.id },
      h("td", {}, h("input", { type: "checkbox", checked: selected.has(r.id), onchange: (ev) => {
        if (ev.target.checked) selected.add(r.id); else selected.delete(r.id);
        compare.disabled = selected.size !== 2;
      } })),
      h("td", {}, h("a", { href: `#/run/${enc(r.id)}`, text: r.id })),
      h("td", { text: r.experiment }),
      h("td", { text: r.models.join(", ") }),
      h("td", { text: r.started.replace("T", " ").replace(/\.\d+Z$|Z$/, "") }),
      h("td", {}, h("span", { class: `badge ${r.status}`, text: r.status }), r.error ? h("div", { class: "bad", text: r.error }) : null),
      h("td", { class: "muted", text: r.key.join(" · ") }))));
  }
  filter.addEventListener("input", render);
  render();
}

// ---------------------------------------------------------------- run page
async function loadRun(id) { return api(`/api/run?id=${encodeURIComponent(id)}`); }

function runTabs(run) {
  const tabs = [];
  if (run.report || run.files.some((f) => f.name === "report.html")) tabs.push(["report", "Report"]);
  if (run.results && Array.isArray(run.results.cards)) tabs.push(["features", "Feature cards"]);
  if (run.results && Array.isArray(run.results.variants) && run.results.variants.some((v) => (v.items || []).length || (v.generations || []).length)) tabs.push(["samples", "Eval samples"]);
  if (run.summary.models.length) tabs.push(["attention", "Attention"]);
  tabs.push(["results", "Results"], ["config", "Config"], ["manifest", "Manifest"], ["files", "Files"]);
  return tabs;
}

async function showRun(id, tab) {
  clearPage();
  const m = main();
  let run;
  try { run = await loadRun(id); } catch (e) { m.append(h("h1", { text: id }), errorCard("Could not open this run", e.message)); return; }
  const s = run.summary;
  m.append(h("h1", {}, s.experiment || "run", " ", h("span", { class: "muted", text: `— ${s.id}` })));
  m.append(h("div", { class: "toolbar" },
    h("span", { class: `badge ${s.status}`, id: "run-status", text: s.status }),
    s.models.length ? h("span", { text: `model: ${s.models.join(", ")}` }) : null,
    s.started ? h("span", { class: "muted", text: `started ${s.started}` }) : null,
    s.seconds != null ? h("span", { class: "muted", text: `${fmt(s.seconds)} s` }) : null));
  if (s.status === "malformed" || run.errors.length) {
    m.append(errorCard("This run directory is malformed", [s.error, ...run.errors].filter(Boolean).join("; ")));
  }
  if (run.progress) m.append(progressCard(id, run.progress, s.status));
  const tabs = runTabs(run);
  // A run still in progress has no report yet: open on its config rather than computing
  // attention patterns.
  const current = tab && tabs.some(([k]) => k === tab) ? tab : run.progress ? "config" : tabs[0][0];
  m.append(h("div", { class: "tabs" }, tabs.map(([k, label]) => h("a", { href: `#/run/${enc(id)}/${k}`, class: k === current ? "active" : "", "data-tab": k, text: label }))));
  const body = h("div", { id: "tab-body" });
  m.append(body);
  ({ report: renderReport, features: renderFeatures, samples: renderSamples, attention: renderRunAttention,
     results: (b, r) => b.append(jsonTree(r.results)), config: (b, r) => b.append(jsonTree(r.config)),
     manifest: (b, r) => b.append(jsonTree(r.manifest)), files: renderFiles })[current](body, run, id);
}

function progressCard(id, p, status) {
  const bar = h("div", {});
  const text = h("div", {});
  const notes = h("ul", { class: "muted" });
  const card = h("div", { class: "card", id: "progress" }, h("h3", { text: status === "running" ? "Running" : "Interrupted" }), text, h("div", { class: "progress" }, bar), notes);
  const paint = (p) => {
    const frac = p.total ? Math.min(1, p.done / p.total) : 0;
    bar.style.width = `${(100 * frac).toFixed(1)}%`;
    text.textContent = `phase ${p.phase || "—"}` + (p.total ? ` · ${p.done} / ${p.total} ${p.unit}` : "") + (p.message ? ` · ${p.message}` : "") + ` · updated ${p.updated_utc}`;
    notes.replaceChildren(...(p.notes || []).map((n) => h("li", { text: n })));
  };
  paint(p);
  if (status === "running") {
    ilab.timers.push(setInterval(async () => {
      try {
        const r = await loadRun(id);
        if (!r.progress) { location.reload(); return; }
        paint(r.progress);
      } catch (_) { /* keep the last state */ }
    }, 1500));
  }
  return card;
}

function renderReport(body, run, id) {
  if (!run.report) {
    body.append(h("p", { class: "muted", text: "This run has no report.json (written by older versions); its report.html:" }),
      h("iframe", { class: "report", src: `/files/${enc(id)}/report.html` }));
    return;
  }
  const draws = [];
  for (const b of run.report.blocks) {
    const d = b.data;
    switch (b.kind) {
      case "heading": body.append(h("h2", { text: d })); break;
      case "paragraph": body.append(h("p", { text: d })); break;
      case "pre": body.append(h("pre", { text: d })); break;
      case "key_values": body.append(h("table", { class: "kv" }, h("tbody", {}, d.map(([k, v]) => h("tr", {}, h("th", { text: k }), h("td", { text: v })))))); break;
      case "table": body.append(h("table", {}, h("thead", {}, h("tr", {}, d.headers.map((x) => h("th", { text: x })))),
        h("tbody", {}, d.rows.map((r) => h("tr", {}, r.map((c) => h("td", { text: c }))))))); break;
      case "tokens": body.append(tokenRun(d.tokens.map(([t, v]) => ({ t, v })), d.max, d.focus, d.label)); break;
      case "figure": {
        const f = figureNode(d.figure);
        body.append(h("figure", {}, f.node, h("figcaption", { text: d.caption })));
        draws.push(f.draw);
        break;
      }
      default: body.append(h("p", { class: "muted", text: `(${b.kind})` }));
    }
  }
  draws.forEach((d) => d());
}

// Tokens shaded by value (0 → white, max → orange), the value on hover.
function tokenRun(items, max, focus, label) {
  const div = h("div", { class: "tokens" }, label ? h("span", { class: "muted", text: `${label}  ` }) : null);
  items.forEach(({ t, v }, i) => {
    const a = max > 0 ? Math.max(0, Math.min(1, v / max)) : 0;
    div.append(h("span", { class: `tok${i === focus ? " focus" : ""}`, "data-act": v, title: `${JSON.stringify(t)}: ${fmt(v)}`,
      style: `background:rgba(255,140,0,${a.toFixed(3)})`, text: t.replace(/\n/g, "↵") }));
  });
  return div;
}

function renderFiles(body, run, id) {
  body.append(h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "file" }), h("th", { text: "bytes" }))),
    h("tbody", {}, run.files.map((f) => h("tr", {},
      h("td", {}, f.dir ? h("span", { text: `${f.name}/` }) : h("a", { href: `/files/${enc(id)}/${encodeURIComponent(f.name)}`, target: "_blank", text: f.name })),
      h("td", { class: "num", text: f.dir ? "" : f.size.toLocaleString() }))))));
}

function jsonTree(v, key, depth) {
  depth = depth || 0;
  const label = key != null ? h("span", { class: "k", text: `${key}: ` }) : null;
  if (v === null || typeof v !== "object") {
    return h("div", { class: depth ? "" : "jsontree" }, label, h("span", { class: "v", text: typeof v === "number" ? fmt(v) : JSON.stringify(v) }));
  }
  const entries = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
  const summary = Array.isArray(v) ? `[${v.length}]` : `{${entries.length}}`;
  const det = h("details", { open: depth < 1 }, h("summary", {}, label, h("span", { class: "muted", text: summary })));
  let filled = false;
  const fill = () => {
    if (filled) return; filled = true;
    for (const [k, x] of entries.slice(0, 500)) det.append(jsonTree(x, k, depth + 1));
    if (entries.length > 500) det.append(h("div", { class: "muted", text: `… ${entries.length - 500} more` }));
  };
  if (depth < 1) fill(); else det.addEventListener("toggle", fill);
  return depth ? det : h("div", { class: "jsontree" }, det);
}

// ---------------------------------------------------------------- SAE feature cards
function renderFeatures(body, run) {
  const r = run.results;
  body.append(h("p", { class: "muted", text: `${r.hook} · ${r.d_sae} latents · ${r.alive} alive · ${Number(r.tokens).toLocaleString()} tokens` }));
  const search = h("input", { type: "search", id: "feature-search", placeholder: "search a token (in contexts or logit effects) or a latent number", size: 46 });
  const list = h("div", { id: "feature-list" });
  const count = h("span", { class: "muted" });
  body.append(h("div", { class: "toolbar" }, search, count), list);
  const render = () => {
    for (const [k, c] of Object.entries(ilab.charts)) if (k.startsWith("feat-")) { c.dispose(); delete ilab.charts[k]; }
    const q = search.value.trim().toLowerCase();
    const cards = r.cards.filter((c) => !q || String(c.latent) === q ||
      c.top.some((ex) => ex.tokens.some((t) => t.toLowerCase().includes(q))) ||
      c.top_logits.some(([t]) => t.toLowerCase().includes(q)));
    count.textContent = `${cards.length} of ${r.cards.length} cards`;
    list.replaceChildren(...cards.slice(0, 60).map(featureCard));
    for (const c of cards.slice(0, 60)) {
      const div = document.getElementById(`feat-hist-${c.latent}`);
      if (div) mount(div, { grid: { left: 40, right: 10, top: 10, bottom: 25 }, tooltip: { trigger: "axis" },
        xAxis: { type: "category", data: c.histogram.map((_, i) => fmt(((i + 0.5) / c.histogram.length) * c.max_activation)), axisLabel: { fontSize: 9 } },
        yAxis: { type: "log", min: 1, axisLabel: { fontSize: 9 } }, series: [{ type: "bar", data: c.histogram.map((n) => n || null) }] });
    }
  };
  search.addEventListener("input", render);
  render();
}

function featureCard(c) {
  const logits = (rows, cls) => h("table", { class: `logits ${cls}` }, h("tbody", {}, rows.map(([t, v]) => h("tr", {}, h("td", { text: JSON.stringify(t) }), h("td", { class: "num", text: fmt(v) })))));
  const ctx = (ex) => tokenRun(ex.tokens.map((t, i) => ({ t, v: ex.acts[i] })), c.max_activation, ex.focus);
  const histDiv = h("div", { class: "chart", id: `feat-hist-${c.latent}` });
  return h("div", { class: "feature", "data-latent": c.latent },
    h("h3", { text: `Latent ${c.latent}` }, h("span", { class: "muted", text: `  density ${fmt(c.density)} · max ${fmt(c.max_activation)} · mean ${fmt(c.mean_activation)}` })),
    h("div", { class: "cols" },
      h("div", {}, h("div", { class: "muted", text: "top activations" }), c.top.map(ctx),
        c.intervals.map(([label, exs]) => h("details", {}, h("summary", { class: "muted", text: `interval ${label} (${exs.length})` }), exs.map(ctx)))),
      h("div", {}, h("div", { class: "muted", text: "activation histogram (tokens where active)" }), histDiv,
        h("div", { class: "muted", text: "promoted tokens" }), logits(c.top_logits, "top"),
        h("div", { class: "muted", text: "suppressed tokens" }), logits(c.bottom_logits, "bottom"),
        c.nearest.length ? h("div", { class: "muted", text: `nearest latents: ${c.nearest.map(([l, s]) => `${l} (${fmt(s)})`).join(", ")}` }) : null)));
}

// ---------------------------------------------------------------- eval samples
function variantLabel(v, i) {
  const o = v.options || {};
  return `#${i}: ${v.num_fewshot}-shot${o.chat ? ", chat" : ""}${o.system ? `, system “${o.system.slice(0, 30)}”` : ""}`;
}

// Items of the agenda's evals (sycophancy…): no log-likelihood choices, so a table of each
// item's scalar fields, filtered by a yes/no field, with the items whose field flips between two
// conditions.
function renderGenericItems(body, r) {
  const vs = r.variants;
  const key = (x) => (x.id != null ? x.id : x.doc);
  const first = vs.find((v) => (v.items || []).length).items[0];
  const cols = Object.keys(first).filter((k) => first[k] === null || typeof first[k] !== "object");
  const flags = cols.filter((k) => typeof first[k] === "boolean");
  const label = (v, i) => `#${i}` + (v.chat != null ? (v.chat ? ", chat" : ", plain") : "") + (v.balanced != null ? (v.balanced ? ", balanced" : "") : "");
  const sel = (id) => h("select", { id }, vs.map((v, i) => h("option", { value: i, text: label(v, i) })));
  const a = sel("variant-a"), b = sel("variant-b");
  if (vs.length > 1) b.value = "1";
  const flag = h("select", { id: "sample-flag" }, flags.map((f) => h("option", { value: f, text: f })));
  const show = h("select", { id: "sample-filter" }, ["all", "yes", "no", "flips"].map((x) => h("option", { value: x, text: x === "flips" ? "flips between the two conditions" : x })));
  const out = h("div", { id: "samples" });
  body.append(h("div", { class: "toolbar" }, h("label", {}, "condition ", a), h("label", {}, "field ", flag), h("label", {}, "show ", show), h("label", {}, "versus ", b)), out);
  const render = () => {
    const ia = vs[+a.value].items || [], ib = new Map((vs[+b.value].items || []).map((x) => [key(x), x]));
    const f = flag.value;
    let rows = ia;
    if (show.value === "yes") rows = rows.filter((x) => x[f] === true);
    if (show.value === "no") rows = rows.filter((x) => x[f] === false);
    if (show.value === "flips") rows = rows.filter((x) => ib.has(key(x)) && ib.get(key(x))[f] !== x[f]);
    out.replaceChildren(h("div", { class: "muted", id: "sample-count", text: `${rows.length} items` }),
      h("table", { class: "sample" }, h("thead", {}, h("tr", {}, cols.map((c) => h("th", { text: c })))),
        h("tbody", {}, rows.slice(0, 500).map((x) => h("tr", { "data-doc": key(x) }, cols.map((c) => h("td", { class: typeof x[c] === "number" ? "num" : "", text: fmt(x[c]) })))))));
  };
  [a, b, flag, show].forEach((e) => e.addEventListener("change", render));
  render();
}

function renderSamples(body, run) {
  const r = run.results;
  const vs = r.variants;
  if (!vs.some((v) => (v.items || []).some((x) => x.loglikelihoods) || (v.generations || []).length)) return renderGenericItems(body, r);
  const sel = (id) => h("select", { id }, vs.map((v, i) => h("option", { value: i, text: variantLabel(v, i) })));
  const a = sel("variant-a"), b = sel("variant-b");
  if (vs.length > 1) b.value = "1";
  const show = h("select", { id: "sample-filter" }, ["all", "correct", "wrong", "flips"].map((x) => h("option", { value: x, text: x === "flips" ? "flips between the two conditions" : x })));
  const out = h("div", { id: "samples" });
  body.append(h("p", { class: "muted", text: `${r.task}: ${r.n_items} items, ${vs.length} condition(s); metrics ${(r.metrics || []).join(", ")}` }),
    h("div", { class: "toolbar" }, h("label", {}, "condition ", a), h("label", {}, "show ", show), h("label", { id: "b-label" }, "versus ", b)), out);
  const render = () => {
    const va = vs[+a.value], vb = vs[+b.value];
    document.getElementById("b-label").style.display = show.value === "flips" ? "" : "none";
    const gens = (va.items || []).length === 0;
    const itemsA = gens ? va.generations : va.items;
    const byDocB = new Map(((gens ? vb.generations : vb.items) || []).map((x) => [x.doc, x]));
    const correct = (x) => (gens ? Object.values(x.scores)[0] > 0 : x.acc > 0);
    let rows = itemsA;
    if (show.value === "correct") rows = rows.filter(correct);
    if (show.value === "wrong") rows = rows.filter((x) => !correct(x));
    if (show.value === "flips") rows = rows.filter((x) => byDocB.has(x.doc) && correct(x) !== correct(byDocB.get(x.doc)));
    const cell = (x) => gens ? genCell(x) : mcCell(x);
    const head = show.value === "flips"
      ? h("tr", {}, h("th", { text: "doc" }), h("th", { text: variantLabel(va, +a.value) }), h("th", { text: variantLabel(vb, +b.value) }))
      : h("tr", {}, h("th", { text: "doc" }), h("th", { text: "prompt" }), h("th", { text: "choices (log-likelihood)" }), h("th", { text: "correct" }));
    out.replaceChildren(h("div", { class: "muted", id: "sample-count", text: `${rows.length} items` }),
      h("table", { class: "sample" }, h("thead", {}, head), h("tbody", {}, rows.slice(0, 300).map((x) => show.value === "flips"
        ? h("tr", { "data-doc": x.doc }, h("td", { text: x.doc }), h("td", {}, promptCell(x), cell(x)), h("td", {}, promptCell(byDocB.get(x.doc)), cell(byDocB.get(x.doc))))
        : h("tr", { "data-doc": x.doc }, h("td", { text: x.doc }), h("td", { class: "prompt" }, promptCell(x)), h("td", {}, cell(x)),
            h("td", { class: correct(x) ? "ok" : "bad", text: correct(x) ? "✓" : "✗" }))))));
  };
  [a, b, show].forEach((e) => e.addEventListener("change", render));
  render();
}

function promptCell(x) {
  if (x.context == null && x.text == null) return h("span", { class: "muted", text: "(prompt not recorded)" });
  return h("div", { class: "ctx", text: x.context != null ? x.context : "" });
}
function mcCell(x) {
  const choices = x.choices && x.choices.length ? x.choices : x.loglikelihoods.map((_, i) => `choice ${i}`);
  return h("div", {}, choices.map((c, i) => h("div", { class: `choice${x.gold.includes(i) ? " gold" : ""}${i === x.pred ? " pred" : ""}` },
    `${c} `, h("span", { class: "muted", text: `(${fmt(x.loglikelihoods[i])})` }))),
    h("div", { class: x.acc > 0 ? "ok" : "bad", text: x.acc > 0 ? "correct" : "wrong" }));
}
function genCell(x) {
  return h("div", {}, h("div", { class: "ctx", text: x.text }), h("div", { class: "muted", text: `target: ${x.target} · ${Object.entries(x.scores).map(([k, v]) => `${k} ${v}`).join(", ")}` }));
}

// ---------------------------------------------------------------- attention
async function modelsInRuns() {
  try {
    const d = await api("/api/runs");
    return [...new Set(["smollm2-135m", ...d.runs.flatMap((r) => r.models)])];
  } catch (_) { return ["smollm2-135m"]; }
}

function defaultPrompt(run) {
  const c = (run && run.config) || {};
  const inner = Object.values(c).find((x) => x && typeof x === "object" && !Array.isArray(x)) || {};
  return c.text || c.prompt || inner.text || inner.prompt || "When Mary and John went to the store, John gave a drink to";
}

async function renderRunAttention(body, run, id) {
  if (run.files.some((f) => f.name === "activations.safetensors")) {
    try {
      const p = await api(`/api/cached-attention?id=${encodeURIComponent(id)}`);
      const have = p.patterns.map((x, l) => (x.length ? l : null)).filter((l) => l !== null);
      body.append(h("p", { class: "muted", id: "att-cached", text: `Patterns cached by this run (layers ${have.join(", ")}); type a prompt below to compute others.` }));
      const ctl = h("div", { class: "toolbar", id: "att-controls" }), out = h("div", { id: "att-out" });
      body.append(ctl, out);
      showPatterns(ctl, out, p, have);
      return;
    } catch (_) { /* no cached patterns: compute on demand */ }
  }
  attentionView(body, run.summary.models, defaultPrompt(run));
}

async function showAttention() {
  clearPage();
  main().append(h("h1", { text: "Attention patterns" }));
  const body = h("div", {});
  main().append(body);
  attentionView(body, await modelsInRuns(), defaultPrompt(null));
}

function attentionView(body, models, prompt) {
  const model = h("select", { id: "att-model" }, models.map((x) => h("option", { value: x, text: x })));
  const text = h("textarea", { id: "att-prompt", rows: 2, cols: 80 }, prompt.length > 600 ? prompt.slice(0, 600) : prompt);
  const go = h("button", { id: "att-go", text: "Compute" });
  const status = h("span", { class: "muted", id: "att-status" });
  const ctl = h("div", { class: "toolbar", id: "att-controls" });
  const out = h("div", { id: "att-out" });
  body.append(h("div", { class: "toolbar" }, h("label", {}, "model ", model), go, status), text, ctl, out);
  go.addEventListener("click", async () => {
    go.disabled = true; status.textContent = "computing (the first call loads the model)…";
    try {
      const p = await api("/api/attention", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: model.value, prompt: text.value }) });
      status.textContent = `${p.tokens.length} tokens, ${p.n_layers} layers × ${p.n_heads} heads`;
      showPatterns(ctl, out, p);
    } catch (e) { status.textContent = ""; out.replaceChildren(errorCard("Attention failed", e.message)); }
    go.disabled = false;
  });
  go.click();
}

function showPatterns(ctl, out, p, layers) {
  layers = layers || p.patterns.map((_, l) => l);
  const layer = h("select", { id: "att-layer" }, layers.map((l) => h("option", { value: l, text: `layer ${l}` })));
  const head = h("select", { id: "att-head" }, [...Array(p.n_heads).keys()].map((i) => h("option", { value: i, text: `head ${i}` })));
  const grid = h("input", { type: "checkbox", id: "att-grid" });
  ctl.replaceChildren(layer, head, h("label", {}, grid, " all heads of the layer"));
  const labels = p.tokens.map((t, i) => `${i}:${t.replace(/\n/g, "↵")}`);
  const option = (m, title, small) => ({
    title: { text: title, left: "center", textStyle: { fontSize: small ? 12 : 14 } },
    tooltip: { formatter: (q) => `query <b>${esc(labels[q.data[1]])}</b><br>key <b>${esc(labels[q.data[0]])}</b><br>attention ${fmt(q.data[2])}` },
    grid: { left: small ? 70 : 110, right: 20, top: 35, bottom: small ? 70 : 110 },
    xAxis: { type: "category", data: labels, name: small ? "" : "key", nameLocation: "middle", nameGap: 70, axisLabel: { rotate: 60, fontSize: small ? 8 : 11, interval: 0 } },
    yAxis: { type: "category", data: labels, name: small ? "" : "query", nameLocation: "middle", nameGap: 90, inverse: true, axisLabel: { fontSize: small ? 8 : 11, interval: 0 } },
    visualMap: { show: !small, min: 0, max: 1, right: 0, top: "middle", inRange: { color: SEQUENTIAL } },
    series: [{ type: "heatmap", data: m.flatMap((row, qi) => row.map((v, k) => [k, qi, v])), progressive: 0 }],
  });
  const render = () => {
    for (const [k, c] of Object.entries(ilab.charts)) if (k.startsWith("att-")) { c.dispose(); delete ilab.charts[k]; }
    const l = +layer.value;
    head.disabled = grid.checked;
    if (grid.checked) {
      const wrap = h("div", { class: "multiples" });
      out.replaceChildren(wrap);
      p.patterns[l].forEach((m, hd) => {
        const div = h("div", { class: "chart", id: `att-grid-${hd}`, style: "height:380px" });
        wrap.append(div);
        mount(div, option(m, `L${l}H${hd}`, true));
      });
      return;
    }
    const hd = +head.value;
    const m = p.patterns[l][hd];
    const div = h("div", { class: "chart", id: "att-chart", style: `height:${Math.max(420, labels.length * 22 + 160)}px` });
    const strip = h("div", { class: "tokens", id: "att-tokens" });
    const note = h("div", { class: "muted", text: "hover a token: the others are shaded by how much it attends to them" });
    out.replaceChildren(h("h3", { id: "att-title", text: `Layer ${l}, head ${hd}` }), note, strip, div);
    const spans = p.tokens.map((t, i) => h("span", { class: "tok", "data-pos": i, text: t.replace(/\n/g, "↵") }));
    spans.forEach((s, qi) => s.addEventListener("mouseenter", () => {
      spans.forEach((o, k) => {
        const v = k <= qi ? m[qi][k] : 0;
        o.style.background = `rgba(37,99,168,${v.toFixed(3)})`;
        o.style.color = v > 0.5 ? "#fff" : "";
        o.title = `attention from ${qi} to ${k}: ${fmt(v)}`;
        o.dataset.att = v;
        o.classList.toggle("query", k === qi);
      });
    }));
    strip.append(...spans);
    mount(div, option(m, `L${l}H${hd}`, false));
  };
  [layer, head, grid].forEach((e) => e.addEventListener("change", render));
  render();
}

// ---------------------------------------------------------------- compare
function flatten(v, prefix, out) {
  if (v !== null && typeof v === "object") {
    if (Array.isArray(v) && v.length > 20) { out[prefix] = `[${v.length} items]`; return out; }
    for (const [k, x] of Object.entries(v)) flatten(x, prefix ? `${prefix}.${k}` : k, out);
  } else out[prefix] = v;
  return out;
}

async function showCompare(ids) {
  clearPage();
  const m = main();
  m.append(h("h1", { text: "Compare two runs" }));
  let runs;
  try { runs = await Promise.all(ids.map(loadRun)); } catch (e) { m.append(errorCard("Could not open a run", e.message)); return; }
  const [a, b] = runs;
  if (a.summary.experiment !== b.summary.experiment) m.append(errorCard("Different experiments", `${a.summary.experiment} vs ${b.summary.experiment}: only fields with the same name are lined up`));
  const fa = flatten(a.results || {}, "", {}), fb = flatten(b.results || {}, "", {});
  const ca = flatten(a.config || {}, "", {}), cb = flatten(b.config || {}, "", {});
  const diffRows = (x, y, onlyDiff) => [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => !onlyDiff || JSON.stringify(x[k]) !== JSON.stringify(y[k])).map((k) => {
    const d = typeof x[k] === "number" && typeof y[k] === "number" ? fmt(y[k] - x[k]) : "";
    return h("tr", { class: JSON.stringify(x[k]) !== JSON.stringify(y[k]) ? "changed" : "" }, h("td", { text: k }), h("td", { class: "num", text: fmt(x[k]) }), h("td", { class: "num", text: fmt(y[k]) }), h("td", { class: "num", text: d }));
  });
  const head = h("tr", {}, h("th", { text: "field" }), h("th", {}, h("a", { href: `#/run/${enc(ids[0])}`, text: ids[0] })), h("th", {}, h("a", { href: `#/run/${enc(ids[1])}`, text: ids[1] })), h("th", { text: "B − A" }));
  m.append(h("h2", { text: "Config (fields that differ)" }), h("table", {}, h("thead", {}, head.cloneNode(true)), h("tbody", {}, diffRows(ca, cb, true))));
  m.append(h("h2", { text: "Results" }), h("table", { id: "compare-results" }, h("thead", {}, head), h("tbody", {}, diffRows(fa, fb, false))));
  const figsA = new Map((a.figures || []).map((f) => [f.name, f.figure]));
  const figsB = new Map((b.figures || []).map((f) => [f.name, f.figure]));
  const names = [...new Set([...figsA.keys(), ...figsB.keys()])];
  if (names.length) m.append(h("h2", { text: "Figures" }));
  const draws = [];
  for (const n of names) {
    const cellOf = (f) => { if (!f) return h("p", { class: "muted", text: "(absent)" }); const x = figureNode(f, { small: true }); draws.push(x.draw); return x.node; };
    m.append(h("h3", { text: n }), h("div", { class: "side" }, cellOf(figsA.get(n)), cellOf(figsB.get(n))));
  }
  draws.forEach((d) => d());
}

// ---------------------------------------------------------------- new run
// An experiment started from the page (the server allows it on loopback only): the catalog's
// quick config, editable as JSON, checked by the server as a config file would be.
async function showNew() {
  clearPage();
  const m = main();
  m.append(h("h1", { text: "Start an experiment" }));
  let cat;
  try { cat = await api("/api/experiments"); } catch (e) { m.append(errorCard("Could not read the catalog", e.message)); return; }
  const sel = h("select", { id: "new-experiment" }, cat.map((c) => h("option", { value: c.name, text: c.name })));
  const question = h("p", { class: "muted", id: "new-question" });
  const text = h("textarea", { id: "new-config", rows: 16, cols: 90, spellcheck: "false" });
  const go = h("button", { id: "new-start", text: "Start" });
  const status = h("div", { id: "new-status" });
  const fill = () => {
    const c = cat.find((x) => x.name === sel.value);
    question.textContent = c.question;
    text.value = JSON.stringify(c.quick, null, 2);
  };
  sel.addEventListener("change", fill);
  go.addEventListener("click", async () => {
    status.replaceChildren();
    let config;
    try { config = JSON.parse(text.value); } catch (e) { status.append(errorCard("The config is not JSON", e.message)); return; }
    go.disabled = true;
    try {
      const r = await api("/api/start", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ config }) });
      location.hash = `#/run/${enc(r.id)}`;
    } catch (e) { status.append(errorCard("Not started", e.message)); }
    go.disabled = false;
  });
  m.append(h("div", { class: "toolbar" }, h("label", {}, "experiment ", sel), go), question,
    h("p", { class: "muted", text: "The quick preset's config; edit any field. It runs in the server's process into a new directory under the served runs, and its page shows it live." }),
    text, status);
  fill();
}

// ---------------------------------------------------------------- router
function route() {
  const [, kind, ...rest] = location.hash.replace(/^#/, "").split("/");
  if (kind === "run") {
    const parts = rest.map(decodeURIComponent);
    const tabs = ["report", "features", "samples", "attention", "results", "config", "manifest", "files"];
    const tab = parts.length > 1 && tabs.includes(parts[parts.length - 1]) ? parts.pop() : null;
    return showRun(parts.join("/"), tab);
  }
  if (kind === "compare") return showCompare(rest.join("/").split("|").map((x) => x.split("/").map(decodeURIComponent).join("/")));
  if (kind === "attention") return showAttention();
  if (kind === "new") return showNew();
  return showIndex();
}
window.addEventListener("hashchange", route);
route();
