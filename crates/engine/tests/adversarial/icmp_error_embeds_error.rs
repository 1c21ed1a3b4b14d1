//! An ICMP error quoting another ICMP error is invalid (`icmp-error-bad-embedded`), even when the inner quote matches a connection.
use crate::common::*;
use crate::{established, exchange, port_unreachable, ttl_exceeded};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let router = v4(198, 51, 100, 1);
    // The innermost packet belongs to the tracked connection.
    let quoted = tcp_raw(f.c, f.s, f.cp, f.sp, f.cseq, f.sseq, ACK, &[]);
    // An error about it, as an IP packet travelling to the client...
    let mut inner = Vec::new();
    PacketBuilder::ipv4([198, 51, 100, 1], [10, 0, 0, 1], 64)
        .icmpv4(port_unreachable())
        .write(&mut inner, &quoted)
        .unwrap();
    // ...quoted by a second error. RFC 1122 3.2.2: no error is ever sent about an error.
    let o = sim.eth(&icmp4_frame(
        v4(198, 51, 100, 2),
        f.c,
        ttl_exceeded(),
        &inner,
    ));
    expect_invalid(&o, DropReason::IcmpErrorBadEmbedded);
    // Addressed back to the first error's sender: still invalid.
    let o = sim.eth(&icmp4_frame(
        v4(198, 51, 100, 2),
        router,
        ttl_exceeded(),
        &inner,
    ));
    expect_invalid(&o, DropReason::IcmpErrorBadEmbedded);
    // Only the first 8 bytes of the inner error quoted (RFC 792's minimum).
    let o = sim.eth(&icmp4_frame(
        v4(198, 51, 100, 2),
        f.c,
        ttl_exceeded(),
        &inner[..28],
    ));
    expect_invalid(&o, DropReason::IcmpErrorBadEmbedded);
    assert_eq!(sim.conns().len(), 1);
    exchange(&mut sim, &mut f);
}
