//! A full table evicts never-replied entries for new ones, never an assured connection, and refuses new connections with `table-full` once only assured entries remain.
use crate::common::*;
use crate::{conn_of, exchange, open};

/// A client connection from port `cp` to the server's port 80.
fn flow(cp: u16) -> Flow {
    Flow { cp, ..Flow::v4() }
}

#[test]
fn scenario() {
    let mut sim = Sim::with(Config {
        max_connections: 4,
        ..Config::default()
    });
    // Two established connections and two SYNs nobody answered fill the table.
    let mut a = flow(1_001);
    let mut b = flow(1_002);
    open(&mut sim, &mut a);
    open(&mut sim, &mut b);
    let mut pending: Vec<Flow> = Vec::new();
    for cp in [2_001, 2_002] {
        let mut f = flow(cp);
        expect_new(&f.c(&mut sim, SYN, &[]));
        pending.push(f);
    }
    assert_eq!(sim.engine.len(), 4);
    // Each further SYN evicts a never-replied entry; the assured ones always stay.
    for cp in 3_000..3_050 {
        let mut f = flow(cp);
        expect_new(&f.c(&mut sim, SYN, &[]));
        assert_eq!(sim.engine.len(), 4);
        assert!(conn_of(&sim, &a).is_some() && conn_of(&sim, &b).is_some());
        assert!(conn_of(&sim, &f).is_some(), "the new connection got a slot");
        pending.push(f);
    }
    let s = sim.engine.stats();
    assert_eq!((s.evicted, s.refused), (50, 0));
    exchange(&mut sim, &mut a);
    exchange(&mut sim, &mut b);
    // The two surviving SYNs are answered and their handshakes complete: now every entry is
    // assured (a half-open one could still be evicted, see table_full_half_open.rs).
    pending.retain(|f| conn_of(&sim, f).is_some());
    assert_eq!(pending.len(), 2);
    for f in &mut pending {
        expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
        expect_est_orig(&f.c(&mut sim, ACK, &[]));
        assert!(conn_of(&sim, f).unwrap().assured);
    }
    // A new connection is refused: dropped, invalid, `table-full`, and no entry.
    let late = flow(4_000);
    let o = sim.eth(&late.seg(true, late.cseq, 0, SYN, 65535, &[], &[]));
    assert_eq!(
        (o.verdict, o.state, o.dir, o.reason),
        (
            Verdict::Drop,
            CtState::Invalid,
            None,
            Some(DropReason::TableFull)
        ),
        "{o:?}"
    );
    assert_eq!(DropReason::TableFull.name(), "table-full");
    assert!(conn_of(&sim, &late).is_none());
    let s = sim.engine.stats();
    assert_eq!((s.evicted, s.refused), (50, 1));
    // UDP is refused the same way; the tracked connections carry on.
    let o = sim.eth(&udp_frame(late.c, late.s, 5_000, 53, b"q"));
    assert_eq!(o.reason, Some(DropReason::TableFull));
    exchange(&mut sim, &mut a);
    for f in &mut pending {
        expect_est_orig(&f.c(&mut sim, ACK, &[]));
    }
    assert_eq!(sim.engine.len(), 4);
}
