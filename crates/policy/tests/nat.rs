//! NAT packet rewriting in place (translation decisions are tested through the firewall
//! in `nat_firewall.rs`), checked with an
//! independent parser (etherparse): packets are built with etherparse's `PacketBuilder`,
//! read back with `SlicedPacket`, and every checksum recomputed by etherparse.
// Test helpers outside `#[test]` functions fail loudly too; the casts narrow small random
// numbers on purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    icmpv4, icmpv6, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header,
    Ipv6RawExtHeader, NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket, TransportSlice,
};
use keepstate_policy::nat::{
    rewrite, rewrite_icmp_error, rewrite_icmp_error_outer, NatSkip, Tuple5,
};

/// Source and destination to hand to [`rewrite`]; `None` where nothing changes.
type Rewrite = (Option<(IpAddr, u16)>, Option<(IpAddr, u16)>);

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(prefix: u16, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(prefix, 0xdb8, 0, 0, 0, 0, 0, host))
}

fn wan4() -> IpAddr {
    v4(203, 0, 113, 1)
}

fn wan6() -> IpAddr {
    v6(0x2001, 1)
}

fn lan4(h: u8) -> IpAddr {
    v4(192, 168, 1, h)
}

fn lan6(h: u16) -> IpAddr {
    v6(0xfd00, h)
}

fn server4(h: u8) -> IpAddr {
    v4(198, 51, 100, h)
}

fn server6(h: u16) -> IpAddr {
    v6(0x2001, 0x100 + h)
}

fn tuple(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Tuple5 {
    Tuple5 {
        proto,
        src,
        sport,
        dst,
        dport,
    }
}

/// A fixed-seed generator (splitmix64), so every run tests the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn u16(&mut self) -> u16 {
        self.next() as u16
    }

    fn u8(&mut self) -> u8 {
        self.next() as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// `PacketBuilderStep::write` exists per final step type; this lets one helper serve all.
trait Writable {
    fn write_vec(self, payload: &[u8]) -> Vec<u8>;
}

macro_rules! writable {
    ($($t:ty),*) => {$(
        impl Writable for PacketBuilderStep<$t> {
            fn write_vec(self, payload: &[u8]) -> Vec<u8> {
                let mut v = Vec::with_capacity(self.size(payload.len()));
                self.write(&mut v, payload).unwrap();
                v
            }
        }
    )*};
}
writable!(
    etherparse::TcpHeader,
    etherparse::UdpHeader,
    etherparse::Icmpv4Header,
    etherparse::Icmpv6Header
);

fn ip_step(src: IpAddr, dst: IpAddr) -> PacketBuilderStep<IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    }
}

/// What a test packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    /// UDP over IPv4 without a checksum (zero).
    UdpNoChecksum,
    /// ICMP/ICMPv6 echo; `reply` picks echo reply.
    Echo,
}

impl Kind {
    fn proto(self, v6: bool) -> u8 {
        match self {
            Kind::Tcp => TCP,
            Kind::Udp | Kind::UdpNoChecksum => UDP,
            Kind::Echo if v6 => ICMPV6,
            Kind::Echo => ICMP,
        }
    }
}

/// A packet from `src:sport` to `dst:dport` (for echo, `sport` is the identifier).
fn packet(
    kind: Kind,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    reply: bool,
    payload: &[u8],
) -> Vec<u8> {
    let step = ip_step(src, dst);
    let mut p = match (kind, src.is_ipv6(), reply) {
        (Kind::Tcp, ..) => step
            .tcp(sport, dport, 1000, 64000)
            .ack(77)
            .write_vec(payload),
        (Kind::Udp | Kind::UdpNoChecksum, ..) => step.udp(sport, dport).write_vec(payload),
        (Kind::Echo, false, false) => step.icmpv4_echo_request(sport, 9).write_vec(payload),
        (Kind::Echo, false, true) => step.icmpv4_echo_reply(sport, 9).write_vec(payload),
        (Kind::Echo, true, false) => step.icmpv6_echo_request(sport, 9).write_vec(payload),
        (Kind::Echo, true, true) => step.icmpv6_echo_reply(sport, 9).write_vec(payload),
    };
    if kind == Kind::UdpNoChecksum {
        assert!(src.is_ipv4());
        p[26] = 0;
        p[27] = 0;
    }
    p
}

/// The addressing of a packet read back by etherparse, after checking every checksum:
/// (src, sport, dst, dport), echo identifiers as both ports.
fn checked(p: &[u8]) -> (IpAddr, u16, IpAddr, u16) {
    let s = SlicedPacket::from_ip(p).unwrap();
    let (src, dst) = match s.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert_eq!(
                h.header_checksum(),
                h.to_header().calc_header_checksum(),
                "IPv4 header checksum"
            );
            (IpAddr::from(h.source()), IpAddr::from(h.destination()))
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            (IpAddr::from(h.source()), IpAddr::from(h.destination()))
        }
        NetSlice::Arp(_) => panic!("arp"),
    };
    let (sport, dport) = match s.transport.as_ref().unwrap() {
        TransportSlice::Tcp(tcp) => {
            let want = match (src, dst) {
                (IpAddr::V4(a), IpAddr::V4(b)) => tcp.calc_checksum_ipv4(a.octets(), b.octets()),
                (IpAddr::V6(a), IpAddr::V6(b)) => tcp.calc_checksum_ipv6(a.octets(), b.octets()),
                _ => unreachable!(),
            };
            assert_eq!(tcp.checksum(), want.unwrap(), "TCP checksum");
            (tcp.source_port(), tcp.destination_port())
        }
        TransportSlice::Udp(udp) => {
            let h = udp.to_header();
            let want = match (src, dst) {
                (IpAddr::V4(_), _) if udp.checksum() == 0 => 0,
                (IpAddr::V4(a), IpAddr::V4(b)) => h
                    .calc_checksum_ipv4_raw(a.octets(), b.octets(), udp.payload())
                    .unwrap(),
                (IpAddr::V6(a), IpAddr::V6(b)) => h
                    .calc_checksum_ipv6_raw(a.octets(), b.octets(), udp.payload())
                    .unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(udp.checksum(), want, "UDP checksum");
            (udp.source_port(), udp.destination_port())
        }
        TransportSlice::Icmpv4(icmp) => {
            let want = icmp.icmp_type().calc_checksum(icmp.payload());
            assert_eq!(icmp.checksum(), want, "ICMP checksum");
            let id = u16::from_be_bytes([icmp.slice()[4], icmp.slice()[5]]);
            (id, id)
        }
        TransportSlice::Icmpv6(icmp) => {
            let (IpAddr::V6(a), IpAddr::V6(b)) = (src, dst) else {
                unreachable!()
            };
            let want = icmp
                .icmp_type()
                .calc_checksum(a.octets(), b.octets(), icmp.payload())
                .unwrap();
            assert_eq!(icmp.checksum(), want, "ICMPv6 checksum");
            let id = u16::from_be_bytes([icmp.slice()[4], icmp.slice()[5]]);
            (id, id)
        }
        other => panic!("unexpected transport {other:?}"),
    };
    (src, sport, dst, dport)
}

fn apply(p: &mut [u8], rw: Rewrite) {
    rewrite(p, rw.0, rw.1).unwrap();
}

/// How a masqueraded connection whose port had to move leaves: from `wan`, another port.
fn moved(orig: &Tuple5, wan: IpAddr) -> Rewrite {
    (Some((wan, orig.sport ^ 0x4000)), None)
}

#[test]
fn time_exceeded_through_masquerade() {
    let hop = v4(100, 64, 0, 1);
    for (kind, quote_len) in [
        (Kind::Udp, 28),
        (Kind::Udp, usize::MAX),
        (Kind::UdpNoChecksum, 28),
        (Kind::Tcp, 28),
        (Kind::Tcp, 38),
        (Kind::Tcp, usize::MAX),
        (Kind::Echo, 28),
    ] {
        let proto = kind.proto(false);
        let dport = if kind == Kind::Echo { 33434 } else { 53 };
        let sport = if kind == Kind::Echo {
            33434
        } else {
            33000 + quote_len.min(999) as u16
        };
        let orig = tuple(proto, lan4(2), sport, server4(1), dport);
        let b = moved(&orig, wan4());
        let sent = packet(
            kind,
            lan4(2),
            sport,
            server4(1),
            dport,
            false,
            b"traceroute probe",
        );
        let mut left = sent.clone();
        apply(&mut left, b);

        let quote = &left[..quote_len.min(left.len())];
        let mut err = ip_step(hop, wan4())
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write_vec(quote);
        let before = err.clone();
        rewrite_icmp_error(&mut err, Some(lan4(2)), Some((lan4(2), sport)), None).unwrap();
        assert_ne!(err, before);

        let s = SlicedPacket::from_ip(&err).unwrap();
        let NetSlice::Ipv4(ip) = s.net.as_ref().unwrap() else {
            panic!()
        };
        let h = ip.header();
        assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
        assert_eq!(IpAddr::from(h.destination()), lan4(2));
        assert_eq!(IpAddr::from(h.source()), hop);
        let Some(TransportSlice::Icmpv4(icmp)) = s.transport.as_ref() else {
            panic!()
        };
        assert_eq!(
            icmp.checksum(),
            icmp.icmp_type().calc_checksum(icmp.payload()),
            "{kind:?}/{quote_len}: ICMP checksum"
        );
        // The quote is now what the inside host sent, byte for byte: addresses, ports, the
        // quoted IPv4 header checksum and the transport checksum where quoted.
        let inner = icmp.payload();
        assert_eq!(inner, &sent[..inner.len()], "{kind:?}/{quote_len}");
        let ih = etherparse::Ipv4HeaderSlice::from_slice(inner).unwrap();
        assert_eq!(ih.header_checksum(), ih.to_header().calc_header_checksum());
    }
}

#[test]
fn packet_too_big_through_ipv6_masquerade() {
    let hop = v6(0x2001, 0xbeef);
    for kind in [Kind::Tcp, Kind::Udp, Kind::Echo] {
        let proto = kind.proto(true);
        let sport = 40000;
        let dport = if kind == Kind::Echo { sport } else { 443 };
        let orig = tuple(proto, lan6(2), sport, server6(1), dport);
        let b = moved(&orig, wan6());
        let sent = packet(
            kind,
            lan6(2),
            sport,
            server6(1),
            dport,
            false,
            &[0x5a; 1400],
        );
        let mut left = sent.clone();
        apply(&mut left, b);
        let quote = &left[..1280 - 48];
        let mut err = ip_step(hop, wan6())
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write_vec(quote);
        rewrite_icmp_error(&mut err, Some(lan6(2)), Some((lan6(2), sport)), None).unwrap();

        let s = SlicedPacket::from_ip(&err).unwrap();
        let NetSlice::Ipv6(ip) = s.net.as_ref().unwrap() else {
            panic!()
        };
        assert_eq!(IpAddr::from(ip.header().destination()), lan6(2));
        let Some(TransportSlice::Icmpv6(icmp)) = s.transport.as_ref() else {
            panic!()
        };
        let (IpAddr::V6(a), IpAddr::V6(d)) = (hop, lan6(2)) else {
            unreachable!()
        };
        assert!(icmp.is_checksum_valid(a.octets(), d.octets()), "{kind:?}");
        let want = icmp
            .icmp_type()
            .calc_checksum(a.octets(), d.octets(), icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), want);
        let inner = icmp.payload();
        assert_eq!(inner, &sent[..inner.len()], "{kind:?}");
    }
}

#[test]
fn error_from_a_port_forward_server_leaves_translated() {
    // The server answers a forwarded UDP packet with port unreachable: the error leaves
    // from the WAN address and quotes the packet as the client sent it.
    let client = v4(192, 0, 2, 77);
    let sent = packet(Kind::Udp, client, 5000, wan4(), 5060, false, b"INVITE");
    let mut arrived = sent.clone();
    apply(&mut arrived, (None, Some((lan4(10), 5060))));
    let mut err = ip_step(lan4(10), client)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port,
        ))
        .write_vec(&arrived);
    rewrite_icmp_error_outer(&mut err, Some(wan4()), None, None, Some((wan4(), 5060))).unwrap();
    let s = SlicedPacket::from_ip(&err).unwrap();
    let NetSlice::Ipv4(ip) = s.net.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(IpAddr::from(ip.header().source()), wan4());
    assert_eq!(
        ip.header().header_checksum(),
        ip.header().to_header().calc_header_checksum()
    );
    let Some(TransportSlice::Icmpv4(icmp)) = s.transport.as_ref() else {
        panic!()
    };
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    assert_eq!(icmp.payload(), &sent[..]);
}

#[test]
fn ipv4_options_and_ipv6_extension_headers() {
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, [192, 168, 1, 2], [198, 51, 100, 1]).unwrap();
    h.options = etherparse::Ipv4Options::try_from(&[1, 1, 1, 0, 7, 7, 4, 0][..]).unwrap();
    let mut p = PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(1234, 53)
        .write_vec(b"query");
    assert_eq!(p[0] & 0x0f, 7);
    rewrite(&mut p, Some((wan4(), 2000)), None).unwrap();
    assert_eq!(checked(&p), (wan4(), 2000, server4(1), 53));

    let opts = |next| Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0]).unwrap();
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(opts(IpNumber::TCP)),
        destination_options: Some(opts(IpNumber::TCP)),
        ..Default::default()
    };
    let (IpAddr::V6(s), IpAddr::V6(d)) = (lan6(2), server6(1)) else {
        unreachable!()
    };
    let header = Ipv6Header {
        hop_limit: 64,
        source: s.octets(),
        destination: d.octets(),
        ..Default::default()
    };
    let mut p = PacketBuilder::ip(IpHeaders::Ipv6(header, exts))
        .tcp(40000, 443, 1, 1000)
        .write_vec(b"hello");
    assert_eq!(p[6], 0, "hop-by-hop first");
    rewrite(&mut p, Some((wan6(), 50000)), Some((server6(2), 8443))).unwrap();
    assert_eq!(checked(&p), (wan6(), 50000, server6(2), 8443));
}

fn ipv4_header_checksum(p: &mut [u8]) {
    p[10] = 0;
    p[11] = 0;
    let h = etherparse::Ipv4HeaderSlice::from_slice(p)
        .unwrap()
        .to_header();
    p[10..12].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
}

#[test]
fn ipv4_fragments() {
    let payload: Vec<u8> = (0..200u8).collect();
    let whole = packet(Kind::Udp, lan4(2), 5000, server4(1), 9999, false, &payload);
    // First fragment: the UDP header and 64 bytes of payload.
    let cut = 20 + 8 + 64;
    let mut first = whole[..cut].to_vec();
    first[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
    first[6] |= 0x20;
    ipv4_header_checksum(&mut first);
    rewrite(&mut first, Some((wan4(), 6000)), None).unwrap();
    // Reassembled with the rest, the rewritten datagram's UDP checksum verifies.
    let mut joined = first.clone();
    joined.extend_from_slice(&whole[cut..]);
    joined[2..4].copy_from_slice(&(whole.len() as u16).to_be_bytes());
    joined[6] &= !0x20;
    ipv4_header_checksum(&mut joined);
    assert_eq!(checked(&joined), (wan4(), 6000, server4(1), 9999));

    // A later fragment: addresses only, the bytes where ports would be stay untouched.
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, [192, 168, 1, 2], [198, 51, 100, 1]).unwrap();
    h.fragment_offset = IpFragOffset::try_new(9).unwrap();
    let mut later = h.to_bytes().to_vec();
    later.extend_from_slice(&payload[..40]);
    let len = later.len() as u16;
    later[2..4].copy_from_slice(&len.to_be_bytes());
    ipv4_header_checksum(&mut later);
    rewrite(&mut later, Some((wan4(), 6000)), None).unwrap();
    assert_eq!(&later[20..], &payload[..40]);
    let hs = etherparse::Ipv4HeaderSlice::from_slice(&later).unwrap();
    assert_eq!(IpAddr::from(hs.source()), wan4());
    assert_eq!(hs.header_checksum(), hs.to_header().calc_header_checksum());
}

#[test]
fn zero_udp_checksum_over_ipv6_is_left_alone() {
    let mut p = packet(Kind::Udp, lan6(2), 5000, server6(1), 53, false, b"q");
    p[46] = 0;
    p[47] = 0;
    rewrite(&mut p, Some((wan6(), 6000)), None).unwrap();
    assert_eq!(&p[46..48], &[0, 0]);
    assert_eq!(&p[40..42], &6000u16.to_be_bytes());
}

/// Runs `f` on a copy of `p` and checks it failed with `want`, leaving the bytes alone.
fn refused(p: &[u8], want: NatSkip, f: impl Fn(&mut [u8]) -> Result<(), NatSkip>) {
    let mut c = p.to_vec();
    assert_eq!(f(&mut c), Err(want));
    assert_eq!(c, p, "{want}: the packet was changed");
}

#[test]
fn malformed_packets_are_left_unchanged() {
    let src = Some((wan4(), 1));
    let rw = |p: &mut [u8]| rewrite(p, src, None);
    let tcp = packet(Kind::Tcp, lan4(2), 40000, server4(1), 443, false, b"data");
    for n in 0..tcp.len() {
        let mut c = tcp[..n].to_vec();
        assert!(rewrite(&mut c, src, None).is_err(), "prefix {n}");
        assert_eq!(c, &tcp[..n]);
    }
    let mut bad = tcp.clone();
    bad[0] = 0x44;
    refused(&bad, NatSkip::Malformed, rw);
    bad[0] = 0x55;
    refused(&bad, NatSkip::BadIpVersion, rw);
    refused(&tcp, NatSkip::FamilyMismatch, |p| {
        rewrite(p, None, Some((wan6(), 1)))
    });
    // A TCP header cut short inside a packet whose length says so.
    let mut short = tcp[..30].to_vec();
    short[2..4].copy_from_slice(&30u16.to_be_bytes());
    ipv4_header_checksum(&mut short);
    refused(&short, NatSkip::Truncated, rw);

    // ICMP errors.
    let echo = packet(Kind::Echo, lan4(2), 7, server4(1), 7, false, b"ping");
    refused(&echo, NatSkip::NotIcmpError, |p| {
        rewrite_icmp_error(p, Some(lan4(2)), None, None)
    });
    refused(&tcp, NatSkip::NotIcmpError, |p| {
        rewrite_icmp_error(p, Some(lan4(2)), None, None)
    });
    let left = packet(Kind::Tcp, wan4(), 40000, server4(1), 443, false, b"");
    let err = |quote: &[u8]| {
        ip_step(server4(1), wan4())
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::Port,
            ))
            .write_vec(quote)
    };
    let inner = Some((lan4(2), 40000));
    let fix = |p: &mut [u8]| rewrite_icmp_error(p, Some(lan4(2)), inner, None);
    // Fewer than eight bytes of the quoted TCP header, or a cut quoted IP header.
    refused(&err(&left[..27]), NatSkip::Truncated, fix);
    refused(&err(&left[..19]), NatSkip::Truncated, fix);
    // A quoted packet of the other IP version.
    let six = packet(Kind::Tcp, wan6(), 40000, server6(1), 443, false, b"");
    refused(&err(&six[..48]), NatSkip::Malformed, fix);
    // The same error, whole, goes through; then its outer length is cut.
    let good = err(&left[..28]);
    let mut ok = good.clone();
    fix(&mut ok).unwrap();
    for n in 0..good.len() {
        refused(&good[..n], NatSkip::Truncated, fix);
    }
    // ICMPv6: an error whose quote is IPv4 is malformed; packet too big is fine.
    let e6 = ip_step(server6(1), wan6())
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
            icmpv6::DestUnreachableCode::Port,
        ))
        .write_vec(&left[..28]);
    refused(&e6, NatSkip::Malformed, |p| {
        rewrite_icmp_error(p, Some(lan6(2)), Some((lan6(2), 1)), None)
    });
    for skip in NatSkip::ALL {
        assert_eq!(NatSkip::from_name(skip.name()), Some(*skip));
    }
}

#[test]
fn routing_header_with_segments_left_refuses_a_destination_rewrite() {
    let routing = Ipv6RawExtHeader::new_raw(IpNumber::UDP, &[0, 1, 0, 0, 0, 0]).unwrap();
    let exts = Ipv6Extensions {
        routing: Some(etherparse::Ipv6RoutingExtensions {
            routing,
            final_destination_options: None,
        }),
        ..Default::default()
    };
    let (IpAddr::V6(s), IpAddr::V6(d)) = (lan6(2), server6(1)) else {
        unreachable!()
    };
    let header = Ipv6Header {
        hop_limit: 64,
        source: s.octets(),
        destination: d.octets(),
        ..Default::default()
    };
    let p = PacketBuilder::ip(IpHeaders::Ipv6(header, exts))
        .udp(1, 2)
        .write_vec(b"x");
    refused(&p, NatSkip::RoutingHeader, |p| {
        rewrite(p, None, Some((server6(2), 2)))
    });
    let mut ok = p.clone();
    rewrite(&mut ok, Some((wan6(), 9)), None).unwrap();
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(7);
    let templates = [
        packet(Kind::Tcp, lan4(2), 1, server4(1), 2, false, b"abc"),
        packet(Kind::Udp, lan6(2), 1, server6(1), 2, false, b"abc"),
        packet(Kind::Echo, lan4(2), 1, server4(1), 1, false, b""),
        ip_step(server4(1), wan4())
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write_vec(&packet(Kind::Udp, wan4(), 1, server4(1), 2, false, b"")),
        ip_step(server6(1), wan6())
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write_vec(&packet(Kind::Tcp, wan6(), 1, server6(1), 2, false, b"")),
    ];
    let addrs = [wan4(), wan6()];
    for _ in 0..50_000 {
        let mut p = if rng.below(4) == 0 {
            let n = rng.below(100) as usize;
            let mut p = rng.bytes(n);
            if let Some(b) = p.first_mut() {
                *b = if rng.below(2) == 0 { 0x45 } else { 0x60 };
            }
            p
        } else {
            // A real packet with a few bytes changed and maybe cut.
            let mut p = templates[rng.below(templates.len() as u64) as usize].clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(p.len() as u64) as usize;
                p[i] = rng.u8();
            }
            let n = rng.below(p.len() as u64 + 1) as usize;
            p.truncate(n.max(p.len() - 8));
            p
        };
        let a = addrs[rng.below(2) as usize];
        let port = rng.u16();
        let before = p.clone();
        if rewrite(&mut p, Some((a, port)), Some((a, port))).is_err() {
            assert_eq!(p, before);
        }
        let before = p.clone();
        if rewrite_icmp_error(&mut p, Some(a), Some((a, port)), Some((a, port))).is_err() {
            assert_eq!(p, before);
        }
    }
}
