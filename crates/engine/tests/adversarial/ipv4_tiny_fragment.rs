//! A first IPv4 fragment too short to hold the whole TCP header is invalid (`tiny-fragment`) and creates nothing.
use crate::common::*;
use crate::{client_tcp_bytes, established, exchange, ipv4_tcp_fragment};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = sim.only();
    // RFC 1858's tiny fragment: the first fragment carries only ports and sequence number,
    // the flags follow in the second.
    let other = Flow {
        cp: 41_000,
        ..f.clone()
    };
    let syn = client_tcp_bytes(&other, 1, 0, SYN, &[]);
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &syn[..8]));
    expect_invalid(&o, DropReason::TinyFragment);
    // 16 bytes: flags and window are there but the header is still incomplete.
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &syn[..16]));
    expect_invalid(&o, DropReason::TinyFragment);
    // For the tracked connection too: the entry is not touched.
    let seg = client_tcp_bytes(&f, f.cseq, f.sseq, ACK | PSH, &[0xab; 64]);
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &seg[..8]));
    expect_invalid(&o, DropReason::TinyFragment);
    assert_eq!(sim.only(), before);
    // Control: a first fragment holding the whole 20-byte header is tracked like a segment
    // (its payload length is the fragment's, the rest of the datagram is never seen).
    let o = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &syn));
    expect_new(&o);
    assert_eq!(sim.conns().len(), 2);
    exchange(&mut sim, &mut f);
}
