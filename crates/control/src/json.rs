//! Responses as JSON, in the shapes the OpenAPI document (`openapi.json`) describes.

use keepstate_engine::listing::{conntrack_line, extended_line, proc_line};
use keepstate_engine::{proto_name, Conn, CtState, DropReason, Family, L4Tuple, Tuple};
use serde_json::{json, Map, Value};

use crate::rules::{DropRow, RuleRow, Rules};
use crate::{Response, Stats, Status, RELOAD_REPORT};

fn tuple(t: &Tuple, packets: u64, bytes: u64) -> Value {
    let mut m = Map::new();
    m.insert("src".into(), json!(t.src.to_string()));
    m.insert("dst".into(), json!(t.dst.to_string()));
    match t.l4 {
        L4Tuple::Ports { sport, dport } => {
            m.insert("sport".into(), json!(sport));
            m.insert("dport".into(), json!(dport));
        }
        L4Tuple::Icmp { ty, code, id } => {
            m.insert("type".into(), json!(ty));
            m.insert("code".into(), json!(code));
            m.insert("id".into(), json!(id));
        }
        L4Tuple::None => {}
    }
    m.insert("packets".into(), json!(packets));
    m.insert("bytes".into(), json!(bytes));
    Value::Object(m)
}

/// One connection: both tuples with their counters, state, timeout, flags, zone and mark,
/// and the line `conntrack -L` prints for it.
pub fn conn(c: &Conn) -> Value {
    let mut flags = Vec::new();
    if c.seen_reply {
        flags.push("SEEN_REPLY");
    } else {
        flags.push("UNREPLIED");
    }
    if c.assured {
        flags.push("ASSURED");
    }
    json!({
        "family": match c.family { Family::V4 => "ipv4", Family::V6 => "ipv6" },
        "proto": proto_name(c.proto),
        "protonum": c.proto,
        "state": c.tcp_state.map(|s| s.name()),
        "timeout": c.timeout,
        "age": c.age,
        "original": tuple(&c.original, c.packets[0], c.bytes[0]),
        "reply": tuple(&c.reply, c.packets[1], c.bytes[1]),
        "flags": flags,
        "zone": 0,
        "mark": 0,
        "line": conntrack_line(c),
        "extended": extended_line(c),
    })
}

fn drops(d: &[u64]) -> Value {
    let mut m = Map::new();
    for r in DropReason::ALL {
        let n = d.get(r.index()).copied().unwrap_or(0);
        if n > 0 {
            m.insert(r.name().into(), json!(n));
        }
    }
    Value::Object(m)
}

pub fn stats(s: &Stats) -> Value {
    let e = &s.engine;
    let by_state: Map<String, Value> = CtState::ALL
        .iter()
        .map(|&st| {
            (
                st.name().to_string(),
                json!(e.by_state.get(st as usize).copied().unwrap_or(0)),
            )
        })
        .collect();
    let mut table: Vec<Value> = Vec::new();
    for ((proto, state), n) in &s.by_proto_state {
        table.push(json!({"proto": proto, "state": state, "count": n}));
    }
    let f = &s.firewall;
    let r = &s.router;
    json!({
        "connections": s.connections,
        "limit": s.limit,
        "memory_bytes": s.memory_bytes,
        "table": table,
        "engine": {
            "packets": e.packets,
            "bytes": e.bytes,
            "by_state": by_state,
            "invalid_by_reason": drops(&e.by_reason),
            "created": e.created,
            "expired": e.expired,
            "evicted": e.evicted,
            "refused": e.refused,
            "unconfirmed": e.unconfirmed,
            "removed": e.removed,
            "peak": e.peak,
        },
        "firewall": {
            "accepted": f.accepted,
            "dropped": f.dropped,
            "accepted_bytes": f.accepted_bytes,
            "dropped_bytes": f.dropped_bytes,
            "rejected": f.rejected,
            "replies": f.replies,
            "notracked": f.notracked,
            "logged": f.logged,
        },
        "router": {
            "forwarded": r.forwarded,
            "local": r.local,
            "queued": r.queued,
            "dropped": drops(&r.dropped),
            "icmp_errors_sent": r.icmp_errors_sent,
            "resets_sent": r.resets_sent,
            "echo_replies_sent": r.echo_replies_sent,
            "rejects_sent": r.rejects_sent,
            "fragments_sent": r.fragments_sent,
        },
        "interfaces": s.interfaces.iter().map(|(name, p)| json!({
            "name": name,
            "rx_packets": p.rx_packets,
            "rx_bytes": p.rx_bytes,
            "tx_packets": p.tx_packets,
            "tx_bytes": p.tx_bytes,
            "dropped": p.dropped,
        })).collect::<Vec<Value>>(),
        "workers": s.workers.iter().enumerate().map(|(n, w)| json!({
            "worker": n,
            "batches": w.batches,
            "frames": w.frames,
            "lock_wait_ns": w.lock_wait_ns,
        })).collect::<Vec<Value>>(),
        "nat": {
            "connections": s.nat_connections,
            "ports_in_use": s.nat_ports_in_use,
            "created": s.nat.as_ref().map_or(0, |n| n.created),
            "released": s.nat.as_ref().map_or(0, |n| n.released),
            "exhausted": s.nat.as_ref().map_or(0, |n| n.exhausted),
        },
    })
}

pub fn status(s: &Status, uptime_s: u64) -> Value {
    let top: Vec<Value> = s
        .top_drops
        .iter()
        .map(|(r, n)| json!({"reason": r.name(), "count": n}))
        .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": uptime_s,
        "connections": s.connections,
        "limit": s.limit,
        "memory_bytes": s.memory_bytes,
        "packets": s.packets,
        "accepted": s.accepted,
        "dropped": s.dropped,
        "forwarded": s.forwarded,
        "local": s.local,
        "top_drops": top,
        "nat_connections": s.nat_connections,
        "interfaces": s.interfaces,
    })
}

/// The JSON body for a response (`uptime_s` is for [`Response::Status`]).
pub fn response(r: &Response, uptime_s: u64) -> Value {
    match r {
        Response::List {
            total,
            offset,
            items,
        } => json!({
            "total": total,
            "offset": offset,
            "count": items.len(),
            "items": items.iter().map(conn).collect::<Vec<_>>(),
        }),
        Response::Count { count } => json!({ "count": count }),
        Response::Deleted { count, items } => json!({
            "deleted": count,
            "items": items.iter().map(conn).collect::<Vec<_>>(),
        }),
        Response::Flushed { count } => json!({ "deleted": count }),
        Response::Stats(s) => stats(s),
        Response::Status(s) => status(s, uptime_s),
        Response::Reloaded(r) => reloaded(r, &[]),
        Response::Rules(r) => rules(r),
        Response::Drops(d) => drop_log(d, std::time::SystemTime::now()),
    }
}

/// A reload's outcome: counts, the first [`RELOAD_REPORT`] connections the new policy
/// refused (as `conntrack -L` lines), notes and the file's warnings.
pub fn reloaded(r: &keepstate_policy::firewall::ReloadReport, warnings: &[String]) -> Value {
    json!({
        "ok": true,
        "checked": r.checked,
        "forbidden": r.forbidden,
        "removed": r.removed,
        "connections": r.kept,
        "refused": r.listed.iter().take(RELOAD_REPORT).map(conntrack_line).collect::<Vec<_>>(),
        "notes": r.notes,
        "warnings": warnings,
    })
}

fn rule_row(r: &RuleRow) -> Value {
    let mut m = Map::new();
    m.insert("index".into(), json!(r.index));
    m.insert("name".into(), json!(r.name));
    m.insert("src".into(), json!(r.src));
    m.insert("dest".into(), json!(r.dest));
    for (k, v) in &r.fields {
        m.insert(k.clone(), json!(v));
    }
    m.insert("target".into(), json!(r.target));
    m.insert("log".into(), json!(r.log));
    if let Some(l) = &r.limit {
        m.insert("limit".into(), json!(l));
    }
    m.insert("hits".into(), json!(r.packets));
    m.insert("packets".into(), json!(r.packets));
    m.insert("bytes".into(), json!(r.bytes));
    Value::Object(m)
}

/// The policy in force, in the shape the web interface's firewall page reads.
pub fn rules(r: &Rules) -> Value {
    json!({
        "zones": r.zones.iter().map(|z| json!({
            "name": z.name,
            "interfaces": z.interfaces,
            "networks": z.networks,
            "input": z.input,
            "output": z.output,
            "forward": z.forward,
            "masq": z.masquerade,
        })).collect::<Vec<_>>(),
        "rules": r.rules.iter().map(rule_row).collect::<Vec<_>>(),
        "forwards": r.forwards.iter().map(|(s, d)| json!({"src": s, "dest": d})).collect::<Vec<_>>(),
        "port_forwards": r.port_forwards.iter().map(|f| json!({
            "index": f.index,
            "name": f.name,
            "src": f.src,
            "proto": f.proto,
            "external_ip": f.external_ip,
            "src_dport": f.src_dport,
            "dest_ip": f.dest_ip,
            "dest_port": f.dest_port,
            "reflection": f.reflection,
        })).collect::<Vec<_>>(),
        "notrack": r.notrack.iter().map(rule_row).collect::<Vec<_>>(),
    })
}

/// The drop log, newest first; `time` in seconds since the epoch (milliseconds as the
/// fraction), worked out from each drop's age and the wall clock `wall`.
pub fn drop_log(d: &[DropRow], wall: std::time::SystemTime) -> Value {
    let wall_ms = wall
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let items: Vec<Value> = d
        .iter()
        .map(|r| {
            let ms = wall_ms.saturating_sub(r.age_ns / 1_000_000);
            json!({
                "time": ms / 1000,
                "time_ms": ms,
                "age_s": r.age_ns / 1_000_000_000,
                "reason": r.reason.name(),
                "rule": r.rule,
                "iface": r.iface,
                "out": r.out_iface,
                "proto": r.proto,
                "src": r.src,
                "sport": r.sport,
                "dst": r.dst,
                "dport": r.dport,
                "len": r.len,
            })
        })
        .collect();
    json!({ "count": items.len(), "items": items })
}

/// A connection's line in a text format.
pub fn line(c: &Conn, format: crate::Format) -> String {
    match format {
        crate::Format::Extended => extended_line(c),
        crate::Format::Proc => proc_line(c),
        _ => conntrack_line(c),
    }
}
