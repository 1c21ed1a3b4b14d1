//! UDP and ICMP tracking, ICMP errors (related), and expiry by timestamps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;

fn cli() -> std::net::IpAddr {
    v4(10, 0, 0, 1)
}
fn srv() -> std::net::IpAddr {
    v4(198, 51, 100, 53)
}
fn router() -> std::net::IpAddr {
    v4(10, 0, 0, 254)
}

#[test]
fn udp_unreplied_expires_after_30s() {
    let mut sim = Sim::new();
    let q = udp_frame(cli(), srv(), 53_000, 53, b"query");
    expect_new(&sim.eth(&q));
    let c = sim.only();
    assert_eq!(c.proto, 17);
    assert!(!c.seen_reply);
    assert!(!c.assured);
    assert_eq!(c.timeout, 30);
    sim.at(29);
    sim.expire();
    assert_eq!(sim.engine.len(), 1, "kept at 29 s");
    assert_eq!(sim.only().timeout, 1);
    sim.at(30);
    sim.expire();
    assert_eq!(sim.engine.len(), 0, "gone at 30 s");
    assert_eq!(sim.conns().len(), 0);
    assert_eq!(sim.engine.stats().expired, 1);
}

/// Deadlines are whole seconds rounded up, so an entry never expires early: a flow opened
/// exactly on a second gets that second plus its timeout, one opened any later in the same
/// second the next second's. Checked on and just after second boundaries, and through
/// packets that stay within one second (where the engine keeps the second it worked out).
#[test]
fn deadlines_round_up_to_the_next_whole_second() {
    let mut sim = Sim::new();
    let opened = [
        (1_000_000_000_000, 1030), // exactly on a second
        (1_000_250_000_000, 1031),
        (1_000_999_999_999, 1031),
        (1_001_000_000_000, 1031), // exactly on the next
        (1_001_000_000_001, 1032),
        (1_001_500_000_000, 1032),
    ];
    for (sport, &(nanos, _)) in (40_000..).zip(opened.iter()) {
        sim.now = Time::from_nanos(nanos);
        let q = udp_frame(cli(), srv(), sport, 53, b"q");
        expect_new(&sim.eth(&q));
    }
    for second in 1029..=1032 {
        sim.now = Time::from_secs(second);
        sim.expire();
        let left = opened.iter().filter(|&&(_, d)| d > second).count();
        assert_eq!(sim.engine.len(), left, "at {second} s");
    }
}

#[test]
fn expired_entries_are_reclaimed_by_later_traffic_without_an_expire_call() {
    let mut sim = Sim::new();
    for i in 0..20 {
        expect_new(&sim.eth(&udp_frame(cli(), srv(), 40_000 + i, 53, b"q")));
    }
    assert_eq!(sim.engine.len(), 20);
    sim.at(31);
    // The sweep visits one id per packet: two passes' worth of an unrelated flow's packets
    // must have reclaimed every stale entry.
    let other = udp_frame(v4(10, 0, 0, 2), srv(), 50_000, 123, b"ntp");
    for _ in 0..64 {
        sim.eth(&other);
    }
    assert_eq!(sim.engine.stats().expired, 20);
    assert_eq!(sim.engine.len(), 1, "only the unrelated flow is left");
    assert_eq!(sim.only().original.src, v4(10, 0, 0, 2));
}

#[test]
fn udp_expired_entry_is_not_matched_by_lookup() {
    let mut sim = Sim::new();
    let q = udp_frame(cli(), srv(), 53_000, 53, b"query");
    expect_new(&sim.eth(&q));
    sim.at(31);
    // No expire() call: the lookup must not find the stale entry; a late reply is a new flow.
    let r = udp_frame(srv(), cli(), 53, 53_000, b"answer");
    expect_new(&sim.eth(&r));
    let c = sim.only();
    assert_eq!(c.original.src, srv());
}

#[test]
fn udp_replied_then_assured() {
    let mut sim = Sim::new();
    let q = udp_frame(cli(), srv(), 53_000, 53, b"query");
    let r = udp_frame(srv(), cli(), 53, 53_000, b"answer");
    expect_new(&sim.eth(&q));
    sim.advance(1);
    expect_est_reply(&sim.eth(&r));
    let c = sim.only();
    assert!(c.seen_reply);
    assert!(!c.assured, "not assured within 2 s");
    assert_eq!(c.timeout, 30);
    expect_est_orig(&sim.eth(&q));
    sim.advance(2);
    expect_est_orig(&sim.eth(&q));
    let c = sim.only();
    assert!(c.assured, "replied and active after 2 s");
    assert_eq!(c.timeout, 120);
    assert_eq!(c.packets, [3, 1]);
}

#[test]
fn tcp_syn_sent_expires_after_120s() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, &[]));
    sim.at(119);
    sim.expire();
    assert_eq!(sim.engine.len(), 1);
    sim.at(120);
    sim.expire();
    assert_eq!(sim.engine.len(), 0);
}

#[test]
fn tcp_established_timeout_and_expiry() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    f.handshake(&mut sim);
    assert_eq!(sim.only().timeout, 432_000);
    sim.at(431_999);
    sim.expire();
    assert_eq!(sim.engine.len(), 1);
    assert_eq!(sim.only().timeout, 1);
    sim.at(432_000);
    sim.expire();
    assert_eq!(sim.engine.len(), 0);
}

#[test]
fn icmp_echo_request_reply() {
    let mut sim = Sim::new();
    expect_new(&sim.eth(&echo4(cli(), srv(), false, 77, 1)));
    let c = sim.only();
    assert_eq!(c.proto, 1);
    assert_eq!(c.timeout, 30);
    assert_eq!(
        c.original.l4,
        L4Tuple::Icmp {
            ty: 8,
            code: 0,
            id: 77
        }
    );
    assert_eq!(
        c.reply.l4,
        L4Tuple::Icmp {
            ty: 0,
            code: 0,
            id: 77
        }
    );
    expect_est_reply(&sim.eth(&echo4(srv(), cli(), true, 77, 1)));
    assert!(sim.only().seen_reply);
    expect_est_orig(&sim.eth(&echo4(cli(), srv(), false, 77, 2)));
}

#[test]
fn icmp_echo_reply_without_request_is_invalid() {
    let mut sim = Sim::new();
    expect_invalid(
        &sim.eth(&echo4(srv(), cli(), true, 77, 1)),
        DropReason::IcmpUnsolicitedReply,
    );
    assert_eq!(sim.conns().len(), 0);
    // A reply with another id than the tracked request is unsolicited too.
    expect_new(&sim.eth(&echo4(cli(), srv(), false, 77, 1)));
    expect_invalid(
        &sim.eth(&echo4(srv(), cli(), true, 78, 1)),
        DropReason::IcmpUnsolicitedReply,
    );
}

#[test]
fn icmpv6_echo_request_reply() {
    let mut sim = Sim::new();
    let e = IcmpEchoHeader { id: 9, seq: 1 };
    expect_new(&sim.eth(&icmp6_frame(
        v6(1),
        v6(2),
        64,
        Icmpv6Type::EchoRequest(e),
        b"x",
    )));
    expect_est_reply(&sim.eth(&icmp6_frame(
        v6(2),
        v6(1),
        64,
        Icmpv6Type::EchoReply(e),
        b"x",
    )));
    let c = sim.only();
    assert_eq!(c.proto, 58);
    assert_eq!(c.family, Family::V6);
}

/// A traceroute-style UDP probe plus the router's answer.
fn probe() -> (Sim, Vec<u8>) {
    let mut sim = Sim::new();
    let embedded = udp_raw(cli(), srv(), 33_434, 33_435, &[0u8; 24]);
    expect_new(&sim.eth(&udp_frame(cli(), srv(), 33_434, 33_435, &[0u8; 24])));
    (sim, embedded)
}

fn time_exceeded(dst: std::net::IpAddr, embedded: &[u8]) -> Vec<u8> {
    icmp4_frame(
        router(),
        dst,
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit),
        embedded,
    )
}

#[test]
fn icmp_time_exceeded_for_tracked_udp_is_related() {
    let (mut sim, embedded) = probe();
    let o = sim.eth(&time_exceeded(cli(), &embedded));
    expect(&o, CtState::Related, Some(Direction::Reply));
    // Only the first 8 bytes of the datagram quoted (RFC 792 minimum): still related.
    let o = sim.eth(&time_exceeded(cli(), &embedded[..28]));
    expect(&o, CtState::Related, Some(Direction::Reply));
    assert_eq!(sim.conns().len(), 1, "an ICMP error creates no entry");
}

#[test]
fn icmp_dest_unreachable_for_tracked_tcp_is_related() {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    expect_new(&f.c(&mut sim, SYN, &[]));
    let emb = tcp_raw(f.c, f.s, f.cp, f.sp, f.cseq - 1, 0, SYN, &[]);
    let o = sim.eth(&icmp4_frame(
        router(),
        f.c,
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Host),
        &emb,
    ));
    expect(&o, CtState::Related, Some(Direction::Reply));
}

#[test]
fn icmp_error_for_unknown_connection() {
    let (mut sim, _) = probe();
    let other = udp_raw(cli(), srv(), 33_434, 40_000, &[0u8; 24]);
    expect_invalid(
        &sim.eth(&time_exceeded(cli(), &other)),
        DropReason::IcmpErrorNoConnection,
    );
    let mut empty = Sim::new();
    let emb = udp_raw(cli(), srv(), 1, 2, b"zz");
    expect_invalid(
        &empty.eth(&time_exceeded(cli(), &emb)),
        DropReason::IcmpErrorNoConnection,
    );
    assert_eq!(empty.conns().len(), 0);
}

#[test]
fn icmp_error_with_wrong_outer_destination() {
    let (mut sim, embedded) = probe();
    let o = sim.eth(&time_exceeded(v4(10, 0, 0, 99), &embedded));
    expect_invalid(&o, DropReason::IcmpErrorAddressMismatch);
}

#[test]
fn icmp_error_embedding_icmp_error_is_bad() {
    let (mut sim, embedded) = probe();
    // An ICMP error quoting an ICMP error: never related.
    let inner = {
        let mut v = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 254], 64)
            .icmpv4(Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut v, &embedded)
            .unwrap();
        v
    };
    let o = sim.eth(&time_exceeded(cli(), &inner));
    assert_eq!(o.state, CtState::Invalid, "{o:?}");
}

#[test]
fn icmpv6_packet_too_big_for_tracked_tcp_is_related() {
    let mut sim = Sim::new();
    let mut f = Flow::v6();
    f.handshake(&mut sim);
    let data = [0xabu8; 1400];
    let emb = tcp_raw(f.c, f.s, f.cp, f.sp, f.cseq, f.sseq, ACK | PSH, &data);
    expect_est_orig(&f.c(&mut sim, ACK | PSH, &data));
    let ptb = icmp6_frame(
        v6(0xfe),
        f.c,
        64,
        Icmpv6Type::PacketTooBig { mtu: 1280 },
        &emb[..1232],
    );
    let o = sim.eth(&ptb);
    expect(&o, CtState::Related, Some(Direction::Reply));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn icmpv6_neighbour_discovery_is_untracked() {
    let mut sim = Sim::new();
    let target = match v6(2) {
        std::net::IpAddr::V6(a) => a.octets(),
        _ => unreachable!(),
    };
    let ns = icmp6_frame(v6(1), v6(2), 255, Icmpv6Type::NeighborSolicitation, &target);
    let o = sim.eth(&ns);
    assert_eq!(o.state, CtState::Untracked, "{o:?}");
    assert_eq!(o.verdict, Verdict::Accept);
    let rs = icmp6_frame(v6(1), v6(2), 255, Icmpv6Type::RouterSolicitation, &[]);
    assert_eq!(sim.eth(&rs).state, CtState::Untracked);
    assert_eq!(sim.conns().len(), 0);
}

#[test]
fn udp_ipv6_and_raw_link() {
    let mut sim = Sim::new();
    let q = udp_raw(v6(1), v6(2), 5000, 5001, b"hi");
    let r = udp_raw(v6(2), v6(1), 5001, 5000, b"ho");
    let o = sim.send(LinkType::Ipv6, &q);
    expect_new(&o);
    expect_est_reply(&sim.send(LinkType::Raw, &r));
    let q4 = udp_raw(cli(), srv(), 5000, 5001, b"hi");
    expect_new(&sim.send(LinkType::Ipv4, &q4));
    assert_eq!(sim.conns().len(), 2);
}
