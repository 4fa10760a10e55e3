// han-gateway household page: vanilla JS, no build step, no external requests.
// Live values come from /api/events (server-sent events); history from /api/history,
// drawn with the vendored uPlot (static/VENDORED.md); changes need /api/login's CSRF token.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const fmtW = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const fmtKwh = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const fmtKwh3 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
  const state = { csrf: null, passwordSet: false, authenticated: false, period: "day", date: null,
                  compare: null, chart: null, history: null, loadsKey: "" };

  function money(v, currency) {
    if (v === null || v === undefined) return "–";
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: currency || "EUR" }).format(v);
    } catch (e) {
      return v.toFixed(2) + " " + (currency || "");
    }
  }
  function num(v, f) { return v === null || v === undefined ? "–" : f.format(v); }
  function text(el, s) { if (el.textContent !== s) el.textContent = s; }
  function duration(s) {
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + " h " : "") + (h || m ? m + " min " : "") + (h ? "" : sec + " s");
  }
  function localTime(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  // ------------------------------------------------------------------ live
  function renderLive(doc) {
    text($("gateway-id"), doc.gateway ? "· " + doc.gateway : "");
    text($("power-import"), num(doc.power_import_w, fmtW));
    text($("power-export"), num(doc.power_export_w, fmtW));
    text($("meter-id"), doc.meter || "–");
    const mt = $("meter-time");
    text(mt, localTime(doc.received || doc.meter_time));
    if (doc.received) mt.setAttribute("datetime", doc.received);
    const t = doc.today || {};
    text($("today-kwh"), num(t.import_kwh, fmtKwh));
    text($("today-export"), num(t.export_kwh, fmtKwh));
    text($("today-cost"), t.cost === null || t.cost === undefined ? "cost unknown" : money(t.cost, t.currency));
    if (doc.price) {
      text($("price"), money(doc.price.price_per_kwh, doc.price.currency));
      text($("price-detail"), (doc.price.tier ? "tier " + doc.price.tier + " · " : "") +
        "until " + localTime(doc.price.end) + (doc.price.source ? " · " + doc.price.source : ""));
    } else {
      text($("price"), "–");
      text($("price-detail"), "no price signal");
    }
    renderDr(doc.dr_events || []);
    renderLoads(doc.loads || []);
    const conn = $("conn");
    conn.classList.toggle("bad", !doc.online);
    text(conn, doc.online ? "live" : "meter offline");
  }

  function renderDr(events) {
    const box = $("dr");
    box.replaceChildren();
    for (const ev of events) {
      const div = document.createElement("div");
      div.className = "event";
      const strong = document.createElement("strong");
      strong.textContent = ev.active ? "Please use less now" : "Request to use less coming";
      const span = document.createElement("span");
      span.textContent = (ev.active ? " · ends in " + duration(ev.ends_in_s) : " · starts in " + duration(ev.starts_in_s)) +
        (ev.target_power_w !== null ? " · target " + fmtW.format(ev.target_power_w) + " W" : "") +
        (ev.issuer ? " · from " + ev.issuer : "");
      div.append(strong, span);
      box.append(div);
    }
  }

  function renderLoads(loads) {
    const list = $("load-list");
    const key = loads.map((l) => l.name).join("|");
    if (key !== state.loadsKey) {
      state.loadsKey = key;
      list.replaceChildren();
      for (const l of loads) list.append(loadItem(l));
      if (!loads.length) {
        const li = document.createElement("li");
        li.className = "muted";
        li.textContent = "No loads are configured.";
        list.append(li);
      }
    }
    for (const l of loads) {
      const li = list.querySelector('[data-load="' + CSS.escape(l.name) + '"]');
      if (!li) continue;
      const st = l.state;
      const stEl = li.querySelector(".state");
      const label = !st ? "unknown" : st.limit_w !== null ? "limited to " + fmtW.format(st.limit_w) + " W" : st.on ? "on" : "off";
      text(stEl, label);
      stEl.className = "state " + (st && st.on ? "on" : "off");
      li.dataset.state = !st ? "unknown" : st.on ? "on" : "off";
      let why = "";
      if (st) {
        why = st.override ? (st.reason || "manual override") : (st.rule ? "rule " + st.rule : "") +
          (st.reason ? (st.rule ? ": " : "") + st.reason : "");
        if (st.until) why += " · until " + localTime(st.until);
        if (st.power_w !== null) why += " · " + fmtW.format(st.power_w) + " W";
      }
      text(li.querySelector(".why"), why || (l.description || ""));
    }
  }

  function loadItem(l) {
    const li = document.createElement("li");
    li.className = "load";
    li.dataset.load = l.name;
    const head = document.createElement("div");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = l.name + " ";
    const st = document.createElement("span");
    st.className = "state";
    head.append(name, st);
    const why = document.createElement("p");
    why.className = "why";
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    buttons.setAttribute("role", "group");
    buttons.setAttribute("aria-label", "Switch " + l.name);
    for (const [mode, label] of [["on", "On"], ["off", "Off"], ["auto", "Auto (rules)"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.dataset.mode = mode;
      b.setAttribute("aria-label", label + ": " + l.name);
      b.addEventListener("click", () => override(l.name, mode));
      buttons.append(b);
    }
    li.append(head, why, buttons);
    return li;
  }

  async function override(load, mode) {
    const msg = $("override-msg");
    msg.classList.remove("bad");
    text(msg, "asking the gateway…");
    const dur = $("override-duration").value;
    const body = { mode: mode, duration_s: mode === "auto" || dur === "" ? null : Number(dur) };
    const headers = { "Content-Type": "application/json" };
    if (state.csrf) headers["X-CSRF-Token"] = state.csrf;
    let res, doc;
    try {
      res = await fetch("/api/loads/" + encodeURIComponent(load) + "/override",
                        { method: "POST", headers: headers, body: JSON.stringify(body), credentials: "same-origin" });
      doc = await res.json();
    } catch (e) {
      msg.classList.add("bad");
      text(msg, load + ": the gateway did not answer");
      return;
    }
    msg.dataset.status = String(res.status);
    if (res.ok) {
      text(msg, load + ": " + mode + " — done");
    } else {
      msg.classList.add("bad");
      text(msg, load + ": refused — " + (doc.reason || doc.error || res.statusText));
      if (res.status === 401) refreshSession();
    }
  }

  // --------------------------------------------------------------- session
  async function refreshSession() {
    try {
      const doc = await (await fetch("/api/session", { credentials: "same-origin" })).json();
      state.passwordSet = doc.password_set;
      state.authenticated = doc.authenticated;
      state.csrf = doc.csrf_token;
    } catch (e) { /* shown by the live status */ }
    renderSession();
  }
  function renderSession() {
    $("login").hidden = !state.passwordSet || state.authenticated;
    $("logout").hidden = !state.authenticated;
    text($("login-state"), !state.passwordSet ? "Switching loads is disabled: no password is set on the gateway."
      : state.authenticated ? "Logged in: you can switch loads." : "Log in to switch loads.");
  }
  async function login(ev) {
    ev.preventDefault();
    const pw = $("password");
    const res = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify({ password: pw.value }), credentials: "same-origin" });
    const doc = await res.json();
    pw.value = "";
    if (res.ok) {
      state.authenticated = true;
      state.csrf = doc.csrf_token;
      renderSession();
    } else {
      text($("login-state"), "Login failed: " + (doc.error || res.statusText));
    }
  }

  async function logout() {
    try {
      await fetch("/api/logout", { method: "POST", credentials: "same-origin" });
    } catch (e) { /* the session ends on the server anyway */ }
    state.authenticated = false;
    state.csrf = null;
    renderSession();
  }

  // --------------------------------------------------------------- history
  const PREVIOUS_LABEL = { day: "a week earlier", week: "the week before", month: "the month before", year: "the year before" };
  const DEFAULT_COMPARE = { day: "previous", week: "previous", month: "year", year: "year" };
  function compareLabel(period, compare) { return compare === "year" ? "a year earlier" : PREVIOUS_LABEL[period]; }

  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function isoDate(d) {
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
  }
  function shift(dateStr, period, dir) {
    const d = new Date(dateStr + "T12:00:00");
    if (period === "day") d.setDate(d.getDate() + dir);
    else if (period === "week") d.setDate(d.getDate() + 7 * dir);
    else if (period === "month") { d.setDate(1); d.setMonth(d.getMonth() + dir); }
    else d.setFullYear(d.getFullYear() + dir);
    return isoDate(d);
  }
  function historyQuery() {
    return "period=" + state.period + "&date=" + state.date + "&compare=" + state.compare;
  }
  function renderControls() {
    for (const b of $("period").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.dataset.period === state.period));
    const sel = $("compare");
    sel.replaceChildren();
    const choices = state.period === "year" ? ["year"] : ["previous", "year"];
    for (const c of choices) {
      const o = document.createElement("option");
      o.value = c;
      o.textContent = compareLabel(state.period, c);
      o.selected = c === state.compare;
      sel.append(o);
    }
    $("hist-date").value = state.date;
    $("csv").href = "/api/history.csv?" + historyQuery();
  }

  async function loadHistory() {
    if (state.period === "year") state.compare = "year";
    renderControls();
    const res = await fetch("/api/history?" + historyQuery());
    const doc = await res.json();
    if (!res.ok) { text($("hist-summary"), doc.error || "no history"); return; }
    state.history = doc;
    drawChart(doc);
  }

  function peakColours(doc, i0, i1, peak, normal) {
    const out = [];
    for (let i = i0; i <= i1; i++) out.push(doc.current.peak && doc.current.peak.index === i ? peak : normal);
    return out;
  }

  function drawChart(doc) {
    const el = $("chart");
    const n = doc.labels.length;
    const xs = Array.from({ length: n }, (_, i) => i);
    const cur = doc.current.import_kwh, prev = doc.previous.import_kwh;
    const peakCur = xs.map((i) => (doc.current.peak && doc.current.peak.index === i ? cur[i] : null));
    const prevName = compareLabel(doc.period, doc.compare);
    const width = Math.max(280, el.clientWidth || 600);
    const bars = uPlot.paths.bars;
    const opts = {
      width: width, height: Math.max(260, Math.min(420, Math.round(width * 0.45))),
      title: doc.period[0].toUpperCase() + doc.period.slice(1) + " from " + doc.current.start.slice(0, 10),
      scales: { x: { time: false, range: [-0.6, n - 0.4] },
                y: { range: (u, min, max) => [0, max > 0 ? max * 1.08 : 1] } },
      axes: [
        { stroke: css("--fg"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") },
          values: (u, splits) => splits.map((v) => (Number.isInteger(v) && v >= 0 && v < n ? doc.labels[v] : "")) },
        { stroke: css("--fg"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") },
          label: "kWh", values: (u, splits) => splits.map((v) => fmtKwh3.format(v)) },
      ],
      series: [
        { label: doc.period, value: (u, v) => (v === null || v === undefined ? "–" : doc.labels[v]) },
        { label: "This " + doc.period, stroke: css("--import"), fill: css("--import") + "cc", width: 1,
          // the peak interval's bar in the warning colour (capacity tariffs bill the peak)
          paths: bars({ size: [0.42, 60], align: -1, disp: {
            fill: { unit: 3, values: (u, sidx, i0, i1) => peakColours(doc, i0, i1, css("--warn"), css("--import") + "cc") },
            stroke: { unit: 3, values: (u, sidx, i0, i1) => peakColours(doc, i0, i1, css("--warn"), css("--import")) },
          } }), points: { show: false },
          value: (u, v) => (v === null ? "–" : fmtKwh3.format(v) + " kWh") },
        { label: prevName, stroke: css("--prev"), fill: css("--prev") + "99", width: 1,
          paths: bars({ size: [0.42, 60], align: 1 }), points: { show: false },
          value: (u, v) => (v === null ? "–" : fmtKwh3.format(v) + " kWh") },
        { label: "Peak", stroke: css("--warn"), width: 0, paths: () => null,
          points: { show: true, size: 14, width: 3, stroke: css("--warn"), fill: css("--card") },
          value: (u, v) => (v === null ? "–" : fmtKwh3.format(v) + " kWh") },
      ],
    };
    if (state.chart) state.chart.destroy();
    el.replaceChildren();
    state.chart = new uPlot(opts, [xs, cur, prev, peakCur], el);
    el.dataset.points = String(n);
    el.dataset.current = String(cur.filter((v) => v !== null).length);
    el.dataset.previous = String(prev.filter((v) => v !== null).length);
    el.dataset.peak = doc.current.peak ? String(doc.current.peak.index) : "";
    el.setAttribute("aria-label", "Energy per " + (doc.period === "day" ? "hour" : doc.period === "year" ? "month" : "day") +
      ", this " + doc.period + " beside " + prevName);
    let s = "This " + doc.period + ": " + fmtKwh.format(doc.current.total_import_kwh) + " kWh, " + prevName + ": " +
      fmtKwh.format(doc.previous.total_import_kwh) + " kWh.";
    if (doc.current.peak) s += " Highest " + doc.labels[doc.current.peak.index] + " (" + fmtKwh3.format(doc.current.peak.value) + " kWh).";
    if (doc.peak_demand) {
      const at = new Date(doc.peak_demand.start);
      s += " Peak quarter-hour demand " + fmtW.format(doc.peak_demand.power_w) + " W, " +
        (doc.period === "day" ? at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
                              : at.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" })) + ".";
    }
    text($("hist-summary"), s);
    renderTable(doc, prevName);
  }

  function renderTable(doc, prevName) {
    const t = $("hist-table");
    const head = document.createElement("tr");
    for (const h of ["Interval", "This " + doc.period + " (kWh)", prevName + " (kWh)"]) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = h;
      head.append(th);
    }
    t.tHead.replaceChildren(head);
    const body = t.tBodies[0];
    body.replaceChildren();
    doc.labels.forEach((label, i) => {
      const tr = document.createElement("tr");
      for (const v of [label, num(doc.current.import_kwh[i], fmtKwh3), num(doc.previous.import_kwh[i], fmtKwh3)]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.append(td);
      }
      body.append(tr);
    });
  }

  // ---------------------------------------------------------------- health
  async function loadHealth() {
    let doc;
    try { doc = await (await fetch("/api/health")).json(); } catch (e) { return; }
    const up = duration(doc.uptime_s);
    text($("health-summary"), (doc.ok ? "All parts running" : "Some parts are not running") +
      " · han-gateway " + doc.version + " · up " + up);
    const mt = $("meters-table").tBodies[0];
    mt.replaceChildren();
    for (const m of doc.meters) {
      mt.append(row([m.id, m.online ? "online" : "offline" + (m.detail ? ": " + m.detail : ""),
                     localTime(m.last_reading), String(m.frames_per_minute), String(m.checksum_errors),
                     String(m.decryption_errors)], m.online));
    }
    const at = $("adapters-table").tBodies[0];
    at.replaceChildren();
    for (const a of doc.adapters) {
      at.append(row([a.name, a.ok ? "connected" : "not connected", a.backlog === null ? "–" : String(a.backlog), a.detail], a.ok));
    }
  }
  function row(cells, ok) {
    const tr = document.createElement("tr");
    cells.forEach((c, i) => {
      const td = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) td.scope = "row";
      td.textContent = c;
      if (i === 1) td.className = ok ? "ok" : "bad";
      tr.append(td);
    });
    return tr;
  }

  // ------------------------------------------------------------------ wire
  function connect() {
    const es = new EventSource("/api/events");
    es.addEventListener("live", (e) => renderLive(JSON.parse(e.data)));
    es.onerror = () => { const c = $("conn"); c.classList.add("bad"); text(c, "reconnecting…"); };
  }

  function init() {
    state.date = isoDate(new Date());
    state.compare = DEFAULT_COMPARE[state.period];
    $("login").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    for (const b of $("period").querySelectorAll("button")) {
      b.addEventListener("click", () => { state.period = b.dataset.period; state.compare = DEFAULT_COMPARE[state.period]; loadHistory(); });
    }
    $("compare").addEventListener("change", (e) => { state.compare = e.target.value; loadHistory(); });
    $("hist-date").addEventListener("change", (e) => { if (e.target.value) { state.date = e.target.value; loadHistory(); } });
    $("prev").addEventListener("click", () => { state.date = shift(state.date, state.period, -1); loadHistory(); });
    $("next").addEventListener("click", () => { state.date = shift(state.date, state.period, 1); loadHistory(); });
    let resizeTimer = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => { if (state.history) drawChart(state.history); }, 200);
    });
    connect();
    refreshSession();
    loadHistory();
    loadHealth();
    setInterval(loadHealth, 5000);
    setInterval(() => { if (state.period === "day" && state.date === isoDate(new Date())) loadHistory(); }, 60000);
  }
  document.addEventListener("DOMContentLoaded", init);
})();
