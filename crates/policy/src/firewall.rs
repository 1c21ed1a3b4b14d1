//! The firewall: the engine and a compiled policy together. Bytes, `now` and the ingress
//! interface in; verdict, connection state, deciding rule and (for reject) an answer out.
//!
//! The order is netfilter's: notrack rules before the state table (raw), then tracking, then
//! the filter rules; a new connection whose first packet the filter refuses never enters the
//! table.

use core::net::IpAddr;

use keepstate_engine::{
    Config, Conn, CtState, DropReason, Engine, Hooks, L4Tuple, LinkType, Outcome, PacketMeta, Time,
    Tuple, Verdict as EngineVerdict,
};

use crate::model::{IfaceId, Policy, ZoneId};
use crate::nat::{BindingId, Tuple5};
use crate::reject;
use crate::ruleset::{Chain, Decider, Judgement, Ruleset, Verdict, View};
use crate::topology::Topology;
use crate::translate::{self, headers, Nat, NatStats, Pre, Way};

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
    /// Packets a `reject` decided (answered or not).
    pub rejected: u64,
    /// Reject answers built.
    pub replies: u64,
    /// Packets a notrack rule exempted from tracking.
    pub notracked: u64,
    /// Log requests that passed the log limit.
    pub logged: u64,
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
    /// A reject answer is ready in [`Firewall::reply`].
    pub reply: bool,
    /// NAT rewrote the packet: [`Firewall::frame`] holds it as it leaves.
    pub translated: bool,
    /// The addressing as the packet arrived, when NAT changed it before tracking
    /// (`outcome.meta` is what tracking and rules saw).
    pub arrived: Option<Tuple5>,
    /// The addressing as the packet leaves, when NAT changed it.
    pub leaves: Option<Tuple5>,
}

pub struct Firewall {
    engine: Engine,
    policy: Policy,
    topo: Topology,
    rules: Ruleset,
    stats: FirewallStats,
    reply: Vec<u8>,
    /// Present when the policy masquerades or forwards ports.
    nat: Option<Nat>,
    /// The frame as it leaves, when NAT rewrote it.
    frame: Vec<u8>,
}

impl Firewall {
    /// Builds the firewall. `base` supplies what the policy file does not set (hash key,
    /// table limit from the host's memory); the policy's `[tracking]` settings override it.
    pub fn new(policy: Policy, base: Config) -> Firewall {
        let t = &policy.tracking;
        let key = base.hash_key;
        let cfg = Config {
            max_connections: t.max_connections.unwrap_or(base.max_connections),
            timeouts: t.timeouts.clone(),
            tcp_loose: t.tcp_loose.unwrap_or(base.tcp_loose),
            tcp_liberal: t.tcp_liberal.unwrap_or(base.tcp_liberal),
            verify_checksums: t.verify_checksums.unwrap_or(base.verify_checksums),
            hash_key: key,
        };
        let nat = policy.uses_nat().then(|| Nat::new(&policy, key));
        let mut fw = Firewall {
            engine: Engine::new(cfg),
            topo: Topology::new(&policy),
            // Per-source limit tables hash addresses an attacker chooses: key them secretly.
            rules: Ruleset::with_key(&policy, key),
            policy,
            stats: FirewallStats::default(),
            reply: Vec::new(),
            nat: None,
            frame: Vec::new(),
        };
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

    /// NAT counters, when the policy translates.
    pub fn nat_stats(&self) -> Option<&NatStats> {
        self.nat.as_ref().map(|n| &n.stats)
    }

    /// Live NAT bindings.
    pub fn nat_bindings(&self) -> usize {
        self.nat.as_ref().map_or(0, |n| n.table.len())
    }

    /// The connection table as `conntrack -L` shows it: for translated connections the
    /// original tuple as the first packet arrived and the reply tuple as replies arrive
    /// (addressed to the masquerading address, or from a port forward's server).
    pub fn connections(&self) -> Vec<Conn> {
        self.engine
            .connections()
            .map(|c| match &self.nat {
                Some(nat) => with_nat(nat, c),
                None => c,
            })
            .collect()
    }

    /// How traces and logs name what decided.
    pub fn describe(&self, by: Decider) -> String {
        self.rules.describe(by, &self.policy)
    }

    /// Judges one frame, translating it where the policy says so.
    pub fn process(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        ingress: Ingress,
    ) -> Decision {
        let Some(mut nat) = self.nat.take() else {
            return self.judge(now, link, data, data, wire_len, ingress, None);
        };
        nat.sweep(&mut self.engine, now);
        let mut frame = core::mem::take(&mut self.frame);
        let h = headers::read(link, data);
        let pre = match &h {
            Some(h) => {
                let in_zone = match ingress {
                    Ingress::Arrived(i) | Ingress::Seen(i) => Some(i),
                    Ingress::Unknown if !self.topo.is_local(h.tuple.src) => {
                        self.topo.route(h.tuple.src)
                    }
                    _ => None,
                }
                .map(|i| self.topo.zone_of(i));
                nat.prerouting(&self.policy, &self.topo, in_zone, h, data, &mut frame, now)
            }
            None => Pre::default(),
        };
        let created = self.engine.stats().created;
        let mut nc = NatCtx {
            middle: pre.middle,
            has_binding: pre.binding.is_some(),
            port_forward: pre.port_forward,
            new_binding: None,
            exhausted: false,
            nat: &mut nat,
        };
        let input: &[u8] = if pre.rewritten { &frame } else { data };
        let mut d = self.judge(now, link, input, data, wire_len, ingress, Some(&mut nc));
        let new_binding = nc.new_binding;
        let accepted = d.verdict == Verdict::Accept;
        let mut binding = pre.binding;
        if let Some(id) = pre.tentative {
            let opened = self.engine.stats().created > created;
            if accepted && opened && d.outcome.state == CtState::New {
                nat.confirm(id);
            } else {
                nat.abandon(id);
                binding = None;
            }
        }
        if let Some(id) = new_binding {
            binding = Some((id, Way::Original));
        }
        let mut translated = pre.rewritten;
        let mut new_src = None;
        if let (true, Some((id, way)), Some(h)) = (accepted, binding, &h) {
            new_src = nat.postrouting(id, way, h, data, &mut frame, translated);
            translated |= new_src.is_some();
        } else if let (true, None, Some(h)) = (accepted, binding, &h) {
            if h.quoted.is_some() && !translated && nat.error_outbound(h, data, &mut frame) {
                translated = true;
                new_src = headers::read(link, &frame).map(|x| (x.tuple.src, x.tuple.sport));
            }
        }
        if translated && accepted {
            d.translated = true;
            d.arrived = pre.arrived.or(h.map(|h| h.tuple));
            // As it leaves: what tracking saw, with the source postrouting gave it.
            d.leaves = pre.middle.map(|mut t| {
                if let Some((a, p)) = new_src {
                    t.src = a;
                    t.sport = p;
                }
                t
            });
        }
        self.frame = frame;
        self.nat = Some(nat);
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        arrived: &[u8],
        wire_len: usize,
        ingress: Ingress,
        nat: Option<&mut NatCtx<'_>>,
    ) -> Decision {
        let iface = match ingress {
            Ingress::Arrived(i) | Ingress::Seen(i) => Some(i),
            Ingress::Unknown | Ingress::Local => None,
        };
        let mut ctx = Ctx {
            topo: &self.topo,
            policy: &self.policy,
            nat,
            rules: &mut self.rules,
            drop_invalid: self.policy.defaults.drop_invalid,
            accept_established: self.policy.defaults.accept_established,
            has_notrack: !self.policy.notrack.is_empty(),
            ingress,
            now,
            notrack: None,
            judged: None,
            nat_bypass: false,
            placed: None,
        };
        let mut outcome = self
            .engine
            .process_hooked(now, link, data, wire_len, &mut ctx);
        let notrack = ctx.notrack;
        let judged = ctx.judged;
        let nat_bypass = ctx.nat_bypass;
        let mut d = Decision {
            outcome,
            verdict: Verdict::Accept,
            by: None,
            chain: None,
            in_iface: iface,
            out_iface: None,
            notrack,
            log: None,
            reply: false,
            translated: false,
            arrived: None,
            leaves: None,
        };
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
            if nat_bypass {
                outcome.reason = Some(DropReason::NatBypass);
            } else if d.verdict != Verdict::Accept && outcome.reason.is_none() {
                outcome.reason = Some(policy_reason(j.judgement));
            }
            if let Verdict::Reject(code) = d.verdict {
                self.stats.rejected += 1;
                // The offender knows the packet as it sent it: answer that, not the
                // translated copy.
                let ip = arrived.get(usize::from(outcome.meta.link.ip_offset)..);
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
        outcome.verdict = if d.verdict == Verdict::Accept {
            EngineVerdict::Accept
        } else {
            EngineVerdict::Drop
        };
        d.outcome = outcome;
        match d.verdict {
            Verdict::Accept => self.stats.accepted += 1,
            _ => self.stats.dropped += 1,
        }
        d
    }
}

/// The drop reason for a policy decision on a packet the engine found nothing wrong with.
fn policy_reason(j: Judgement) -> DropReason {
    match (j.by, j.verdict) {
        (Decider::Nat, _) => DropReason::NatPortsExhausted,
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

/// NAT's part in judging one packet.
struct NatCtx<'a> {
    nat: &'a mut Nat,
    /// The tuple tracking sees (after prerouting).
    middle: Option<Tuple5>,
    has_binding: bool,
    port_forward: Option<u32>,
    /// Masquerade bound the connection this packet opened.
    new_binding: Option<BindingId>,
    exhausted: bool,
}

/// The policy's view of the packet being processed, lent to the engine as its hooks.
struct Ctx<'a, 'n> {
    topo: &'a Topology,
    policy: &'a Policy,
    nat: Option<&'a mut NatCtx<'n>>,
    rules: &'a mut Ruleset,
    drop_invalid: bool,
    accept_established: bool,
    has_notrack: bool,
    ingress: Ingress,
    now: Time,
    notrack: Option<u32>,
    judged: Option<Judged>,
    nat_bypass: bool,
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

    /// A reply that reached a masqueraded connection without having been translated back: it
    /// was addressed to the inside host directly. The state table tracks the inside tuple,
    /// so only this check keeps such packets out, as netfilter's reply tuple does.
    fn bypasses_nat(&self, out: &Outcome) -> bool {
        let Some(nc) = self.nat.as_ref() else {
            return false;
        };
        if nc.has_binding || out.dir != Some(keepstate_engine::Direction::Reply) {
            return false;
        }
        let Some(m) = nc.middle else {
            return false;
        };
        let original = Tuple5 {
            proto: m.proto,
            src: m.dst,
            sport: m.dport,
            dst: m.src,
            dport: m.sport,
        };
        nc.nat
            .by_middle(&original)
            .and_then(|id| nc.nat.table.get(id))
            .is_some_and(|b| {
                (b.original.src, b.original.sport) != (b.translated.src, b.translated.sport)
            })
    }

    /// Binds a new connection leaving through a zone with source NAT (static SNAT, 1:1 NAT
    /// or masquerade) to its new source. `Err` when no port is free.
    fn masquerade(&mut self, v: &View, out_iface: Option<IfaceId>) -> Result<(), ()> {
        let Some(nc) = self.nat.as_mut() else {
            return Ok(());
        };
        let Some(middle) = nc.middle else {
            return Ok(());
        };
        if nc.has_binding || nc.nat.by_middle(&middle).is_some() {
            return Ok(());
        }
        let Some(out) = out_iface.and_then(|i| self.policy.interfaces.get(usize::from(i))) else {
            return Ok(());
        };
        let masq = out.addrs.iter().find(|n| n.addr.is_ipv4()).map(|n| n.addr);
        let Some((to, mapping)) = translate::source_for(self.policy, out.zone, v.src, masq) else {
            return Ok(());
        };
        match nc.nat.masquerade(&middle, to, mapping, self.now) {
            Ok(id) => {
                nc.new_binding = Some(id);
                Ok(())
            }
            Err(_) => {
                nc.exhausted = true;
                Err(())
            }
        }
    }

    fn zone(&self, iface: Option<IfaceId>) -> Option<ZoneId> {
        iface.map(|i| self.topo.zone_of(i))
    }

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
        if !self.has_notrack {
            return false;
        }
        let probe = Outcome {
            verdict: EngineVerdict::Accept,
            state: CtState::Untracked,
            dir: None,
            reason: None,
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
        if self.bypasses_nat(out) {
            self.nat_bypass = true;
            return self.decide_early(Verdict::Drop, Decider::Nat);
        }
        // Most packets belong to known connections, and the first thing every chain does is
        // accept them: skip working out zones and routes for them.
        if self.accept_established && matches!(out.state, CtState::Established | CtState::Related) {
            return self.decide_early(Verdict::Accept, Decider::Established);
        }
        let Some((v, place)) = self.view(&out.meta, out.state, out) else {
            // No addresses: either not IP at all (ARP, LLDP: an IP firewall does not judge
            // them, as nftables' inet family does not see them), or IP too broken to read,
            // which is invalid and follows `drop_invalid`.
            if out.state == CtState::Invalid && self.drop_invalid {
                return self.decide_early(Verdict::Drop, Decider::DropInvalid);
            }
            return EngineVerdict::Accept;
        };
        let forwarded = self.nat.as_ref().and_then(|n| n.port_forward);
        let mut judgement = match forwarded {
            // A connection a port forward opened is accepted without a rule.
            Some(i) if out.state == CtState::New => Judgement {
                verdict: Verdict::Accept,
                by: Decider::PortForward(i),
                log: None,
                reply: false,
            },
            _ => self.rules.evaluate(&v),
        };
        if judgement.verdict == Verdict::Accept
            && out.state == CtState::New
            && place.chain == Chain::Forward
        {
            if let Err(()) = self.masquerade(&v, place.out_iface) {
                judgement = Judgement {
                    verdict: Verdict::Drop,
                    by: Decider::Nat,
                    log: None,
                    reply: false,
                };
            }
        }
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
}

/// A connection snapshot with NAT applied to its tuples, as netfilter lists them.
fn with_nat(nat: &Nat, mut c: Conn) -> Conn {
    let ports = |l4: L4Tuple| match l4 {
        L4Tuple::Ports { sport, dport } => Some((sport, dport)),
        L4Tuple::Icmp { id, .. } => Some((id, id)),
        L4Tuple::None => Some((0, 0)),
    };
    let Some((sport, dport)) = ports(c.original.l4) else {
        return c;
    };
    let middle = Tuple5 {
        proto: c.proto,
        src: c.original.src,
        sport,
        dst: c.original.dst,
        dport,
    };
    let Some(b) = nat.by_middle(&middle).and_then(|id| nat.table.get(id)) else {
        return c;
    };
    let l4 = |t: &L4Tuple, s: u16, d: u16| match *t {
        L4Tuple::Ports { .. } => L4Tuple::Ports { sport: s, dport: d },
        L4Tuple::Icmp { ty, code, .. } => L4Tuple::Icmp { ty, code, id: s },
        L4Tuple::None => L4Tuple::None,
    };
    c.original = Tuple {
        src: b.original.src,
        dst: b.original.dst,
        l4: l4(&c.original.l4, b.original.sport, b.original.dport),
    };
    c.reply = Tuple {
        src: b.translated.dst,
        dst: b.translated.src,
        l4: l4(&c.reply.l4, b.translated.dport, b.translated.sport),
    };
    c
}
