//! The NAT table: bindings between a connection's original tuple and its translated form,
//! and the allocation of outside ports (and ICMP identifiers) for them.
//!
//! Two keyed hash maps index the bindings, one by original tuple and one by translated
//! tuple; a slab holds the bindings themselves, so a [`BindingId`] stays valid for its
//! binding's whole life, and a generation count makes an id of a released binding find
//! nothing instead of its slot's next occupant.

use std::collections::HashMap;

use core::net::IpAddr;

use ahash::RandomState;
use keepstate_engine::wire::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use keepstate_engine::Time;

use super::NatError;
use crate::model::Mapping;

/// A connection's addressing in one direction. For ICMP and ICMPv6 queries both ports are
/// the query identifier; for protocols without ports both are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple5 {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Tuple5 {
    /// The tuple of a packet travelling the other way.
    pub fn reversed(&self) -> Tuple5 {
        Tuple5 {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// A binding's handle: valid until [`NatTable::release`], after which it finds nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindingId {
    index: u32,
    generation: u32,
}

/// One translated connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The original direction as the connection's first packet had it, before translation.
    pub original: Tuple5,
    /// The original direction after translation (what goes out on the wire).
    pub translated: Tuple5,
    pub created: Time,
}

/// Source and destination to hand to [`super::rewrite`]; `None` where nothing changes.
pub type Rewrite = (Option<(IpAddr, u16)>, Option<(IpAddr, u16)>);

impl Binding {
    /// How a packet in the original direction is rewritten: to the translated tuple.
    pub fn original_rewrite(&self) -> Rewrite {
        let (o, t) = (&self.original, &self.translated);
        (
            ((o.src, o.sport) != (t.src, t.sport)).then_some((t.src, t.sport)),
            ((o.dst, o.dport) != (t.dst, t.dport)).then_some((t.dst, t.dport)),
        )
    }

    /// How a packet in the reply direction (arriving as the translated tuple's reverse) is
    /// rewritten: back to the original tuple's reverse.
    pub fn reply_rewrite(&self) -> Rewrite {
        let (o, t) = (&self.original, &self.translated);
        (
            ((o.dst, o.dport) != (t.dst, t.dport)).then_some((o.dst, o.dport)),
            ((o.src, o.sport) != (t.src, t.sport)).then_some((o.src, o.sport)),
        )
    }

    /// The source was translated (masquerade, hairpin, or a port forward whose tuple had to
    /// move to a free source port).
    fn source_translated(&self) -> bool {
        (self.original.src, self.original.sport) != (self.translated.src, self.translated.sport)
    }
}

/// An outside address's port (or identifier) for one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct PortKey {
    proto: u8,
    addr: IpAddr,
    port: u16,
}

/// Who uses an outside port.
#[derive(Clone, Copy, Debug)]
struct PortUse {
    /// Bindings whose translated source is this port.
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

#[derive(Clone, Copy, Debug)]
struct Live {
    binding: Binding,
    /// The binding holds this outside port.
    port: Option<PortKey>,
    /// The binding is one of the users of this endpoint-independent mapping.
    eim: Option<EimKey>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    generation: u32,
    live: Option<Live>,
}

/// Whether a protocol's tuples have ports (or identifiers) NAT can choose.
fn has_ports(proto: u8) -> bool {
    matches!(proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6)
}

/// The translated tuple with source port (or identifier) `p`.
fn with_sport(t: &Tuple5, p: u16) -> Tuple5 {
    let icmp = matches!(t.proto, PROTO_ICMP | PROTO_ICMPV6);
    Tuple5 {
        sport: p,
        dport: if icmp { p } else { t.dport },
        ..*t
    }
}

/// Bindings and port allocation. See the [module docs](super) for the behaviour.
pub struct NatTable {
    lo: u16,
    hi: u16,
    hasher: RandomState,
    slots: Vec<Slot>,
    free: Vec<u32>,
    count: usize,
    by_original: HashMap<Tuple5, BindingId, RandomState>,
    by_translated: HashMap<Tuple5, BindingId, RandomState>,
    ports: HashMap<PortKey, PortUse, RandomState>,
    eim: HashMap<EimKey, u16, RandomState>,
    /// Ports in use per (protocol, outside address).
    per_addr: HashMap<(u8, IpAddr), usize, RandomState>,
}

impl NatTable {
    /// A table allocating ports (and ICMP identifiers) from `port_range` (inclusive; the
    /// bounds may come in either order). `key` seeds every hash: tuples are chosen by
    /// whoever sends packets, so neither the maps' buckets nor the allocation's starting
    /// offsets may be predictable.
    pub fn new(port_range: (u16, u16), key: [u64; 4]) -> NatTable {
        let [a, b, c, d] = key;
        let (lo, hi) = if port_range.0 <= port_range.1 {
            port_range
        } else {
            (port_range.1, port_range.0)
        };
        let seeded = |n: u64| RandomState::with_seeds(a ^ n, b, c, d);
        NatTable {
            lo,
            hi,
            hasher: seeded(0),
            slots: Vec::new(),
            free: Vec::new(),
            count: 0,
            by_original: HashMap::with_hasher(seeded(1)),
            by_translated: HashMap::with_hasher(seeded(2)),
            ports: HashMap::with_hasher(seeded(3)),
            eim: HashMap::with_hasher(seeded(4)),
            per_addr: HashMap::with_hasher(seeded(5)),
        }
    }

    /// Source NAT (masquerade) for a new connection whose first packet is `orig`, as the
    /// inside host sent it: the source becomes `to`, with the inside port kept if the
    /// translated tuple stays unique, else a free one from the range.
    ///
    /// With [`Mapping::EndpointIndependent`] the inside endpoint's existing mapping towards
    /// `to` is reused, so every destination sees the same outside port, and a new mapping
    /// only takes a port no other inside endpoint uses. If `orig` already has a binding,
    /// that binding is returned.
    pub fn snat(
        &mut self,
        orig: &Tuple5,
        to: IpAddr,
        mapping: Mapping,
        now: Time,
    ) -> Result<BindingId, NatError> {
        self.snat_with(orig, to, mapping, now, &mut |_| false)
    }

    /// [`NatTable::snat`], avoiding translated tuples `taken` says are in use by connections
    /// the table does not know (the router's own connections from `to`, which the engine
    /// tracks untranslated); netfilter's `nf_nat_used_tuple` asks its conntrack table.
    pub fn snat_with(
        &mut self,
        orig: &Tuple5,
        to: IpAddr,
        mapping: Mapping,
        now: Time,
        taken: &mut dyn FnMut(&Tuple5) -> bool,
    ) -> Result<BindingId, NatError> {
        if let Some(id) = self.find_original(orig) {
            return Ok(id);
        }
        if to.is_ipv4() != orig.src.is_ipv4() {
            return Err(NatError::PortsExhausted);
        }
        let base = Tuple5 { src: to, ..*orig };
        let inside = (orig.src, orig.sport);
        if mapping == Mapping::EndpointIndependent && has_ports(orig.proto) {
            let key = EimKey {
                proto: orig.proto,
                inside: orig.src,
                inside_port: orig.sport,
                outside: to,
            };
            if let Some(&p) = self.eim.get(&key) {
                let t = with_sport(&base, p);
                if !self.by_translated.contains_key(&t) && !taken(&t) {
                    return self.insert(*orig, t, Some(key), now);
                }
            } else {
                let h = self.hasher.hash_one((orig.proto, orig.src, orig.sport, to));
                let found = self.allocate(orig.sport, h, |p| {
                    let t = with_sport(&base, p);
                    let k = PortKey {
                        proto: orig.proto,
                        addr: to,
                        port: p,
                    };
                    // A new endpoint-independent mapping needs a port nobody uses, so that
                    // every destination can later be reached from it.
                    !self.ports.contains_key(&k)
                        && !self.by_translated.contains_key(&t)
                        && !taken(&t)
                });
                let p = found.ok_or(NatError::PortsExhausted)?;
                return self.insert(*orig, with_sport(&base, p), Some(key), now);
            }
            // The mapping's port is taken towards this destination by a connection the
            // table does not know: this one connection gets a port of its own.
        }
        let t = self.allocate_dependent(&base, inside, taken)?;
        self.insert(*orig, t, None, now)
    }

    /// Destination NAT (a port forward): the destination becomes `to`, the source stays.
    /// Should the translated tuple already be in use (the same outside client reaching the
    /// same server through two forwards), the source port moves to a free one, as
    /// netfilter's implicit source binding does. If `orig` already has a binding, that
    /// binding is returned.
    pub fn dnat(
        &mut self,
        orig: &Tuple5,
        to: (IpAddr, u16),
        now: Time,
    ) -> Result<BindingId, NatError> {
        if let Some(id) = self.find_original(orig) {
            return Ok(id);
        }
        if to.0.is_ipv4() != orig.src.is_ipv4() {
            return Err(NatError::PortsExhausted);
        }
        let t = Self::dnat_tuple(orig, to);
        if !self.by_translated.contains_key(&t) {
            return self.insert(*orig, t, None, now);
        }
        let t = self.allocate_dependent(&t, (orig.src, orig.sport), &mut |_| false)?;
        self.insert(*orig, t, None, now)
    }

    /// Both (NAT reflection, hairpin): an inside host reaching a port forward through the
    /// outside address is sent to the server at `to`, from `src_to` (the router's address on
    /// the server's side) so the server's replies come back through the router.
    pub fn dnat_snat(
        &mut self,
        orig: &Tuple5,
        to: (IpAddr, u16),
        src_to: IpAddr,
        now: Time,
    ) -> Result<BindingId, NatError> {
        if let Some(id) = self.find_original(orig) {
            return Ok(id);
        }
        if to.0.is_ipv4() != orig.src.is_ipv4() || src_to.is_ipv4() != orig.src.is_ipv4() {
            return Err(NatError::PortsExhausted);
        }
        let base = Tuple5 {
            src: src_to,
            ..Self::dnat_tuple(orig, to)
        };
        let t = self.allocate_dependent(&base, (orig.src, orig.sport), &mut |_| false)?;
        self.insert(*orig, t, None, now)
    }

    fn dnat_tuple(orig: &Tuple5, to: (IpAddr, u16)) -> Tuple5 {
        let icmp = matches!(orig.proto, PROTO_ICMP | PROTO_ICMPV6);
        Tuple5 {
            dst: to.0,
            dport: to.1,
            // An ICMP query's identifier is both ports.
            sport: if icmp { to.1 } else { orig.sport },
            ..*orig
        }
    }

    /// An address-and-port-dependent source port for `base` (whose source is the outside
    /// address): its own port if the tuple is free, else one from the range. A port held by
    /// another inside endpoint's endpoint-independent mapping is not used, so that mapping
    /// keeps every destination.
    fn allocate_dependent(
        &self,
        base: &Tuple5,
        inside: (IpAddr, u16),
        taken: &mut dyn FnMut(&Tuple5) -> bool,
    ) -> Result<Tuple5, NatError> {
        if !has_ports(base.proto) {
            let free = !self.by_translated.contains_key(base) && !taken(base);
            return if free {
                Ok(*base)
            } else {
                Err(NatError::PortsExhausted)
            };
        }
        let h = self.hasher.hash_one(base);
        let found = self.allocate(base.sport, h, |p| {
            let t = with_sport(base, p);
            let k = PortKey {
                proto: base.proto,
                addr: base.src,
                port: p,
            };
            let eim_free = self
                .ports
                .get(&k)
                .is_none_or(|u| u.eim_users == 0 || u.eim_owner == inside);
            eim_free && !self.by_translated.contains_key(&t) && !taken(&t)
        });
        found
            .map(|p| with_sport(base, p))
            .ok_or(NatError::PortsExhausted)
    }

    /// The preferred port if free, else the first free port of the range from an offset
    /// derived from `hash`, trying each port of the range once.
    fn allocate(
        &self,
        preferred: u16,
        hash: u64,
        mut free: impl FnMut(u16) -> bool,
    ) -> Option<u16> {
        if free(preferred) {
            return Some(preferred);
        }
        let size = u64::from(self.hi - self.lo) + 1;
        let start = hash % size;
        (0..size).find_map(|i| {
            let p = u16::try_from((start + i) % size)
                .ok()?
                .checked_add(self.lo)?;
            (p != preferred && free(p)).then_some(p)
        })
    }

    fn insert(
        &mut self,
        original: Tuple5,
        translated: Tuple5,
        eim: Option<EimKey>,
        now: Time,
    ) -> Result<BindingId, NatError> {
        let binding = Binding {
            original,
            translated,
            created: now,
        };
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).map_err(|_| NatError::PortsExhausted)?;
                self.slots.push(Slot {
                    generation: 0,
                    live: None,
                });
                i
            }
        };
        let Some(slot) = usize::try_from(index)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
        else {
            return Err(NatError::PortsExhausted);
        };
        let port = binding.source_translated().then_some(PortKey {
            proto: translated.proto,
            addr: translated.src,
            port: translated.sport,
        });
        slot.live = Some(Live { binding, port, eim });
        let id = BindingId {
            index,
            generation: slot.generation,
        };
        self.count += 1;
        self.by_original.insert(original, id);
        self.by_translated.insert(translated, id);
        if let Some(k) = port {
            let inside = (original.src, original.sport);
            let u = self.ports.entry(k).or_insert(PortUse {
                users: 0,
                eim_users: 0,
                eim_owner: inside,
            });
            if u.users == 0 {
                *self.per_addr.entry((k.proto, k.addr)).or_insert(0) += 1;
            }
            u.users += 1;
            if let Some(e) = eim {
                u.eim_users += 1;
                u.eim_owner = inside;
                self.eim.insert(e, k.port);
            }
        }
        Ok(id)
    }

    /// The binding of a packet seen in the original direction, before translation.
    pub fn find_original(&self, t: &Tuple5) -> Option<BindingId> {
        self.by_original.get(t).copied()
    }

    /// The binding of a packet seen in the reply direction as it arrives: addressed to the
    /// translated source, from the translated destination.
    pub fn find_reply(&self, t: &Tuple5) -> Option<BindingId> {
        self.by_translated.get(&t.reversed()).copied()
    }

    pub fn get(&self, id: BindingId) -> Option<&Binding> {
        self.live(id).map(|l| &l.binding)
    }

    fn live(&self, id: BindingId) -> Option<&Live> {
        let slot = self.slots.get(usize::try_from(id.index).ok()?)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.live.as_ref()
    }

    /// Removes a binding; its port returns to the pool. An id already released does nothing.
    pub fn release(&mut self, id: BindingId) {
        let Some(slot) = usize::try_from(id.index)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
        else {
            return;
        };
        if slot.generation != id.generation {
            return;
        }
        let Some(live) = slot.live.take() else {
            return;
        };
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.count -= 1;
        let b = live.binding;
        if self.by_original.get(&b.original) == Some(&id) {
            self.by_original.remove(&b.original);
        }
        if self.by_translated.get(&b.translated) == Some(&id) {
            self.by_translated.remove(&b.translated);
        }
        let Some(k) = live.port else {
            return;
        };
        let Some(u) = self.ports.get_mut(&k) else {
            return;
        };
        u.users = u.users.saturating_sub(1);
        if let Some(e) = live.eim {
            u.eim_users = u.eim_users.saturating_sub(1);
            if u.eim_users == 0 {
                self.eim.remove(&e);
            }
        }
        if u.users == 0 {
            self.ports.remove(&k);
            if let Some(n) = self.per_addr.get_mut(&(k.proto, k.addr)) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_addr.remove(&(k.proto, k.addr));
                }
            }
        }
    }

    /// Live bindings.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Distinct ports (or ICMP identifiers) of `addr` that translated sources use.
    pub fn ports_in_use(&self, proto: u8, addr: IpAddr) -> usize {
        self.per_addr.get(&(proto, addr)).copied().unwrap_or(0)
    }

    /// Every live binding, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (BindingId, &Binding)> {
        self.slots.iter().zip(0u32..).filter_map(|(slot, index)| {
            let live = slot.live.as_ref()?;
            let id = BindingId {
                index,
                generation: slot.generation,
            };
            Some((id, &live.binding))
        })
    }
}
