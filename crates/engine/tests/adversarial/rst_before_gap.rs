//! A RST inside the window but beyond the receiver's next expected sequence number keeps the connection, as netfilter does (RFC 5961 3.2).
use crate::common::*;
use crate::{established, exchange};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    // The server has acknowledged everything up to f.cseq. A RST 1000 bytes further on is
    // inside the server's window but leaves a gap: RFC 5961 receivers answer it with a
    // challenge ACK instead of resetting.
    let rst = f.seg(true, f.cseq + 1_000, f.sseq, RST | ACK, 0, &[], &[]);
    expect_est_orig(&sim.eth(&rst));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    // The challenge ACK, then the connection carries on as if nothing had happened.
    let challenge = f.seg(false, f.sseq, f.cseq, ACK, f.swin, &[], &[]);
    expect_est_reply(&sim.eth(&challenge));
    sim.advance(60);
    exchange(&mut sim, &mut f);
    assert_eq!(sim.only().timeout, 432_000);
    // A RST below what the receiver has acknowledged is invalid (netfilter: "invalid rst").
    let rst = f.seg(true, f.cseq - 50, f.sseq, RST | ACK, 0, &[], &[]);
    expect_invalid(&sim.eth(&rst), DropReason::TcpRstOutOfWindow);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    // A RST at exactly the acknowledged sequence number does reset the connection.
    let rst = f.seg(true, f.cseq, f.sseq, RST | ACK, 0, &[], &[]);
    expect_est_orig(&sim.eth(&rst));
    assert_eq!(sim.tcp_state(), Some(TcpState::Close));
}
