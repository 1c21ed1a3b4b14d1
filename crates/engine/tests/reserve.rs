//! Room set aside up front (`Engine::reserve`): connections up to the reservation take no
//! new memory, and tracking is exactly what it is without one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::Config;

/// Client `i`'s address: 10.1.x.y.
fn client(i: u32) -> std::net::IpAddr {
    let [_, _, c, d] = i.to_be_bytes();
    v4(10, 1, c, d)
}

/// For each of `n` clients: a UDP query and its answer, then a TCP SYN to a web server.
fn traffic(n: u32) -> Vec<Vec<u8>> {
    let (dns, web) = (v4(198, 51, 100, 53), v4(198, 51, 100, 80));
    let mut frames = Vec::new();
    for i in 0..n {
        let c = client(i);
        frames.push(udp_frame(c, dns, 40_000, 53, b"query"));
        frames.push(udp_frame(dns, c, 53, 40_000, b"answer"));
        frames.push(tcp_frame(
            c,
            web,
            41_000,
            80,
            1_000,
            0,
            SYN,
            64_240,
            &[],
            b"",
        ));
    }
    frames
}

#[test]
fn a_reserved_table_takes_its_connections_without_growing_and_tracks_the_same() {
    let frames = traffic(6_000);
    let mut reserved = Sim::new();
    reserved.engine.reserve(12_000, false);
    let room = reserved.engine.memory_bytes();
    let mut plain = Sim::new();
    let start = plain.engine.memory_bytes();
    assert!(room > start + 12_000 * 104, "{room} bytes reserved");

    for f in &frames {
        assert_eq!(reserved.eth(f), plain.eth(f));
    }
    assert_eq!(reserved.engine.len(), 12_000);
    assert_eq!(plain.engine.len(), 12_000);
    assert_eq!(
        reserved.engine.memory_bytes(),
        room,
        "nothing allocated after the reservation"
    );
    assert!(plain.engine.memory_bytes() > start, "the other table grew");
    reserved.engine.check_table().unwrap();

    // Every connection gone and as many new ones: the entries and the index reuse their
    // room. Only the eviction queue may grow: it lets go of the ids of connections that
    // ended lazily, as it reaches them (4 bytes each; a chunk of entries or a larger index
    // would be hundreds of kilobytes).
    reserved.advance(600);
    reserved.expire();
    assert_eq!(reserved.engine.len(), 0);
    for f in traffic(6_000) {
        reserved.eth(&f);
    }
    assert_eq!(reserved.engine.len(), 12_000);
    let grown = reserved.engine.memory_bytes() - room;
    assert!(grown <= 2 * 12_000 * 4, "{grown} bytes more");
    reserved.engine.check_table().unwrap();
}

#[test]
fn a_reservation_is_capped_at_the_table_limit_and_past_it_the_table_grows_as_usual() {
    let mut capped = Sim::with(Config {
        max_connections: 1_000,
        ..Config::default()
    });
    capped.engine.reserve(1_000_000, false);
    // No more than room for the limit: a chunk of entries and a small index.
    assert!(
        capped.engine.memory_bytes() < 1_000_000,
        "{} bytes",
        capped.engine.memory_bytes()
    );

    let mut sim = Sim::new();
    sim.engine.reserve(1_000, false);
    let room = sim.engine.memory_bytes();
    for f in traffic(3_000) {
        sim.eth(&f);
    }
    assert_eq!(sim.engine.len(), 6_000);
    assert!(sim.engine.memory_bytes() > room);
    sim.engine.check_table().unwrap();
}
