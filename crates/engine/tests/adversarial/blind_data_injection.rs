//! Data with a sequence number far outside the window is invalid and leaves the connection alone.
use crate::common::*;
use crate::{established, exchange};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = sim.only();
    // Ahead of the receiver's window (65535 unscaled), up to half the sequence space away.
    for ahead in [65_536u32, 1_000_000, 1_000_000_000, 0x7fff_ffff] {
        let seq = f.cseq.wrapping_add(ahead);
        let o = sim.eth(&f.seg(true, seq, f.sseq, ACK | PSH, f.cwin, &[], &[0xee; 100]));
        expect_invalid(&o, DropReason::TcpSeqOverWindow);
        let seq = f.sseq.wrapping_add(ahead);
        let o = sim.eth(&f.seg(false, seq, f.cseq, ACK | PSH, f.swin, &[], &[0xee; 100]));
        expect_invalid(&o, DropReason::TcpSeqOverWindow);
    }
    // State, counters and timeout are exactly as before.
    assert_eq!(sim.only(), before);
    // Far behind the window is netfilter's "ignore" (bound II: an old retransmission): it
    // passes as established but moves nothing, so the real stream carries on unaffected.
    // (Unlike netfilter, the engine counts ignored packets in the entry's counters.)
    let seq = f.cseq.wrapping_sub(1_000_000_000);
    let o = sim.eth(&f.seg(true, seq, f.sseq, ACK | PSH, f.cwin, &[], &[0xee; 100]));
    expect_est_orig(&o);
    let after = sim.only();
    assert_eq!(
        (after.tcp_state, after.timeout, after.assured),
        (before.tcp_state, before.timeout, before.assured)
    );
    // The window did not move: the old edge still holds.
    let o = sim.eth(&f.seg(true, f.cseq + 65_536, f.sseq, ACK, f.cwin, &[], &[]));
    expect_invalid(&o, DropReason::TcpSeqOverWindow);
    exchange(&mut sim, &mut f);
}
