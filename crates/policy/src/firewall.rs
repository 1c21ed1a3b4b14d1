//! The firewall: the engine and a compiled policy together. Bytes, `now` and the ingress
//! interface in; verdict, connection state, deciding rule and (for reject) an answer out.
//!
//! The order is netfilter's: notrack rules before the state table (raw), then tracking, then
//! the filter rules; a new connection whose first packet the filter refuses never enters the
//! table.

use core::net::IpAddr;
use std::collections::HashMap;

use keepstate_engine::{
    Admit, Config, Conn, CtState, DropReason, Engine, Hooks, LinkType, Lookahead, NatRequest,
    Outcome, PacketMeta, SnatRequest, Time, Verdict as EngineVerdict,
};

use crate::antispoof;
use crate::flood::{Flow, NewFlowLimits, Overload, SourceConns};
use crate::model::{IfaceId, Mapping, Policy, ZoneId};
use crate::nat::{self, Tuple5};
use crate::reject;
use crate::ruleset::{Chain, Decider, Judgement, Ruleset, Verdict, View};
use crate::scan::{PortScans, Scan};
use crate::synproxy::{self, Cookies, Seg};
use crate::topology::Topology;
pub use crate::translate::NatStats;
use crate::translate::{self, Nat, PortAsk};

/// What the caller knows about where a packet came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ingress {
    /// Nothing: the packet is placed by the route back to its source address (what a
    /// reverse-path check expects), and one from the firewall's own address is output.
    #[default]
    Unknown,
    /// It arrived on this interface (the dataplane, or a capture that marks direction).
    Arrived(IfaceId),
    /// A capture saw it on this interface, direction unrecorded: a packet from one of the
    /// firewall's own addresses was being sent (output), anything else arrived there.
    Seen(IfaceId),
    /// The firewall itself sent it.
    Local,
}

/// Counters the firewall keeps on top of the engine's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirewallStats {
    pub accepted: u64,
    pub dropped: u64,
    /// IP bytes (header included) of the packets counted in `accepted` and `dropped`.
    pub accepted_bytes: u64,
    pub dropped_bytes: u64,
    /// Packets a `reject` decided (answered or not).
    pub rejected: u64,
    /// Reject answers built.
    pub replies: u64,
    /// Packets a notrack rule exempted from tracking.
    pub notracked: u64,
    /// Log requests that passed the log limit.
    pub logged: u64,
    /// Scans detected, per kind (index with `Scan::index`): flag scans per packet, port
    /// sweeps once per source and window.
    pub scans: [u64; 6],
}

/// The firewall's answer for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The engine's classification, with the policy's verdict (reject counts as drop) and,
    /// for a drop, the reason: the engine's own for invalid packets, a policy reason else.
    pub outcome: Outcome,
    pub verdict: Verdict,
    /// What decided; `None` for frames the IP firewall does not judge (ARP, LLDP...).
    pub by: Option<Decider>,
    pub chain: Option<Chain>,
    pub in_iface: Option<IfaceId>,
    pub out_iface: Option<IfaceId>,
    /// The notrack rule that exempted the packet.
    pub notrack: Option<u32>,
    /// A rule asked to log this packet and the log limit allowed it.
    pub log: Option<u32>,
    /// The packet is a scan probe (a flag scan), or the refused attempt that showed its
    /// source sweeping our ports: worth a log line.
    pub scan: Option<Scan>,
    /// A reject answer is ready in [`Firewall::reply`].
    pub reply: bool,
    /// NAT rewrote the packet: [`Firewall::frame`] holds it as it leaves (or the caller's
    /// buffer, for [`Firewall::process_in_place`]); [`Firewall::translated`] tells how.
    pub translated: bool,
    /// The firewall sends a packet of its own, already translated, in [`Firewall::injected`]:
    /// a SYN proxy's handshake with the server.
    pub inject: bool,
}

impl Decision {
    /// A decision before a frame is judged into it: accepted, untracked, nothing decided.
    pub const BLANK: Decision = Decision {
        outcome: Outcome::BLANK,
        verdict: Verdict::Accept,
        by: None,
        chain: None,
        in_iface: None,
        out_iface: None,
        notrack: None,
        log: None,
        scan: None,
        reply: false,
        translated: false,
        inject: false,
    };
}

/// Connections a [`ReloadReport`] lists one by one (all are counted).
pub const RELOAD_LISTED: usize = 1000;

/// How [`Firewall::reload`] treats connections the new policy would not let open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadOptions {
    /// Leave them in the table (they carry on until they close or expire); by default they
    /// are removed, as if the new policy had always been in force.
    pub keep_forbidden: bool,
}

/// What a reload did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Connections checked against the new policy.
    pub checked: usize,
    /// Of those, the ones the new policy would not let open.
    pub forbidden: usize,
    /// The first [`RELOAD_LISTED`] of them, as they were at the reload.
    pub listed: Vec<Conn>,
    /// How many were removed (0 with `keep_forbidden`).
    pub removed: usize,
    /// Connections in the table afterwards.
    pub kept: usize,
    /// What the reload could not change, and other things worth saying.
    pub notes: Vec<String>,
}

/// Why a reload was refused; the policy in force is then unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadError {
    /// The file has errors (file:line:col diagnostics).
    Config(crate::config::Errors),
    /// `[[interface]]` names, count or order differ from the running policy's.
    InterfacesChanged { old: Vec<String>, new: Vec<String> },
}

impl core::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::InterfacesChanged { old, new } => write!(
                f,
                "interfaces changed ({} -> {}); restart keepstate run",
                old.join(", "),
                new.join(", ")
            ),
        }
    }
}

impl std::error::Error for ReloadError {}

impl From<crate::config::Errors> for ReloadError {
    fn from(e: crate::config::Errors) -> ReloadError {
        ReloadError::Config(e)
    }
}

/// A policy's view of existing connections, for [`Firewall::reload`]: its rules compiled
/// without rate limits on their own (counters and limiters must not move for checks).
struct Recheck<'a> {
    policy: &'a Policy,
    topo: &'a Topology,
    rules: Ruleset,
}

impl<'a> Recheck<'a> {
    fn new(policy: &'a Policy, topo: &'a Topology) -> Recheck<'a> {
        let mut p = policy.clone();
        for r in &mut p.rules {
            if r.limit.take().is_some() && r.action != crate::model::Action::Accept {
                // Over its rate a limited rule does not match: let it never decide.
                r.action = crate::model::Action::Counter;
            }
        }
        // Log limits and reject limits only say whether to log or answer: not asked here.
        Recheck {
            policy,
            topo,
            rules: Ruleset::new(&p),
        }
    }

    fn zone(&self, iface: Option<IfaceId>) -> Option<ZoneId> {
        iface.map(|i| self.topo.zone_of(i))
    }

    /// Where a packet from `src` to `dst` of unknown ingress is, as `Ctx::place` has it.
    fn place(&self, src: IpAddr, dst: IpAddr) -> Place {
        let arrived = if self.topo.is_local(src) {
            None
        } else {
            self.topo.route(src)
        };
        match arrived {
            None => Place {
                chain: Chain::Output,
                in_iface: None,
                out_iface: self.topo.route(dst),
            },
            Some(i) if self.topo.is_local(dst) => Place {
                chain: Chain::Input,
                in_iface: Some(i),
                out_iface: None,
            },
            Some(i) => Place {
                chain: Chain::Forward,
                in_iface: Some(i),
                out_iface: self.topo.route(dst),
            },
        }
    }

    fn admits(&mut self, c: &Conn, now: Time) -> bool {
        use keepstate_engine::L4Tuple;
        let o = &c.original;
        let (sport, dport, icmp) = match o.l4 {
            L4Tuple::Ports { sport, dport } => (Some(sport), Some(dport), None),
            L4Tuple::Icmp { ty, code, .. } => (None, None, Some((ty, code))),
            L4Tuple::None => (None, None, None),
        };
        let place = self.place(o.src, o.dst);
        let mut v = View {
            chain: place.chain,
            in_zone: self.zone(place.in_iface),
            out_zone: self.zone(place.out_iface),
            in_iface: place.in_iface,
            out_iface: place.out_iface,
            family: c.family,
            proto: c.proto,
            src: o.src,
            dst: o.dst,
            sport,
            dport,
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
            tcp_flags: (c.proto == keepstate_engine::wire::PROTO_TCP).then_some(0x02),
            state: CtState::New,
            dir: Some(keepstate_engine::Direction::Original),
            len: 0,
            now,
        };
        // Destination NAT shows in the reply tuple: replies come from where the connection
        // really goes.
        let reply_sport = match c.reply.l4 {
            L4Tuple::Ports { sport, .. } => Some(sport),
            _ => None,
        };
        let dnat = c.reply.src != o.dst || (dport.is_some() && reply_sport != dport);
        if dnat {
            let to = (c.reply.src, reply_sport.unwrap_or(0));
            let forward = v.in_zone.zip(dport).and_then(|(z, p)| {
                translate::port_forward(self.policy, self.topo, z, c.proto, o.src, o.dst, p)
            });
            if let Some((_, fwd_to, _)) = forward {
                // A port forward accepts what it translates, without a rule.
                return fwd_to == to;
            }
            if translate::one_to_one_inbound(self.policy, v.in_zone, o.dst) != Some(to.0) {
                return false;
            }
            let place = self.place(o.src, to.0);
            v.dst = to.0;
            v.chain = place.chain;
            v.out_iface = place.out_iface;
            v.out_zone = self.zone(place.out_iface);
        }
        self.rules.evaluate(&v).verdict == Verdict::Accept
    }
}

/// A frame for [`Firewall::process_batch_in_place`]: what [`Firewall::process_in_place`]
/// takes.
#[derive(Debug)]
pub struct Frame<'a> {
    pub now: Time,
    pub link: LinkType,
    pub data: &'a mut [u8],
    pub wire_len: usize,
    pub ingress: Ingress,
}

pub struct Firewall {
    engine: Engine,
    policy: Policy,
    topo: Topology,
    rules: Ruleset,
    flows: NewFlowLimits,
    overload: Overload,
    conns: SourceConns,
    scans: PortScans,
    stats: FirewallStats,
    reply: Vec<u8>,
    /// Present when the policy masquerades or forwards ports. Boxed: it is taken out for
    /// each packet, and moving a pointer is cheaper than moving the maps.
    nat: Option<Box<Nat>>,
    /// The frame as it leaves, when NAT rewrote it.
    frame: Vec<u8>,
    /// SYN proxy: cookies, handshakes waiting for the server's SYN/ACK, what the last packet
    /// asked of it, and the packet the firewall sends itself.
    cookies: Cookies,
    proxied: HashMap<ProxyKey, Proxied>,
    synact: Option<SynAct>,
    synthetic: bool,
    injected: Vec<u8>,
    /// Some zone checks sources (`antispoof`, `drop_bogons`).
    checks_source: bool,
    /// Some port forward has `synproxy`.
    proxies: bool,
}

/// A proxied connection as the client addressed it: client address and port, the forward's
/// outside address and port.
type ProxyKey = (IpAddr, u16, IpAddr, u16);

/// A handshake the SYN proxy completed with the client and opened to the server.
#[derive(Clone, Debug)]
struct Proxied {
    /// The proxy's initial sequence number (the cookie) and the client's.
    cookie: u32,
    client_isn: u32,
    window: u16,
    /// How the client's packets arrived: link header and ingress, for the ACK the proxy
    /// sends in its place.
    link: Vec<u8>,
    link_type: LinkType,
    ingress: Ingress,
    since: Time,
    by: Option<Decider>,
}

/// What the SYN proxy does with the packet being judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SynAct {
    /// Answer the client's SYN with a cookie.
    Answer,
    /// The client's ACK: check its cookie, and if good open the connection to the server.
    Check,
}

/// Handshakes the proxy waits on at most; past that the oldest are given up.
const PROXY_PENDING: usize = 65_536;

/// How many frames ahead `process_batch_in_place` requests a frame's entry and NAT record:
/// half the engine's own distance ([`keepstate_engine::LOOKAHEAD_DISTANCE`]). The firewall
/// spends well over one and a half times the engine's time on a frame, so four frames still
/// cover a load from memory, and every frame in the window keeps its lines (entry, NAT
/// record, index line) in the first-level cache meanwhile. Measured against 8, the
/// difference is within the benchmark's noise (README, NAT); at 3 routing slows down.
const ENTRY_AHEAD: usize = 4;
/// How many frames ahead it works out a frame's hash and requests its index line, which
/// must have arrived when the entry is requested (the entry's id is read from it).
const INDEX_AHEAD: usize = 8;
// A frame's look-ahead must be in the ring before its entry is requested.
const _: () = assert!(ENTRY_AHEAD < INDEX_AHEAD);

impl Firewall {
    /// Builds the firewall. `base` supplies what the policy file does not set (hash key,
    /// table limit from the host's memory); the policy's `[tracking]` settings override it.
    pub fn new(policy: Policy, base: Config) -> Firewall {
        let t = &policy.tracking;
        let key = base.hash_key;
        let max_connections = t.max_connections.unwrap_or(base.max_connections);
        let of = |pct: u32| {
            u32::try_from(u64::from(max_connections) * u64::from(pct) / 100).unwrap_or(u32::MAX)
        };
        let cfg = Config {
            max_connections,
            timeouts: t.timeouts.clone(),
            tcp_loose: t.tcp_loose.unwrap_or(base.tcp_loose),
            tcp_liberal: t.tcp_liberal.unwrap_or(base.tcp_liberal),
            verify_checksums: t.verify_checksums.unwrap_or(base.verify_checksums),
            hash_key: key,
            adaptive: t
                .adaptive
                .map(|(s, e)| keepstate_engine::Adaptive {
                    start: of(s),
                    end: of(e),
                })
                .or(base.adaptive),
        };
        let nat = policy.uses_nat().then(|| Box::new(Nat::new(&policy, key)));
        let mut fw = Firewall {
            engine: Engine::new(cfg),
            topo: Topology::new(&policy),
            // Per-source limit tables hash addresses an attacker chooses: key them secretly.
            rules: Ruleset::with_key(&policy, key),
            flows: NewFlowLimits::new(&policy),
            overload: Overload::new(&policy, key),
            conns: SourceConns::new(&policy, key),
            scans: PortScans::new(
                policy.defaults.scan_ports,
                policy.defaults.scan_window,
                crate::limit::DEFAULT_PER_SOURCE_CAPACITY,
                key,
            ),
            policy,
            stats: FirewallStats::default(),
            reply: Vec::new(),
            nat: None,
            frame: Vec::new(),
            cookies: Cookies::new(key),
            proxied: HashMap::new(),
            synact: None,
            synthetic: false,
            injected: Vec::new(),
            checks_source: false,
            proxies: false,
        };
        fw.checks_source = fw.policy.zones.iter().any(|z| z.antispoof || z.drop_bogons);
        fw.proxies = fw.policy.port_forwards.iter().any(|p| p.synproxy);
        if let Some(n) = fw.policy.tracking.reserve_connections {
            // With NAT configured any connection may be translated: room for each to be.
            fw.engine.reserve(n, nat.is_some());
        }
        fw.nat = nat;
        fw
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    pub fn ruleset(&self) -> &Ruleset {
        &self.rules
    }

    pub fn stats(&self) -> &FirewallStats {
        &self.stats
    }

    /// The answer the last rejected packet gets (an IP packet, no link header), valid while
    /// the last [`Decision`] has `reply` set.
    pub fn reply(&self) -> &[u8] {
        &self.reply
    }

    /// The last packet as it leaves, valid while the last [`Decision`] has `translated` set.
    pub fn frame(&self) -> &[u8] {
        &self.frame
    }

    /// The packet the firewall itself sends (a whole frame, link header as the packet it
    /// answers had), valid while the last [`Decision`] has `inject` set.
    pub fn injected(&self) -> &[u8] {
        &self.injected
    }

    /// How NAT changed the last packet, valid while the last [`Decision`] has `translated`
    /// set: its addressing as it arrived (`outcome.meta` is what tracking and rules saw) and
    /// as it leaves. Worked out only when asked for.
    pub fn translated(&self) -> Option<(Tuple5, Tuple5)> {
        let t = self.engine.translation()?;
        Some((t.arrived().into(), t.leaves().into()))
    }

    /// NAT counters, when the policy translates.
    pub fn nat_stats(&self) -> Option<NatStats> {
        let nat = self.nat.as_ref()?;
        let c = self.engine.nat_counters();
        let live = u64::try_from(self.engine.nat_connections()).unwrap_or(u64::MAX);
        Some(NatStats {
            created: c.created,
            released: c.created.saturating_sub(live),
            exhausted: c.exhausted,
            rewritten: nat.rewritten,
            bypass: c.bypass,
        })
    }

    /// Translated connections in the table.
    pub fn nat_bindings(&self) -> usize {
        self.engine.nat_connections()
    }

    /// The connection table as `conntrack -L` shows it: for translated connections the
    /// original tuple as the first packet arrived and the reply tuple as replies arrive
    /// (addressed to the masquerading address, or from a port forward's server).
    pub fn connections(&self) -> Vec<Conn> {
        self.engine.connections().collect()
    }

    /// Removes the connections `pred` picks (`conntrack -D`, or all of them for `-F`), as
    /// expiry would, and takes back at once what they held: NAT ports and endpoint-independent
    /// mappings, per-source connection counts. Returns how many were removed.
    pub fn remove_connections(&mut self, now: Time, pred: impl FnMut(&Conn) -> bool) -> usize {
        let n = self.engine.remove_where(now, pred);
        if self.conns.any {
            self.conns.collect(&mut self.engine);
        }
        if let Some(nat) = self.nat.as_mut() {
            if nat.books {
                nat.collect(&mut self.engine);
            }
        }
        n
    }

    /// How traces and logs name what decided.
    pub fn describe(&self, by: Decider) -> String {
        self.rules.describe(by, &self.policy)
    }

    /// Puts `policy` in force in place of the current one, keeping the connection table
    /// (and the translations of translated connections): the topology, the rules (their
    /// counters start again from zero), NAT policy and the rate limits whose settings
    /// changed are replaced. Then every connection is checked against the new policy as if
    /// its first packet arrived now (see [`Firewall::admits`]); those it would refuse are
    /// reported and, unless `opts.keep_forbidden`, removed at `now`.
    ///
    /// The interfaces (names, count and order) must stay as they are: the dataplane holds
    /// them. Otherwise nothing changes and [`ReloadError::InterfacesChanged`] says so.
    /// `[tracking]` settings belong to the engine, built once: a change is noted in the
    /// report and takes effect on restart.
    pub fn reload(
        &mut self,
        now: Time,
        policy: Policy,
        opts: ReloadOptions,
    ) -> Result<ReloadReport, ReloadError> {
        let names =
            |p: &Policy| -> Vec<String> { p.interfaces.iter().map(|i| i.name.clone()).collect() };
        let (old_names, new_names) = (names(&self.policy), names(&policy));
        if old_names != new_names {
            return Err(ReloadError::InterfacesChanged {
                old: old_names,
                new: new_names,
            });
        }
        let key = self.engine.config().hash_key;
        let topo = Topology::new(&policy);
        let rules = Ruleset::with_key(&policy, key);
        let mut check = Recheck::new(&policy, &topo);

        let mut report = ReloadReport::default();
        let note = |c: &Conn, report: &mut ReloadReport| {
            report.forbidden += 1;
            if report.listed.len() < RELOAD_LISTED {
                report.listed.push(*c);
            }
        };
        if opts.keep_forbidden {
            for c in self.engine.connections() {
                report.checked += 1;
                if !check.admits(&c, now) {
                    note(&c, &mut report);
                }
            }
        } else {
            report.removed = self.engine.remove_where(now, |c| {
                report.checked += 1;
                let refused = !check.admits(c, now);
                if refused {
                    note(c, &mut report);
                }
                refused
            });
        }

        let old = core::mem::replace(&mut self.policy, policy);
        let p = &self.policy;
        if old.tracking != p.tracking {
            report.notes.push(
                "the [tracking] settings changed: they take effect when keepstate run \
                 restarts"
                    .into(),
            );
        }
        let flow_limits = |p: &Policy| {
            let d = &p.defaults;
            let zones: Vec<_> = p
                .zones
                .iter()
                .map(|z| (z.syn_limit, z.udp_limit, z.icmp_limit))
                .collect();
            (d.synflood_protect, d.synflood_limit, zones)
        };
        if flow_limits(&old) != flow_limits(p) {
            self.flows = NewFlowLimits::new(p);
        }
        let overload = |p: &Policy| -> Vec<_> {
            p.zones
                .iter()
                .map(|z| (z.src_conn_limit, z.overload_timeout))
                .collect()
        };
        if overload(&old) != overload(p) {
            // Blocked sources are forgotten with the settings that blocked them.
            self.overload = Overload::new(p, key);
        }
        let conn_max = |p: &Policy| -> Vec<_> { p.zones.iter().map(|z| z.src_conn_max).collect() };
        if conn_max(&old) != conn_max(p) {
            if self.conns.any {
                self.conns.collect(&mut self.engine);
            }
            self.conns = SourceConns::new(p, key);
            if self.conns.any {
                report.notes.push(
                    "src_conn_max changed: connections per source are counted from now on".into(),
                );
            }
        }
        if (old.defaults.scan_ports, old.defaults.scan_window)
            != (p.defaults.scan_ports, p.defaults.scan_window)
        {
            self.scans = PortScans::new(
                p.defaults.scan_ports,
                p.defaults.scan_window,
                crate::limit::DEFAULT_PER_SOURCE_CAPACITY,
                key,
            );
        }
        // Translated connections keep their translations in their entries, but their
        // packets are only rewritten while the firewall has NAT: it stays once there was
        // any. Its books (ports in use, endpoint-independent mappings) stay with it.
        match self.nat.as_mut() {
            Some(nat) => {
                let fresh = Nat::new(p, key);
                nat.ports = fresh.ports;
                nat.books = nat.books || fresh.books;
            }
            None if p.uses_nat() => self.nat = Some(Box::new(Nat::new(p, key))),
            None => {}
        }
        self.topo = topo;
        self.rules = rules;
        self.checks_source = p.zones.iter().any(|z| z.antispoof || z.drop_bogons);
        self.proxies = p.port_forwards.iter().any(|pf| pf.synproxy);
        if self.conns.any {
            self.conns.collect(&mut self.engine);
        }
        if let Some(nat) = self.nat.as_mut() {
            if nat.books {
                nat.collect(&mut self.engine);
            }
        }
        report.kept = self.engine.len();
        Ok(report)
    }

    /// Whether the policy in force would let connection `c` open now: its original
    /// direction's first packet (a SYN for TCP), placed by the route back to its source as
    /// for a packet of unknown ingress, through port forwards and 1:1 NAT as the filter hook
    /// does, judged by the rules. Rate limits on rules are taken as met for `accept` rules
    /// and as exceeded for the others: they limit how fast connections open, and this one
    /// is open already. Counts and limits nothing.
    pub fn admits(&self, c: &Conn, now: Time) -> bool {
        Recheck::new(&self.policy, &self.topo).admits(c, now)
    }

    /// Judges one frame, translating it where the policy says so: the frame as it leaves is
    /// then in [`Firewall::frame`].
    // Out of line so profiles (callgrind's --toggle-collect) can find the per-packet work.
    #[inline(never)]
    pub fn process(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        ingress: Ingress,
    ) -> Decision {
        let la = Lookahead::default();
        let mut d = Decision::BLANK;
        let pending = self.decide(now, link, data, wire_len, ingress, la, &mut d);
        if let Some(p) = pending {
            let mut frame = core::mem::take(&mut self.frame);
            frame.clear();
            frame.extend_from_slice(data);
            self.translate(&mut d, p, &mut frame);
            self.frame = frame;
        }
        // Only a proxy decision, or a translated packet while a proxied handshake waits for
        // the server's SYN/ACK, concerns the proxy: nothing else is read again.
        if self.synact.is_some() || (d.translated && !self.proxied.is_empty()) {
            self.synproxy(&mut d, now, link, data, ingress);
        }
        d
    }

    /// The SYN proxy's part once a packet is judged (see [`crate::synproxy`]): answer a SYN
    /// with a cookie; on a good cookie, open the connection to the server; on the server's
    /// SYN/ACK, complete its handshake in the client's place. `data` is the frame (its
    /// sequence numbers are untouched by translation until the proxy sets an offset).
    fn synproxy(
        &mut self,
        d: &mut Decision,
        now: Time,
        link: LinkType,
        data: &[u8],
        ingress: Ingress,
    ) {
        let act = self.synact.take();
        let at = usize::from(d.outcome.meta.link.ip_offset);
        let (Some(head), Some(ip)) = (data.get(..at), data.get(at..)) else {
            return;
        };
        let seg = Seg::read(ip);
        match (act, seg) {
            (Some(SynAct::Answer), Some(syn)) => {
                let cookie = self.cookies.make(&syn, now);
                let answer = Seg {
                    src: syn.dst,
                    dst: syn.src,
                    sport: syn.dport,
                    dport: syn.sport,
                    seq: cookie,
                    ack: syn.seq.wrapping_add(1),
                    flags: 0x12,
                    window: synproxy::WINDOW,
                    mss: Some(self.cookies.mss_of(cookie)),
                };
                self.reply.clear();
                d.reply = answer.write(&mut self.reply);
                d.outcome.reason = Some(DropReason::SynProxy);
            }
            (Some(SynAct::Check), Some(ack)) => {
                let Some(mss) = self.cookies.check(&ack, now) else {
                    d.outcome.reason = Some(DropReason::SynProxyCookie);
                    return;
                };
                d.outcome.reason = Some(DropReason::SynProxy);
                let key = (ack.src, ack.sport, ack.dst, ack.dport);
                if self.proxied.len() >= PROXY_PENDING {
                    // Handshakes the server never answered: give up the oldest half.
                    let mut since: Vec<Time> = self.proxied.values().map(|p| p.since).collect();
                    since.sort_unstable();
                    let cut = since.get(since.len() / 2).copied().unwrap_or(now);
                    self.proxied.retain(|_, p| p.since > cut);
                }
                self.proxied.insert(
                    key,
                    Proxied {
                        cookie: ack.ack.wrapping_sub(1),
                        client_isn: ack.seq.wrapping_sub(1),
                        window: ack.window,
                        link: head.to_vec(),
                        link_type: link,
                        ingress,
                        since: now,
                        by: d.by,
                    },
                );
                // The client's SYN, as it would have come, opens the connection to the server.
                let syn = Seg {
                    seq: ack.seq.wrapping_sub(1),
                    ack: 0,
                    flags: 0x02,
                    mss: Some(mss),
                    ..ack
                };
                let mut buf = head.to_vec();
                if syn.write(&mut buf) && self.inject(now, link, &mut buf, ingress) {
                    d.inject = true;
                } else {
                    self.proxied.remove(&key);
                }
            }
            (None, Some(synack)) if synack.is_syn_ack() => {
                if self.proxied.is_empty()
                    || d.verdict != Verdict::Accept
                    || d.outcome.dir != Some(keepstate_engine::Direction::Reply)
                {
                    return;
                }
                let Some((_, leaves)) = self.translated() else {
                    return;
                };
                let key = (leaves.dst, leaves.dport, leaves.src, leaves.sport);
                let Some(p) = self.proxied.remove(&key) else {
                    return;
                };
                if !self
                    .engine
                    .set_seq_offset(synack.seq.wrapping_sub(p.cookie))
                {
                    return;
                }
                // The client finished its handshake with the proxy: this goes no further,
                // and the proxy acknowledges it in the client's place.
                d.verdict = Verdict::Drop;
                d.outcome.verdict = EngineVerdict::Drop;
                d.outcome.reason = Some(DropReason::SynProxy);
                d.by = p.by;
                d.translated = false;
                self.stats.accepted -= 1;
                self.stats.dropped += 1;
                let ack = Seg {
                    src: key.0,
                    dst: key.2,
                    sport: key.1,
                    dport: key.3,
                    seq: p.client_isn.wrapping_add(1),
                    ack: p.cookie.wrapping_add(1),
                    flags: synproxy::TCP_ACK,
                    window: p.window,
                    mss: None,
                };
                let mut buf = p.link.clone();
                if ack.write(&mut buf) && self.inject(now, p.link_type, &mut buf, p.ingress) {
                    d.inject = true;
                }
            }
            _ => {}
        }
    }

    /// Runs a packet the firewall makes itself through it, as arriving on `ingress`; when
    /// accepted it is in `buf` as it leaves and becomes [`Firewall::injected`].
    fn inject(&mut self, now: Time, link: LinkType, buf: &mut Vec<u8>, ingress: Ingress) -> bool {
        self.synthetic = true;
        let len = buf.len();
        let d = self.process_in_place(now, link, buf, len, ingress);
        self.synthetic = false;
        if d.verdict != Verdict::Accept {
            return false;
        }
        self.injected = core::mem::take(buf);
        true
    }

    /// [`Firewall::process`] for a frame the caller owns, as a dataplane does: a translated
    /// frame is rewritten where it lies (`translated` says so), nothing is copied. A frame
    /// that is not accepted is left as it was.
    pub fn process_in_place(
        &mut self,
        now: Time,
        link: LinkType,
        data: &mut [u8],
        wire_len: usize,
        ingress: Ingress,
    ) -> Decision {
        self.process_ahead(now, link, data, wire_len, ingress, Lookahead::default())
    }

    /// [`Firewall::process_in_place`] for each of `frames` in order, with the same
    /// decisions, handed to `each` (which may use the firewall, for [`Firewall::injected`]
    /// say) frame by frame. Each frame's lookup starts a few frames ahead, so the state
    /// table's lines arrive from memory while the frames before it are judged instead of
    /// stalling it.
    pub fn process_batch_in_place(
        &mut self,
        frames: &mut [Frame<'_>],
        mut each: impl FnMut(&mut Firewall, usize, Decision),
    ) {
        const D: usize = ENTRY_AHEAD;
        const B: usize = INDEX_AHEAD;
        let n = frames.len();
        // Frame `k`'s look-ahead sits in slot `k % B` from when its index line is requested
        // (`B` frames ahead) until it is judged.
        let mut ring = [Lookahead::default(); B];
        for (slot, f) in ring.iter_mut().zip(frames.iter()) {
            *slot = self.look_ahead(f.link, f.data);
        }
        for la in ring.iter_mut().take(D.min(n)) {
            *la = self.prefetch(*la);
        }
        // One decision, filled in place for each frame in turn.
        let mut d = Decision::BLANK;
        for j in 0..n {
            let la = ring[j % B];
            if let Some(f) = frames.get(j + B) {
                ring[j % B] = self.look_ahead(f.link, f.data);
            }
            if j + D < n {
                let k = (j + D) % B;
                ring[k] = self.prefetch(ring[k]);
            }
            let Some(f) = frames.get_mut(j) else {
                break;
            };
            self.process_ahead_into(f.now, f.link, f.data, f.wire_len, f.ingress, la, &mut d);
            each(self, j, d);
        }
    }

    /// First stage of a pipelined batch (see [`Firewall::process_batch_in_place`]): the
    /// frame's lookup hash, with its index line requested.
    #[inline(always)]
    pub fn look_ahead(&self, link: LinkType, data: &[u8]) -> Lookahead {
        self.engine.look_ahead(link, data)
    }

    /// Second stage: the connection's lines requested; the look-ahead given back notes
    /// where the connection is filed.
    #[inline(always)]
    pub fn prefetch(&self, la: Lookahead) -> Lookahead {
        self.engine.prefetch(la)
    }

    /// [`Firewall::process_in_place`] for a frame whose [`Lookahead`] was taken.
    #[inline(never)]
    pub fn process_ahead(
        &mut self,
        now: Time,
        link: LinkType,
        data: &mut [u8],
        wire_len: usize,
        ingress: Ingress,
        la: Lookahead,
    ) -> Decision {
        let mut d = Decision::BLANK;
        self.process_ahead_into(now, link, data, wire_len, ingress, la, &mut d);
        d
    }

    /// [`Firewall::process_ahead`] into `d`, overwriting all of it.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn process_ahead_into(
        &mut self,
        now: Time,
        link: LinkType,
        data: &mut [u8],
        wire_len: usize,
        ingress: Ingress,
        la: Lookahead,
        d: &mut Decision,
    ) {
        let pending = self.decide(now, link, data, wire_len, ingress, la, d);
        let translated = pending.is_some();
        if let Some(p) = pending {
            if !self.translate_plain(d, &p, data) {
                self.translate(d, p, data);
            }
        }
        if self.synact.is_some() || (translated && !self.proxied.is_empty()) {
            self.synproxy(d, now, link, data, ingress);
        }
    }

    /// Judges a frame into `d`; `Some` when it is accepted and must be translated. The
    /// decision is written where the caller keeps it, never assembled and copied: a copy
    /// reads the fields back in wide loads just after they were written in narrow stores,
    /// and such a load waits for the stores to reach the cache.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        ingress: Ingress,
        la: Lookahead,
        d: &mut Decision,
    ) -> Option<Pending> {
        if self.conns.any {
            self.conns.collect(&mut self.engine);
        }
        let mut nat = self.nat.take();
        let created = self.engine.nat_counters().created;
        let mut nc = nat.as_mut().map(|nat| {
            if nat.books {
                nat.collect(&mut self.engine);
            }
            NatCtx {
                nat,
                plan: None,
                ask: None,
            }
        });
        self.judge(now, link, data, wire_len, ingress, la, nc.as_mut(), d);
        let translate = d.verdict == Verdict::Accept && self.engine.translates();
        // Nearly every translated packet belongs to a connection already open: no port was
        // asked for, nothing else to look at.
        let pending = match nc {
            Some(nc) if translate => Some(Pending {
                created,
                opened: match nc.ask {
                    Some(a) => nc
                        .plan
                        .and_then(|p| p.snat)
                        .map(|s| (a, s.endpoint_independent)),
                    None => None,
                },
            }),
            _ => None,
        };
        self.nat = nat;
        pending
    }

    /// [`Firewall::translate`] for nearly every translated packet: one of an established
    /// IPv4 TCP or UDP connection, without IP options, not a fragment. Returns `false`,
    /// having written nothing, for anything else.
    #[inline(always)]
    fn translate_plain(&mut self, d: &mut Decision, p: &Pending, buf: &mut [u8]) -> bool {
        if p.opened.is_some() {
            return false;
        }
        let at = usize::from(d.outcome.meta.link.ip_offset);
        let (Some(ip), Some(nat)) = (buf.get_mut(at..), self.nat.as_mut()) else {
            return false;
        };
        if !self.engine.rewrite_ipv4_plain(ip) {
            return false;
        }
        nat.rewritten += 1;
        d.translated = true;
        true
    }

    /// Rewrites the frame `buf` as the engine's translation of it says.
    #[inline(never)]
    fn translate(&mut self, d: &mut Decision, p: Pending, buf: &mut [u8]) {
        let at = usize::from(d.outcome.meta.link.ip_offset);
        let ok = match (self.engine.ipv4_rewrite(), buf.get_mut(at..)) {
            // Nearly every translated packet: one of an IPv4 TCP or UDP connection.
            (Some(rw), Some(ip)) => nat::rewrite_ipv4(ip, &rw).is_ok(),
            (None, Some(ip)) => match self.engine.translation() {
                Some(t) => Self::rewrite(&t, ip),
                None => return,
            },
            (_, None) => false,
        };
        let Some(nat) = self.nat.as_mut() else {
            return;
        };
        if !ok {
            // Sent on untranslated it would leak the inside addresses.
            d.verdict = Verdict::Drop;
            d.outcome.verdict = EngineVerdict::Drop;
            d.outcome.reason = Some(DropReason::NatUnwritable);
            d.by = Some(Decider::Nat);
            self.stats.accepted -= 1;
            self.stats.dropped += 1;
            return;
        }
        nat.rewritten += 1;
        d.translated = true;
        if let Some((a, eim)) = p.opened {
            if self.engine.nat_counters().created > p.created {
                if let Some(t) = self.engine.translation() {
                    let leaves = t.leaves();
                    nat.opened(a.proto, a.inside, (leaves.src, leaves.sport), eim);
                }
            }
        }
    }

    /// Rewrites the IP packet `ip` as `t` says; whether it could.
    fn rewrite(t: &keepstate_engine::Translation, ip: &mut [u8]) -> bool {
        if t.is_error() {
            return nat::rewrite_icmp_error_outer(
                ip,
                t.src().map(|s| s.0),
                t.dst().map(|d| d.0),
                t.quoted_src(),
                t.quoted_dst(),
            )
            .is_ok();
        }
        let moved = match t.ipv4() {
            Some(rw) => nat::rewrite_ipv4(ip, &rw),
            None => nat::rewrite_octets(ip, t.src_octets(), t.dst_octets()),
        };
        match (moved, t.tcp_seq()) {
            (Ok(()), Some((seq, ack))) => nat::rewrite_tcp_seq(ip, seq, ack).is_ok(),
            (r, _) => r.is_ok(),
        }
    }

    // The frame's own arguments, passed straight through from the entry points.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn judge(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        ingress: Ingress,
        la: Lookahead,
        nat: Option<&mut NatCtx<'_>>,
        d: &mut Decision,
    ) {
        let iface = match ingress {
            Ingress::Arrived(i) | Ingress::Seen(i) => Some(i),
            Ingress::Unknown | Ingress::Local => None,
        };
        let mut ctx = Ctx {
            topo: &self.topo,
            policy: &self.policy,
            nat,
            rules: &mut self.rules,
            flows: &mut self.flows,
            overload: &mut self.overload,
            conns: &mut self.conns,
            arrival_zone: None,
            // The firewall's own packets, and all packets when no forward is proxied, skip
            // the proxy.
            synthetic: self.synthetic || !self.proxies,
            synact: None,
            drop_invalid: self.policy.defaults.drop_invalid,
            accept_established: self.policy.defaults.accept_established,
            has_notrack: !self.policy.notrack.is_empty(),
            // Only a packet whose arrival is known can be checked.
            antispoof: self.checks_source
                && matches!(ingress, Ingress::Arrived(_) | Ingress::Seen(_)),
            ingress,
            now,
            notrack: None,
            spoofed: None,
            blocked_in: None,
            judged: None,
            placed: None,
        };
        // Field by field, in place (see `decide`).
        self.engine
            .process_ahead_into(now, link, data, wire_len, la, &mut ctx, &mut d.outcome);
        d.verdict = Verdict::Accept;
        d.by = None;
        d.chain = None;
        d.in_iface = iface;
        d.out_iface = None;
        d.notrack = ctx.notrack;
        d.log = None;
        d.scan = None;
        d.reply = false;
        d.translated = false;
        d.inject = false;
        let notrack = ctx.notrack;
        // Read where the hooks wrote it, field by field: a copy of the whole would read it
        // back in wide loads the processor cannot forward from those narrow stores.
        let judged = &mut ctx.judged;
        let spoofed = ctx.spoofed;
        let synact = ctx.synact;
        let outcome = &mut d.outcome;
        if let Some((reason, _)) = spoofed {
            outcome.reason = Some(reason);
        } else if ctx.blocked_in.is_some() {
            outcome.reason = Some(DropReason::SourceOverload);
        }
        if let (Some(DropReason::SourceConnLimit), Some(z)) = (outcome.reason, ctx.arrival_zone) {
            if let Some(j) = judged.as_mut() {
                j.judgement = Judgement {
                    verdict: Verdict::Drop,
                    by: Decider::ConnLimit(z),
                    log: None,
                    reply: false,
                };
            }
        }
        if outcome.reason == Some(DropReason::NatPortsExhausted) {
            if let Some(j) = judged.as_mut() {
                j.judgement = Judgement {
                    verdict: Verdict::Drop,
                    by: Decider::Nat,
                    log: None,
                    reply: false,
                };
            }
        }
        self.synact = synact;
        if notrack.is_some() {
            self.stats.notracked += 1;
        }
        if let Some(j) = judged {
            d.verdict = j.judgement.verdict;
            d.by = Some(j.judgement.by);
            d.chain = j.chain;
            d.in_iface = j.in_iface;
            d.out_iface = j.out_iface;
            d.log = j.judgement.log;
            if d.log.is_some() {
                self.stats.logged += 1;
            }
            if d.verdict != Verdict::Accept && outcome.reason.is_none() {
                outcome.reason = Some(policy_reason(j.judgement));
            }
            if let Verdict::Reject(code) = d.verdict {
                self.stats.rejected += 1;
                // The offender knows the packet as it sent it: answer that, not the
                // translated copy.
                let ip = data.get(usize::from(outcome.meta.link.ip_offset)..);
                // Refusing a packet it would have forwarded, a router answers from its own
                // address on the offender's side.
                let router = match (j.chain, j.in_iface, outcome.meta.src) {
                    (Some(Chain::Forward), Some(i), Some(src)) => self
                        .policy
                        .interfaces
                        .get(usize::from(i))
                        .and_then(|x| x.addrs.iter().find(|a| a.addr.is_ipv4() == src.is_ipv4()))
                        .map(|a| a.addr),
                    _ => None,
                };
                if let (true, Some(ip)) = (j.judgement.reply, ip) {
                    d.reply = reject::build_from(ip, code, router, &mut self.reply).is_ok();
                    if d.reply {
                        self.stats.replies += 1;
                    }
                }
            }
        }
        d.outcome.verdict = if d.verdict == Verdict::Accept {
            EngineVerdict::Accept
        } else {
            EngineVerdict::Drop
        };
        d.scan = self.scan(d, ingress, now);
        if let Some(s) = d.scan {
            self.stats.scans[s.index()] += 1;
        }
        let len = u64::from(d.outcome.meta.len);
        match d.verdict {
            Verdict::Accept => {
                self.stats.accepted += 1;
                self.stats.accepted_bytes += len;
            }
            _ => {
                self.stats.dropped += 1;
                self.stats.dropped_bytes += len;
            }
        }
    }

    /// Saves the connection table (see [`Engine::save_stamped`]): everything the policy
    /// keeps per connection lives in it (translations, SYN proxy sequence offsets, which
    /// connections count against their source), so nothing is added. `wall_clock` (Unix
    /// seconds) lets a restore take off the time the file spent on disk.
    pub fn save_state(
        &self,
        now: Time,
        wall_clock: Option<u64>,
        w: &mut impl std::io::Write,
    ) -> std::io::Result<usize> {
        self.engine.save_stamped(now, wall_clock, w)
    }

    /// Restores a table [`Firewall::save_state`] wrote, into this firewall's engine, and
    /// brings the policy's own books in line with it: the NAT ports and endpoint-independent
    /// mappings restored connections hold are taken again, and sources the policy limits
    /// (`src_conn_max`) count their restored connections. Restored connections are not
    /// judged again by the rules (as netfilter keeps its table across a rule change); they
    /// keep the translation they had, even if the policy now translates differently. Not
    /// restored: handshakes a SYN proxy was in the middle of (the client retries), rate
    /// limit and scan detection state.
    pub fn restore_state(
        &mut self,
        now: Time,
        wall_clock: Option<u64>,
        r: &mut impl std::io::Read,
    ) -> Result<keepstate_engine::RestoreReport, keepstate_engine::RestoreError> {
        let books = self.nat.as_ref().is_some_and(|n| n.books);
        let opts = keepstate_engine::RestoreOptions {
            wall_clock,
            counted: self.conns.any,
            nat_reports: books,
        };
        let report = self.engine.restore_with(now, r, &opts)?;
        if let Some(nat) = self.nat.as_mut().filter(|n| n.books) {
            for m in &report.nat_mappings {
                nat.opened(m.proto, m.inside, m.outside, m.endpoint_independent);
            }
        }
        // The count is one per source across the zones that limit; the zone only gives the
        // limit, so the most generous one loses no restored connection.
        let zone = (0..self.policy.zones.len())
            .filter_map(|z| {
                let max = self.policy.zones.get(z)?.src_conn_max?;
                Some((ZoneId::try_from(z).ok()?, max))
            })
            .max_by_key(|&(_, max)| max)
            .map(|(z, _)| z);
        if let Some(z) = zone {
            for &src in &report.counted {
                let _ = self.conns.open(z, src);
            }
        }
        Ok(report)
    }
}

impl Firewall {
    /// Whether a judged packet that arrived from outside the firewall is a scan probe.
    fn scan(&mut self, d: &Decision, ingress: Ingress, now: Time) -> Option<Scan> {
        if ingress == Ingress::Local || d.verdict == Verdict::Accept {
            return None;
        }
        let m = &d.outcome.meta;
        if d.outcome.reason == Some(DropReason::TcpBadFlags) {
            return m.tcp_flags.and_then(Scan::of_flags);
        }
        // A refused attempt to open something: a SYN, or a UDP datagram.
        let opening = match m.proto {
            Some(keepstate_engine::wire::PROTO_TCP) => {
                m.tcp_flags.is_some_and(|f| f & 0x12 == 0x02)
            }
            Some(keepstate_engine::wire::PROTO_UDP) => true,
            _ => false,
        };
        let refused = matches!(
            d.by,
            Some(Decider::Rule(_) | Decider::ZonePolicy { .. } | Decider::SynFlood(_))
        );
        if d.outcome.state != CtState::New || !opening || !refused {
            return None;
        }
        let (src, port) = (m.src?, m.dport?);
        self.scans.refused(src, port, now).then_some(Scan::Ports)
    }
}

/// The drop reason for a policy decision on a packet the engine found nothing wrong with.
fn policy_reason(j: Judgement) -> DropReason {
    match (j.by, j.verdict) {
        (Decider::Nat, _) => DropReason::NatPortsExhausted,
        (Decider::SynFlood(_), _) => DropReason::SynFlood,
        (Decider::UdpFlood(_), _) => DropReason::UdpFlood,
        (Decider::IcmpFlood(_), _) => DropReason::IcmpFlood,
        (Decider::Overload(_), _) => DropReason::SourceOverload,
        (Decider::ConnLimit(_), _) => DropReason::SourceConnLimit,
        (Decider::SynProxy(_), _) => DropReason::SynProxy,
        (Decider::ZonePolicy { .. }, _) => DropReason::ZonePolicy,
        (Decider::NoZone, _) => DropReason::NoZone,
        (_, Verdict::Reject(_)) => DropReason::RuleReject,
        _ => DropReason::RuleDrop,
    }
}

#[derive(Clone, Copy)]
struct Judged {
    judgement: Judgement,
    chain: Option<Chain>,
    in_iface: Option<IfaceId>,
    out_iface: Option<IfaceId>,
}

/// What translating an accepted packet needs from judging it.
#[derive(Clone, Copy)]
struct Pending {
    /// The engine's count of translated connections before the packet.
    created: u64,
    /// With endpoint-independent bookkeeping on: the new connection's source NAT asked, and
    /// whether its mapping is endpoint-independent.
    opened: Option<(PortAsk, bool)>,
}

/// NAT's part in judging one packet.
struct NatCtx<'a> {
    nat: &'a mut Nat,
    /// The translation asked for the connection this packet opens.
    plan: Option<NatRequest>,
    /// What candidate source ports are checked for.
    ask: Option<PortAsk>,
}

/// The policy's view of the packet being processed, lent to the engine as its hooks.
struct Ctx<'a, 'n> {
    topo: &'a Topology,
    policy: &'a Policy,
    nat: Option<&'a mut NatCtx<'n>>,
    rules: &'a mut Ruleset,
    flows: &'a mut NewFlowLimits,
    overload: &'a mut Overload,
    conns: &'a mut SourceConns,
    /// The zone a new connection's first packet arrived from, once the filter knows it.
    arrival_zone: Option<ZoneId>,
    /// No SYN proxy for this packet: it is the firewall's own, or no forward is proxied.
    synthetic: bool,
    /// What the SYN proxy is to do with the packet.
    synact: Option<SynAct>,
    drop_invalid: bool,
    accept_established: bool,
    has_notrack: bool,
    /// Some zone checks where its packets come from.
    antispoof: bool,
    ingress: Ingress,
    now: Time,
    notrack: Option<u32>,
    /// The reverse-path check refused the packet: why, and the zone it arrived in.
    spoofed: Option<(DropReason, ZoneId)>,
    /// The packet's source is blocked in this zone for overload.
    blocked_in: Option<ZoneId>,
    judged: Option<Judged>,
    /// The packet's place, once the raw hook has worked it out.
    placed: Option<Place>,
}

/// Where a packet is in the firewall: chain and interfaces.
#[derive(Clone, Copy)]
struct Place {
    chain: Chain,
    in_iface: Option<IfaceId>,
    out_iface: Option<IfaceId>,
}

impl Ctx<'_, '_> {
    fn place(&self, src: IpAddr, dst: IpAddr) -> Place {
        let arrived = match self.ingress {
            Ingress::Arrived(i) => Some(i),
            Ingress::Seen(i) if !self.topo.is_local(src) => Some(i),
            Ingress::Unknown if !self.topo.is_local(src) => self.topo.route(src),
            _ => None,
        };
        let Some(in_iface) = arrived else {
            return Place {
                chain: Chain::Output,
                in_iface: None,
                out_iface: self.topo.route(dst),
            };
        };
        if self.topo.is_local(dst) {
            Place {
                chain: Chain::Input,
                in_iface: Some(in_iface),
                out_iface: None,
            }
        } else {
            Place {
                chain: Chain::Forward,
                in_iface: Some(in_iface),
                out_iface: self.topo.route(dst),
            }
        }
    }

    /// Records a decision taken with the packet's place known.
    fn decide_at(&mut self, judgement: Judgement, place: &Place) -> EngineVerdict {
        self.judged = Some(Judged {
            judgement,
            chain: Some(place.chain),
            in_iface: place.in_iface,
            out_iface: place.out_iface,
        });
        if judgement.verdict == Verdict::Accept {
            EngineVerdict::Accept
        } else {
            EngineVerdict::Drop
        }
    }

    /// Records a decision taken before zones and routes are worked out.
    fn decide_early(&mut self, verdict: Verdict, by: Decider) -> EngineVerdict {
        self.judged = Some(Judged {
            judgement: Judgement {
                verdict,
                by,
                log: None,
                reply: false,
            },
            chain: None,
            in_iface: match self.ingress {
                Ingress::Arrived(i) | Ingress::Seen(i) => Some(i),
                Ingress::Unknown | Ingress::Local => None,
            },
            out_iface: None,
        });
        if verdict == Verdict::Accept {
            EngineVerdict::Accept
        } else {
            EngineVerdict::Drop
        }
    }

    /// A TCP packet with no connection, to a port forward with `synproxy`: the proxy handles
    /// it (a SYN is answered with a cookie, an ACK's cookie checked) and it goes no further.
    fn synproxy_check(&mut self, out: &Outcome, v: &View) -> Option<Judgement> {
        if self.synthetic
            || v.proto != keepstate_engine::wire::PROTO_TCP
            || out.dnat
            || !matches!(out.state, CtState::New | CtState::Invalid)
        {
            return None;
        }
        let (i, _, hairpin) = translate::port_forward(
            self.policy,
            self.topo,
            v.in_zone?,
            v.proto,
            v.src,
            v.dst,
            v.dport?,
        )?;
        if hairpin.is_some() || !self.policy.port_forwards.get(i)?.synproxy {
            return None;
        }
        let flags = v.tcp_flags?;
        self.synact = match flags & 0x17 {
            0x02 => Some(SynAct::Answer),
            0x10 => Some(SynAct::Check),
            _ => None,
        };
        Some(Judgement {
            verdict: Verdict::Drop,
            by: Decider::SynProxy(u32::try_from(i).ok()?),
            log: None,
            reply: false,
        })
    }

    /// The flood defences for a new connection, before any rule (fw4's syn_flood chain, pf's
    /// `max-src-conn-rate`): `Some` with the judgement when the packet is refused, so a
    /// flood never reaches the rules or the table.
    fn flood_check(&mut self, v: &View, icmp_query: bool) -> Option<Judgement> {
        let z = v.in_zone?;
        let flow = match v.proto {
            keepstate_engine::wire::PROTO_TCP if v.tcp_flags.is_some_and(|f| f & 0x12 == 0x02) => {
                Flow::Tcp
            }
            keepstate_engine::wire::PROTO_UDP => Flow::Udp,
            keepstate_engine::wire::PROTO_ICMP | keepstate_engine::wire::PROTO_ICMPV6
                if icmp_query =>
            {
                Flow::Icmp
            }
            _ => return None,
        };
        let by = if !self.flows.allow(flow, v.chain, z, self.now) {
            match flow {
                Flow::Tcp => Decider::SynFlood(z),
                Flow::Udp => Decider::UdpFlood(z),
                Flow::Icmp => Decider::IcmpFlood(z),
            }
        } else if v.chain != Chain::Output
            && self.overload.any
            && !self.overload.new_connection(z, v.src, self.now)
        {
            Decider::Overload(z)
        } else {
            return None;
        };
        Some(Judgement {
            verdict: Verdict::Drop,
            by,
            log: None,
            reply: false,
        })
    }

    /// The reverse-path check of the zone a packet arrived in: `Some` with the reason and
    /// zone when the zone checks and the source cannot have come from there.
    fn spoofed(&self, m: &PacketMeta) -> Option<(DropReason, ZoneId)> {
        let src = m.src?;
        let iface = match self.ingress {
            Ingress::Arrived(i) => i,
            // A capture that does not record direction: from our own address, it was sent.
            Ingress::Seen(i) if !self.topo.is_local(src) => i,
            _ => return None,
        };
        let zone = self.topo.zone_of(iface);
        let z = self.policy.zones.get(usize::from(zone))?;
        if z.drop_bogons && antispoof::is_bogon(src) {
            return Some((DropReason::BogonSource, zone));
        }
        if !z.antispoof {
            return None;
        }
        match antispoof::classify(src, m) {
            antispoof::Source::Martian => return Some((DropReason::MartianSource, zone)),
            antispoof::Source::LinkScoped => return None,
            antispoof::Source::Routable => {}
        }
        if self.topo.is_local(src) || self.topo.route(src) != Some(iface) {
            return Some((DropReason::SpoofedSource, zone));
        }
        None
    }

    /// The zone a packet arrived in, when its source is blocked there for overload.
    fn blocked(&mut self, m: &PacketMeta) -> Option<ZoneId> {
        let src = m.src?;
        let iface = match self.ingress {
            Ingress::Arrived(i) => Some(i),
            Ingress::Seen(i) if !self.topo.is_local(src) => Some(i),
            Ingress::Unknown if !self.topo.is_local(src) => self.topo.route(src),
            _ => None,
        }?;
        let zone = self.topo.zone_of(iface);
        self.overload
            .is_blocked(zone, src, self.now)
            .then_some(zone)
    }

    /// Destination NAT for a connection's first packet: a port forward (accepted without a
    /// rule, like `ct status dnat accept`) or a 1:1 NAT's outside address (left to the
    /// rules). Rewrites the view to the inside address and re-places it; returns the
    /// forward's judgement.
    fn plan_dnat(&mut self, v: &mut View, place: &mut Place) -> Option<Judgement> {
        // Most routers forward no ports and map no host 1:1: a new connection then skips the
        // search below (about 80 instructions).
        if self.policy.port_forwards.is_empty() && self.policy.one_to_one.is_empty() {
            return None;
        }
        let in_zone = v.in_zone?;
        let nc = self.nat.as_mut()?;
        let (to, hairpin, judgement) = if let Some((i, to, hairpin)) = v.dport.and_then(|p| {
            translate::port_forward(self.policy, self.topo, in_zone, v.proto, v.src, v.dst, p)
        }) {
            let j = Judgement {
                verdict: Verdict::Accept,
                by: Decider::PortForward(u32::try_from(i).unwrap_or(u32::MAX)),
                log: None,
                reply: false,
            };
            (to, hairpin, Some(j))
        } else {
            let a = translate::one_to_one_inbound(self.policy, Some(in_zone), v.dst)?;
            ((a, v.dport.unwrap_or(0)), None, None)
        };
        if to.0.is_ipv4() != v.dst.is_ipv4() {
            return None;
        }
        nc.plan = Some(NatRequest {
            dnat: Some(to),
            snat: hairpin.map(|addr| SnatRequest {
                addr,
                preferred: None,
                ask: false,
                report: false,
                endpoint_independent: false,
            }),
            ports: nc.nat.ports,
        });
        v.dst = to.0;
        if v.dport.is_some() {
            v.dport = Some(to.1);
        }
        *place = self.place(v.src, v.dst);
        v.chain = place.chain;
        v.out_iface = place.out_iface;
        v.out_zone = self.zone(place.out_iface);
        judgement
    }

    /// Source NAT (static SNAT, 1:1 NAT or masquerade) for a new connection leaving through
    /// `out_iface`, added to the plan.
    fn plan_snat(&mut self, v: &View, icmp_id: Option<u16>, out_iface: Option<IfaceId>) {
        let Some(nc) = self.nat.as_mut() else {
            return;
        };
        if nc.plan.is_some_and(|p| p.snat.is_some()) {
            return;
        }
        let Some(out) = out_iface.and_then(|i| self.policy.interfaces.get(usize::from(i))) else {
            return;
        };
        let masq = out.addrs.iter().find(|n| n.addr.is_ipv4()).map(|n| n.addr);
        let Some((to, mapping)) = translate::source_for(self.policy, out.zone, v.src, masq) else {
            return;
        };
        let eim = mapping == Mapping::EndpointIndependent && Nat::maps_endpoint(v.proto);
        // An ICMP query's identifier plays the port.
        let inside = (v.src, v.sport.or(icmp_id).unwrap_or(0));
        let preferred = if eim {
            nc.nat.eim_port(v.proto, inside, to)
        } else {
            None
        };
        let books = nc.nat.books;
        if books {
            nc.ask = Some(PortAsk {
                proto: v.proto,
                inside,
                fresh_eim: eim && preferred.is_none(),
            });
        }
        let snat = SnatRequest {
            addr: to,
            preferred,
            ask: books,
            report: books,
            endpoint_independent: eim,
        };
        let ports = nc.nat.ports;
        let plan = nc.plan.get_or_insert(NatRequest {
            dnat: None,
            snat: None,
            ports,
        });
        plan.snat = Some(snat);
    }

    fn zone(&self, iface: Option<IfaceId>) -> Option<ZoneId> {
        iface.map(|i| self.topo.zone_of(i))
    }

    // Inlined: returned through memory, the view was written field by field and then
    // read back whole by the caller, loads the processor cannot forward.
    #[inline(always)]
    fn view(&self, m: &PacketMeta, state: CtState, out: &Outcome) -> Option<(View, Place)> {
        let (Some(family), Some(proto), Some(src), Some(dst)) = (m.family, m.proto, m.src, m.dst)
        else {
            return None;
        };
        // Addresses and ingress do not change between the raw and filter hooks.
        let p = self.placed.unwrap_or_else(|| self.place(src, dst));
        let v = View {
            chain: p.chain,
            in_zone: self.zone(p.in_iface),
            out_zone: self.zone(p.out_iface),
            in_iface: p.in_iface,
            out_iface: p.out_iface,
            family,
            proto,
            src,
            dst,
            sport: m.sport,
            dport: m.dport,
            icmp_type: m.icmp_type,
            icmp_code: m.icmp_code,
            tcp_flags: m.tcp_flags,
            state,
            dir: out.dir,
            len: m.len,
            now: self.now,
        };
        Some((v, p))
    }
}

impl Hooks for Ctx<'_, '_> {
    fn raw(&mut self, meta: &PacketMeta) -> bool {
        if self.antispoof {
            if let Some(s) = self.spoofed(meta) {
                // Refused before tracking, as `rp_filter` and nftables' `fib saddr` checks
                // in prerouting are: the table never sees it.
                self.spoofed = Some(s);
                return true;
            }
        }
        if self.overload.any {
            if let Some(z) = self.blocked(meta) {
                // A blocked source's packets go nowhere, its open connections included
                // (pf's overload with `flush`), and never touch the table.
                self.blocked_in = Some(z);
                return true;
            }
        }
        if !self.has_notrack {
            return false;
        }
        let probe = Outcome {
            verdict: EngineVerdict::Accept,
            state: CtState::Untracked,
            dir: None,
            reason: None,
            dnat: false,
            meta: *meta,
        };
        let Some((v, place)) = self.view(meta, CtState::Untracked, &probe) else {
            return false;
        };
        self.placed = Some(place);
        self.notrack = self.rules.notrack(&v);
        self.notrack.is_some()
    }

    fn filter(&mut self, out: &Outcome) -> EngineVerdict {
        if let Some((_, zone)) = self.spoofed {
            return self.decide_early(Verdict::Drop, Decider::Antispoof(zone));
        }
        if let Some(zone) = self.blocked_in {
            return self.decide_early(Verdict::Drop, Decider::Overload(zone));
        }
        if out.reason == Some(DropReason::NatBypass) {
            return self.decide_early(Verdict::Drop, Decider::Nat);
        }
        // Most packets belong to known connections, and the first thing every chain does is
        // accept them: skip working out zones and routes for them.
        if self.accept_established && matches!(out.state, CtState::Established | CtState::Related) {
            return self.decide_early(Verdict::Accept, Decider::Established);
        }
        let Some((mut v, mut place)) = self.view(&out.meta, out.state, out) else {
            // No addresses: either not IP at all (ARP, LLDP: an IP firewall does not judge
            // them, as nftables' inet family does not see them), or IP too broken to read,
            // which is invalid and follows `drop_invalid`.
            if out.state == CtState::Invalid && self.drop_invalid {
                return self.decide_early(Verdict::Drop, Decider::DropInvalid);
            }
            return EngineVerdict::Accept;
        };
        if let Some(j) = self.synproxy_check(out, &v) {
            return self.decide_at(j, &place);
        }
        let opening = out.state == CtState::New && self.nat.is_some();
        let mut judgement = None;
        if opening && out.dnat {
            // A later packet of a connection a port forward opened, not yet answered.
            judgement = translate::forwarded_by(self.policy, v.in_zone, v.proto, v.dst, v.dport)
                .map(|i| Judgement {
                    verdict: Verdict::Accept,
                    by: Decider::PortForward(u32::try_from(i).unwrap_or(u32::MAX)),
                    log: None,
                    reply: false,
                });
        } else if opening {
            judgement = self.plan_dnat(&mut v, &mut place);
        }
        if out.state == CtState::New {
            self.arrival_zone = v.in_zone;
            if let Some(j) = self.flood_check(&v, out.meta.icmp_id.is_some()) {
                return self.decide_at(j, &place);
            }
        }
        let judgement = judgement.unwrap_or_else(|| self.rules.evaluate(&v));
        if opening && judgement.verdict == Verdict::Accept && place.chain == Chain::Forward {
            self.plan_snat(&v, out.meta.icmp_id, place.out_iface);
        }
        self.decide_at(judgement, &place)
    }

    fn admit(&mut self, out: &Outcome) -> Admit {
        if !self.conns.any {
            return Admit::Keep;
        }
        let (Some(z), Some(src)) = (self.arrival_zone, out.meta.src) else {
            return Admit::Keep;
        };
        match self.conns.open(z, src) {
            None => Admit::Keep,
            Some(true) => Admit::KeepCounted,
            Some(false) => Admit::Refuse(DropReason::SourceConnLimit),
        }
    }

    fn nat(&mut self, _out: &Outcome) -> Option<&NatRequest> {
        self.nat.as_ref()?.plan.as_ref()
    }

    fn nat_port_usable(&mut self, _proto: u8, addr: IpAddr, port: u16) -> bool {
        let Some(nc) = self.nat.as_ref() else {
            return true;
        };
        match &nc.ask {
            Some(a) => nc.nat.port_usable(a, addr, port),
            None => true,
        }
    }
}
