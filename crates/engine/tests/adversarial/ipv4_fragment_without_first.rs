//! A non-first IPv4 fragment with no first fragment is invalid (`fragment`): the engine tracks fragments by their first, it does not reassemble.
use crate::common::*;
use crate::{client_tcp_bytes, established, exchange, ipv4_tcp_fragment};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = sim.only();
    let seg = client_tcp_bytes(&f, f.cseq, f.sseq, ACK | PSH, &[0xab; 64]);
    // The tail of a datagram whose first fragment never came (offset 16 bytes, last).
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 2, false, &seg[16..]));
    expect_invalid(&o, DropReason::Fragment);
    // A middle fragment (more to come).
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 2, true, &seg[16..48]));
    expect_invalid(&o, DropReason::Fragment);
    // RFC 1858's overlap attack: offset 1 rewrites bytes 8.. of the TCP header, flags
    // included, with a SYN. Without reassembly it is just another non-first fragment.
    let syn = client_tcp_bytes(&f, f.cseq, 0, SYN, &[]);
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 1, false, &syn[8..]));
    expect_invalid(&o, DropReason::Fragment);
    // A later fragment that looks like the start of a SYN to a fresh port creates nothing.
    let other = Flow {
        cp: 41_000,
        ..f.clone()
    };
    let syn = client_tcp_bytes(&other, 1, 0, SYN, &[]);
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 185, false, &syn));
    expect_invalid(&o, DropReason::Fragment);
    assert_eq!(sim.only(), before, "fragments left the connection alone");
    exchange(&mut sim, &mut f);
}
