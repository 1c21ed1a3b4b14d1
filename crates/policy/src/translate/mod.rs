//! NAT policy: which translation a new connection gets. The engine keeps each translation
//! in the connection's entry and reports, packet by packet, how to rewrite (see
//! `keepstate_engine::nat`); this module decides, in netfilter's places, what to ask for:
//! destination NAT for port forwards and 1:1 NAT before the filter judges a connection's
//! first packet (so rules see the inside address), source NAT (static SNAT, 1:1 NAT,
//! masquerade, and the router's address for NAT reflection) once the filter accepted it.
//! It also keeps the books endpoint-independent mappings need.

use std::collections::HashMap;

use core::net::IpAddr;

use keepstate_engine::wire::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use keepstate_engine::NatReleased;

use crate::model::{AddrItem, AddrMatch, Mapping, Policy, ZoneId};
use crate::topology::Topology;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Connections translated: masquerade, SNAT, 1:1 NAT, port forwards and hairpin.
    pub created: u64,
    /// Translated connections that have left the table (their ports are free again).
    pub released: u64,
    /// New connections refused because no port was free.
    pub exhausted: u64,
    /// Packets rewritten.
    pub rewritten: u64,
    /// Replies refused for reaching a translated connection untranslated.
    pub bypass: u64,
}

/// An outside address's port for one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PortKey {
    proto: u8,
    addr: IpAddr,
    port: u16,
}

/// Who uses an outside port (kept only while some zone maps endpoint-independently).
#[derive(Clone, Copy, Debug)]
struct PortUse {
    users: u32,
    /// Of those, endpoint-independent mappings, all of one inside endpoint: while any is
    /// held, the port belongs to that endpoint alone.
    eim_users: u32,
    eim_owner: (IpAddr, u16),
}

/// An inside endpoint's endpoint-independent mapping towards one outside address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EimKey {
    proto: u8,
    inside: IpAddr,
    inside_port: u16,
    outside: IpAddr,
}

/// What the current new connection's source NAT asks of candidate ports.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortAsk {
    pub proto: u8,
    pub inside: (IpAddr, u16),
    /// A new endpoint-independent mapping: only a port nobody uses will do.
    pub fresh_eim: bool,
}

pub(crate) struct Nat {
    pub ports: (u16, u16),
    /// Whether any zone or 1:1 NAT maps endpoint-independently: only then are ports
    /// counted per user.
    pub books: bool,
    users: HashMap<PortKey, PortUse, ahash::RandomState>,
    eim: HashMap<EimKey, u16, ahash::RandomState>,
    released: Vec<NatReleased>,
    pub rewritten: u64,
}

/// Where a packet arriving from `in_zone` for a 1:1 NAT's outside address goes.
pub(crate) fn one_to_one_inbound(
    policy: &Policy,
    in_zone: Option<ZoneId>,
    dst: IpAddr,
) -> Option<IpAddr> {
    let z = in_zone?;
    policy
        .one_to_one
        .iter()
        .find(|b| b.zone == z && b.external == dst)
        .map(|b| b.internal)
}

/// The source a new connection from `src` leaving into `zone` is given, if any: the first
/// matching static SNAT (a pool address chosen by the source, so a host keeps its address),
/// then a 1:1 NAT for the host, then the zone's masquerade address `masq` (IPv4 only).
pub(crate) fn source_for(
    policy: &Policy,
    zone: ZoneId,
    src: IpAddr,
    masq: Option<IpAddr>,
) -> Option<(IpAddr, Mapping)> {
    for s in &policy.snat {
        if s.dest != zone || !addr_match(policy, &s.src_addr, src) {
            continue;
        }
        let same: Vec<&IpAddr> =
            s.to.iter()
                .filter(|a| a.is_ipv4() == src.is_ipv4())
                .collect();
        if same.is_empty() {
            continue;
        }
        let h = match src {
            IpAddr::V4(a) => a.octets().iter().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            }),
            IpAddr::V6(a) => a.octets().iter().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
            }),
        };
        let pick = usize::try_from(h).unwrap_or(0) % same.len();
        return same
            .get(pick)
            .map(|a| (**a, Mapping::AddressAndPortDependent));
    }
    if let Some(b) = policy
        .one_to_one
        .iter()
        .find(|b| b.zone == zone && b.internal == src)
    {
        return Some((b.external, Mapping::EndpointIndependent));
    }
    let zm = policy.zones.get(usize::from(zone))?;
    if zm.masquerade && src.is_ipv4() {
        return masq.map(|a| (a, zm.mapping));
    }
    None
}

pub(crate) fn addr_match(policy: &Policy, m: &AddrMatch, a: IpAddr) -> bool {
    if m.items.is_empty() {
        return !m.negate;
    }
    let hit = m.items.iter().any(|item| match item {
        AddrItem::Net(n) => n.contains(a),
        AddrItem::Set(id) => usize::try_from(*id)
            .ok()
            .and_then(|i| policy.sets.get(i))
            .is_some_and(|s| s.prefixes.iter().any(|n| n.contains(a))),
    });
    hit != m.negate
}

/// The port forward a packet arriving from `in_zone` is for: its index, the inside address
/// and port, and for NAT reflection (a LAN host using the outside address) the router's
/// address to use as source so the server's answers come back through it.
pub(crate) fn port_forward(
    policy: &Policy,
    topo: &Topology,
    in_zone: ZoneId,
    proto: u8,
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
) -> Option<(usize, (IpAddr, u16), Option<IpAddr>)> {
    for (i, pf) in policy.port_forwards.iter().enumerate() {
        if !pf.proto.contains(&proto) || dport < pf.external_ports.0 {
            continue;
        }
        if dport > pf.external_ports.1 {
            continue;
        }
        let external = match pf.external_addr {
            Some(a) => a == dst,
            // The addresses of the interfaces in the forward's zone.
            None => policy
                .interfaces
                .iter()
                .any(|x| x.zone == pf.src && x.addrs.iter().any(|n| n.addr == dst)),
        };
        if !external || pf.internal_addr.is_ipv4() != dst.is_ipv4() {
            continue;
        }
        let port = match pf.internal_port {
            Some(p) => p.saturating_add(dport - pf.external_ports.0),
            None => dport,
        };
        let to = (pf.internal_addr, port);
        if in_zone == pf.src {
            // The source restriction is about who outside may use the forward.
            if !addr_match(policy, &pf.src_addr, src) {
                continue;
            }
            return Some((i, to, None));
        }
        if !pf.reflection {
            continue;
        }
        // Reflection: answer from the router's address on the server's side.
        let out = topo.route(pf.internal_addr)?;
        let src_to = policy
            .interfaces
            .get(usize::from(out))?
            .addrs
            .iter()
            .find(|n| n.addr.is_ipv4() == pf.internal_addr.is_ipv4())?
            .addr;
        return Some((i, to, Some(src_to)));
    }
    None
}

/// The port forward a translated connection to `dst` from `in_zone` came through: the
/// first whose inside address and port range it reaches.
pub(crate) fn forwarded_by(
    policy: &Policy,
    in_zone: Option<ZoneId>,
    proto: u8,
    dst: IpAddr,
    dport: Option<u16>,
) -> Option<usize> {
    policy.port_forwards.iter().position(|pf| {
        let span = pf.external_ports.1.saturating_sub(pf.external_ports.0);
        let first = pf.internal_port.unwrap_or(pf.external_ports.0);
        pf.proto.contains(&proto)
            && pf.internal_addr == dst
            && dport.is_some_and(|p| p >= first && p <= first.saturating_add(span))
            && (in_zone == Some(pf.src) || pf.reflection)
    })
}

impl Nat {
    pub fn new(policy: &Policy, key: [u64; 4]) -> Nat {
        let [a, b, c, d] = key;
        let books = policy
            .zones
            .iter()
            .any(|z| z.masquerade && z.mapping == Mapping::EndpointIndependent)
            || !policy.one_to_one.is_empty();
        Nat {
            ports: policy.defaults.nat_ports,
            books,
            users: HashMap::with_hasher(ahash::RandomState::with_seeds(d, c, b, a)),
            eim: HashMap::with_hasher(ahash::RandomState::with_seeds(c, d, a, b)),
            released: Vec::new(),
            rewritten: 0,
        }
    }

    /// The port an inside endpoint's endpoint-independent mapping towards `outside` uses.
    pub fn eim_port(&self, proto: u8, inside: (IpAddr, u16), outside: IpAddr) -> Option<u16> {
        self.eim
            .get(&EimKey {
                proto,
                inside: inside.0,
                inside_port: inside.1,
                outside,
            })
            .copied()
    }

    /// Whether an endpoint-independent mapping is possible for `proto` (ports to map).
    pub fn maps_endpoint(proto: u8) -> bool {
        matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6)
    }

    /// Whether source NAT for the connection `ask` describes may use `port` of `addr`.
    pub fn port_usable(&self, ask: &PortAsk, addr: IpAddr, port: u16) -> bool {
        let Some(u) = self.users.get(&PortKey {
            proto: ask.proto,
            addr,
            port,
        }) else {
            return true;
        };
        if ask.fresh_eim {
            // A new endpoint-independent mapping needs a port nobody uses, so that every
            // destination can later be reached from it.
            return false;
        }
        u.eim_users == 0 || u.eim_owner == ask.inside
    }

    /// Books a new source-translated connection: `inside` now leaves as `outside`.
    pub fn opened(&mut self, proto: u8, inside: (IpAddr, u16), outside: (IpAddr, u16), eim: bool) {
        let k = PortKey {
            proto,
            addr: outside.0,
            port: outside.1,
        };
        let u = self.users.entry(k).or_insert(PortUse {
            users: 0,
            eim_users: 0,
            eim_owner: inside,
        });
        u.users += 1;
        if eim {
            u.eim_users += 1;
            u.eim_owner = inside;
            self.eim.insert(
                EimKey {
                    proto,
                    inside: inside.0,
                    inside_port: inside.1,
                    outside: outside.0,
                },
                outside.1,
            );
        }
    }

    /// Takes back the ports of connections that have left the engine's table.
    pub fn collect(&mut self, engine: &mut keepstate_engine::Engine) {
        engine.take_nat_released(&mut self.released);
        let mut released = core::mem::take(&mut self.released);
        for r in released.drain(..) {
            self.release(&r);
        }
        self.released = released;
    }

    fn release(&mut self, r: &NatReleased) {
        let k = PortKey {
            proto: r.proto,
            addr: r.outside.0,
            port: r.outside.1,
        };
        let Some(u) = self.users.get_mut(&k) else {
            return;
        };
        u.users = u.users.saturating_sub(1);
        if r.endpoint_independent {
            u.eim_users = u.eim_users.saturating_sub(1);
            if u.eim_users == 0 {
                self.eim.remove(&EimKey {
                    proto: r.proto,
                    inside: r.inside.0,
                    inside_port: r.inside.1,
                    outside: r.outside.0,
                });
            }
        }
        if u.users == 0 {
            self.users.remove(&k);
        }
    }
}
