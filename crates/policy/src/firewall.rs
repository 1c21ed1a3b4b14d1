//! The firewall: the engine and a compiled policy together. Bytes, `now` and the ingress
//! interface in; verdict, connection state, deciding rule and (for reject) an answer out.
//!
//! The order is netfilter's: notrack rules before the state table (raw), then tracking, then
//! the filter rules; a new connection whose first packet the filter refuses never enters the
//! table.

use core::net::IpAddr;

use keepstate_engine::{
    Config, CtState, DropReason, Engine, Hooks, LinkType, Outcome, PacketMeta, Time,
    Verdict as EngineVerdict,
};

use crate::model::{IfaceId, Policy, ZoneId};
use crate::reject;
use crate::ruleset::{Chain, Decider, Judgement, Ruleset, Verdict, View};
use crate::topology::Topology;

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
}

pub struct Firewall {
    engine: Engine,
    policy: Policy,
    topo: Topology,
    rules: Ruleset,
    stats: FirewallStats,
    reply: Vec<u8>,
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
        Firewall {
            engine: Engine::new(cfg),
            topo: Topology::new(&policy),
            // Per-source limit tables hash addresses an attacker chooses: key them secretly.
            rules: Ruleset::with_key(&policy, key),
            policy,
            stats: FirewallStats::default(),
            reply: Vec::new(),
        }
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

    /// How traces and logs name what decided.
    pub fn describe(&self, by: Decider) -> String {
        self.rules.describe(by, &self.policy)
    }

    /// Judges one frame.
    pub fn process(
        &mut self,
        now: Time,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        ingress: Ingress,
    ) -> Decision {
        let iface = match ingress {
            Ingress::Arrived(i) | Ingress::Seen(i) => Some(i),
            Ingress::Unknown | Ingress::Local => None,
        };
        let mut ctx = Ctx {
            topo: &self.topo,
            rules: &mut self.rules,
            drop_invalid: self.policy.defaults.drop_invalid,
            accept_established: self.policy.defaults.accept_established,
            has_notrack: !self.policy.notrack.is_empty(),
            ingress,
            now,
            notrack: None,
            judged: None,
        };
        let mut outcome = self
            .engine
            .process_hooked(now, link, data, wire_len, &mut ctx);
        let notrack = ctx.notrack;
        let judged = ctx.judged;
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
            if d.verdict != Verdict::Accept && outcome.reason.is_none() {
                outcome.reason = Some(policy_reason(j.judgement));
            }
            if let Verdict::Reject(code) = d.verdict {
                self.stats.rejected += 1;
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

/// The policy's view of the packet being processed, lent to the engine as its hooks.
struct Ctx<'a> {
    topo: &'a Topology,
    rules: &'a mut Ruleset,
    drop_invalid: bool,
    accept_established: bool,
    has_notrack: bool,
    ingress: Ingress,
    now: Time,
    notrack: Option<u32>,
    judged: Option<Judged>,
}

/// Where a packet is in the firewall: chain and interfaces.
struct Place {
    chain: Chain,
    in_iface: Option<IfaceId>,
    out_iface: Option<IfaceId>,
}

impl Ctx<'_> {
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

    fn zone(&self, iface: Option<IfaceId>) -> Option<ZoneId> {
        iface.map(|i| self.topo.zone_of(i))
    }

    fn view(&self, m: &PacketMeta, state: CtState, out: &Outcome) -> Option<(View, Place)> {
        let (Some(family), Some(proto), Some(src), Some(dst)) = (m.family, m.proto, m.src, m.dst)
        else {
            return None;
        };
        let p = self.place(src, dst);
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

impl Hooks for Ctx<'_> {
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
        let Some((v, _)) = self.view(meta, CtState::Untracked, &probe) else {
            return false;
        };
        self.notrack = self.rules.notrack(&v);
        self.notrack.is_some()
    }

    fn filter(&mut self, out: &Outcome) -> EngineVerdict {
        // Most packets belong to known connections, and the first thing every chain does is
        // accept them: skip working out zones and routes for them.
        if self.accept_established && matches!(out.state, CtState::Established | CtState::Related) {
            self.judged = Some(Judged {
                judgement: Judgement {
                    verdict: Verdict::Accept,
                    by: Decider::Established,
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
            return EngineVerdict::Accept;
        }
        let Some((v, place)) = self.view(&out.meta, out.state, out) else {
            // No addresses: either not IP at all (ARP, LLDP: an IP firewall does not judge
            // them, as nftables' inet family does not see them), or IP too broken to read,
            // which is invalid and follows `drop_invalid`.
            if out.state == CtState::Invalid && self.drop_invalid {
                self.judged = Some(Judged {
                    judgement: Judgement {
                        verdict: Verdict::Drop,
                        by: Decider::DropInvalid,
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
                return EngineVerdict::Drop;
            }
            return EngineVerdict::Accept;
        };
        let judgement = self.rules.evaluate(&v);
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
