//! A [`Policy`] compiled for per-packet evaluation, with OpenWrt fw4 / nftables semantics.
//!
//! A packet, described by a [`View`], is judged in this order:
//!
//! 1. `defaults.drop_invalid` and state `invalid`: drop ([`Decider::DropInvalid`]).
//! 2. `defaults.accept_established` and state `established` or `related`: accept
//!    ([`Decider::Established`]).
//! 3. The user rules of the packet's chain, in file order. A rule's chain follows from its
//!    zones: no `src` is an output rule (its `dest`, if any, must match the egress zone), no
//!    `dest` an input rule (its `src` must match the ingress zone), both a forward rule; a
//!    rule with neither is an output rule to anywhere. `"*"` matches any zone, an unknown one
//!    included. The first matching rule with a terminal action (accept, drop, reject)
//!    decides; `log` and `counter` rules count, log, and let evaluation go on. A rule with a
//!    `limit` matches only while its limiter allows (nftables' `limit rate`: over the rate the
//!    rule does not match and evaluation goes on); a rule counts a packet only when it
//!    matched, limit included (fw4 puts `counter` after `limit`).
//! 4. Forward chain: a `forwarding` from the ingress to the egress zone accepts.
//! 5. The zone's policy: input by the ingress zone's `input`, output by the egress zone's
//!    `output`, forward by the ingress zone's `forward`. Without that zone (unknown or not
//!    given): drop ([`Decider::NoZone`]).
//!
//! Details:
//!
//! - Port matches need the packet to have ports; ICMP type matches need protocol 1 (ICMP,
//!   for `v6: false`) or 58 (ICMPv6, `v6: true`); TCP flag matches need protocol 6 and flags.
//! - Address matches imply their family, as fw4 emits `ip`/`ip6` rules: a rule whose
//!   addresses are all IPv4 never matches IPv6 packets, negated or not. A match made only of
//!   empty sets leaves the family open.
//! - `reject` answers only while `defaults.reject_limit` allows ([`Judgement::reply`]); over
//!   the limit the verdict stays `Reject` but nothing is sent, so it is a plain drop.
//! - Logging (a `log` rule, or `log: true` on any rule that matched) passes
//!   `defaults.log_limit`; [`Judgement::log`] names the first rule whose log passed. Once one
//!   passed, later log rules of the same packet do not spend log tokens.
//! - Zone ids the policy does not have count as unknown zones.
//! - Notrack rules ([`Ruleset::notrack`]): a rule with `src` is matched against packets
//!   arriving from that zone (any chain but output, as in the raw table's prerouting hook); a
//!   rule without `src` against locally generated packets (chain output: raw output). They
//!   see the ingress zone and interface and header fields, never destination zone, egress
//!   interface, state or direction.
//!
//! Evaluation allocates nothing and never panics on packet contents; `ruleset/index.rs` says how
//! the candidate rules are found without scanning every rule.

mod compile;
mod index;

use crate::limit::{Limiter, DEFAULT_KEY, DEFAULT_PER_SOURCE_CAPACITY};
use crate::model::{Action, IfaceId, Policy, PolicyAction, RejectCode, ZoneId, ZoneSel};
use compile::{choose_keys, Compiler, Scope};
use core::net::IpAddr;
use index::{Classifier, Placement};
use keepstate_engine::{CtState, Direction, Family, Time};
use std::collections::HashMap;

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Maps for compiling only (their keys come from the configuration, not from packets).
fn new_map<K, V>() -> Map<K, V> {
    HashMap::with_hasher(ahash::RandomState::with_seeds(1, 2, 3, 4))
}

/// Netfilter's filter chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Chain {
    /// To the firewall itself.
    Input,
    /// From the firewall itself.
    Output,
    /// Through the firewall.
    Forward,
}

impl Chain {
    pub const fn name(self) -> &'static str {
        match self {
            Chain::Input => "input",
            Chain::Output => "output",
            Chain::Forward => "forward",
        }
    }
}

/// What the ruleset knows of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub chain: Chain,
    pub in_zone: Option<ZoneId>,
    pub out_zone: Option<ZoneId>,
    pub in_iface: Option<IfaceId>,
    pub out_iface: Option<IfaceId>,
    pub family: Family,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub tcp_flags: Option<u8>,
    pub state: CtState,
    pub dir: Option<Direction>,
    /// Bytes, for the counters.
    pub len: u32,
    pub now: Time,
}

/// What decided a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decider {
    DropInvalid,
    Established,
    /// Index into `policy.rules`.
    Rule(u32),
    /// Index into `policy.forwardings`.
    Forwarding(u32),
    ZonePolicy {
        zone: ZoneId,
        chain: Chain,
    },
    /// The zone whose policy applies is not known.
    NoZone,
    /// A new connection a port forward translated (index into `policy.port_forwards`):
    /// accepted without a rule, like nftables' `ct status dnat accept`.
    PortForward(u32),
    /// NAT could not translate the packet (`nat-ports-exhausted`).
    Nat,
    /// The arrival zone's reverse-path check (`spoofed-source`, `martian-source`).
    Antispoof(ZoneId),
    /// The arrival zone's SYN rate (`syn-flood`).
    SynFlood(ZoneId),
    /// The arrival zone's rate of new UDP flows (`udp-flood`).
    UdpFlood(ZoneId),
    /// The arrival zone's rate of new ICMP queries (`icmp-flood`).
    IcmpFlood(ZoneId),
    /// The source is over, or blocked for going over, its zone's `src_conn_limit`
    /// (`source-overload`).
    Overload(ZoneId),
    /// The source has as many connections open from the zone as `src_conn_max` allows
    /// (`source-conn-limit`).
    ConnLimit(ZoneId),
    /// A port forward's SYN proxy handled the packet (index into `policy.port_forwards`).
    SynProxy(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Reject(RejectCode),
}

impl Verdict {
    /// The name traces and logs use.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Reject(_) => "reject",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub by: Decider,
    /// Rule index of the first log action or log flag that fired and passed the log limit.
    pub log: Option<u32>,
    /// For `Reject`: the reject limit allowed an answer. False otherwise.
    pub reply: bool,
}

/// Packets and bytes a rule matched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    #[inline]
    fn add(&mut self, len: u32) {
        self.packets = self.packets.saturating_add(1);
        self.bytes = self.bytes.saturating_add(u64::from(len));
    }
}

#[derive(Clone, Copy, Debug)]
struct ZonePolicies {
    input: PolicyAction,
    output: PolicyAction,
    forward: PolicyAction,
}

/// Sizes of a compiled ruleset, for summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Distinct rule groups (chain and zone pair), filter rules.
    pub groups: usize,
    /// Rule references across the filter groups' indexes.
    pub references: usize,
    /// Prefix sets built (named sets in use, rules with many prefixes).
    pub sets: usize,
    /// Interval boundaries across those sets.
    pub set_boundaries: usize,
}

/// A compiled policy with its counters and limiters.
#[derive(Clone, Debug)]
pub struct Ruleset {
    drop_invalid: bool,
    accept_established: bool,
    filter: Classifier,
    notrack: Classifier,
    counters: Vec<Counter>,
    notrack_counters: Vec<Counter>,
    limiters: Vec<Limiter>,
    reject_limit: Limiter,
    log_limit: Limiter,
    /// (src, dest, index), sorted; of duplicates the first stays first.
    forwardings: Vec<(ZoneId, ZoneId, u32)>,
    zones: Vec<ZonePolicies>,
}

fn placement(src: Option<ZoneSel>, dest: Option<ZoneSel>) -> Placement {
    let z = |s: ZoneSel| match s {
        ZoneSel::Any => None,
        ZoneSel::Zone(z) => Some(z),
    };
    match (src, dest) {
        (None, d) => Placement {
            chain: Chain::Output,
            in_zone: None,
            out_zone: d.and_then(z),
        },
        (Some(s), None) => Placement {
            chain: Chain::Input,
            in_zone: z(s),
            out_zone: None,
        },
        (Some(s), Some(d)) => Placement {
            chain: Chain::Forward,
            in_zone: z(s),
            out_zone: z(d),
        },
    }
}

impl Ruleset {
    /// Compiles `p`; per-source limits hash with [`DEFAULT_KEY`].
    pub fn new(p: &Policy) -> Ruleset {
        Ruleset::with_key(p, DEFAULT_KEY)
    }

    /// Compiles `p`; per-source limits hash with the secret `key`.
    pub fn with_key(p: &Policy, key: [u64; 4]) -> Ruleset {
        let limiter = |l| Limiter::with_table(l, DEFAULT_PER_SOURCE_CAPACITY, key);

        let mut c = Compiler::new(p);
        let mut limiters = Vec::new();
        let mut rules = Vec::with_capacity(p.rules.len());
        let mut place = Vec::with_capacity(p.rules.len());
        for r in &p.rules {
            let li = r.limit.as_ref().map(|l| {
                limiters.push(limiter(l));
                u32::try_from(limiters.len() - 1).unwrap_or(u32::MAX)
            });
            rules.push(c.rule(&r.m, Scope::Filter, r.action, r.log, li));
            place.push(Some(placement(r.m.src, r.m.dest)));
        }
        let keys = choose_keys(p.rules.iter().map(|r| &r.m));
        let filter = Classifier::build(rules, c.tables, &place, &keys, p.zones.len());

        let mut c = Compiler::new(p);
        let mut rules = Vec::with_capacity(p.notrack.len());
        let mut place = Vec::with_capacity(p.notrack.len());
        for r in &p.notrack {
            rules.push(c.rule(&r.m, Scope::Notrack, Action::Accept, false, None));
            let z = |s: ZoneSel| match s {
                ZoneSel::Any => None,
                ZoneSel::Zone(z) => Some(z),
            };
            place.push(Some(match r.m.src {
                // Prerouting is filed as the input chain.
                Some(s) => Placement {
                    chain: Chain::Input,
                    in_zone: z(s),
                    out_zone: None,
                },
                None => Placement {
                    chain: Chain::Output,
                    in_zone: None,
                    out_zone: None,
                },
            }));
        }
        let keys = choose_keys(p.notrack.iter().map(|r| &r.m));
        let notrack = Classifier::build(rules, c.tables, &place, &keys, p.zones.len());

        let mut forwardings: Vec<(ZoneId, ZoneId, u32)> = p
            .forwardings
            .iter()
            .enumerate()
            .filter_map(|(i, f)| u32::try_from(i).ok().map(|i| (f.src, f.dest, i)))
            .collect();
        forwardings.sort_by_key(|&(s, d, _)| (s, d));
        forwardings.dedup_by_key(|&mut (s, d, _)| (s, d));

        Ruleset {
            drop_invalid: p.defaults.drop_invalid,
            accept_established: p.defaults.accept_established,
            filter,
            notrack,
            counters: vec![Counter::default(); p.rules.len()],
            notrack_counters: vec![Counter::default(); p.notrack.len()],
            limiters,
            reject_limit: limiter(&p.defaults.reject_limit),
            log_limit: limiter(&p.defaults.log_limit),
            forwardings,
            zones: p
                .zones
                .iter()
                .map(|z| ZonePolicies {
                    input: z.input,
                    output: z.output,
                    forward: z.forward,
                })
                .collect(),
        }
    }

    /// Judges a packet; counts it on every rule that matched and updates the limiters.
    pub fn evaluate(&mut self, v: &View) -> Judgement {
        let judged = |verdict, by| Judgement {
            verdict,
            by,
            log: None,
            reply: false,
        };
        if self.drop_invalid && v.state == CtState::Invalid {
            return judged(Verdict::Drop, Decider::DropInvalid);
        }
        if self.accept_established && matches!(v.state, CtState::Established | CtState::Related) {
            return judged(Verdict::Accept, Decider::Established);
        }

        let Ruleset {
            filter,
            counters,
            limiters,
            log_limit,
            ..
        } = self;
        let mut log = None;
        let decided = filter.scan(v.chain, v, |id, rule| {
            if let Some(l) = rule
                .limiter()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| limiters.get_mut(i))
            {
                if !l.allow(v.src, v.now) {
                    return None;
                }
            }
            if let Some(c) = usize::try_from(id).ok().and_then(|i| counters.get_mut(i)) {
                c.add(v.len);
            }
            if (rule.log || rule.action == Action::Log)
                && log.is_none()
                && log_limit.allow(v.src, v.now)
            {
                log = Some(id);
            }
            match rule.action {
                Action::Accept => Some((Verdict::Accept, id)),
                Action::Drop => Some((Verdict::Drop, id)),
                Action::Reject(code) => Some((Verdict::Reject(code), id)),
                Action::Log | Action::Counter => None,
            }
        });
        let (verdict, by) = match decided {
            Some((verdict, id)) => (verdict, Decider::Rule(id)),
            None => self.fallback(v),
        };
        let reply = matches!(verdict, Verdict::Reject(_)) && self.reject_limit.allow(v.src, v.now);
        Judgement {
            verdict,
            by,
            log,
            reply,
        }
    }

    /// Steps 4 and 5: forwardings, then the zone policy.
    fn fallback(&self, v: &View) -> (Verdict, Decider) {
        let zone =
            |z: Option<ZoneId>| z.and_then(|z| self.zones.get(usize::from(z)).map(|p| (z, *p)));
        if v.chain == Chain::Forward {
            if let (Some((i, _)), Some((o, _))) = (zone(v.in_zone), zone(v.out_zone)) {
                if let Ok(k) = self
                    .forwardings
                    .binary_search_by_key(&(i, o), |&(s, d, _)| (s, d))
                {
                    if let Some(&(_, _, f)) = self.forwardings.get(k) {
                        return (Verdict::Accept, Decider::Forwarding(f));
                    }
                }
            }
        }
        let (z, action) = match v.chain {
            Chain::Input => zone(v.in_zone).map(|(z, p)| (z, p.input)),
            Chain::Output => zone(v.out_zone).map(|(z, p)| (z, p.output)),
            Chain::Forward => zone(v.in_zone).map(|(z, p)| (z, p.forward)),
        }
        .unzip();
        let (Some(z), Some(action)) = (z, action) else {
            return (Verdict::Drop, Decider::NoZone);
        };
        let verdict = match action {
            PolicyAction::Accept => Verdict::Accept,
            PolicyAction::Drop => Verdict::Drop,
            PolicyAction::Reject => Verdict::Reject(RejectCode::default()),
        };
        (
            verdict,
            Decider::ZonePolicy {
                zone: z,
                chain: v.chain,
            },
        )
    }

    /// The first notrack rule matching the packet (ingress zone and interface and header
    /// fields only), counted; `None` if the packet is to be tracked.
    pub fn notrack(&mut self, v: &View) -> Option<u32> {
        let chain = match v.chain {
            Chain::Output => Chain::Output,
            Chain::Input | Chain::Forward => Chain::Input,
        };
        let id = self.notrack.scan(chain, v, |id, _| Some(id))?;
        if let Some(c) = usize::try_from(id)
            .ok()
            .and_then(|i| self.notrack_counters.get_mut(i))
        {
            c.add(v.len);
        }
        Some(id)
    }

    /// Per `policy.rules` index.
    pub fn counters(&self) -> &[Counter] {
        &self.counters
    }

    /// Per `policy.notrack` index.
    pub fn notrack_counters(&self) -> &[Counter] {
        &self.notrack_counters
    }

    /// Zeroes every counter.
    pub fn reset_counters(&mut self) {
        self.counters.fill(Counter::default());
        self.notrack_counters.fill(Counter::default());
    }

    /// How traces and messages name what decided: the rule's name or `rule #N`,
    /// `defaults.drop_invalid`, `defaults.established`, `forwarding lan->wan`,
    /// `zone wan input policy`, `no zone`.
    pub fn describe(&self, by: Decider, p: &Policy) -> String {
        let zone = |z: ZoneId| match p.zones.get(usize::from(z)) {
            Some(zone) => zone.name.clone(),
            None => format!("#{z}"),
        };
        match by {
            Decider::DropInvalid => "defaults.drop_invalid".into(),
            Decider::Established => "defaults.established".into(),
            Decider::Rule(i) => match usize::try_from(i) {
                Ok(i) => p.rule_label(i),
                Err(_) => format!("rule #{i}"),
            },
            Decider::Forwarding(i) => {
                match usize::try_from(i).ok().and_then(|i| p.forwardings.get(i)) {
                    Some(f) => format!("forwarding {}->{}", zone(f.src), zone(f.dest)),
                    None => format!("forwarding #{i}"),
                }
            }
            Decider::ZonePolicy { zone: z, chain } => {
                format!("zone {} {} policy", zone(z), chain.name())
            }
            Decider::NoZone => "no zone".into(),
            Decider::PortForward(i) => {
                let pf = usize::try_from(i).ok().and_then(|i| p.port_forwards.get(i));
                match pf.and_then(|f| f.name.as_deref()) {
                    Some(n) => format!("port forward {n}"),
                    None => format!("port forward #{}", u64::from(i) + 1),
                }
            }
            Decider::Nat => "nat".into(),
            Decider::Antispoof(z) => format!("zone {} antispoof", zone(z)),
            Decider::SynFlood(z) => format!("zone {} syn limit", zone(z)),
            Decider::UdpFlood(z) => format!("zone {} udp limit", zone(z)),
            Decider::IcmpFlood(z) => format!("zone {} icmp limit", zone(z)),
            Decider::Overload(z) => format!("zone {} overload", zone(z)),
            Decider::ConnLimit(z) => format!("zone {} src_conn_max", zone(z)),
            Decider::SynProxy(i) => {
                let pf = usize::try_from(i).ok().and_then(|i| p.port_forwards.get(i));
                match pf.and_then(|f| f.name.as_deref()) {
                    Some(n) => format!("synproxy {n}"),
                    None => format!("synproxy #{}", u64::from(i) + 1),
                }
            }
        }
    }

    /// Sizes of the compiled filter rules.
    pub fn stats(&self) -> Stats {
        let (groups, references) = self.filter.size();
        let sets = self.filter.tables.sets();
        Stats {
            groups,
            references,
            sets: sets.len(),
            set_boundaries: sets.iter().map(|s| s.boundaries()).sum(),
        }
    }
}
