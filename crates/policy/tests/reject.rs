//! The answers `reject` builds, checked with an independent parser (etherparse): offending
//! packets are built with etherparse's `PacketBuilder`, answers read back with
//! `SlicedPacket` and their checksums recomputed by etherparse.
// Test helpers outside `#[test]` functions fail loudly too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etherparse::{
    IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header,
    Ipv6RawExtHeader, Ipv6RoutingExtensions, NetSlice, PacketBuilder, PacketBuilderStep,
    SlicedPacket, TransportSlice,
};
use keepstate_policy::model::RejectCode;
use keepstate_policy::reject::{build, RejectSkip, ICMPV6_MAX_LEN, ICMP_MAX_LEN, TTL};

const CODES: [RejectCode; 4] = [
    RejectCode::PortUnreachable,
    RejectCode::HostUnreachable,
    RejectCode::NetUnreachable,
    RejectCode::AdminProhibited,
];

const CLIENT4: [u8; 4] = [192, 0, 2, 10];
const SERVER4: [u8; 4] = [198, 51, 100, 7];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const SERVER6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];

fn write<T>(builder: PacketBuilderStep<T>, payload: &[u8]) -> Vec<u8>
where
    PacketBuilderStep<T>: Writable,
{
    builder.write_vec(payload)
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

fn answer(packet: &[u8], code: RejectCode) -> Vec<u8> {
    let mut out = Vec::new();
    build(packet, code, &mut out).unwrap_or_else(|e| panic!("no answer: {e}"));
    out
}

fn skip(packet: &[u8]) -> RejectSkip {
    let mut out = vec![0xaa; 8];
    let r = build(packet, RejectCode::PortUnreachable, &mut out);
    assert!(out.is_empty(), "out must be empty on a skip");
    r.expect_err("expected no answer")
}

fn ipv4(src: [u8; 4], dst: [u8; 4]) -> PacketBuilderStep<IpHeaders> {
    PacketBuilder::ipv4(src, dst, 50)
}

fn ipv6(src: [u8; 16], dst: [u8; 16]) -> PacketBuilderStep<IpHeaders> {
    PacketBuilder::ipv6(src, dst, 50)
}

fn ipv6_with(exts: Ipv6Extensions) -> PacketBuilderStep<IpHeaders> {
    let header = Ipv6Header {
        hop_limit: 50,
        source: CLIENT6,
        destination: SERVER6,
        ..Default::default()
    };
    PacketBuilder::ip(IpHeaders::Ipv6(header, exts))
}

fn ipv4_fragment(
    src: [u8; 4],
    dst: [u8; 4],
    offset: u16,
    more: bool,
) -> PacketBuilderStep<IpHeaders> {
    let mut header = Ipv4Header::new(0, 50, IpNumber::UDP, src, dst).unwrap();
    header.fragment_offset = IpFragOffset::try_new(offset).unwrap();
    header.more_fragments = more;
    PacketBuilder::ip(IpHeaders::Ipv4(header, Default::default()))
}

fn dest_opts(next: IpNumber) -> Ipv6RawExtHeader {
    // PadN filling the 6 option bytes.
    Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0]).unwrap()
}

/// What the tests check of a RST, read back by etherparse.
#[derive(Debug)]
struct Rst {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    ack_flag: bool,
}

/// Checks the IP layer of an answer (addresses swapped, TTL, checksums) and returns its RST.
fn rst_of(out: &[u8], offender_src: &[u8], offender_dst: &[u8]) -> Rst {
    let p = SlicedPacket::from_ip(out).unwrap();
    let Some(TransportSlice::Tcp(tcp)) = p.transport else {
        panic!("not TCP: {:?}", p.transport);
    };
    match p.net.unwrap() {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert_eq!(h.source(), offender_dst);
            assert_eq!(h.destination(), offender_src);
            assert_eq!(h.ttl(), TTL);
            assert_eq!(usize::from(h.total_len()), out.len());
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            assert!(h.dont_fragment());
            assert_eq!(
                tcp.checksum(),
                tcp.calc_checksum_ipv4(h.source(), h.destination()).unwrap()
            );
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            assert_eq!(h.source(), offender_dst);
            assert_eq!(h.destination(), offender_src);
            assert_eq!(h.hop_limit(), TTL);
            assert_eq!(usize::from(h.payload_length()) + 40, out.len());
            assert_eq!(
                tcp.checksum(),
                tcp.calc_checksum_ipv6(h.source(), h.destination()).unwrap()
            );
        }
        NetSlice::Arp(_) => panic!("arp"),
    }
    assert!(tcp.rst());
    assert!(!tcp.syn() && !tcp.fin() && !tcp.psh() && !tcp.urg());
    assert_eq!(tcp.window_size(), 0);
    assert_eq!(tcp.data_offset(), 5);
    assert!(tcp.payload().is_empty());
    Rst {
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        ack_flag: tcp.ack(),
    }
}

/// What the tests check of an ICMP or ICMPv6 error.
#[derive(Debug)]
struct Unreach<'a> {
    v6: bool,
    ty: u8,
    code: u8,
    quote: &'a [u8],
}

/// Checks the IP layer and checksum of an ICMP/ICMPv6 answer and returns its fields.
fn unreach_of<'a>(out: &'a [u8], offender_src: &[u8], offender_dst: &[u8]) -> Unreach<'a> {
    let p = SlicedPacket::from_ip(out).unwrap();
    match (p.net.unwrap(), p.transport) {
        (NetSlice::Ipv4(ip), Some(TransportSlice::Icmpv4(icmp))) => {
            let h = ip.header();
            assert_eq!(h.source(), offender_dst);
            assert_eq!(h.destination(), offender_src);
            assert_eq!(h.ttl(), TTL);
            assert_eq!(usize::from(h.total_len()), out.len());
            assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum());
            assert!(out.len() <= ICMP_MAX_LEN);
            assert_eq!(
                icmp.checksum(),
                icmp.icmp_type().calc_checksum(icmp.payload())
            );
            assert_eq!(icmp.bytes5to8(), [0; 4]);
            Unreach {
                v6: false,
                ty: icmp.type_u8(),
                code: icmp.code_u8(),
                quote: icmp.payload(),
            }
        }
        (NetSlice::Ipv6(ip), Some(TransportSlice::Icmpv6(icmp))) => {
            let h = ip.header();
            assert_eq!(h.source(), offender_dst);
            assert_eq!(h.destination(), offender_src);
            assert_eq!(h.hop_limit(), TTL);
            assert_eq!(usize::from(h.payload_length()) + 40, out.len());
            assert!(out.len() <= ICMPV6_MAX_LEN);
            let sum = icmp
                .icmp_type()
                .calc_checksum(h.source(), h.destination(), icmp.payload())
                .unwrap();
            assert_eq!(icmp.checksum(), sum);
            assert!(icmp.is_checksum_valid(h.source(), h.destination()));
            assert_eq!(icmp.bytes5to8(), [0; 4]);
            Unreach {
                v6: true,
                ty: icmp.type_u8(),
                code: icmp.code_u8(),
                quote: icmp.payload(),
            }
        }
        other => panic!("not an ICMP error: {other:?}"),
    }
}

fn expected_code(v6: bool, code: RejectCode) -> u8 {
    match (v6, code) {
        (false, RejectCode::PortUnreachable) => 3,
        (false, RejectCode::HostUnreachable) => 1,
        (false, RejectCode::NetUnreachable) => 0,
        (false, RejectCode::AdminProhibited) => 13,
        (true, RejectCode::PortUnreachable) => 4,
        (true, RejectCode::HostUnreachable) => 3,
        (true, RejectCode::NetUnreachable) => 0,
        (true, RejectCode::AdminProhibited) => 1,
    }
}

// ---- TCP ----

#[test]
fn rst_to_segment_with_ack_takes_its_ack_as_seq() {
    let pkt = write(
        ipv4(CLIENT4, SERVER4)
            .tcp(40000, 80, 1000, 4096)
            .ack(0x1234_5678)
            .psh(),
        b"GET / HTTP/1.1\r\n\r\n",
    );
    let rst = rst_of(
        &answer(&pkt, RejectCode::PortUnreachable),
        &CLIENT4,
        &SERVER4,
    );
    assert_eq!((rst.src_port, rst.dst_port), (80, 40000));
    assert_eq!(rst.seq, 0x1234_5678);
    assert_eq!(rst.ack, 0);
    assert!(!rst.ack_flag);
}

#[test]
fn rst_to_syn_acknowledges_syn_payload_and_fin() {
    // SYN only: ack = seq + 1.
    let syn = write(
        ipv4(CLIENT4, SERVER4).tcp(40001, 443, 7777, 64240).syn(),
        &[],
    );
    let rst = rst_of(
        &answer(&syn, RejectCode::PortUnreachable),
        &CLIENT4,
        &SERVER4,
    );
    assert_eq!((rst.src_port, rst.dst_port), (443, 40001));
    assert!(rst.ack_flag);
    assert_eq!((rst.seq, rst.ack), (0, 7778));

    // SYN with 20 bytes of data and FIN, sequence numbers wrapping: seq + 20 + 1 + 1.
    let seq = 0xffff_fff0;
    let synfin = write(
        ipv4(CLIENT4, SERVER4)
            .tcp(40002, 443, seq, 64240)
            .syn()
            .fin(),
        &[7; 20],
    );
    let rst = rst_of(
        &answer(&synfin, RejectCode::PortUnreachable),
        &CLIENT4,
        &SERVER4,
    );
    assert!(rst.ack_flag);
    assert_eq!((rst.seq, rst.ack), (0, seq.wrapping_add(22)));

    // Neither SYN nor ACK (a bare FIN with data): seq + data + FIN.
    let fin = write(
        ipv4(CLIENT4, SERVER4).tcp(40003, 22, 500, 1000).fin(),
        &[1; 5],
    );
    let rst = rst_of(
        &answer(&fin, RejectCode::PortUnreachable),
        &CLIENT4,
        &SERVER4,
    );
    assert!(rst.ack_flag);
    assert_eq!((rst.seq, rst.ack), (0, 506));
}

#[test]
fn rst_ignores_link_layer_padding() {
    // A minimum Ethernet frame pads a bare SYN; the padding is no TCP payload.
    let mut syn = write(ipv4(CLIENT4, SERVER4).tcp(40004, 25, 100, 1000).syn(), &[]);
    syn.extend_from_slice(&[0; 6]);
    let rst = rst_of(
        &answer(&syn, RejectCode::PortUnreachable),
        &CLIENT4,
        &SERVER4,
    );
    assert_eq!(rst.ack, 101);
}

#[test]
fn rst_over_ipv6_both_cases() {
    let acked = write(
        ipv6(CLIENT6, SERVER6).tcp(50000, 8080, 1, 1000).ack(99),
        b"data",
    );
    let rst = rst_of(
        &answer(&acked, RejectCode::AdminProhibited),
        &CLIENT6,
        &SERVER6,
    );
    assert_eq!((rst.src_port, rst.dst_port), (8080, 50000));
    assert_eq!((rst.seq, rst.ack, rst.ack_flag), (99, 0, false));

    let syn = write(
        ipv6(CLIENT6, SERVER6).tcp(50001, 8080, 41, 1000).syn(),
        &[0; 3],
    );
    let rst = rst_of(
        &answer(&syn, RejectCode::AdminProhibited),
        &CLIENT6,
        &SERVER6,
    );
    assert_eq!((rst.seq, rst.ack, rst.ack_flag), (0, 45, true));
}

#[test]
fn rst_through_ipv6_extension_headers() {
    let routing = Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[0, 0, 0, 0, 0, 0]).unwrap();
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(dest_opts(IpNumber::TCP)),
        destination_options: Some(dest_opts(IpNumber::TCP)),
        routing: Some(Ipv6RoutingExtensions {
            routing,
            final_destination_options: Some(dest_opts(IpNumber::TCP)),
        }),
        // An atomic fragment is a whole packet (RFC 6946).
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber::TCP,
            IpFragOffset::ZERO,
            false,
            7,
        )),
        auth: None,
    };
    let syn = write(ipv6_with(exts).tcp(50002, 22, 1000, 1000).syn(), &[0; 10]);
    let rst = rst_of(
        &answer(&syn, RejectCode::PortUnreachable),
        &CLIENT6,
        &SERVER6,
    );
    assert_eq!((rst.src_port, rst.dst_port), (22, 50002));
    assert_eq!((rst.seq, rst.ack, rst.ack_flag), (0, 1011, true));
}

#[test]
fn tcp_gets_a_rst_whatever_the_code() {
    let pkt = write(ipv4(CLIENT4, SERVER4).tcp(1, 2, 3, 4).syn(), &[]);
    for code in CODES {
        rst_of(&answer(&pkt, code), &CLIENT4, &SERVER4);
    }
}

// ---- ICMP and ICMPv6 ----

#[test]
fn udp_v4_gets_icmp_unreachable_per_code_quoting_the_packet() {
    let pkt = write(ipv4(CLIENT4, SERVER4).udp(5353, 53), b"query");
    for code in CODES {
        let out = answer(&pkt, code);
        let u = unreach_of(&out, &CLIENT4, &SERVER4);
        assert!(!u.v6);
        assert_eq!(u.ty, 3);
        assert_eq!(u.code, expected_code(false, code));
        assert_eq!(u.quote, &pkt[..]);
    }
}

#[test]
fn udp_v6_gets_icmpv6_unreachable_per_code_quoting_the_packet() {
    let pkt = write(ipv6(CLIENT6, SERVER6).udp(5353, 53), b"query");
    for code in CODES {
        let out = answer(&pkt, code);
        let u = unreach_of(&out, &CLIENT6, &SERVER6);
        assert!(u.v6);
        assert_eq!(u.ty, 1);
        assert_eq!(u.code, expected_code(true, code));
        assert_eq!(u.quote, &pkt[..]);
    }
}

#[test]
fn large_packets_are_quoted_up_to_the_size_limit() {
    let payload: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();

    let pkt = write(ipv4(CLIENT4, SERVER4).udp(1000, 2000), &payload);
    let out = answer(&pkt, RejectCode::PortUnreachable);
    assert_eq!(out.len(), ICMP_MAX_LEN);
    let u = unreach_of(&out, &CLIENT4, &SERVER4);
    assert_eq!(u.quote, &pkt[..ICMP_MAX_LEN - 28]);

    let pkt = write(ipv6(CLIENT6, SERVER6).udp(1000, 2000), &payload);
    let out = answer(&pkt, RejectCode::PortUnreachable);
    assert_eq!(out.len(), ICMPV6_MAX_LEN);
    let u = unreach_of(&out, &CLIENT6, &SERVER6);
    assert_eq!(u.quote, &pkt[..ICMPV6_MAX_LEN - 48]);
}

#[test]
fn quote_leaves_out_link_layer_padding() {
    let mut pkt = write(ipv4(CLIENT4, SERVER4).udp(1, 2), &[]);
    let len = pkt.len();
    pkt.extend_from_slice(&[0xee; 18]);
    let out = answer(&pkt, RejectCode::PortUnreachable);
    assert_eq!(unreach_of(&out, &CLIENT4, &SERVER4).quote, &pkt[..len]);
}

#[test]
fn udp_v6_behind_destination_options_gets_port_unreachable() {
    let exts = Ipv6Extensions {
        destination_options: Some(dest_opts(IpNumber::UDP)),
        ..Default::default()
    };
    let pkt = write(ipv6_with(exts).udp(33434, 33435), b"traceroute");
    assert_eq!(
        pkt[6], 60,
        "the builder wrote the destination options header"
    );
    let out = answer(&pkt, RejectCode::PortUnreachable);
    let u = unreach_of(&out, &CLIENT6, &SERVER6);
    assert_eq!((u.ty, u.code), (1, 4));
    assert_eq!(u.quote, &pkt[..]);
}

#[test]
fn icmp_queries_may_be_rejected() {
    let ping = write(ipv4(CLIENT4, SERVER4).icmpv4_echo_request(1, 1), b"ping");
    let u_out = answer(&ping, RejectCode::AdminProhibited);
    let u = unreach_of(&u_out, &CLIENT4, &SERVER4);
    assert_eq!((u.ty, u.code), (3, 13));

    let ping6 = write(ipv6(CLIENT6, SERVER6).icmpv6_echo_request(1, 1), b"ping");
    let u_out = answer(&ping6, RejectCode::AdminProhibited);
    let u = unreach_of(&u_out, &CLIENT6, &SERVER6);
    assert_eq!((u.ty, u.code), (1, 1));
    assert_eq!(u.quote, &ping6[..]);
}

#[test]
fn other_protocols_get_icmp() {
    // GRE over IPv4: no ports, still an ICMP error.
    let mut header = Ipv4Header::new(4, 50, IpNumber(47), CLIENT4, SERVER4).unwrap();
    header.header_checksum = header.calc_header_checksum();
    let mut pkt = header.to_bytes().to_vec();
    pkt.extend_from_slice(&[0, 0, 0x08, 0]);
    let out = answer(&pkt, RejectCode::HostUnreachable);
    let u = unreach_of(&out, &CLIENT4, &SERVER4);
    assert_eq!((u.ty, u.code), (3, 1));
    assert_eq!(u.quote, &pkt[..]);
}

#[test]
fn first_fragments_are_answered() {
    // UDP first fragment: the ICMP error quotes it (RFC 792 asks for the first fragment).
    let pkt = write(ipv4_fragment(CLIENT4, SERVER4, 0, true).udp(1, 2), &[0; 64]);
    let out = answer(&pkt, RejectCode::PortUnreachable);
    assert_eq!(unreach_of(&out, &CLIENT4, &SERVER4).quote, &pkt[..]);

    // TCP first fragment with ACK: the RST does not depend on the segment's length.
    let mut h = Ipv4Header::new(0, 50, IpNumber::TCP, CLIENT4, SERVER4).unwrap();
    h.more_fragments = true;
    let pkt = write(
        PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default()))
            .tcp(9, 80, 1, 1)
            .ack(77),
        &[0; 32],
    );
    let rst = rst_of(
        &answer(&pkt, RejectCode::PortUnreachable),
        &CLIENT4,
        &SERVER4,
    );
    assert_eq!((rst.seq, rst.ack_flag), (77, false));

    // ICMPv6 error for a first fragment of UDP over IPv6.
    let exts = Ipv6Extensions {
        fragment: Some(Ipv6FragmentHeader::new(
            IpNumber::UDP,
            IpFragOffset::ZERO,
            true,
            9,
        )),
        ..Default::default()
    };
    let pkt = write(ipv6_with(exts).udp(1, 2), &[0; 64]);
    let out = answer(&pkt, RejectCode::PortUnreachable);
    assert_eq!(unreach_of(&out, &CLIENT6, &SERVER6).quote, &pkt[..]);
}

// ---- Packets that get no answer ----

#[test]
fn no_rst_for_a_rst() {
    let rst = write(ipv4(CLIENT4, SERVER4).tcp(1, 2, 3, 0).rst(), &[]);
    assert_eq!(skip(&rst), RejectSkip::TcpRst);
    let rst_ack = write(ipv6(CLIENT6, SERVER6).tcp(1, 2, 3, 0).rst().ack(5), &[]);
    assert_eq!(skip(&rst_ack), RejectSkip::TcpRst);
}

#[test]
fn no_error_about_an_error() {
    for (ty, code) in [(3, 3), (4, 0), (5, 1), (11, 0), (12, 0)] {
        let inner = write(ipv4(SERVER4, CLIENT4).udp(2, 1), &[]);
        let pkt = write(ipv4(CLIENT4, SERVER4).icmpv4_raw(ty, code, [0; 4]), &inner);
        assert_eq!(skip(&pkt), RejectSkip::IcmpError, "ICMP type {ty}");
    }
    // Types beyond the ones Linux knows might be errors: no answer either.
    let pkt = write(ipv4(CLIENT4, SERVER4).icmpv4_raw(40, 0, [0; 4]), &[]);
    assert_eq!(skip(&pkt), RejectSkip::IcmpUnknownType);
    // ICMPv6 errors are types 0..=127; a redirect gets no error either (RFC 4443 2.4(e)).
    for ty in [1, 2, 3, 4, 100, 127, 137] {
        let pkt = write(ipv6(CLIENT6, SERVER6).icmpv6_raw(ty, 0, [0; 4]), &[0; 40]);
        assert_eq!(skip(&pkt), RejectSkip::IcmpError, "ICMPv6 type {ty}");
    }
}

#[test]
fn no_answer_to_sources_that_are_not_one_host() {
    for src in [
        [0, 0, 0, 0],
        [0, 1, 2, 3],
        [127, 0, 0, 1],
        [224, 0, 0, 1],
        [239, 255, 255, 250],
        [240, 0, 0, 1],
        [255, 255, 255, 255],
    ] {
        let udp = write(ipv4(src, SERVER4).udp(1, 2), &[]);
        assert_eq!(skip(&udp), RejectSkip::SourceNotUnicast, "{src:?}");
        let syn = write(ipv4(src, SERVER4).tcp(1, 2, 3, 4).syn(), &[]);
        assert_eq!(skip(&syn), RejectSkip::SourceNotUnicast, "{src:?}");
    }
    let mut mapped = [0; 16];
    mapped[10..].copy_from_slice(&[0xff, 0xff, 192, 0, 2, 1]);
    let mut loopback = [0; 16];
    loopback[15] = 1;
    let mut multicast = [0; 16];
    multicast[0] = 0xff;
    multicast[1] = 0x02;
    multicast[15] = 1;
    for src in [[0; 16], loopback, multicast, mapped] {
        let udp = write(ipv6(src, SERVER6).udp(1, 2), &[]);
        assert_eq!(skip(&udp), RejectSkip::SourceNotUnicast, "{src:?}");
        let syn = write(ipv6(src, SERVER6).tcp(1, 2, 3, 4).syn(), &[]);
        assert_eq!(skip(&syn), RejectSkip::SourceNotUnicast, "{src:?}");
    }
}

#[test]
fn no_answer_to_packets_for_multicast_or_broadcast() {
    for dst in [[255, 255, 255, 255], [224, 0, 0, 251], [239, 1, 2, 3]] {
        let udp = write(ipv4(CLIENT4, dst).udp(5353, 5353), &[]);
        assert_eq!(skip(&udp), RejectSkip::DestinationNotUnicast, "{dst:?}");
    }
    let mut all_nodes = [0; 16];
    all_nodes[0] = 0xff;
    all_nodes[1] = 0x02;
    all_nodes[15] = 1;
    let udp = write(ipv6(CLIENT6, all_nodes).udp(547, 547), &[]);
    assert_eq!(skip(&udp), RejectSkip::DestinationNotUnicast);
    let ping = write(ipv6(CLIENT6, all_nodes).icmpv6_echo_request(1, 1), &[]);
    assert_eq!(skip(&ping), RejectSkip::DestinationNotUnicast);
}

#[test]
fn no_answer_to_later_fragments() {
    let pkt = write(
        ipv4_fragment(CLIENT4, SERVER4, 185, true).udp(1, 2),
        &[0; 16],
    );
    assert_eq!(skip(&pkt), RejectSkip::Fragment);
    let last = write(
        ipv4_fragment(CLIENT4, SERVER4, 185, false).udp(1, 2),
        &[0; 16],
    );
    assert_eq!(skip(&last), RejectSkip::Fragment);

    let offset = IpFragOffset::try_new(100).unwrap();
    let exts = Ipv6Extensions {
        fragment: Some(Ipv6FragmentHeader::new(IpNumber::UDP, offset, false, 9)),
        ..Default::default()
    };
    let pkt = write(ipv6_with(exts).udp(1, 2), &[0; 16]);
    assert_eq!(skip(&pkt), RejectSkip::Fragment);

    // A TCP first fragment without ACK: the RST would have to acknowledge bytes not seen.
    let mut h = Ipv4Header::new(0, 50, IpNumber::TCP, CLIENT4, SERVER4).unwrap();
    h.more_fragments = true;
    let pkt = write(
        PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default()))
            .tcp(9, 80, 1, 1)
            .syn(),
        &[0; 32],
    );
    assert_eq!(skip(&pkt), RejectSkip::Fragment);
}

#[test]
fn truncated_packets_get_no_answer() {
    assert_eq!(skip(&[]), RejectSkip::Truncated);
    assert_eq!(skip(&[0x45]), RejectSkip::Truncated);
    assert_eq!(skip(&[0x60; 39]), RejectSkip::Truncated);

    let udp = write(ipv4(CLIENT4, SERVER4).udp(1, 2), b"payload");
    assert_eq!(skip(&udp[..udp.len() - 1]), RejectSkip::Truncated);
    let udp6 = write(ipv6(CLIENT6, SERVER6).udp(1, 2), b"payload");
    assert_eq!(skip(&udp6[..udp6.len() - 1]), RejectSkip::Truncated);

    // An IPv4 header with options (60 bytes) longer than the bytes given.
    let mut long_header = udp.clone();
    long_header.resize(64, 0);
    long_header[0] = 0x4f;
    long_header[2..4].copy_from_slice(&64u16.to_be_bytes());
    assert_eq!(skip(&long_header[..40]), RejectSkip::Truncated);

    // A TCP header cut short, with the IP length saying so.
    let syn = write(ipv4(CLIENT4, SERVER4).tcp(1, 2, 3, 4).syn(), &[]);
    let mut cut = syn[..30].to_vec();
    cut[2..4].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(skip(&cut), RejectSkip::Truncated);

    // An ICMP message with no type byte.
    let mut empty_icmp = syn[..20].to_vec();
    empty_icmp[9] = 1;
    assert_eq!(skip(&empty_icmp), RejectSkip::Truncated);

    // An IPv6 extension header running past the payload.
    let exts = Ipv6Extensions {
        destination_options: Some(dest_opts(IpNumber::UDP)),
        ..Default::default()
    };
    let mut pkt = write(ipv6_with(exts).udp(1, 2), &[]);
    pkt[41] = 20;
    assert_eq!(skip(&pkt), RejectSkip::Truncated);
}

#[test]
fn malformed_packets_get_no_answer() {
    let udp = write(ipv4(CLIENT4, SERVER4).udp(1, 2), b"payload");

    let mut short_ihl = udp.clone();
    short_ihl[0] = 0x44;
    assert_eq!(skip(&short_ihl), RejectSkip::Malformed);

    let mut short_total = udp.clone();
    short_total[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(skip(&short_total), RejectSkip::Malformed);

    let syn = write(ipv4(CLIENT4, SERVER4).tcp(1, 2, 3, 4).syn(), &[0; 8]);
    let mut small_offset = syn.clone();
    small_offset[32] = 0x40;
    assert_eq!(skip(&small_offset), RejectSkip::Malformed);
    let mut large_offset = syn.clone();
    large_offset[32] = 0xf0;
    assert_eq!(skip(&large_offset), RejectSkip::Malformed);

    // Hop-by-hop options after a destination options header.
    let exts = Ipv6Extensions {
        destination_options: Some(dest_opts(IpNumber::UDP)),
        ..Default::default()
    };
    let mut pkt = write(ipv6_with(exts).udp(1, 2), &[]);
    pkt[40] = 0;
    assert_eq!(skip(&pkt), RejectSkip::Malformed);

    let mut not_ip = udp.clone();
    not_ip[0] = 0x55;
    assert_eq!(skip(&not_ip), RejectSkip::BadIpVersion);
}

/// An IPv6 packet from CLIENT6 to SERVER6 with `n` destination options headers before UDP.
fn ipv6_ext_chain(n: usize) -> Vec<u8> {
    let udp = write(ipv6(CLIENT6, SERVER6).udp(1, 2), &[]);
    let mut pkt = udp[..40].to_vec();
    pkt[6] = 60;
    for i in 0..n {
        let next = if i + 1 == n { 17 } else { 60 };
        pkt.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    pkt.extend_from_slice(&udp[40..]);
    let plen = u16::try_from(pkt.len() - 40).unwrap();
    pkt[4..6].copy_from_slice(&plen.to_be_bytes());
    pkt
}

#[test]
fn ipv6_extension_chains_are_bounded() {
    let ok = ipv6_ext_chain(8);
    let out = answer(&ok, RejectCode::PortUnreachable);
    assert_eq!(unreach_of(&out, &CLIENT6, &SERVER6).quote, &ok[..]);
    assert_eq!(skip(&ipv6_ext_chain(9)), RejectSkip::ExtensionChainTooLong);
}

#[test]
fn skip_names_are_stable_kebab_case() {
    for r in RejectSkip::ALL {
        let name = r.name();
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
            "{name}"
        );
        assert_eq!(RejectSkip::from_name(name), Some(*r));
        assert_eq!(r.to_string(), name);
    }
    assert_eq!(RejectSkip::TcpRst.name(), "tcp-rst");
    assert_eq!(RejectSkip::from_name("no-such-reason"), None);
}

// ---- Arbitrary input ----

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// Checks that an answer is a well-formed IP packet with valid checksums.
fn check_answer(input: &[u8], out: &[u8]) {
    let p = SlicedPacket::from_ip(out).unwrap();
    let (src, dst): (Vec<u8>, Vec<u8>) = match p.net.as_ref().unwrap() {
        NetSlice::Ipv4(ip) => {
            assert_eq!(input[0] >> 4, 4);
            (
                ip.header().destination().to_vec(),
                ip.header().source().to_vec(),
            )
        }
        NetSlice::Ipv6(ip) => {
            assert_eq!(input[0] >> 4, 6);
            (
                ip.header().destination().to_vec(),
                ip.header().source().to_vec(),
            )
        }
        NetSlice::Arp(_) => panic!("arp"),
    };
    match p.transport {
        Some(TransportSlice::Tcp(_)) => {
            rst_of(out, &src, &dst);
        }
        _ => {
            let u = unreach_of(out, &src, &dst);
            assert!(input.starts_with(u.quote));
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let seeds = [
        write(ipv4(CLIENT4, SERVER4).tcp(1, 2, 3, 4).syn(), &[1; 12]),
        write(ipv4(CLIENT4, SERVER4).udp(1, 2), &[2; 30]),
        write(ipv4(CLIENT4, SERVER4).icmpv4_echo_request(1, 2), &[3; 8]),
        write(ipv6(CLIENT6, SERVER6).tcp(1, 2, 3, 4).ack(9), &[4; 12]),
        write(ipv6(CLIENT6, SERVER6).icmpv6_echo_request(1, 2), &[5; 8]),
        ipv6_ext_chain(3),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::new();
    let mut answered = 0;
    for i in 0..6000 {
        let input: Vec<u8> = if i % 2 == 0 {
            // Random bytes, mostly starting like IPv4 or IPv6.
            let len = rng.below(160);
            let mut v: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            if let Some(first) = v.first_mut() {
                *first = match rng.below(3) {
                    0 => 0x45,
                    1 => 0x60,
                    _ => *first,
                };
            }
            v
        } else {
            // A valid packet with a few bytes changed and maybe cut or extended.
            let mut v = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(v.len());
                v[at] = rng.byte();
            }
            match rng.below(4) {
                0 => v.truncate(rng.below(v.len() + 1)),
                1 => v.extend((0..rng.below(20)).map(|_| rng.byte())),
                _ => {}
            }
            v
        };
        let code = CODES[rng.below(CODES.len())];
        match build(&input, code, &mut out) {
            Ok(()) => {
                answered += 1;
                check_answer(&input, &out);
            }
            Err(_) => assert!(out.is_empty()),
        }
    }
    assert!(answered > 100, "only {answered} inputs were answered");
}
