// The CCI dashboard: renders what /api/stream pushes (see streams/web/dashboard/view.py `live`).
// Vanilla JS and hand-written SVG, so the page works offline with nothing but this worker.
(function () {
  "use strict";

  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf"];
  var TITLES = {
    all: "All customers",
    plan: "Plan",
    product: "Product",
    region: "Region",
    tenure: "Tenure (customer age)",
    channel: "Channel (tickets only)"
  };
  var TENURE_NAMES = { "new": "new", "1-2m": "1–2 months", "3-11m": "3–11 months",
    "12m+": "12+ months" };
  var SVG = "http://www.w3.org/2000/svg";
  var BUSY_RETRY_S = 10;  // after a refused live stream (streams/web/dashboard/web.py BUSY_RETRY_SECONDS)

  var state = {
    month: "",        // "" follows the newest month in the data
    mode: "cci",      // chart values: "cci" or "pct" (contact rate, % of customers)
    data: null,       // the last push: {cci, history, alerts}
    previous: {},     // "dimension|segment|field" → text shown before, to flash changes
    shownMonth: null, // the month those texts belong to
    pushes: 0,
    source: null,
    retry: null       // timer of the next try after a refused stream
  };
  window.cciDashboard = state;  // for the browser test and the curious

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") node.textContent = attrs[name];
      else node.setAttribute(name, attrs[name]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") node.textContent = attrs[name];
      else node.setAttribute(name, attrs[name]);
    });
    return node;
  }

  function formatCci(value) { return value === null || value === undefined ? "—" : value.toFixed(3); }
  function formatPct(value) { return value === null || value === undefined ? "—" : value.toFixed(1) + "%"; }
  function formatCount(value) { return value.toLocaleString("en-US"); }
  function segmentName(dimension, segment) {
    return dimension === "tenure" && TENURE_NAMES[segment] ? TENURE_NAMES[segment] : segment;
  }
  function dimensionTitle(dimension) {
    return TITLES[dimension] || dimension.charAt(0).toUpperCase() + dimension.slice(1);
  }
  function chartValue(point) { return state.mode === "cci" ? point.cci : point.contact_rate_pct; }
  function formatChartValue(value) { return state.mode === "cci" ? formatCci(value) : formatPct(value); }

  // --- the contact-rate band (CCI_TARGET_RANGE_PCT) ---------------------------------------------

  var BAND_MARKS = { below: "▼ below", within: "● within", above: "▲ above" };

  function targetRange() { return state.data && state.data.cci.target_range; }

  // The band as text and colour (never colour alone), with the article's guidance on hover.
  function bandCell(band) {
    var range = targetRange();
    if (!band || !BAND_MARKS[band]) return el("td", { "data-field": "band", text: "—" });
    var title = range ? range.guidance[band] : band;
    return el("td", { "data-field": "band" }, [
      el("span", { "class": "band band-" + band, "data-band": band, title: title,
        text: BAND_MARKS[band] })
    ]);
  }

  // The target range as a shaded strip on a trend chart that shows % of customers.
  function drawTargetRange(chart, y, left, right) {
    var range = targetRange();
    if (state.mode !== "pct" || !range) return;
    var top = y(range.high), bottom = y(range.low);
    var strip = svg("rect", { "class": "target-range", x: left, width: right - left, y: top,
      height: Math.max(0, bottom - top) });
    strip.appendChild(svg("title", { text: "target range " + range.low_pct + "–" + range.high_pct +
      "% (CCI_TARGET_RANGE_PCT): " + range.guidance.within }));
    chart.appendChild(strip);
    chart.appendChild(svg("text", { "class": "target-range-label", x: right - 4, y: top - 3,
      "text-anchor": "end", text: "target " + range.low_pct + "–" + range.high_pct + "%" }));
  }

  // --- the live stream --------------------------------------------------------------------------

  function connect() {
    if (state.source) state.source.close();
    var url = "/api/stream" + (state.month ? "?month=" + encodeURIComponent(state.month) : "");
    var source = new EventSource(url);
    // The whole month first (and after every reconnect), then only what changed.
    source.addEventListener("cci", function (event) {
      pushed(JSON.parse(event.data));
    });
    source.addEventListener("cci-changes", function (event) {
      if (state.data) pushed(applyChanges(state.data, JSON.parse(event.data)));
    });
    source.onopen = function () { setStatus("live", "live"); };
    // EventSource reconnects by itself (the server asks for a 2 s retry), e.g. after a restart.
    // A refused stream (503: the worker's CCI_LIVE_STREAMS are taken; 401: logged out) ends it:
    // say so, and try again later.
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        setStatus("reconnecting", "live stream refused (worker busy?) · retrying in " +
          BUSY_RETRY_S + " s");
        // Logged out (CCI_WEB_TOKEN changed, or the session ended): to the login page.
        fetch("/api/alerts").then(function (answer) {
          if (answer.status === 401) {
            location.assign("/login?next=" + encodeURIComponent(location.pathname + location.search));
          }
        }, function () {});
        clearTimeout(state.retry);
        state.retry = setTimeout(function () { if (state.source === source) connect(); },
          BUSY_RETRY_S * 1000);
      } else {
        setStatus("reconnecting", "reconnecting…");
      }
    };
    state.source = source;
  }

  function pushed(data) {
    state.data = data;
    state.pushes += 1;
    setStatus("live", "live · updated " + new Date().toLocaleTimeString("en-GB"));
    render();
    planSegments();
    schedulePlan(PLAN_AFTER_PUSH_MS);
  }

  // [path, value] pairs (streams/web/dashboard/view.py live_changes): set value at path, in order.
  function applyChanges(data, changes) {
    changes.forEach(function (change) {
      var path = change[0], value = change[1];
      if (path.length === 0) { data = value; return; }
      var parent = data;
      for (var i = 0; i < path.length - 1; i++) parent = parent[path[i]];
      parent[path[path.length - 1]] = value;
    });
    return data;
  }

  function setStatus(kind, text) {
    var status = $("status");
    status.className = "status " + kind;
    status.textContent = text;
  }

  // --- rendering --------------------------------------------------------------------------------

  function firingBySegment(alerts, month) {
    var firing = {};
    alerts.forEach(function (alert) {
      if (alert.month !== month) return;
      var key = alert.dimension + "|" + alert.segment;
      (firing[key] = firing[key] || []).push(alert);
    });
    return firing;
  }

  function render() {
    var data = state.data;
    var cci = data.cci;
    if (cci.month !== state.shownMonth) state.previous = {};  // another month: nothing "changed"
    state.shownMonth = cci.month;
    renderMonths(cci);
    var firing = firingBySegment(data.alerts.alerts, cci.month);
    renderAlerts(data.alerts.alerts);
    $("empty").hidden = cci.months.length > 0;
    $("month-note").textContent = cci.month
      ? "Showing " + cci.month + (state.month ? " (chosen)" : " — the newest month in the data, " +
        "followed live") + ". Trends cover the " + data.history.months.length +
        " retained month(s) with figures."
      : "";
    var container = $("dimensions");
    var cards = Object.keys(cci.dimensions).map(function (dimension) {
      return renderDimension(dimension, cci.dimensions[dimension],
        data.history.dimensions[dimension] || {}, data.history.months, cci.month, firing);
    });
    container.replaceChildren.apply(container, cards);
  }

  function renderMonths(cci) {
    var select = $("month");
    var wanted = ["" + (cci.newest_month ? "newest (" + cci.newest_month + ")" : "newest")]
      .concat(cci.months.slice().reverse());
    var have = Array.prototype.map.call(select.options, function (o) { return o.textContent; });
    if (have.join() === wanted.join()) return;
    var options = wanted.map(function (text, i) {
      return el("option", { value: i === 0 ? "" : text, text: text });
    });
    select.replaceChildren.apply(select, options);
    select.value = state.month;
  }

  function renderAlerts(alerts) {
    $("alerts").hidden = alerts.length === 0;
    var count = $("alert-count");
    count.hidden = alerts.length === 0;
    count.textContent = alerts.length + " firing";
    var items = alerts.map(function (a) {
      var text = a.month + " · " + dimensionTitle(a.dimension) + " " +
        segmentName(a.dimension, a.segment) + ": CCI " + formatCci(a.cci) + " " + a.condition +
        " " + formatCci(a.threshold) + " (" + a.rule + "; " + formatCount(a.tickets) +
        " tickets, " + formatCount(a.active_users) + " active users)";
      return el("li", {
        "data-alert": a.rule + "|" + a.month + "|" + a.dimension + "|" + a.segment, text: text
      });
    });
    var list = $("alert-list");
    list.replaceChildren.apply(list, items);
  }

  function renderDimension(dimension, rows, history, months, month, firing) {
    var segments = Object.keys(history);
    rows.forEach(function (row) { if (segments.indexOf(row.segment) < 0) segments.push(row.segment); });
    var colour = {};
    segments.forEach(function (segment, i) { colour[segment] = PALETTE[i % PALETTE.length]; });
    var anyFiring = false;

    var body = rows.map(function (row) {
      var key = dimension + "|" + row.segment;
      var alerts = firing[key] || [];
      anyFiring = anyFiring || alerts.length > 0;
      var name = el("td", { "data-field": "segment" }, [
        el("span", { "class": "swatch", style: "background:" + colour[row.segment] }),
        document.createTextNode(segmentName(dimension, row.segment))
      ].concat(alerts.map(function (a) {
        return el("span", { "class": "badge", "data-alert": a.rule,
          title: a.rule + ": CCI " + a.condition + " " + a.threshold, text: "▲ " + a.rule });
      })));
      var cells = [
        ["cci", formatCci(row.cci)],
        ["contact_rate_pct", formatPct(row.contact_rate_pct)],
        ["tickets", formatCount(row.tickets)],
        ["active_users", formatCount(row.active_users)]
      ].map(function (pair) {
        var cell = el("td", { "data-field": pair[0], text: pair[1] });
        var seen = state.previous[key + "|" + pair[0]];
        if (seen !== undefined && seen !== pair[1]) {
          cell.className = "flash";
          cell.addEventListener("animationend", function () { cell.className = ""; });
        }
        state.previous[key + "|" + pair[0]] = pair[1];
        return cell;
      });
      cells.splice(2, 0, bandCell(row.band));
      return el("tr", {
        "data-dimension": dimension, "data-segment": row.segment,
        "class": alerts.length ? "firing" : ""
      }, [name].concat(cells));
    });

    var head = el("tr", {}, ["segment", "CCI", "% of customers", "band", "tickets", "active users"]
      .map(function (text) { return el("th", { text: text }); }));
    var table = el("table", {}, [el("thead", {}, [head]), el("tbody", {}, body)]);
    var title = el("h2", {}, [
      el("span", { text: dimensionTitle(dimension) }),
      el("span", { "class": "sub", text: month })
    ]);
    var card = el("article", {
      "class": "card" + (anyFiring ? " has-firing" : ""), "data-dimension": dimension
    }, [title, table]);
    card.appendChild(renderChart(dimension, segments, history, months, month, colour, firing));
    return card;
  }

  // --- trend chart (hand-written SVG) -----------------------------------------------------------

  // A round step (1, 2 or 5 × 10^k) giving at most four intervals up to the largest value.
  function niceScale(value) {
    if (!(value > 0)) value = state.mode === "cci" ? 0.1 : 10;
    var raw = value / 4;
    var power = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * power; })
      .filter(function (s) { return s >= raw; })[0];
    var decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return { step: step, max: step * Math.ceil(value / step - 1e-9), decimals: decimals };
  }

  function renderChart(dimension, segments, history, months, month, colour, firing) {
    var width = 560, height = 210, left = 52, right = 14, top = 12, bottom = 30;
    var chart = svg("svg", {
      "class": "chart", viewBox: "0 0 " + width + " " + height, "data-dimension": dimension,
      role: "img", "aria-label": dimensionTitle(dimension) + " trend"
    });
    var maxValue = 0;
    segments.forEach(function (segment) {
      (history[segment] || []).forEach(function (p) {
        var v = chartValue(p);
        if (v !== null && v > maxValue) maxValue = v;
      });
    });
    var range = targetRange();
    if (state.mode === "pct" && range && range.high_pct > maxValue) maxValue = range.high_pct;
    var scale = niceScale(maxValue);
    var yMax = scale.max;
    var plotW = width - left - right, plotH = height - top - bottom;
    function x(i) { return left + (months.length > 1 ? (i * plotW) / (months.length - 1) : plotW / 2); }
    function y(v) { return top + plotH - (v / yMax) * plotH; }

    for (var t = 0; t * scale.step <= yMax + 1e-12; t++) {
      var value = t * scale.step;
      chart.appendChild(svg("line", { "class": t ? "grid" : "axis", x1: left, x2: width - right,
        y1: y(value), y2: y(value) }));
      chart.appendChild(svg("text", { x: left - 6, y: y(value) + 3, "text-anchor": "end",
        text: value.toFixed(scale.decimals) + (state.mode === "cci" ? "" : "%") }));
    }
    drawTargetRange(chart, y, left, width - right);
    var labelEvery = Math.max(1, Math.ceil(months.length / 7));
    months.forEach(function (m, i) {
      if (m === month) {
        chart.appendChild(svg("line", { "class": "selected-month", x1: x(i), x2: x(i), y1: top,
          y2: top + plotH }));
      }
      if (i % labelEvery === 0 || i === months.length - 1) {
        // The last label aligns inwards, so the right edge does not cut it.
        var anchor = months.length > 1 && i === months.length - 1 ? "end" : "middle";
        chart.appendChild(svg("text", { x: x(i), y: height - 10, "text-anchor": anchor, text: m }));
      }
    });

    segments.forEach(function (segment) {
      var byMonth = {};
      (history[segment] || []).forEach(function (p) { byMonth[p.month] = p; });
      // A month without a figure (or with no active users) breaks the line rather than faking 0.
      var runs = [[]];
      months.forEach(function (m, i) {
        var p = byMonth[m];
        var v = p ? chartValue(p) : null;
        if (v === null) { if (runs[runs.length - 1].length) runs.push([]); return; }
        runs[runs.length - 1].push(x(i).toFixed(1) + "," + y(v).toFixed(1));
      });
      runs.forEach(function (run) {
        if (run.length > 1) {
          chart.appendChild(svg("polyline", { points: run.join(" "), stroke: colour[segment],
            "data-segment": segment }));
        }
      });
      months.forEach(function (m, i) {
        var p = byMonth[m];
        var v = p ? chartValue(p) : null;
        if (v === null) return;
        var isFiring = m === month && (firing[dimension + "|" + segment] || []).length > 0;
        var dot = svg("circle", { cx: x(i), cy: y(v), r: 3.5, fill: colour[segment],
          "class": isFiring ? "firing" : "", "data-segment": segment, "data-month": m });
        dot.addEventListener("mouseenter", function (event) { showTooltip(event, dimension, segment, p); });
        dot.addEventListener("mouseleave", hideTooltip);
        chart.appendChild(dot);
      });
    });
    return chart;
  }

  function showTooltip(event, dimension, segment, point) {
    var tip = $("tooltip");
    tip.replaceChildren(
      el("strong", { text: segmentName(dimension, segment) + " · " + point.month }),
      el("div", { text: "CCI " + formatCci(point.cci) + " · " + formatPct(point.contact_rate_pct) +
        " of customers" + (point.band ? " · " + point.band + " the target range" : "") }),
      el("div", { text: formatCount(point.tickets) + " tickets · " + formatCount(point.active_users) +
        " active users" })
    );
    tip.hidden = false;
    tip.style.left = event.clientX + 12 + "px";
    tip.style.top = event.clientY + 12 + "px";
  }

  function hideTooltip() { $("tooltip").hidden = true; }

  // --- the Plan panel: GET /api/forecast (docs/forecast.md) ----------------------------------

  // A push means new figures; the store (which the plan reads) has them within the sink's flush
  // interval, so the plan asks a little later, and again now and then while the page is open.
  var PLAN_AFTER_PUSH_MS = 1500;
  var PLAN_INPUT_MS = 300;
  var PLAN_REFRESH_MS = 10000;
  var PLAN_ROWS = [
    ["customers", "customers", formatCount],
    ["cci", "CCI", function (v) { return formatNumber(v, 4); }],
    ["expected_tickets", "expected tickets / month", function (v) { return formatNumber(v, 2); }],
    ["tickets_per_agent", "tickets per agent / month", function (v) { return formatNumber(v, 2); }],
    ["agents_needed", "agents needed", function (v) { return v.toFixed(2); }],
    ["headcount", "headcount", String],
    ["target_cci", "target CCI", function (v) { return formatNumber(v, 4); }],
    ["headcount_at_target", "headcount at target CCI", String],
    ["agents_not_needed", "agents not needed", String],
    ["support_hours_saved", "support hours saved / month", function (v) { return formatNumber(v, 2); }]
  ];
  state.plan = { timer: null, busy: false, again: false, fetches: 0, query: null, records: null };

  function formatNumber(value, decimals) { return String(Number(value.toFixed(decimals))); }

  function planQuery() {
    var params = new URLSearchParams();
    params.set("customers", $("plan-customers").value.trim());
    var growth = $("plan-growth").value.trim();
    if (growth) { params.set("growth", growth); params.set("periods", $("plan-periods").value); }
    params.set("tickets_per_agent", $("plan-capacity").value.trim());
    var segment = $("plan-segment").value;
    if (segment && segment !== "all|all") {
      var cut = segment.indexOf("|");
      params.set("dimension", segment.slice(0, cut));
      params.set("segment", segment.slice(cut + 1));
    }
    var target = $("plan-target").value.trim();
    if (target) params.set("target_cci", target);
    return params.toString();
  }

  function schedulePlan(delay) {
    clearTimeout(state.plan.timer);
    state.plan.timer = setTimeout(fetchPlan, delay);
  }

  function fetchPlan() {
    if (state.plan.busy) { state.plan.again = true; return; }
    state.plan.busy = true;
    var query = planQuery();
    fetch("/api/forecast?" + query).then(function (response) {
      var source = response.headers.get("X-CCI-Forecast-Source");
      return response.json().then(function (body) {
        return { ok: response.ok, body: body, source: source };
      });
    }).then(function (answer) {
      state.plan.fetches += 1;
      state.plan.query = query;
      if (answer.ok) renderPlan(answer.body, decodeURIComponent(answer.source || ""));
      else showPlanError(answer.body.error || "the plan failed");
    }).catch(function (error) {
      showPlanError("no answer from the worker: " + error);
    }).then(function () {
      state.plan.busy = false;
      if (state.plan.again) { state.plan.again = false; schedulePlan(0); }
    });
  }

  function showPlanError(text) {
    state.plan.records = null;
    $("plan-table").replaceChildren();  // no table of other inputs under the error
    $("plan-source").textContent = "";
    var error = $("plan-error");
    error.hidden = false;
    error.textContent = text;
  }

  function renderPlan(records, source) {
    state.plan.records = records;
    $("plan-error").hidden = true;
    $("plan-source").textContent = source ? "Headcount plan: " + source : "";
    var head = el("tr", {}, [el("th", { text: "" })].concat(records.map(function (r) {
      return el("th", { text: r.period });
    })));
    var rows = PLAN_ROWS.filter(function (row) { return row[0] in records[0]; }).map(function (row) {
      return el("tr", { "data-row": row[0] }, [el("th", { text: row[1] })].concat(records.map(function (r) {
        return el("td", { text: row[2](r[row[0]]) });
      })));
    });
    var table = $("plan-table");
    table.replaceChildren(el("thead", {}, [head]), el("tbody", {}, rows));
  }

  // The segments the figures hold, as choices for the plan's measured CCI.
  function planSegments() {
    var select = $("plan-segment");
    var wanted = ["all|all"];
    var dimensions = state.data.cci.dimensions;
    Object.keys(dimensions).forEach(function (dimension) {
      if (dimension === "all") return;
      dimensions[dimension].forEach(function (row) { wanted.push(dimension + "|" + row.segment); });
    });
    var have = Array.prototype.map.call(select.options, function (o) { return o.value; });
    if (have.join("\n") === wanted.join("\n")) return;
    var chosen = select.value || "all|all";
    select.replaceChildren.apply(select, wanted.map(function (value) {
      var cut = value.indexOf("|");
      var text = value === "all|all" ? "all customers"
        : dimensionTitle(value.slice(0, cut)) + ": " + segmentName(value.slice(0, cut), value.slice(cut + 1));
      return el("option", { value: value, text: text });
    }));
    select.value = wanted.indexOf(chosen) >= 0 ? chosen : "all|all";
  }

  $("plan-form").addEventListener("input", function () { schedulePlan(PLAN_INPUT_MS); });
  $("plan-form").addEventListener("submit", function (event) { event.preventDefault(); fetchPlan(); });
  setInterval(function () { schedulePlan(0); }, PLAN_REFRESH_MS);

  // --- controls ---------------------------------------------------------------------------------

  $("month").addEventListener("change", function (event) {
    state.month = event.target.value;
    connect();
  });

  function setMode(mode) {
    state.mode = mode;
    $("mode-cci").className = mode === "cci" ? "active" : "";
    $("mode-pct").className = mode === "pct" ? "active" : "";
    if (state.data) render();
  }
  $("mode-cci").addEventListener("click", function () { setMode("cci"); });
  $("mode-pct").addEventListener("click", function () { setMode("pct"); });

  connect();
  schedulePlan(0);
})();
