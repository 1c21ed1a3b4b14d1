//! A SYN/ACK acknowledging a SYN that was ignored on an ESTABLISHED entry resynchronises the entry, as netfilter does, so a reused 4-tuple is not blackholed.
use crate::common::*;
use crate::{established, exchange};

#[test]
fn scenario() {
    let (mut sim, old) = established();
    // Both ends forgot the old connection without the firewall seeing it close (a lost RST,
    // a reboot), and the client reuses the 4-tuple with new sequence numbers.
    let mut f = Flow {
        cseq: 2_000_000_000,
        sseq: 3_000_000_000,
        ..old
    };
    // The SYN is ignored: the entry may be out of sync.
    expect_est_orig(&f.c(&mut sim, SYN, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    // The server accepts it with a SYN/ACK for exactly that SYN: both ends are in sync and
    // the firewall is not, so it takes the new sequence numbers.
    expect_est_reply(&f.s(&mut sim, SYN | ACK, &[]));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynRecv));
    expect_est_orig(&f.c(&mut sim, ACK, &[]));
    exchange(&mut sim, &mut f);
}
