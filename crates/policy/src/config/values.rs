//! Parsers for the configuration's scalar notations: prefixes, ports, protocols, ICMP types,
//! TCP flags, connection states, rates and MAC addresses.
//!
//! Each works on one string and, on failure, says where in it the problem starts, so the
//! caller can point the message at the exact character of the file.

use core::net::IpAddr;

use keepstate_engine::{CtState, Time};

use crate::model::{IcmpMatch, IpNet, Limit, TcpFlagsMatch};

/// A problem at byte `at` of the parsed string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ValueError {
    pub at: usize,
    pub msg: String,
}

fn err<T>(at: usize, msg: impl Into<String>) -> Result<T, ValueError> {
    Err(ValueError {
        at,
        msg: msg.into(),
    })
}

pub(crate) const PREFIX_FORM: &str =
    "expected an address with an optional prefix length, like 192.0.2.0/24, 198.51.100.7 or \
    2001:db8::/32";

/// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (full length unless `need_len`).
pub(crate) fn prefix(s: &str, need_len: bool) -> Result<IpNet, ValueError> {
    let (addr_s, len_s) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let Ok(addr) = addr_s.parse::<IpAddr>() else {
        return err(0, format!("`{s}` is not an address: {PREFIX_FORM}"));
    };
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let fam = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let Some(len_s) = len_s else {
        if need_len {
            return err(
                0,
                format!(
                    "`{s}` has no prefix length: expected the address with its prefix, like {}",
                    if addr.is_ipv4() {
                        "192.168.1.1/24"
                    } else {
                        "2001:db8:1::1/64"
                    }
                ),
            );
        }
        return Ok(IpNet::host(addr));
    };
    let at = addr_s.len() + 1;
    if len_s.is_empty() || !len_s.bytes().all(|b| b.is_ascii_digit()) {
        return err(
            at,
            format!("`{len_s}` is not a prefix length: expected a number from 0 to {width}"),
        );
    }
    match len_s
        .parse::<u8>()
        .ok()
        .and_then(|len| IpNet::new(addr, len))
    {
        Some(net) => Ok(net),
        None => err(
            at,
            format!("prefix length {len_s} is out of range for {fam} (0 to {width})"),
        ),
    }
}

/// One port or an inclusive range: `80`, `1024-65535`.
pub(crate) fn port_range(s: &str) -> Result<(u16, u16), ValueError> {
    let (lo_s, hi) = match s.split_once('-') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let lo = port(lo_s.trim(), 0)?;
    let Some(hi_s) = hi else {
        return Ok((lo, lo));
    };
    let hi_at = lo_s.len() + 1;
    let hi = port(hi_s.trim(), hi_at)?;
    if lo > hi {
        return err(
            0,
            format!("reversed port range {lo}-{hi}: the first port must not exceed the second"),
        );
    }
    Ok((lo, hi))
}

fn port(s: &str, at: usize) -> Result<u16, ValueError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(
            at,
            format!(
                "`{s}` is not a port: expected a number from 0 to 65535 or a range like 1024-65535"
            ),
        );
    }
    match s.parse::<u16>() {
        Ok(p) => Ok(p),
        Err(_) => err(at, format!("port {s} is out of range (0 to 65535)")),
    }
}

/// IP protocol names as /etc/protocols, nftables and fw4 spell them.
const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("ipip", 4),
    ("ipencap", 4),
    ("tcp", 6),
    ("egp", 8),
    ("udp", 17),
    ("dccp", 33),
    ("ipv6", 41),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", 58),
    ("ipv6-icmp", 58),
    ("eigrp", 88),
    ("ospf", 89),
    ("etherip", 97),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
];

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const ICMP: u8 = 1;
pub(crate) const ICMPV6: u8 = 58;

/// Protocols whose packets carry ports.
pub(crate) const WITH_PORTS: &[u8] = &[6, 17, 33, 132, 136];

/// What a protocol name stands for: one protocol, both TCP and UDP (fw4's `tcpudp`), or any.
pub(crate) enum Proto {
    One(u8),
    TcpUdp,
    Any,
}

pub(crate) fn protocol(s: &str) -> Result<Proto, ValueError> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "all" | "any" => return Ok(Proto::Any),
        "tcpudp" => return Ok(Proto::TcpUdp),
        _ => {}
    }
    if let Some(&(_, n)) = PROTOCOLS.iter().find(|(name, _)| *name == lower) {
        return Ok(Proto::One(n));
    }
    if !lower.is_empty() && lower.bytes().all(|b| b.is_ascii_digit()) {
        return match lower.parse::<u8>() {
            Ok(n) => Ok(Proto::One(n)),
            Err(_) => err(0, format!("protocol number {s} is out of range (0 to 255)")),
        };
    }
    let names: Vec<&str> = PROTOCOLS.iter().map(|(n, _)| *n).collect();
    err(
        0,
        format!(
            "unknown protocol `{s}`{}: expected a name ({}, tcpudp, all) or a number from 0 to 255",
            suggest(&lower, names.iter().copied()),
            names.join(", ")
        ),
    )
}

/// The name to show for protocol `n`.
pub(crate) fn protocol_name(n: u8) -> Option<&'static str> {
    PROTOCOLS
        .iter()
        .find(|(_, p)| *p == n)
        .map(|(name, _)| *name)
}

/// ICMP type names (iptables', which OpenWrt uses, and nftables'), with the code where the
/// name stands for one.
const ICMP4_NAMES: &[(&str, u8, Option<u8>)] = &[
    ("echo-reply", 0, None),
    ("pong", 0, None),
    ("destination-unreachable", 3, None),
    ("network-unreachable", 3, Some(0)),
    ("host-unreachable", 3, Some(1)),
    ("protocol-unreachable", 3, Some(2)),
    ("port-unreachable", 3, Some(3)),
    ("fragmentation-needed", 3, Some(4)),
    ("source-route-failed", 3, Some(5)),
    ("network-unknown", 3, Some(6)),
    ("host-unknown", 3, Some(7)),
    ("network-prohibited", 3, Some(9)),
    ("host-prohibited", 3, Some(10)),
    ("tos-network-unreachable", 3, Some(11)),
    ("tos-host-unreachable", 3, Some(12)),
    ("communication-prohibited", 3, Some(13)),
    ("host-precedence-violation", 3, Some(14)),
    ("precedence-cutoff", 3, Some(15)),
    ("source-quench", 4, None),
    ("redirect", 5, None),
    ("network-redirect", 5, Some(0)),
    ("host-redirect", 5, Some(1)),
    ("tos-network-redirect", 5, Some(2)),
    ("tos-host-redirect", 5, Some(3)),
    ("echo-request", 8, None),
    ("ping", 8, None),
    ("router-advertisement", 9, None),
    ("router-solicitation", 10, None),
    ("time-exceeded", 11, None),
    ("ttl-exceeded", 11, None),
    ("ttl-zero-during-transit", 11, Some(0)),
    ("ttl-zero-during-reassembly", 11, Some(1)),
    ("parameter-problem", 12, None),
    ("ip-header-bad", 12, Some(0)),
    ("required-option-missing", 12, Some(1)),
    ("timestamp-request", 13, None),
    ("timestamp-reply", 14, None),
    ("info-request", 15, None),
    ("info-reply", 16, None),
    ("address-mask-request", 17, None),
    ("address-mask-reply", 18, None),
];

const ICMP6_NAMES: &[(&str, u8, Option<u8>)] = &[
    ("destination-unreachable", 1, None),
    ("no-route", 1, Some(0)),
    ("communication-prohibited", 1, Some(1)),
    ("beyond-scope", 1, Some(2)),
    ("address-unreachable", 1, Some(3)),
    ("port-unreachable", 1, Some(4)),
    ("failed-policy", 1, Some(5)),
    ("reject-route", 1, Some(6)),
    ("packet-too-big", 2, None),
    ("time-exceeded", 3, None),
    ("ttl-exceeded", 3, None),
    ("ttl-zero-during-transit", 3, Some(0)),
    ("ttl-zero-during-reassembly", 3, Some(1)),
    ("parameter-problem", 4, None),
    ("bad-header", 4, Some(0)),
    ("unknown-header-type", 4, Some(1)),
    ("unknown-option", 4, Some(2)),
    ("echo-request", 128, None),
    ("ping", 128, None),
    ("echo-reply", 129, None),
    ("pong", 129, None),
    ("mld-listener-query", 130, None),
    ("mld-listener-report", 131, None),
    ("mld-listener-done", 132, None),
    ("mld-listener-reduction", 132, None),
    ("router-solicitation", 133, None),
    ("nd-router-solicit", 133, None),
    ("router-advertisement", 134, None),
    ("nd-router-advert", 134, None),
    ("neighbour-solicitation", 135, None),
    ("neighbor-solicitation", 135, None),
    ("nd-neighbor-solicit", 135, None),
    ("neighbour-advertisement", 136, None),
    ("neighbor-advertisement", 136, None),
    ("nd-neighbor-advert", 136, None),
    ("redirect", 137, None),
    ("nd-redirect", 137, None),
    ("router-renumbering", 138, None),
    ("ind-neighbor-solicit", 141, None),
    ("ind-neighbor-advert", 142, None),
    ("mld2-listener-report", 143, None),
];

/// An ICMP type for the families the rule allows: a name or `type` / `type/code` numbers.
/// A name that exists for only one of the allowed families gives one entry; numbers give one
/// per allowed family.
pub(crate) fn icmp_type(s: &str, v4: bool, v6: bool) -> Result<Vec<IcmpMatch>, ValueError> {
    let lower = s.to_ascii_lowercase();
    if lower.starts_with(|c: char| c.is_ascii_digit()) {
        let (ty_s, code_s) = match lower.split_once('/') {
            Some((t, c)) => (t, Some(c)),
            None => (lower.as_str(), None),
        };
        let ty = icmp_number(ty_s, 0, "type")?;
        let code = match code_s {
            Some(c) => Some(icmp_number(c, ty_s.len() + 1, "code")?),
            None => None,
        };
        let mut out = Vec::new();
        for (on, v6) in [(v4, false), (v6, true)] {
            if on {
                out.push(IcmpMatch { v6, ty, code });
            }
        }
        return Ok(out);
    }
    let find = |table: &[(&str, u8, Option<u8>)], v6: bool| {
        table
            .iter()
            .find(|(n, _, _)| *n == lower)
            .map(|&(_, ty, code)| IcmpMatch { v6, ty, code })
    };
    let m4 = find(ICMP4_NAMES, false);
    let m6 = find(ICMP6_NAMES, true);
    let mut out = Vec::new();
    if v4 {
        out.extend(m4);
    }
    if v6 {
        out.extend(m6);
    }
    if !out.is_empty() {
        return Ok(out);
    }
    match (m4.is_some(), m6.is_some(), v4, v6) {
        (false, true, true, false) => err(
            0,
            format!(
                "`{s}` is an ICMPv6 type, but this rule matches only ICMP (IPv4): use proto \
                = \"icmpv6\""
            ),
        ),
        (true, false, false, true) => err(
            0,
            format!("`{s}` is an ICMP (IPv4) type, but this rule matches only ICMPv6"),
        ),
        _ => {
            let (table, what) = match (v4, v6) {
                (true, false) => (ICMP4_NAMES, "ICMP"),
                (false, true) => (ICMP6_NAMES, "ICMPv6"),
                _ => (ICMP4_NAMES, "ICMP or ICMPv6"),
            };
            // Type-level names only, and each type once (not its aliases).
            let mut seen: Vec<(bool, u8)> = Vec::new();
            let mut names: Vec<&str> = Vec::new();
            let second: &[(&str, u8, Option<u8>)] = if v4 && v6 { ICMP6_NAMES } else { &[] };
            for (v6, list) in [(table == ICMP6_NAMES, table), (true, second)] {
                for &(n, ty, code) in list {
                    if code.is_none() && !seen.contains(&(v6, ty)) {
                        seen.push((v6, ty));
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
            let all = ICMP4_NAMES.iter().chain(ICMP6_NAMES).map(|(n, _, _)| *n);
            err(
                0,
                format!(
                    "unknown {what} type `{s}`{}: expected a name ({}, ...), a type number or \
                    \"type/code\"",
                    suggest(&lower, all),
                    names
                        .iter()
                        .take(10)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }
    }
}

fn icmp_number(s: &str, at: usize, what: &str) -> Result<u8, ValueError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return err(
            at,
            format!("`{s}` is not an ICMP {what}: expected a number from 0 to 255"),
        );
    }
    match s.parse::<u8>() {
        Ok(n) => Ok(n),
        Err(_) => err(at, format!("ICMP {what} {s} is out of range (0 to 255)")),
    }
}

const TCP_FLAGS: &[(&str, u8)] = &[
    ("fin", 0x01),
    ("syn", 0x02),
    ("rst", 0x04),
    ("psh", 0x08),
    ("ack", 0x10),
    ("urg", 0x20),
    ("ece", 0x40),
    ("cwr", 0x80),
];

/// Adds one `flag` or `!flag` to `m`; `at` is where `s` starts in the whole string.
pub(crate) fn tcp_flag(s: &str, at: usize, m: &mut TcpFlagsMatch) -> Result<(), ValueError> {
    let (neg, name) = match s.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let lower = name.trim().to_ascii_lowercase();
    let Some(&(_, bit)) = TCP_FLAGS.iter().find(|(n, _)| *n == lower) else {
        let names: Vec<&str> = TCP_FLAGS.iter().map(|(n, _)| *n).collect();
        return err(
            at,
            format!(
                "unknown TCP flag `{name}`{}: expected {}, each optionally negated with `!`",
                suggest(&lower, names.iter().copied()),
                names.join(", ")
            ),
        );
    };
    if m.mask & bit != 0 {
        return err(at, format!("TCP flag `{lower}` is given twice"));
    }
    m.mask |= bit;
    if !neg {
        m.value |= bit;
    }
    Ok(())
}

/// The name of each TCP flag bit, for display.
pub(crate) fn tcp_flag_names() -> impl Iterator<Item = (&'static str, u8)> {
    TCP_FLAGS.iter().copied()
}

/// How the file would write an ICMP match: the first name that means exactly it, else
/// numbers.
pub(crate) fn icmp_name(m: &IcmpMatch) -> String {
    let table = if m.v6 { ICMP6_NAMES } else { ICMP4_NAMES };
    match table
        .iter()
        .find(|(_, ty, code)| *ty == m.ty && *code == m.code)
    {
        Some((name, _, _)) => (*name).to_string(),
        None => match m.code {
            Some(c) => format!("{}/{c}", m.ty),
            None => m.ty.to_string(),
        },
    }
}

pub(crate) fn ct_state(s: &str) -> Result<CtState, ValueError> {
    let lower = s.trim().to_ascii_lowercase();
    match CtState::ALL.iter().find(|c| c.name() == lower) {
        Some(&c) => Ok(c),
        None => {
            let names: Vec<&str> = CtState::ALL.iter().map(|c| c.name()).collect();
            err(
                0,
                format!(
                    "unknown connection state `{s}`{}: expected {}",
                    suggest(&lower, names.iter().copied()),
                    names.join(", ")
                ),
            )
        }
    }
}

pub(crate) const LIMIT_FORM: &str =
    "expected a rate like \"5/s\", \"10/minute burst 20\" (units s, second, m, minute, h, hour, \
    d, day)";

/// `RATE/UNIT [burst N [packets]]`; the burst defaults to 5 as in iptables.
pub(crate) fn limit(s: &str) -> Result<Limit, ValueError> {
    let mut words = words(s);
    let Some((at, rate)) = words.next() else {
        return err(0, format!("empty rate: {LIMIT_FORM}"));
    };
    let Some((count_s, unit)) = rate.split_once('/') else {
        return err(at, format!("`{rate}` is not a rate: {LIMIT_FORM}"));
    };
    let count = match count_s.parse::<u32>() {
        Ok(n) if n > 0 => n,
        _ => {
            return err(
                at,
                format!(
                    "`{count_s}` is not a packet count: expected a whole number from 1 to \
                    4294967295; {LIMIT_FORM}"
                ),
            )
        }
    };
    let unit_at = at + count_s.len() + 1;
    let per = match unit.to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" => Time::from_secs(1),
        "m" | "min" | "minute" => Time::from_secs(60),
        "h" | "hour" => Time::from_secs(3600),
        "d" | "day" => Time::from_secs(86_400),
        _ => return err(unit_at, format!("unknown time unit `{unit}`: {LIMIT_FORM}")),
    };
    let mut burst = 5;
    if let Some((at, w)) = words.next() {
        if !w.eq_ignore_ascii_case("burst") {
            return err(
                at,
                format!("unexpected `{w}` after the rate: expected `burst N`"),
            );
        }
        let Some((n_at, n)) = words.next() else {
            return err(
                at,
                "`burst` needs a number of packets, like \"burst 10\"".to_string(),
            );
        };
        burst = match n.parse::<u32>() {
            Ok(b) if b > 0 => b,
            _ => {
                return err(
                    n_at,
                    format!(
                        "`{n}` is not a burst size: expected a whole number from 1 to 4294967295"
                    ),
                )
            }
        };
        if let Some((p_at, p)) = words.next() {
            if !p.eq_ignore_ascii_case("packets") {
                return err(p_at, format!("unexpected `{p}` after the burst size"));
            }
        }
    }
    if let Some((at, w)) = words.next() {
        return err(at, format!("unexpected `{w}` at the end of the rate"));
    }
    Ok(Limit {
        count,
        per,
        burst,
        per_source: false,
    })
}

/// Whitespace-separated words with their byte offsets.
fn words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.split_whitespace().map(move |w| {
        // `w` is a subslice of `s`, so the pointer difference is its offset.
        let at = (w.as_ptr() as usize).saturating_sub(s.as_ptr() as usize);
        (at, w)
    })
}

/// `02:00:00:00:00:01` (or with `-`).
pub(crate) fn mac(s: &str) -> Result<[u8; 6], ValueError> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for slot in &mut out {
        let part = parts.next().unwrap_or("");
        match u8::from_str_radix(part, 16) {
            Ok(b) if part.len() == 2 => *slot = b,
            _ => {
                return err(
                    0,
                    format!(
                        "`{s}` is not a MAC address: expected six hexadecimal bytes like \
                        02:00:00:00:00:01"
                    ),
                )
            }
        }
    }
    if parts.next().is_some() {
        return err(
            0,
            format!(
                "`{s}` is not a MAC address: expected six hexadecimal bytes like 02:00:00:00:00:01"
            ),
        );
    }
    Ok(out)
}

/// `"; did you mean `x`?"` when a candidate is close to `word`, else nothing.
pub(crate) fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let best = candidates
        .map(|c| (edit_distance(word, c), c))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, c)) if d > 0 && d <= word.chars().count().div_ceil(3).max(1) => {
            format!(" (did you mean `{c}`?)")
        }
        _ => String::new(),
    }
}

/// Edit distance over characters, counting a swap of neighbours as one edit (optimal string
/// alignment), since `akc` for `ack` is the typical typo.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    // Row-major (a.len() + 1) x (b.len() + 1) table; `at` reads outside it as "far".
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at =
        |d: &[usize], i: usize, j: usize| d.get(i * width + j).copied().unwrap_or(usize::MAX / 2);
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            let v = if i == 0 || j == 0 {
                i.max(j)
            } else {
                let (ca, cb) = (a.get(i - 1), b.get(j - 1));
                let cost = usize::from(ca != cb);
                let mut v = (at(&d, i - 1, j) + 1)
                    .min(at(&d, i, j - 1) + 1)
                    .min(at(&d, i - 1, j - 1) + cost);
                if i > 1 && j > 1 && ca == b.get(j - 2) && a.get(i - 2) == cb {
                    v = v.min(at(&d, i - 2, j - 2) + 1);
                }
                v
            };
            if let Some(slot) = d.get_mut(i * width + j) {
                *slot = v;
            }
        }
    }
    at(&d, a.len(), b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let n = prefix("192.0.2.0/24", false).unwrap();
        assert_eq!((n.addr.to_string(), n.len), ("192.0.2.0".into(), 24));
        assert_eq!(prefix("2001:db8::1", false).unwrap().len, 128);
        assert_eq!(prefix("10.0.0.0/33", false).unwrap_err().at, 9);
        assert_eq!(prefix("10.0.0.0/x", false).unwrap_err().at, 9);
        assert_eq!(prefix("10.0.0/8", false).unwrap_err().at, 0);
        assert!(prefix("10.0.0.1", true).is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port_range("22").unwrap(), (22, 22));
        assert_eq!(port_range("1024-65535").unwrap(), (1024, 65535));
        assert_eq!(port_range("10-70000").unwrap_err().at, 3);
        assert!(port_range("90-80").unwrap_err().msg.contains("reversed"));
        assert!(port_range("").is_err());
    }

    #[test]
    fn icmp_names() {
        let both = icmp_type("echo-request", true, true).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!((both[0].ty, both[1].ty), (8, 128));
        let nd = icmp_type("neighbour-solicitation", true, true).unwrap();
        assert_eq!(
            nd,
            vec![IcmpMatch {
                v6: true,
                ty: 135,
                code: None
            }]
        );
        let frag = icmp_type("3/4", true, false).unwrap();
        assert_eq!(
            frag,
            vec![IcmpMatch {
                v6: false,
                ty: 3,
                code: Some(4)
            }]
        );
        assert!(icmp_type("neighbour-solicitation", true, false)
            .unwrap_err()
            .msg
            .contains("ICMPv6"));
        assert!(icmp_type("echo-requets", true, true)
            .unwrap_err()
            .msg
            .contains("did you mean `echo-request`"));
        assert_eq!(icmp_type("3/300", true, false).unwrap_err().at, 2);
    }

    #[test]
    fn flags() {
        let mut m = TcpFlagsMatch { mask: 0, value: 0 };
        tcp_flag("syn", 0, &mut m).unwrap();
        tcp_flag("!ack", 4, &mut m).unwrap();
        assert_eq!((m.mask, m.value), (0x12, 0x02));
        assert!(tcp_flag("!syn", 9, &mut m).is_err());
        assert_eq!(tcp_flag("sny", 9, &mut m).unwrap_err().at, 9);
    }

    #[test]
    fn limits() {
        let l = limit("10/s burst 20").unwrap();
        assert_eq!((l.count, l.per, l.burst), (10, Time::from_secs(1), 20));
        let l = limit("1/minute").unwrap();
        assert_eq!((l.per, l.burst), (Time::from_secs(60), 5));
        assert_eq!(limit("5/fortnight").unwrap_err().at, 2);
        assert_eq!(limit("5/s  burst x").unwrap_err().at, 11);
        assert_eq!(limit("5/s bust 3").unwrap_err().at, 4);
        assert!(limit("0/s").is_err());
        assert!(limit("5/s burst 3 packets").is_ok());
    }

    #[test]
    fn macs() {
        assert_eq!(mac("02:00:00:00:01:0a").unwrap(), [2, 0, 0, 0, 1, 10]);
        assert!(mac("02:00:00:00:01").is_err());
        assert!(mac("02:00:00:00:01:02:03").is_err());
        assert!(mac("2:0:0:0:1:2").is_err());
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("dest_prot", "dest_port"), 1);
        assert_eq!(edit_distance("akc", "ack"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            suggest("dst_port", ["dest_port", "src_port"].into_iter()),
            " (did you mean `dest_port`?)"
        );
        assert_eq!(suggest("zzz", ["dest_port"].into_iter()), "");
    }
}
