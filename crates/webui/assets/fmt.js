// Pure helpers for the keepstate web interface: formatting, counter rates and reading the
// control API's JSON. No DOM here, so `node --test` can check all of it.
//
// The readers accept a few spellings of each field because the UI must keep working across
// keepstate versions whose JSON grows; a missing field gives `null`, never an exception.

const PROTO_NAMES = {
  1: "icmp", 6: "tcp", 17: "udp", 33: "dccp", 47: "gre", 50: "esp", 51: "ah",
  58: "icmpv6", 132: "sctp", 136: "udplite",
};

const PORT_PROTOS = new Set(["tcp", "udp", "udplite", "sctp", "dccp"]);

/** A finite number from `v` (numbers and numeric strings), else null. */
export function num(v) {
  if (typeof v === "number") return Number.isFinite(v) ? v : null;
  if (typeof v === "string" && v.trim() !== "") {
    const n = Number(v);
    return Number.isFinite(n) ? n : null;
  }
  return null;
}

/** The value at a dotted path ("engine.packets"), or undefined. */
export function at(obj, path) {
  let cur = obj;
  for (const part of path.split(".")) {
    if (cur === null || typeof cur !== "object" || !Object.hasOwn(cur, part)) return undefined;
    cur = cur[part];
  }
  return cur;
}

/** The first of `paths` that holds something other than undefined/null. */
export function pick(obj, paths) {
  for (const p of paths) {
    const v = at(obj, p);
    if (v !== undefined && v !== null) return v;
  }
  return undefined;
}

/** The first of `paths` that holds a number. */
export function pickNum(obj, paths) {
  for (const p of paths) {
    const n = num(at(obj, p));
    if (n !== null) return n;
  }
  return null;
}

const INT = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/** "1,234,567"; "–" for anything that is not a number. */
export function fmtCount(v) {
  const n = num(v);
  return n === null ? "–" : INT.format(n);
}

/** Short form for axis labels and rates: 950, 1.2k, 3.4M, 5.6G. */
export function fmtShort(v) {
  const n = num(v);
  if (n === null) return "–";
  const a = Math.abs(n);
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [scale, suffix] of units) {
    if (a >= scale) {
      const x = n / scale;
      return (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(1)) + suffix;
    }
  }
  if (a >= 100 || Number.isInteger(n)) return n.toFixed(0);
  return n.toFixed(1);
}

/** Bytes in binary units: "512 B", "1.5 KiB", "2.0 GiB". */
export function fmtBytes(v) {
  const n = num(v);
  if (n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let x = Math.abs(n);
  let i = 0;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i += 1;
  }
  const sign = n < 0 ? "-" : "";
  return i === 0 ? `${sign}${x.toFixed(0)} B` : `${sign}${x.toFixed(1)} ${units[i]}`;
}

/** Seconds as the two largest units: "45s", "3m 07s", "2h 05m", "4d 03h". */
export function fmtDuration(v) {
  const n = num(v);
  if (n === null || n < 0) return "–";
  const s = Math.floor(n);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const two = (x) => String(x).padStart(2, "0");
  if (d > 0) return `${d}d ${two(h)}h`;
  if (h > 0) return `${h}h ${two(m)}m`;
  if (m > 0) return `${m}m ${two(sec)}s`;
  return `${sec}s`;
}

/**
 * Per-second rate between two samples `{t: ms, v: counter}`. A counter that went backwards
 * (the daemon restarted) or a zero interval gives null rather than a bogus spike.
 */
export function rate(prev, cur) {
  if (!prev || !cur) return null;
  const dv = num(cur.v) !== null && num(prev.v) !== null ? cur.v - prev.v : null;
  const dt = (cur.t - prev.t) / 1000;
  if (dv === null || !(dt > 0) || dv < 0) return null;
  return dv / dt;
}

/**
 * A map-ish value as `[name, count]` pairs, largest first: accepts `{"tcp": 3}`,
 * `[{"name": "tcp", "count": 3}]` (also key/proto/state/reason and value/n/connections),
 * or `[3, 4]` together with `names` for the positions.
 */
export function toPairs(x, names = []) {
  const out = [];
  if (Array.isArray(x)) {
    x.forEach((item, i) => {
      if (item !== null && typeof item === "object") {
        const name = pick(item, ["name", "key", "label", "proto", "state", "reason", "zone"]);
        const n = pickNum(item, ["count", "value", "n", "connections", "packets", "total"]);
        if (name !== undefined && n !== null) out.push([String(name), n]);
      } else {
        const n = num(item);
        if (n !== null) out.push([names[i] !== undefined ? String(names[i]) : String(i), n]);
      }
    });
  } else if (x !== null && typeof x === "object") {
    for (const [k, v] of Object.entries(x)) {
      const n = num(v);
      if (n !== null) out.push([k, n]);
    }
  }
  out.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  return out;
}

/** Every numeric leaf of `obj` as `[dotted.path, n]`, in document order, depth-limited. */
export function flattenNumbers(obj, prefix = "", depth = 0, out = []) {
  if (depth > 6 || obj === null || typeof obj !== "object") return out;
  for (const [k, v] of Object.entries(obj)) {
    const path = prefix ? `${prefix}.${k}` : k;
    if (typeof v === "number" && Number.isFinite(v)) out.push([path, v]);
    else if (v !== null && typeof v === "object") flattenNumbers(v, path, depth + 1, out);
  }
  return out;
}

/** Protocol name from a number or a name. */
export function protoName(p) {
  if (typeof p === "string") {
    const n = num(p);
    if (n === null) return p.toLowerCase();
    p = n;
  }
  if (typeof p === "number") return PROTO_NAMES[p] ?? String(p);
  return "?";
}

/** "ipv4"/"ipv6" from whatever the API says, else from the address's shape. */
export function familyOf(value, addr) {
  const f = typeof value === "string" ? value.toLowerCase() : value;
  if (f === 4 || f === "4" || f === "ipv4" || f === "v4" || f === "inet") return "ipv4";
  if (f === 6 || f === "6" || f === "ipv6" || f === "v6" || f === "inet6") return "ipv6";
  if (typeof addr === "string") return addr.includes(":") ? "ipv6" : "ipv4";
  return "?";
}

function tupleOf(t) {
  if (t === null || typeof t !== "object") return null;
  const src = pick(t, ["src", "saddr", "source"]);
  const dst = pick(t, ["dst", "daddr", "destination"]);
  if (src === undefined || dst === undefined) return null;
  return {
    src: String(src),
    dst: String(dst),
    sport: num(pick(t, ["sport", "src_port", "source_port"])),
    dport: num(pick(t, ["dport", "dst_port", "destination_port"])),
    icmpType: num(pick(t, ["type", "icmp_type"])),
    icmpCode: num(pick(t, ["code", "icmp_code"])),
    icmpId: num(pick(t, ["id", "icmp_id"])),
  };
}

/** `[original, reply]` counter pair from an array, an object, or two flat fields. */
function pairOf(c, key) {
  const v = c[key];
  if (Array.isArray(v)) return [num(v[0]), num(v[1])];
  if (v !== null && typeof v === "object") {
    return [num(pick(v, ["original", "orig", "tx", "out"])), num(pick(v, ["reply", "rx", "in"]))];
  }
  const o = pickNum(c, [`orig_${key}`, `${key}_orig`, `original_${key}`, `${key}_original`, `original.${key}`]);
  const r = pickNum(c, [`reply_${key}`, `${key}_reply`, `reply.${key}`]);
  if (o !== null || r !== null) return [o, r];
  const total = num(v);
  return [total, null];
}

/**
 * One connection from the API in the shape the table uses. Unknown spellings fall back to
 * null fields; a connection without an original tuple gives null.
 */
export function normalizeConn(c) {
  if (c === null || typeof c !== "object") return null;
  const original = tupleOf(pick(c, ["original", "orig", "tuple"])) ?? tupleOf(c);
  if (!original) return null;
  const reply = tupleOf(pick(c, ["reply", "repl"]));
  const tcpState = pick(c, ["tcp_state", "state", "ct_state"]);
  // SEEN_REPLY is the normal case and says nothing worth a tag.
  const flags = Array.isArray(c.flags)
    ? c.flags.map(String).filter((f) => f !== "SEEN_REPLY")
    : [];
  if (c.assured === true && !flags.includes("ASSURED")) flags.push("ASSURED");
  if (c.seen_reply === false && !flags.includes("UNREPLIED")) flags.push("UNREPLIED");
  return {
    id: pick(c, ["id"]) ?? null,
    family: familyOf(pick(c, ["family", "l3", "ip_version", "net"]), original.src),
    proto: protoName(pick(c, ["proto_name", "proto", "protocol", "protonum"])),
    original,
    reply,
    state: tcpState === undefined ? null : String(tcpState),
    flags,
    zone: pick(c, ["zone", "zones"]) ?? null,
    age: pickNum(c, ["age", "age_s", "age_secs", "age_seconds"]),
    timeout: pickNum(c, ["timeout", "expires", "timeout_s", "expires_in", "ttl"]),
    packets: pairOf(c, "packets"),
    bytes: pairOf(c, "bytes"),
  };
}

/** "192.0.2.1:80", "[2001:db8::1]:443", or the bare address when there is no port. */
export function endpoint(addr, port) {
  const a = String(addr);
  if (port === null || port === undefined) return a;
  return a.includes(":") ? `[${a}]:${port}` : `${a}:${port}`;
}

/**
 * Address translation visible in the reply tuple: the reply is the original's inverse unless
 * NAT rewrote it. `snat` is the address the source appears as, `dnat` where the destination
 * really goes.
 */
export function natInfo(conn) {
  const o = conn?.original;
  const r = conn?.reply;
  if (!o || !r) return { snat: null, dnat: null };
  const dnat = r.src !== o.dst || (r.sport !== null && o.dport !== null && r.sport !== o.dport)
    ? endpoint(r.src, r.sport) : null;
  const snat = r.dst !== o.src || (r.dport !== null && o.sport !== null && r.dport !== o.sport)
    ? endpoint(r.dst, r.dport) : null;
  return { snat, dnat };
}

/** Query string for filters/sort/paging, leaving out empty values. */
export function buildQuery(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null) continue;
    const s = String(v).trim();
    if (s !== "") q.set(k, s);
  }
  return q.toString();
}

/**
 * The DELETE filter that matches exactly one connection: protocol, both addresses and, where
 * the protocol has them, both ports, all from the original direction.
 */
export function killQuery(conn) {
  const o = conn.original;
  const params = { proto: conn.proto, src: o.src, dst: o.dst };
  if (conn.family === "ipv4" || conn.family === "ipv6") params.family = conn.family;
  // The API's port filters match only protocols with ports: an ICMP query's identifier in
  // `sport` would make the filter match nothing.
  if (PORT_PROTOS.has(conn.proto)) {
    if (o.sport !== null) params.sport = o.sport;
    if (o.dport !== null) params.dport = o.dport;
  }
  return buildQuery(params);
}

/** Route from a location hash: "#/connections?proto=tcp" → {page, params}. */
export function parseRoute(hash, pages, fallback) {
  const h = String(hash || "").replace(/^#\/?/, "");
  const qi = h.indexOf("?");
  const name = (qi >= 0 ? h.slice(0, qi) : h).replace(/\/+$/, "");
  const params = new URLSearchParams(qi >= 0 ? h.slice(qi + 1) : "");
  return { page: pages.includes(name) ? name : fallback, params };
}

/**
 * The dashboard's figures from `/api/v1/stats` and `/api/v1/status` (either may be null).
 * Counters (`packets`, `bytes`, `created`, ...) are totals since start; rates come from
 * their deltas.
 */
export function dashboardFigures(stats, status) {
  const s = stats ?? {};
  const st = status ?? {};
  const both = (paths) => pickNum(s, paths) ?? pickNum(st, paths);
  return {
    packets: both(["engine.packets", "packets"]),
    bytes: pickNum(s, ["engine.bytes", "bytes"]),
    created: pickNum(s, ["engine.created", "created"]),
    connections: both(["connections", "table.count"]),
    limit: both(["limit", "max_connections", "table.limit"]),
    memory: both(["memory_bytes"]),
    accepted: both(["firewall.accepted", "accepted"]),
    dropped: both(["firewall.dropped", "dropped"]),
    forwarded: both(["router.forwarded", "forwarded"]),
    local: both(["router.local", "local"]),
    natConnections: pickNum(s, ["nat.connections"]) ?? pickNum(st, ["nat_connections"]),
    peak: pickNum(s, ["engine.peak", "peak"]),
    uptime: pickNum(st, ["uptime_s", "uptime"]),
    version: typeof st.version === "string" ? st.version : null,
  };
}

/**
 * Live connections by protocol and by state. keepstate's stats carry `table` as
 * `[{proto, state, count}]`; a `by_proto`/`by_state` map is read as well.
 */
export function tableBreakdown(stats) {
  const byProto = new Map();
  const byState = new Map();
  const add = (m, k, n) => m.set(k, (m.get(k) ?? 0) + n);
  const table = stats?.table;
  if (Array.isArray(table)) {
    for (const row of table) {
      const n = pickNum(row, ["count", "n", "value"]);
      if (n === null) continue;
      const proto = pick(row, ["proto"]);
      const state = pick(row, ["state"]);
      if (proto !== undefined) add(byProto, String(proto), n);
      if (state !== undefined) add(byState, String(state), n);
    }
  }
  const sorted = (m) => [...m.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  return {
    proto: byProto.size ? sorted(byProto) : toPairs(pick(stats ?? {}, ["by_proto", "connections_by_proto"])),
    state: byState.size ? sorted(byState) : toPairs(pick(stats ?? {}, ["by_state", "connections_by_state"])),
  };
}

/** Drops by reason, largest first: the router's counters, else the status's top five. */
export function dropsByReason(stats, status) {
  const fromStats = toPairs(pick(stats ?? {}, ["router.dropped", "drops", "dropped_by_reason"]));
  if (fromStats.length) return fromStats.filter(([, n]) => n > 0);
  return toPairs(pick(status ?? {}, ["top_drops"])).filter(([, n]) => n > 0);
}

/**
 * Per-interface counters as `{names, rows}` (rows: objects with a `name`) when the stats
 * have them; `names` alone (from the status) otherwise.
 */
export function interfaceRows(stats, status) {
  const raw = pick(stats ?? {}, ["interfaces", "ports", "router.interfaces"]);
  const rows = [];
  if (Array.isArray(raw)) {
    for (const r of raw) {
      if (r !== null && typeof r === "object") rows.push(r);
    }
  } else if (raw !== null && typeof raw === "object") {
    for (const [name, r] of Object.entries(raw)) {
      if (r !== null && typeof r === "object") rows.push({ name, ...r });
    }
  }
  const listed = pick(status ?? {}, ["interfaces"]);
  const names = Array.isArray(listed)
    ? listed.map((x) => (typeof x === "object" && x !== null ? String(x.name ?? "") : String(x)))
    : rows.map((r) => String(r.name ?? ""));
  return { names: names.filter((n) => n !== ""), rows };
}
