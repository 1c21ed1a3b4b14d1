//! The engine: classifies each packet against the state table.

use crate::config::Config;
use crate::events::{Event, EventLog};
use crate::frag::{First, Fragments, Later};
use crate::nat::{Ipv4Rewrite, NatRequest, RowRewrite, Translation};
use crate::reason::DropReason;
use crate::table::{
    reverse, Entry, Found, NatExt, NatReleased, Table, FORM_KEY, NAT_DST, NAT_EIM, NAT_REPORT,
    NAT_SRC, STATUS_ASSURED, STATUS_NAT, STATUS_SEEN_REPLY, SWEEP_RUN,
};
use crate::tcp::{self, Decision, TcpState};
use crate::time::Time;
use crate::wire::{
    self, addr_to_ip, Addr, Family, Frag, IcmpKind, Ip, Key, LinkInfo, LinkType, Transport,
    PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};
use core::net::{IpAddr, Ipv4Addr};
use std::collections::VecDeque;

/// What the firewall does with the packet. Without a policy only a full table drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
        }
    }
}

/// Connection state as rules see it (netfilter's `ct state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtState {
    New = 0,
    Established = 1,
    Related = 2,
    Invalid = 3,
    Untracked = 4,
}

impl CtState {
    pub const ALL: [CtState; 5] = [
        CtState::New,
        CtState::Established,
        CtState::Related,
        CtState::Invalid,
        CtState::Untracked,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
            CtState::Untracked => "untracked",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Original,
    Reply,
}

impl Direction {
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Original => "original",
            Direction::Reply => "reply",
        }
    }

    fn from_index(i: usize) -> Direction {
        if i == 0 {
            Direction::Original
        } else {
            Direction::Reply
        }
    }
}

/// Header facts about the packet, for traces, logs and rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    pub link: LinkInfo,
    pub family: Option<Family>,
    pub proto: Option<u8>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    /// An ICMP or ICMPv6 query's identifier.
    pub icmp_id: Option<u16>,
    pub tcp_flags: Option<u8>,
    /// IP datagram length (0 for non-IP).
    pub len: u32,
}

/// The engine's answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub state: CtState,
    /// Direction within its connection; `None` for invalid and untracked packets.
    pub dir: Option<Direction>,
    /// Why the packet is invalid or dropped.
    pub reason: Option<DropReason>,
    /// The packet's connection has its destination translated (a port forward, 1:1 NAT):
    /// `meta` shows the packet after that translation.
    pub dnat: bool,
    pub meta: PacketMeta,
}

impl Outcome {
    /// An outcome slot before a packet is classified into it (see
    /// [`Engine::process_ahead_into`]): accepted, untracked, no header facts.
    pub const BLANK: Outcome = Outcome {
        verdict: Verdict::Accept,
        state: CtState::Untracked,
        dir: None,
        reason: None,
        dnat: false,
        meta: PacketMeta {
            link: LinkInfo {
                ifindex: None,
                pkt_type: None,
                vlan: None,
                ethertype: 0,
                ip_offset: 0,
            },
            family: None,
            proto: None,
            src: None,
            dst: None,
            sport: None,
            dport: None,
            icmp_type: None,
            icmp_code: None,
            icmp_id: None,
            tcp_flags: None,
            len: 0,
        },
    };
}

/// What tracking decided, without the header facts: small enough to travel in a register,
/// so the tracking functions never move a [`PacketMeta`] around.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Res {
    verdict: Verdict,
    state: CtState,
    dir: Option<Direction>,
    reason: Option<DropReason>,
}

impl Res {
    const UNTRACKED: Res = Res {
        verdict: Verdict::Accept,
        state: CtState::Untracked,
        dir: None,
        reason: None,
    };

    const fn invalid(reason: DropReason) -> Res {
        Res {
            verdict: Verdict::Accept,
            state: CtState::Invalid,
            dir: None,
            reason: Some(reason),
        }
    }

    const fn accept(state: CtState, dir: Direction) -> Res {
        Res {
            verdict: Verdict::Accept,
            state,
            dir: Some(dir),
            reason: None,
        }
    }

    #[inline(always)]
    fn write(self, out: &mut Outcome) {
        out.verdict = self.verdict;
        out.state = self.state;
        out.dir = self.dir;
        out.reason = self.reason;
    }

    #[inline(always)]
    fn with(self, meta: PacketMeta) -> Outcome {
        Outcome {
            verdict: self.verdict,
            state: self.state,
            dir: self.dir,
            reason: self.reason,
            dnat: false,
            meta,
        }
    }
}

/// One captured or received frame, for batch processing.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub now: Time,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length on the wire; larger than `data.len()` when the capture cut the packet.
    pub wire_len: usize,
}

/// Stages a firewall policy runs around tracking, in netfilter's order: the raw table before
/// the state table is consulted, the filter table before a new entry is confirmed.
pub trait Hooks {
    /// Called for every parsed, trackable packet before the table is consulted. Returning
    /// `true` exempts it from tracking (netfilter's `notrack`): its state is `untracked` and
    /// the table is left untouched.
    fn raw(&mut self, meta: &PacketMeta) -> bool;

    /// Judges the packet once its connection state is known. A `Drop` of a packet that
    /// opened a connection removes the new entry again, so traffic the policy refuses never
    /// occupies the table.
    fn filter(&mut self, out: &Outcome) -> Verdict;

    /// Asked when the filter accepted a packet that opened a connection, before any
    /// translation: whether to keep it, and whether its source is to be told when it goes
    /// ([`Engine::take_departed`]), for a policy that limits connections per source.
    #[inline(always)]
    fn admit(&mut self, _out: &Outcome) -> Admit {
        Admit::Keep
    }

    /// Asked when the filter accepted a packet that opened a connection: the address
    /// translation to give it, if any (netfilter's NAT chains, which see only a connection's
    /// first packet). When no port is free the packet is dropped with
    /// [`DropReason::NatPortsExhausted`] and the connection is not kept.
    ///
    /// The request stays with the hooks and the engine reads it where it lies: returned by
    /// value, it was copied whole, and the copy read back in wide loads what the policy had
    /// just written field by field, loads the processor cannot forward (README, Benchmark).
    #[inline(always)]
    fn nat(&mut self, _out: &Outcome) -> Option<&NatRequest> {
        None
    }

    /// Whether source NAT may use `port` of `addr` for protocol `proto`, asked for each
    /// candidate port of an [`crate::SnatRequest`] with `ask` set, on top of the engine's
    /// own check that the translated connection would be unique.
    #[inline(always)]
    fn nat_port_usable(&mut self, _proto: u8, _addr: IpAddr, _port: u16) -> bool {
        true
    }
}

/// What [`Hooks::admit`] decides about a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Keep,
    /// Keep it, and report its original source when it leaves the table.
    KeepCounted,
    /// Refuse it after all: the packet is dropped with this reason and the entry removed.
    Refuse(DropReason),
}

/// Tracking alone: nothing is exempted, and every verdict stays the engine's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {
    #[inline(always)]
    fn raw(&mut self, _meta: &PacketMeta) -> bool {
        false
    }

    #[inline(always)]
    fn filter(&mut self, out: &Outcome) -> Verdict {
        out.verdict
    }
}

/// Counters kept by the engine.
#[derive(Clone, Debug)]
pub struct Stats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets per [`CtState`] (index with `state as usize`).
    pub by_state: [u64; 5],
    /// Packets per [`DropReason`] (index with `reason.index()`).
    pub by_reason: [u64; DropReason::COUNT],
    /// Connections created.
    pub created: u64,
    /// Connections removed because their timeout passed.
    pub expired: u64,
    /// Unassured connections (never-replied ones first) removed early to make room in a full
    /// table.
    pub evicted: u64,
    /// New connections refused because the table was full.
    pub refused: u64,
    /// New entries removed again because the policy dropped the packet that opened them.
    pub unconfirmed: u64,
    /// Connections removed on request ([`Engine::remove_where`]: `conntrack -D`, `-F`).
    pub removed: u64,
    /// Most live connections at once.
    pub peak: usize,
    /// Table memory when the peak was reached.
    pub peak_memory: usize,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            packets: 0,
            bytes: 0,
            by_state: [0; 5],
            by_reason: [0; DropReason::COUNT],
            created: 0,
            expired: 0,
            evicted: 0,
            refused: 0,
            unconfirmed: 0,
            removed: 0,
            peak: 0,
            peak_memory: 0,
        }
    }
}

/// Transport part of a connection tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4Tuple {
    Ports { sport: u16, dport: u16 },
    Icmp { ty: u8, code: u8, id: u16 },
    None,
}

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4Tuple,
}

/// A snapshot of one tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    pub family: Family,
    pub proto: u8,
    pub original: Tuple,
    /// What replies look like (the inverse of `original`, until NAT changes that).
    pub reply: Tuple,
    pub tcp_state: Option<TcpState>,
    pub seen_reply: bool,
    pub assured: bool,
    /// Seconds until the entry expires, at the engine's latest `now`.
    pub timeout: u32,
    /// Seconds since the connection was created, at the engine's latest `now`.
    pub age: u32,
    /// Per direction: `[original, reply]`.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// The request and reply ICMP types for a query class.
fn icmp_query_types(v6: bool, class: u16) -> (u8, u8) {
    match (v6, class) {
        (false, 1) => (13, 14),
        (false, 2) => (15, 16),
        (false, 3) => (17, 18),
        (false, _) => (8, 0),
        (true, 1) => (139, 140),
        (true, _) => (128, 129),
    }
}

fn family_code(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

/// How many packets ahead `process_batch` prefetches entries (buckets twice as far).
const PREFETCH_DISTANCE: usize = 8;

/// How far ahead of the packet being classified a pipelined caller should call
/// [`Engine::look_ahead`] (twice this) and [`Engine::prefetch`] (this): far enough for a
/// line to arrive from memory while the packets in between are classified by the engine
/// alone. A caller doing more per packet covers the same time in fewer packets, and a
/// shorter window holds fewer lines in the cache: the policy's firewall uses half.
pub const LOOKAHEAD_DISTANCE: usize = PREFETCH_DISTANCE;

/// A packet's table lookup worked out ahead of its turn by [`Engine::look_ahead`], so the
/// memory it will touch can be requested early ([`Engine::prefetch`]) and its hash is not
/// worked out twice ([`Engine::process_ahead`]). Only the engine that made it uses it; any
/// other ignores it, so a stale one is harmless.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lookahead {
    hash: Option<u64>,
    /// The index slot [`Engine::prefetch`] found, for the lookup to start from.
    slot: Option<u32>,
    engine: u64,
}

/// What the look-ahead learned of a packet before its turn: its hash and, once its entry
/// was requested, the index slot that names it (a guess the lookup checks).
#[derive(Clone, Copy, Debug)]
struct Ahead {
    hash: u64,
    slot: Option<u32>,
}

/// How a lookup starts: cold, or from what the look-ahead learned (the entry's lines
/// requested, perhaps the slot known).
#[derive(Clone, Copy, Debug)]
enum Probe {
    Cold,
    Ahead(Option<u32>),
}

/// Tells engines apart for [`Lookahead`].
static ENGINES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);

impl Engine {
    /// The batch size `process_batch` works best with: long enough that the prefetch
    /// pipeline's start-up is amortised.
    pub const PREFERRED_BATCH: usize = 256;
}

/// How the packet being classified is translated. A packet of a translated connection
/// (nearly all translated traffic) names its connection and is worked out only where asked:
/// the fast rewrite reads the connection's record directly.
#[derive(Clone, Copy, Debug)]
enum Xlate {
    /// `rw`: for a plain packet of an IPv4 TCP or UDP connection without sequence
    /// translation, the rewrite, copied while the connection's record is at hand.
    Packet {
        id: u32,
        dir: u8,
        /// The connection's destination is translated.
        dnat: bool,
        rw: Option<RowRewrite>,
    },
    /// Worked out in full, in `Engine::xbuilt` (kept apart so that the common case writes
    /// a few bytes, not a whole `Translation`).
    Built,
}

/// The sans-IO stateful inspection engine.
pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) table: Table,
    pub(crate) stats: Stats,
    now: Time,
    /// `now` in whole seconds, rounded down (for expiry checks) and up (for deadlines);
    /// kept in step with `now` by `advance` so the per-packet path never divides.
    now_floor: u32,
    now_ceil: u32,
    /// Where the second `now_floor` names ends, in nanoseconds: until then `advance` need
    /// not divide.
    second_end: u64,
    scratch: Vec<u32>,
    /// The entry the packet being classified created, until the filter hook confirms it.
    pub(crate) created: Option<u32>,
    /// How the packet being classified is translated, if its connection is.
    xlate: Option<Xlate>,
    /// The translation, with `xlate` `Built`.
    xbuilt: Option<Translation>,
    /// Which engine this is, for [`Lookahead`].
    instance: u64,
    /// The packet being classified took the fast path: IPv4 without options, not a
    /// fragment, complete, with a whole TCP or UDP header.
    plain: bool,
    /// Datagrams whose first fragment was seen, so their later pieces can be judged.
    frags: Fragments,
    /// The connection the packet being classified belongs to (or opened).
    pub(crate) last: Option<u32>,
    /// The original side's acknowledgments of the current packet's connection are this far
    /// behind the reply side's sequence numbers (a SYN-proxied connection).
    ack_behind: u32,
    /// Packets seen, modulo 2^32: paces the sweep.
    sweep_tick: u32,
    /// The timeouts as configured; `cfg.timeouts` holds those in force, scaled down by
    /// adaptive timeouts while the table is filling.
    base_timeouts: crate::config::Timeouts,
    /// The TCP timeouts in force (`cfg.timeouts`), by state.
    tcp_timeouts: tcp::StateTimeouts,
    /// The table sizes between which the timeouts in force stay as they are.
    adaptive_band: (usize, usize),
    /// The least timeout any connection can be given, whatever adaptive timeouts do: lets
    /// the sweep pass over chunks in which nothing can have expired yet.
    expiry_margin: u32,
    /// Entries in the order they were created (ids; some since gone or reused), at most
    /// one per table slot: where a full table looks first for one to evict.
    young: VecDeque<u32>,
    nat_stats: NatCounters,
    /// Connection events, when asked for ([`Engine::set_events`]).
    events: Option<Box<EventLog>>,
}

/// Address translation counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatCounters {
    /// Connections given a translation.
    pub created: u64,
    /// New connections refused because no port was free.
    pub exhausted: u64,
    /// Packets matching a translated connection's untranslated tuple (a reply sent straight
    /// to the inside address), refused.
    pub bypass: u64,
}

impl Engine {
    pub fn new(mut cfg: Config) -> Engine {
        // Index slots keep two bits of an id for the tuple form.
        cfg.max_connections = cfg.max_connections.min(crate::table::MAX_ENTRIES);
        let mut table = Table::new(crate::table::Hashing::new(cfg.hash_key));
        table.set_release_cap(cfg.max_connections as usize);
        let base_timeouts = cfg.timeouts.clone();
        let hash_key = cfg.hash_key;
        let least = base_timeouts.least();
        // Adaptive timeouts scale down to one second, never below.
        let expiry_margin = if cfg.adaptive.is_some() {
            least.min(1)
        } else {
            least
        };
        Engine {
            table,
            tcp_timeouts: tcp::StateTimeouts::new(&cfg),
            base_timeouts,
            expiry_margin,
            adaptive_band: (0, 0),
            cfg,
            stats: Stats::default(),
            now: Time::ZERO,
            now_floor: 0,
            now_ceil: 0,
            second_end: 0,
            scratch: Vec::new(),
            created: None,
            xlate: None,
            xbuilt: None,
            instance: ENGINES.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            plain: false,
            frags: Fragments::new(hash_key),
            last: None,
            ack_behind: 0,
            sweep_tick: 0,
            young: VecDeque::new(),
            nat_stats: NatCounters::default(),
            events: None,
        }
    }

    /// How the packet last processed is translated: `Some` when it belongs to a translated
    /// connection (or an ICMP error quotes one) and must leave rewritten. Valid until the
    /// next packet.
    pub fn translation(&self) -> Option<Translation> {
        match self.xlate.as_ref()? {
            Xlate::Built => self.xbuilt,
            Xlate::Packet { id, dir, .. } => {
                // The packet matched the tuple it arrives with exactly.
                let k = &self.table.get_opt(*id)?.key;
                let x = self.table.ext(*id);
                let arrived = if *dir == 0 {
                    x.arrive_original(k)
                } else {
                    x.arrive_reply(k)
                };
                Some(Translation::packet(&arrived, k, x, usize::from(*dir)))
            }
        }
    }

    /// Whether the packet last processed must leave rewritten (see
    /// [`Engine::translation`]).
    pub fn translates(&self) -> bool {
        self.xlate.is_some()
    }

    /// The rewrite of the packet last processed when it belongs to a translated IPv4 TCP or
    /// UDP connection (without sequence translation) and is plain: no IP options, not a
    /// fragment, complete, with a whole TCP or UDP header, as the engine checked. What
    /// [`Engine::translation`] gives as [`Translation::ipv4`], read straight from the
    /// connection's record instead of built. `None` otherwise, where `translation` has the
    /// whole story.
    #[inline]
    pub fn ipv4_rewrite(&self) -> Option<Ipv4Rewrite> {
        match self.xlate {
            Some(Xlate::Packet {
                id,
                dir,
                rw: Some(_),
                ..
            }) => {
                let k = &self.table.get_opt(id)?.key;
                Some(crate::nat::packet_ipv4(
                    k,
                    self.table.ext(id),
                    usize::from(dir),
                ))
            }
            _ => None,
        }
    }

    /// Rewrites the packet last processed as it leaves, given from its IPv4 header on, when
    /// [`Engine::ipv4_rewrite`] has its rewrite: the addresses and ports written and the
    /// two checksum sums added, as the connection's record has them ready. Returns whether
    /// it did; `false`, having written nothing, for any other packet and for a UDP packet
    /// shorter than 40 bytes, which the caller rewrites from [`Engine::translation`].
    #[inline(always)]
    pub fn rewrite_ipv4_plain(&self, ip: &mut [u8]) -> bool {
        let Some(Xlate::Packet { rw: Some(rw), .. }) = &self.xlate else {
            return false;
        };
        let Some(p) = ip
            .get_mut(..40)
            .and_then(|p| <&mut [u8; 40]>::try_from(p).ok())
        else {
            return false;
        };
        rw.apply(p);
        true
    }

    /// Checks the state table's index against its entries (every connection findable under
    /// each tuple it is filed under, counts in agreement). It visits the whole table: for
    /// tests and fuzzing.
    pub fn check_table(&self) -> Result<(), String> {
        self.table.check()
    }

    /// Gives the connection of the packet last processed (which must be translated) a TCP
    /// sequence offset: a SYN proxy answered its original side with its own initial
    /// sequence number, `delta` below the reply side's. From the next packet on, original
    /// packets' acknowledgments are tracked and rewritten `delta` higher and replies'
    /// sequence numbers rewritten `delta` lower ([`Translation::tcp_seq`]). Returns whether
    /// there was such a connection.
    pub fn set_seq_offset(&mut self, delta: u32) -> bool {
        match self.last {
            Some(id) => self.table.set_seq_delta(id, delta),
            None => false,
        }
    }

    /// Translated connections in the table.
    pub fn nat_connections(&self) -> usize {
        self.table.nat_len()
    }

    pub fn nat_counters(&self) -> &NatCounters {
        &self.nat_stats
    }

    /// Moves into `out` the endpoint-independent mappings whose connections have left the
    /// table since the last call. Callers that ask for such mappings must collect them; at
    /// most one per table slot is held, beyond that they are counted and dropped.
    pub fn take_nat_released(&mut self, out: &mut Vec<NatReleased>) {
        self.table.take_released(out);
    }

    /// Moves into `out` the original sources of connections [`Hooks::admit`] asked to count
    /// that have left the table since the last call. As with
    /// [`Engine::take_nat_released`], at most one per table slot is held.
    pub fn take_departed(&mut self, out: &mut Vec<IpAddr>) {
        self.table.take_departed(out);
    }

    /// Releases dropped because they were not collected in time.
    pub fn nat_released_lost(&self) -> u64 {
        self.table.released_lost()
    }

    /// The configuration, with the timeouts in force (see [`Config::adaptive`]).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live entries (some may have expired and not yet been swept).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Sets aside room for `connections` connections now (at most the table's limit): their
    /// entries, their index slots (two each with `translated`, as a translated connection is
    /// also filed under the tuple its replies arrive with, plus its translation record) and
    /// their ids in the eviction queue. Growing to that many then never stops to enlarge the
    /// index (a pause that grows with the table: about 14 ms at a million connections) or
    /// for the system to back fresh memory page by page, and the index is never rebuilt
    /// smaller. (The eviction queue lets go of the ids of ended connections only as it
    /// reaches them, so under churn it can still grow, by 4 bytes an id, up to the limit.)
    /// As netfilter sizes its hash table when it loads (`hashsize`), a router that knows its
    /// load reserves for it at start. The entries and index are written as they are
    /// allocated, so they are in use from then on ([`Engine::memory_bytes`] counts them).
    /// Never shrinks anything.
    pub fn reserve(&mut self, connections: u32, translated: bool) {
        let n = connections.min(self.cfg.max_connections) as usize;
        let slots = if translated { n.saturating_mul(2) } else { n };
        self.table.reserve_room(n, slots, translated);
        self.young.reserve(n.saturating_sub(self.young.len()));
    }

    /// Bytes the state table holds (entries, index, and the eviction queue).
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.young.capacity() * core::mem::size_of::<u32>()
    }

    /// The latest `now` the engine was given.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Classifies one complete frame.
    pub fn process(&mut self, now: Time, link: LinkType, data: &[u8]) -> Outcome {
        self.process_captured(now, link, data, data.len())
    }

    /// Classifies one frame whose wire length may exceed the captured bytes.
    pub fn process_captured(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
    ) -> Outcome {
        self.process_hooked(now, link, data, wire_len, &mut NoHooks)
    }

    /// Classifies one frame with a policy's hooks (see [`Hooks`]).
    #[inline(always)]
    pub fn process_hooked<H: Hooks>(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        hooks: &mut H,
    ) -> Outcome {
        self.process_hinted(now, link, data, wire_len, None, hooks)
    }

    /// First stage of a pipelined lookup: works out the hash of the packet's tuple and
    /// requests the index line it falls in. Cheap, and only reads `data`.
    #[inline(always)]
    pub fn look_ahead(&self, link: LinkType, data: &[u8]) -> Lookahead {
        let hash = wire::peek_key(link, data).map(|k| self.table.hash(&k));
        if let Some(h) = hash {
            self.table.prefetch(h);
        }
        Lookahead {
            hash,
            slot: None,
            engine: self.instance,
        }
    }

    /// Second stage, some packets later: requests the lines of the entry (and translation
    /// record) the index line names, and notes that index slot in the look-ahead it gives
    /// back, for the lookup to start from.
    #[inline(always)]
    pub fn prefetch(&self, la: Lookahead) -> Lookahead {
        match (la.hash, la.engine == self.instance) {
            (Some(h), true) => Lookahead {
                slot: self.table.prefetch_entry(h),
                ..la
            },
            _ => la,
        }
    }

    /// [`Engine::process_hooked`] for a packet whose [`Lookahead`] was taken: the same
    /// outcome, less the work the look-ahead did.
    #[inline(always)]
    pub fn process_ahead<H: Hooks>(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        la: Lookahead,
        hooks: &mut H,
    ) -> Outcome {
        self.process_hinted(now, link, data, wire_len, self.hint(la), hooks)
    }

    /// What a look-ahead tells the lookup, if it was taken by this engine.
    #[inline(always)]
    fn hint(&self, la: Lookahead) -> Option<Ahead> {
        la.hash
            .filter(|_| la.engine == self.instance)
            .map(|hash| Ahead {
                hash,
                slot: la.slot,
            })
    }

    /// [`Engine::process_ahead`] written into `out` (whatever it held) rather than returned:
    /// a caller that keeps the outcome inside a larger record saves copying it, and a copy
    /// made just after the fields are written reads them back before the processor can
    /// forward them.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub fn process_ahead_into<H: Hooks>(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        la: Lookahead,
        hooks: &mut H,
        out: &mut Outcome,
    ) {
        *out = Outcome::BLANK;
        self.process_into(now, link, data, wire_len, self.hint(la), hooks, out);
    }

    /// [`Engine::process_hooked`] given, optionally, the hash `process_batch` computed from
    /// the packet's peeked key (used only when the fast path takes the packet: then the key
    /// is the peeked one).
    #[inline(always)]
    fn process_hinted<H: Hooks>(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        hint: Option<Ahead>,
        hooks: &mut H,
    ) -> Outcome {
        let mut out = Outcome::BLANK;
        self.process_into(now, link, data, wire_len, hint, hooks, &mut out);
        out
    }

    /// [`Engine::process_hinted`] into `out`, which must hold [`Outcome::BLANK`]: the
    /// common path writes only the fields that differ from it.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn process_into<H: Hooks>(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        hint: Option<Ahead>,
        hooks: &mut H,
        out: &mut Outcome,
    ) {
        self.advance(now);
        self.sweep_step();
        self.created = None;
        self.xlate = None;
        self.plain = false;
        self.last = None;
        self.ack_behind = 0;
        self.classify(link, data, wire_len, hint, hooks, out);
        if let Some(x) = &self.xlate {
            // Rules see the connection as tracking does: after destination NAT.
            match x {
                Xlate::Packet {
                    rw: Some(rw), dnat, ..
                } => {
                    rw.apply_to_meta(&mut out.meta);
                    out.dnat = *dnat;
                }
                Xlate::Packet { id, dir, dnat, .. } => {
                    let k = &self.table.get(*id).key;
                    let x = self.table.ext(*id);
                    crate::nat::packet_meta(k, x, usize::from(*dir), &mut out.meta);
                    out.dnat = *dnat;
                }
                Xlate::Built => {
                    if let Some(x) = &self.xbuilt {
                        x.apply_to_meta(&mut out.meta);
                        out.dnat = x.destination_nat();
                    }
                }
            }
        }
        out.verdict = hooks.filter(out);
        if out.verdict == Verdict::Accept {
            if let Some(id) = self.created {
                match hooks.admit(out) {
                    Admit::Keep => {}
                    Admit::KeepCounted => {
                        self.table.get_mut(id).status |= crate::table::STATUS_COUNTED;
                    }
                    Admit::Refuse(r) => {
                        out.verdict = Verdict::Drop;
                        out.reason = Some(r);
                    }
                }
                if out.verdict == Verdict::Accept {
                    match hooks.nat(out) {
                        // Asking the hooks about each port needs them free: a copy.
                        Some(req) if req.snat.as_ref().is_some_and(|s| s.ask) => {
                            let req = *req;
                            self.attach_nat(id, &req, out, Some(hooks));
                        }
                        Some(req) => self.attach_nat::<H>(id, req, out, None),
                        None => {}
                    }
                }
            }
        }
        if out.verdict == Verdict::Drop {
            self.unconfirm();
        }
        if let Some(log) = &mut self.events {
            log.after_packet(&self.table, self.created, self.now_floor);
        }
        let s = &mut self.stats;
        s.packets += 1;
        s.bytes += u64::from(out.meta.len);
        s.by_state[out.state as usize] += 1;
        if let Some(r) = out.reason {
            s.by_reason[r.index()] += 1;
        }
    }

    /// Removes the entry the current packet created, if any: the policy dropped it.
    #[inline(never)]
    fn unconfirm(&mut self) {
        if let Some(id) = self.created.take() {
            self.table.remove(id); // never confirmed, never reported
            self.stats.created -= 1;
            self.stats.unconfirmed += 1;
        }
    }

    /// Classifies a batch. Parsing and hashing the whole batch first lets the bucket and entry
    /// cache lines load in parallel, which matters once the table outgrows the caches.
    pub fn process_batch(&mut self, batch: &[Packet<'_>], out: &mut Vec<Outcome>) {
        self.process_batch_hooked(batch, out, &mut NoHooks);
    }

    /// [`Engine::process_batch`] with a policy's hooks.
    pub fn process_batch_hooked<H: Hooks>(
        &mut self,
        batch: &[Packet<'_>],
        out: &mut Vec<Outcome>,
        hooks: &mut H,
    ) {
        out.clear();
        out.reserve(batch.len());
        // A software pipeline: packet j+2D's bucket line and packet j+D's entry lines are
        // requested while packet j is classified, so the loads overlap with useful work.
        const D: usize = PREFETCH_DISTANCE;
        let n = batch.len();
        let mut ring: [Option<Ahead>; 2 * D] = [None; 2 * D];
        for (i, p) in batch.iter().enumerate().take(2 * D) {
            ring[i] = self.peek_hash(p).map(|hash| {
                self.table.prefetch(hash);
                Ahead { hash, slot: None }
            });
        }
        for a in ring.iter_mut().take(D.min(n)).flatten() {
            a.slot = self.table.prefetch_entry(a.hash);
        }
        // Each outcome is written field by field into its slot, never assembled on the
        // stack and copied: a copy reads back in 16-byte loads what was just written in
        // one- and two-byte stores, and a load the store queue cannot forward waits until
        // those stores reach the cache (README, Benchmark).
        out.resize(n, Outcome::BLANK);
        for (j, (p, o)) in batch.iter().zip(out.iter_mut()).enumerate() {
            let hint = ring[j % (2 * D)];
            if let Some(q) = batch.get(j + 2 * D) {
                ring[j % (2 * D)] = self.peek_hash(q).map(|hash| {
                    self.table.prefetch(hash);
                    Ahead { hash, slot: None }
                });
            }
            if j + D < n {
                if let Some(a) = &mut ring[(j + D) % (2 * D)] {
                    a.slot = self.table.prefetch_entry(a.hash);
                }
            }
            self.process_into(p.now, p.link, p.data, p.wire_len, hint, hooks, o);
        }
    }

    #[inline(always)]
    fn peek_hash(&self, p: &Packet<'_>) -> Option<u64> {
        wire::peek_key(p.link, p.data).map(|k| self.table.hash(&k))
    }

    /// Parses the packet and tracks it: the common case in one pass, everything else on the
    /// general path.
    #[inline(always)]
    fn classify<H: Hooks>(
        &mut self,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        hint: Option<Ahead>,
        hooks: &mut H,
        out: &mut Outcome,
    ) {
        let Some(f) = wire::parse_fast(link, data, self.cfg.verify_checksums) else {
            *out = self.classify_slow(link, data, wire_len, hooks);
            return;
        };
        self.plain = true;
        let tcp = f.proto == PROTO_TCP;
        // The slot holds `Outcome::BLANK`: only what differs from it is written.
        let m = &mut out.meta;
        m.link.ethertype = 0x0800;
        m.link.ip_offset = f.ip_offset;
        m.family = Some(Family::V4);
        m.proto = Some(f.proto);
        m.src = Some(IpAddr::V4(Ipv4Addr::from(f.src.to_ne_bytes())));
        m.dst = Some(IpAddr::V4(Ipv4Addr::from(f.dst.to_ne_bytes())));
        m.sport = Some(f.tcp.sport);
        m.dport = Some(f.tcp.dport);
        if tcp {
            m.tcp_flags = Some(f.tcp.flags);
        }
        m.len = f.len;
        if hooks.raw(&out.meta) {
            Res::UNTRACKED.write(out);
            return;
        }
        // Each address built whole from its word: the compiler then knows the upper
        // twelve bytes are zero and compares the key in registers. Four bytes copied over
        // a zeroed array were read back from the stack in 16-byte loads spanning the
        // narrower stores, loads the store queue cannot forward.
        let key = Key {
            src: wire::v4_addr(f.src),
            dst: wire::v4_addr(f.dst),
            sport: f.tcp.sport,
            dport: f.tcp.dport,
            proto: f.proto,
            family: 4,
        };
        let (hash, probe) = match hint {
            Some(a) => {
                debug_assert_eq!(a.hash, self.table.hash(&key));
                (a.hash, Probe::Ahead(a.slot))
            }
            None => (self.table.hash(&key), Probe::Cold),
        };
        let found = match self.lookup(hash, &key, probe) {
            Ok(f) => f,
            Err(r) => {
                Res::invalid(r).write(out);
                return;
            }
        };
        let res = if tcp {
            self.track_tcp(found, &f.tcp, &key, hash, f.len)
        } else {
            self.track_udp(found, &key, hash, f.len, false)
        };
        res.write(out);
    }

    /// Parses the packet and tracks it, whatever it holds.
    #[inline(never)]
    fn classify_slow<H: Hooks>(
        &mut self,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        hooks: &mut H,
    ) -> Outcome {
        let mut info = LinkInfo::default();
        let ip = match wire::parse_frame(link, data, wire_len, self.cfg.verify_checksums, &mut info)
        {
            Ok(Some(ip)) => ip,
            Ok(None) => {
                return untracked(PacketMeta {
                    link: info,
                    ..PacketMeta::default()
                })
            }
            Err(r) => {
                return invalid(
                    PacketMeta {
                        link: info,
                        ..PacketMeta::default()
                    },
                    r,
                )
            }
        };
        if ip.frag == Frag::Later {
            return self.later_fragment(info, &ip, hooks);
        }
        let tr = match wire::parse_transport(&ip, self.cfg.verify_checksums, false) {
            Ok(t) => t,
            Err(r) => return invalid(ip_meta(info, &ip, None), r),
        };
        let mut key = Key {
            src: ip.src,
            dst: ip.dst,
            sport: 0,
            dport: 0,
            proto: ip.proto,
            family: family_code(ip.family),
        };
        match tr {
            Transport::Tcp(t) => {
                if !wire::tcp_flags_valid(t.flags) {
                    return invalid(ip_meta(info, &ip, Some(&tr)), DropReason::TcpBadFlags);
                }
                key.sport = t.sport;
                key.dport = t.dport;
            }
            Transport::Udp { sport, dport } => {
                key.sport = sport;
                key.dport = dport;
            }
            Transport::Icmp(m) => match m.kind {
                IcmpKind::Untracked => return untracked(ip_meta(info, &ip, Some(&tr))),
                IcmpKind::Query { id, class, reply } => {
                    // The request's key is (id, class); a reply's is reversed so that
                    // reversing it again finds the request.
                    if reply {
                        key.sport = u16::from(class);
                        key.dport = id;
                    } else {
                        key.sport = id;
                        key.dport = u16::from(class);
                    }
                }
                IcmpKind::Error { embedded } => match embedded_key(&ip, embedded) {
                    Ok(k) => key = k,
                    Err(r) => return invalid(ip_meta(info, &ip, Some(&tr)), r),
                },
            },
            Transport::Other => {}
        }
        let meta = ip_meta(info, &ip, Some(&tr));
        if hooks.raw(&meta) {
            if ip.frag == Frag::First {
                self.frags.first(&ip, First::Untracked, self.now_floor);
            }
            return untracked(meta);
        }
        let hash = self.table.hash(&key);
        let res = self.track(&tr, &key, hash, &ip);
        if ip.frag == Frag::First {
            let error =
                matches!(tr, Transport::Icmp(m) if matches!(m.kind, IcmpKind::Error { .. }));
            let first = match (res.state, res.reason) {
                // An error's key is its quote's: its later pieces are no packets of that
                // connection.
                _ if error => First::Invalid(DropReason::Fragment),
                (CtState::Invalid, Some(r)) => First::Invalid(r),
                (CtState::Untracked, _) => First::Untracked,
                _ => First::Tracked {
                    sport: key.sport,
                    dport: key.dport,
                },
            };
            self.frags.first(&ip, first, self.now_floor);
        }
        res.with(meta)
    }

    /// A fragment after the first: classified as its datagram's first fragment was (see
    /// [`crate::frag`]), or invalid when that is unknown or the pieces overlap.
    #[inline(never)]
    fn later_fragment<H: Hooks>(&mut self, info: LinkInfo, ip: &Ip<'_>, hooks: &mut H) -> Outcome {
        let mut meta = ip_meta(info, ip, None);
        let first = match self.frags.later(ip, self.now_floor) {
            Later::Unknown | Later::TooScattered => {
                return invalid(meta, DropReason::Fragment);
            }
            Later::Overlap => return invalid(meta, DropReason::FragmentOverlap),
            Later::Of(f) => f,
        };
        let (sport, dport) = match first {
            First::Invalid(r) => return invalid(meta, r),
            First::Untracked => return untracked(meta),
            First::Tracked { sport, dport } => (sport, dport),
        };
        if matches!(ip.proto, PROTO_TCP | PROTO_UDP | 136) {
            // The ports are in the first piece: rules see them here too.
            meta.sport = Some(sport);
            meta.dport = Some(dport);
        }
        if hooks.raw(&meta) {
            return untracked(meta);
        }
        let key = Key {
            src: ip.src,
            dst: ip.dst,
            sport,
            dport,
            proto: ip.proto,
            family: family_code(ip.family),
        };
        let hash = self.table.hash(&key);
        match self.lookup(hash, &key, Probe::Cold) {
            // Counted against the connection; nothing to track without a transport header.
            Ok(Some((id, dir))) => count(self.table.get_mut(id), dir, ip.len).with(meta),
            Ok(None) => invalid(meta, DropReason::Fragment),
            Err(r) => invalid(meta, r),
        }
    }
    /// Moves the clock forward (never back: a reordered capture must not revive entries).
    #[inline(always)]
    pub(crate) fn advance(&mut self, now: Time) {
        if now > self.now {
            self.now = now;
            if now.as_nanos() < self.second_end {
                // Still in the second `next_second` last worked out, and past its start:
                // the floor stays and the ceiling is the next second. No division.
                self.now_ceil = self.now_floor.saturating_add(1);
            } else {
                self.next_second(now);
            }
        }
    }

    #[inline(never)]
    fn next_second(&mut self, now: Time) {
        self.now_floor = now.secs_u32();
        let up = now.as_secs() + u64::from(!now.as_nanos().is_multiple_of(1_000_000_000));
        self.now_ceil = u32::try_from(up).unwrap_or(u32::MAX);
        self.second_end = now
            .as_secs()
            .saturating_add(1)
            .saturating_mul(1_000_000_000);
    }

    #[inline(always)]
    pub(crate) fn now_s(&self) -> u32 {
        self.now_floor
    }

    /// Deadline in whole seconds, rounded up so an entry never expires early.
    #[inline(always)]
    pub(crate) fn deadline(&self, timeout: u32) -> u32 {
        self.now_ceil.saturating_add(timeout)
    }

    /// Moves the sweep cursor on by one id per packet, so expired entries are reclaimed at a
    /// steady, bounded cost per packet instead of by a timer. The ids are checked in runs of
    /// [`SWEEP_RUN`]: the packet count alone decides when, so a frame judged alone and the same
    /// frame judged in a batch leave the same table.
    #[inline(always)]
    fn sweep_step(&mut self) {
        self.sweep_tick = self.sweep_tick.wrapping_add(1);
        if self.sweep_tick.is_multiple_of(SWEEP_RUN) {
            self.sweep_run();
        }
    }

    #[inline(never)]
    fn sweep_run(&mut self) {
        let now_s = self.now_s();
        if self.table.sweep_pass(now_s, self.expiry_margin) {
            return;
        }
        let mut dead = [0u32; SWEEP_RUN as usize];
        let n = self.table.sweep_run(now_s, &mut dead);
        for &id in dead.iter().take(n) {
            // Removing one entry never frees another, but check again rather than rely on it.
            if self
                .table
                .get_opt(id)
                .is_some_and(|e| !e.is_free() && e.expired(now_s))
            {
                self.remove_entry(id);
                self.stats.expired += 1;
            }
        }
    }

    /// Removes every expired entry.
    pub fn expire(&mut self, now: Time) {
        self.advance(now);
        let now_s = self.now_s();
        let dead: Vec<u32> = self
            .table
            .iter()
            .filter(|(_, e)| e.expired(now_s))
            .map(|(id, _)| id)
            .collect();
        for id in dead {
            self.remove_entry(id);
            self.stats.expired += 1;
        }
    }

    /// Removes every live connection for which `pred` is true (given the connection as
    /// [`Engine::connections`] lists it at `now`), as expiry would remove it: its index slots,
    /// its translation record (a reported source NAT release goes to
    /// [`Engine::take_nat_released`], a counted source to [`Engine::take_departed`]). A packet
    /// of a removed connection is afterwards treated as that of a new one. Entries already
    /// expired at `now` are removed too, counted as expired. Returns how many live
    /// connections `pred` removed. Visits the whole table.
    pub fn remove_where(&mut self, now: Time, mut pred: impl FnMut(&Conn) -> bool) -> usize {
        self.advance(now);
        let now_s = self.now_s();
        let mut expired = Vec::new();
        let mut chosen = Vec::new();
        for (id, e) in self.table.iter() {
            if e.expired(now_s) {
                expired.push(id);
                continue;
            }
            let x = (e.status & STATUS_NAT != 0).then(|| self.table.ext(id));
            if pred(&conn_view(e, x, now_s)) {
                chosen.push(id);
            }
        }
        for &id in &expired {
            self.remove_entry(id);
        }
        for &id in &chosen {
            self.remove_entry(id);
        }
        self.stats.expired += u64::try_from(expired.len()).unwrap_or(u64::MAX);
        self.stats.removed += u64::try_from(chosen.len()).unwrap_or(u64::MAX);
        // Nothing refers to a removed id any more: the packet state is per packet, but a
        // SYN proxy may still ask about the last packet's connection.
        self.created = None;
        self.last = None;
        chosen.len()
    }

    /// Turns TCP window checks off (or back on) for one connection, found from either
    /// direction's addresses and ports: for a connection known to take an asymmetric path.
    /// Returns whether the connection was found.
    pub fn set_liberal(
        &mut self,
        proto: u8,
        (src, sport): (IpAddr, u16),
        (dst, dport): (IpAddr, u16),
        on: bool,
    ) -> bool {
        let Some(key) = key_of(proto, (src, sport), (dst, dport)) else {
            return false;
        };
        let hash = self.table.hash(&key);
        let found = self.lookup(hash, &key, Probe::Cold);
        if let Some(log) = &mut self.events {
            log.forget();
        }
        let Ok(Some((id, _))) = found else {
            return false;
        };
        let e = self.table.get_mut(id);
        if on {
            e.status |= crate::table::STATUS_LIBERAL;
        } else {
            e.status &= !crate::table::STATUS_LIBERAL;
        }
        true
    }

    /// Whether a connection with this tuple is live at `now`, in either direction: `src`/`dst`
    /// are address and port, or for ICMP/ICMPv6 echo the identifier on both sides.
    pub fn is_tracked(
        &mut self,
        now: Time,
        proto: u8,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
    ) -> bool {
        self.advance(now);
        // Echo is query class 0: the request's key is (identifier, class).
        let dport = if proto == PROTO_ICMP || proto == PROTO_ICMPV6 {
            0
        } else {
            dst.1
        };
        let Some(key) = key_of(proto, src, (dst.0, dport)) else {
            return false;
        };
        let hash = self.table.hash(&key);
        self.table.find(hash, &key, false, false).is_some_and(|f| {
            let live = !self.table.get(f.id).expired(self.now_s());
            live
        })
    }

    /// Turns the connection event log on with room for `capacity` events (0: off, the
    /// default). Events are recorded as entries are confirmed, change TCP state or
    /// seen-reply/assured status, and are reclaimed; see [`crate::events`].
    pub fn set_events(&mut self, capacity: usize) {
        self.events = (capacity > 0).then(|| Box::new(EventLog::new(capacity)));
    }

    /// Moves the recorded events, oldest first, to `out`.
    pub fn take_events(&mut self, out: &mut Vec<Event>) {
        if let Some(log) = &mut self.events {
            log.drain(out);
        }
    }

    /// Events dropped because the log was full when they happened.
    pub fn events_lost(&self) -> u64 {
        self.events.as_ref().map_or(0, |l| l.lost())
    }

    /// The packet being classified is translated as `t` says (not at all with `None`).
    fn built(&mut self, t: Option<Translation>) {
        self.xlate = t.map(|_| Xlate::Built);
        self.xbuilt = t;
    }

    /// Removes an entry, reporting it as destroyed when events are on.
    #[inline(always)]
    fn remove_entry(&mut self, id: u32) {
        if let Some(Xlate::Packet { id: x, .. }) = self.xlate {
            if x == id {
                // The packet that closed a translated connection still leaves translated.
                self.built(self.translation());
            }
        }
        if let Some(log) = &mut self.events {
            log.destroy(&self.table, id, self.now_floor);
        }
        self.table.remove(id);
    }

    /// Snapshots of every live connection.
    pub fn connections(&self) -> impl Iterator<Item = Conn> + '_ {
        let now_s = self.now_s();
        self.table
            .iter()
            .filter(move |(_, e)| !e.expired(now_s))
            .map(move |(id, e)| {
                let x = (e.status & STATUS_NAT != 0).then(|| self.table.ext(id));
                let mut c = conn_view(e, x, now_s);
                c.age = now_s.saturating_sub(self.table.born(id));
                c
            })
    }

    fn track(&mut self, tr: &Transport<'_>, key: &Key, hash: u64, ip: &Ip<'_>) -> Res {
        let len = ip.len;
        if let Transport::Icmp(m) = tr {
            if let IcmpKind::Error { .. } = m.kind {
                return self.track_error(key, hash, ip);
            }
        }
        let found = match self.lookup(hash, key, Probe::Cold) {
            Ok(f) => f,
            Err(r) => return Res::invalid(r),
        };
        match tr {
            Transport::Tcp(seg) => self.track_tcp(found, seg, key, hash, len),
            Transport::Icmp(m) => match m.kind {
                IcmpKind::Error { .. } => Res::invalid(DropReason::IcmpErrorNoConnection),
                IcmpKind::Query { reply, .. } => match found {
                    Some((id, dir)) if (dir == 1) == reply => {
                        let deadline = self.deadline(self.cfg.timeouts.icmp);
                        self.established(id, dir, len, deadline, |_| {})
                    }
                    Some(_) | None if reply => Res::invalid(DropReason::IcmpUnsolicitedReply),
                    Some(_) => Res::invalid(DropReason::IcmpUnsolicitedReply),
                    None => self.create_simple(key, hash, len, self.cfg.timeouts.icmp),
                },
                IcmpKind::Untracked => Res::UNTRACKED,
            },
            Transport::Udp { .. } | Transport::Other => {
                let generic = key.proto != PROTO_UDP && key.proto != 136;
                self.track_udp(found, key, hash, len, generic)
            }
        }
    }

    /// An ICMP error, whose `key` is the quoted packet's. It is related to the connection
    /// the quote belongs to, as the quote appears on either side of any translation.
    fn track_error(&mut self, key: &Key, hash: u64, ip: &Ip<'_>) -> Res {
        let Some(f) = self.table.find(hash, key, true, false) else {
            return Res::invalid(DropReason::IcmpErrorNoConnection);
        };
        if self.table.get(f.id).expired(self.now_s()) {
            self.remove_entry(f.id);
            self.stats.expired += 1;
            return Res::invalid(DropReason::IcmpErrorNoConnection);
        }
        // The error must travel back to whoever sent the quoted packet.
        if ip.dst != key.src {
            return Res::invalid(DropReason::IcmpErrorAddressMismatch);
        }
        if self.table.get(f.id).status & STATUS_NAT != 0 {
            self.translate_error(f, key, ip);
        }
        Res::accept(CtState::Related, Direction::from_index(1 - f.dir))
    }

    /// UDP, UDP-Lite and (`generic`) protocols tracked by addresses alone.
    #[inline(always)]
    fn track_udp(
        &mut self,
        found: Option<(u32, usize)>,
        key: &Key,
        hash: u64,
        len: u32,
        generic: bool,
    ) -> Res {
        match found {
            Some((id, dir)) => {
                let now_s = self.now_s();
                let t = &self.cfg.timeouts;
                let (unreplied, stream) = if generic {
                    (t.generic, t.generic)
                } else {
                    (t.udp_unreplied, t.udp_stream)
                };
                let seen = self.table.get(id).status & STATUS_SEEN_REPLY != 0 || dir == 1;
                let stream_due = now_s >= self.table.get(id).peer[0].end;
                let timeout = if seen && stream_due {
                    stream
                } else {
                    unreplied
                };
                let deadline = self.deadline(timeout);
                self.established(id, dir, len, deadline, |e| {
                    if seen && stream_due && !generic {
                        e.status |= STATUS_ASSURED;
                    }
                })
            }
            None => {
                let t = if generic {
                    self.cfg.timeouts.generic
                } else {
                    self.cfg.timeouts.udp_unreplied
                };
                self.create_simple(key, hash, len, t)
            }
        }
    }

    /// Finds the entry for `key`, removing it instead if it has expired. A packet of a
    /// translated connection gets its translation; one that reached it untranslated where
    /// it should have been is refused.
    /// `prefetched`: as for `Table::find`.
    #[inline(always)]
    fn lookup(
        &mut self,
        hash: u64,
        key: &Key,
        probe: Probe,
    ) -> Result<Option<(u32, usize)>, DropReason> {
        let found = match probe {
            Probe::Cold => self.table.find(hash, key, false, false),
            Probe::Ahead(slot) => self.table.find_from(hash, key, slot),
        };
        let Some(f) = found else {
            return Ok(None);
        };
        let e = self.table.get(f.id);
        if e.expired(self.now_s()) {
            self.remove_entry(f.id);
            self.stats.expired += 1;
            return Ok(None);
        }
        if let Some(log) = &mut self.events {
            log.found(f.id, e.state, e.status);
        }
        if e.status & STATUS_NAT != 0 {
            self.translate_packet(f)?;
        }
        self.last = Some(f.id);
        Ok(Some((f.id, f.dir)))
    }

    /// The translation of a packet of a translated connection.
    #[inline(always)]
    fn translate_packet(&mut self, f: Found) -> Result<(), DropReason> {
        let table = &self.table;
        let x = table.ext(f.id);
        let flags = x.flags;
        if f.form == FORM_KEY {
            // The connection's own tuple is what tracking sees; on the wire only a
            // direction that no translation touches may carry it.
            let moved = if f.dir == 0 { NAT_DST } else { NAT_SRC };
            if flags & moved != 0 {
                self.nat_stats.bypass += 1;
                return Err(DropReason::NatBypass);
            }
        }
        let seq = flags & crate::table::NAT_SEQ != 0;
        if seq {
            self.ack_behind = x.seq_delta;
        }
        // The fast path parsed only plain IPv4 TCP and UDP.
        let rw = if self.plain && !seq {
            RowRewrite::new(x, f.dir)
        } else {
            None
        };
        self.xlate = Some(Xlate::Packet {
            id: f.id,
            dir: u8::from(f.dir != 0),
            dnat: flags & NAT_DST != 0,
            rw,
        });
        Ok(())
    }

    /// The translation of an ICMP error quoting a packet of a translated connection: when the
    /// quote shows the packet as it left translated, the quote goes back to how its sender
    /// knew it, and the error itself is translated like a packet travelling its way.
    #[inline(never)]
    fn translate_error(&mut self, f: Found, quoted: &Key, ip: &Ip<'_>) {
        let e = self.table.get(f.id);
        let x = self.table.ext(f.id);
        let (a0, a1) = (x.arrive_original(&e.key), x.arrive_reply(&e.key));
        let (l0, l1) = (reverse(&a1), reverse(&a0));
        let dq = f.dir & 1;
        let (aq, lq, ae, le) = if dq == 0 {
            (a0, l0, a1, l1)
        } else {
            (a1, l1, a0, l0)
        };
        if *quoted != lq || aq == lq {
            return;
        }
        let dnat = x.flags & NAT_DST != 0;
        self.built(Some(Translation::error(
            ip,
            (&aq, &lq, dq),
            (&ae, &le),
            dnat,
        )));
    }

    /// Gives the connection `id` just opened the translation `req` asks for, choosing a
    /// source port that keeps it unique; drops the packet when none is free.
    #[inline(never)]
    fn attach_nat<H: Hooks>(
        &mut self,
        id: u32,
        req: &NatRequest,
        out: &mut Outcome,
        hooks: Option<&mut H>,
    ) {
        let (mut key, mut ext, mut reply_hash) = (Key::EMPTY, NatExt::NONE, None);
        match self.nat_plan(id, req, hooks, &mut key, &mut ext, &mut reply_hash) {
            Ok(true) => {
                // The tuple the packet arrived with, needed (and copied) only off the fast path.
                let fast = self.plain && ext.flags & crate::table::NAT_SEQ == 0;
                let arrived = (!fast).then(|| self.table.get(id).key);
                self.table.set_nat(id, &key, &ext, reply_hash);
                self.nat_stats.created += 1;
                out.dnat = ext.flags & NAT_DST != 0;
                let ext = self.table.ext(id);
                if let Some(arrived) = arrived {
                    let x = Translation::packet(&arrived, &key, ext, 0);
                    x.apply_to_meta(&mut out.meta);
                    self.built(Some(x));
                } else {
                    // As every later packet of the connection: see `translate_packet`.
                    let rw = RowRewrite::new(ext, 0);
                    if let Some(rw) = &rw {
                        rw.apply_to_meta(&mut out.meta);
                    }
                    self.xlate = Some(Xlate::Packet {
                        id,
                        dir: 0,
                        dnat: out.dnat,
                        rw,
                    });
                }
            }
            Ok(false) => {}
            Err(r) => {
                self.nat_stats.exhausted += 1;
                out.verdict = Verdict::Drop;
                out.reason = Some(r);
            }
        }
    }

    /// Works out the key and translation `req` gives the new connection `id`, into `key` and
    /// `ext`; `false` when it changes nothing. (Written into the caller's places rather than
    /// returned: moving the 90-byte pair through a `Result<Option<..>>` and on into
    /// `set_nat` by value cost about 120 instructions per translated connection.)
    fn nat_plan<H: Hooks>(
        &mut self,
        id: u32,
        req: &NatRequest,
        hooks: Option<&mut H>,
        key: &mut Key,
        ext: &mut NatExt,
        reply_hash: &mut Option<u64>,
    ) -> Result<bool, DropReason> {
        let exhausted = DropReason::NatPortsExhausted;
        // Worked out in the caller's places; `ext` comes in as `NatExt::NONE`.
        let (m, x) = (key, ext);
        *m = self.table.get(id).key;
        let icmp = m.proto == PROTO_ICMP || m.proto == PROTO_ICMPV6;
        // The request is read field by field where the hooks keep it, never copied whole
        // (see `Hooks::nat`).
        if let Some((addr, port)) = &req.dnat {
            let a = wire::addr_in(*addr, m.family)
                .ok_or(exhausted)?
                .to_ne_bytes();
            // An ICMP query's second "port" is its class, which translation never changes.
            let port = if icmp { m.dport } else { *port };
            if a != m.dst || port != m.dport {
                x.set_dnat(m.dst, m.dport);
                x.flags |= NAT_DST;
                m.dst = a;
                m.dport = port;
            }
        }
        let mut snat = req.snat.as_ref();
        let mut forced = false;
        let implicit;
        if x.flags & NAT_DST != 0 && snat.is_none() && self.table.in_use(m) {
            // Another connection already has this tuple (one client reaching one server
            // through two forwards): move the source port, as netfilter's implicit source
            // binding does.
            implicit = crate::nat::SnatRequest {
                addr: addr_to_ip(family_of(m.family), &m.src),
                preferred: None,
                ask: false,
                report: false,
                endpoint_independent: false,
            };
            snat = Some(&implicit);
            forced = true;
        }
        if let Some(s) = snat {
            let sa = wire::addr_in(s.addr, m.family)
                .ok_or(exhausted)?
                .to_ne_bytes();
            let (port, probed) = self
                .pick_port(m, sa, s, req.ports, forced, hooks)
                .ok_or(exhausted)?;
            if sa != m.src || port != m.sport {
                *reply_hash = probed;
                x.set_snat(sa, port);
                x.flags |= NAT_SRC;
                if s.report {
                    x.flags |= NAT_REPORT;
                }
                if s.endpoint_independent {
                    x.flags |= NAT_EIM;
                }
            }
        }
        // `Table::set_nat` fills the rows, in the record's own place.
        Ok(x.flags != 0)
    }

    /// A source port (or ICMP identifier) for connection `m` leaving from `sa`: the one asked
    /// for, else its own, else the first free one of `range` from a keyed offset, so the
    /// choice cannot be predicted. Protocols without ports keep theirs or fail. With the port,
    /// the hash of the reply tuple it gives, when working out whether that tuple was free
    /// computed it: filing the connection under that tuple needs it again.
    fn pick_port<H: Hooks>(
        &self,
        m: &Key,
        sa: Addr,
        s: &crate::nat::SnatRequest,
        range: (u16, u16),
        forced: bool,
        mut hooks: Option<&mut H>,
    ) -> Option<(u16, Option<u64>)> {
        let mut probed = None;
        // Whether the port leaves the tuple as it was. (Compared field by field: a tuple of
        // address and port is assembled on the stack in pieces that its comparison then
        // reads across; see `wire::addr_in`.)
        let own = sa == m.src;
        let mut free = |p: u16| {
            let untranslated = own && p == m.sport;
            if forced && untranslated {
                return false;
            }
            if untranslated {
                // Untranslated: the connection's own tuple must be free.
                if self.table.in_use(m) {
                    return false;
                }
            } else {
                let reply = Key {
                    src: m.dst,
                    sport: m.dport,
                    dst: sa,
                    dport: p,
                    ..*m
                };
                let h = self.table.hash(&reply);
                probed = Some((p, h));
                if self.table.in_use_hashed(h, &reply) {
                    return false;
                }
            }
            // `hooks` comes whenever `ask` is set (see `process_into`).
            !s.ask
                || hooks
                    .as_deref_mut()
                    .is_none_or(|h| h.nat_port_usable(m.proto, s.addr, p))
        };
        let port = 'pick: {
            if let Some(p) = s.preferred {
                if free(p) {
                    break 'pick Some(p);
                }
            }
            if free(m.sport) {
                break 'pick Some(m.sport);
            }
            if !matches!(m.proto, PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_ICMPV6) {
                break 'pick None;
            }
            let (lo, hi) = if range.0 <= range.1 {
                range
            } else {
                (range.1, range.0)
            };
            let size = u32::from(hi - lo) + 1;
            #[allow(clippy::cast_possible_truncation)]
            let start = (self.table.hash(m) % u64::from(size)) as u32;
            (0..size).find_map(|i| {
                let p = u16::try_from((start + i) % size).ok()?.checked_add(lo)?;
                (p != m.sport && free(p)).then_some(p)
            })
        }?;
        let hash = probed.and_then(|(p, h)| (p == port).then_some(h));
        Some((port, hash))
    }

    /// Counts a packet against an entry and refreshes its expiry.
    #[inline(always)]
    fn established(
        &mut self,
        id: u32,
        dir: usize,
        len: u32,
        deadline: u32,
        f: impl FnOnce(&mut Entry),
    ) -> Res {
        let e = self.table.get_mut(id);
        e.expires = deadline;
        f(e);
        count(e, dir, len)
    }

    #[inline(never)]
    fn create_simple(&mut self, key: &Key, hash: u64, len: u32, timeout: u32) -> Res {
        let expires = self.deadline(timeout);
        // For UDP: the second after which a replied flow counts as a stream.
        let stream_after = self.deadline(2);
        self.insert(hash, len, |e| {
            *e = Entry::new(key);
            e.expires = expires;
            e.peer[0].end = stream_after;
        })
    }

    /// Adds a new connection, counting the packet that opened it. `init` writes the entry
    /// where it lies in the table: built on the stack and copied, its fields (written a
    /// few bytes at a time) were read back in wide loads the processor cannot forward from
    /// its store queue.
    #[inline(always)]
    fn insert(&mut self, hash: u64, len: u32, init: impl FnOnce(&mut Entry)) -> Res {
        if self.table.len() >= self.cfg.max_connections as usize && !self.make_room(hash) {
            self.stats.refused += 1;
            return Res {
                verdict: Verdict::Drop,
                state: CtState::Invalid,
                dir: None,
                reason: Some(DropReason::TableFull),
            };
        }
        let id = self.table.insert_with(hash, |e| {
            init(e);
            e.packets[0] = 1;
            e.bytes[0] = u64::from(len);
        });
        let born = self.now_s();
        self.table.set_born(id, born);
        self.created = Some(id);
        self.last = Some(id);
        if self.young.len() >= self.cfg.max_connections as usize {
            self.young.pop_front();
        }
        self.young.push_back(id);
        self.stats.created += 1;
        let len = self.table.len();
        if self.cfg.adaptive.is_some()
            && !(self.adaptive_band.0..self.adaptive_band.1).contains(&len)
        {
            self.adapt(len);
        }
        if len > self.stats.peak {
            self.stats.peak = len;
            self.stats.peak_memory = self.memory_bytes();
        }
        Res::accept(CtState::New, Direction::Original)
    }

    /// Queues a new entry for eviction candidacy, keeping at most one per table slot.
    pub(crate) fn remember_young(&mut self, id: u32) {
        if self.young.len() >= self.cfg.max_connections as usize {
            self.young.pop_front();
        }
        self.young.push_back(id);
    }

    /// Adaptive timeouts: sets the timeouts in force for a table of `len` connections, in
    /// 64 steps between `start` and `end`, so they are worked out again only when the table
    /// has grown or shrunk by a step (new connections check; nothing per packet).
    #[inline(never)]
    pub(crate) fn adapt(&mut self, len: usize) {
        let Some(a) = self.cfg.adaptive else {
            return;
        };
        let (start, end) = (a.start as usize, a.end as usize);
        let step = (end.saturating_sub(start) / 64).max(1);
        let (band, scale) = if len <= start {
            ((0, start + 1), 1024)
        } else if len >= end {
            ((end, usize::MAX), 0)
        } else {
            let lo = start + (len - start) / step * step;
            let at = u32::try_from(lo).unwrap_or(u32::MAX);
            ((lo, lo + step), a.scale(at))
        };
        self.adaptive_band = band;
        self.cfg.timeouts = self.base_timeouts.scaled(scale);
        self.tcp_timeouts = tcp::StateTimeouts::new(&self.cfg);
    }

    /// Frees one entry in a full table, as netfilter's early drop does: an expired one, else
    /// one never replied to, else one not yet assured (a handshake that never completed, a
    /// UDP exchange not yet a stream, ICMP), looking first near the new key's bucket (random,
    /// since the hash is keyed) and then at the sweep cursor. Assured connections are never
    /// evicted.
    fn make_room(&mut self, hash: u64) -> bool {
        let now_s = self.now_s();
        // The oldest entries first: under a flood they are the flood's, and a legitimate
        // handshake, at the back, gets the longest time to be answered. A few looks only, so
        // a table full of assured connections costs little per refused packet.
        let mut unassured = None;
        for _ in 0..16 {
            let Some(id) = self.young.pop_front() else {
                break;
            };
            let e = self.table.get(id);
            if e.is_free() {
                continue;
            }
            if e.expired(now_s) || e.status & STATUS_SEEN_REPLY == 0 || closing(e) {
                let expired = e.expired(now_s);
                self.remove_entry(id);
                if expired {
                    self.stats.expired += 1;
                } else {
                    self.stats.evicted += 1;
                }
                if let Some(u) = unassured {
                    self.young.push_front(u);
                }
                return true;
            }
            if e.status & STATUS_ASSURED == 0 {
                // Replied but not assured: a candidate if nothing never replied turns up.
                match unassured {
                    None => unassured = Some(id),
                    Some(_) => self.young.push_back(id),
                }
            }
            // Assured entries are never evicted: they leave the queue.
        }
        if self.make_room_nearby(hash, now_s) {
            if let Some(u) = unassured {
                self.young.push_front(u);
            }
            return true;
        }
        match unassured {
            Some(u) => {
                self.remove_entry(u);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// [`Engine::make_room`]'s wider search: near the new key's bucket and at the sweep
    /// cursor.
    fn make_room_nearby(&mut self, hash: u64, now_s: u32) -> bool {
        let mut cand = core::mem::take(&mut self.scratch);
        cand.clear();
        self.table.neighbours(hash, 4, &mut cand);
        for _ in 0..64 {
            if let Some(id) = self.table.sweep_next() {
                cand.push(id);
            }
        }
        // The best candidate so far and its rank: 0 expired, 1 never replied, 2 unassured.
        let mut victim: Option<(u32, u8)> = None;
        for &id in &cand {
            let e = self.table.get(id);
            let rank = if e.expired(now_s) {
                0
            } else if e.status & STATUS_SEEN_REPLY == 0 || closing(e) {
                1
            } else if e.status & STATUS_ASSURED == 0 {
                2
            } else {
                continue;
            };
            let better = match victim {
                Some((_, r)) => rank < r,
                None => true,
            };
            if better {
                victim = Some((id, rank));
                if rank == 0 {
                    break;
                }
            }
        }
        self.scratch = cand;
        match victim {
            Some((id, rank)) => {
                self.remove_entry(id);
                if rank == 0 {
                    self.stats.expired += 1;
                } else {
                    self.stats.evicted += 1;
                }
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn track_tcp(
        &mut self,
        found: Option<(u32, usize)>,
        seg: &wire::Tcp,
        key: &Key,
        hash: u64,
        len: u32,
    ) -> Res {
        let Some((id, dir)) = found else {
            return self.open_tcp(key, hash, *seg, len);
        };
        // A copy, not a reference to one of two places: the segment's fields can then stay
        // in registers (the out-of-line paths below take it by value for the same reason).
        let mut seg = *seg;
        if self.ack_behind != 0 && dir == 0 {
            // A SYN-proxied connection: track the original side's acknowledgments in the
            // reply side's sequence space, as they leave.
            seg.ack = seg.ack.wrapping_add(self.ack_behind);
        }
        let seg = &seg;
        // Expiry counts from `now` rounded up to a whole second, as `deadline` does.
        let base = self.deadline(0);
        let e = self.table.get_mut(id);
        let decision = tcp::track(e, dir, seg, &self.cfg, &self.tcp_timeouts, base);
        match decision {
            Decision::Accept | Decision::AcceptAndRemove | Decision::Ignore => {
                // `established` with the entry's own expiry, on the entry already in hand.
                let out = count(e, dir, len);
                if decision == Decision::AcceptAndRemove {
                    self.remove_entry(id);
                }
                out
            }
            Decision::Invalid(r) => Res::invalid(r),
            Decision::IgnoreSyn | Decision::IgnoreSynAck => {
                self.track_ignored_syn(id, dir, *seg, decision, len)
            }
            Decision::Reopen => {
                // The old connection's translation goes with it; the new one gets its own.
                self.xlate = None;
                self.remove_entry(id);
                self.open_tcp(key, hash, *seg, len)
            }
        }
    }

    /// A SYN or SYN/ACK the state table ignores. As netfilter, an ignored SYN is remembered,
    /// and a SYN/ACK that acknowledges it resynchronises the entry: the old connection is gone
    /// at both ends and the 4-tuple is in use again.
    #[inline(never)]
    fn track_ignored_syn(
        &mut self,
        id: u32,
        dir: usize,
        seg: wire::Tcp,
        decision: Decision,
        len: u32,
    ) -> Res {
        let seg = &seg;
        if decision == Decision::IgnoreSyn {
            self.table.remember_syn(tcp::ignored_syn(id, seg));
        } else if let Some(syn) = self.table.ignored_syn(id) {
            if seg.ack == syn.end {
                let base = self.deadline(0);
                if tcp::resync(
                    self.table.get_mut(id),
                    &syn,
                    seg,
                    &self.cfg,
                    &self.tcp_timeouts,
                    base,
                ) {
                    self.table.forget_syn(id);
                }
            }
        }
        count(self.table.get_mut(id), dir, len)
    }

    #[inline(never)]
    fn open_tcp(&mut self, key: &Key, hash: u64, seg: wire::Tcp, len: u32) -> Res {
        let seg = &seg;
        let Some(state) = tcp::open_state(seg, &self.cfg) else {
            return Res::invalid(DropReason::TcpNotSyn);
        };
        let expires = self.deadline(tcp::open_timeout(state, &self.cfg));
        self.insert(hash, len, |e| {
            *e = Entry::new(key);
            tcp::open(e, seg, state);
            e.expires = expires;
        })
    }
}

/// A TCP connection both ends have finished with (TIME_WAIT, CLOSE): first to go when the
/// table is full, assured or not, since nothing more can be lost with it.
fn closing(e: &Entry) -> bool {
    e.key.proto == PROTO_TCP
        && matches!(
            TcpState::from_u8(e.state),
            TcpState::TimeWait | TcpState::Close
        )
}

/// Counts a packet against an entry (whose expiry is already set) and gives its state.
#[inline(always)]
fn count(e: &mut Entry, dir: usize, len: u32) -> Res {
    let dir = dir & 1;
    if dir == 1 {
        e.status |= STATUS_SEEN_REPLY;
    }
    e.packets[dir] += 1;
    e.bytes[dir] += u64::from(len);
    let state = if e.status & STATUS_SEEN_REPLY != 0 {
        CtState::Established
    } else {
        CtState::New
    };
    Res::accept(state, Direction::from_index(dir))
}

/// The table key for a tuple given as addresses and ports; `None` for mixed families.
fn key_of(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Option<Key> {
    let (fs, s) = wire::addr_of(src.0)?;
    let (fd, d) = wire::addr_of(dst.0)?;
    (fs == fd).then(|| Key {
        src: s,
        dst: d,
        sport: src.1,
        dport: dst.1,
        proto,
        family: family_code(fs),
    })
}

/// Header facts for the outcome, from the parsed layers.
#[inline(always)]
fn ip_meta(link: LinkInfo, ip: &Ip<'_>, tr: Option<&Transport<'_>>) -> PacketMeta {
    let mut m = PacketMeta {
        link,
        family: Some(ip.family),
        proto: Some(ip.proto),
        src: Some(addr_to_ip(ip.family, &ip.src)),
        dst: Some(addr_to_ip(ip.family, &ip.dst)),
        len: ip.len,
        ..PacketMeta::default()
    };
    match tr {
        Some(Transport::Tcp(t)) => {
            m.sport = Some(t.sport);
            m.dport = Some(t.dport);
            m.tcp_flags = Some(t.flags);
        }
        Some(Transport::Udp { sport, dport }) => {
            m.sport = Some(*sport);
            m.dport = Some(*dport);
        }
        Some(Transport::Icmp(i)) => {
            m.icmp_type = Some(i.ty);
            m.icmp_code = Some(i.code);
            if let IcmpKind::Query { id, .. } = i.kind {
                m.icmp_id = Some(id);
            }
        }
        _ => {}
    }
    m
}

fn untracked(meta: PacketMeta) -> Outcome {
    Outcome {
        verdict: Verdict::Accept,
        state: CtState::Untracked,
        dir: None,
        reason: None,
        dnat: false,
        meta,
    }
}

fn invalid(meta: PacketMeta, reason: DropReason) -> Outcome {
    Outcome {
        verdict: Verdict::Accept,
        state: CtState::Invalid,
        dir: None,
        reason: Some(reason),
        dnat: false,
        meta,
    }
}

/// The key of the connection an ICMP error quotes, as the quoted packet travelled.
fn embedded_key(outer: &Ip<'_>, embedded: &[u8]) -> Result<Key, DropReason> {
    let inner = match outer.family {
        Family::V4 => wire::parse_ipv4(embedded, true, false, true),
        Family::V6 => wire::parse_ipv6(embedded, true, true),
    }
    .map_err(|_| DropReason::IcmpErrorBadEmbedded)?;
    if inner.frag == Frag::Later {
        return Err(DropReason::IcmpErrorBadEmbedded);
    }
    let tr =
        wire::parse_transport(&inner, false, true).map_err(|_| DropReason::IcmpErrorBadEmbedded)?;
    let (sport, dport) = match tr {
        Transport::Tcp(t) => (t.sport, t.dport),
        Transport::Udp { sport, dport } => (sport, dport),
        Transport::Icmp(m) => match m.kind {
            IcmpKind::Query { id, class, reply } => {
                if reply {
                    (u16::from(class), id)
                } else {
                    (id, u16::from(class))
                }
            }
            // An error about an error is never sent (RFC 1122 3.2.2).
            _ => return Err(DropReason::IcmpErrorBadEmbedded),
        },
        Transport::Other => (0, 0),
    };
    Ok(Key {
        src: inner.src,
        dst: inner.dst,
        sport,
        dport,
        proto: inner.proto,
        family: family_code(inner.family),
    })
}

fn family_of(code: u8) -> Family {
    if code == 6 {
        Family::V6
    } else {
        Family::V4
    }
}

pub(crate) fn conn_view(entry: &Entry, nat: Option<&NatExt>, now_s: u32) -> Conn {
    let e = &entry.key;
    let family = family_of(e.family);
    // As netfilter lists a translated connection: the original tuple as the first packet
    // arrived, the reply tuple as replies arrive.
    let (o, r) = match nat {
        Some(x) => (x.arrive_original(e), x.arrive_reply(e)),
        None => (*e, reverse(e)),
    };
    let (l4o, l4r) = match e.proto {
        PROTO_TCP | PROTO_UDP | 136 | 33 | 132 => (
            L4Tuple::Ports {
                sport: o.sport,
                dport: o.dport,
            },
            L4Tuple::Ports {
                sport: r.sport,
                dport: r.dport,
            },
        ),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let (req, rep) = icmp_query_types(e.proto == PROTO_ICMPV6, e.dport);
            (
                L4Tuple::Icmp {
                    ty: req,
                    code: 0,
                    id: o.sport,
                },
                L4Tuple::Icmp {
                    ty: rep,
                    code: 0,
                    id: r.dport,
                },
            )
        }
        _ => (L4Tuple::None, L4Tuple::None),
    };
    Conn {
        family,
        proto: e.proto,
        original: Tuple {
            src: addr_to_ip(family, &o.src),
            dst: addr_to_ip(family, &o.dst),
            l4: l4o,
        },
        reply: Tuple {
            src: addr_to_ip(family, &r.src),
            dst: addr_to_ip(family, &r.dst),
            l4: l4r,
        },
        tcp_state: (e.proto == PROTO_TCP).then(|| TcpState::from_u8(entry.state)),
        seen_reply: entry.status & STATUS_SEEN_REPLY != 0,
        assured: entry.status & STATUS_ASSURED != 0,
        timeout: entry.expires.saturating_sub(now_s),
        age: 0,
        packets: entry.packets,
        bytes: entry.bytes,
    }
}
