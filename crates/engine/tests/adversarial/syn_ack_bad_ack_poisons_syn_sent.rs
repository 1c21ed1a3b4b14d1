//! A spoofed SYN/ACK with a wrong ack is invalid and leaves the SYN_SENT entry alone, so the real SYN/ACK still completes the handshake.
use crate::common::*;
use crate::exchange;

#[test]
fn scenario() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, &[]));
    // An off-path attacker who knows the 4-tuple but not the client's sequence number.
    let spoof = f.seg(
        false,
        3_000_000_000,
        f.cseq + 5_000,
        SYN | ACK,
        65535,
        &[],
        &[],
    );
    expect_invalid(&sim.eth(&spoof), DropReason::TcpAckOverWindow);
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
    // The real server answers; the handshake completes and data flows.
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynRecv));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    exchange(&mut sim, &mut f);
}
