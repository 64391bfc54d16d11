"""The report's inline style and script (constants: the page's Content-Security-Policy
allows exactly these by their SHA-256, so nothing else can run or style the page).

The script filters the decisions on the page by verdict, exclusion reason, policy, check
result, signature state and free text, all read from and written to the URL fragment
(``report.html#status=fallback&q=kb%23``), so a filtered view can be bookmarked or sent.
It reads only ``data-*`` attributes and text the page already holds, and writes only the
``hidden`` flag, the count of shown decisions and ``data-*`` attributes on ``<body>``.
"""

CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--ink:#1f2328;--mute:#59636e;--line:#d1d9e0;--bg:#f6f8fa}
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);
margin:0 auto;max-width:1200px;padding:16px 24px}h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;
border-bottom:1px solid var(--line);padding-bottom:4px;margin-top:28px}h3{font-size:15px;margin:4px 0}
h4{font-size:13px;margin:12px 0 4px;color:var(--mute);text-transform:uppercase;letter-spacing:.03em}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;background:var(--bg);padding:1px 3px;border-radius:3px;
overflow-wrap:anywhere}.meta{color:var(--mute);margin:2px 0;overflow-wrap:anywhere}.id{font-family:ui-monospace,monospace;
overflow-wrap:anywhere}.ok{color:var(--ok)}.failed{color:var(--bad);font-weight:600}.warn{color:var(--warn)}
.none{color:var(--mute);font-style:italic}.more{color:var(--warn);font-weight:600}
ul.integrity{margin:8px 0;padding-left:18px}.tiles{display:flex;flex-wrap:wrap;gap:8px}
.tile{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:96px;background:var(--bg)}
.tile b{display:block;font-size:20px}.tile span{color:var(--mute);font-size:12px}
.t-fallback b,.t-infeasible b,.t-failed b{color:var(--bad)}.t-gap b{color:var(--warn)}
.cols{display:grid;grid-template-columns:3fr 2fr;gap:24px}@media (max-width:800px){.cols{grid-template-columns:1fr}}
.timeline{margin:0}.timeline svg{width:100%;height:160px;background:var(--bg);border:1px solid var(--line)}
figcaption,.legend{color:var(--mute);font-size:12px}.sw{display:inline-block;width:10px;height:10px;margin:0 3px 0 8px;
border-radius:2px}.axis{stroke:var(--mute)}
.v-optimal{fill:#2da44e;background:#2da44e}.v-gap{fill:#d4a72c;background:#d4a72c}
.v-heuristic{fill:#54aeff;background:#54aeff}.v-fallback{fill:#fa4549;background:#fa4549}
.v-infeasible{fill:#8250df;background:#8250df}.v-unknown{fill:#8c959f;background:#8c959f}
.badge{color:#fff;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600;white-space:nowrap}
table{border-collapse:collapse;width:100%;margin:4px 0}th,td{border-bottom:1px solid var(--line);padding:3px 6px;
text-align:left;vertical-align:top}th{background:var(--bg);font-size:12px}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums;white-space:nowrap}table.items td{font-size:13px}table.items td.id{min-width:16ch}table.items code{white-space:nowrap}td.t{white-space:nowrap}
.rule{color:var(--mute);font:11px ui-monospace,monospace}
.filters{position:sticky;top:0;background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px;
display:flex;flex-wrap:wrap;gap:12px;align-items:center;margin-top:24px;z-index:1}
.filters select,.filters input{font:inherit;padding:2px 4px;max-width:240px}.shown{margin-left:auto;color:var(--mute)}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 14px;margin:12px 0;overflow-x:auto}
.card:target{outline:2px solid #0969da}.card[data-checks=failed]{border-color:var(--bad);border-width:2px}
.budget svg.bar{width:100%;height:22px;border:1px solid var(--line)}.budget p{margin:2px 0;color:var(--mute)}
.b-used{fill:#2da44e;background:#2da44e}.b-free{fill:#eaeef2;background:#eaeef2;outline:1px solid var(--line)}.b-over{fill:#cf222e;background:#cf222e}.b-res{fill:#c8d1da;background:#c8d1da}.b-resp{fill:#afb8c1;background:#afb8c1}
.b-limit{stroke:#1f2328;stroke-width:2}ul.findings li{color:var(--bad)}pre{white-space:pre-wrap;
overflow-wrap:anywhere;background:var(--bg);padding:8px;max-height:300px;overflow:auto}
footer{margin:32px 0 8px;color:var(--mute);font-size:12px}[hidden]{display:none!important}
"""

SCRIPT = """
(function () {
  "use strict";
  var keys = ["status", "reason", "policy", "checks", "sig", "q"];
  var cards = Array.prototype.slice.call(document.querySelectorAll("section[data-decision]"));
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr.row"));
  var text = new Map();
  cards.concat(rows).forEach(function (el) { text.set(el, el.textContent.toLowerCase()); });
  var byId = new Map();
  cards.forEach(function (el) { byId.set(el.id, el); });
  function control(k) { return document.getElementById("f-" + k); }
  function read() {
    var f = {};
    keys.forEach(function (k) { f[k] = ""; });
    var h = location.hash.replace(/^#/, "");
    if (h.indexOf("=") < 0) { return null; }
    h.split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i < 0) { return; }
      try {
        var k = decodeURIComponent(kv.slice(0, i));
        var v = decodeURIComponent(kv.slice(i + 1).replace(/\\+/g, " "));
        if (keys.indexOf(k) >= 0) { f[k] = v; }
      } catch (e) { /* a malformed fragment filters nothing */ }
    });
    return f;
  }
  function current() {
    var f = {};
    keys.forEach(function (k) { f[k] = control(k).value; });
    return f;
  }
  function matches(el, f, t) {
    if (f.status && el.getAttribute("data-status") !== f.status) { return false; }
    if (f.reason && (el.getAttribute("data-reasons") || "").indexOf("|" + f.reason + "|") < 0) { return false; }
    if (f.policy && el.getAttribute("data-policy") !== f.policy) { return false; }
    if (f.checks && el.getAttribute("data-checks") !== f.checks) { return false; }
    if (f.sig && el.getAttribute("data-sig") !== f.sig) { return false; }
    if (f.q && t.indexOf(f.q.toLowerCase()) < 0) { return false; }
    return true;
  }
  function apply(f) {
    var shown = 0;
    cards.forEach(function (el) { el.hidden = !matches(el, f, text.get(el)); });
    rows.forEach(function (el) {
      var card = byId.get(el.getAttribute("data-ref"));
      var ok = card ? !card.hidden : matches(el, f, text.get(el));
      el.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.getElementById("shown").textContent = String(shown);
    var active = keys.filter(function (k) { return f[k]; }).map(function (k) { return k + "=" + f[k]; });
    document.body.setAttribute("data-filter", active.join("&"));
    document.body.setAttribute("data-shown", String(shown));
  }
  function load() {
    var f = read();
    if (!f) { f = current(); }
    keys.forEach(function (k) {
      var c = control(k);
      if (c.tagName === "SELECT" && f[k] && !Array.prototype.some.call(c.options, function (o) { return o.value === f[k]; })) {
        var o = document.createElement("option");
        o.value = f[k];
        o.textContent = f[k] + " (none)";
        c.appendChild(o);
      }
      c.value = f[k];
    });
    apply(f);
  }
  keys.forEach(function (k) {
    control(k).addEventListener("input", function () {
      var f = current();
      apply(f);
      var h = keys.filter(function (x) { return f[x]; }).map(function (x) {
        return x + "=" + encodeURIComponent(f[x]);
      }).join("&");
      history.replaceState(null, "", h ? "#" + h : location.pathname);
    });
  });
  document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); });
  window.addEventListener("hashchange", load);
  load();
  document.body.setAttribute("data-ready", "1");
})();
"""
