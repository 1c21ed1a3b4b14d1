//! TTL and hop limit never change tracking: TTL 1, hop limit 1, and even a TTL 0 SYN are tracked like any packet (the engine is not a router).
use crate::common::*;

/// `frame` (Ethernet, IPv4 or IPv6) with its TTL or hop limit set to `ttl`.
fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    match frame[14] >> 4 {
        4 => {
            let (mut h, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
            h.time_to_live = ttl;
            h.header_checksum = h.calc_header_checksum();
            frame[14..34].copy_from_slice(&h.to_bytes());
        }
        6 => frame[14 + 7] = ttl,
        v => panic!("IP version {v}"),
    }
    frame
}

/// One segment from the client (`client`) or the server at TTL `ttl`, with `f`'s sequence
/// numbers, which it then advances.
fn send(sim: &mut Sim, f: &mut Flow, ttl: u8, client: bool, flags: u8, data: &[u8]) -> Outcome {
    let (seq, ack, win) = if client {
        (f.cseq, f.sseq, f.cwin)
    } else {
        (f.sseq, f.cseq, f.swin)
    };
    let o = sim.eth(&with_ttl(
        f.seg(client, seq, ack, flags, win, &[], data),
        ttl,
    ));
    let n = u32::try_from(data.len()).unwrap() + u32::from(flags & SYN != 0);
    if client {
        f.cseq += n;
    } else {
        f.sseq += n;
    }
    o
}

/// Handshake and data from the client, every packet at TTL (hop limit) `ttl`.
fn run(sim: &mut Sim, f: &mut Flow, ttl: u8) {
    expect_new(&send(sim, f, ttl, true, SYN, &[]));
    expect_est_reply(&send(sim, f, ttl, false, SYN | ACK, &[]));
    expect_est_orig(&send(sim, f, ttl, true, ACK, &[]));
    expect_est_orig(&send(sim, f, ttl, true, ACK | PSH, &[1; 100]));
    expect_est_reply(&send(sim, f, ttl, false, ACK, &[]));
}

#[test]
fn scenario() {
    // TTL 1: the last hop a router would forward to. Tracked normally.
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    run(&mut sim, &mut f, 1);
    let c = sim.only();
    assert_eq!(c.tcp_state, Some(TcpState::Established));
    assert!(c.assured);
    // Hop limit 1 over IPv6: the same.
    let mut sim = Sim::new();
    let mut f = Flow::v6();
    run(&mut sim, &mut f, 1);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
    // TTL 0, which no host may send (RFC 1122 3.2.1.7) and no router forwards: the engine
    // does not read the TTL, so the SYN opens an entry like any other. Dropping it is the
    // dataplane's or the policy's decision (a filter-hook drop unconfirms the entry).
    let mut sim = Sim::new();
    let f = Flow::v4();
    let o = sim.eth(&with_ttl(f.seg(true, f.cseq, 0, SYN, 65535, &[], &[]), 0));
    expect_new(&o);
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
    // A whole connection at TTL 0 is tracked too.
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    run(&mut sim, &mut f, 0);
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}
