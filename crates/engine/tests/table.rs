//! Table pressure (eviction, refusal), stats, and batch processing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;

fn small() -> Sim {
    Sim::with(Config {
        max_connections: 4,
        ..Config::default()
    })
}

fn q(i: u16) -> Vec<u8> {
    udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 10_000 + i, 53, b"q")
}
fn r(i: u16) -> Vec<u8> {
    udp_frame(v4(10, 0, 0, 2), v4(10, 0, 0, 1), 53, 10_000 + i, b"r")
}

#[test]
fn full_of_unreplied_evicts() {
    let mut sim = small();
    for i in 0..4 {
        expect_new(&sim.eth(&q(i)));
    }
    assert_eq!(sim.engine.len(), 4);
    let o = sim.eth(&q(4));
    expect_new(&o);
    assert_eq!(sim.engine.stats().evicted, 1);
    assert_eq!(sim.engine.stats().refused, 0);
    assert_eq!(sim.engine.len(), 4);
    assert!(sim.conns().iter().any(|c| c.original.l4
        == L4Tuple::Ports {
            sport: 10_004,
            dport: 53
        }));
}

#[test]
fn full_of_replied_unassured_evicts() {
    // Replied but not yet assured (a UDP exchange younger than 2 s): netfilter's early drop
    // takes such entries, and so does the engine.
    let mut sim = small();
    for i in 0..4 {
        expect_new(&sim.eth(&q(i)));
        expect_est_reply(&sim.eth(&r(i)));
    }
    assert!(sim.conns().iter().all(|c| c.seen_reply && !c.assured));
    expect_new(&sim.eth(&q(4)));
    assert_eq!(sim.engine.stats().evicted, 1);
    assert_eq!(sim.engine.stats().refused, 0);
    assert_eq!(sim.engine.len(), 4);
}

#[test]
fn full_of_assured_refuses() {
    let mut sim = small();
    for i in 0..4 {
        expect_new(&sim.eth(&q(i)));
        expect_est_reply(&sim.eth(&r(i)));
    }
    // Still active more than 2 s after creation: UDP streams, assured.
    sim.advance(3);
    for i in 0..4 {
        expect_est_orig(&sim.eth(&q(i)));
    }
    assert!(sim.conns().iter().all(|c| c.assured));
    let o = sim.eth(&q(4));
    assert_eq!(o.verdict, Verdict::Drop, "{o:?}");
    assert_eq!(o.reason, Some(DropReason::TableFull), "{o:?}");
    assert_eq!(sim.engine.stats().refused, 1);
    assert_eq!(sim.engine.stats().evicted, 0);
    assert_eq!(sim.engine.len(), 4);
    // Existing connections keep working.
    expect_est_orig(&sim.eth(&q(0)));
    // Once one expires (the UDP stream timeout) there is room again.
    sim.advance(121);
    expect_new(&sim.eth(&q(4)));
}

#[test]
fn eviction_prefers_unreplied() {
    let mut sim = small();
    for i in 0..3 {
        sim.eth(&q(i));
        sim.eth(&r(i));
    }
    sim.eth(&q(3)); // the only unreplied one
    expect_new(&sim.eth(&q(4)));
    assert_eq!(sim.engine.stats().evicted, 1);
    let ports: Vec<_> = sim.conns().iter().map(|c| c.original.l4).collect();
    assert!(
        !ports.contains(&L4Tuple::Ports {
            sport: 10_003,
            dport: 53
        }),
        "{ports:?}"
    );
    for i in 0..3 {
        assert!(
            ports.contains(&L4Tuple::Ports {
                sport: 10_000 + i,
                dport: 53
            }),
            "{ports:?}"
        );
    }
}

#[test]
fn stats_count_states_and_reasons() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    sim.eth(&f.seg(true, f.cseq, 0, SYN | FIN, 1, &[], &[]));
    let s = sim.engine.stats();
    assert_eq!(s.packets, 4);
    assert_eq!(s.created, 1);
    assert_eq!(s.by_reason[DropReason::TcpBadFlags.index()], 1);
    assert_eq!(s.by_state.iter().sum::<u64>(), 4);
    assert!(s.peak >= 1);
}

fn mixed_sequence() -> Vec<(Time, LinkType, Vec<u8>, usize)> {
    let mut v = Vec::new();
    let mut f = Flow::v4();
    let mut t = 1u64;
    let push = |v: &mut Vec<_>, d: Vec<u8>, t: &mut u64| {
        let n = d.len();
        v.push((Time::from_secs(*t), LinkType::Ethernet, d, n));
        *t += 1;
    };
    push(&mut v, f.seg(true, f.cseq, 0, SYN, 65535, &[], &[]), &mut t);
    f.cseq += 1;
    push(
        &mut v,
        f.seg(false, f.sseq, f.cseq, SYN | ACK, 65535, &[], &[]),
        &mut t,
    );
    f.sseq += 1;
    push(
        &mut v,
        f.seg(true, f.cseq, f.sseq, ACK, 65535, &[], &[]),
        &mut t,
    );
    push(
        &mut v,
        f.seg(true, f.cseq, f.sseq, ACK | PSH, 65535, &[], &[1; 100]),
        &mut t,
    );
    push(
        &mut v,
        f.seg(true, f.cseq + 1_000_000, f.sseq, ACK, 65535, &[], &[]),
        &mut t,
    );
    push(
        &mut v,
        f.seg(true, f.cseq, f.sseq, SYN | FIN, 65535, &[], &[]),
        &mut t,
    );
    for i in 0..6 {
        push(&mut v, q(i), &mut t);
        push(&mut v, r(i), &mut t);
    }
    push(
        &mut v,
        echo4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), true, 5, 5),
        &mut t,
    );
    push(
        &mut v,
        echo4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), false, 5, 5),
        &mut t,
    );
    push(&mut v, vec![0u8; 7], &mut t);
    let syn = f.seg(true, 77, 0, SYN, 65535, &[], &[0; 40]);
    let n = syn.len();
    v.push((
        Time::from_secs(t),
        LinkType::Ethernet,
        syn[..60].to_vec(),
        n,
    ));
    v.push((Time::from_secs(t + 40), LinkType::Ethernet, q(0), 0));
    let raw = udp_raw(v6(1), v6(2), 1, 2, b"x");
    let n = raw.len();
    v.push((Time::from_secs(t + 41), LinkType::Raw, raw, n));
    v
}

#[test]
fn batch_matches_one_by_one() {
    for max in [3u32, 1000] {
        let seq = mixed_sequence();
        let cfg = Config {
            max_connections: max,
            ..Config::default()
        };
        let mut a = Engine::new(cfg.clone());
        let one: Vec<Outcome> = seq
            .iter()
            .map(|(t, l, d, w)| {
                if *w > d.len() {
                    a.process_captured(*t, *l, d, *w)
                } else {
                    a.process(*t, *l, d)
                }
            })
            .collect();
        let mut b = Engine::new(cfg);
        let batch: Vec<Packet<'_>> = seq
            .iter()
            .map(|(t, l, d, w)| Packet {
                now: *t,
                link: *l,
                data: d,
                wire_len: (*w).max(d.len()),
            })
            .collect();
        let mut out = Vec::new();
        // Two batches, to check the output is appended or replaced consistently.
        let (x, y) = batch.split_at(batch.len() / 2);
        b.process_batch(x, &mut out);
        let mut out2 = Vec::new();
        b.process_batch(y, &mut out2);
        assert_eq!(out.len(), x.len());
        assert_eq!(out2.len(), y.len());
        out.extend(out2);
        assert_eq!(one, out, "max_connections {max}");
        let ca: Vec<Conn> = a.connections().collect();
        let cb: Vec<Conn> = b.connections().collect();
        assert_eq!(ca.len(), cb.len());
        assert_eq!(a.stats().packets, b.stats().packets);
        assert_eq!(a.stats().by_state, b.stats().by_state);
    }
}

/// A table of 1,000 connections with pf's adaptive timeouts (from 60% full).
fn adaptive_sim() -> Sim {
    Sim::with(Config {
        max_connections: 1_000,
        adaptive: Some(keepstate_engine::Adaptive::pf(1_000)),
        ..Config::default()
    })
}

#[test]
fn adaptive_timeouts_shrink_as_the_table_fills() {
    let mut sim = adaptive_sim();
    let flow = |i: u16| udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), i, 53, b"q");
    let timeout_of = |sim: &Sim, i: u16| {
        sim.conns()
            .iter()
            .find(|c| {
                c.original.l4
                    == L4Tuple::Ports {
                        sport: i,
                        dport: 53,
                    }
            })
            .map(|c| c.timeout)
    };
    // Below 60% of the limit: netfilter's 30 s for an unreplied flow.
    for i in 1..=600u16 {
        expect_new(&sim.eth(&flow(i)));
    }
    assert_eq!(timeout_of(&sim, 600), Some(30));
    // At 90%: halfway from 600 to 1,200, so half the timeout.
    for i in 601..=900u16 {
        expect_new(&sim.eth(&flow(i)));
    }
    let t = timeout_of(&sim, 900).unwrap();
    assert!((14..=16).contains(&t), "{t}");
    // Full: a third.
    for i in 901..=1_000u16 {
        expect_new(&sim.eth(&flow(i)));
    }
    let t = timeout_of(&sim, 1_000).unwrap();
    assert!((9..=11).contains(&t), "{t}");
    // In force now for every state: a third, to within one of the 64 steps.
    let est = sim.engine.config().timeouts.tcp_established;
    assert!((144_000..=151_000).contains(&est), "{est}");
    // Older entries keep the deadline they were given until their next packet.
    assert_eq!(timeout_of(&sim, 1), Some(30));
}

#[test]
fn adaptive_timeouts_reach_every_tcp_state() {
    let mut sim = adaptive_sim();
    // At 90% of the limit the timeouts in force are about half those configured.
    for i in 1..=900u16 {
        expect_new(&sim.eth(&udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), i, 53, b"q")));
    }
    let mut f = Flow::v4();
    let timeout = |sim: &Sim, f: &Flow| {
        let c = sim.conns().into_iter().find(|c| {
            c.original.l4
                == L4Tuple::Ports {
                    sport: f.cp,
                    dport: f.sp,
                }
        });
        c.map(|c| (c.tcp_state, c.timeout))
    };
    expect_new(&f.c(&mut sim, SYN, &[]));
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    let (state, t) = timeout(&sim, &f).unwrap();
    assert_eq!(state, Some(TcpState::SynRecv));
    assert!((28..=32).contains(&t), "SYN_RECV: {t}");
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    let (state, t) = timeout(&sim, &f).unwrap();
    assert_eq!(state, Some(TcpState::Established));
    assert!((210_000..=222_000).contains(&t), "ESTABLISHED: {t}");
    expect_est_orig(&f.c(&mut sim, FIN | ACK, &[]));
    let (state, t) = timeout(&sim, &f).unwrap();
    assert_eq!(state, Some(TcpState::FinWait));
    assert!((58..=62).contains(&t), "FIN_WAIT: {t}");
}

#[test]
fn a_full_table_evicts_closed_connections_before_refusing() {
    let mut sim = small();
    // Four TCP connections through their handshake and close: assured, in TIME_WAIT.
    for i in 0..4u16 {
        let mut f = Flow::v4();
        f.cp = 40_000 + i;
        expect_new(&f.c(&mut sim, SYN, &[]));
        expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
        expect_est_orig(&f.c(&mut sim, ACK, &[]));
        expect_est_orig(&f.c(&mut sim, FIN | ACK, &[]));
        expect_est_reply(&f.s(&mut sim, FIN | ACK, &[]));
        expect_est_orig(&f.c(&mut sim, ACK, &[]));
    }
    assert!(sim
        .conns()
        .iter()
        .all(|c| c.tcp_state == Some(TcpState::TimeWait) && c.assured));
    let o = sim.eth(&q(9));
    expect_new(&o);
    assert_eq!(sim.engine.stats().evicted, 1);
    assert_eq!(sim.engine.stats().refused, 0);
}

/// A batch starts each lookup from the index slot its look-ahead found some packets before.
/// Here connections are refused by the server's RST (which removes them) and their ids are
/// taken again within that distance, by the same tuple (a new SYN) and by other tuples, so
/// the slots go stale: the outcomes and the table must be those of packets judged one at a
/// time. (Debug builds also check every lookup that starts from a slot against a search.)
#[test]
fn stale_look_ahead_slots_change_nothing() {
    use keepstate_engine::wire::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
    let flow = |cp: u16| Flow { cp, ..Flow::v4() };
    let syn = |f: &Flow| f.seg(true, f.cseq, 0, TCP_SYN, f.cwin, &[], b"");
    let refuse = |f: &Flow| f.seg(false, 0, f.cseq + 1, TCP_RST | TCP_ACK, 0, &[], b"");
    let synack = |f: &Flow| {
        f.seg(
            false,
            f.sseq,
            f.cseq + 1,
            TCP_SYN | TCP_ACK,
            f.swin,
            &[],
            b"",
        )
    };
    // SYN and FIN together: invalid, touches no entry; spaces the packets that matter.
    let junk = flow(9).seg(true, 1, 0, TCP_SYN | TCP_FIN, 1_000, &[], b"");
    let mut frames = Vec::new();
    for round in 0..6u16 {
        let (t, u) = (flow(41_000 + round), flow(42_000 + round));
        // T's entry exists when the look-ahead, eight packets ahead, reaches the packet of
        // T's tuple at the end of the block; it is removed, and its id taken by U, before
        // that packet's turn: the slot names an entry holding another tuple.
        frames.push(syn(&t));
        frames.push(junk.clone());
        frames.push(refuse(&t));
        frames.push(syn(&u));
        frames.extend(std::iter::repeat_n(junk.clone(), 5));
        frames.push(syn(&t));
        // Now U goes and T's tuple opens again: the slot the look-ahead found for T's
        // SYN/ACK names T's old id, which the new T took again.
        frames.push(refuse(&u));
        frames.push(refuse(&t));
        frames.push(syn(&t));
        frames.extend(std::iter::repeat_n(junk.clone(), 5));
        frames.push(synack(&t));
    }
    let now = Time::from_secs(1_000);
    let mut one = Engine::new(Config::default());
    let expected: Vec<Outcome> = frames
        .iter()
        .map(|f| one.process(now, LinkType::Ethernet, f))
        .collect();
    let mut batched = Engine::new(Config::default());
    let batch: Vec<Packet<'_>> = frames
        .iter()
        .map(|f| Packet {
            now,
            link: LinkType::Ethernet,
            data: f,
            wire_len: f.len(),
        })
        .collect();
    let mut got = Vec::new();
    batched.process_batch(&batch, &mut got);
    assert_eq!(got, expected);
    let list = |e: &Engine| {
        let mut v: Vec<String> = e.connections().map(|c| format!("{c:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(list(&batched), list(&one));
    assert!(batched.stats().by_state[CtState::Invalid as usize] > 0);
}
