//! A rebooted client's SYN draws a challenge ACK; its RST at the acknowledged sequence closes the entry and the retried SYN opens a new one.
use crate::common::*;
use crate::established;

#[test]
fn scenario() {
    let (mut sim, old) = established();
    // The client rebooted and reuses the 4-tuple with a fresh initial sequence number.
    let mut f = Flow {
        cseq: 3_000_000_000,
        ..old.clone()
    };
    expect_est_orig(&sim.eth(&f.seg(true, f.cseq, 0, SYN, 65535, &[], &[])));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    // The server still has the old connection and sends a challenge ACK for it.
    let challenge = old.seg(false, old.sseq, old.cseq, ACK, old.swin, &[], &[]);
    expect_est_reply(&sim.eth(&challenge));
    // The client knows no such connection and resets it at exactly the acknowledged sequence.
    let rst = f.seg(true, old.cseq, 0, RST, 0, &[], &[]);
    expect_est_orig(&sim.eth(&rst));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Close));
    assert_eq!(c.timeout, 10);
    // The client's retransmitted SYN ends the closed entry and opens a new connection.
    expect_new(&f.c(&mut sim, SYN, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
    assert_eq!(sim.only().packets, [1, 0], "a fresh entry");
    f.sseq = 7_000_000;
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &[1; 10]));
    expect_est_reply(&f.s(&mut sim, ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}
