//! Which connections a command applies to, with conntrack-tools' meanings.

use core::net::IpAddr;

use keepstate_engine::{Conn, Family, L4Tuple, TcpState};

/// An address or a prefix (`10.0.0.0/8`, `2001:db8::/32`; a bare address is a full-length
/// prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{s}` is not an address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Prefix { addr, len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `a` is inside the prefix; addresses of the other family never are.
    pub fn contains(&self, a: IpAddr) -> bool {
        match (self.addr, a) {
            (IpAddr::V4(p), IpAddr::V4(x)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(x) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(x)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(x) & mask
            }
            _ => false,
        }
    }
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Conditions a connection must meet, all of them (an empty filter matches everything).
///
/// As conntrack's `-s`/`-d`/`--sport`/`--dport`, `src`, `dst`, `sport` and `dport` match
/// the original direction's tuple as the first packet arrived (before any translation);
/// `reply_src` and `reply_dst` (conntrack's `-r`/`-q`) match the reply tuple as replies
/// arrive (a masqueraded connection's `reply_dst` is the outside address); `addr` matches
/// any of the four addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub family: Option<Family>,
    pub proto: Option<u8>,
    pub src: Option<Prefix>,
    pub dst: Option<Prefix>,
    pub reply_src: Option<Prefix>,
    pub reply_dst: Option<Prefix>,
    pub addr: Option<Prefix>,
    /// Ports of TCP, UDP, UDP-Lite, SCTP and DCCP connections; others never match.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// A TCP state; connections of other protocols never match.
    pub state: Option<TcpState>,
    /// A conntrack zone. keepstate keeps every connection in zone 0: zone 0 matches every
    /// connection, any other zone none.
    pub zone: Option<u16>,
    /// A connection mark. keepstate sets no marks (every connection's is 0): mark 0 matches
    /// every connection, any other mark none.
    pub mark: Option<u32>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    pub fn matches(&self, c: &Conn) -> bool {
        let within = |p: &Option<Prefix>, a: IpAddr| p.is_none_or(|p| p.contains(a));
        let ports = match c.original.l4 {
            L4Tuple::Ports { sport, dport } => Some((sport, dport)),
            _ => None,
        };
        self.family.is_none_or(|f| f == c.family)
            && self.proto.is_none_or(|p| p == c.proto)
            && within(&self.src, c.original.src)
            && within(&self.dst, c.original.dst)
            && within(&self.reply_src, c.reply.src)
            && within(&self.reply_dst, c.reply.dst)
            && self.addr.is_none_or(|p| {
                [c.original.src, c.original.dst, c.reply.src, c.reply.dst]
                    .into_iter()
                    .any(|a| p.contains(a))
            })
            && self
                .sport
                .is_none_or(|s| ports.is_some_and(|(sp, _)| sp == s))
            && self
                .dport
                .is_none_or(|d| ports.is_some_and(|(_, dp)| dp == d))
            && self.state.is_none_or(|s| c.tcp_state == Some(s))
            && self.zone.is_none_or(|z| z == 0)
            && self.mark.is_none_or(|m| m == 0)
    }
}
