//! Writing policy parts back in the file's own vocabulary, for summaries and messages.

use core::fmt::Write as _;

use keepstate_engine::{proto_name, CtState, Direction, Family};

use super::values;
use crate::model::{AddrItem, AddrMatch, IpNet, Limit, Match, Policy, PortMatch, ZoneSel};

/// A match as `field=value` words (`family=ipv4 proto=tcp dest_port=22 ct_state=new`);
/// zones are left out, since callers show them as the chain. Empty when it matches anything.
pub fn describe_match(policy: &Policy, m: &Match) -> String {
    let mut out = String::new();
    let mut word = |key: &str, value: String| {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{key}={value}");
    };
    let iface = |id: u16| {
        policy
            .interfaces
            .get(usize::from(id))
            .map_or_else(|| format!("#{id}"), |i| i.name.clone())
    };
    if let Some(i) = m.in_iface {
        word("in_iface", iface(i));
    }
    if let Some(i) = m.out_iface {
        word("out_iface", iface(i));
    }
    if let Some(f) = m.family {
        word(
            "family",
            match f {
                Family::V4 => "ipv4",
                Family::V6 => "ipv6",
            }
            .to_string(),
        );
    }
    if !m.proto.is_empty() {
        let names: Vec<String> = m
            .proto
            .iter()
            .map(|&p| match values::protocol_name(p) {
                Some(n) => n.to_string(),
                None if proto_name(p) != "unknown" => proto_name(p).to_string(),
                None => p.to_string(),
            })
            .collect();
        word("proto", names.join(","));
    }
    if !m.src_addr.is_any() {
        word("src_ip", addrs(policy, &m.src_addr));
    }
    if !m.dst_addr.is_any() {
        word("dest_ip", addrs(policy, &m.dst_addr));
    }
    if !m.sport.is_any() {
        word("src_port", ports(&m.sport));
    }
    if !m.dport.is_any() {
        word("dest_port", ports(&m.dport));
    }
    if !m.icmp.is_empty() {
        let mut names: Vec<String> = Vec::new();
        for i in &m.icmp {
            let n = values::icmp_name(i);
            if !names.contains(&n) {
                names.push(n);
            }
        }
        word("icmp_type", names.join(","));
    }
    if let Some(f) = m.tcp_flags {
        let names: Vec<String> = values::tcp_flag_names()
            .filter(|(_, bit)| f.mask & bit != 0)
            .map(|(n, bit)| {
                if f.value & bit != 0 {
                    n.to_string()
                } else {
                    format!("!{n}")
                }
            })
            .collect();
        word("tcp_flags", names.join(","));
    }
    if m.ct_state.0 != 0 {
        let names: Vec<&str> = CtState::ALL
            .iter()
            .filter(|s| m.ct_state.contains(**s))
            .map(|s| s.name())
            .collect();
        word("ct_state", names.join(","));
    }
    if let Some(d) = m.ct_dir {
        word(
            "ct_direction",
            match d {
                Direction::Original => "original",
                Direction::Reply => "reply",
            }
            .to_string(),
        );
    }
    out
}

/// A rate as the file writes it: `5/s burst 10`.
pub fn describe_limit(l: &Limit) -> String {
    let secs = l.per.as_secs();
    let unit = match secs {
        1 => "s".to_string(),
        60 => "minute".to_string(),
        3600 => "hour".to_string(),
        86_400 => "day".to_string(),
        _ => format!("{}", l.per),
    };
    let mut s = format!("{}/{unit} burst {}", l.count, l.burst);
    if l.per_source {
        s.push_str(" per source");
    }
    s
}

/// A zone selector as the file writes it; the firewall itself when `None`.
pub fn describe_zone(policy: &Policy, z: Option<ZoneSel>) -> String {
    match z {
        None => "firewall".to_string(),
        Some(ZoneSel::Any) => "*".to_string(),
        Some(ZoneSel::Zone(id)) => policy
            .zones
            .get(usize::from(id))
            .map_or_else(|| format!("#{id}"), |z| z.name.clone()),
    }
}

fn addrs(policy: &Policy, m: &AddrMatch) -> String {
    let neg = if m.negate { "!" } else { "" };
    let items: Vec<String> = m
        .items
        .iter()
        .map(|i| match i {
            AddrItem::Net(n) if is_host(n) => format!("{neg}{}", n.addr),
            AddrItem::Net(n) => format!("{neg}{n}"),
            AddrItem::Set(id) => {
                let name = usize::try_from(*id)
                    .ok()
                    .and_then(|i| policy.sets.get(i))
                    .map_or_else(|| format!("#{id}"), |s| s.name.clone());
                format!("{neg}@{name}")
            }
        })
        .collect();
    items.join(",")
}

fn ports(m: &PortMatch) -> String {
    let items: Vec<String> = m
        .ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    items.join(",")
}

/// A single address rather than a prefix.
fn is_host(n: &IpNet) -> bool {
    n.len == if n.addr.is_ipv4() { 32 } else { 128 }
}
