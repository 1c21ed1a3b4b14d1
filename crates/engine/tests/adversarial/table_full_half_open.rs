//! SYNs a listening server answers but whose handshakes never complete do not lock new connections out of a full table: like netfilter, unassured entries are evicted.
use crate::common::*;
use crate::{conn_of, exchange, open};

#[test]
fn scenario() {
    let mut sim = Sim::with(Config {
        max_connections: 16,
        ..Config::default()
    });
    let mut f = Flow::v4();
    open(&mut sim, &mut f);
    exchange(&mut sim, &mut f);
    // Spoofed SYNs to a listening server, which answers each one with a SYN/ACK to nowhere.
    for i in 0..15 {
        let mut g = Flow {
            c: v4(100, 64, 0, i + 1),
            ..Flow::v4()
        };
        expect_new(&g.c(&mut sim, SYN, &[]));
        expect_est_reply(&g.s(&mut sim, SYN | ACK, &[]));
        let c = conn_of(&sim, &g).unwrap();
        assert_eq!(c.tcp_state, Some(TcpState::SynRecv));
        assert!(c.seen_reply && !c.assured);
    }
    assert_eq!(sim.engine.len(), 16);
    // A legitimate new client gets a slot by evicting a half-open entry...
    let mut late = Flow {
        c: v4(10, 0, 0, 2),
        ..Flow::v4()
    };
    expect_new(&late.c(&mut sim, SYN, &[]));
    assert_eq!(sim.engine.stats().evicted, 1);
    assert_eq!(sim.engine.stats().refused, 0);
    // ...and never the established, assured connection.
    assert!(conn_of(&sim, &f).unwrap().assured);
    exchange(&mut sim, &mut f);
}
