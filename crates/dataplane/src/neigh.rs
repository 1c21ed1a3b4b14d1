//! Neighbour cache (ARP and IPv6 neighbour discovery).
//!
//! One table for both families, keyed by port and address, with Linux's states in a simpler
//! form:
//!
//! - `INCOMPLETE`: a packet needs the address and a solicitation is out. Packets wait in a
//!   bounded queue (per neighbour as Linux's `unres_qlen`, and overall); a solicitation is
//!   sent again every `retrans_time` until `probes` went unanswered, then the queue is
//!   dropped and the entry is `FAILED`.
//! - `REACHABLE`: confirmed (a reply to our solicitation, an ARP reply or solicited NA)
//!   within `reachable_time`; after that it is `STALE`.
//! - `STALE`: learnt without confirmation (a request or solicitation from the neighbour), or
//!   confirmed long ago. Still used, as Linux does; the first use makes it `DELAY`, and
//!   `delay_first_probe` later (5 s) `PROBE`: unicast solicitations every `retrans_time`; an
//!   answer makes it `REACHABLE`, `probes` unanswered make it `FAILED`. Linux skips the
//!   probes when an upper layer (TCP) confirms the neighbour meanwhile; a router has no such
//!   layer for what it forwards, so an entry in use is re-probed once per
//!   `reachable_time`. Unused for `stale_time`, a stale entry is forgotten (Linux's garbage
//!   collection).
//! - `FAILED`: packets to it are dropped at once (`neighbour-unresolved`) for `failed_hold`;
//!   then it is forgotten and the next packet starts over.
//!
//! Sans-IO: the cache says which solicitations to send; the router builds and sends them.
//! Queued frames live in buffers that are reused, so a warm router allocates nothing to
//! queue a packet.

use core::fmt;
use core::net::IpAddr;
use core::time::Duration;
use std::collections::{HashMap, VecDeque};

use keepstate_engine::Time;
use keepstate_policy::model::IfaceId;

use crate::gso::Offload;
use crate::router::Out;

/// Neighbour-resolution settings; the defaults are Linux's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighConfig {
    /// How long a confirmation keeps an entry `REACHABLE` (`base_reachable_time`, 30 s).
    pub reachable_time: Duration,
    /// Between solicitations (`retrans_time`, 1 s).
    pub retrans_time: Duration,
    /// From the first use of a stale entry to its first unicast probe
    /// (`delay_first_probe_time`, 5 s).
    pub delay_first_probe: Duration,
    /// Solicitations sent before giving up (`mcast_solicit` and `ucast_solicit`, 3).
    pub probes: u8,
    /// How long a neighbour that did not answer keeps failing packets at once.
    pub failed_hold: Duration,
    /// An unused `STALE` entry is forgotten after this long (`gc_stale_time`, 60 s).
    pub stale_time: Duration,
    /// Packets waiting for one neighbour (`unres_qlen_bytes`'s packet form, 3): a fourth
    /// pushes out the oldest.
    pub queue_per_neighbour: usize,
    /// Packets waiting for any neighbour; past that the oldest waiting packet is dropped.
    pub queue_total: usize,
    /// Entries at most (`gc_thresh3`-like): past that stale and failed entries are evicted,
    /// and when none can be, a new neighbour is not resolved.
    pub max_entries: usize,
}

impl Default for NeighConfig {
    fn default() -> NeighConfig {
        NeighConfig {
            reachable_time: Duration::from_secs(30),
            retrans_time: Duration::from_secs(1),
            delay_first_probe: Duration::from_secs(5),
            probes: 3,
            failed_hold: Duration::from_secs(3),
            stale_time: Duration::from_secs(60),
            queue_per_neighbour: 3,
            queue_total: 256,
            max_entries: 4096,
        }
    }
}

/// A neighbour's state, named as `ip neigh` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NeighState {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed,
}

impl NeighState {
    pub const fn name(self) -> &'static str {
        match self {
            NeighState::Incomplete => "INCOMPLETE",
            NeighState::Reachable => "REACHABLE",
            NeighState::Stale => "STALE",
            NeighState::Delay => "DELAY",
            NeighState::Probe => "PROBE",
            NeighState::Failed => "FAILED",
        }
    }
}

impl fmt::Display for NeighState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One neighbour, for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourView {
    pub addr: IpAddr,
    pub port: IfaceId,
    /// Known unless the entry is `INCOMPLETE` or `FAILED`.
    pub mac: Option<[u8; 6]>,
    pub state: NeighState,
    /// Packets waiting for it.
    pub queued: usize,
}

/// A solicitation the router is to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub port: IfaceId,
    pub addr: IpAddr,
    /// Unicast to the address we have (re-probing a stale entry); `None`: broadcast ARP or
    /// a solicitation to the solicited-node multicast group.
    pub unicast: Option<[u8; 6]>,
}

/// What a packet to a neighbour does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Send it to this address (and send the probe, if any).
    Known([u8; 6], Option<Probe>),
    /// Queue it; when a solicitation is to go out first it is here.
    Resolving(Option<Probe>),
    /// Drop it: the neighbour did not answer lately, or the table is full.
    Failed,
}

/// How a packet told us about a neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Learn {
    /// It answered us (an ARP reply to us, a solicited NA): `REACHABLE`.
    pub confirmed: bool,
    /// A new entry may be made (a request or solicitation addressed to us), else only an
    /// existing one is updated.
    pub create: bool,
    /// The address may replace a different one already known (NA's override flag; ARP
    /// always overrides).
    pub override_mac: bool,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Incomplete,
    Reachable,
    Stale,
    Delay,
    Probe,
    Failed { until: Time },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mac: Option<[u8; 6]>,
    state: State,
    confirmed: Time,
    used: Time,
    probes: u8,
    next_probe: Time,
    queued: usize,
}

type Key = (IfaceId, IpAddr);

struct Waiting {
    key: Key,
    frame: Vec<u8>,
    offload: Offload,
}

pub struct NeighCache {
    cfg: NeighConfig,
    map: HashMap<Key, Entry>,
    /// Every waiting packet, oldest first.
    queue: VecDeque<Waiting>,
    /// Buffers of packets no longer waiting, for the next ones.
    pool: Vec<Vec<u8>>,
    /// Scratch for `tick`.
    failed: Vec<Key>,
}

fn after(t: Time, d: Duration) -> Time {
    Time::from_nanos(
        t.as_nanos()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
    )
}

impl NeighCache {
    pub fn new(cfg: NeighConfig) -> NeighCache {
        NeighCache {
            map: HashMap::new(),
            queue: VecDeque::with_capacity(cfg.queue_total),
            pool: Vec::new(),
            failed: Vec::new(),
            cfg,
        }
    }

    pub fn config(&self) -> &NeighConfig {
        &self.cfg
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Packets waiting for resolution.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = NeighbourView> + '_ {
        self.map.iter().map(|(&(port, addr), e)| NeighbourView {
            addr,
            port,
            mac: match e.state {
                State::Incomplete | State::Failed { .. } => None,
                _ => e.mac,
            },
            state: match e.state {
                State::Incomplete => NeighState::Incomplete,
                State::Reachable => NeighState::Reachable,
                State::Stale => NeighState::Stale,
                State::Delay => NeighState::Delay,
                State::Probe => NeighState::Probe,
                State::Failed { .. } => NeighState::Failed,
            },
            queued: e.queued,
        })
    }

    /// The link-layer address to send a packet for `addr` on `port` to.
    pub fn lookup(&mut self, now: Time, port: IfaceId, addr: IpAddr) -> Lookup {
        let cfg = &self.cfg;
        if let Some(e) = self.map.get_mut(&(port, addr)) {
            e.used = now;
            if matches!(e.state, State::Reachable) && now > after(e.confirmed, cfg.reachable_time) {
                e.state = State::Stale;
            }
            return match (e.state, e.mac) {
                (State::Reachable | State::Delay | State::Probe, Some(mac)) => {
                    Lookup::Known(mac, None)
                }
                (State::Stale, Some(mac)) => {
                    e.state = State::Delay;
                    e.probes = 0;
                    e.next_probe = after(now, cfg.delay_first_probe);
                    Lookup::Known(mac, None)
                }
                (State::Failed { until }, _) if now < until => Lookup::Failed,
                (State::Failed { .. }, _) => {
                    *e = Entry::incomplete(now, cfg);
                    Lookup::Resolving(Some(Probe {
                        port,
                        addr,
                        unicast: None,
                    }))
                }
                _ => Lookup::Resolving(None),
            };
        }
        if self.map.len() >= self.cfg.max_entries && !self.evict() {
            return Lookup::Failed;
        }
        self.map
            .insert((port, addr), Entry::incomplete(now, &self.cfg));
        Lookup::Resolving(Some(Probe {
            port,
            addr,
            unicast: None,
        }))
    }

    /// Makes room for one entry: the failed one, else the longest unused stale one.
    fn evict(&mut self) -> bool {
        let victim = self
            .map
            .iter()
            .filter(|(_, e)| matches!(e.state, State::Stale | State::Failed { .. }))
            .min_by_key(|(_, e)| (!matches!(e.state, State::Failed { .. }), e.used))
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.map.remove(&k);
                true
            }
            None => false,
        }
    }

    /// Queues a frame (with its offload) for a neighbour being resolved (its destination
    /// MAC is filled in when it is released). Returns how many older frames it pushed out (to be counted as
    /// dropped).
    pub fn enqueue(
        &mut self,
        port: IfaceId,
        addr: IpAddr,
        frame: &[u8],
        offload: Offload,
    ) -> usize {
        let key = (port, addr);
        let mut dropped = 0;
        let per = self.cfg.queue_per_neighbour;
        let full_here = self.map.get(&key).is_some_and(|e| e.queued >= per);
        if full_here {
            if let Some(i) = self.queue.iter().position(|w| w.key == key) {
                if let Some(w) = self.queue.remove(i) {
                    self.free(w);
                    dropped += 1;
                }
            }
            if let Some(e) = self.map.get_mut(&key) {
                e.queued = e.queued.saturating_sub(1);
            }
        }
        if per == 0 || self.cfg.queue_total == 0 {
            return dropped + 1;
        }
        while self.queue.len() >= self.cfg.queue_total {
            let Some(w) = self.queue.pop_front() else {
                break;
            };
            if let Some(e) = self.map.get_mut(&w.key) {
                e.queued = e.queued.saturating_sub(1);
            }
            self.free(w);
            dropped += 1;
        }
        let Some(e) = self.map.get_mut(&key) else {
            return dropped + 1;
        };
        e.queued += 1;
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.queue.push_back(Waiting {
            key,
            frame: buf,
            offload,
        });
        dropped
    }

    fn free(&mut self, w: Waiting) {
        // Keep as many buffers as can ever wait at once.
        if self.pool.len() < self.cfg.queue_total {
            self.pool.push(w.frame);
        }
    }

    /// What a packet from a neighbour taught us. Returns the address when the neighbour's
    /// waiting packets can now be released.
    pub fn learn(
        &mut self,
        now: Time,
        port: IfaceId,
        addr: IpAddr,
        mac: [u8; 6],
        how: Learn,
    ) -> Option<[u8; 6]> {
        let key = (port, addr);
        let Some(e) = self.map.get_mut(&key) else {
            if how.create && (self.map.len() < self.cfg.max_entries || self.evict()) {
                self.map.insert(
                    key,
                    Entry {
                        mac: Some(mac),
                        state: if how.confirmed {
                            State::Reachable
                        } else {
                            State::Stale
                        },
                        confirmed: now,
                        used: now,
                        probes: 0,
                        next_probe: now,
                        queued: 0,
                    },
                );
            }
            return None;
        };
        let incomplete = matches!(e.state, State::Incomplete | State::Failed { .. });
        let changed = e.mac.is_some_and(|m| m != mac);
        if !incomplete && changed && !how.override_mac {
            // A different address that may not replace ours: only doubt the one we have.
            if matches!(e.state, State::Reachable) {
                e.state = State::Stale;
            }
            return None;
        }
        e.mac = Some(mac);
        if how.confirmed {
            e.state = State::Reachable;
            e.confirmed = now;
        } else if incomplete || changed {
            e.state = State::Stale;
        }
        e.probes = 0;
        (incomplete && e.queued > 0).then_some(mac)
    }

    /// Sends a resolved neighbour's waiting frames: their destination MAC is set to `mac`.
    pub fn release(&mut self, port: IfaceId, addr: IpAddr, mac: [u8; 6], out: &mut Out) -> usize {
        let key = (port, addr);
        let mut sent = 0;
        let Self { queue, pool, .. } = self;
        let cap = self.cfg.queue_total;
        queue.retain_mut(|w| {
            if w.key != key {
                return true;
            }
            if let Some(d) = w.frame.get_mut(..6) {
                d.copy_from_slice(&mac);
            }
            out.push_offloaded(port, &w.frame, w.offload);
            sent += 1;
            if pool.len() < cap {
                pool.push(core::mem::take(&mut w.frame));
            }
            false
        });
        if let Some(e) = self.map.get_mut(&key) {
            e.queued = 0;
        }
        sent
    }

    /// Timers: solicitations to send again go to `probes`; returns how many waiting frames
    /// were dropped because their neighbour did not answer.
    pub fn tick(&mut self, now: Time, probes: &mut Vec<Probe>) -> usize {
        let cfg = &self.cfg;
        let failed = &mut self.failed;
        failed.clear();
        self.map.retain(|&(port, addr), e| match e.state {
            State::Delay if now >= e.next_probe => {
                e.state = State::Probe;
                e.probes = 1;
                e.next_probe = after(now, cfg.retrans_time);
                probes.push(Probe {
                    port,
                    addr,
                    unicast: e.mac,
                });
                true
            }
            State::Incomplete | State::Probe if now >= e.next_probe => {
                if e.probes < cfg.probes {
                    e.probes += 1;
                    e.next_probe = after(now, cfg.retrans_time);
                    let unicast = match e.state {
                        State::Probe => e.mac,
                        _ => None,
                    };
                    probes.push(Probe {
                        port,
                        addr,
                        unicast,
                    });
                } else {
                    if e.queued > 0 {
                        failed.push((port, addr));
                    }
                    e.state = State::Failed {
                        until: after(now, cfg.failed_hold),
                    };
                }
                true
            }
            State::Reachable if now > after(e.confirmed, cfg.reachable_time) => {
                e.state = State::Stale;
                true
            }
            State::Stale => now <= after(e.used, cfg.stale_time),
            State::Failed { until } => now < until,
            _ => true,
        });
        let mut dropped = 0;
        for key in &self.failed {
            if let Some(e) = self.map.get_mut(key) {
                e.queued = 0;
            }
        }
        let Self {
            queue,
            pool,
            failed,
            ..
        } = self;
        let cap = self.cfg.queue_total;
        if !failed.is_empty() {
            queue.retain_mut(|w| {
                if !failed.contains(&w.key) {
                    return true;
                }
                dropped += 1;
                if pool.len() < cap {
                    pool.push(core::mem::take(&mut w.frame));
                }
                false
            });
        }
        dropped
    }
}

impl Entry {
    fn incomplete(now: Time, cfg: &NeighConfig) -> Entry {
        Entry {
            mac: None,
            state: State::Incomplete,
            confirmed: Time::ZERO,
            used: now,
            probes: 1,
            next_probe: after(now, cfg.retrans_time),
            queued: 0,
        }
    }
}
