"""The fleet page: one card per device, updated by server-sent events; CSS and JS inline, no libraries."""

from __future__ import annotations

from device.page_html import BASE_CSS, BASE_JS

_CSS = """
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:12px;padding:12px 16px}
.card{background:#fff;border:1px solid var(--line);border-top:6px solid var(--ok);border-radius:8px;padding:10px 12px}
.card.bad{border-color:var(--bad);border-top-color:var(--bad);background:#fff5f5}
.card.wait{border-top-color:var(--mut)}
.card.wait .reason{color:var(--mut);font-weight:400}
.card .head{display:flex;gap:8px;align-items:center;justify-content:space-between}
.card .name{font-weight:700;font-size:15px}
.card img{width:100%;aspect-ratio:4/3;object-fit:contain;background:#222;border-radius:4px;margin:8px 0 4px;display:block}
.card.bad img,.card.bad table,.card.bad .label{opacity:.4;filter:grayscale(1)}
.card .noframe{aspect-ratio:4/3;background:#eaeef2;border-radius:4px;margin:8px 0 4px;display:flex;align-items:center;justify-content:center;color:var(--mut)}
.card .label{font-size:20px;font-weight:700}
.card .reason{color:var(--bad);font-weight:600;margin-top:6px;word-break:break-word}
.card.ok .reason{color:var(--mut);font-weight:400}
.card table.kv{margin-top:4px}
"""

_JS = """
const cards = {};
function card(d) {
  let c = cards[d.index];
  if (c) return c;
  c = document.createElement("div");
  c.className = "card";
  c.id = "card-" + d.index;
  c.innerHTML = '<div class="head"><span class="name"></span><span class="pill state"></span></div>' +
    '<div class="mut addr"></div><img class="hidden" alt="latest frame"><div class="noframe">no frame yet</div><div class="label">\\u2013</div>' +
    '<table class="kv"><tr><td>fps</td><td class="fps"></td></tr><tr><td>p99 total</td><td class="p99t"></td></tr>' +
    '<tr><td>p99 invoke</td><td class="p99i"></td></tr><tr><td>frames</td><td class="frames"></td></tr>' +
    '<tr><td>model</td><td class="model"></td></tr><tr><td>hardware</td><td class="hw"></td></tr></table>' +
    '<div class="reason"></div><div class="mut updated"></div><a class="open" target="_blank">device page</a>';
  document.getElementById("cards").appendChild(c);
  cards[d.index] = c;
  return c;
}
function put(c, cls, v) { const e = c.querySelector("." + cls); const s = (v === null || v === undefined || v === "") ? "\\u2013" : String(v); if (e.textContent !== s) e.textContent = s; }
function render(doc) {
  let healthy = 0, waiting = 0;
  for (const d of doc.devices) {
    const c = card(d);
    // no answer and no failure yet: its first connection attempt has not ended (grey, not red)
    const wait = !d.ok && d.updated === null && d.failing_since === null;
    const look = d.ok ? "ok" : (wait ? "wait" : "bad");
    c.className = "card " + look;
    c.dataset.ok = d.ok ? "1" : "0";
    if (d.ok) healthy++;
    if (wait) waiting++;
    put(c, "name", d.name);
    put(c, "addr", d.address);
    const st = c.querySelector(".state");
    st.className = "pill state " + (wait ? "" : look);
    put(c, "state", d.ok ? "healthy" : (wait ? "connecting" : (d.updated === null ? "unreachable" : "failing")));
    put(c, "label", d.label === null ? null : d.label + (d.score === null ? "" : "  " + d.score.toFixed(2)));
    put(c, "fps", d.fps === null ? null : d.fps.toFixed(1));
    put(c, "p99t", d.frames ? fmtMs(d.p99_ms.total) : null);
    put(c, "p99i", d.frames ? fmtMs(d.p99_ms.invoke) : null);
    put(c, "frames", d.frames);
    put(c, "model", [d.variant, d.runtime].filter(Boolean).join(" \\u00b7 "));
    const hw = [];
    if (d.emulated) hw.push("EMULATED (" + d.emulated + ")");
    if (d.temperature_c !== null) hw.push(d.temperature_c.toFixed(1) + " \\u00b0C");
    for (const f of d.throttled_flags) hw.push(f);
    put(c, "hw", hw.join(", "));
    put(c, "reason", d.reason);
    const ago = d.updated === null ? "never answered" : "last answer " + Math.max(0, doc.t - d.updated).toFixed(0) + " s ago";
    put(c, "updated", ago + (d.ok || d.failing_since === null ? "" : " \\u00b7 failing for " + Math.max(0, doc.t - d.failing_since).toFixed(0) + " s"));
    if (d.frame_src) {
      c.querySelector("img").src = d.frame_src;
      c.querySelector("img").classList.remove("hidden");
      c.querySelector(".noframe").classList.add("hidden");
    }
    c.querySelector("a.open").href = d.forward + "/";
  }
  setText("summary", healthy + " of " + doc.devices.length + " healthy" + (waiting ? ", " + waiting + " connecting" : ""));
  setText("updated", new Date(doc.t * 1000).toLocaleTimeString());
}
const es = new EventSource("events");
es.addEventListener("fleet", (ev) => render(JSON.parse(ev.data)));
es.onopen = () => { $("conn").className = "pill ok"; setText("conn", "live"); };
es.onerror = () => { $("conn").className = "pill bad"; setText("conn", "dashboard not answering, reconnecting"); };
"""

DASHBOARD_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgekit fleet</title><link rel="icon" href="data:,">
<style>{BASE_CSS}{_CSS}</style></head>
<body>
<header><b class="brand">edgekit fleet</b><span id="summary" class="mut">\u2013</span>
<span style="margin-left:auto"><span class="pill" id="conn">connecting</span> <span class="mut">updated <span id="updated">\u2013</span></span></span></header>
<main id="cards"></main>
<script>{BASE_JS}{_JS}</script>
</body></html>
"""
