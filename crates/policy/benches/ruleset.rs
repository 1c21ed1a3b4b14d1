//! How `Ruleset::evaluate` scales with the number of rules and the size of a prefix set.
//!
//! ```sh
//! cargo bench -p keepstate-policy --bench ruleset               # every size
//! cargo bench -p keepstate-policy --bench ruleset -- --quick    # 20,000 packets, one pass
//! cargo bench -p keepstate-policy --bench ruleset -- --rules 10000 --prefixes 100000
//! KEEPSTATE_BENCH_QUICK=1 valgrind --tool=callgrind \
//!     target/release/deps/ruleset-<hash> --rules 10000 --prefixes 100000
//! ```
//!
//! Policies of 10, 100, 1,000 and 10,000 generated rules (TCP and UDP ports, source and
//! destination prefixes, single hosts, IPv6 prefixes, ICMP types with a rate limit, log
//! rules, connection states, input, output and forward rules over four zones), each alone
//! and with two rules that match the source against one 100,000-prefix set (random IPv4 and
//! IPv6 prefixes). The packets (1M pre-built views per policy) are a mix: established,
//! related and invalid packets decided before any rule (20%), new packets aimed at a random
//! rule, so at every depth of the file (60%), and new packets no rule matches (20%). Each
//! policy is timed in passes alternating with the 10-rule policy without the set (the
//! baseline), best pass of each; the line gives nanoseconds per packet and the ratio to the
//! baseline timed alongside, so a noisy machine skews both alike. Deterministic: a fixed
//! xorshift seed per policy.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use keepstate_engine::{CtState, Direction, Family, Time};
use keepstate_policy::model::*;
use keepstate_policy::ruleset::{Chain, Ruleset, Verdict, View};
use std::hint::black_box;
use std::time::Instant;

const LAN: ZoneId = 0;
const WAN: ZoneId = 1;
const DMZ: ZoneId = 2;
const GUEST: ZoneId = 3;

const TCP: u8 = 6;
const UDP: u8 = 17;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn u32(&mut self) -> u32 {
        u32::try_from(self.next() >> 32).unwrap_or(0)
    }

    fn u16_in(&mut self, lo: u16, hi: u16) -> u16 {
        let span = u64::from(hi - lo) + 1;
        lo + u16::try_from(self.below(span)).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn v4(a: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(a: u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(a))
}

fn prefix(a: IpAddr, len: u8) -> IpNet {
    IpNet::new(a, len).unwrap_or(IpNet::host(a))
}

fn src_net(n: IpNet) -> AddrMatch {
    AddrMatch {
        items: vec![AddrItem::Net(n)],
        negate: false,
    }
}

fn port(p: u16) -> PortMatch {
    PortMatch {
        ranges: vec![(p, p)],
    }
}

/// What a packet aimed at a rule looks like.
#[derive(Clone, Copy)]
struct Target {
    chain: Chain,
    in_zone: Option<ZoneId>,
    out_zone: Option<ZoneId>,
    proto: u8,
    /// A prefix the source lies in (host bits are randomised).
    src: IpNet,
    dst: IpNet,
    dport: Option<u16>,
    icmp_type: Option<u8>,
}

fn zone(name: &str, input: PolicyAction, forward: PolicyAction) -> Zone {
    Zone {
        name: name.into(),
        input,
        output: PolicyAction::Accept,
        forward,
        masquerade: false,
        mapping: Mapping::default(),
        antispoof: true,
        drop_bogons: false,
        syn_limit: None,
        udp_limit: None,
        icmp_limit: None,
        src_conn_limit: None,
        overload_timeout: Time::from_secs(600),
        src_conn_max: None,
        span: Span::default(),
    }
}

fn rule(m: Match, action: Action) -> Rule {
    Rule {
        name: None,
        m,
        action,
        log: false,
        limit: None,
        span: Span::default(),
    }
}

fn any_v4(r: &mut Rng) -> IpNet {
    // Outside 10/8, 172.16/12 and 192.0/16, which rules use.
    let a = 0x2000_0000 | (r.u32() & 0x7fff_ffff);
    prefix(v4(a), 32)
}

/// The policy's generated rules and a target for each.
fn rules(n: usize, r: &mut Rng) -> (Vec<Rule>, Vec<Target>) {
    let mut rules = Vec::with_capacity(n);
    let mut targets = Vec::with_capacity(n);
    let public = prefix(v4(0xcb00_7101), 32);
    for i in 0..n {
        let iu = u32::try_from(i).unwrap_or(0);
        let distinct_port = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
        let in_zone = [WAN, LAN, GUEST, DMZ][(i / 8) % 4];
        let kind = if i % 8 == 6 && i >= 64 { 0 } else { i % 8 };
        let input = |zone: ZoneId| Match {
            src: Some(ZoneSel::Zone(zone)),
            ..Match::default()
        };
        let (m, action, limit, t) = match kind {
            // TCP service on the firewall, new connections only.
            0 => (
                Match {
                    proto: vec![TCP],
                    dport: port(distinct_port),
                    ct_state: StateSet::of(&[CtState::New]),
                    ..input(in_zone)
                },
                Action::Accept,
                None,
                Target {
                    chain: Chain::Input,
                    in_zone: Some(in_zone),
                    out_zone: None,
                    proto: TCP,
                    src: any_v4(r),
                    dst: public,
                    dport: Some(distinct_port),
                    icmp_type: None,
                },
            ),
            // Forwarded UDP from a /24 of an inside zone to a common port.
            1 => {
                let net = prefix(v4(0x0a00_0000 | (iu << 8)), 24);
                let (from, to) = [(LAN, WAN), (GUEST, WAN), (LAN, DMZ)][(i / 8) % 3];
                let p = [53, 123, 500, 4500][(i / 8) % 4];
                (
                    Match {
                        src: Some(ZoneSel::Zone(from)),
                        dest: Some(ZoneSel::Zone(to)),
                        proto: vec![UDP],
                        dport: port(p),
                        src_addr: src_net(net),
                        ..Match::default()
                    },
                    Action::Drop,
                    None,
                    Target {
                        chain: Chain::Forward,
                        in_zone: Some(from),
                        out_zone: Some(to),
                        proto: UDP,
                        src: net,
                        dst: any_v4(r),
                        dport: Some(p),
                        icmp_type: None,
                    },
                )
            }
            // A single host refused, any protocol.
            2 => {
                let host = prefix(v4(0xc000_0000 | (iu & 0xffff)), 32);
                (
                    Match {
                        src_addr: src_net(host),
                        ..input(WAN)
                    },
                    Action::Reject(RejectCode::AdminProhibited),
                    None,
                    Target {
                        chain: Chain::Input,
                        in_zone: Some(WAN),
                        out_zone: None,
                        proto: if i % 16 < 8 { TCP } else { UDP },
                        src: host,
                        dst: public,
                        dport: Some(40_000),
                        icmp_type: None,
                    },
                )
            }
            // HTTPS to a DMZ /24 from anywhere.
            3 => {
                let net = prefix(v4(0xac10_0000 | (iu << 8)), 24);
                (
                    Match {
                        src: Some(ZoneSel::Any),
                        dest: Some(ZoneSel::Zone(DMZ)),
                        proto: vec![TCP],
                        dport: port(443),
                        dst_addr: src_net(net),
                        ..Match::default()
                    },
                    Action::Accept,
                    None,
                    Target {
                        chain: Chain::Forward,
                        in_zone: Some([WAN, LAN, GUEST][i % 3]),
                        out_zone: Some(DMZ),
                        proto: TCP,
                        src: any_v4(r),
                        dst: net,
                        dport: Some(443),
                        icmp_type: None,
                    },
                )
            }
            // The firewall's own UDP to the WAN.
            4 => (
                Match {
                    dest: Some(ZoneSel::Zone(WAN)),
                    proto: vec![UDP],
                    dport: port(distinct_port),
                    ..Match::default()
                },
                Action::Drop,
                None,
                Target {
                    chain: Chain::Output,
                    in_zone: None,
                    out_zone: Some(WAN),
                    proto: UDP,
                    src: public,
                    dst: any_v4(r),
                    dport: Some(distinct_port),
                    icmp_type: None,
                },
            ),
            // Log and go on.
            5 => (
                Match {
                    proto: vec![TCP, UDP],
                    dport: port(distinct_port),
                    ..input(in_zone)
                },
                Action::Log,
                None,
                Target {
                    chain: Chain::Input,
                    in_zone: Some(in_zone),
                    out_zone: None,
                    proto: UDP,
                    src: any_v4(r),
                    dst: public,
                    dport: Some(distinct_port),
                    icmp_type: None,
                },
            ),
            // Rate-limited ICMP/ICMPv6 types (only a few such rules).
            6 => {
                let ty = u8::try_from(i % 32).unwrap_or(0);
                let v6 = i % 16 == 6;
                (
                    Match {
                        icmp: vec![IcmpMatch { v6, ty, code: None }],
                        ..input(WAN)
                    },
                    Action::Accept,
                    Some(Limit {
                        count: 1000,
                        per: Time::from_secs(1),
                        burst: 100,
                        per_source: false,
                    }),
                    Target {
                        chain: Chain::Input,
                        in_zone: Some(WAN),
                        out_zone: None,
                        proto: if v6 { 58 } else { 1 },
                        src: if v6 {
                            prefix(v6_addr(0x2001_0db8_ffff, 0), 64)
                        } else {
                            any_v4(r)
                        },
                        dst: if v6 {
                            prefix(v6_addr(0x2001_0db8_0001, 1), 128)
                        } else {
                            public
                        },
                        dport: None,
                        icmp_type: Some(ty),
                    },
                )
            }
            // An IPv6 /48 allowed to high TCP ports.
            _ => {
                let net = prefix(v6_addr(0x2001_0db8_0000 | u64::from(iu & 0xffff), 0), 48);
                (
                    Match {
                        proto: vec![TCP],
                        dport: PortMatch {
                            ranges: vec![(1024, 65535)],
                        },
                        src_addr: src_net(net),
                        ..input(WAN)
                    },
                    Action::Accept,
                    None,
                    Target {
                        chain: Chain::Input,
                        in_zone: Some(WAN),
                        out_zone: None,
                        proto: TCP,
                        src: net,
                        dst: prefix(v6_addr(0x2001_0db8_0001, 1), 128),
                        dport: Some(8080),
                        icmp_type: None,
                    },
                )
            }
        };
        let mut rl = rule(m, action);
        rl.limit = limit;
        rules.push(rl);
        targets.push(t);
    }
    (rules, targets)
}

/// `prefix48:...:low` as an IPv6 address: the top 48 bits, then `low` at the bottom.
fn v6_addr(top48: u64, low: u64) -> IpAddr {
    v6((u128::from(top48) << 80) | u128::from(low))
}

/// `n` random prefixes: 70% IPv4 /16 to /32, 30% IPv6 /32 to /64 in 2000::/3.
fn blocklist(n: usize, r: &mut Rng) -> Vec<IpNet> {
    (0..n)
        .map(|_| {
            if r.chance(70) {
                let len = 16 + u8::try_from(r.below(17)).unwrap_or(0);
                prefix(v4(r.u32()), len)
            } else {
                let a = (u128::from(r.next()) << 64 | u128::from(r.next())) >> 3 | 1 << 125;
                let len = 32 + u8::try_from(r.below(33)).unwrap_or(0);
                prefix(v6(a), len)
            }
        })
        .collect()
}

fn policy(n: usize, prefixes: usize, r: &mut Rng) -> (Policy, Vec<Target>) {
    use PolicyAction::*;
    let mut p = Policy {
        zones: vec![
            zone("lan", Accept, Accept),
            zone("wan", Drop, Drop),
            zone("dmz", Drop, Drop),
            zone("guest", Reject, Drop),
        ],
        forwardings: [(LAN, WAN), (GUEST, WAN), (LAN, DMZ)]
            .iter()
            .map(|&(src, dest)| Forwarding {
                src,
                dest,
                span: Span::default(),
            })
            .collect(),
        ..Policy::default()
    };
    if prefixes > 0 {
        p.sets.push(PrefixSet {
            name: "blocklist".into(),
            prefixes: blocklist(prefixes, r),
            span: Span::default(),
        });
        let from_set = AddrMatch {
            items: vec![AddrItem::Set(0)],
            negate: false,
        };
        for dest in [None, Some(ZoneSel::Any)] {
            p.rules.push(rule(
                Match {
                    src: Some(ZoneSel::Zone(WAN)),
                    dest,
                    src_addr: from_set.clone(),
                    ..Match::default()
                },
                Action::Drop,
            ));
        }
    }
    let (rules, targets) = rules(n, r);
    p.rules.extend(rules);
    (p, targets)
}

fn host_in(n: IpNet, r: &mut Rng) -> IpAddr {
    let fill = u128::from(r.next()) << 64 | u128::from(r.next());
    match n.addr {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(n.len)).unwrap_or(0);
            v4(u32::from(a) & !host | u32::try_from(fill & u128::from(host)).unwrap_or(0))
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(u32::from(n.len)).unwrap_or(0);
            v6(u128::from(a) & !host | fill & host)
        }
    }
}

fn views(targets: &[Target], count: usize, r: &mut Rng) -> Vec<View> {
    let base = Time::from_secs(1_000_000).as_nanos();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let now = Time::from_nanos(base + u64::try_from(i).unwrap_or(0) * 1000);
        let pick = r.below(100);
        let t = if pick < 60 && !targets.is_empty() {
            // Aimed at a rule, anywhere in the file.
            targets[usize::try_from(r.below(targets.len() as u64)).unwrap_or(0)]
        } else {
            // Matches nothing: unused ports, addresses no rule names.
            let chain = [Chain::Input, Chain::Forward, Chain::Output][i % 3];
            Target {
                chain,
                in_zone: (chain != Chain::Output).then_some([WAN, LAN, GUEST, DMZ][i % 4]),
                out_zone: (chain != Chain::Input).then_some([WAN, DMZ, LAN][i % 3]),
                proto: if r.chance(50) { TCP } else { UDP },
                src: any_v4(r),
                dst: any_v4(r),
                dport: Some(r.u16_in(61_000, 65_000)),
                icmp_type: None,
            }
        };
        let state = match pick {
            // Decided by the established shortcut or as invalid.
            80..=94 => CtState::Established,
            95..=97 => CtState::Related,
            98..=99 => CtState::Invalid,
            _ => CtState::New,
        };
        let src = host_in(t.src, r);
        let ports = matches!(t.proto, TCP | UDP);
        out.push(View {
            chain: t.chain,
            in_zone: t.in_zone,
            out_zone: t.out_zone,
            in_iface: t.in_zone,
            out_iface: t.out_zone,
            family: if src.is_ipv4() {
                Family::V4
            } else {
                Family::V6
            },
            proto: t.proto,
            src,
            dst: host_in(t.dst, r),
            sport: ports.then(|| r.u16_in(1024, 65535)),
            dport: t.dport,
            icmp_type: t.icmp_type,
            icmp_code: t.icmp_type.map(|_| 0),
            tcp_flags: (t.proto == TCP).then_some(0x02),
            state,
            dir: Some(Direction::Original),
            len: 64 + u32::try_from(r.below(1400)).unwrap_or(0),
            now,
        });
    }
    out
}

/// One timed pass over `views`: nanoseconds per packet and packets accepted.
fn pass(rs: &mut Ruleset, views: &[View]) -> (f64, usize) {
    let start = Instant::now();
    let mut accepted = 0usize;
    for v in views {
        let j = rs.evaluate(black_box(v));
        accepted += usize::from(j.verdict == Verdict::Accept);
    }
    let elapsed = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let ns = elapsed * 1e9 / views.len().max(1) as f64;
    (ns, black_box(accepted))
}

/// A policy ready to time.
struct Case {
    rules: usize,
    prefixes: usize,
    ruleset: Ruleset,
    views: Vec<View>,
    build_ms: f64,
}

fn case(n: usize, prefixes: usize, count: usize) -> Case {
    let seed = 0x9e37_79b9_7f4a_7c15 ^ u64::try_from(n).unwrap_or(0);
    let mut r = Rng(seed ^ u64::try_from(prefixes).unwrap_or(0) << 32);
    let (p, targets) = policy(n, prefixes, &mut r);
    let built = Instant::now();
    let ruleset = Ruleset::new(&p);
    let build_ms = built.elapsed().as_secs_f64() * 1e3;
    let views = views(&targets, count, &mut r);
    Case {
        rules: n,
        prefixes,
        ruleset,
        views,
        build_ms,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("KEEPSTATE_BENCH_QUICK").is_some_and(|v| v != "0");
    let (count, runs) = if quick { (20_000, 1) } else { (1_000_000, 7) };
    // `--rules N` / `--prefixes P` measure only the sizes given.
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut configs: Vec<(usize, usize)> = Vec::new();
    for prefixes in [0usize, 100_000] {
        for n in [10usize, 100, 1_000, 10_000] {
            if arg("--rules").is_none_or(|r| r == n)
                && arg("--prefixes").is_none_or(|p| p == prefixes)
            {
                configs.push((n, prefixes));
            }
        }
    }

    // The 10-rule policy is timed in the same rounds as every other policy, alternating, so
    // that a noisy machine slows both alike; each figure is the best of its rounds.
    let mut base = case(10, 0, count);
    println!(
        "# {} packets per pass, best of {runs} passes; baseline: 10 rules, no prefix set, \
         timed alternately with each policy",
        base.views.len()
    );
    for (n, prefixes) in configs {
        let mut c = case(n, prefixes, count);
        let mut best = f64::INFINITY;
        let mut best_base = f64::INFINITY;
        let mut accepted = 0;
        for _ in 0..runs {
            let (b, _) = pass(&mut base.ruleset, &base.views);
            best_base = best_base.min(b);
            let (ns, acc) = if (n, prefixes) == (10, 0) {
                (b, 0)
            } else {
                pass(&mut c.ruleset, &c.views)
            };
            best = best.min(ns);
            accepted = acc;
        }
        if (n, prefixes) == (10, 0) {
            best = best_base;
            accepted = pass(&mut base.ruleset, &base.views).1;
        }
        let s = c.ruleset.stats();
        #[allow(clippy::cast_precision_loss)]
        let accepted = accepted as f64 / c.views.len().max(1) as f64;
        println!(
            "rules={} prefixes={} ns_per_packet={best:.1} ratio_vs_10_rules={:.2} \
             baseline_ns={best_base:.1} accepted={accepted:.3} build_ms={:.1} groups={} \
             references={} set_boundaries={}",
            c.rules,
            c.prefixes,
            best / best_base,
            c.build_ms,
            s.groups,
            s.references,
            s.set_boundaries,
        );
    }
}
