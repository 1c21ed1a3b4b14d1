//! The later fragments of a tracked TCP datagram are judged as its first fragment was: counted against the connection, the ports filled in for the rules.
use crate::common::*;
use crate::{client_tcp_bytes, conn_of, established, exchange, ipv4_tcp_fragment};

#[test]
fn scenario() {
    let (mut sim, mut f) = established();
    let before = conn_of(&sim, &f).unwrap().packets;
    // One 64-byte segment in three pieces: 24 bytes (header and 4 of data), 24, 36.
    let seg = client_tcp_bytes(&f, f.cseq, f.sseq, ACK | PSH, &[0xab; 64]);
    let first = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 0, true, &seg[..24]));
    expect_est_orig(&first);
    let middle = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 3, true, &seg[24..48]));
    expect_est_orig(&middle);
    assert_eq!(middle.meta.sport, Some(f.cp), "ports from the first piece");
    assert_eq!(middle.meta.dport, Some(f.sp));
    let last = sim.eth(&ipv4_tcp_fragment(f.c, f.s, 6, false, &seg[48..]));
    expect_est_orig(&last);
    assert_eq!(conn_of(&sim, &f).unwrap().packets[0], before[0] + 3);
    f.cseq = f.cseq.wrapping_add(64);
    // The connection goes on as before.
    exchange(&mut sim, &mut f);
}
