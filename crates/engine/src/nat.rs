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
use crate::table::{NatExt, NAT_DST, NAT_SRC};
use crate::wire::{addr_to_ip, checksum, Addr, Family, Ip, Key, PROTO_ICMP, PROTO_ICMPV6};

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
/// accessors give what to hand a packet rewriter; addresses are converted only when asked
/// for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// For a packet, its direction; for an ICMP error, the quoted packet's.
    dir: u8,
    error: bool,
    destination_nat: bool,
    family: Family,
    /// The packet's (or an ICMP error's outer) new source and destination.
    src: Option<(Addr, u16)>,
    dst: Option<(Addr, u16)>,
    /// An ICMP error's quoted packet's new source and destination.
    quoted_src: Option<(Addr, u16)>,
    quoted_dst: Option<(Addr, u16)>,
    /// The packet's tuple as it arrived (for an ICMP error: its outer addresses and
    /// protocol, ports zero).
    arrived: Key,
    /// IPv4 TCP and UDP: the checksum sums (see [`Ipv4Rewrite`]).
    sums: [u16; 2],
    /// TCP sequence and acknowledgment numbers to add (a SYN-proxied connection).
    seq: Option<(u32, u32)>,
}

/// The rewrite of a packet of an IPv4 TCP or UDP connection, in the packet's own terms:
/// new address bytes and ports, and what they add to the IPv4 header checksum and to the
/// transport checksum (RFC 1624's `~m + m'` over the changed words, folded). Every packet
/// of one direction of a connection changes the same fields from the same values, so the
/// sums are worked out once, when the connection is translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Rewrite {
    pub src: Option<([u8; 4], u16)>,
    pub dst: Option<([u8; 4], u16)>,
    pub ip_sum: u16,
    pub l4_sum: u16,
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

/// The ports a packet tuple of direction `dir` carries for the rewriter: an ICMP query's
/// identifier is the request's source port and the reply's destination port in the
/// engine's keys, and plays both ports.
fn ports(k: &Key, dir: u8) -> (u16, u16) {
    if is_icmp(k.proto) {
        let id = if dir == 0 { k.sport } else { k.dport };
        (id, id)
    } else {
        (k.sport, k.dport)
    }
}

/// A new address and port, where one changes.
type Change<A = Addr> = Option<(A, u16)>;

/// The source and destination changes taking a packet of direction `dir` from `from` to
/// `to`.
fn changes(from: &Key, to: &Key, dir: u8) -> (Change, Change) {
    let (pf, pt) = (ports(from, dir), ports(to, dir));
    let src = ((from.src, pf.0) != (to.src, pt.0)).then_some((to.src, pt.0));
    let dst = ((from.dst, pf.1) != (to.dst, pt.1)).then_some((to.dst, pt.1));
    (src, dst)
}

fn ip(f: Family, x: Option<(Addr, u16)>) -> Option<(IpAddr, u16)> {
    x.map(|(a, p)| (addr_to_ip(f, &a), p))
}

/// The address bytes as the packet holds them: four for IPv4, sixteen for IPv6.
fn octets(f: Family, x: &Option<(Addr, u16)>) -> Option<(&[u8], u16)> {
    let (a, p) = x.as_ref()?;
    let n = if f == Family::V4 { 4 } else { 16 };
    Some((a.get(..n)?, *p))
}

fn v4(x: Option<(Addr, u16)>) -> Option<([u8; 4], u16)> {
    x.map(|(a, p)| ([a[0], a[1], a[2], a[3]], p))
}

/// The source and destination changes of a packet of direction `dir` of the connection
/// tracked as `key` with translation `x`: original packets arrive addressed to the
/// untranslated destination and leave from the translated source, replies the other way
/// round. An ICMP query's identifier goes with whichever address changes: the translated
/// one for a request's source, the inside one otherwise.
///
/// `addr` takes the address as the caller wants it (the whole 16 bytes, or IPv4's four),
/// so that no caller copies addresses it does not need.
#[inline(always)]
fn packet_changes<A>(
    key: &Key,
    x: &NatExt,
    dir: usize,
    addr: impl Fn(&Addr) -> A,
) -> (Change<A>, Change<A>) {
    let icmp = is_icmp(key.proto);
    let snat = x.flags & NAT_SRC != 0;
    let dnat = x.flags & NAT_DST != 0;
    if dir == 0 {
        let dport = if icmp { key.sport } else { key.dport };
        (
            snat.then(|| (addr(&x.snat()), x.snat_port)),
            dnat.then(|| (addr(&key.dst), dport)),
        )
    } else {
        let sport = if icmp { key.sport } else { x.dnat_port };
        (
            dnat.then(|| (addr(&x.dnat()), sport)),
            snat.then(|| (addr(&key.src), key.sport)),
        )
    }
}

/// [`Translation::ipv4`] of [`Translation::packet`] for a packet of direction `dir` of an
/// IPv4 TCP or UDP connection with translation `x`, without building the translation.
#[inline(always)]
pub(crate) fn packet_ipv4(key: &Key, x: &NatExt, dir: usize) -> Ipv4Rewrite {
    let (src, dst) = packet_changes(key, x, dir, |a| [a[0], a[1], a[2], a[3]]);
    let [ip_sum, l4_sum] = x.sums(dir);
    Ipv4Rewrite {
        src,
        dst,
        ip_sum,
        l4_sum,
    }
}

/// The rewrite of a plain IPv4 TCP or UDP packet (no IP options, not a fragment) of a
/// translated connection, copied from the connection's record while it is at hand: the
/// record's row for the packet's direction (see `NatExt::rows`), and whether the packet's
/// destination moves (what rules see).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowRewrite {
    row: [u8; 16],
    moves_dst: bool,
}

impl RowRewrite {
    /// For a packet of direction `dir` of a connection translated as `x`, when `x` has its
    /// IPv4 rows.
    #[inline(always)]
    pub(crate) fn new(x: &NatExt, dir: usize) -> Option<RowRewrite> {
        let moved = if dir & 1 == 0 { NAT_DST } else { NAT_SRC };
        x.row(dir).map(|row| RowRewrite {
            row: *row,
            moves_dst: x.flags & moved != 0,
        })
    }

    /// Rewrites `p`, the packet's IPv4 and TCP or UDP headers: all four addresses and ports
    /// copied (a copy costs less than picking out the changed ones, which depend on the
    /// packet's direction) and the two sums added.
    #[inline(always)]
    pub(crate) fn apply(&self, p: &mut [u8; 40]) {
        p[12..24].copy_from_slice(&self.row[..12]);
        let udp = p[9] == crate::wire::PROTO_UDP;
        let ck = if udp { 26 } else { 36 };
        let [ip_sum, l4_sum] = crate::table::row_sums_wire(&self.row);
        checksum::add_folded_wire_at(p, 10, ip_sum, false);
        checksum::add_folded_wire_at(p, ck, l4_sum, udp);
    }

    /// The destination rules see: after destination NAT (for a reply of a
    /// source-translated connection, the inside host).
    #[inline(always)]
    pub(crate) fn apply_to_meta(&self, m: &mut PacketMeta) {
        if self.moves_dst {
            let r = &self.row;
            m.dst = Some(IpAddr::V4(core::net::Ipv4Addr::new(r[4], r[5], r[6], r[7])));
            if m.dport.is_some() {
                m.dport = Some(u16::from_be_bytes([r[10], r[11]]));
            }
        }
    }
}

/// [`Translation::apply_to_meta`] of [`Translation::packet`], without building it.
#[inline(always)]
pub(crate) fn packet_meta(key: &Key, x: &NatExt, dir: usize, m: &mut PacketMeta) {
    if let (_, Some((a, p))) = packet_changes(key, x, dir, |a| *a) {
        m.dst = Some(addr_to_ip(family_of(key), &a));
        if m.dport.is_some() {
            m.dport = Some(p);
        }
    }
}

impl Translation {
    /// A packet of direction `dir` that arrived as `arrived`, of the connection tracked as
    /// `key` with translation `x`: original packets arrive addressed to the untranslated
    /// destination and leave from the translated source, replies the other way round.
    #[inline]
    pub(crate) fn packet(arrived: &Key, key: &Key, x: &NatExt, dir: usize) -> Translation {
        let (src, dst) = packet_changes(key, x, dir, |a| *a);
        Translation {
            dir: u8::from(dir != 0),
            error: false,
            destination_nat: x.flags & NAT_DST != 0,
            family: family_of(key),
            src,
            dst,
            quoted_src: None,
            quoted_dst: None,
            arrived: *arrived,
            sums: x.sums(dir),
            seq: (x.flags & crate::table::NAT_SEQ != 0).then(|| {
                if dir == 0 {
                    (0, x.seq_delta)
                } else {
                    (x.seq_delta.wrapping_neg(), 0)
                }
            }),
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
        let dir = u8::from(dq != 0);
        let (quoted_src, quoted_dst) = changes(lq, aq, dir);
        Translation {
            dir,
            error: true,
            destination_nat,
            family: ip.family,
            src: (ip.src == ae.src && le.src != ae.src).then_some((le.src, 0)),
            dst: (ip.dst == ae.dst && le.dst != ae.dst).then_some((le.dst, 0)),
            quoted_src,
            quoted_dst,
            arrived: Key {
                src: ip.src,
                dst: ip.dst,
                sport: 0,
                dport: 0,
                proto: ip.proto,
                family: aq.family,
            },
            sums: [0; 2],
            seq: None,
        }
    }

    /// For a TCP packet of a SYN-proxied connection: what to add (wrapping) to its sequence
    /// and acknowledgment numbers.
    pub fn tcp_seq(&self) -> Option<(u32, u32)> {
        self.seq
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
        ip(self.family, self.src)
    }

    /// The new destination address and port (for an ICMP error: the outer destination).
    pub fn dst(&self) -> Option<(IpAddr, u16)> {
        ip(self.family, self.dst)
    }

    /// [`Translation::src`] as the bytes the packet holds (4 for IPv4, 16 for IPv6).
    pub fn src_octets(&self) -> Option<(&[u8], u16)> {
        octets(self.family, &self.src)
    }

    /// [`Translation::dst`] as the bytes the packet holds.
    pub fn dst_octets(&self) -> Option<(&[u8], u16)> {
        octets(self.family, &self.dst)
    }

    /// For a packet of an IPv4 TCP or UDP connection, the rewrite with its checksum sums
    /// worked out; `None` otherwise.
    #[inline]
    pub fn ipv4(&self) -> Option<Ipv4Rewrite> {
        let plain = matches!(
            self.arrived.proto,
            crate::wire::PROTO_TCP | crate::wire::PROTO_UDP
        );
        if self.error || self.family != Family::V4 || !plain {
            return None;
        }
        Some(Ipv4Rewrite {
            src: v4(self.src),
            dst: v4(self.dst),
            ip_sum: self.sums[0],
            l4_sum: self.sums[1],
        })
    }

    /// For an ICMP error, the quoted packet's new source and destination: back to how its
    /// sender knew it.
    pub fn quoted_src(&self) -> Option<(IpAddr, u16)> {
        ip(self.family, self.quoted_src)
    }

    pub fn quoted_dst(&self) -> Option<(IpAddr, u16)> {
        ip(self.family, self.quoted_dst)
    }

    /// The packet as it arrived (an ICMP error: its outer addresses, ports zero).
    pub fn arrived(&self) -> Flow {
        let k = &self.arrived;
        let (sport, dport) = if self.error {
            (0, 0)
        } else {
            ports(k, self.dir)
        };
        Flow {
            proto: k.proto,
            src: addr_to_ip(self.family, &k.src),
            sport,
            dst: addr_to_ip(self.family, &k.dst),
            dport,
        }
    }

    /// The packet as it leaves.
    pub fn leaves(&self) -> Flow {
        let mut f = self.arrived();
        let icmp = !self.error && is_icmp(f.proto);
        if let Some((a, p)) = self.src() {
            f.src = a;
            if !self.error {
                f.sport = p;
            }
        }
        if let Some((a, p)) = self.dst() {
            f.dst = a;
            if !self.error {
                f.dport = p;
            }
        }
        if icmp {
            // The identifier plays both ports: the one the rewrite gave it.
            let id = self.src.or(self.dst).map_or(f.sport, |x| x.1);
            f.sport = id;
            f.dport = id;
        }
        f
    }

    /// The packet's header facts as tracking and rules see them: destination NAT applied,
    /// source NAT not yet.
    #[inline]
    pub(crate) fn apply_to_meta(&self, m: &mut PacketMeta) {
        let Some((a, p)) = self.dst else {
            return;
        };
        m.dst = Some(addr_to_ip(self.family, &a));
        if m.dport.is_some() && !self.error {
            m.dport = Some(p);
        }
    }
}
