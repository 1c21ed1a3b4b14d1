//! An ACK above the highest sequence number the peer has sent is invalid and changes nothing.
use crate::common::*;
use crate::{established, exchange};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = sim.only();
    // The server has sent up to f.sseq: acknowledging one byte more is van Rooij bound III.
    let o = sim.eth(&f.seg(true, f.cseq, f.sseq + 1, ACK, f.cwin, &[], &[]));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
    // The same from the server's side, and with data riding on the forged ack.
    let o = sim.eth(&f.seg(false, f.sseq, f.cseq + 1, ACK, f.swin, &[], &[]));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
    let o = sim.eth(&f.seg(
        true,
        f.cseq,
        f.sseq + 70_000,
        ACK | PSH,
        f.cwin,
        &[],
        &[7; 50],
    ));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
    assert_eq!(sim.only(), before, "invalid packets left the entry alone");
    // The real endpoints, acknowledging exactly what was sent, carry on.
    exchange(&mut sim, &mut f);
}
