//! A SYN/ACK that answers no SYN is invalid (`tcp-not-syn`) and creates no entry, even with mid-stream pickup on.
use crate::common::*;

#[test]
fn scenario() {
    let mut sim = Sim::new();
    assert!(sim.engine.config().tcp_loose);
    let f = Flow::v4();
    // A reflected SYN/ACK (SYN flood with the client's address spoofed), from several ports.
    for sp in [80, 443, 8080] {
        let g = Flow { sp, ..f.clone() };
        let o = sim.eth(&g.seg(false, g.sseq, g.cseq + 1, SYN | ACK, 65535, &[], &[]));
        expect_invalid(&o, DropReason::TcpNotSyn);
        // The victim's stack answers with a RST: nothing to match either.
        let o = sim.eth(&g.seg(true, g.cseq + 1, 0, RST, 0, &[], &[]));
        expect_invalid(&o, DropReason::TcpNotSyn);
    }
    assert!(sim.engine.is_empty());
    assert_eq!(sim.engine.stats().created, 0);
    // A later ACK from the server is picked up mid-stream as the server's own connection,
    // never as the client's: the SYN/ACK left nothing behind that it could complete.
    let o = sim.eth(&f.seg(false, f.sseq + 1, f.cseq + 1, ACK, 65535, &[], &[]));
    expect_new(&o);
    assert_eq!(sim.only().original.src, f.s);
}
