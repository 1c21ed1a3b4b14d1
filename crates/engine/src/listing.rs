//! Connection listings in the formats operators already read: `conntrack -L` and
//! `/proc/net/nf_conntrack`.

use crate::engine::{Conn, L4Tuple, Tuple};
use crate::wire::Family;
use core::fmt::Write;

/// Protocol name as conntrack prints it; protocols tracked generically print as `unknown`
/// unless they have a well-known name.
pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => "unknown",
    }
}

fn tuple(out: &mut String, t: &Tuple) {
    let _ = write!(out, "src={} dst={} ", t.src, t.dst);
    match t.l4 {
        L4Tuple::Ports { sport, dport } => {
            let _ = write!(out, "sport={sport} dport={dport} ");
        }
        L4Tuple::Icmp { ty, code, id } => {
            let _ = write!(out, "type={ty} code={code} id={id} ");
        }
        L4Tuple::None => {}
    }
}

fn body(out: &mut String, c: &Conn, counters: bool) {
    let _ = write!(out, "{:<8} {} {} ", proto_name(c.proto), c.proto, c.timeout);
    if let Some(s) = c.tcp_state {
        let _ = write!(out, "{} ", s.name());
    }
    tuple(out, &c.original);
    if counters {
        let _ = write!(out, "packets={} bytes={} ", c.packets[0], c.bytes[0]);
    }
    if !c.seen_reply {
        out.push_str("[UNREPLIED] ");
    }
    tuple(out, &c.reply);
    if counters {
        let _ = write!(out, "packets={} bytes={} ", c.packets[1], c.bytes[1]);
    }
    if c.assured {
        out.push_str("[ASSURED] ");
    }
    out.push_str("mark=0 ");
}

/// One line of `conntrack -L` with accounting on (no trailing newline).
pub fn conntrack_line(c: &Conn) -> String {
    let mut out = String::with_capacity(256);
    body(&mut out, c, true);
    out.push_str("use=1");
    out
}

/// One line of `conntrack -L -o extended`: the `conntrack -L` line after the layer 3
/// protocol's name and number (no trailing newline).
pub fn extended_line(c: &Conn) -> String {
    let mut out = String::with_capacity(256);
    let (l3, num) = l3(c);
    let _ = write!(out, "{l3:<8} {num} ");
    body(&mut out, c, true);
    out.push_str("use=1");
    out
}

fn l3(c: &Conn) -> (&'static str, u8) {
    match c.family {
        Family::V4 => ("ipv4", 2),
        Family::V6 => ("ipv6", 10),
    }
}

/// One line of `/proc/net/nf_conntrack` (no trailing newline).
pub fn proc_line(c: &Conn) -> String {
    let mut out = String::with_capacity(256);
    let (l3, num) = l3(c);
    let _ = write!(out, "{l3:<8} {num} ");
    body(&mut out, c, true);
    out.push_str("zone=0 use=2");
    out
}
