//! A RST with a sequence number outside the window is invalid (`tcp-rst-out-of-window`) and the connection survives.
use crate::common::*;
use crate::{established, exchange};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = sim.only();
    // Blind resets with guessed sequence numbers, ahead of and behind the window, with and
    // without a (fake) ACK, from either side.
    for (from_client, seq) in [
        (true, f.cseq.wrapping_add(65_536)),
        (true, f.cseq.wrapping_add(10_000_000)),
        (true, f.cseq.wrapping_sub(10_000_000)),
        (false, f.sseq.wrapping_add(65_536)),
        (false, f.sseq.wrapping_sub(10_000_000)),
    ] {
        let ack = if from_client { f.sseq } else { f.cseq };
        for flags in [RST, RST | ACK] {
            let o = sim.eth(&f.seg(from_client, seq, ack, flags, 0, &[], &[]));
            expect_invalid(&o, DropReason::TcpRstOutOfWindow);
        }
    }
    // A RST|ACK whose sequence number is fine but whose ack is beyond what was sent.
    let o = sim.eth(&f.seg(true, f.cseq, f.sseq + 100_000, RST | ACK, 0, &[], &[]));
    expect_invalid(&o, DropReason::TcpAckOverWindow);
    assert_eq!(sim.only(), before, "state, counters and timeout unchanged");
    exchange(&mut sim, &mut f);
}
