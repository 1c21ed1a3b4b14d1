//! Flood defences that work per zone: rate limits on new connections (TCP SYNs, UDP flows,
//! ICMP queries) and pf-style per-source overload, where a source opening connections faster
//! than its zone allows is blocked for a while (pf's `max-src-conn-rate` with `overload
//! <table>` and a table expiry).
//!
//! Memory is fixed: one token bucket per zone and kind, and for overload a keyed 8-way table
//! of per-source buckets ([`PerSource`]) and one of blocked sources, so neither a flood nor a
//! sweep of spoofed sources can grow them.

use core::net::IpAddr;

use keepstate_engine::Time;

use crate::limit::{Bucket, PerSource, DEFAULT_PER_SOURCE_CAPACITY};
use crate::model::{Policy, ZoneId};
use crate::ruleset::Chain;

/// What kind of new connection a rate applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Debug, Default)]
struct ZoneLimits {
    /// New TCP connections to the firewall itself (`synflood_protect`).
    syn_input: Option<Bucket>,
    /// New TCP connections forwarded from the zone (`syn_limit`).
    syn_forward: Option<Bucket>,
    /// New UDP flows and ICMP queries from the zone, to the firewall or forwarded.
    udp: Option<Bucket>,
    icmp: Option<Bucket>,
}

/// Per-zone rate limits on new connections.
#[derive(Clone, Debug)]
pub(crate) struct NewFlowLimits {
    zones: Vec<ZoneLimits>,
}

impl NewFlowLimits {
    pub(crate) fn new(p: &Policy) -> NewFlowLimits {
        let d = &p.defaults;
        NewFlowLimits {
            zones: p
                .zones
                .iter()
                .map(|z| ZoneLimits {
                    syn_input: d.synflood_protect.then(|| Bucket::new(&d.synflood_limit)),
                    syn_forward: z.syn_limit.as_ref().map(Bucket::new),
                    udp: z.udp_limit.as_ref().map(Bucket::new),
                    icmp: z.icmp_limit.as_ref().map(Bucket::new),
                })
                .collect(),
        }
    }

    /// Whether a new connection of `flow` arriving from `zone` into `chain` is within its
    /// rate (and if so, spends a token).
    pub(crate) fn allow(&mut self, flow: Flow, chain: Chain, zone: ZoneId, now: Time) -> bool {
        let Some(z) = self.zones.get_mut(usize::from(zone)) else {
            return true;
        };
        let bucket = match (flow, chain) {
            (_, Chain::Output) => None,
            (Flow::Tcp, Chain::Input) => z.syn_input.as_mut(),
            (Flow::Tcp, Chain::Forward) => z.syn_forward.as_mut(),
            (Flow::Udp, _) => z.udp.as_mut(),
            (Flow::Icmp, _) => z.icmp.as_mut(),
        };
        bucket.is_none_or(|b| b.allow(now))
    }
}

const WAYS: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Count {
    addr: u128,
    n: u32,
    used: bool,
}

/// Connections per source, for zones with `src_conn_max` (pf's `max-src-conn`). One count
/// per source address across those zones, in a fixed-size keyed 8-way table: a source that
/// loses its slot to others (only when a set holds eight sources with connections open)
/// starts again from zero, so under such pressure the limit errs on the side of letting
/// connections through.
#[derive(Clone, Debug)]
pub(crate) struct SourceConns {
    max: Vec<Option<u32>>,
    slots: Vec<Count>,
    set_mask: u64,
    hasher: ahash::RandomState,
    departed: Vec<IpAddr>,
    /// Some zone has it.
    pub(crate) any: bool,
}

impl SourceConns {
    pub(crate) fn new(p: &Policy, key: [u64; 4]) -> SourceConns {
        let max: Vec<Option<u32>> = p.zones.iter().map(|z| z.src_conn_max).collect();
        let sets = (4 * DEFAULT_PER_SOURCE_CAPACITY) / WAYS;
        SourceConns {
            any: max.iter().any(Option::is_some),
            max,
            slots: if p.zones.iter().any(|z| z.src_conn_max.is_some()) {
                vec![Count::default(); sets * WAYS]
            } else {
                Vec::new()
            },
            set_mask: u64::try_from(sets - 1).unwrap_or(0),
            hasher: ahash::RandomState::with_seeds(key[1], key[3], key[0], key[2]),
            departed: Vec::new(),
        }
    }

    fn ways(&mut self, addr: u128) -> Option<&mut [Count]> {
        let set = self.hasher.hash_one(addr) & self.set_mask;
        let start = usize::try_from(set).ok()?.checked_mul(WAYS)?;
        self.slots.get_mut(start..start.checked_add(WAYS)?)
    }

    /// A new connection from `src` arriving in `zone`: `None` when the zone does not count,
    /// `Some(true)` when it is counted, `Some(false)` when the source is at the limit.
    pub(crate) fn open(&mut self, zone: ZoneId, src: IpAddr) -> Option<bool> {
        let max = (*self.max.get(usize::from(zone))?)?;
        let addr = addr_bits(src);
        let ways = self.ways(addr)?;
        let i = ways
            .iter()
            .position(|c| c.used && c.addr == addr)
            .or_else(|| ways.iter().position(|c| !c.used || c.n == 0))
            .unwrap_or_else(|| {
                // Every slot has connections open: the source with fewest gives way.
                ways.iter()
                    .enumerate()
                    .min_by_key(|(_, c)| c.n)
                    .map_or(0, |(i, _)| i)
            });
        let c = ways.get_mut(i)?;
        if !(c.used && c.addr == addr) {
            *c = Count {
                addr,
                n: 0,
                used: true,
            };
        }
        if c.n >= max {
            return Some(false);
        }
        c.n += 1;
        Some(true)
    }

    /// Takes back the connections that have left the engine's table.
    pub(crate) fn collect(&mut self, engine: &mut keepstate_engine::Engine) {
        engine.take_departed(&mut self.departed);
        let mut gone = core::mem::take(&mut self.departed);
        for src in gone.drain(..) {
            let addr = addr_bits(src);
            if let Some(ways) = self.ways(addr) {
                if let Some(c) = ways.iter_mut().find(|c| c.used && c.addr == addr) {
                    c.n = c.n.saturating_sub(1);
                }
            }
        }
        self.departed = gone;
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Blocked {
    addr: u128,
    /// Nanoseconds of the caller's clock at which the block ends.
    until: u64,
    used: bool,
}

/// One zone's per-source overload: a connection rate per source, and the sources that went
/// over it, blocked until their time is up.
#[derive(Clone, Debug)]
struct ZoneOverload {
    rate: PerSource,
    blocked: Vec<Blocked>,
    set_mask: u64,
    timeout: u64,
}

/// Per-source overload for every zone that sets `src_conn_limit`.
#[derive(Clone, Debug)]
pub(crate) struct Overload {
    zones: Vec<Option<ZoneOverload>>,
    hasher: ahash::RandomState,
    /// Some zone has it.
    pub(crate) any: bool,
}

fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Overload {
    pub(crate) fn new(p: &Policy, key: [u64; 4]) -> Overload {
        let sets = DEFAULT_PER_SOURCE_CAPACITY / WAYS;
        let zones: Vec<Option<ZoneOverload>> = p
            .zones
            .iter()
            .map(|z| {
                z.src_conn_limit.as_ref().map(|l| ZoneOverload {
                    rate: PerSource::with_key(l, DEFAULT_PER_SOURCE_CAPACITY, key),
                    blocked: vec![Blocked::default(); sets * WAYS],
                    set_mask: u64::try_from(sets - 1).unwrap_or(0),
                    timeout: z.overload_timeout.as_nanos(),
                })
            })
            .collect();
        Overload {
            any: zones.iter().any(Option::is_some),
            zones,
            hasher: ahash::RandomState::with_seeds(key[2], key[0], key[3], key[1]),
        }
    }

    fn set<'a>(
        hasher: &ahash::RandomState,
        z: &'a mut ZoneOverload,
        addr: u128,
    ) -> Option<&'a mut [Blocked]> {
        let set = hasher.hash_one(addr) & z.set_mask;
        let start = usize::try_from(set).ok()?.checked_mul(WAYS)?;
        z.blocked.get_mut(start..start.checked_add(WAYS)?)
    }

    /// Whether `src` is blocked in `zone` at `now`.
    pub(crate) fn is_blocked(&mut self, zone: ZoneId, src: IpAddr, now: Time) -> bool {
        let Some(Some(z)) = self.zones.get_mut(usize::from(zone)) else {
            return false;
        };
        let addr = addr_bits(src);
        let now = now.as_nanos();
        Overload::set(&self.hasher, z, addr).is_some_and(|ways| {
            ways.iter()
                .any(|b| b.used && b.addr == addr && b.until > now)
        })
    }

    /// Counts a new connection from `src` arriving in `zone`; `false` when it is over the
    /// zone's per-source rate, and the source is then blocked for the zone's timeout.
    pub(crate) fn new_connection(&mut self, zone: ZoneId, src: IpAddr, now: Time) -> bool {
        let Some(Some(z)) = self.zones.get_mut(usize::from(zone)) else {
            return true;
        };
        if z.rate.allow(src, now) {
            return true;
        }
        let addr = addr_bits(src);
        let t = now.as_nanos();
        let until = t.saturating_add(z.timeout);
        if let Some(ways) = Overload::set(&self.hasher, z, addr) {
            // The source's own slot, else a free or expired one, else the one that ends
            // soonest.
            let i = ways
                .iter()
                .position(|b| b.used && b.addr == addr)
                .or_else(|| ways.iter().position(|b| !b.used || b.until <= t))
                .unwrap_or_else(|| {
                    ways.iter()
                        .enumerate()
                        .min_by_key(|(_, b)| b.until)
                        .map_or(0, |(i, _)| i)
                });
            if let Some(b) = ways.get_mut(i) {
                *b = Blocked {
                    addr,
                    until,
                    used: true,
                };
            }
        }
        false
    }
}
