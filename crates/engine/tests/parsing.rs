//! Frame parsing: truncation at every length, checksums, VLAN tags, ARP, link types,
//! and a seeded random-input property test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;

fn syn_frame() -> Vec<u8> {
    let f = Flow::v4();
    f.seg(
        true,
        f.cseq,
        0,
        SYN,
        65535,
        &[TcpOptionElement::MaximumSegmentSize(1460)],
        &[],
    )
}

#[test]
fn truncated_at_every_length() {
    let full = syn_frame();
    for n in 0..full.len() {
        let mut sim = Sim::new();
        let o = sim.eth(&full[..n]);
        if n < 14 {
            assert!(
                (o.state == CtState::Invalid && o.reason.is_some())
                    || o.state == CtState::Untracked,
                "len {n}: {o:?}"
            );
        } else {
            assert_eq!(o.state, CtState::Invalid, "len {n}: {o:?}");
            assert!(o.reason.is_some(), "len {n}: {o:?}");
            assert_eq!(o.dir, None, "len {n}");
        }
        assert_eq!(o.verdict, Verdict::Accept, "len {n}");
        assert_eq!(sim.conns().len(), 0, "len {n} created an entry");
    }
    let mut sim = Sim::new();
    expect_new(&sim.eth(&full));
}

#[test]
fn truncated_ipv6_at_every_length() {
    let f = Flow::v6();
    let full = f.seg(true, f.cseq, 0, SYN, 65535, &[], &[]);
    for n in 0..full.len() {
        let mut sim = Sim::new();
        let o = sim.eth(&full[..n]);
        assert!(
            (o.state == CtState::Invalid && o.reason.is_some()) || o.state == CtState::Untracked,
            "len {n}: {o:?}"
        );
        if n >= 14 {
            assert_eq!(o.state, CtState::Invalid, "len {n}: {o:?}");
        }
    }
}

#[test]
fn snaplen_cut_with_complete_headers_is_tracked() {
    let f = Flow::v4();
    let full = f.seg(true, f.cseq, 0, SYN, 65535, &[], &[0x11; 200]);
    let headers = 14 + 20 + 20;
    let mut sim = Sim::new();
    let o = sim.engine.process_captured(
        sim.now,
        LinkType::Ethernet,
        &full[..headers + 10],
        full.len(),
    );
    expect_new(&o);
    // Cut inside the TCP header: invalid, never a panic.
    for n in 0..headers {
        let mut sim = Sim::new();
        let o = sim
            .engine
            .process_captured(sim.now, LinkType::Ethernet, &full[..n], full.len());
        assert_ne!(o.state, CtState::New, "len {n}: {o:?}");
    }
}

#[test]
fn bad_ipv4_header_checksum() {
    let mut fr = syn_frame();
    fr[14 + 10] ^= 0x5a;
    let mut sim = Sim::new();
    expect_invalid(&sim.eth(&fr), DropReason::BadIpChecksum);
    let mut sim = Sim::with(Config {
        verify_checksums: false,
        ..Config::default()
    });
    expect_new(&sim.eth(&fr));
}

#[test]
fn bad_tcp_checksum() {
    let mut fr = syn_frame();
    fr[14 + 20 + 16] ^= 0x5a;
    let mut sim = Sim::new();
    expect_invalid(&sim.eth(&fr), DropReason::BadChecksum);
    assert_eq!(sim.conns().len(), 0);
    let mut sim = Sim::with(Config {
        verify_checksums: false,
        ..Config::default()
    });
    expect_new(&sim.eth(&fr));
}

#[test]
fn bad_udp_checksum() {
    let mut fr = udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 1000, 2000, b"hello");
    fr[14 + 20 + 6] ^= 0x5a;
    let mut sim = Sim::new();
    expect_invalid(&sim.eth(&fr), DropReason::BadChecksum);
}

#[test]
fn vlan_and_qinq_tagged_frames_are_tracked() {
    let mut f = Flow::v4();
    let mut one = Vec::new();
    PacketBuilder::ethernet2(MAC_C, MAC_S)
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv4([10, 0, 0, 1], [192, 0, 2, 10], 64)
        .tcp(f.cp, f.sp, f.cseq, 65535)
        .syn()
        .write(&mut one, &[])
        .unwrap();
    let mut sim = Sim::new();
    expect_new(&sim.eth(&one));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));

    f.cp += 1;
    let mut two = Vec::new();
    PacketBuilder::ethernet2(MAC_C, MAC_S)
        .double_vlan(VlanId::try_new(200).unwrap(), VlanId::try_new(100).unwrap())
        .ipv4([10, 0, 0, 1], [192, 0, 2, 10], 64)
        .tcp(f.cp, f.sp, f.cseq, 65535)
        .syn()
        .write(&mut two, &[])
        .unwrap();
    expect_new(&sim.eth(&two));
    assert_eq!(sim.conns().len(), 2);
    // The same flow untagged matches the entry the tagged frame created.
    let reply = f.seg(false, 9000, f.cseq + 1, SYN | ACK, 65535, &[], &[]);
    expect_est_reply(&sim.eth(&reply));
}

#[test]
fn arp_is_untracked() {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &MAC_C,
        &[10, 0, 0, 1],
        &[0; 6],
        &[10, 0, 0, 2],
    )
    .unwrap();
    let mut fr = Vec::new();
    PacketBuilder::ethernet2(MAC_C, [0xff; 6])
        .arp(arp)
        .write(&mut fr)
        .unwrap();
    let mut sim = Sim::new();
    let o = sim.eth(&fr);
    assert_eq!(o.state, CtState::Untracked, "{o:?}");
    assert_eq!(o.verdict, Verdict::Accept);
    assert_eq!(sim.conns().len(), 0);
}

#[test]
fn wrong_ip_version_for_link() {
    let v6 = udp_raw(v6(1), v6(2), 1, 2, b"x");
    let mut sim = Sim::new();
    expect_invalid(&sim.send(LinkType::Ipv4, &v6), DropReason::BadIpVersion);
    let v4p = udp_raw(v4(1, 2, 3, 4), v4(5, 6, 7, 8), 1, 2, b"x");
    expect_invalid(&sim.send(LinkType::Ipv6, &v4p), DropReason::BadIpVersion);
}

#[test]
fn ip_total_length_beyond_frame() {
    let mut p = udp_raw(v4(1, 2, 3, 4), v4(5, 6, 7, 8), 1, 2, b"xxxx");
    p.truncate(p.len() - 2);
    let mut sim = Sim::new();
    let o = sim.send(LinkType::Ipv4, &p);
    assert_eq!(o.state, CtState::Invalid, "{o:?}");
    assert!(o.reason.is_some());
}

fn valid_corpus() -> Vec<(LinkType, Vec<u8>)> {
    let mut f = Flow::v4();
    let g = Flow::v6();
    let mut v = vec![
        (LinkType::Ethernet, syn_frame()),
        (
            LinkType::Ethernet,
            g.seg(
                true,
                1,
                0,
                SYN,
                1000,
                &[TcpOptionElement::WindowScale(7)],
                &[],
            ),
        ),
        (
            LinkType::Ethernet,
            udp_frame(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 1, 2, b"payload"),
        ),
        (
            LinkType::Ipv4,
            udp_raw(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 1, 2, b"payload"),
        ),
        (LinkType::Raw, udp_raw(v6(1), v6(2), 3, 4, b"payload")),
        (
            LinkType::Ethernet,
            echo4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), false, 1, 1),
        ),
    ];
    f.cseq += 1;
    let emb = udp_raw(v4(10, 0, 0, 1), v4(10, 0, 0, 2), 1, 2, b"payload");
    v.push((
        LinkType::Ethernet,
        icmp4_frame(
            v4(10, 0, 0, 9),
            v4(10, 0, 0, 1),
            Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit),
            &emb,
        ),
    ));
    v.push((
        LinkType::Ethernet,
        f.seg(false, 5, f.cseq, SYN | ACK, 100, &[], &[]),
    ));
    v
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut eng = Engine::new(Config {
        max_connections: 64,
        ..Config::default()
    });
    let corpus = valid_corpus();
    let mut t = Time::from_secs(1);
    for i in 0..20_000u32 {
        t = t.saturating_add_secs(u64::from(rng.byte() % 4));
        let link = ALL_LINKS[rng.below(ALL_LINKS.len())];
        let data = if i % 2 == 0 {
            let n = rng.below(120);
            (0..n).map(|_| rng.byte()).collect::<Vec<u8>>()
        } else {
            let (l, base) = &corpus[rng.below(corpus.len())];
            let mut d = base.clone();
            for _ in 0..=rng.below(4) {
                match rng.below(3) {
                    0 if !d.is_empty() => {
                        let k = rng.below(d.len());
                        d[k] ^= 1 << rng.below(8);
                    }
                    1 if !d.is_empty() => {
                        let k = rng.below(d.len());
                        d[k] = rng.byte();
                    }
                    _ => d.truncate(rng.below(d.len() + 1)),
                }
            }
            let _ = eng.process(t, *l, &d);
            d
        };
        let o = eng.process(t, link, &data);
        if o.state == CtState::Invalid {
            assert!(o.reason.is_some(), "invalid without reason: {o:?}");
        }
        let wire = data.len() + rng.below(3);
        let _ = eng.process_captured(t, link, &data, wire);
        if i % 1000 == 0 {
            eng.expire(t);
            assert!(eng.connections().count() <= 64);
        }
    }
    assert!(eng.stats().packets >= 40_000, "{}", eng.stats().packets);
}
