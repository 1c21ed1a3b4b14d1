//! A fragment overlapping a piece already seen is invalid (`fragment-overlap`) and so is every later piece of that datagram (RFC 5722), while the connection goes on.
use crate::common::*;
use crate::{client_tcp_bytes, established, exchange, ipv4_tcp_fragment};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = sim.only();
    let seg = client_tcp_bytes(&f, f.cseq, f.sseq, ACK | PSH, &[0xab; 64]);
    let first = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &seg[..24]));
    expect_est_orig(&first);
    // RFC 1858: a piece at offset 8 bytes rewrites the TCP header's flags (bytes 13) that the
    // first piece was judged by.
    let syn = client_tcp_bytes(&f, f.cseq, 0, SYN, &[]);
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 1, true, &syn[8..]));
    expect_invalid(&o, DropReason::FragmentOverlap);
    // The rest of that datagram, though it overlaps nothing, goes too.
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 6, false, &seg[48..]));
    expect_invalid(&o, DropReason::FragmentOverlap);
    // The same first piece again is an overlap too.
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &seg[..24]));
    assert_eq!(
        o.state,
        CtState::Established,
        "the first piece itself is tracked"
    );
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 3, false, &seg[24..]));
    expect_invalid(&o, DropReason::FragmentOverlap);
    // Only the two first pieces counted; the connection's state is untouched.
    let after = sim.only();
    assert_eq!(after.tcp_state, before.tcp_state);
    assert_eq!(after.packets[0], before.packets[0] + 2);
    exchange(&mut sim, &mut f);
}
