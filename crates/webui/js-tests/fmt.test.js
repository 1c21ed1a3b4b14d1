// Tests for the web interface's pure helpers: `node --test crates/webui/js-tests/`.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  buildQuery, dashboardFigures, dropsByReason, endpoint, flattenNumbers, fmtBytes, fmtCount,
  fmtDuration, fmtShort, interfaceRows, killQuery, natInfo, normalizeConn, parseRoute, rate,
  tableBreakdown, toPairs,
} from "../assets/fmt.js";

// A connection as keepstate's control API lists it (crates/control/src/json.rs).
const masqueraded = {
  family: "ipv4",
  proto: "tcp",
  protonum: 6,
  state: "ESTABLISHED",
  timeout: 431999,
  original: { src: "192.168.1.10", dst: "198.51.100.7", sport: 40000, dport: 443, packets: 12, bytes: 3400 },
  reply: { src: "198.51.100.7", dst: "203.0.113.1", sport: 443, dport: 61001, packets: 10, bytes: 90000 },
  flags: ["SEEN_REPLY", "ASSURED"],
  zone: 0,
  mark: 0,
  line: "tcp 6 ...",
};

test("numbers format for people", () => {
  assert.equal(fmtCount(1234567), "1,234,567");
  assert.equal(fmtCount(undefined), "–");
  assert.equal(fmtCount("12"), "12");
  assert.equal(fmtShort(950), "950");
  assert.equal(fmtShort(1500), "1.5k");
  assert.equal(fmtShort(2_500_000), "2.5M");
  assert.equal(fmtShort(0.25), "0.3");
  assert.equal(fmtShort(null), "–");
  assert.equal(fmtBytes(512), "512 B");
  assert.equal(fmtBytes(1536), "1.5 KiB");
  assert.equal(fmtBytes(3 * 1024 ** 3), "3.0 GiB");
  assert.equal(fmtBytes("x"), "–");
});

test("durations show their two largest units", () => {
  assert.equal(fmtDuration(0), "0s");
  assert.equal(fmtDuration(45), "45s");
  assert.equal(fmtDuration(187), "3m 07s");
  assert.equal(fmtDuration(7500), "2h 05m");
  assert.equal(fmtDuration(431999), "4d 23h");
  assert.equal(fmtDuration(-1), "–");
  assert.equal(fmtDuration(null), "–");
});

test("rates come from counter deltas and ignore restarts", () => {
  assert.equal(rate({ t: 0, v: 100 }, { t: 2000, v: 300 }), 100);
  assert.equal(rate({ t: 0, v: 300 }, { t: 2000, v: 100 }), null, "counter went back");
  assert.equal(rate({ t: 1000, v: 1 }, { t: 1000, v: 2 }), null, "no time passed");
  assert.equal(rate({ t: 0, v: null }, { t: 1000, v: 2 }), null);
  assert.equal(rate(null, { t: 1000, v: 2 }), null);
});

test("a listed connection normalises with both tuples and counters", () => {
  const c = normalizeConn(masqueraded);
  assert.equal(c.family, "ipv4");
  assert.equal(c.proto, "tcp");
  assert.equal(c.state, "ESTABLISHED");
  assert.deepEqual(c.flags, ["ASSURED"]);
  assert.equal(c.timeout, 431999);
  assert.equal(c.age, null);
  assert.deepEqual(c.packets, [12, 10]);
  assert.deepEqual(c.bytes, [3400, 90000]);
  assert.equal(c.original.sport, 40000);
  assert.equal(c.reply.dport, 61001);
});

test("other spellings of a connection are read too", () => {
  const c = normalizeConn({
    proto: 17, src: "2001:db8::1", dst: "2001:db8::2", sport: 53, dport: 5353,
    packets: [1, 2], bytes: { original: 10, reply: 20 }, seen_reply: false, age: 5,
  });
  assert.equal(c.family, "ipv6");
  assert.equal(c.proto, "udp");
  assert.deepEqual(c.packets, [1, 2]);
  assert.deepEqual(c.bytes, [10, 20]);
  assert.deepEqual(c.flags, ["UNREPLIED"]);
  assert.equal(c.age, 5);
  assert.equal(normalizeConn(null), null);
  assert.equal(normalizeConn({ proto: "tcp" }), null);
});

test("NAT shows as where the source appears and where the destination goes", () => {
  assert.deepEqual(natInfo(normalizeConn(masqueraded)), { snat: "203.0.113.1:61001", dnat: null });
  const forwarded = normalizeConn({
    ...masqueraded,
    original: { src: "198.51.100.7", dst: "203.0.113.1", sport: 5000, dport: 8080 },
    reply: { src: "192.168.1.20", dst: "198.51.100.7", sport: 80, dport: 5000 },
  });
  assert.deepEqual(natInfo(forwarded), { snat: null, dnat: "192.168.1.20:80" });
  const plain = normalizeConn({
    ...masqueraded,
    reply: { src: "198.51.100.7", dst: "192.168.1.10", sport: 443, dport: 40000 },
  });
  assert.deepEqual(natInfo(plain), { snat: null, dnat: null });
  assert.equal(endpoint("2001:db8::1", 443), "[2001:db8::1]:443");
  assert.equal(endpoint("192.0.2.1", null), "192.0.2.1");
});

test("the kill filter names exactly one connection", () => {
  const q = new URLSearchParams(killQuery(normalizeConn(masqueraded)));
  assert.deepEqual(Object.fromEntries(q), {
    proto: "tcp", src: "192.168.1.10", dst: "198.51.100.7", family: "ipv4", sport: "40000", dport: "443",
  });
  // ICMP has no ports: the API's port filters would match nothing.
  const ping = normalizeConn({
    family: "ipv6", proto: "icmpv6",
    original: { src: "2001:db8::1", dst: "2001:db8::2", type: 128, code: 0, id: 7 },
    reply: { src: "2001:db8::2", dst: "2001:db8::1", type: 129, code: 0, id: 7 },
  });
  assert.equal(killQuery(ping), "proto=icmpv6&src=2001%3Adb8%3A%3A1&dst=2001%3Adb8%3A%3A2&family=ipv6");
});

test("queries leave out empty filters", () => {
  assert.equal(buildQuery({ proto: "tcp", src: " ", dport: 0, x: null, y: undefined }), "proto=tcp&dport=0");
});

test("routes come from the hash", () => {
  const pages = ["dashboard", "connections"];
  const r = parseRoute("#/connections?proto=udp&offset=50", pages, "dashboard");
  assert.equal(r.page, "connections");
  assert.equal(r.params.get("proto"), "udp");
  assert.equal(parseRoute("", pages, "dashboard").page, "dashboard");
  assert.equal(parseRoute("#/nope", pages, "dashboard").page, "dashboard");
  assert.equal(parseRoute("#/connections/", pages, "dashboard").page, "connections");
});

// The stats and status bodies as the control API sends them (crates/control/src/json.rs).
const stats = {
  connections: 3,
  limit: 100,
  memory_bytes: 4096,
  table: [
    { proto: "tcp", state: "ESTABLISHED", count: 2 },
    { proto: "udp", state: "ASSURED", count: 1 },
    { proto: "tcp", state: "TIME_WAIT", count: 1 },
  ],
  engine: { packets: 1000, bytes: 500000, created: 40, by_state: { NEW: 40 }, invalid_by_reason: {} },
  firewall: { accepted: 990, dropped: 10 },
  router: { forwarded: 980, local: 10, dropped: { "zone-policy": 7, "tcp-not-syn": 3 } },
  nat: { connections: 1, ports_in_use: 1 },
};
const status = {
  version: "0.1.0", uptime_s: 3600, connections: 3, limit: 100, packets: 1000,
  top_drops: [{ reason: "zone-policy", count: 7 }], interfaces: ["lan", "wan"],
};

test("dashboard figures come from stats, then status", () => {
  const f = dashboardFigures(stats, status);
  assert.equal(f.packets, 1000);
  assert.equal(f.bytes, 500000);
  assert.equal(f.created, 40);
  assert.equal(f.connections, 3);
  assert.equal(f.limit, 100);
  assert.equal(f.dropped, 10);
  assert.equal(f.natConnections, 1);
  assert.equal(f.uptime, 3600);
  assert.equal(f.version, "0.1.0");
  const only = dashboardFigures(null, status);
  assert.equal(only.packets, 1000);
  assert.equal(only.bytes, null);
  assert.equal(dashboardFigures(null, null).connections, null);
});

test("the table breaks down by protocol and by state", () => {
  const b = tableBreakdown(stats);
  assert.deepEqual(b.proto, [["tcp", 3], ["udp", 1]]);
  assert.deepEqual(b.state, [["ESTABLISHED", 2], ["ASSURED", 1], ["TIME_WAIT", 1]]);
  assert.deepEqual(tableBreakdown(null), { proto: [], state: [] });
  assert.deepEqual(tableBreakdown({ by_proto: { udp: 2 } }).proto, [["udp", 2]]);
});

test("drops by reason, from the router or the status's top five", () => {
  assert.deepEqual(dropsByReason(stats, status), [["zone-policy", 7], ["tcp-not-syn", 3]]);
  assert.deepEqual(dropsByReason(null, status), [["zone-policy", 7]]);
  assert.deepEqual(dropsByReason({}, {}), []);
});

test("interfaces: counters when reported, else the names", () => {
  assert.deepEqual(interfaceRows(stats, status), { names: ["lan", "wan"], rows: [] });
  const withCounters = interfaceRows({ interfaces: { lan: { rx_packets: 5 } } }, null);
  assert.deepEqual(withCounters.rows, [{ name: "lan", rx_packets: 5 }]);
  assert.deepEqual(withCounters.names, ["lan"]);
});

test("pairs and flattening", () => {
  assert.deepEqual(toPairs({ a: 1, b: 3, c: "x" }), [["b", 3], ["a", 1]]);
  assert.deepEqual(toPairs([{ name: "x", count: 2 }, { key: "y", value: 5 }]), [["y", 5], ["x", 2]]);
  assert.deepEqual(toPairs([4, 9], ["new", "est"]), [["est", 9], ["new", 4]]);
  assert.deepEqual(flattenNumbers({ a: 1, b: { c: 2, d: "s" }, e: [3] }), [["a", 1], ["b.c", 2], ["e.0", 3]]);
});
