//! Removing connections on request (`conntrack -D`, `-F`): entries leave as expiry takes
//! them, with their index slots and translations, and their ports are free again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use keepstate_engine::{Hooks, NatReleased, NatRequest, PacketMeta, SnatRequest};

const WAN: [u8; 4] = [203, 0, 113, 2];

/// Masquerades everything behind one address with a pool of one port (besides the
/// connection's own), so a port is in use until its connection is gone.
struct Masq;

impl Hooks for Masq {
    fn raw(&mut self, _meta: &PacketMeta) -> bool {
        false
    }

    fn filter(&mut self, out: &Outcome) -> Verdict {
        out.verdict
    }

    fn nat(&mut self, _out: &Outcome) -> Option<&NatRequest> {
        const REQUEST: NatRequest = NatRequest {
            dnat: None,
            snat: Some(SnatRequest {
                addr: std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 2)),
                preferred: None,
                ask: false,
                report: true,
                endpoint_independent: false,
            }),
            ports: (61_000, 61_000),
        };
        Some(&REQUEST)
    }
}

fn run(sim: &mut Sim, frame: &[u8]) -> Outcome {
    let now = sim.now;
    sim.engine
        .process_hooked(now, LinkType::Ethernet, frame, frame.len(), &mut Masq)
}

#[test]
fn remove_where_keeps_the_table_consistent_and_frees_nat_ports() {
    let mut sim = Sim::new();
    let (a, b, c) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2), v4(10, 0, 0, 3));
    let peer = v4(198, 51, 100, 1);
    // Source port 5000 to peer:53 from two hosts: the first keeps its own port, the second
    // gets the pool's one port; other flows fill the table around them.
    for h in [a, b] {
        expect_new(&run(&mut sim, &udp_frame(h, peer, 5000, 53, b"q")));
        assert!(sim.engine.translation().is_some());
    }
    for p in 0..20u16 {
        expect_new(&run(&mut sim, &udp_frame(a, peer, 6000 + p, 7, b"x")));
    }
    let before = sim.engine.len();
    assert_eq!(before, 22);
    assert_eq!(sim.engine.nat_connections(), before);
    sim.engine.check_table().unwrap();

    // A third host finds both ports taken towards peer:53.
    let o = run(&mut sim, &udp_frame(c, peer, 5000, 53, b"q"));
    assert_eq!(o.verdict, Verdict::Drop);
    assert_eq!(o.reason, Some(DropReason::NatPortsExhausted));

    // Remove b's connection (the one holding the pool's port).
    sim.advance(1);
    let now = sim.now;
    let n = sim.engine.remove_where(now, |conn| conn.original.src == b);
    assert_eq!(n, 1);
    assert_eq!(sim.engine.stats().removed, 1);
    assert_eq!(sim.engine.len(), before - 1);
    assert_eq!(sim.engine.nat_connections(), before - 1);
    sim.engine.check_table().unwrap();
    let mut released: Vec<NatReleased> = Vec::new();
    sim.engine.take_nat_released(&mut released);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].inside, (b, 5000));
    assert_eq!(released[0].outside, (std::net::IpAddr::from(WAN), 61_000));
    assert!(!sim.conns().iter().any(|x| x.original.src == b));

    // The port is free again: c's connection opens with it.
    expect_new(&run(&mut sim, &udp_frame(c, peer, 5000, 53, b"q")));
    let t = sim.engine.translation().expect("translated");
    assert_eq!(t.leaves().sport, 61_000);
    sim.engine.check_table().unwrap();

    // A packet of the removed connection is that of a new one, and now finds no port.
    let o = run(&mut sim, &udp_frame(b, peer, 5000, 53, b"q"));
    assert_eq!(o.verdict, Verdict::Drop, "the port is c's now");
    assert_eq!(o.reason, Some(DropReason::NatPortsExhausted));

    // Flush: everything goes, every port is reported, the table stays consistent.
    let left = sim.engine.len();
    let now = sim.now;
    assert_eq!(sim.engine.remove_where(now, |_| true), left);
    assert!(sim.engine.is_empty());
    assert_eq!(sim.engine.nat_connections(), 0);
    sim.engine.check_table().unwrap();
    released.clear();
    sim.engine.take_nat_released(&mut released);
    assert_eq!(released.len(), left);
    expect_new(&run(&mut sim, &udp_frame(b, peer, 5000, 53, b"q")));
    sim.engine.check_table().unwrap();
}

#[test]
fn removed_tcp_connection_is_new_again() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, b""));
    expect_est_reply(&f.s(&mut sim, SYN | ACK, b""));
    expect_est_orig(&f.c(&mut sim, ACK, b""));
    assert_eq!(sim.engine.len(), 1);
    let now = sim.now;
    assert_eq!(sim.engine.remove_where(now, |c| c.proto == 17), 0);
    assert_eq!(sim.engine.remove_where(now, |c| c.proto == 6), 1);
    assert!(sim.engine.is_empty());
    sim.engine.check_table().unwrap();
    // The next packet of the removed connection opens it afresh (picked up mid-stream, as
    // netfilter's loose tracking does), as new rather than established.
    expect_new(&f.c(&mut sim, ACK, b"data"));
    assert_eq!(sim.engine.len(), 1);
    sim.engine.check_table().unwrap();
}
