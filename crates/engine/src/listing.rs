//! Connection listings in the formats operators already read: `conntrack -L` and
//! `/proc/net/nf_conntrack`, and `conntrack -E` events.

use crate::engine::{Conn, L4Tuple, Tuple};
use crate::events::{Event, EventKind};
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

/// One line of `conntrack -E` (no trailing newline), as libnetfilter_conntrack prints what
/// the kernel sends: the event type right-aligned in 9 columns; for NEW and UPDATE the
/// timeout, the TCP state (on UPDATE only when it changed) and no counters; for DESTROY the
/// timeout only if some was left (an entry removed before it expired), the TCP state and
/// the counters. No `mark=` (the kernel sends a zero mark only when it changed) and no
/// `use=`.
pub fn event_line(ev: &Event) -> String {
    let c = &ev.conn;
    let destroy = ev.kind == EventKind::Destroy;
    let mut out = String::with_capacity(256);
    let tag = match ev.kind {
        EventKind::New => "[NEW]",
        EventKind::Update => "[UPDATE]",
        EventKind::Destroy => "[DESTROY]",
    };
    let _ = write!(out, "{tag:>9} {:<8} {} ", proto_name(c.proto), c.proto);
    if !destroy || c.timeout > 0 {
        let _ = write!(out, "{} ", c.timeout);
    }
    if let Some(s) = c.tcp_state {
        if ev.state_changed {
            let _ = write!(out, "{} ", s.name());
        }
    }
    tuple(&mut out, &c.original);
    if destroy {
        let _ = write!(out, "packets={} bytes={} ", c.packets[0], c.bytes[0]);
    }
    if !c.seen_reply {
        out.push_str("[UNREPLIED] ");
    }
    tuple(&mut out, &c.reply);
    if destroy {
        let _ = write!(out, "packets={} bytes={} ", c.packets[1], c.bytes[1]);
    }
    if c.assured {
        out.push_str("[ASSURED] ");
    }
    // libnetfilter_conntrack drops the last separator.
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TcpState;
    use core::net::{IpAddr, Ipv4Addr};

    fn conn(state: Option<TcpState>, proto: u8) -> Conn {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        Conn {
            family: Family::V4,
            proto,
            original: Tuple {
                src: a,
                dst: b,
                l4: L4Tuple::Ports {
                    sport: 40000,
                    dport: 80,
                },
            },
            reply: Tuple {
                src: b,
                dst: a,
                l4: L4Tuple::Ports {
                    sport: 80,
                    dport: 40000,
                },
            },
            tcp_state: state,
            seen_reply: false,
            assured: false,
            timeout: 120,
            age: 0,
            packets: [1, 0],
            bytes: [60, 0],
        }
    }

    #[test]
    fn event_lines_match_conntrack_tools() {
        let new = Event {
            kind: EventKind::New,
            conn: conn(Some(TcpState::SynSent), 6),
            state_changed: true,
        };
        assert_eq!(
            event_line(&new),
            "    [NEW] tcp      6 120 SYN_SENT src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 \
             [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000"
        );
        let mut c = conn(Some(TcpState::Established), 6);
        c.seen_reply = true;
        c.assured = true;
        c.timeout = 432_000;
        let upd = Event {
            kind: EventKind::Update,
            conn: c,
            state_changed: true,
        };
        assert_eq!(
            event_line(&upd),
            " [UPDATE] tcp      6 432000 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 \
             dport=80 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED]"
        );
        c.tcp_state = Some(TcpState::TimeWait);
        c.timeout = 0;
        c.packets = [5, 4];
        c.bytes = [300, 280];
        let gone = Event {
            kind: EventKind::Destroy,
            conn: c,
            state_changed: true,
        };
        assert_eq!(
            event_line(&gone),
            "[DESTROY] tcp      6 TIME_WAIT src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 \
             packets=5 bytes=300 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=4 \
             bytes=280 [ASSURED]"
        );
        let mut u = conn(None, 17);
        u.timeout = 30;
        u.seen_reply = true;
        let udp = Event {
            kind: EventKind::Update,
            conn: u,
            state_changed: false,
        };
        assert_eq!(
            event_line(&udp),
            " [UPDATE] udp      17 30 src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 \
             src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000"
        );
        // Removed before it expired: the time left is reported.
        u.timeout = 25;
        let removed = Event {
            kind: EventKind::Destroy,
            conn: u,
            state_changed: true,
        };
        assert_eq!(
            event_line(&removed),
            "[DESTROY] udp      17 25 src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 packets=1 \
             bytes=60 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 packets=0 bytes=0"
        );
    }
}
