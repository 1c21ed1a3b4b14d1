//! The NAT stages around tracking, in netfilter's places: destination rewrites before the
//! engine (prerouting: port forwards, and replies to masqueraded connections), source
//! rewrites after the filter accepted (postrouting: masquerade, and replies from a port
//! forward's server). The engine therefore tracks every connection by the tuple in between
//! (after DNAT, before SNAT), and rules see inside addresses.

pub(crate) mod headers;

use std::collections::{HashMap, VecDeque};

use core::net::IpAddr;

use keepstate_engine::{Engine, Time};

use crate::model::{AddrItem, AddrMatch, Mapping, Policy, ZoneId};
use crate::nat::{self, BindingId, NatError, NatTable, Tuple5};
use crate::topology::Topology;
use headers::Headers;

/// Which way a packet travels relative to its binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Way {
    Original,
    Reply,
}

/// What prerouting found or did for one packet.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Pre {
    /// The packet's binding and direction.
    pub binding: Option<(BindingId, Way)>,
    /// A binding created for a port forward on this packet, kept only if the packet opens a
    /// connection the filter accepts.
    pub tentative: Option<BindingId>,
    /// The port forward that matched (index into `policy.port_forwards`).
    pub port_forward: Option<u32>,
    /// `frame` holds a rewritten copy of the packet.
    pub rewritten: bool,
    /// The addressing as the packet arrived, when prerouting changed it.
    pub arrived: Option<Tuple5>,
    /// The addressing tracking sees: after prerouting.
    pub middle: Option<Tuple5>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Bindings created: masquerade, port forwards and hairpin.
    pub created: u64,
    /// Bindings released after their connection ended.
    pub released: u64,
    /// New connections refused because no port was free.
    pub exhausted: u64,
    /// Packets rewritten (either stage).
    pub rewritten: u64,
}

pub(crate) struct Nat {
    pub table: NatTable,
    /// The binding of each connection, by the tuple the engine tracks it under.
    middle: HashMap<Tuple5, BindingId, ahash::RandomState>,
    /// Bindings in the order they are checked for a connection that has gone.
    order: VecDeque<BindingId>,
    /// Packets seen, and binding checks owed for bindings created since the last packet.
    tick: u32,
    owed: usize,
    pub stats: NatStats,
}

/// How many packets pass between two routine binding checks.
const SWEEP_EVERY: u32 = 8;

/// Where a packet arriving from `in_zone` for a 1:1 NAT's outside address goes.
fn one_to_one_inbound(
    policy: &Policy,
    in_zone: Option<ZoneId>,
    t: &Tuple5,
) -> Option<(IpAddr, u16)> {
    let z = in_zone?;
    policy
        .one_to_one
        .iter()
        .find(|b| b.zone == z && b.external == t.dst)
        .map(|b| (b.internal, t.dport))
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

/// The tuple the engine tracks a binding's connection under: the original source, the
/// translated destination.
fn middle_of(b: &nat::Binding) -> Tuple5 {
    Tuple5 {
        proto: b.original.proto,
        src: b.original.src,
        sport: b.original.sport,
        dst: b.translated.dst,
        dport: b.translated.dport,
    }
}

fn reversed(t: &Tuple5) -> Tuple5 {
    Tuple5 {
        proto: t.proto,
        src: t.dst,
        sport: t.dport,
        dst: t.src,
        dport: t.sport,
    }
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

impl Nat {
    pub fn new(policy: &Policy, key: [u64; 4]) -> Nat {
        let [a, b, c, d] = key;
        Nat {
            table: NatTable::new(policy.defaults.nat_ports, key),
            middle: HashMap::with_hasher(ahash::RandomState::with_seeds(d, c, b, a)),
            order: VecDeque::new(),
            tick: 0,
            owed: 0,
            stats: NatStats::default(),
        }
    }

    fn remember(&mut self, id: BindingId) {
        if let Some(b) = self.table.get(id) {
            self.middle.insert(middle_of(b), id);
            self.order.push_back(id);
            self.stats.created += 1;
            self.owed += 2;
        }
    }

    pub fn forget(&mut self, id: BindingId) {
        if let Some(b) = self.table.get(id) {
            let m = middle_of(b);
            if self.middle.get(&m) == Some(&id) {
                self.middle.remove(&m);
            }
            self.table.release(id);
            self.stats.released += 1;
        }
    }

    /// The binding of a tracked connection, by its tuple in the engine.
    pub fn by_middle(&self, t: &Tuple5) -> Option<BindingId> {
        self.middle.get(t).copied()
    }

    /// Checks bindings whose connections may have left the table, so their ports return to
    /// the pool: one every `SWEEP_EVERY` packets, and two more for every binding created, so
    /// the queue drains at least as fast as it fills and the cost per packet stays flat.
    pub fn sweep(&mut self, engine: &mut Engine, now: Time) {
        self.tick = self.tick.wrapping_add(1);
        let due = usize::from(self.tick.is_multiple_of(SWEEP_EVERY)) + self.owed;
        self.owed = 0;
        for _ in 0..due {
            self.sweep_one(engine, now);
        }
    }

    fn sweep_one(&mut self, engine: &mut Engine, now: Time) {
        let Some(id) = self.order.pop_front() else {
            return;
        };
        let Some(b) = self.table.get(id) else {
            return;
        };
        let m = middle_of(b);
        if engine.is_tracked(now, m.proto, (m.src, m.sport), (m.dst, m.dport)) {
            self.order.push_back(id);
        } else {
            self.forget(id);
        }
    }

    /// Prerouting: finds the packet's binding and rewrites its destination where the
    /// binding says so; a packet for a port forward gets a tentative binding.
    #[allow(clippy::too_many_arguments)]
    pub fn prerouting(
        &mut self,
        policy: &Policy,
        topo: &Topology,
        in_zone: Option<ZoneId>,
        h: &Headers,
        data: &[u8],
        frame: &mut Vec<u8>,
        now: Time,
    ) -> Pre {
        let mut pre = Pre::default();
        let t = h.tuple;
        if let Some(id) = self.table.find_original(&t) {
            pre.binding = Some((id, Way::Original));
            if let Some(b) = self.table.get(id) {
                if (b.translated.dst, b.translated.dport) != (t.dst, t.dport) {
                    let to = (b.translated.dst, b.translated.dport);
                    pre.rewritten = self.rewrite(h, data, frame, None, Some(to));
                }
            }
        } else if let Some(id) = self.table.find_reply(&t) {
            pre.binding = Some((id, Way::Reply));
            if let Some(b) = self.table.get(id) {
                if (b.original.src, b.original.sport) != (t.dst, t.dport) {
                    let to = (b.original.src, b.original.sport);
                    pre.rewritten = self.rewrite(h, data, frame, None, Some(to));
                }
            }
        } else if let Some(q) = h.quoted {
            // An error about a packet that left translated: the quoted packet is the original
            // direction after SNAT, so its reverse is how replies arrive.
            if let Some(id) = self.table.find_reply(&reversed(&q)) {
                if let Some(b) = self.table.get(id) {
                    let inside = (b.original.src, b.original.sport);
                    if inside != (q.src, q.sport) {
                        pre.binding = Some((id, Way::Reply));
                        pre.rewritten = self.rewrite_error(h, data, frame, inside);
                    }
                }
            }
        } else if let Some(to) = one_to_one_inbound(policy, in_zone, &t) {
            // 1:1 NAT opens nothing by itself: the rules judge the translated connection.
            if let Ok(id) = self.table.dnat(&t, to, now) {
                pre.tentative = Some(id);
                pre.binding = Some((id, Way::Original));
                pre.rewritten = self.rewrite(h, data, frame, None, Some(to));
                if !pre.rewritten {
                    self.table.release(id);
                    pre = Pre::default();
                }
            }
        } else if let Some((i, to, hairpin_src)) = self.port_forward(policy, topo, in_zone, &t) {
            let made = match hairpin_src {
                None => self.table.dnat(&t, to, now),
                Some(src_to) => self.table.dnat_snat(&t, to, src_to, now),
            };
            match made {
                Ok(id) => {
                    pre.tentative = Some(id);
                    pre.port_forward = u32::try_from(i).ok();
                    pre.binding = Some((id, Way::Original));
                    pre.rewritten = self.rewrite(h, data, frame, None, Some(to));
                    if !pre.rewritten {
                        self.table.release(id);
                        pre = Pre::default();
                    }
                }
                Err(NatError::PortsExhausted) => self.stats.exhausted += 1,
            }
        }
        pre.middle = Some(t);
        if pre.rewritten {
            pre.arrived = Some(t);
            pre.middle = headers::read_ip(frame.get(h.ip_offset..).unwrap_or(&[]));
        }
        pre
    }

    /// The port forward a packet arriving from `in_zone` is for: its index, the inside
    /// address and port, and for NAT reflection (a LAN host using the outside address) the
    /// router's address to use as source so the server's answers come back through it.
    fn port_forward(
        &self,
        policy: &Policy,
        topo: &Topology,
        in_zone: Option<ZoneId>,
        t: &Tuple5,
    ) -> Option<(usize, (IpAddr, u16), Option<IpAddr>)> {
        let in_zone = in_zone?;
        for (i, pf) in policy.port_forwards.iter().enumerate() {
            if !pf.proto.contains(&t.proto) || t.dport < pf.external_ports.0 {
                continue;
            }
            if t.dport > pf.external_ports.1 {
                continue;
            }
            let external = match pf.external_addr {
                Some(a) => a == t.dst,
                // The addresses of the interfaces in the forward's zone.
                None => policy
                    .interfaces
                    .iter()
                    .any(|x| x.zone == pf.src && x.addrs.iter().any(|n| n.addr == t.dst)),
            };
            if !external || pf.internal_addr.is_ipv4() != t.dst.is_ipv4() {
                continue;
            }
            let port = match pf.internal_port {
                Some(p) => p.saturating_add(t.dport - pf.external_ports.0),
                None => t.dport,
            };
            let to = (pf.internal_addr, port);
            if in_zone == pf.src {
                // The source restriction is about who outside may use the forward.
                if !addr_match(policy, &pf.src_addr, t.src) {
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

    /// Masquerade for a new connection leaving through a masquerading zone.
    pub fn masquerade(
        &mut self,
        middle: &Tuple5,
        to: IpAddr,
        mapping: Mapping,
        now: Time,
    ) -> Result<BindingId, NatError> {
        match self.table.snat(middle, to, mapping, now) {
            Ok(id) => {
                self.remember(id);
                Ok(id)
            }
            Err(e) => {
                self.stats.exhausted += 1;
                Err(e)
            }
        }
    }

    /// Keeps a tentative port-forward binding once its connection is confirmed.
    pub fn confirm(&mut self, id: BindingId) {
        self.remember(id);
    }

    /// Drops a tentative binding whose packet did not open a connection.
    pub fn abandon(&mut self, id: BindingId) {
        self.table.release(id);
    }

    /// Postrouting: the source rewrite a binding asks for, in place on `frame` (a copy of
    /// the packet made here if prerouting did not already make one). Returns the new source
    /// when it rewrote the packet.
    pub fn postrouting(
        &mut self,
        id: BindingId,
        way: Way,
        h: &Headers,
        data: &[u8],
        frame: &mut Vec<u8>,
        rewritten: bool,
    ) -> Option<(IpAddr, u16)> {
        let b = self.table.get(id)?;
        let (from, to) = match way {
            Way::Original => (
                (b.original.src, b.original.sport),
                (b.translated.src, b.translated.sport),
            ),
            Way::Reply => (
                (b.translated.dst, b.translated.dport),
                (b.original.dst, b.original.dport),
            ),
        };
        if to == from {
            return None;
        }
        if !rewritten {
            frame.clear();
            frame.extend_from_slice(data);
        }
        let ok = frame
            .get_mut(h.ip_offset..)
            .is_some_and(|ip| nat::rewrite(ip, Some(to), None).is_ok());
        if ok && !rewritten {
            self.stats.rewritten += 1;
        }
        ok.then_some(to)
    }

    /// An ICMP error an inside host sends about a translated connection (a port-forward
    /// server's port unreachable, a LAN host refusing a masqueraded reply) leaves from the
    /// outside address, quoting the packet as the outside knew it. Returns whether `frame`
    /// now holds the rewritten error.
    pub fn error_outbound(&mut self, h: &Headers, data: &[u8], frame: &mut Vec<u8>) -> bool {
        let Some(q) = h.quoted else {
            return false;
        };
        // About a packet of the reply direction (masquerade) or of the original direction
        // (port forward), as tracking saw it.
        let outside = if let Some(b) = self
            .by_middle(&reversed(&q))
            .and_then(|id| self.table.get(id))
        {
            (b.translated.src, b.translated.sport)
        } else if let Some(b) = self.by_middle(&q).and_then(|id| self.table.get(id)) {
            (b.original.dst, b.original.dport)
        } else {
            return false;
        };
        if outside == (q.dst, q.dport) {
            return false;
        }
        frame.clear();
        frame.extend_from_slice(data);
        let ok = frame.get_mut(h.ip_offset..).is_some_and(|ip| {
            nat::rewrite_icmp_error_outer(ip, Some(outside.0), None, None, Some(outside)).is_ok()
        });
        if ok {
            self.stats.rewritten += 1;
        }
        ok
    }

    fn rewrite(
        &mut self,
        h: &Headers,
        data: &[u8],
        frame: &mut Vec<u8>,
        src: Option<(IpAddr, u16)>,
        dst: Option<(IpAddr, u16)>,
    ) -> bool {
        frame.clear();
        frame.extend_from_slice(data);
        let ok = frame
            .get_mut(h.ip_offset..)
            .is_some_and(|ip| nat::rewrite(ip, src, dst).is_ok());
        if ok {
            self.stats.rewritten += 1;
        }
        ok
    }

    fn rewrite_error(
        &mut self,
        h: &Headers,
        data: &[u8],
        frame: &mut Vec<u8>,
        inside: (IpAddr, u16),
    ) -> bool {
        frame.clear();
        frame.extend_from_slice(data);
        let ok = frame.get_mut(h.ip_offset..).is_some_and(|ip| {
            nat::rewrite_icmp_error(ip, Some(inside.0), Some(inside), None).is_ok()
        });
        if ok {
            self.stats.rewritten += 1;
        }
        ok
    }
}
