//! SYN+FIN, NULL, Xmas and FIN-only scans of a closed port are invalid (`tcp-bad-flags`), and neither they nor the RSTs they draw create entries.
use crate::common::*;

#[test]
fn scenario() {
    let mut sim = Sim::new();
    let scans: [(&str, u8); 5] = [
        ("SYN+FIN", SYN | FIN),
        ("NULL", 0),
        ("Xmas", FIN | PSH | URG),
        ("FIN", FIN),
        ("everything", FIN | SYN | RST | PSH | ACK | URG),
    ];
    for (i, (name, flags)) in scans.into_iter().enumerate() {
        // The scanner probes port 23 from a new source port each time.
        let f = Flow {
            cp: 50_000 + u16::try_from(i).unwrap(),
            sp: 23,
            ..Flow::v4()
        };
        let o = sim.eth(&f.seg(true, f.cseq, 0, flags, 1024, &[], &[]));
        assert_eq!(
            (o.state, o.dir, o.reason),
            (CtState::Invalid, None, Some(DropReason::TcpBadFlags)),
            "{name}: {o:?}"
        );
        // The closed port answers with RST|ACK, which matches nothing and opens nothing.
        let o = sim.eth(&f.seg(false, 0, f.cseq + 1, RST | ACK, 0, &[], &[]));
        expect_invalid(&o, DropReason::TcpNotSyn);
    }
    assert!(sim.engine.is_empty());
    let s = sim.engine.stats();
    assert_eq!(s.created, 0);
    assert_eq!(s.by_reason[DropReason::TcpBadFlags.index()], 5);
    assert_eq!(s.by_reason[DropReason::TcpNotSyn.index()], 5);
    // Control: a plain SYN to the closed port opens an entry that its RST removes again.
    let mut f = Flow {
        sp: 23,
        ..Flow::v4()
    };
    expect_new(&f.c(&mut sim, SYN, &[]));
    let o = sim.eth(&f.seg(false, 0, f.cseq, RST | ACK, 0, &[], &[]));
    expect(&o, CtState::Established, Some(Direction::Reply));
    assert!(
        sim.engine.is_empty(),
        "a connection refused by RST leaves no entry"
    );
}
