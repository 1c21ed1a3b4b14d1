//! An ICMP error quoting a packet of no tracked connection is invalid and creates nothing.
use crate::common::*;
use crate::{established, exchange, port_unreachable, ttl_exceeded};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let router = v4(198, 51, 100, 1);
    // A connection that never existed.
    let quoted = udp_raw(f.c, v4(203, 0, 113, 7), 5353, 53, b"query");
    let o = sim.eth(&icmp4_frame(router, f.c, port_unreachable(), &quoted));
    expect_invalid(&o, DropReason::IcmpErrorNoConnection);
    // The tracked addresses with a guessed client port.
    let quoted = tcp_raw(f.c, f.s, f.cp + 1, f.sp, f.cseq, f.sseq, ACK, &[]);
    let o = sim.eth(&icmp4_frame(router, f.c, ttl_exceeded(), &quoted));
    expect_invalid(&o, DropReason::IcmpErrorNoConnection);
    // The tracked ports under another protocol.
    let quoted = udp_raw(f.c, f.s, f.cp, f.sp, b"x");
    let o = sim.eth(&icmp4_frame(router, f.c, port_unreachable(), &quoted));
    expect_invalid(&o, DropReason::IcmpErrorNoConnection);
    // The same with an empty table.
    let mut empty = Sim::new();
    let o = empty.eth(&icmp4_frame(router, f.c, port_unreachable(), &quoted));
    expect_invalid(&o, DropReason::IcmpErrorNoConnection);
    assert!(empty.engine.is_empty());
    assert_eq!(empty.engine.stats().created, 0);
    assert_eq!(sim.conns().len(), 1);
    exchange(&mut sim, &mut f);
}
