//! IPv6 extension headers and IPv4/IPv6 fragments.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;

fn a6(last: u16) -> [u8; 16] {
    match v6(last) {
        std::net::IpAddr::V6(a) => a.octets(),
        _ => unreachable!(),
    }
}

fn ip6_header() -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: 0,
        next_header: IpNumber::TCP,
        hop_limit: 64,
        source: a6(1),
        destination: a6(0x10),
    }
}

fn opts_header() -> Ipv6RawExtHeader {
    // PadN covering the 6 bytes of option space.
    Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0]).unwrap()
}

fn frame_with_exts(
    exts: Ipv6Extensions,
    src_last: u16,
    dst_last: u16,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = ip6_header();
    h.source = a6(src_last);
    h.destination = a6(dst_last);
    let b = PacketBuilder::ethernet2(MAC_C, MAC_S)
        .ip(IpHeaders::Ipv6(h, exts))
        .tcp(sport, dport, seq, 65535);
    finish_tcp(b, ack, flags, &[], payload)
}

#[test]
fn tcp_behind_hop_by_hop_and_destination_options() {
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(opts_header()),
        destination_options: Some(opts_header()),
        ..Default::default()
    };
    let mut sim = Sim::new();
    let syn = frame_with_exts(exts.clone(), 1, 0x10, 40_000, 443, 1000, 0, SYN, &[]);
    // Sanity: etherparse itself reads the chain back.
    let parsed = etherparse::SlicedPacket::from_ethernet(&syn).unwrap();
    assert!(matches!(
        parsed.transport,
        Some(etherparse::TransportSlice::Tcp(_))
    ));
    expect_new(&sim.eth(&syn));
    let c = sim.only();
    assert_eq!(c.family, Family::V6);
    assert_eq!(c.proto, 6);
    assert_eq!(
        c.original.l4,
        L4Tuple::Ports {
            sport: 40_000,
            dport: 443
        }
    );
    assert_eq!(c.tcp_state, Some(TcpState::SynSent));
    let synack = frame_with_exts(
        exts.clone(),
        0x10,
        1,
        443,
        40_000,
        9000,
        1001,
        SYN | ACK,
        &[],
    );
    expect_est_reply(&sim.eth(&synack));
    let ack = frame_with_exts(exts, 1, 0x10, 40_000, 443, 1001, 9001, ACK, &[]);
    expect_est_orig(&sim.eth(&ack));
    assert_eq!(sim.tcp_state(), Some(TcpState::Established));
}

#[test]
fn ipv6_non_first_fragment_is_invalid() {
    let exts = Ipv6Extensions {
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber::TCP,
            IpFragOffset::try_new(100).unwrap(),
            false,
            0x1234,
        )),
        ..Default::default()
    };
    let mut sim = Sim::new();
    let f = frame_with_exts(exts, 1, 0x10, 40_000, 443, 1000, 0, SYN, &[0; 32]);
    expect_invalid(&sim.eth(&f), DropReason::Fragment);
    assert_eq!(sim.conns().len(), 0);
}

#[test]
fn ipv6_first_fragment_with_full_tcp_header_is_tracked() {
    let exts = Ipv6Extensions {
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber::TCP,
            IpFragOffset::ZERO,
            true,
            0x1234,
        )),
        ..Default::default()
    };
    let mut sim = Sim::new();
    let f = frame_with_exts(exts, 1, 0x10, 40_000, 443, 1000, 0, SYN, &[0; 32]);
    expect_new(&sim.eth(&f));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
}

fn ipv4_frag(offset_units: u16, more: bool, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::TCP, [10, 0, 0, 1], [192, 0, 2, 10]).unwrap();
    h.more_fragments = more;
    h.fragment_offset = IpFragOffset::try_new(offset_units).unwrap();
    h.identification = 0x4242;
    let b = PacketBuilder::ethernet2(MAC_C, MAC_S)
        .ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()))
        .tcp(40_000, 80, 1000, 65535);
    finish_tcp(b, 0, flags, &[], payload)
}

#[test]
fn ipv4_non_first_fragment_is_invalid() {
    let mut sim = Sim::new();
    let f = ipv4_frag(185, false, SYN, &[0; 16]);
    expect_invalid(&sim.eth(&f), DropReason::Fragment);
    assert_eq!(sim.conns().len(), 0);
}

#[test]
fn ipv4_first_fragment_with_full_tcp_header_is_tracked() {
    let mut sim = Sim::new();
    let f = ipv4_frag(0, true, SYN, &[0; 16]);
    expect_new(&sim.eth(&f));
    assert_eq!(sim.tcp_state(), Some(TcpState::SynSent));
}

#[test]
fn ipv4_tiny_first_fragment_is_invalid() {
    // A first fragment (MF set) carrying only 8 bytes of the TCP header.
    let mut sim = Sim::new();
    let full = ipv4_frag(0, true, SYN, &[]);
    let mut tiny = full[..14 + 20 + 8].to_vec();
    // Fix the IPv4 total length (28) and header checksum.
    tiny[14 + 2..14 + 4].copy_from_slice(&28u16.to_be_bytes());
    let mut h = Ipv4Header::from_slice(&tiny[14..]).unwrap().0;
    h.total_len = 28;
    h.header_checksum = h.calc_header_checksum();
    tiny[14..34].copy_from_slice(&h.to_bytes());
    let o = sim.eth(&tiny);
    assert_eq!(o.state, CtState::Invalid, "{o:?}");
    assert!(
        matches!(
            o.reason,
            Some(DropReason::TinyFragment) | Some(DropReason::Truncated)
        ),
        "{o:?}"
    );
}
