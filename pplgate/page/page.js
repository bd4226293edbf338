// pplgate's history page: draws and filters what pplgate/page/__init__.py decided; it judges nothing.
(function () {
  "use strict";
  var started = performance.now();
  var data = JSON.parse(document.getElementById("pplgate-data").textContent);
  // A point's texts are numbers in data.texts (each distinct text once); written out here.
  var TEXTS = ["cell", "runtime", "settings", "drift", "moved", "reason"];
  data.series.forEach(function (s) {
    [s.throughput, s.accuracy].forEach(function (points) {
      points.forEach(function (p) { TEXTS.forEach(function (k) { if (p[k] != null) p[k] = data.texts[p[k]]; }); });
    });
  });
  var COLOURS = {look: "#c62828", wait: "#9e9e9e", fine: "#2e7d32"};
  var DIMENSIONS = ["case", "device", "precision", "machine"];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "cls") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c != null) node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }
  function num(x, digits) {  // 10 significant digits, trailing zeros of the mantissa dropped: 1.22114697e+10
    if (x == null) return "-";
    var parts = Number(x).toPrecision(digits || 10).split("e");
    var mantissa = parts[0].indexOf(".") < 0 ? parts[0] : parts[0].replace(/0+$/, "").replace(/\.$/, "");
    return parts.length > 1 ? mantissa + "e" + parts[1] : mantissa;
  }
  function pct(x) { return x == null ? "-" : (x >= 0 ? "+" : "") + x.toFixed(4) + "%"; }
  function tagged(node, s) { DIMENSIONS.forEach(function (d) { node.dataset[d] = s[d] || ""; }); return node; }

  // Header and filters.
  var body = document.body;
  body.appendChild(el("header", {}, [
    el("h1", {text: "pplgate history"}),
    el("p", {cls: "meta", text: data.store + " · " + data.series.length + " series · made " + data.made}),
  ]));
  var filters = el("div", {id: "filters"});
  DIMENSIONS.forEach(function (d) {
    var values = Array.from(new Set(data.series.map(function (s) { return s[d] || ""; }))).sort();
    var select = el("select", {id: "filter-" + d, "aria-label": d}, [el("option", {value: "", text: "every " + d})]);
    values.forEach(function (v) { select.appendChild(el("option", {value: v, text: v || "(none)"})); });
    select.addEventListener("change", applyFilters);
    filters.appendChild(el("label", {}, [d + " ", select]));
  });
  body.appendChild(filters);

  // The morning view: a row a series, those needing a look first.
  var morning = el("section", {id: "morning"}, [el("h2", {text: "Last night"})]);
  var table = el("table", {cls: "morning"});
  table.appendChild(el("thead", {}, [el("tr", {}, [
    "", "series", "perplexity", "expected", "difference", "tolerance", "accuracy", "tokens/s", "throughput",
    "changed since the night before"].map(function (h) { return el("th", {text: h}); }))]));
  var tbody = el("tbody");
  data.morning.forEach(function (m) {
    var a = m.accuracy || {}, t = m.throughput || {};
    var row = tagged(el("tr", {cls: "look-" + m.look, "data-series": m.series}), m);
    [el("span", {cls: "dot", title: m.look, style: "background:" + COLOURS[m.look]}),
     m.series, num(a.perplexity), num(a.expected), pct(a.pct), a.tol_pct == null ? "-" : "±" + num(a.tol_pct, 3) + "%",
     a.verdict ? a.verdict + (a.moved ? ": moved " + a.moved : "") + (a.reason ? ": " + a.reason : "") : "-",
     t.tps == null ? "-" : Math.round(t.tps).toLocaleString("en") + " ± " + Math.round(t.spread).toLocaleString("en"),
     t.cell || "-", m.changed.length ? m.changed.join("; ") : "nothing"]
      .forEach(function (c, i) {
        var cell = el("td", {cls: ["look", "series", "num", "num", "num", "num", "verdict", "num", "verdict", "changed"][i]});
        cell.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
        row.appendChild(cell);
      });
    tbody.appendChild(row);
  });
  table.appendChild(tbody);
  morning.appendChild(table);
  body.appendChild(morning);

  // Regressions, newest first: each change once, between which nights, and what changed then.
  var seriesById = {};
  data.series.forEach(function (s) { seriesById[s.id] = s; });
  var regressions = el("section", {id: "regressions"}, [el("h2", {text: "Changes (" + data.regressions.length + ")"})]);
  var list = el("ol", {cls: "regressions"});
  data.regressions.forEach(function (r) {
    var between = r.before ? "between run " + r.before + " (" + r.before_date + ") and run " + r.run + " (" + r.date + ")"
                           : "at run " + r.run + " (" + r.date + ")";
    var item = tagged(el("li", {cls: "change-" + r.kind.replace(/ /g, "-"), "data-series": r.series}), seriesById[r.series] || {});
    item.appendChild(el("strong", {text: r.kind}));
    item.appendChild(document.createTextNode(" " + r.series + ", " + between + ": " + r.what +
      "; commits " + r.commits + (r.changed.length ? "; " + r.changed.join("; ") : "") +
      (r.nights > 1 ? "; held " + r.nights + " nights, to run " + r.last : "")));
    list.appendChild(item);
  });
  if (!data.regressions.length) list.appendChild(el("li", {cls: "none", text: "none: no slower or faster run, no perplexity moved"}));
  regressions.appendChild(list);
  body.appendChild(regressions);

  if (data.set_aside.length) {
    var aside = el("section", {id: "set-aside"}, [el("h2", {text: "Set aside (" + data.set_aside.length + ")"})]);
    var asideList = el("ul");
    data.set_aside.forEach(function (a) { asideList.appendChild(el("li", {text: a.where + ": " + a.reason + "; not judged and not a baseline"})); });
    aside.appendChild(asideList);
    body.appendChild(aside);
  }

  // Two aligned plots a series: tokens/s and perplexity, over the nights.
  var plots = el("section", {id: "series"}, [el("h2", {text: "Series"})]);
  body.appendChild(plots);
  var tip = el("div", {id: "tooltip", role: "tooltip"});
  body.appendChild(tip);
  var width = Math.max(480, Math.min(1100, window.innerWidth - 60));
  var charts = [];

  function sorted(points) {
    var xs = points.map(function (p, i) { return p.t == null ? null : p.t; });
    var timed = xs.every(function (x) { return x != null; });
    var order = points.map(function (_, i) { return i; });
    if (timed) order.sort(function (a, b) { return xs[a] - xs[b] || a - b; });
    return {timed: timed, points: order.map(function (i) { return points[i]; }),
            x: order.map(function (i, k) { return timed ? xs[i] : k; })};
  }
  function only(points, test, value) { return points.map(function (p) { return test(p) ? value(p) : null; }); }
  function marks(stroke, fill) { return {show: true, size: 7, stroke: stroke, fill: fill, width: 1.5}; }
  function noLine() { return null; }

  function showTip(u, points, describe) {
    var i = u.cursor.idx;
    if (i == null || u.cursor.left < 0) { tip.style.display = "none"; return; }
    var p = points[i];
    tip.textContent = describe(p);
    var box = u.over.getBoundingClientRect();
    tip.style.left = (window.scrollX + box.left + u.cursor.left + 14) + "px";
    tip.style.top = (window.scrollY + box.top + u.cursor.top + 14) + "px";
    tip.style.display = "block";
  }
  function throughputChart(s, target) {
    var d = sorted(s.throughput), pts = d.points;
    var calm = function (p) { return !p.load; };
    var opts = {
      title: "tokens/s (median round; band: the rounds' spread; open: under load, not judged)",
      width: width, height: 220, scales: {x: {time: d.timed}},
      cursor: {sync: {key: s.id}},  // one cursor, and one zoom, for a series' two plots
      legend: {live: false},
      series: [
        {label: d.timed ? "night" : "run"},
        {label: "tokens/s", stroke: "#1565c0", width: 1.5, spanGaps: true, points: marks("#1565c0", "#1565c0")},
        {label: "spread −", stroke: "transparent", points: {show: false}, spanGaps: true},
        {label: "spread +", stroke: "transparent", points: {show: false}, spanGaps: true},
        {label: "under load", stroke: "#6d6d6d", paths: noLine, points: marks("#6d6d6d", "#ffffff")},
        {label: "slower", stroke: "#c62828", paths: noLine, points: marks("#c62828", "#c62828")},
        {label: "faster", stroke: "#2e7d32", paths: noLine, points: marks("#2e7d32", "#2e7d32")},
      ],
      bands: [{series: [3, 2], fill: "rgba(21,101,192,0.12)"}],
      axes: [{}, {size: 80}],
      hooks: {
        setCursor: [function (u) { showTip(u, pts, function (p) {
          return "run " + p.run + " · " + p.date + " · commit " + (p.commit || "-") + " · machine " + s.machine +
            "\n" + Math.round(p.tps).toLocaleString("en") + " tokens/s ± " + Math.round(p.spread).toLocaleString("en") +
            " · " + p.cell + (p.load ? " (taken under load)" : "") + "\nruntime: " + p.runtime + "\nsettings: " + p.settings +
            (p.drift ? "\n" + p.drift : "");
        }); }],

      },
    };
    var values = [d.x,
      only(pts, calm, function (p) { return p.tps; }),
      only(pts, calm, function (p) { return p.tps - p.spread; }),
      only(pts, calm, function (p) { return p.tps + p.spread; }),
      only(pts, function (p) { return p.load; }, function (p) { return p.tps; }),
      only(pts, function (p) { return p.verdict === "slower"; }, function (p) { return p.tps; }),
      only(pts, function (p) { return p.verdict === "faster"; }, function (p) { return p.tps; })];
    return new uPlot(opts, values, target);
  }

  function accuracyChart(s, target) {
    var d = sorted(s.accuracy), pts = d.points;
    var has = function (p) { return p.pct != null; };
    var opts = {
      title: "perplexity of the whole split, change from the golden value in % (band: the tolerance)",
      width: width, height: 180, scales: {x: {time: d.timed}},
      cursor: {sync: {key: s.id}},
      legend: {live: false},
      series: [
        {label: d.timed ? "night" : "run"},
        {label: "perplexity", stroke: "#6a1b9a", width: 1.5, spanGaps: true, points: marks("#6a1b9a", "#6a1b9a")},
        {label: "tolerance −", stroke: "transparent", points: {show: false}, spanGaps: true},
        {label: "tolerance +", stroke: "transparent", points: {show: false}, spanGaps: true},
        {label: "moved", stroke: "#ef6c00", paths: noLine, points: marks("#ef6c00", "#ef6c00")},
      ],
      bands: [{series: [3, 2], fill: "rgba(46,125,50,0.12)"}],
      axes: [{}, {size: 80, values: function (u, ticks) { return ticks.map(function (v) { return Number(v.toPrecision(3)) + "%"; }); }}],
      hooks: {
        setCursor: [function (u) { showTip(u, pts, function (p) {
          return "run " + p.run + " · " + p.date + " · commit " + (p.commit || "-") + " · machine " + s.machine +
            "\nperplexity " + num(p.perplexity) + " (expected " + num(p.expected) + ", " + pct(p.pct) + ") · " + p.verdict +
            (p.reason ? ": " + p.reason : "") + (p.moved ? "\nmoved " + p.moved : "") + "\nruntime: " + p.runtime +
            "\nsettings: " + p.settings;
        }); }],

      },
    };
    var values = [d.x,
      only(pts, has, function (p) { return p.pct; }),
      only(pts, has, function (p) { return p.tol_pct == null ? null : -p.tol_pct; }),
      only(pts, has, function (p) { return p.tol_pct; }),
      only(pts, function (p) { return p.moved && has(p); }, function (p) { return p.pct; })];
    return new uPlot(opts, values, target);
  }

  data.series.forEach(function (s) {
    var block = tagged(el("div", {cls: "series", id: "series-" + s.id.replace(/[^A-Za-z0-9_-]+/g, "_"), "data-series": s.id}), s);
    var n = s.throughput.length, judged = s.throughput.filter(function (p) { return p.verdict !== "under load"; }).length;
    var last = n ? s.throughput[n - 1] : null;
    block.appendChild(el("h3", {text: s.id}));
    block.appendChild(el("p", {cls: "series-note", text: (n ? n + " timed runs, last: " + last.cell : "no timed run") +
      " · " + s.accuracy.length + " accuracy results" + (n && judged < data.baseline_min ? " · baseline: " + judged + " of " + data.baseline_min : "")}));
    plots.appendChild(block);
    if (n) charts.push(throughputChart(s, block));
    if (s.accuracy.some(function (p) { return p.pct != null; })) charts.push(accuracyChart(s, block));
  });
  document.addEventListener("mouseleave", function () { tip.style.display = "none"; });

  function applyFilters() {
    var chosen = {};
    DIMENSIONS.forEach(function (d) { chosen[d] = document.getElementById("filter-" + d).value; });
    document.querySelectorAll("[data-series]").forEach(function (node) {
      var keep = DIMENSIONS.every(function (d) { return !chosen[d] || node.dataset[d] === chosen[d]; });
      node.style.display = keep ? "" : "none";
    });
  }

  window.pplgate = {charts: charts};  // the uPlot instances, for a reader's console and the selftests
  body.dataset.rendered = String(Math.round(performance.now() - started));
  body.dataset.charts = String(charts.length);
  // Drawn: the first frame after every plot was made, counted from the start of the page's navigation.
  requestAnimationFrame(function () { body.dataset.drawn = String(Math.round(performance.now())); });
})();
