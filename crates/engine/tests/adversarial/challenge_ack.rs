//! An in-window SYN on an established connection is ignored, the RFC 5961 challenge ACK passes, and the connection survives.
use crate::common::*;
use crate::{established, exchange};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    sim.advance(10);
    // A blind attacker (or a client that lost its state) sends a SYN inside the server's window.
    let syn = f.seg(true, f.cseq + 1_000, 0, SYN, 65535, &[], &[]);
    // netfilter's cell ORIGINAL syn x ESTABLISHED is "ignore": the SYN passes as established
    // and updates nothing, not even the timeout.
    expect_est_orig(&sim.eth(&syn));
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert_eq!(
        c.timeout,
        432_000 - 10,
        "an ignored SYN does not refresh the entry"
    );
    // The server answers with a challenge ACK: its next sequence number, acknowledging what
    // it has received, which the tracker accepts as an ordinary ACK.
    let challenge = f.seg(false, f.sseq, f.cseq, ACK, f.swin, &[], &[]);
    expect_est_reply(&sim.eth(&challenge));
    assert_eq!(sim.only().timeout, 432_000);
    // The attacker cannot follow up; the real endpoints carry on.
    exchange(&mut sim, &mut f);
    assert!(sim.only().assured);
}
