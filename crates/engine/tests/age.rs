//! A connection's age: seconds since it was created, as listings (and the web interface's
//! Age column) show it; kept across a save and restore.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::{Config, Engine, Time};

#[test]
fn age_counts_from_the_first_packet_and_survives_a_restore() {
    let mut sim = Sim::new();
    let (a, b) = (v4(10, 0, 0, 1), v4(192, 0, 2, 9));
    expect_new(&sim.eth(&udp_frame(a, b, 5000, 53, b"q")));
    assert_eq!(sim.only().age, 0);
    sim.advance(7);
    expect_est_reply(&sim.eth(&udp_frame(b, a, 53, 5000, b"r")));
    assert_eq!(sim.only().age, 7, "answers do not make it younger");
    sim.advance(5);
    sim.eth(&udp_frame(a, b, 5000, 53, b"q2"));
    let c = sim.only();
    assert_eq!(c.age, 12);

    // Another connection opened later is younger.
    expect_new(&sim.eth(&udp_frame(a, b, 5001, 53, b"q")));
    let mut ages: Vec<u32> = sim.conns().iter().map(|c| c.age).collect();
    ages.sort_unstable();
    assert_eq!(ages, vec![0, 12]);

    // Saved, then restored by an engine whose clock reads something else entirely: the
    // age carries over as an age.
    let mut file = Vec::new();
    sim.engine.save(sim.now, &mut file).unwrap();
    let mut other = Engine::new(Config::default());
    let later = Time::from_secs(50_000);
    let report = other.restore(later, &mut file.as_slice()).unwrap();
    assert_eq!(report.restored, 2);
    other.expire(Time::from_secs(50_003));
    let mut ages: Vec<u32> = other.connections().map(|c| c.age).collect();
    ages.sort_unstable();
    assert_eq!(ages, vec![3, 15]);
}
