//! An ICMP error quoting a tracked connection but not addressed to the quoted packet's source is invalid.
use crate::common::*;
use crate::{established, exchange, port_unreachable};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let router = v4(198, 51, 100, 1);
    // A packet the client sent, quoted as an ICMP error would quote it.
    let quoted = tcp_raw(f.c, f.s, f.cp, f.sp, f.cseq, f.sseq, ACK, &[]);
    // Addressed to a third host: the embedded header matches, the outer destination does not.
    let o = sim.eth(&icmp4_frame(
        router,
        v4(10, 0, 0, 99),
        port_unreachable(),
        &quoted,
    ));
    expect_invalid(&o, DropReason::IcmpErrorAddressMismatch);
    // Addressed to the server, which did not send the quoted packet.
    let o = sim.eth(&icmp4_frame(router, f.s, port_unreachable(), &quoted));
    expect_invalid(&o, DropReason::IcmpErrorAddressMismatch);
    // A quoted reply-direction packet sent back to the client instead of the server.
    let quoted_reply = tcp_raw(f.s, f.c, f.sp, f.cp, f.sseq, f.cseq, ACK, &[]);
    let o = sim.eth(&icmp4_frame(router, f.c, port_unreachable(), &quoted_reply));
    expect_invalid(&o, DropReason::IcmpErrorAddressMismatch);
    // Control: the same errors addressed to the quoted packets' sources are related.
    let o = sim.eth(&icmp4_frame(router, f.c, port_unreachable(), &quoted));
    expect(&o, CtState::Related, Some(Direction::Reply));
    let o = sim.eth(&icmp4_frame(router, f.s, port_unreachable(), &quoted_reply));
    expect(&o, CtState::Related, Some(Direction::Original));
    assert_eq!(sim.conns().len(), 1, "ICMP errors never create entries");
    exchange(&mut sim, &mut f);
}
