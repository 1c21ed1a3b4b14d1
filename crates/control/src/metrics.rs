//! Prometheus metrics, in the text exposition format (version 0.0.4).

use core::fmt::Write;

use keepstate_engine::DropReason;

use crate::Stats;

/// The content type `/metrics` answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP keepstate_{name} {help}");
        let _ = writeln!(self.0, "# TYPE keepstate_{name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl core::fmt::Display) {
        let _ = write!(self.0, "keepstate_{name}");
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                // Label values here are fixed names (protocols, states, reasons): nothing
                // to escape, but keep the format right should one ever hold a quote.
                let val = val.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = write!(self.0, "{k}=\"{val}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: impl core::fmt::Display) {
        self.head(name, kind, help);
        self.value(name, &[], v);
    }
}

/// The metrics for `s`, with the process's uptime.
pub fn render(s: &Stats, uptime_s: u64) -> String {
    let mut o = Out(String::with_capacity(8192));
    let f = &s.firewall;
    o.head(
        "packets_total",
        "counter",
        "Packets the firewall judged, by verdict.",
    );
    o.value("packets_total", &[("verdict", "accept")], f.accepted);
    o.value("packets_total", &[("verdict", "drop")], f.dropped);
    o.head(
        "bytes_total",
        "counter",
        "IP bytes (headers included) of the packets the firewall judged, by verdict.",
    );
    o.value("bytes_total", &[("verdict", "accept")], f.accepted_bytes);
    o.value("bytes_total", &[("verdict", "drop")], f.dropped_bytes);
    o.head(
        "drops_total",
        "counter",
        "Frames the router dropped, by reason (each drop counted once).",
    );
    for r in DropReason::ALL {
        o.value(
            "drops_total",
            &[("reason", r.name())],
            s.router.dropped_for(*r),
        );
    }
    o.one(
        "forwarded_total",
        "counter",
        "Frames the router forwarded.",
        s.router.forwarded,
    );
    o.one(
        "local_total",
        "counter",
        "Frames for the router itself.",
        s.router.local,
    );
    o.head(
        "connections",
        "gauge",
        "Connections in the table, by protocol and state (the TCP state, or UNREPLIED, \
         REPLIED, ASSURED).",
    );
    for ((proto, state), n) in &s.by_proto_state {
        o.value("connections", &[("proto", proto), ("state", state)], n);
    }
    o.one(
        "connections_limit",
        "gauge",
        "Most connections the table holds.",
        s.limit,
    );
    let fill = if s.limit == 0 {
        0.0
    } else {
        // Both far below 2^52: exact in f64.
        #[allow(clippy::cast_precision_loss)]
        let r = s.connections as f64 / f64::from(s.limit);
        r
    };
    o.one(
        "table_fill_ratio",
        "gauge",
        "Connections in the table over its limit.",
        fill,
    );
    o.one(
        "table_memory_bytes",
        "gauge",
        "Memory the connection table holds.",
        s.memory_bytes,
    );
    let e = &s.engine;
    for (name, help, v) in [
        (
            "connections_created_total",
            "Connections created.",
            e.created,
        ),
        (
            "connections_expired_total",
            "Connections removed when their timeout passed.",
            e.expired,
        ),
        (
            "connections_evicted_total",
            "Unassured connections removed early to make room in a full table.",
            e.evicted,
        ),
        (
            "connections_refused_total",
            "New connections refused because the table was full.",
            e.refused,
        ),
        (
            "connections_removed_total",
            "Connections removed through the control API (conntrack -D, -F).",
            e.removed,
        ),
    ] {
        o.one(name, "counter", help, v);
    }
    o.one(
        "nat_connections",
        "gauge",
        "Translated connections in the table.",
        s.nat_connections,
    );
    o.one(
        "nat_ports_in_use",
        "gauge",
        "Distinct (protocol, address, port) triples given out by source NAT.",
        s.nat_ports_in_use,
    );
    o.one(
        "nat_ports_exhausted_total",
        "counter",
        "New connections refused because no NAT port was free.",
        s.nat.as_ref().map_or(0, |n| n.exhausted),
    );
    type PortField = fn(&keepstate_dataplane::router::PortStats) -> u64;
    let per_port: [(&str, &str, PortField); 5] = [
        (
            "interface_rx_packets_total",
            "Frames received on the interface.",
            |p| p.rx_packets,
        ),
        (
            "interface_rx_bytes_total",
            "Bytes of the frames received on the interface.",
            |p| p.rx_bytes,
        ),
        (
            "interface_tx_packets_total",
            "Frames the router sent out of the interface.",
            |p| p.tx_packets,
        ),
        (
            "interface_tx_bytes_total",
            "Bytes of the frames the router sent out of the interface.",
            |p| p.tx_bytes,
        ),
        (
            "interface_dropped_total",
            "Frames received on the interface and dropped (any reason).",
            |p| p.dropped,
        ),
    ];
    for (name, help, field) in per_port {
        o.head(name, "counter", help);
        for (iface, p) in &s.interfaces {
            o.value(name, &[("interface", iface)], field(p));
        }
    }
    type WorkerField = fn(&keepstate_dataplane::router::WorkerStats) -> String;
    let per_worker: [(&str, &str, WorkerField); 3] = [
        ("worker_batches_total", "Batches of frames a worker thread handled.", |w| w.batches.to_string()),
        ("worker_frames_total", "Frames a worker thread read and handed to the router.", |w| w.frames.to_string()),
        (
            "worker_lock_wait_seconds_total",
            "Time a worker thread waited for the shared router (the cost of one state for all workers).",
            #[allow(clippy::cast_precision_loss)]
            |w| format!("{:.9}", w.lock_wait_ns as f64 / 1e9),
        ),
    ];
    for (name, help, field) in per_worker {
        o.head(name, "counter", help);
        for (n, w) in s.workers.iter().enumerate() {
            o.value(name, &[("worker", &n.to_string())], field(w));
        }
    }
    o.one(
        "uptime_seconds",
        "gauge",
        "Seconds since the control API started.",
        uptime_s,
    );
    o.0
}
