//! The compiled ruleset, limits, prefix sets and topology against policies built in code.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use core::net::IpAddr;
use keepstate_engine::{CtState, Direction, Family, Time};
use keepstate_policy::limit::{Bucket, Limiter, PerSource};
use keepstate_policy::model::*;
use keepstate_policy::prefix::PrefixMap;
use keepstate_policy::ruleset::{Chain, Counter, Decider, Judgement, Ruleset, Verdict, View};
use keepstate_policy::topology::Topology;

const LAN: ZoneId = 0;
const WAN: ZoneId = 1;
const DMZ: ZoneId = 2;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    match s.split_once('/') {
        Some((a, l)) => IpNet::new(ip(a), l.parse().unwrap()).unwrap(),
        None => IpNet::host(ip(s)),
    }
}

fn zone(name: &str, input: PolicyAction, output: PolicyAction, forward: PolicyAction) -> Zone {
    Zone {
        name: name.into(),
        input,
        output,
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

/// lan (accept everything), wan (input and forward drop), dmz (input reject, forward drop);
/// lan may forward to wan.
fn base() -> Policy {
    use PolicyAction::*;
    Policy {
        zones: vec![
            zone("lan", Accept, Accept, Accept),
            zone("wan", Drop, Accept, Drop),
            zone("dmz", Reject, Accept, Drop),
        ],
        forwardings: vec![Forwarding {
            src: LAN,
            dest: WAN,
            span: Span::default(),
        }],
        ..Policy::default()
    }
}

fn rule(name: &str, m: Match, action: Action) -> Rule {
    Rule {
        name: (!name.is_empty()).then(|| name.to_string()),
        m,
        action,
        log: false,
        limit: None,
        span: Span::default(),
    }
}

fn input_from(z: ZoneId) -> Match {
    Match {
        src: Some(ZoneSel::Zone(z)),
        ..Match::default()
    }
}

fn ports(list: &[u16]) -> PortMatch {
    PortMatch {
        ranges: list.iter().map(|&p| (p, p)).collect(),
    }
}

fn addrs(list: &[&str]) -> AddrMatch {
    AddrMatch {
        items: list.iter().map(|s| AddrItem::Net(net(s))).collect(),
        negate: false,
    }
}

/// A new TCP packet from wan to the firewall.
fn pkt() -> View {
    View {
        chain: Chain::Input,
        in_zone: Some(WAN),
        out_zone: None,
        in_iface: None,
        out_iface: None,
        family: Family::V4,
        proto: TCP,
        src: ip("198.51.100.7"),
        dst: ip("203.0.113.1"),
        sport: Some(40000),
        dport: Some(22),
        icmp_type: None,
        icmp_code: None,
        tcp_flags: Some(0x02),
        state: CtState::New,
        dir: Some(Direction::Original),
        len: 60,
        now: Time::from_secs(1000),
    }
}

fn icmp_pkt(v6: bool, ty: u8, code: u8) -> View {
    View {
        family: if v6 { Family::V6 } else { Family::V4 },
        proto: if v6 { ICMPV6 } else { ICMP },
        src: if v6 {
            ip("2001:db8::7")
        } else {
            ip("198.51.100.7")
        },
        dst: if v6 {
            ip("2001:db8::1")
        } else {
            ip("203.0.113.1")
        },
        sport: None,
        dport: None,
        tcp_flags: None,
        icmp_type: Some(ty),
        icmp_code: Some(code),
        ..pkt()
    }
}

fn at(v: View, ms: u64) -> View {
    View {
        now: Time::from_millis(1_000_000 + ms),
        ..v
    }
}

fn limit(count: u32, per_ms: u64, burst: u32, per_source: bool) -> Limit {
    Limit {
        count,
        per: Time::from_millis(per_ms),
        burst,
        per_source,
    }
}

fn judged(verdict: Verdict, by: Decider) -> Judgement {
    Judgement {
        verdict,
        by,
        log: None,
        reply: false,
    }
}

#[test]
fn first_match_wins() {
    let mut p = base();
    p.rules = vec![
        rule(
            "Allow-SSH",
            Match {
                proto: vec![TCP],
                dport: ports(&[22]),
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule("", input_from(WAN), Action::Drop),
        rule(
            "Never",
            Match {
                proto: vec![TCP],
                dport: ports(&[22]),
                ..input_from(WAN)
            },
            Action::Reject(RejectCode::AdminProhibited),
        ),
    ];
    let mut rs = Ruleset::new(&p);
    let j = rs.evaluate(&pkt());
    assert_eq!(j, judged(Verdict::Accept, Decider::Rule(0)));
    assert_eq!(rs.describe(j.by, &p), "Allow-SSH");
    let j = rs.evaluate(&View {
        dport: Some(23),
        ..pkt()
    });
    assert_eq!(j, judged(Verdict::Drop, Decider::Rule(1)));
    assert_eq!(rs.describe(j.by, &p), "rule #2");
    let c = rs.counters();
    assert_eq!(
        c[0],
        Counter {
            packets: 1,
            bytes: 60
        }
    );
    assert_eq!(
        c[1],
        Counter {
            packets: 1,
            bytes: 60
        }
    );
    assert_eq!(c[2], Counter::default());
}

#[test]
fn log_and_counter_rules_continue() {
    let mut p = base();
    p.rules = vec![
        rule("count", input_from(WAN), Action::Counter),
        rule(
            "log-ssh",
            Match {
                dport: ports(&[22]),
                ..input_from(WAN)
            },
            Action::Log,
        ),
        rule(
            "accept",
            Match {
                proto: vec![TCP],
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule("after", input_from(WAN), Action::Counter),
    ];
    let mut rs = Ruleset::new(&p);
    let j = rs.evaluate(&pkt());
    assert_eq!(j.verdict, Verdict::Accept);
    assert_eq!(j.by, Decider::Rule(2));
    assert_eq!(j.log, Some(1));
    let j = rs.evaluate(&View {
        proto: UDP,
        tcp_flags: None,
        len: 100,
        ..pkt()
    });
    // Rule 1 has no protocol: UDP port 22 is logged too; nothing accepts UDP.
    assert_eq!(
        j.by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );
    assert_eq!(j.verdict, Verdict::Drop);
    assert_eq!(j.log, Some(1));
    let c: Vec<u64> = rs.counters().iter().map(|c| c.packets).collect();
    assert_eq!(c, vec![2, 2, 1, 1]);
    assert_eq!(rs.counters()[0].bytes, 160);
}

#[test]
fn log_flag_and_log_limit() {
    let mut p = base();
    p.defaults.log_limit = limit(1, 1000, 2, false);
    let mut r = rule("drop-logged", input_from(WAN), Action::Drop);
    r.log = true;
    p.rules = vec![r];
    let mut rs = Ruleset::new(&p);
    let logs: Vec<Option<u32>> = (0..4).map(|_| rs.evaluate(&at(pkt(), 0)).log).collect();
    assert_eq!(logs, vec![Some(0), Some(0), None, None]);
    assert_eq!(rs.evaluate(&at(pkt(), 999)).log, None);
    assert_eq!(rs.evaluate(&at(pkt(), 1000)).log, Some(0));
    // Every packet was dropped by the rule regardless of logging.
    assert_eq!(rs.counters()[0].packets, 6);
}

#[test]
fn rule_limit_burst_then_rate_under_simulated_clock() {
    let mut p = base();
    let mut r = rule(
        "Allow-Ping",
        Match {
            icmp: vec![IcmpMatch {
                v6: false,
                ty: 8,
                code: None,
            }],
            ..input_from(WAN)
        },
        Action::Accept,
    );
    // 2 per second, burst 3.
    r.limit = Some(limit(2, 1000, 3, false));
    p.rules = vec![r];
    let mut rs = Ruleset::new(&p);
    let ping = icmp_pkt(false, 8, 0);
    let mut verdicts = Vec::new();
    for ms in [
        0, 0, 0, 0, 100, 499, 500, 600, 1000, 1000, 5000, 5000, 5000, 5000,
    ] {
        verdicts.push(rs.evaluate(&at(ping, ms)).verdict == Verdict::Accept);
    }
    assert_eq!(
        verdicts,
        vec![
            true, true, true, false, // burst of 3
            false, false, true, false, // one token after 500 ms
            true, false, // the next at 1000 ms
            true, true, true, false, // idle refills to the burst only
        ]
    );
    // Over the limit the rule does not match: the zone policy decides and the rule does not
    // count the packet.
    let j = rs.evaluate(&at(ping, 5000));
    assert_eq!(
        j.by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );
    assert_eq!(rs.counters()[0].packets, 8);
}

#[test]
fn limited_rule_lets_later_rules_decide() {
    let mut p = base();
    let mut r = rule("limited", input_from(WAN), Action::Accept);
    r.limit = Some(limit(1, 1000, 1, false));
    p.rules = vec![
        r,
        rule(
            "rest",
            input_from(WAN),
            Action::Reject(RejectCode::HostUnreachable),
        ),
    ];
    let mut rs = Ruleset::new(&p);
    assert_eq!(rs.evaluate(&pkt()).by, Decider::Rule(0));
    let j = rs.evaluate(&pkt());
    assert_eq!(j.by, Decider::Rule(1));
    assert_eq!(j.verdict, Verdict::Reject(RejectCode::HostUnreachable));
}

#[test]
fn per_source_limits_are_independent() {
    let mut p = base();
    let mut r = rule("per-source", input_from(WAN), Action::Accept);
    r.limit = Some(limit(1, 1000, 2, true));
    p.rules = vec![r];
    let mut rs = Ruleset::new(&p);
    let from = |s: &str, ms| {
        at(
            View {
                src: ip(s),
                ..pkt()
            },
            ms,
        )
    };
    let ok = |rs: &mut Ruleset, v: View| rs.evaluate(&v).verdict == Verdict::Accept;
    assert!(ok(&mut rs, from("192.0.2.1", 0)));
    assert!(ok(&mut rs, from("192.0.2.1", 0)));
    assert!(!ok(&mut rs, from("192.0.2.1", 0)));
    // Another source has its own bucket.
    assert!(ok(&mut rs, from("192.0.2.2", 0)));
    assert!(ok(&mut rs, from("2001:db8::2", 0)));
    assert!(ok(&mut rs, from("192.0.2.2", 0)));
    assert!(!ok(&mut rs, from("192.0.2.2", 0)));
    assert!(!ok(&mut rs, from("192.0.2.1", 999)));
    assert!(ok(&mut rs, from("192.0.2.1", 1000)));
}

#[test]
fn per_source_memory_is_bounded() {
    let l = limit(1, 1000, 3, true);
    let mut t = PerSource::new(&l, 100);
    let cap = t.capacity();
    assert!((100..=256).contains(&cap));
    let mut passed = 0usize;
    for round in 0..3u64 {
        for i in 0..50_000u32 {
            let src = IpAddr::V4((0xc000_0000 | i).into());
            if t.allow(src, Time::from_millis(round)) {
                passed += 1;
            }
        }
    }
    assert_eq!(t.len(), cap);
    // Cycling 50,000 sources cannot get more than the table's buckets hold.
    assert!(passed <= cap * 3, "{passed} > {}", cap * 3);
    // A well-behaved source alone in a fresh table gets its burst, then the rate.
    let mut t = PerSource::new(&l, 100);
    let a = ip("192.0.2.9");
    assert!((0..3).all(|_| t.allow(a, Time::ZERO)));
    assert!(!t.allow(a, Time::ZERO));
    assert!(t.allow(a, Time::from_secs(1)));
}

#[test]
fn limiter_picks_bucket_kind() {
    let mut shared = Limiter::new(&limit(1, 1000, 1, false));
    assert!(shared.allow(ip("192.0.2.1"), Time::ZERO));
    assert!(!shared.allow(ip("192.0.2.2"), Time::ZERO));
    let mut per = Limiter::new(&limit(1, 1000, 1, true));
    assert!(per.allow(ip("192.0.2.1"), Time::ZERO));
    assert!(per.allow(ip("192.0.2.2"), Time::ZERO));
    assert!(!per.allow(ip("192.0.2.1"), Time::ZERO));
    let mut b = Bucket::new(&limit(1, 1000, 1, false));
    assert!(b.allow(Time::ZERO));
    assert!(!b.allow(Time::ZERO));
}

#[test]
fn reject_replies_are_rate_limited() {
    let mut p = base();
    p.defaults.reject_limit = limit(1, 1000, 2, false);
    p.rules = vec![rule(
        "reject",
        input_from(WAN),
        Action::Reject(RejectCode::AdminProhibited),
    )];
    let mut rs = Ruleset::new(&p);
    let replies: Vec<bool> = (0..4).map(|_| rs.evaluate(&at(pkt(), 0)).reply).collect();
    assert_eq!(replies, vec![true, true, false, false]);
    let j = rs.evaluate(&at(pkt(), 1000));
    assert_eq!(j.verdict, Verdict::Reject(RejectCode::AdminProhibited));
    assert!(j.reply);
    // Zone policy rejects share the limit.
    let j = rs.evaluate(&at(
        View {
            in_zone: Some(DMZ),
            ..pkt()
        },
        1000,
    ));
    assert_eq!(j.verdict, Verdict::Reject(RejectCode::PortUnreachable));
    assert_eq!(
        j.by,
        Decider::ZonePolicy {
            zone: DMZ,
            chain: Chain::Input
        }
    );
    assert!(!j.reply);
    // Accepts never reply.
    let j = rs.evaluate(&View {
        in_zone: Some(LAN),
        ..pkt()
    });
    assert_eq!(j.verdict, Verdict::Accept);
    assert!(!j.reply);
}

#[test]
fn zone_policy_fallbacks_per_chain() {
    let p = base();
    let mut rs = Ruleset::new(&p);
    let input = |z| View {
        chain: Chain::Input,
        in_zone: z,
        ..pkt()
    };
    let output = |z| View {
        chain: Chain::Output,
        in_zone: None,
        out_zone: z,
        ..pkt()
    };
    let forward = |i, o| View {
        chain: Chain::Forward,
        in_zone: i,
        out_zone: o,
        ..pkt()
    };
    let zp = |zone, chain| Decider::ZonePolicy { zone, chain };

    assert_eq!(
        rs.evaluate(&input(Some(WAN))),
        judged(Verdict::Drop, zp(WAN, Chain::Input))
    );
    assert_eq!(
        rs.evaluate(&input(Some(LAN))),
        judged(Verdict::Accept, zp(LAN, Chain::Input))
    );
    let j = rs.evaluate(&input(Some(DMZ)));
    assert_eq!(
        (j.verdict, j.by),
        (
            Verdict::Reject(RejectCode::PortUnreachable),
            zp(DMZ, Chain::Input)
        )
    );
    assert_eq!(
        rs.evaluate(&output(Some(WAN))),
        judged(Verdict::Accept, zp(WAN, Chain::Output))
    );
    assert_eq!(
        rs.evaluate(&forward(Some(DMZ), Some(LAN))),
        judged(Verdict::Drop, zp(DMZ, Chain::Forward))
    );
    assert_eq!(
        rs.evaluate(&forward(Some(LAN), Some(DMZ))),
        judged(Verdict::Accept, zp(LAN, Chain::Forward))
    );
    // Unknown zones.
    assert_eq!(
        rs.evaluate(&input(None)),
        judged(Verdict::Drop, Decider::NoZone)
    );
    assert_eq!(
        rs.evaluate(&input(Some(99))),
        judged(Verdict::Drop, Decider::NoZone)
    );
    assert_eq!(
        rs.evaluate(&output(None)),
        judged(Verdict::Drop, Decider::NoZone)
    );
    // Forward uses the ingress zone's policy; the egress zone may be unknown.
    assert_eq!(
        rs.evaluate(&forward(Some(WAN), None)),
        judged(Verdict::Drop, zp(WAN, Chain::Forward))
    );
    assert_eq!(
        rs.evaluate(&forward(None, Some(WAN))),
        judged(Verdict::Drop, Decider::NoZone)
    );

    assert_eq!(
        rs.describe(zp(WAN, Chain::Input), &p),
        "zone wan input policy"
    );
    assert_eq!(rs.describe(Decider::NoZone, &p), "no zone");
    assert_eq!(
        rs.describe(Decider::DropInvalid, &p),
        "defaults.drop_invalid"
    );
    assert_eq!(
        rs.describe(Decider::Established, &p),
        "defaults.established"
    );
}

#[test]
fn forwarding_after_rules() {
    let mut p = base();
    p.rules = vec![rule(
        "No-SMTP-out",
        Match {
            src: Some(ZoneSel::Zone(LAN)),
            dest: Some(ZoneSel::Zone(WAN)),
            proto: vec![TCP],
            dport: ports(&[25]),
            ..Match::default()
        },
        Action::Reject(RejectCode::AdminProhibited),
    )];
    let mut rs = Ruleset::new(&p);
    let fwd = View {
        chain: Chain::Forward,
        in_zone: Some(LAN),
        out_zone: Some(WAN),
        ..pkt()
    };
    let j = rs.evaluate(&fwd);
    assert_eq!(j, judged(Verdict::Accept, Decider::Forwarding(0)));
    assert_eq!(rs.describe(j.by, &p), "forwarding lan->wan");
    let j = rs.evaluate(&View {
        dport: Some(25),
        ..fwd
    });
    assert_eq!(j.by, Decider::Rule(0));
    // No forwarding back.
    let back = View {
        in_zone: Some(WAN),
        out_zone: Some(LAN),
        ..fwd
    };
    assert_eq!(
        rs.evaluate(&back).by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Forward
        }
    );
    // Forwardings apply to the forward chain only.
    let j = rs.evaluate(&View {
        chain: Chain::Input,
        ..fwd
    });
    assert_eq!(
        j.by,
        Decider::ZonePolicy {
            zone: LAN,
            chain: Chain::Input
        }
    );
}

#[test]
fn rule_chains_follow_zones() {
    let mut p = base();
    p.rules = vec![
        // Output to wan.
        rule(
            "out",
            Match {
                dest: Some(ZoneSel::Zone(WAN)),
                ..Match::default()
            },
            Action::Drop,
        ),
        // Forward from any zone to dmz.
        rule(
            "to-dmz",
            Match {
                src: Some(ZoneSel::Any),
                dest: Some(ZoneSel::Zone(DMZ)),
                ..Match::default()
            },
            Action::Accept,
        ),
        // Input from any zone, unknown included.
        rule(
            "in-any",
            Match {
                src: Some(ZoneSel::Any),
                ..Match::default()
            },
            Action::Accept,
        ),
    ];
    let mut rs = Ruleset::new(&p);
    let out = View {
        chain: Chain::Output,
        in_zone: None,
        out_zone: Some(WAN),
        ..pkt()
    };
    assert_eq!(rs.evaluate(&out).by, Decider::Rule(0));
    assert_eq!(
        rs.evaluate(&View {
            out_zone: Some(LAN),
            ..out
        })
        .by,
        Decider::ZonePolicy {
            zone: LAN,
            chain: Chain::Output
        }
    );
    let fwd = View {
        chain: Chain::Forward,
        in_zone: Some(WAN),
        out_zone: Some(DMZ),
        ..pkt()
    };
    assert_eq!(rs.evaluate(&fwd).by, Decider::Rule(1));
    assert_eq!(
        rs.evaluate(&View {
            in_zone: None,
            ..fwd
        })
        .by,
        Decider::Rule(1)
    );
    assert_eq!(
        rs.evaluate(&View {
            out_zone: Some(LAN),
            ..fwd
        })
        .by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Forward
        }
    );
    assert_eq!(rs.evaluate(&pkt()).by, Decider::Rule(2));
    assert_eq!(
        rs.evaluate(&View {
            in_zone: None,
            ..pkt()
        })
        .by,
        Decider::Rule(2)
    );
}

#[test]
fn state_and_direction() {
    let mut p = base();
    let v = pkt();
    let mut rs = Ruleset::new(&p);
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::Invalid,
            ..v
        }),
        judged(Verdict::Drop, Decider::DropInvalid)
    );
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::Established,
            ..v
        }),
        judged(Verdict::Accept, Decider::Established)
    );
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::Related,
            ..v
        }),
        judged(Verdict::Accept, Decider::Established)
    );
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::Untracked,
            ..v
        })
        .by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );

    p.defaults.drop_invalid = false;
    p.defaults.accept_established = false;
    p.rules = vec![
        rule(
            "est-reply",
            Match {
                ct_state: StateSet::of(&[CtState::Established]),
                ct_dir: Some(Direction::Reply),
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule(
            "untracked-or-invalid",
            Match {
                ct_state: StateSet::of(&[CtState::Untracked, CtState::Invalid]),
                ..input_from(WAN)
            },
            Action::Reject(RejectCode::NetUnreachable),
        ),
    ];
    let mut rs = Ruleset::new(&p);
    let est = View {
        state: CtState::Established,
        dir: Some(Direction::Reply),
        ..v
    };
    assert_eq!(rs.evaluate(&est).by, Decider::Rule(0));
    assert_eq!(
        rs.evaluate(&View {
            dir: Some(Direction::Original),
            ..est
        })
        .by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );
    assert_eq!(
        rs.evaluate(&View { dir: None, ..est }).by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::Invalid,
            dir: None,
            ..v
        })
        .by,
        Decider::Rule(1)
    );
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::Untracked,
            ..v
        })
        .by,
        Decider::Rule(1)
    );
    assert_eq!(
        rs.evaluate(&View {
            state: CtState::New,
            ..v
        })
        .by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );
}

#[test]
fn icmp_type_and_code() {
    let mut p = base();
    p.rules = vec![
        rule(
            "echo",
            Match {
                icmp: vec![IcmpMatch {
                    v6: false,
                    ty: 8,
                    code: None,
                }],
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule(
            "port-unreach",
            Match {
                icmp: vec![IcmpMatch {
                    v6: false,
                    ty: 3,
                    code: Some(3),
                }],
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule(
            "echo6",
            Match {
                icmp: vec![IcmpMatch {
                    v6: true,
                    ty: 128,
                    code: None,
                }],
                ..input_from(WAN)
            },
            Action::Accept,
        ),
    ];
    let mut rs = Ruleset::new(&p);
    let by = |rs: &mut Ruleset, v: View| rs.evaluate(&v).by;
    let policy = Decider::ZonePolicy {
        zone: WAN,
        chain: Chain::Input,
    };
    assert_eq!(by(&mut rs, icmp_pkt(false, 8, 0)), Decider::Rule(0));
    assert_eq!(by(&mut rs, icmp_pkt(false, 8, 5)), Decider::Rule(0));
    assert_eq!(by(&mut rs, icmp_pkt(false, 3, 3)), Decider::Rule(1));
    assert_eq!(by(&mut rs, icmp_pkt(false, 3, 1)), policy);
    assert_eq!(by(&mut rs, icmp_pkt(false, 128, 0)), policy);
    assert_eq!(by(&mut rs, icmp_pkt(true, 128, 0)), Decider::Rule(2));
    // Type 8 over ICMPv6 is not an IPv4 echo request.
    assert_eq!(by(&mut rs, icmp_pkt(true, 8, 0)), policy);
    // A TCP packet never matches an ICMP rule, whatever its icmp fields say.
    assert_eq!(
        by(
            &mut rs,
            View {
                icmp_type: Some(8),
                icmp_code: Some(0),
                ..pkt()
            }
        ),
        policy
    );
    // Missing ICMP fields never match.
    assert_eq!(
        by(
            &mut rs,
            View {
                icmp_type: None,
                ..icmp_pkt(false, 8, 0)
            }
        ),
        policy
    );
}

#[test]
fn tcp_flags_mask() {
    let mut p = base();
    // "syn,!ack"
    p.rules = vec![rule(
        "syn-only",
        Match {
            tcp_flags: Some(TcpFlagsMatch {
                mask: 0x12,
                value: 0x02,
            }),
            ..input_from(WAN)
        },
        Action::Drop,
    )];
    let mut rs = Ruleset::new(&p);
    let by = |rs: &mut Ruleset, v: View| rs.evaluate(&v).by;
    let policy = Decider::ZonePolicy {
        zone: WAN,
        chain: Chain::Input,
    };
    assert_eq!(
        by(
            &mut rs,
            View {
                tcp_flags: Some(0x02),
                ..pkt()
            }
        ),
        Decider::Rule(0)
    );
    // Flags outside the mask do not matter.
    assert_eq!(
        by(
            &mut rs,
            View {
                tcp_flags: Some(0x02 | 0x08 | 0x01),
                ..pkt()
            }
        ),
        Decider::Rule(0)
    );
    assert_eq!(
        by(
            &mut rs,
            View {
                tcp_flags: Some(0x12),
                ..pkt()
            }
        ),
        policy
    );
    assert_eq!(
        by(
            &mut rs,
            View {
                tcp_flags: Some(0x10),
                ..pkt()
            }
        ),
        policy
    );
    assert_eq!(
        by(
            &mut rs,
            View {
                tcp_flags: None,
                ..pkt()
            }
        ),
        policy
    );
    assert_eq!(
        by(
            &mut rs,
            View {
                proto: UDP,
                tcp_flags: Some(0x02),
                ..pkt()
            }
        ),
        policy
    );
}

#[test]
fn ports_need_ports() {
    let mut p = base();
    p.rules = vec![
        rule(
            "range",
            Match {
                dport: PortMatch {
                    ranges: vec![(1000, 2000), (5000, 5000)],
                },
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule(
            "sport",
            Match {
                sport: ports(&[53]),
                ..input_from(WAN)
            },
            Action::Accept,
        ),
    ];
    let mut rs = Ruleset::new(&p);
    let by = |rs: &mut Ruleset, v: View| rs.evaluate(&v).by;
    let policy = Decider::ZonePolicy {
        zone: WAN,
        chain: Chain::Input,
    };
    for (port, want) in [
        (999, policy),
        (1000, Decider::Rule(0)),
        (2000, Decider::Rule(0)),
        (2001, policy),
        (5000, Decider::Rule(0)),
        (5001, policy),
    ] {
        assert_eq!(
            by(
                &mut rs,
                View {
                    dport: Some(port),
                    ..pkt()
                }
            ),
            want,
            "{port}"
        );
    }
    assert_eq!(
        by(
            &mut rs,
            View {
                sport: Some(53),
                dport: Some(1),
                ..pkt()
            }
        ),
        Decider::Rule(1)
    );
    // A packet without ports (GRE) matches neither.
    assert_eq!(
        by(
            &mut rs,
            View {
                proto: 47,
                sport: None,
                dport: None,
                tcp_flags: None,
                ..pkt()
            }
        ),
        policy
    );
}

#[test]
fn negated_and_family_implied_addresses() {
    let mut p = base();
    p.rules = vec![rule(
        "not-private",
        Match {
            src_addr: AddrMatch {
                negate: true,
                ..addrs(&["10.0.0.0/8", "192.168.0.0/16"])
            },
            ..input_from(WAN)
        },
        Action::Drop,
    )];
    let mut rs = Ruleset::new(&p);
    let by = |rs: &mut Ruleset, s: &str| {
        let v6 = s.contains(':');
        rs.evaluate(&View {
            src: ip(s),
            family: if v6 { Family::V6 } else { Family::V4 },
            dst: if v6 {
                ip("2001:db8::1")
            } else {
                ip("203.0.113.1")
            },
            ..pkt()
        })
        .by
    };
    let policy = Decider::ZonePolicy {
        zone: WAN,
        chain: Chain::Input,
    };
    assert_eq!(by(&mut rs, "11.0.0.1"), Decider::Rule(0));
    assert_eq!(by(&mut rs, "10.9.9.9"), policy);
    assert_eq!(by(&mut rs, "192.168.255.1"), policy);
    assert_eq!(by(&mut rs, "192.169.0.1"), Decider::Rule(0));
    // An IPv4-only match says nothing about IPv6 packets.
    assert_eq!(by(&mut rs, "2001:db8::5"), policy);

    // Destination, plain, both families.
    p.rules = vec![rule(
        "to-hosts",
        Match {
            dst_addr: addrs(&["203.0.113.1", "2001:db8::/64"]),
            ..input_from(WAN)
        },
        Action::Drop,
    )];
    let mut rs = Ruleset::new(&p);
    assert_eq!(rs.evaluate(&pkt()).by, Decider::Rule(0));
    assert_eq!(
        rs.evaluate(&View {
            dst: ip("203.0.113.2"),
            ..pkt()
        })
        .by,
        policy
    );
    let v6 = View {
        family: Family::V6,
        src: ip("2001:db8:9::1"),
        dst: ip("2001:db8::ffff"),
        ..pkt()
    };
    assert_eq!(rs.evaluate(&v6).by, Decider::Rule(0));
    assert_eq!(
        rs.evaluate(&View {
            dst: ip("2001:db8:0:1::"),
            ..v6
        })
        .by,
        policy
    );
}

#[test]
fn family_and_interfaces() {
    let mut p = base();
    p.rules = vec![
        rule(
            "v6-only",
            Match {
                family: Some(Family::V6),
                ..input_from(WAN)
            },
            Action::Accept,
        ),
        rule(
            "eth1",
            Match {
                in_iface: Some(1),
                ..input_from(WAN)
            },
            Action::Reject(RejectCode::default()),
        ),
        rule(
            "out-eth2",
            Match {
                src: Some(ZoneSel::Any),
                dest: Some(ZoneSel::Any),
                out_iface: Some(2),
                ..Match::default()
            },
            Action::Drop,
        ),
    ];
    let mut rs = Ruleset::new(&p);
    let v6 = View {
        family: Family::V6,
        src: ip("2001:db8::7"),
        dst: ip("2001:db8::1"),
        ..pkt()
    };
    assert_eq!(rs.evaluate(&v6).by, Decider::Rule(0));
    assert_eq!(
        rs.evaluate(&View {
            in_iface: Some(1),
            ..pkt()
        })
        .by,
        Decider::Rule(1)
    );
    assert_eq!(
        rs.evaluate(&View {
            in_iface: Some(2),
            ..pkt()
        })
        .by,
        Decider::ZonePolicy {
            zone: WAN,
            chain: Chain::Input
        }
    );
    let fwd = View {
        chain: Chain::Forward,
        in_zone: Some(LAN),
        out_zone: Some(DMZ),
        out_iface: Some(2),
        ..pkt()
    };
    assert_eq!(rs.evaluate(&fwd).by, Decider::Rule(2));
    assert_eq!(
        rs.evaluate(&View {
            out_iface: None,
            ..fwd
        })
        .by,
        Decider::ZonePolicy {
            zone: LAN,
            chain: Chain::Forward
        }
    );
}

#[test]
fn notrack_rules() {
    let mut p = base();
    p.notrack = vec![
        NotrackRule {
            name: Some("ntp-from-wan".into()),
            m: Match {
                src: Some(ZoneSel::Zone(WAN)),
                proto: vec![UDP],
                dport: ports(&[123]),
                ..Match::default()
            },
            span: Span::default(),
        },
        NotrackRule {
            name: None,
            m: Match {
                proto: vec![UDP],
                sport: ports(&[123]),
                ..Match::default()
            },
            span: Span::default(),
        },
        NotrackRule {
            name: None,
            m: Match {
                src: Some(ZoneSel::Any),
                in_iface: Some(4),
                ..Match::default()
            },
            span: Span::default(),
        },
    ];
    let mut rs = Ruleset::new(&p);
    let ntp = View {
        proto: UDP,
        tcp_flags: None,
        dport: Some(123),
        ..pkt()
    };
    assert_eq!(rs.notrack(&ntp), Some(0));
    // State and destination do not matter.
    assert_eq!(
        rs.notrack(&View {
            state: CtState::Invalid,
            chain: Chain::Forward,
            out_zone: Some(LAN),
            ..ntp
        }),
        Some(0)
    );
    assert_eq!(
        rs.notrack(&View {
            in_zone: Some(LAN),
            ..ntp
        }),
        None
    );
    assert_eq!(rs.notrack(&View { proto: TCP, ..ntp }), None);
    // Without `src`: locally generated traffic.
    let out = View {
        chain: Chain::Output,
        in_zone: None,
        out_zone: Some(WAN),
        sport: Some(123),
        dport: Some(5000),
        ..ntp
    };
    assert_eq!(rs.notrack(&out), Some(1));
    assert_eq!(
        rs.notrack(&View {
            chain: Chain::Input,
            in_zone: Some(WAN),
            ..out
        }),
        None
    );
    assert_eq!(
        rs.notrack(&View {
            in_zone: None,
            in_iface: Some(4),
            ..pkt()
        }),
        Some(2)
    );
    let c: Vec<u64> = rs.notrack_counters().iter().map(|c| c.packets).collect();
    assert_eq!(c, vec![2, 1, 1]);
    assert!(rs.counters().is_empty());
}

/// A tiny deterministic generator.
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

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

#[test]
fn big_set_matches_a_linear_oracle() {
    let mut r = Rng(0x1234_5678_9abc_def1);
    let mut prefixes = Vec::new();
    for _ in 0..5000 {
        let n = if r.chance(60) {
            let len = u8::try_from(8 + r.below(25)).unwrap();
            IpNet::new(
                IpAddr::V4(u32::try_from(r.next() >> 32).unwrap().into()),
                len,
            )
            .unwrap()
        } else {
            let a = (u128::from(r.next()) << 64) | u128::from(r.next());
            let a = (a >> 3) | (0b001 << 125);
            let len = u8::try_from(16 + r.below(113)).unwrap();
            IpNet::new(IpAddr::V6(a.into()), len).unwrap()
        };
        prefixes.push(n);
    }
    let mut p = base();
    p.sets = vec![PrefixSet {
        name: "blocklist".into(),
        prefixes: prefixes.clone(),
        span: Span::default(),
    }];
    p.rules = vec![rule(
        "Drop-Blocklist",
        Match {
            src_addr: AddrMatch {
                items: vec![AddrItem::Set(0)],
                negate: false,
            },
            ..input_from(WAN)
        },
        Action::Drop,
    )];
    let mut rs = Ruleset::new(&p);
    let set = PrefixMap::new(prefixes.iter().map(|n| (*n, ())));
    let mut hits = 0;
    for i in 0..3000 {
        // Half near a listed prefix, half anywhere.
        let a = if i % 2 == 0 {
            let n = r.pick(&prefixes);
            match n.addr {
                IpAddr::V4(a) => IpAddr::V4(
                    (u32::from(a) ^ u32::try_from(r.next() >> (32 + n.len / 2)).unwrap()).into(),
                ),
                IpAddr::V6(a) => {
                    IpAddr::V6((u128::from(a) ^ (u128::from(r.next()) >> n.len.min(64))).into())
                }
            }
        } else if r.chance(50) {
            IpAddr::V4(u32::try_from(r.next() >> 32).unwrap().into())
        } else {
            IpAddr::V6(
                ((u128::from(r.next()) << 64 | u128::from(r.next())) >> 3 | (0b001 << 125)).into(),
            )
        };
        let want = prefixes.iter().any(|n| n.contains(a));
        hits += usize::from(want);
        assert_eq!(set.contains(a), want, "{a}");
        let v = View {
            src: a,
            family: if a.is_ipv4() { Family::V4 } else { Family::V6 },
            ..pkt()
        };
        let j = rs.evaluate(&v);
        assert_eq!(j.by == Decider::Rule(0), want, "{a}");
    }
    assert!(hits > 500, "{hits}");
    // Rules with many inline prefixes compile into a set too.
    p.rules = vec![rule(
        "many",
        Match {
            dst_addr: AddrMatch {
                items: prefixes.iter().map(|n| AddrItem::Net(*n)).collect(),
                negate: true,
            },
            ..input_from(WAN)
        },
        Action::Drop,
    )];
    let mut rs = Ruleset::new(&p);
    assert_eq!(rs.stats().sets, 1);
    for _ in 0..500 {
        let a = IpAddr::V4(u32::try_from(r.next() >> 32).unwrap().into());
        let want = !prefixes.iter().any(|n| n.contains(a));
        let j = rs.evaluate(&View { dst: a, ..pkt() });
        assert_eq!(j.by == Decider::Rule(0), want, "{a}");
    }
}

// ---- A naive evaluator, written straight from the model's documentation, to check the
// compiled index against on random policies and packets.

fn sel_ok(sel: ZoneSel, z: Option<ZoneId>) -> bool {
    match sel {
        ZoneSel::Any => true,
        ZoneSel::Zone(want) => z == Some(want),
    }
}

fn addr_ok(p: &Policy, m: &AddrMatch, a: IpAddr) -> bool {
    if m.items.is_empty() {
        return !m.negate;
    }
    let nets = || {
        m.items.iter().flat_map(|i| match i {
            AddrItem::Net(n) => core::slice::from_ref(n),
            AddrItem::Set(s) => &p.sets[usize::try_from(*s).unwrap()].prefixes[..],
        })
    };
    let v6 = a.is_ipv6();
    if nets().next().is_some() && !nets().any(|n| n.addr.is_ipv6() == v6) {
        return false;
    }
    nets().any(|n| n.contains(a)) != m.negate
}

fn port_ok(m: &PortMatch, port: Option<u16>) -> bool {
    m.is_any() || port.is_some_and(|p| m.ranges.iter().any(|&(lo, hi)| lo <= p && p <= hi))
}

fn naive_match(p: &Policy, m: &Match, v: &View, notrack: bool) -> bool {
    if notrack {
        match m.src {
            None => {
                if v.chain != Chain::Output {
                    return false;
                }
            }
            Some(s) => {
                if v.chain == Chain::Output || !sel_ok(s, v.in_zone) {
                    return false;
                }
            }
        }
    } else {
        let ok = match (m.src, m.dest) {
            (None, d) => v.chain == Chain::Output && d.is_none_or(|d| sel_ok(d, v.out_zone)),
            (Some(s), None) => v.chain == Chain::Input && sel_ok(s, v.in_zone),
            (Some(s), Some(d)) => {
                v.chain == Chain::Forward && sel_ok(s, v.in_zone) && sel_ok(d, v.out_zone)
            }
        };
        if !ok {
            return false;
        }
        if m.out_iface.is_some_and(|i| v.out_iface != Some(i))
            || !m.ct_state.contains(v.state)
            || m.ct_dir.is_some_and(|d| v.dir != Some(d))
        {
            return false;
        }
    }
    let zone_known = |s: Option<ZoneSel>| match s {
        Some(ZoneSel::Zone(z)) => usize::from(z) < p.zones.len(),
        _ => true,
    };
    zone_known(m.src)
        && (notrack || zone_known(m.dest))
        && m.in_iface.is_none_or(|i| v.in_iface == Some(i))
        && m.family.is_none_or(|f| f == v.family)
        && (m.proto.is_empty() || m.proto.contains(&v.proto))
        && port_ok(&m.sport, v.sport)
        && port_ok(&m.dport, v.dport)
        && (m.icmp.is_empty()
            || m.icmp.iter().any(|i| {
                v.proto == if i.v6 { ICMPV6 } else { ICMP }
                    && v.icmp_type == Some(i.ty)
                    && i.code.is_none_or(|c| v.icmp_code == Some(c))
            }))
        && m.tcp_flags
            .is_none_or(|f| v.proto == TCP && v.tcp_flags.is_some_and(|x| x & f.mask == f.value))
        && addr_ok(p, &m.src_addr, v.src)
        && addr_ok(p, &m.dst_addr, v.dst)
}

/// Without limits (the random policies have none, and unlimited log and reject limits).
fn naive_evaluate(p: &Policy, counters: &mut [Counter], v: &View) -> Judgement {
    if p.defaults.drop_invalid && v.state == CtState::Invalid {
        return judged(Verdict::Drop, Decider::DropInvalid);
    }
    if p.defaults.accept_established && matches!(v.state, CtState::Established | CtState::Related) {
        return judged(Verdict::Accept, Decider::Established);
    }
    let mut log = None;
    for (i, r) in p.rules.iter().enumerate() {
        if !naive_match(p, &r.m, v, false) {
            continue;
        }
        let id = u32::try_from(i).unwrap();
        counters[i].packets += 1;
        counters[i].bytes += u64::from(v.len);
        if (r.log || r.action == Action::Log) && log.is_none() {
            log = Some(id);
        }
        let verdict = match r.action {
            Action::Accept => Verdict::Accept,
            Action::Drop => Verdict::Drop,
            Action::Reject(c) => Verdict::Reject(c),
            Action::Log | Action::Counter => continue,
        };
        return Judgement {
            verdict,
            by: Decider::Rule(id),
            log,
            reply: matches!(verdict, Verdict::Reject(_)),
        };
    }
    let known = |z: Option<ZoneId>| z.filter(|&z| usize::from(z) < p.zones.len());
    if v.chain == Chain::Forward {
        if let (Some(i), Some(o)) = (known(v.in_zone), known(v.out_zone)) {
            if let Some(f) = p.forwardings.iter().position(|f| f.src == i && f.dest == o) {
                return Judgement {
                    verdict: Verdict::Accept,
                    by: Decider::Forwarding(u32::try_from(f).unwrap()),
                    log,
                    reply: false,
                };
            }
        }
    }
    let z = match v.chain {
        Chain::Input | Chain::Forward => known(v.in_zone),
        Chain::Output => known(v.out_zone),
    };
    let Some(z) = z else {
        return Judgement {
            verdict: Verdict::Drop,
            by: Decider::NoZone,
            log,
            reply: false,
        };
    };
    let zone = &p.zones[usize::from(z)];
    let action = match v.chain {
        Chain::Input => zone.input,
        Chain::Output => zone.output,
        Chain::Forward => zone.forward,
    };
    let verdict = match action {
        PolicyAction::Accept => Verdict::Accept,
        PolicyAction::Drop => Verdict::Drop,
        PolicyAction::Reject => Verdict::Reject(RejectCode::PortUnreachable),
    };
    Judgement {
        verdict,
        by: Decider::ZonePolicy {
            zone: z,
            chain: v.chain,
        },
        log,
        reply: matches!(verdict, Verdict::Reject(_)),
    }
}

const NETS: &[&str] = &[
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.1.2.0/25",
    "192.168.0.0/16",
    "192.168.1.0/24",
    "0.0.0.0/0",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::5/128",
    "::/0",
];
const ADDRS: &[&str] = &[
    "10.1.2.3",
    "10.1.2.4",
    "10.1.2.200",
    "10.1.3.1",
    "10.2.0.1",
    "192.168.1.1",
    "192.168.2.1",
    "8.8.8.8",
    "2001:db8:1::5",
    "2001:db8:1::6",
    "2001:db8:2::1",
    "2001:4860::8888",
];
const PORTS: &[u16] = &[22, 53, 80, 123, 443, 1000, 1001, 8080];
const PROTOS: &[u8] = &[TCP, UDP, ICMP, ICMPV6, 47];

fn random_addr_match(r: &mut Rng, sets: usize) -> AddrMatch {
    if r.chance(55) {
        return AddrMatch::default();
    }
    let mut items = Vec::new();
    for _ in 0..1 + r.below(3) {
        if sets > 0 && r.chance(15) {
            items.push(AddrItem::Set(u32::try_from(r.below(sets)).unwrap()));
        } else {
            items.push(AddrItem::Net(net(r.pick(NETS))));
        }
    }
    AddrMatch {
        items,
        negate: r.chance(15),
    }
}

fn random_ports(r: &mut Rng) -> PortMatch {
    if r.chance(50) {
        return PortMatch::default();
    }
    let mut ranges = Vec::new();
    for _ in 0..1 + r.below(2) {
        let a = r.pick(PORTS);
        ranges.push(if r.chance(20) {
            (a, a.saturating_add(u16::try_from(r.below(600)).unwrap()))
        } else {
            (a, a)
        });
    }
    PortMatch { ranges }
}

fn random_zone_sel(r: &mut Rng, zones: u16) -> Option<ZoneSel> {
    match r.below(5) {
        0 => None,
        1 => Some(ZoneSel::Any),
        _ => Some(ZoneSel::Zone(
            u16::try_from(r.below(usize::from(zones))).unwrap(),
        )),
    }
}

fn random_match(r: &mut Rng, zones: u16, sets: usize) -> Match {
    let proto = if r.chance(40) {
        Vec::new()
    } else {
        (0..1 + r.below(2)).map(|_| r.pick(PROTOS)).collect()
    };
    Match {
        src: random_zone_sel(r, zones),
        dest: random_zone_sel(r, zones),
        in_iface: r.chance(10).then(|| u16::try_from(r.below(3)).unwrap()),
        out_iface: r.chance(10).then(|| u16::try_from(r.below(3)).unwrap()),
        family: r
            .chance(10)
            .then(|| if r.chance(50) { Family::V4 } else { Family::V6 }),
        src_addr: random_addr_match(r, sets),
        dst_addr: random_addr_match(r, sets),
        proto,
        sport: if r.chance(15) {
            random_ports(r)
        } else {
            PortMatch::default()
        },
        dport: random_ports(r),
        icmp: if r.chance(15) {
            vec![IcmpMatch {
                v6: r.chance(50),
                ty: r.pick(&[0, 3, 8, 128, 129]),
                code: r.chance(30).then(|| r.pick(&[0, 3])),
            }]
        } else {
            Vec::new()
        },
        tcp_flags: r.chance(10).then(|| TcpFlagsMatch {
            mask: 0x12,
            value: r.pick(&[0x02, 0x12, 0x10]),
        }),
        ct_state: if r.chance(30) {
            StateSet::of(&[r.pick(&CtState::ALL), r.pick(&CtState::ALL)])
        } else {
            StateSet::ANY
        },
        ct_dir: r.chance(10).then(|| {
            if r.chance(50) {
                Direction::Original
            } else {
                Direction::Reply
            }
        }),
    }
}

fn random_view(r: &mut Rng, zones: u16) -> View {
    let v6 = r.chance(35);
    let addr = |r: &mut Rng| loop {
        let a = ip(r.pick(ADDRS));
        if a.is_ipv6() == v6 {
            return a;
        }
    };
    let proto = r.pick(PROTOS);
    let ports = matches!(proto, TCP | UDP);
    let icmp = matches!(proto, ICMP | ICMPV6);
    let zone = |r: &mut Rng| {
        (!r.chance(10)).then(|| u16::try_from(r.below(usize::from(zones) + 1)).unwrap())
    };
    View {
        chain: r.pick(&[Chain::Input, Chain::Output, Chain::Forward]),
        in_zone: zone(r),
        out_zone: zone(r),
        in_iface: r.chance(70).then(|| u16::try_from(r.below(3)).unwrap()),
        out_iface: r.chance(70).then(|| u16::try_from(r.below(3)).unwrap()),
        family: if v6 { Family::V6 } else { Family::V4 },
        proto,
        src: addr(r),
        dst: addr(r),
        sport: ports.then(|| r.pick(PORTS)),
        dport: ports.then(|| {
            if r.chance(80) {
                r.pick(PORTS)
            } else {
                r.pick(PORTS) + u16::try_from(r.below(700)).unwrap()
            }
        }),
        icmp_type: icmp.then(|| r.pick(&[0, 3, 8, 128, 129])),
        icmp_code: icmp.then(|| r.pick(&[0, 3])),
        tcp_flags: (proto == TCP).then(|| r.pick(&[0x02, 0x12, 0x10, 0x11])),
        state: r.pick(&CtState::ALL),
        dir: r.chance(80).then(|| {
            if r.chance(50) {
                Direction::Original
            } else {
                Direction::Reply
            }
        }),
        len: u32::try_from(40 + r.below(1400)).unwrap(),
        now: Time::from_secs(1),
    }
}

fn random_policy(r: &mut Rng, rules: usize, zones: u16) -> Policy {
    let unlimited = Limit {
        count: 1,
        per: Time::ZERO,
        burst: 1,
        per_source: false,
    };
    let mut p = Policy::default();
    p.defaults.drop_invalid = r.chance(50);
    p.defaults.accept_established = r.chance(50);
    p.defaults.reject_limit = unlimited;
    p.defaults.log_limit = unlimited;
    let actions = [
        PolicyAction::Accept,
        PolicyAction::Drop,
        PolicyAction::Reject,
    ];
    for z in 0..zones {
        p.zones.push(zone(
            &format!("z{z}"),
            r.pick(&actions),
            r.pick(&actions),
            r.pick(&actions),
        ));
    }
    for _ in 0..zones {
        let src = u16::try_from(r.below(usize::from(zones))).unwrap();
        let dest = u16::try_from(r.below(usize::from(zones))).unwrap();
        p.forwardings.push(Forwarding {
            src,
            dest,
            span: Span::default(),
        });
    }
    for s in 0..2 {
        let prefixes = (0..1 + r.below(4)).map(|_| net(r.pick(NETS))).collect();
        p.sets.push(PrefixSet {
            name: format!("s{s}"),
            prefixes,
            span: Span::default(),
        });
    }
    for _ in 0..rules {
        let action = match r.below(10) {
            0..=2 => Action::Accept,
            3..=4 => Action::Drop,
            5 => Action::Reject(RejectCode::AdminProhibited),
            6..=7 => Action::Log,
            _ => Action::Counter,
        };
        let mut rl = rule("", random_match(r, zones, p.sets.len()), action);
        rl.log = r.chance(10);
        p.rules.push(rl);
    }
    p
}

#[test]
fn compiled_index_agrees_with_a_naive_evaluator() {
    let mut r = Rng(0xdead_beef_cafe_f00d);
    for round in 0..30 {
        let rules = [3, 20, 80, 300][round % 4];
        let zones = u16::try_from(1 + round % 5).unwrap();
        let p = random_policy(&mut r, rules, zones);
        let mut rs = Ruleset::new(&p);
        let mut counters = vec![Counter::default(); p.rules.len()];
        for _ in 0..3000 {
            let v = random_view(&mut r, zones);
            let want = naive_evaluate(&p, &mut counters, &v);
            let got = rs.evaluate(&v);
            assert_eq!(got, want, "round {round}: {v:?}");
        }
        assert_eq!(rs.counters(), &counters[..], "round {round}");
    }
}

#[test]
fn compiled_notrack_agrees_with_a_naive_evaluator() {
    let mut r = Rng(0x0123_4567_89ab_cdef);
    for round in 0..20 {
        let zones = u16::try_from(1 + round % 4).unwrap();
        let mut p = random_policy(&mut r, 0, zones);
        for _ in 0..[2, 10, 60, 200][round % 4] {
            let mut m = random_match(&mut r, zones, p.sets.len());
            m.dest = None;
            m.out_iface = None;
            m.ct_state = StateSet::ANY;
            m.ct_dir = None;
            p.notrack.push(NotrackRule {
                name: None,
                m,
                span: Span::default(),
            });
        }
        let mut rs = Ruleset::new(&p);
        for _ in 0..2000 {
            let v = random_view(&mut r, zones);
            let want = p
                .notrack
                .iter()
                .position(|n| naive_match(&p, &n.m, &v, true))
                .map(|i| u32::try_from(i).unwrap());
            assert_eq!(rs.notrack(&v), want, "round {round}: {v:?}");
        }
    }
}

#[test]
fn many_zones_fall_back_to_one_group_per_chain() {
    // 300 zones, every forward rule for its own pair and many rules for any pair: the full
    // partition would be too large, so the chain gets one group; results must not change.
    let mut r = Rng(42);
    let zones = 300u16;
    let mut p = random_policy(&mut r, 0, zones);
    for i in 0..600u16 {
        let m = Match {
            src: Some(ZoneSel::Zone(i % zones)),
            dest: Some(ZoneSel::Zone((i * 7 + 1) % zones)),
            dport: ports(&[1000 + i]),
            ..Match::default()
        };
        p.rules.push(rule("", m, Action::Accept));
        p.rules.push(rule(
            "",
            Match {
                src: Some(ZoneSel::Any),
                dest: Some(ZoneSel::Any),
                dport: ports(&[2000 + i]),
                ..Match::default()
            },
            Action::Drop,
        ));
    }
    let mut rs = Ruleset::new(&p);
    let mut counters = vec![Counter::default(); p.rules.len()];
    for i in 0..5000u16 {
        let v = View {
            chain: Chain::Forward,
            in_zone: Some(i % zones),
            out_zone: Some((i * 7 + 1 + (i % 3)) % zones),
            dport: Some(if i % 2 == 0 {
                1000 + i % 600
            } else {
                2000 + i % 700
            }),
            state: CtState::New,
            ..pkt()
        };
        assert_eq!(
            rs.evaluate(&v),
            naive_evaluate(&p, &mut counters, &v),
            "{v:?}"
        );
    }
    assert_eq!(rs.counters(), &counters[..]);
}

#[test]
fn nested_prefixes_over_budget_still_agree() {
    // 100 rules under 10.0.0.0/8 (each also naming a /24 of its own) and 3,000 rules with a
    // /24 inside it: listing the /8's rules under every /24 would be too large, so the /8 is
    // demoted to the unkeyed list while the rules' own /24s stay indexed.
    let mut p = base();
    p.defaults.log_limit = Limit {
        count: 1,
        per: Time::ZERO,
        burst: 1,
        per_source: false,
    };
    for i in 0..100u32 {
        let m = Match {
            src_addr: AddrMatch {
                items: vec![
                    AddrItem::Net(net("10.0.0.0/8")),
                    AddrItem::Net(
                        IpNet::new(IpAddr::V4((0xac10_0000 | i << 8).into()), 24).unwrap(),
                    ),
                ],
                negate: false,
            },
            dport: PortMatch {
                ranges: vec![(u16::try_from(i).unwrap(), 65535)],
            },
            ..input_from(WAN)
        };
        p.rules.push(rule(
            "",
            m,
            if i % 2 == 0 {
                Action::Counter
            } else {
                Action::Log
            },
        ));
    }
    for i in 0..3000u32 {
        let m = Match {
            src_addr: AddrMatch {
                items: vec![AddrItem::Net(
                    IpNet::new(IpAddr::V4((0x0a00_0000 | i << 8).into()), 24).unwrap(),
                )],
                negate: false,
            },
            dport: PortMatch {
                ranges: vec![(1000, 65535)],
            },
            ..input_from(WAN)
        };
        p.rules.push(rule("", m, Action::Accept));
    }
    let mut rs = Ruleset::new(&p);
    let mut counters = vec![Counter::default(); p.rules.len()];
    let mut r = Rng(7);
    for _ in 0..3000 {
        let base = if r.chance(50) {
            0x0a00_0000
        } else {
            0xac10_0000
        };
        let a = base | u32::try_from(r.below(4000 << 8)).unwrap();
        let v = View {
            src: IpAddr::V4(a.into()),
            dport: Some(u16::try_from(r.below(2000)).unwrap()),
            ..pkt()
        };
        assert_eq!(
            rs.evaluate(&v),
            naive_evaluate(&p, &mut counters, &v),
            "{v:?}"
        );
    }
    assert_eq!(rs.counters(), &counters[..]);
    // The index stays far below rules x prefixes.
    assert!(rs.stats().references < 20_000, "{:?}", rs.stats());
}

// ---- Topology

fn iface(
    name: &str,
    zone: ZoneId,
    addrs: &[&str],
    routes: &[&str],
    default_route: bool,
) -> Interface {
    Interface {
        name: name.into(),
        zone,
        addrs: addrs.iter().map(|s| net(s)).collect(),
        routes: routes.iter().map(|s| net(s)).collect(),
        default_route,
        gateway: Vec::new(),
        ifindex: None,
        mac: None,
        span: Span::default(),
    }
}

fn topology_policy() -> Policy {
    let mut p = base();
    p.interfaces = vec![
        iface(
            "lan",
            LAN,
            &["192.168.1.1/24", "fd00::1/64"],
            &["10.10.0.0/16"],
            false,
        ),
        iface("wan", WAN, &["203.0.113.2/30"], &[], true),
        iface("wan6", WAN, &["2001:db8::2/64"], &[], true),
        iface(
            "dmz",
            DMZ,
            &["172.16.0.1/16"],
            &["172.16.5.0/24", "10.10.20.0/24"],
            false,
        ),
    ];
    p.interfaces[0].ifindex = Some(7);
    p.interfaces[1].ifindex = Some(3);
    p.interfaces[2].mac = Some([2, 0, 0, 0, 0, 9]);
    p.interfaces[3].mac = Some([2, 0, 0, 0, 0, 1]);
    p
}

#[test]
fn topology_routes_by_longest_prefix_and_default_per_family() {
    let t = Topology::new(&topology_policy());
    assert_eq!(t.route(ip("192.168.1.77")), Some(0));
    assert_eq!(t.route(ip("10.10.1.1")), Some(0));
    // A longer static route through another interface wins.
    assert_eq!(t.route(ip("10.10.20.5")), Some(3));
    assert_eq!(t.route(ip("172.16.5.5")), Some(3));
    assert_eq!(t.route(ip("172.16.200.1")), Some(3));
    assert_eq!(t.route(ip("203.0.113.1")), Some(1));
    assert_eq!(t.route(ip("fd00::99")), Some(0));
    assert_eq!(t.route(ip("2001:db8::99")), Some(2));
    // Defaults: IPv4 through wan, IPv6 through wan6.
    assert_eq!(t.route(ip("8.8.8.8")), Some(1));
    assert_eq!(t.route(ip("2001:4860::8888")), Some(2));

    // One default interface with IPv4 only still takes IPv6 when no other has it.
    let mut p = topology_policy();
    p.interfaces[2].default_route = false;
    let t = Topology::new(&p);
    assert_eq!(t.route(ip("2001:4860::8888")), Some(1));
    // No default route at all.
    p.interfaces[1].default_route = false;
    let t = Topology::new(&p);
    assert_eq!(t.route(ip("8.8.8.8")), None);
    assert_eq!(t.route(ip("192.168.1.5")), Some(0));
}

#[test]
fn topology_local_addresses_and_broadcast() {
    let t = Topology::new(&topology_policy());
    for a in [
        "192.168.1.1",
        "fd00::1",
        "203.0.113.2",
        "2001:db8::2",
        "172.16.0.1",
    ] {
        assert!(t.is_local(ip(a)), "{a}");
    }
    for a in [
        "192.168.1.255",
        "203.0.113.3",
        "172.16.255.255",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",
        "ff05::1:3",
        "127.0.0.1",
        "::1",
    ] {
        assert!(t.is_local(ip(a)), "{a}");
    }
    for a in [
        "192.168.1.2",
        "192.168.1.0",
        "203.0.113.1",
        "8.8.8.8",
        "2001:db8::3",
        "fe80::1",
        "240.0.0.1",
        "10.10.255.255",
    ] {
        assert!(!t.is_local(ip(a)), "{a}");
    }
    // /31 and /32 have no broadcast address.
    let mut p = base();
    p.interfaces = vec![iface(
        "p2p",
        WAN,
        &["198.51.100.0/31", "198.51.100.9/32"],
        &[],
        false,
    )];
    let t = Topology::new(&p);
    assert!(t.is_local(ip("198.51.100.0")));
    assert!(!t.is_local(ip("198.51.100.1")));
    assert!(t.is_local(ip("198.51.100.9")));
}

#[test]
fn topology_interfaces_and_zones() {
    let t = Topology::new(&topology_policy());
    assert_eq!(t.iface_by_ifindex(7), Some(0));
    assert_eq!(t.iface_by_ifindex(3), Some(1));
    assert_eq!(t.iface_by_ifindex(4), None);
    assert_eq!(t.iface_by_mac([2, 0, 0, 0, 0, 1]), Some(3));
    assert_eq!(t.iface_by_mac([2, 0, 0, 0, 0, 9]), Some(2));
    assert_eq!(t.iface_by_mac([2, 0, 0, 0, 0, 2]), None);
    assert_eq!(t.zone_of(0), LAN);
    assert_eq!(t.zone_of(2), WAN);
    assert_eq!(t.zone_of(3), DMZ);
}
