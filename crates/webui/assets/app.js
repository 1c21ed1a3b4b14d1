// keepstate web interface. Plain ES module, no framework and no build step.
//
// Everything the API returns reaches the page through textContent or element properties,
// never as markup: addresses, rule names and drop reasons come from the network.

import {
  buildQuery, dashboardFigures, dropsByReason, endpoint, flattenNumbers, fmtBytes, fmtCount,
  fmtDuration, fmtShort, interfaceRows, killQuery, natInfo, normalizeConn, num, parseRoute,
  rate, tableBreakdown,
} from "./fmt.js";

const PAGES = ["dashboard", "connections", "firewall", "logs"];
const TOKEN_KEY = "keepstate.token";
const DASH_INTERVAL_MS = 2000;
const CONN_INTERVAL_MS = 3000;
const LOGS_INTERVAL_MS = 3000;
/** Five minutes of samples at the dashboard's interval. */
const HISTORY = 150;
const CHART_WINDOW_MS = 5 * 60 * 1000;

const $ = (id) => document.getElementById(id);

/** An element with properties (`class`, `text`, `aria-*`/`data-*` as attributes) and children. */
function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else if (k.startsWith("aria-") || k.startsWith("data-") || k === "role" || k === "scope") {
      e.setAttribute(k, String(v));
    } else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ---------------------------------------------------------------------------------------
// The API, with the token prompt

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let tokenPrompt = null;
/** Set when the prompt was dismissed: polling then stops asking until the user wants to. */
let tokenDeclined = false;

/** Shows the token dialog (once, however many requests are waiting); resolves false on cancel. */
function askToken(refused) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $("token-dialog");
  const input = $("token-input");
  $("token-error").textContent = refused ? "That token was refused." : "";
  input.value = "";
  tokenPrompt = new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      tokenPrompt = null;
      const t = dialog.returnValue === "ok" ? input.value.trim() : "";
      input.value = "";
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      tokenDeclined = !t;
      $("token-button").hidden = Boolean(t);
      resolve(Boolean(t));
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
    input.focus();
  });
  return tokenPrompt;
}

async function api(path, { method = "GET" } = {}) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(path, { method, headers, cache: "no-store", credentials: "same-origin" });
    } catch (e) {
      throw new ApiError(0, `cannot reach keepstate (${e.message})`);
    }
    if (res.status === 401) {
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      if (!tokenDeclined && (await askToken(Boolean(token)))) continue;
      throw new ApiError(401, "a token is needed");
    }
    let body = null;
    const text = await res.text();
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      const msg = body && typeof body.error === "string" ? body.error : `${res.status} ${res.statusText}`;
      throw new ApiError(res.status, msg);
    }
    linkState(true);
    return body;
  }
  throw new ApiError(401, "a token is needed");
}

function linkState(ok, message) {
  const p = $("link-state");
  p.classList.toggle("bad", !ok);
  p.textContent = ok ? `live · ${new Date().toLocaleTimeString()}` : message;
}

function reportError(e) {
  linkState(false, e instanceof ApiError ? e.message : String(e));
}

function notAvailable(container, what) {
  container.replaceChildren(
    h("p", { class: "notice", text: `${what} is not available from this keepstate.` }),
  );
}

// ---------------------------------------------------------------------------------------
// Polling: one timer for the page on screen, paused while the tab is hidden

let poll = null;

function startPolling(fn, interval) {
  stopPolling();
  const me = { stopped: false, timer: 0 };
  poll = me;
  const tick = async () => {
    if (me.stopped) return;
    if (!document.hidden) {
      try {
        await fn();
      } catch (e) {
        reportError(e);
      }
    }
    if (!me.stopped) me.timer = setTimeout(tick, interval);
  };
  tick();
}

function stopPolling() {
  if (poll) {
    poll.stopped = true;
    clearTimeout(poll.timer);
    poll = null;
  }
}

// ---------------------------------------------------------------------------------------
// Charts: a line over time on a canvas, coloured from the CSS variables

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

/** Draws `points` ([{t, v}], v may be null for a gap) over the last CHART_WINDOW_MS. */
function drawLineChart(canvas, points, { color, label, unit = "/s", format = fmtShort }) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, canvas.clientWidth);
  const hgt = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(hgt * dpr);
  }
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, hgt);

  const now = Date.now();
  const t0 = now - CHART_WINDOW_MS;
  const shown = points.filter((p) => p.t >= t0 && p.v !== null);
  const max = Math.max(1, ...shown.map((p) => p.v));
  const nice = niceCeil(max, format === fmtBytes ? 1024 : 1000);
  ctx.font = `11px ${getComputedStyle(document.body).fontFamily}`;
  let widest = 0;
  for (let i = 0; i <= 4; i += 1) widest = Math.max(widest, ctx.measureText(format((nice * i) / 4)).width);
  const left = Math.ceil(widest) + 10;
  const right = 8;
  const top = 8;
  const bottom = 20;
  const pw = w - left - right;
  const ph = hgt - top - bottom;
  const x = (t) => left + ((t - t0) / CHART_WINDOW_MS) * pw;
  const y = (v) => top + ph - (v / nice) * ph;

  ctx.fillStyle = cssVar("--muted");
  ctx.strokeStyle = cssVar("--grid");
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  ctx.textAlign = "right";
  for (let i = 0; i <= 4; i += 1) {
    const v = (nice * i) / 4;
    const yy = Math.round(y(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(left, yy);
    ctx.lineTo(w - right, yy);
    ctx.stroke();
    ctx.fillText(format(v), left - 6, yy);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "alphabetic";
  for (let m = 5; m >= 0; m -= 1) {
    const xx = x(now - m * 60000);
    ctx.fillText(m === 0 ? "now" : `-${m}m`, Math.min(Math.max(xx, left + 10), w - right - 12), hgt - 5);
  }

  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.beginPath();
  let prevT = null;
  let drawn = 0;
  for (const p of points) {
    if (p.t < t0 || p.v === null) {
      prevT = null;
      continue;
    }
    // A gap longer than a few intervals (tab hidden, other page shown) is left blank.
    if (prevT === null || p.t - prevT > DASH_INTERVAL_MS * 3) ctx.moveTo(x(p.t), y(p.v));
    else ctx.lineTo(x(p.t), y(p.v));
    prevT = p.t;
    drawn += 1;
  }
  ctx.stroke();

  const last = shown.length ? shown[shown.length - 1].v : null;
  const peak = shown.length ? Math.max(...shown.map((p) => p.v)) : null;
  canvas.dataset.points = String(drawn);
  canvas.setAttribute(
    "aria-label",
    last === null
      ? `${label}: no data yet`
      : `${label}: now ${format(last)}${unit}, peak ${format(peak)}${unit} over the last 5 minutes`,
  );
  const now$ = canvas.parentElement?.querySelector(".now");
  if (now$) now$.textContent = last === null ? "" : `${format(last)}${unit}`;
}

/** A round axis maximum at or above `v` whose quarters are round too: 1, 2, 4, 6 or 8 times
 *  a power of ten, scaled
 *  first by the largest power of `unit` below `v` (1024 keeps byte axes on whole KiB/MiB). */
function niceCeil(v, unit = 1000) {
  let scale = 1;
  while (v / scale >= unit) scale *= unit;
  const x = v / scale;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= x) return m * p * scale;
  return 10 * p * scale;
}

/** Horizontal bars for `[name, count]` pairs; the bar is proportional to the largest. */
function renderBars(container, pairs, { empty, kind = "" } = {}) {
  if (!pairs.length) {
    container.replaceChildren(h("p", { class: "muted", text: empty ?? "None." }));
    return;
  }
  const max = Math.max(1, ...pairs.map(([, n]) => n));
  const total = pairs.reduce((a, [, n]) => a + n, 0);
  const list = h("ul", { class: "bars", role: "list" });
  for (const [name, n] of pairs.slice(0, 12)) {
    const fill = h("span", { class: "fill" });
    fill.style.width = `${(n / max) * 100}%`;
    const pct = total > 0 ? ` (${((n / total) * 100).toFixed(1)}%)` : "";
    list.append(
      h("li", { class: `bar-row ${kind}` },
        h("span", { class: "label", title: `${name}: ${fmtCount(n)}${pct}`, text: name }),
        h("span", { class: "track", "aria-hidden": "true" }, fill),
        h("span", { class: "value", text: fmtCount(n) })),
    );
  }
  if (pairs.length > 12) {
    const rest = pairs.slice(12).reduce((a, [, n]) => a + n, 0);
    list.append(h("li", { class: "muted more", text: `and ${pairs.length - 12} more (${fmtCount(rest)})` }));
  }
  container.replaceChildren(list);
}

/** A table of objects: columns in `preferred` order first, then any others seen. */
function objectTable(rows, { preferred = [], caption, numeric = /count|hits|packets|bytes|dropped|accepted|rx|tx|errors/i } = {}) {
  const cols = [];
  for (const c of preferred) if (rows.some((r) => r[c] !== undefined)) cols.push(c);
  for (const r of rows) {
    for (const k of Object.keys(r)) if (!cols.includes(k) && cols.length < 14) cols.push(k);
  }
  const table = h("table", { class: "data" });
  if (caption) table.append(h("caption", { class: "sr-only", text: caption }));
  table.append(h("thead", {}, h("tr", {}, cols.map((c) => h("th", {
    scope: "col", class: numeric.test(c) ? "num" : "", text: c.replaceAll("_", " "),
  })))));
  const body = h("tbody");
  for (const r of rows) {
    body.append(h("tr", {}, cols.map((c) => {
      const v = r[c];
      const isNum = typeof v === "number";
      return h("td", { class: isNum ? "num" : "", text: cellText(c, v) });
    })));
  }
  table.append(body);
  return h("div", { class: "table-wrap", tabIndex: 0, role: "region", "aria-label": caption ?? "table" }, table);
}

function cellText(col, v) {
  if (v === undefined || v === null) return "";
  if (typeof v === "number") {
    if (/^(time|ts|timestamp|at)$/.test(col)) return fmtTime(v);
    // Ports, identifiers and numbers that name things read wrong with digit grouping.
    if (/port|id$|^(zone|mark|priority|index|family|protonum)$/i.test(col)) return String(v);
    if (/bytes/i.test(col)) return fmtBytes(v);
    return fmtCount(v);
  }
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) return v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function fmtTime(v) {
  const n = num(v);
  if (n === null) return String(v);
  // Seconds or milliseconds since the epoch; anything smaller is a relative time.
  if (n > 1e12) return new Date(n).toLocaleTimeString();
  if (n > 1e9) return new Date(n * 1000).toLocaleTimeString();
  return fmtDuration(n);
}

// ---------------------------------------------------------------------------------------
// Dashboard

const dash = { samples: [], lastStats: null, lastStatus: null };

const dashboard = {
  start() {
    startPolling(() => this.refresh(), DASH_INTERVAL_MS);
  },
  async refresh() {
    const [stats, status] = await Promise.allSettled([api("/api/v1/stats"), api("/api/v1/status")]);
    const s = stats.status === "fulfilled" ? stats.value : null;
    const st = status.status === "fulfilled" ? status.value : null;
    if (!s && !st) throw stats.reason ?? status.reason;
    const f = dashboardFigures(s, st);
    const t = Date.now();
    dash.samples.push({ t, packets: f.packets, bytes: f.bytes, created: f.created });
    if (dash.samples.length > HISTORY) dash.samples.splice(0, dash.samples.length - HISTORY);
    dash.lastStats = s;
    dash.lastStatus = st;
    this.render(f, s, st);
  },
  series(key) {
    const out = [];
    for (let i = 1; i < dash.samples.length; i += 1) {
      const a = dash.samples[i - 1];
      const b = dash.samples[i];
      const v = b.t - a.t > DASH_INTERVAL_MS * 3 ? null : rate({ t: a.t, v: a[key] }, { t: b.t, v: b[key] });
      out.push({ t: b.t, v });
    }
    return out;
  },
  render(f, s, st) {
    const pps = this.series("packets");
    const cps = this.series("created");
    const bps = this.series("bytes");
    const lastOf = (xs) => (xs.length ? xs[xs.length - 1].v : null);
    const fill = f.connections !== null && f.limit ? f.connections / f.limit : null;

    const tiles = [
      ["Connections", fmtCount(f.connections)],
      ["Packets/s", fmtShort(lastOf(pps))],
      ["New connections/s", fmtShort(lastOf(cps))],
      ["Throughput", lastOf(bps) === null ? "–" : `${fmtBytes(lastOf(bps))}/s`],
      ["Accepted", fmtCount(f.accepted)],
      ["Dropped", fmtCount(f.dropped)],
      ["Forwarded", fmtCount(f.forwarded)],
      ["NAT connections", fmtCount(f.natConnections)],
      ["Uptime", f.uptime === null ? "–" : fmtDuration(f.uptime)],
    ];
    $("dash-tiles").replaceChildren(...tiles.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: v }))));

    drawLineChart($("chart-pps"), pps, { color: cssVar("--series-1"), label: "Packets per second" });
    drawLineChart($("chart-cps"), cps, { color: cssVar("--series-2"), label: "New connections per second" });
    drawLineChart($("chart-bps"), bps, { color: cssVar("--series-3"), label: "Bytes per second", unit: "/s", format: fmtBytes });

    const gauge = $("dash-fill");
    if (fill === null) {
      gauge.replaceChildren(h("p", { class: "muted", text: "The table's size is not reported." }));
    } else {
      const meter = h("meter", {
        min: 0, max: f.limit, value: f.connections, low: f.limit * 0.6, high: f.limit * 0.85, optimum: 0,
        id: "fill-meter",
      });
      meter.setAttribute("aria-label", "Connection table fill");
      gauge.replaceChildren(h("div", { class: "gauge" },
        meter,
        h("p", {}, `${fmtCount(f.connections)} of ${fmtCount(f.limit)} (${(fill * 100).toFixed(1)}%)`),
        f.memory === null ? null : h("p", { class: "muted", text: `Memory ${fmtBytes(f.memory)}${f.peak === null ? "" : ` · peak ${fmtCount(f.peak)} connections`}` })));
    }

    const bd = tableBreakdown(s);
    renderBars($("dash-proto"), bd.proto, { empty: s ? "No connections." : "Not reported." });
    renderBars($("dash-state"), bd.state, { empty: s ? "No connections." : "Not reported." });
    renderBars($("dash-drops"), dropsByReason(s, st), { empty: "No drops.", kind: "drop" });

    const ifs = interfaceRows(s, st);
    const ifBox = $("dash-ifaces");
    if (ifs.rows.length) {
      ifBox.replaceChildren(objectTable(ifs.rows, {
        preferred: ["name", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "dropped", "errors"],
        caption: "Per-interface counters",
      }));
    } else if (ifs.names.length) {
      ifBox.replaceChildren(
        h("p", {}, ifs.names.join(", ")),
        h("p", { class: "muted", text: "Per-interface counters are not reported by this keepstate." }));
    } else {
      ifBox.replaceChildren(h("p", { class: "muted", text: "Not reported." }));
    }

    const raw = flattenNumbers({ stats: s, status: st });
    $("dash-raw").replaceChildren(h("dl", {}, raw.map(([k, v]) => h("div", {}, h("dt", { text: k }), h("dd", { text: fmtCount(v) })))));
    if (f.version) $("link-state").title = `keepstate ${f.version}`;
  },
  redraw() {
    if (dash.samples.length) {
      this.render(dashboardFigures(dash.lastStats, dash.lastStatus), dash.lastStats, dash.lastStatus);
    }
  },
};

// ---------------------------------------------------------------------------------------
// Connections

const FILTER_NAMES = ["family", "proto", "src", "sport", "dst", "dport", "addr", "state"];
const SORT_DEFAULT_DESC = new Set(["bytes", "packets"]);

const connections = {
  query: null,
  start(params) {
    const q = { limit: 50, offset: 0, sort: "", order: "" };
    for (const k of FILTER_NAMES) q[k] = params.get(k) ?? "";
    q.sort = params.get("sort") ?? "";
    q.order = params.get("order") ?? "";
    q.limit = clampInt(params.get("limit"), 1, 1000, 50);
    q.offset = clampInt(params.get("offset"), 0, Number.MAX_SAFE_INTEGER, 0);
    this.query = q;
    const form = $("conn-filter");
    for (const k of FILTER_NAMES) if (form.elements[k]) form.elements[k].value = q[k];
    $("conn-limit").value = String(q.limit);
    this.paintSort();
    if ($("conn-auto").checked) startPolling(() => this.refresh(), CONN_INTERVAL_MS);
    else {
      stopPolling();
      this.refresh().catch(reportError);
    }
  },
  /** Changes the query through the location, so it can be bookmarked and goes in history. */
  go(changes) {
    const q = { ...this.query, ...changes };
    const params = buildQuery({
      ...Object.fromEntries(FILTER_NAMES.map((k) => [k, q[k]])),
      sort: q.sort, order: q.sort ? q.order : "", limit: q.limit === 50 ? "" : q.limit,
      offset: q.offset || "",
    });
    location.hash = `#/connections${params ? `?${params}` : ""}`;
  },
  paintSort() {
    for (const th of document.querySelectorAll("#conn-table th[data-sort]")) {
      const key = th.dataset.sort;
      if (key === this.query.sort) {
        const desc = this.query.order ? this.query.order === "desc" : SORT_DEFAULT_DESC.has(key);
        th.setAttribute("aria-sort", desc ? "descending" : "ascending");
      } else th.removeAttribute("aria-sort");
    }
  },
  async refresh() {
    const q = this.query;
    const params = buildQuery({
      ...Object.fromEntries(FILTER_NAMES.map((k) => [k, q[k]])),
      sort: q.sort, order: q.sort ? q.order : "", limit: q.limit, offset: q.offset,
    });
    const body = await api(`/api/v1/connections?${params}`);
    this.render(body ?? {});
  },
  render(body) {
    const q = this.query;
    const items = Array.isArray(body.items) ? body.items.map(normalizeConn).filter(Boolean) : [];
    const total = num(body.total) ?? items.length;
    const table = $("conn-table");
    table.classList.toggle("no-age", !items.some((c) => c.age !== null));

    // Re-rendering replaces the buttons: keep keyboard focus on the same connection's.
    const focused = document.activeElement?.dataset?.kill ?? null;
    const tbody = table.tBodies[0];
    const rows = items.map((c) => this.row(c));
    if (!rows.length) {
      rows.push(h("tr", {}, h("td", { colSpan: 10, class: "muted", text: total > 0 ? "No connections on this page." : "No connections match." })));
    }
    tbody.replaceChildren(...rows);
    if (focused) {
      const again = [...tbody.querySelectorAll("button[data-kill]")].find((b) => b.dataset.kill === focused);
      if (again) again.focus();
    }

    const from = items.length ? q.offset + 1 : 0;
    const to = q.offset + items.length;
    $("conn-summary").textContent = items.length
      ? `${fmtCount(from)}–${fmtCount(to)} of ${fmtCount(total)} connections`
      : `${fmtCount(total)} connections`;
    const pages = Math.max(1, Math.ceil(total / q.limit));
    const page = Math.floor(q.offset / q.limit) + 1;
    $("conn-page").textContent = `Page ${fmtCount(page)} of ${fmtCount(pages)}`;
    $("conn-first").disabled = q.offset === 0;
    $("conn-prev").disabled = q.offset === 0;
    $("conn-next").disabled = to >= total;
  },
  row(c) {
    const o = c.original;
    const nat = natInfo(c);
    const hasPorts = o.sport !== null || o.dport !== null;
    const icmp = !hasPorts && o.icmpType !== null
      ? `type ${o.icmpType}${o.icmpId !== null ? ` id ${o.icmpId}` : ""}` : null;
    const src = endpoint(o.src, o.sport);
    const dst = endpoint(o.dst, o.dport);
    // The translation sits under the side it changes: the address the source is seen as
    // outside (SNAT), and where the destination really goes (DNAT).
    const addrCell = (text, tag, translated, word) => h("td", { class: "addr" }, text,
      translated ? h("span", { class: "sub" }, h("span", { class: "tag nat", text: tag }), ` ${word} ${translated}`) : null);
    const stateCell = h("td", {}, c.state ?? (c.flags.length ? "" : "–"),
      c.flags.map((f) => h("span", { class: "tag", text: f })));
    const pair = (v, f) => h("td", { class: "num" },
      h("span", { title: "original direction", text: `${f(v[0])} →` }),
      h("span", { class: "sub", title: "reply direction", text: `${f(v[1])} ←` }));
    const kill = h("button", {
      type: "button", class: "danger", text: "Kill",
      "aria-label": `Kill ${c.proto} connection ${src} to ${dst}`,
      "data-kill": killQuery(c),
    });
    kill.addEventListener("click", () => this.kill(c, src, dst));
    return h("tr", {},
      h("td", { text: c.family === "ipv6" ? "IPv6" : c.family === "ipv4" ? "IPv4" : "?" }),
      h("td", {}, c.proto, icmp ? h("span", { class: "sub", text: icmp }) : null),
      addrCell(src, "SNAT", nat.snat, "as"),
      addrCell(dst, "DNAT", nat.dnat, "to"),
      stateCell,
      h("td", { class: "col-age", text: fmtDuration(c.age) }),
      h("td", { text: fmtDuration(c.timeout) }),
      pair(c.bytes, fmtBytes),
      pair(c.packets, fmtCount),
      h("td", {}, kill));
  },
  async kill(c, src, dst) {
    if (!window.confirm(`Kill the ${c.proto} connection ${src} → ${dst}?`)) return;
    try {
      const body = await api(`/api/v1/connections?${killQuery(c)}`, { method: "DELETE" });
      const n = num(body?.deleted) ?? num(body?.count) ?? 0;
      await this.refresh();
      const done = n === 1 ? "Killed 1 connection." : `Killed ${fmtCount(n)} connections.`;
      $("conn-summary").textContent = `${done} ${$("conn-summary").textContent}`;
      $("conn-table").closest(".table-wrap")?.focus();
    } catch (e) {
      reportError(e);
      $("conn-summary").textContent = `Could not kill the connection: ${e.message}`;
    }
  },
  wire() {
    const form = $("conn-filter");
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!form.reportValidity()) return;
      const changes = { offset: 0 };
      for (const k of FILTER_NAMES) changes[k] = form.elements[k]?.value.trim() ?? "";
      this.go(changes);
    });
    form.addEventListener("reset", () => {
      setTimeout(() => this.go({ ...Object.fromEntries(FILTER_NAMES.map((k) => [k, ""])), offset: 0 }), 0);
    });
    for (const th of document.querySelectorAll("#conn-table th[data-sort]")) {
      const label = th.textContent;
      const btn = h("button", { type: "button", class: "sort", text: label });
      btn.addEventListener("click", () => {
        const key = th.dataset.sort;
        const currentDesc = this.query.order ? this.query.order === "desc" : SORT_DEFAULT_DESC.has(key);
        const order = this.query.sort === key
          ? (currentDesc ? "asc" : "desc")
          : (SORT_DEFAULT_DESC.has(key) ? "desc" : "asc");
        this.go({ sort: key, order, offset: 0 });
      });
      th.replaceChildren(btn);
    }
    $("conn-first").addEventListener("click", () => this.go({ offset: 0 }));
    $("conn-prev").addEventListener("click", () => this.go({ offset: Math.max(0, this.query.offset - this.query.limit) }));
    $("conn-next").addEventListener("click", () => this.go({ offset: this.query.offset + this.query.limit }));
    $("conn-limit").addEventListener("change", (ev) => this.go({ limit: clampInt(ev.target.value, 1, 1000, 50), offset: 0 }));
    $("conn-refresh").addEventListener("click", () => this.refresh().catch(reportError));
    $("conn-auto").addEventListener("change", (ev) => {
      if (ev.target.checked) startPolling(() => this.refresh(), CONN_INTERVAL_MS);
      else stopPolling();
    });
  },
};

function clampInt(v, lo, hi, fallback) {
  const n = Number.parseInt(String(v ?? ""), 10);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : fallback;
}

// ---------------------------------------------------------------------------------------
// Firewall: zones, rules with counters, port forwards, notrack rules

const FW_SECTIONS = [
  ["zones", "Zones", ["name", "interfaces", "networks", "input", "output", "forward", "masq"]],
  ["rules", "Rules", ["name", "src", "dest", "proto", "src_ip", "dest_ip", "dest_port", "target", "hits", "packets", "bytes"]],
  ["forwards", "Zone forwardings", ["src", "dest"]],
  ["redirects", "Port forwards", ["name", "src", "proto", "src_dport", "dest_ip", "dest_port", "hits", "packets", "bytes"]],
  ["port_forwards", "Port forwards", ["name", "src", "proto", "src_dport", "dest_ip", "dest_port", "hits", "packets", "bytes"]],
  ["notrack", "Notrack rules", ["name", "src", "proto", "src_ip", "dest_ip", "dest_port", "hits", "packets"]],
];

const firewall = {
  async start() {
    stopPolling();
    const box = $("fw-body");
    box.replaceChildren(h("p", { class: "muted", text: "Loading…" }));
    let body;
    try {
      body = await api("/api/v1/rules");
    } catch (e) {
      if (e.status === 404) return notAvailable(box, "The firewall's rule listing");
      box.replaceChildren(h("p", { class: "error", text: `Could not load the rules: ${e.message}` }));
      return reportError(e);
    }
    const obj = Array.isArray(body) ? { rules: body } : (body ?? {});
    const parts = [];
    const seen = new Set();
    for (const [key, title, preferred] of FW_SECTIONS) {
      const rows = obj[key];
      if (!Array.isArray(rows)) continue;
      seen.add(key);
      parts.push(this.section(title, rows, preferred));
    }
    for (const [key, rows] of Object.entries(obj)) {
      if (seen.has(key) || !Array.isArray(rows)) continue;
      parts.push(this.section(key.replaceAll("_", " "), rows, ["name"]));
    }
    box.replaceChildren(...(parts.length ? parts : [h("p", { class: "notice", text: "No rules." })]));
  },
  section(title, rows, preferred) {
    const objs = rows.map((r) => (r !== null && typeof r === "object" ? r : { value: r }));
    return h("section", { class: "fw-section" },
      h("h2", {}, `${title} `, h("span", { class: "muted", text: `(${objs.length})` })),
      objs.length ? objectTable(objs, { preferred, caption: title }) : h("p", { class: "muted", text: "None." }));
  },
};

// ---------------------------------------------------------------------------------------
// Logs: recent drops

const logs = {
  start() {
    $("logs-body").replaceChildren(h("p", { class: "muted", text: "Loading…" }));
    if ($("logs-auto").checked) startPolling(() => this.refresh(), LOGS_INTERVAL_MS);
    else {
      stopPolling();
      this.refresh().catch(reportError);
    }
  },
  async refresh() {
    const box = $("logs-body");
    let body;
    try {
      body = await api("/api/v1/drops");
    } catch (e) {
      if (e.status === 404) {
        stopPolling();
        $("logs-summary").textContent = "";
        return notAvailable(box, "The drop log");
      }
      throw e;
    }
    const items = Array.isArray(body) ? body : Array.isArray(body?.items) ? body.items : [];
    const rows = items.filter((r) => r !== null && typeof r === "object");
    $("logs-summary").textContent = `${fmtCount(rows.length)} recent drops`;
    box.replaceChildren(rows.length
      ? objectTable(rows, {
        preferred: ["time", "ts", "reason", "rule", "zone", "iface", "in", "out", "family", "proto", "src", "sport", "dst", "dport", "len"],
        caption: "Recent drops",
      })
      : h("p", { class: "notice", text: "No drops recorded." }));
  },
  wire() {
    $("logs-auto").addEventListener("change", (ev) => {
      if (ev.target.checked) startPolling(() => this.refresh(), LOGS_INTERVAL_MS);
      else stopPolling();
    });
  },
};

// ---------------------------------------------------------------------------------------
// Routing

let currentPage = null;

function route() {
  const { page, params } = parseRoute(location.hash, PAGES, "dashboard");
  const changed = page !== currentPage;
  for (const p of PAGES) $(`page-${p}`).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a[data-page]")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · keepstate`;
  // Moving focus to the new page's heading tells screen readers the page changed.
  if (changed && currentPage !== null) $(`h-${page}`).focus();
  currentPage = page;
  if (page === "dashboard") dashboard.start();
  else if (page === "connections") connections.start(params);
  else if (page === "firewall") firewall.start();
  else logs.start();
}

function init() {
  for (const p of PAGES) $(`h-${p}`).tabIndex = -1;
  connections.wire();
  logs.wire();
  $("token-button").addEventListener("click", async () => {
    tokenDeclined = false;
    if (await askToken(false)) route();
  });
  window.addEventListener("hashchange", route);
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => currentPage === "dashboard" && dashboard.redraw(), 150);
  });
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
    if (currentPage === "dashboard") dashboard.redraw();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && currentPage === "dashboard") dashboard.redraw();
  });
  if (!location.hash) history.replaceState(null, "", "#/dashboard");
  route();
}

init();
