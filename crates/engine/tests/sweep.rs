//! The expiry sweep: driven by packets alone, it reclaims every expired connection within a
//! bounded number of packets, and passes over the parts of the table in which nothing can
//! have expired yet without reclaiming anything late.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::{Adaptive, Config};
use std::net::IpAddr;

/// `n` UDP flows from distinct sources (more than one 4096-entry chunk of the table).
fn open_flows(sim: &mut Sim, n: u16) {
    for i in 0..n {
        let src = v4(10, 1, (i >> 8) as u8, (i & 0xff) as u8);
        expect_new(&sim.eth(&udp_frame(src, srv(), 40_000, 53, b"q")));
    }
}

fn srv() -> IpAddr {
    v4(198, 51, 100, 7)
}

/// Sends `n` packets of one unrelated flow (each moves the sweep on), checking the table.
fn other_traffic(sim: &mut Sim, n: usize) {
    let other = udp_frame(v4(10, 0, 0, 2), srv(), 50_000, 123, b"ntp");
    for _ in 0..n {
        sim.eth(&other);
    }
    sim.engine.check_table().unwrap();
}

#[test]
fn every_flow_is_reclaimed_within_two_passes_after_it_expires() {
    let mut sim = Sim::new();
    open_flows(&mut sim, 10_000);
    // Many packets with nothing expired: the sweep learns that nothing can expire before
    // the least timeout has passed, and from then on passes the table over.
    sim.at(1);
    other_traffic(&mut sim, 50_000);
    assert_eq!(sim.engine.stats().expired, 0);
    assert_eq!(sim.engine.len(), 10_001);
    sim.at(20);
    other_traffic(&mut sim, 1);

    // 30 s unreplied timeout: all of them are stale at 31 s, not the unrelated flow.
    sim.at(31);
    other_traffic(&mut sim, 2 * 10_001 + 16);
    assert_eq!(sim.engine.stats().expired, 10_000);
    assert_eq!(sim.engine.len(), 1, "only the unrelated flow is left");
}

#[test]
fn a_connection_given_the_least_timeout_after_the_sweep_passed_is_reclaimed_on_time() {
    let mut sim = Sim::new();
    // An established TCP connection, reset at 17 s: the close timeout (10 s, the least of
    // all timeouts) runs from then.
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    open_flows(&mut sim, 5_000);
    sim.at(1);
    other_traffic(&mut sim, 20_000);
    // Past the least timeout the sweep reads the table again, at 16 s: nothing in it can
    // expire before 26 s, unless it is given a timeout from now on.
    sim.at(16);
    other_traffic(&mut sim, 20_000);
    sim.at(17);
    f.c(&mut sim, RST | ACK, b"");
    assert_eq!(sim.engine.len(), 5_002);
    other_traffic(&mut sim, 20_000);

    // The UDP flows last until 30 s; the reset connection only until 27 s.
    sim.at(28);
    other_traffic(&mut sim, 2 * 5_002 + 16);
    assert_eq!(
        sim.engine.stats().expired,
        1,
        "the reset connection is gone"
    );
    assert_eq!(sim.engine.len(), 5_001);
}

#[test]
fn a_restored_connection_with_little_time_left_is_reclaimed_on_time() {
    // One flow saved 25 s into its 30 s timeout: 5 s left.
    let mut first = Sim::new();
    expect_new(&first.eth(&udp_frame(v4(10, 9, 9, 9), srv(), 41_000, 53, b"q")));
    let mut file = Vec::new();
    assert_eq!(
        first
            .engine
            .save(first.now.saturating_add_secs(25), &mut file)
            .unwrap(),
        1
    );

    // Restored into a busy engine whose sweep has already passed its whole table.
    let mut sim = Sim::new();
    open_flows(&mut sim, 5_000);
    sim.at(1);
    other_traffic(&mut sim, 20_000);
    let r = sim
        .engine
        .restore(sim.now, &mut file.as_slice())
        .expect("restore");
    assert_eq!(r.restored, 1);
    sim.engine.check_table().unwrap();

    // At 7 s the restored flow (due at 6 s) has expired; the others are due at 30 s.
    sim.at(7);
    other_traffic(&mut sim, 2 * 5_002 + 16);
    assert_eq!(sim.engine.stats().expired, 1, "the restored flow is gone");
    assert_eq!(sim.engine.len(), 5_001);
}

#[test]
fn adaptive_timeouts_below_every_configured_one_are_reclaimed_on_time() {
    // Timeouts shrink to their one-second minimum as soon as the table holds anything.
    let mut sim = Sim::with(Config {
        adaptive: Some(Adaptive { start: 0, end: 1 }),
        ..Config::default()
    });
    open_flows(&mut sim, 5_000);
    let short = sim.conns().iter().filter(|c| c.timeout == 1).count();
    assert!(
        short >= 4_999,
        "timeouts scaled down to 1 s: {short} of 5000"
    );
    // 3 s later every flow given 1 s has expired.
    sim.at(3);
    other_traffic(&mut sim, 2 * 5_001 + 16);
    assert_eq!(sim.engine.stats().expired, short as u64);
    assert_eq!(sim.engine.len(), 5_000 - short + 1);
}
