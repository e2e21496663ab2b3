"""The device page: one HTML document with its CSS and JavaScript inline (a Pi on a closed network has no CDN).

No libraries: the JS opens ``EventSource('events')`` (relative, so the page also works behind
a proxy path), writes each ``state`` event into the DOM, and draws the latency history as
inline SVG paths. ``BASE_CSS`` and ``BASE_JS`` are shared with the fleet dashboard.
"""

from __future__ import annotations

import json

from device.pipeline import STAGES

BASE_CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mut:#57606a;--bg:#f6f8fa;--line:#d0d7de;--p50:#0969da;--p99:#cf222e}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:var(--bg);color:#1f2328}
header{display:flex;gap:14px;align-items:center;flex-wrap:wrap;padding:10px 16px;background:#fff;border-bottom:1px solid var(--line)}
header b.brand{font-size:16px}
.mut{color:var(--mut)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
.pill{display:inline-block;padding:2px 10px;border-radius:999px;color:#fff;font-weight:600;background:var(--mut)}
.pill.ok{background:var(--ok)}.pill.bad{background:var(--bad)}
.badge{display:inline-block;padding:1px 8px;border-radius:4px;background:var(--warn);color:#fff;font-weight:700;font-size:12px}
.hidden{display:none!important}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px}
h2{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--mut);margin:0 0 8px}
table.kv{border-collapse:collapse}table.kv td{padding:2px 12px 2px 0;vertical-align:top}table.kv td:first-child{color:var(--mut)}
img.px{image-rendering:pixelated}
"""

BASE_JS = """
"use strict";
const $ = (id) => document.getElementById(id);
function setText(id, v) { const e = $(id); const s = (v === null || v === undefined || v === "") ? "\\u2013" : String(v); if (e && e.textContent !== s) e.textContent = s; }
function fmtMs(v) {
  if (v === null || v === undefined || isNaN(v)) return "\\u2013";
  if (v < 1) return (v * 1000).toFixed(v < 0.1 ? 1 : 0) + " \\u00b5s";
  if (v < 100) return v.toFixed(2) + " ms";
  return v.toFixed(0) + " ms";
}
function fmtErrors(e) {
  const kinds = Object.keys(e || {});
  return kinds.length ? kinds.map((k) => k + " " + e[k]).join(", ") : "0";
}
"""

_PAGE_CSS = """
main{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px;padding:12px 16px}
section.wide{grid-column:1/-1}
section.pics-sec{grid-column:span 2}
@media (max-width:900px){main{grid-template-columns:minmax(0,1fr)}section.pics-sec{grid-column:auto}}
.pics{display:flex;gap:14px;align-items:flex-start}
.pics figure{margin:0;min-width:0}.pics figure.f{flex:4}.pics figure.i{flex:3}
.pics img{width:100%;object-fit:contain;background:#222;display:block;border-radius:4px}
.pics img.frame{aspect-ratio:4/3}.pics img.px{aspect-ratio:1/1}
figcaption{font-size:12px;color:var(--mut)}
code.wrap{word-break:break-all}
#label{font-size:26px;font-weight:700}
ol#top{list-style:none;padding:0;margin:8px 0}
ol#top li{display:grid;grid-template-columns:9em 1fr 4.5em;gap:8px;align-items:center;margin:3px 0}
ol#top .bar{height:10px;background:#ddf4ff;border-radius:3px;overflow:hidden}ol#top .bar i{display:block;height:100%;background:var(--p50)}
ol#top .score{text-align:right;font-variant-numeric:tabular-nums}
table.lat{width:100%;border-collapse:collapse}table.lat td,table.lat th{padding:4px 8px;text-align:left;border-top:1px solid #eaeef2}
table.lat th{font-weight:600;color:var(--mut);font-size:12px}
table.lat td.num{font-variant-numeric:tabular-nums;white-space:nowrap;width:6.5em}
table.lat td.chart{width:60%}
svg.spark{width:100%;height:48px;display:block;background:#fbfcfd;border:1px solid #eaeef2;border-radius:3px}
svg.spark path{fill:none;stroke-width:1.5;vector-effect:non-scaling-stroke}
svg.spark path.p50{stroke:var(--p50)}svg.spark path.p99{stroke:var(--p99);stroke-dasharray:3 2}
.legend i{display:inline-block;width:18px;height:0;border-top:2px solid var(--p50);vertical-align:middle;margin:0 4px 0 10px}
.legend i.p99{border-top:2px dashed var(--p99)}
.ymax{font-size:11px;color:var(--mut)}
footer{padding:0 16px 16px;color:var(--mut);font-size:12px}
"""

_STAGE_ROWS = "".join(
    f'<tr><td>{s}</td><td class="num" id="p50-{s}">\u2013</td><td class="num" id="p99-{s}">\u2013</td>'
    f'<td class="chart"><svg class="spark" id="chart-{s}" viewBox="0 0 300 48" preserveAspectRatio="none"></svg></td>'
    f'<td class="ymax" id="ymax-{s}"></td></tr>'
    for s in STAGES
)

_PAGE_JS = "const STAGES = " + json.dumps(list(STAGES)) + """;
let hist = [];
let cfg = {history_s: 300, sample_s: 2};

function renderTop(top) {
  const ol = $("top");
  ol.innerHTML = "";
  for (const p of top) {
    const li = document.createElement("li");
    const pct = Math.max(0, Math.min(100, p.score * 100));
    li.innerHTML = '<span class="lbl"></span><span class="bar"><i></i></span><span class="score"></span>';
    li.querySelector(".lbl").textContent = p.label;
    li.querySelector("i").style.width = pct.toFixed(1) + "%";
    li.querySelector(".score").textContent = p.score.toFixed(3);
    ol.appendChild(li);
  }
}

function path(points, i, key, x, y) {
  let d = "", pen = false;
  for (const p of points) {
    if (!p[key]) { pen = false; continue; }
    d += (pen ? "L" : "M") + x(p.t) + "," + y(p[key][i]);
    pen = true;
  }
  return d;
}

function drawCharts() {
  const now = Date.now() / 1000;
  hist = hist.filter((p) => p.t >= now - cfg.history_s);
  // the time axis spans the history kept so far, up to history_s
  const span = Math.max(cfg.sample_s * 5, Math.min(cfg.history_s, hist.length ? now - hist[0].t + cfg.sample_s : 0));
  const t0 = now - span;
  setText("span", span >= 120 ? (span / 60).toFixed(0) + " min" : span.toFixed(0) + " s");
  setText("sample", cfg.sample_s + " s");
  STAGES.forEach((stage, i) => {
    // log scale: a p99 spike must not flatten the p50 line
    let lo = Infinity, hi = 0;
    for (const p of hist) {
      if (!p.p99_ms) continue;
      lo = Math.min(lo, Math.max(p.p50_ms[i], 1e-4));
      hi = Math.max(hi, p.p99_ms[i]);
    }
    if (!(hi > 0)) { lo = 0.01; hi = 1; }
    if (hi / lo < 4) { const m = Math.sqrt(hi * lo); lo = m / 2; hi = m * 2; }
    const L0 = Math.log(lo), L = Math.log(hi) - L0;
    const x = (t) => Math.max(0, (t - t0) / span * 300).toFixed(1);
    const y = (v) => (47 - (Math.log(Math.max(v, lo)) - L0) / L * 46).toFixed(1);
    $("chart-" + stage).innerHTML = '<path class="p99" d="' + path(hist, i, "p99_ms", x, y) + '"/>' +
      '<path class="p50" d="' + path(hist, i, "p50_ms", x, y) + '"/>';
    setText("ymax-" + stage, fmtMs(lo) + " \u2013 " + fmtMs(hi) + " (log)");
  });
}

function render(d) {
  cfg = d.page;
  const s = d.stats;
  setText("variant", s.variant);
  setText("runtime", [s.runtime, s.runtime_version].filter(Boolean).join(" "));
  setText("sha", (s.sha256 || "").slice(0, 12));
  $("sha").title = s.sha256 || "";
  const h = $("health");
  h.className = "pill " + (d.health.ok ? "ok" : "bad");
  setText("health", d.health.ok ? "healthy" : "unhealthy");
  setText("health-reason", d.health.reason);
  setText("fps", s.fps !== undefined ? s.fps.toFixed(1) : null);
  setText("frames", s.frames);
  setText("dropped", s.dropped);
  setText("errors", fmtErrors(s.errors));
  setText("state", s.state);
  setText("uptime", s.uptime_s !== undefined ? s.uptime_s.toFixed(0) + " s" : null);
  setText("accuracy", s.accuracy === null || s.accuracy === undefined ? null : (s.accuracy * 100).toFixed(1) + " % of " + s.labelled_frames + " labelled frames");
  setText("source", s.source);
  setText("m-variant", s.variant);
  setText("m-runtime", [s.runtime, s.runtime_version].filter(Boolean).join(" "));
  setText("m-threads", s.threads === null ? "runtime default" : s.threads);
  setText("m-sha", s.sha256);
  setText("window", s.window);
  const shown = d.shown;
  if (shown) {
    setText("label", shown.top[0].label);
    setText("score", shown.top[0].score.toFixed(3));
    setText("seq", shown.seq);
    setText("frame-name", shown.frame_name || "");
    renderTop(shown.top);
    for (const kind of ["frame", "input"]) {
      const im = (shown.images || {})[kind];
      if (!im) continue;
      if (im.src) { $(kind + "-img").src = im.src; $(kind + "-img").classList.remove("hidden"); }
      setText(kind + "-note", im.note);
    }
  }
  const hw = d.hardware;
  setText("hw-model", hw.model || hw.machine);
  setText("hw-cpu", hw.cpu_model ? hw.cpu_model + " \\u00d7 " + hw.cpu_count : hw.cpu_count + " CPUs");
  setText("hw-temp", hw.temperature_c === null ? "not reported" : hw.temperature_c.toFixed(1) + " \\u00b0C");
  setText("hw-throttled", hw.throttled === null ? "not reported" : (hw.throttled_flags.length ? hw.throttled_flags.join(", ") + " (" + hw.throttled + ")" : "no (" + hw.throttled + ")"));
  setText("hw-governor", hw.governor || "not reported");
  setText("hw-emulated", hw.emulated ? "EMULATED (" + hw.emulated + "): timings are not the hardware's" : "no");
  $("emulated").classList.toggle("hidden", !hw.emulated);
  const lat = s.latency_ms || {};
  for (const stage of STAGES) {
    const v = lat[stage] || {};
    setText("p50-" + stage, fmtMs(v.p50_ms));
    setText("p99-" + stage, fmtMs(v.p99_ms));
  }
  const last = hist.length ? hist[hist.length - 1].t : 0;
  for (const p of d.history || []) if (p.t > last) hist.push(p);
  drawCharts();
  setText("updated", new Date(d.t * 1000).toLocaleTimeString());
}

function connect() {
  const es = new EventSource("events");
  es.addEventListener("state", (ev) => { render(JSON.parse(ev.data)); });
  es.onopen = () => { const c = $("conn"); c.className = "pill ok"; setText("conn", "live"); };
  es.onerror = () => {
    const c = $("conn"); c.className = "pill bad"; setText("conn", "daemon not answering, reconnecting");
    $("health").className = "pill bad"; setText("health", "unreachable");
  };
}
connect();
"""

PAGE_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgekit device</title><link rel="icon" href="data:,">
<style>{BASE_CSS}{_PAGE_CSS}</style></head>
<body>
<header>
 <b class="brand">edgekit</b>
 <span>variant <b id="variant">\u2013</b></span>
 <span>runtime <b id="runtime">\u2013</b></span>
 <span>model sha256 <code id="sha">\u2013</code></span>
 <span class="badge hidden" id="emulated">EMULATED</span>
 <span><span class="pill" id="health">\u2013</span> <span class="mut" id="health-reason"></span></span>
 <span style="margin-left:auto"><span class="pill" id="conn">connecting</span> <span class="mut">updated <span id="updated">\u2013</span></span></span>
</header>
<main>
 <section class="pics-sec">
  <h2>What the camera sees and what the model sees</h2>
  <div class="pics">
   <figure class="f"><img id="frame-img" class="frame hidden" alt="latest camera frame"><figcaption>camera frame, <span id="frame-note">waiting for a frame</span></figcaption></figure>
   <figure class="i"><img id="input-img" class="px hidden" alt="the model's input tensor"><figcaption>model input, <span id="input-note">waiting for a frame</span></figcaption></figure>
  </div>
 </section>
 <section>
  <h2>Prediction</h2>
  <div id="label">\u2013</div>
  <div class="mut">score <span id="score">\u2013</span> \u00b7 frame <span id="seq">\u2013</span> <span id="frame-name"></span></div>
  <ol id="top"></ol>
 </section>
 <section>
  <h2>Throughput</h2>
  <table class="kv">
   <tr><td>fps</td><td id="fps">\u2013</td></tr>
   <tr><td>frames</td><td id="frames">\u2013</td></tr>
   <tr><td>dropped results</td><td id="dropped">\u2013</td></tr>
   <tr><td>errors</td><td id="errors">\u2013</td></tr>
   <tr><td>accuracy</td><td id="accuracy">\u2013</td></tr>
   <tr><td>state</td><td id="state">\u2013</td></tr>
   <tr><td>uptime</td><td id="uptime">\u2013</td></tr>
  </table>
 </section>
 <section>
  <h2>Model</h2>
  <table class="kv">
   <tr><td>variant</td><td id="m-variant">\u2013</td></tr>
   <tr><td>runtime</td><td id="m-runtime">\u2013</td></tr>
   <tr><td>threads</td><td id="m-threads">\u2013</td></tr>
   <tr><td>sha256</td><td><code id="m-sha" class="wrap">\u2013</code></td></tr>
   <tr><td>source</td><td id="source">\u2013</td></tr>
  </table>
 </section>
 <section>
  <h2>Hardware</h2>
  <table class="kv">
   <tr><td>board</td><td id="hw-model">\u2013</td></tr>
   <tr><td>CPU</td><td id="hw-cpu">\u2013</td></tr>
   <tr><td>temperature</td><td id="hw-temp">\u2013</td></tr>
   <tr><td>throttling</td><td id="hw-throttled">\u2013</td></tr>
   <tr><td>governor</td><td id="hw-governor">\u2013</td></tr>
   <tr><td>emulated</td><td id="hw-emulated">\u2013</td></tr>
  </table>
 </section>
 <section class="wide">
  <h2>Latency per stage</h2>
  <table class="lat">
   <tr><th>stage</th><th>p50</th><th>p99</th><th>last <span id="span">\u2013</span> <span class="legend"><i></i>p50<i class="p99"></i>p99 of each <span id="sample">2 s</span></span></th><th></th></tr>
   {_STAGE_ROWS}
  </table>
  <div class="mut" style="font-size:12px;margin-top:6px">p50 and p99 of the last <span id="window">\u2013</span> frames (the statistics window); the chart keeps one point per interval.</div>
 </section>
</main>
<footer>Pushed by server-sent events; camera frames are kept and encoded only while a page is open.
JSON: <a href="stats">/stats</a> \u00b7 <a href="latest">/latest</a> \u00b7 <a href="page.json">/page.json</a> \u00b7 <a href="metrics">/metrics</a></footer>
<script>{BASE_JS}{_PAGE_JS}</script>
</body></html>
"""
