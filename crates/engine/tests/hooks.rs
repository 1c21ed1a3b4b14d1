//! The policy hooks: notrack before the table, and entries a filter drops never confirmed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::{Hooks, PacketMeta};

/// Exempts UDP to port 53 and drops anything new arriving for port 22.
#[derive(Default)]
struct Policy {
    raw_calls: usize,
    filtered: Vec<(CtState, Option<u16>)>,
}

impl Hooks for Policy {
    fn raw(&mut self, meta: &PacketMeta) -> bool {
        self.raw_calls += 1;
        meta.proto == Some(17) && meta.dport == Some(53)
    }

    fn filter(&mut self, out: &Outcome) -> Verdict {
        self.filtered.push((out.state, out.meta.dport));
        if out.state == CtState::New && out.meta.dport == Some(22) {
            Verdict::Drop
        } else {
            Verdict::Accept
        }
    }
}

fn run(sim: &mut Sim, hooks: &mut Policy, frame: &[u8]) -> Outcome {
    let now = sim.now;
    sim.engine
        .process_hooked(now, LinkType::Ethernet, frame, frame.len(), hooks)
}

#[test]
fn notrack_leaves_the_table_alone() {
    let mut sim = Sim::new();
    let mut p = Policy::default();
    let q = udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 4000, 53, b"q");
    let o = run(&mut sim, &mut p, &q);
    assert_eq!(o.state, CtState::Untracked);
    assert_eq!(o.verdict, Verdict::Accept);
    assert!(sim.engine.is_empty());
    // Not exempted: tracked as usual.
    let q2 = udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 4000, 123, b"q");
    expect_new(&run(&mut sim, &mut p, &q2));
    assert_eq!(sim.engine.len(), 1);
    assert_eq!(p.raw_calls, 2);
    assert_eq!(p.filtered.len(), 2);
}

#[test]
fn dropped_new_connection_is_never_confirmed() {
    let mut sim = Sim::new();
    let mut p = Policy::default();
    let syn = tcp_frame(
        v4(198, 51, 100, 7),
        v4(10, 0, 0, 2),
        5555,
        22,
        1000,
        0,
        SYN,
        64240,
        &[],
        b"",
    );
    let o = run(&mut sim, &mut p, &syn);
    assert_eq!(o.state, CtState::New);
    assert_eq!(o.verdict, Verdict::Drop);
    assert!(
        sim.engine.is_empty(),
        "a dropped SYN must not occupy the table"
    );
    assert_eq!(sim.engine.stats().created, 0);
    assert_eq!(sim.engine.stats().unconfirmed, 1);
    // The retransmitted SYN is new again, and dropped again.
    let o = run(&mut sim, &mut p, &syn);
    assert_eq!(o.state, CtState::New);
    assert!(sim.engine.is_empty());
}

#[test]
fn dropping_a_packet_of_a_known_connection_keeps_the_entry() {
    let mut sim = Sim::new();
    let mut p = Policy::default();
    let q = udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 4000, 22, b"q");
    // Accepted by a hook-less engine first, then dropped as new by the policy: the entry that
    // already exists is confirmed and stays.
    expect_new(&sim.eth(&q));
    let o = run(&mut sim, &mut p, &q);
    assert_eq!((o.state, o.verdict), (CtState::New, Verdict::Drop));
    assert_eq!(sim.engine.len(), 1);
}

#[test]
fn is_tracked_finds_connections_from_either_side() {
    let mut sim = Sim::new();
    let q = udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 4000, 123, b"q");
    expect_new(&sim.eth(&q));
    let (a, b) = ((v4(10, 0, 0, 1), 4000), (v4(10, 0, 0, 2), 123));
    assert!(sim.engine.is_tracked(sim.now, 17, a, b));
    assert!(sim.engine.is_tracked(sim.now, 17, b, a));
    assert!(!sim.engine.is_tracked(sim.now, 6, a, b));
    assert!(!sim
        .engine
        .is_tracked(sim.now, 17, a, (v4(10, 0, 0, 2), 124)));
    let ping = echo4(v4(10, 0, 0, 1), v4(10, 0, 0, 3), false, 77, 1);
    expect_new(&sim.eth(&ping));
    let now = sim.now;
    assert!(sim
        .engine
        .is_tracked(now, 1, (v4(10, 0, 0, 1), 77), (v4(10, 0, 0, 3), 77)));
    // Expired entries are not tracked any more.
    sim.advance(31);
    assert!(!sim.engine.is_tracked(sim.now, 17, a, b));
}
