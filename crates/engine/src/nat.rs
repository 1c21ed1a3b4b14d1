//! Address translation kept in the state table, as netfilter keeps it in conntrack.
//!
//! A translated connection is tracked by its tuple *between* the translations (after
//! destination NAT, before source NAT), which is what rules see; the table also files it
//! under the tuples its packets arrive with (the original direction before destination NAT,
//! the reply direction addressed to the translated source), so one lookup finds it from
//! either side and the translation comes with the entry. Ports return to the pool when the
//! entry leaves the table: the table is the record of which translated tuples are in use.
//!
//! The engine decides nothing about NAT itself: a policy asks for a translation through
//! [`crate::Hooks::nat`] when a connection opens, and applies the [`Translation`] the engine
//! reports for each packet (the engine never writes packet bytes).

use core::net::IpAddr;

use crate::engine::PacketMeta;
use crate::wire::{addr_to_ip, Addr, Family, Ip, Key, PROTO_ICMP, PROTO_ICMPV6};

pub use crate::table::NatReleased;

/// The translation a policy gives a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatRequest {
    /// Destination NAT: the original direction is sent on to this address and port (a port
    /// forward). For ICMP queries only the address applies.
    pub dnat: Option<(IpAddr, u16)>,
    /// Source NAT: the original direction leaves from this address.
    pub snat: Option<SnatRequest>,
    /// Ports (and ICMP identifiers) to choose from when a connection's own is taken;
    /// inclusive, either order.
    pub ports: (u16, u16),
}

/// Source NAT for a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnatRequest {
    pub addr: IpAddr,
    /// A port to try before the connection's own (an endpoint-independent mapping's).
    pub preferred: Option<u16>,
    /// Ask [`crate::Hooks::nat_port_usable`] about each candidate port.
    pub ask: bool,
    /// Report the connection through [`crate::Engine::take_nat_released`] when it leaves
    /// the table.
    pub report: bool,
    /// The mapping is endpoint-independent (carried into the report).
    pub endpoint_independent: bool,
}

/// Addresses and ports of one packet. For ICMP queries both ports are the identifier; for
/// protocols without ports, and for ICMP errors, both are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// How one packet of a translated connection must be rewritten before it leaves. The
/// accessors give what to hand a packet rewriter; nothing is converted until asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// For a packet, its direction; for an ICMP error, the quoted packet's.
    dir: u8,
    error: bool,
    destination_nat: bool,
    /// A packet as it arrived and as it leaves; for an ICMP error, the quoted packet as it
    /// left the connection's other side (`l`) and as its sender knew it (`a`).
    a: Key,
    l: Key,
    /// An ICMP error's outer addresses as it arrived, and their new values.
    outer: (Addr, Addr),
    outer_src: Option<Addr>,
    outer_dst: Option<Addr>,
    outer_proto: u8,
}

fn family_of(k: &Key) -> Family {
    if k.family == 6 {
        Family::V6
    } else {
        Family::V4
    }
}

fn is_icmp(proto: u8) -> bool {
    proto == PROTO_ICMP || proto == PROTO_ICMPV6
}

/// The identifier or source port a packet tuple of direction `dir` carries for the
/// rewriter: an ICMP query's identifier is the request's source port and the reply's
/// destination port in the engine's keys.
fn ports(k: &Key, dir: u8) -> (u16, u16) {
    if is_icmp(k.proto) {
        let id = if dir == 0 { k.sport } else { k.dport };
        (id, id)
    } else {
        (k.sport, k.dport)
    }
}

fn flow(k: &Key, dir: u8) -> Flow {
    let f = family_of(k);
    let (sport, dport) = ports(k, dir);
    Flow {
        proto: k.proto,
        src: addr_to_ip(f, &k.src),
        sport,
        dst: addr_to_ip(f, &k.dst),
        dport,
    }
}

/// The source change taking a packet of direction `dir` from `from` to `to`.
fn src_change(from: &Key, to: &Key, dir: u8) -> Option<(IpAddr, u16)> {
    let (pf, pt) = (ports(from, dir), ports(to, dir));
    ((from.src, pf.0) != (to.src, pt.0)).then(|| (addr_to_ip(family_of(to), &to.src), pt.0))
}

fn dst_change(from: &Key, to: &Key, dir: u8) -> Option<(IpAddr, u16)> {
    let (pf, pt) = (ports(from, dir), ports(to, dir));
    ((from.dst, pf.1) != (to.dst, pt.1)).then(|| (addr_to_ip(family_of(to), &to.dst), pt.1))
}

impl Translation {
    /// A packet of direction `dir` arriving as `a` and leaving as `l`.
    #[inline]
    pub(crate) fn packet(a: &Key, l: &Key, dir: usize, destination_nat: bool) -> Translation {
        Translation {
            dir: u8::from(dir != 0),
            error: false,
            destination_nat,
            a: *a,
            l: *l,
            outer: ([0; 16], [0; 16]),
            outer_src: None,
            outer_dst: None,
            outer_proto: 0,
        }
    }

    /// An ICMP error `ip` quoting a packet of direction `dq` that left as `lq` and was sent
    /// as `aq`; the error travels the other way, arriving as `ae` and leaving as `le`. Its
    /// outer addresses change only where they are the connection's own (an error from a
    /// router on the path keeps that router's source).
    pub(crate) fn error(
        ip: &Ip<'_>,
        quoted: (&Key, &Key, usize),
        err: (&Key, &Key),
        destination_nat: bool,
    ) -> Translation {
        let (aq, lq, dq) = quoted;
        let (ae, le) = err;
        Translation {
            dir: u8::from(dq != 0),
            error: true,
            destination_nat,
            a: *aq,
            l: *lq,
            outer: (ip.src, ip.dst),
            outer_src: (ip.src == ae.src && le.src != ae.src).then_some(le.src),
            outer_dst: (ip.dst == ae.dst && le.dst != ae.dst).then_some(le.dst),
            outer_proto: ip.proto,
        }
    }

    /// The packet is an ICMP error: see [`Translation::quoted_src`].
    pub fn is_error(&self) -> bool {
        self.error
    }

    /// The connection's destination is translated (see [`crate::Outcome::dnat`]).
    pub fn destination_nat(&self) -> bool {
        self.destination_nat
    }

    /// The new source address and port (for an ICMP error: the outer source; port 0).
    pub fn src(&self) -> Option<(IpAddr, u16)> {
        if self.error {
            let f = family_of(&self.a);
            return self.outer_src.map(|a| (addr_to_ip(f, &a), 0));
        }
        src_change(&self.a, &self.l, self.dir)
    }

    /// The new destination address and port (for an ICMP error: the outer destination).
    pub fn dst(&self) -> Option<(IpAddr, u16)> {
        if self.error {
            let f = family_of(&self.a);
            return self.outer_dst.map(|a| (addr_to_ip(f, &a), 0));
        }
        dst_change(&self.a, &self.l, self.dir)
    }

    /// For an ICMP error, the quoted packet's new source and destination: back to how its
    /// sender knew it.
    pub fn quoted_src(&self) -> Option<(IpAddr, u16)> {
        self.error
            .then(|| src_change(&self.l, &self.a, self.dir))
            .flatten()
    }

    pub fn quoted_dst(&self) -> Option<(IpAddr, u16)> {
        self.error
            .then(|| dst_change(&self.l, &self.a, self.dir))
            .flatten()
    }

    /// The packet as it arrived (an ICMP error: its outer addresses, ports zero).
    pub fn arrived(&self) -> Flow {
        if self.error {
            let f = family_of(&self.a);
            return Flow {
                proto: self.outer_proto,
                src: addr_to_ip(f, &self.outer.0),
                sport: 0,
                dst: addr_to_ip(f, &self.outer.1),
                dport: 0,
            };
        }
        flow(&self.a, self.dir)
    }

    /// The packet as it leaves.
    pub fn leaves(&self) -> Flow {
        if self.error {
            let f = family_of(&self.a);
            let src = self.outer_src.unwrap_or(self.outer.0);
            let dst = self.outer_dst.unwrap_or(self.outer.1);
            return Flow {
                proto: self.outer_proto,
                src: addr_to_ip(f, &src),
                sport: 0,
                dst: addr_to_ip(f, &dst),
                dport: 0,
            };
        }
        flow(&self.l, self.dir)
    }

    /// The packet's header facts as tracking and rules see them: destination NAT applied,
    /// source NAT not yet.
    #[inline]
    pub(crate) fn apply_to_meta(&self, m: &mut PacketMeta) {
        if self.error {
            if let Some(a) = self.outer_dst {
                m.dst = Some(addr_to_ip(family_of(&self.a), &a));
            }
            return;
        }
        if self.a.dst != self.l.dst {
            m.dst = Some(addr_to_ip(family_of(&self.l), &self.l.dst));
        }
        if m.dport.is_some() {
            m.dport = Some(self.l.dport);
        }
    }
}
