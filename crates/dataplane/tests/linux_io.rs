//! Linux packet I/O: the offload resolution (sans-IO, any user) and, as root, rings on
//! veth pairs in network namespaces this test creates and removes.
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::too_many_arguments
)]

mod netns;
use netns::*;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etherparse::{
    EtherType, Ethernet2Header, LinkExtHeader, NetHeaders, PacketBuilder, PacketHeaders,
    PayloadSlice, TcpOptionElement, TransportHeader, VlanId,
};
use keepstate_dataplane::gso::{prepare_super, segment_ip_len, tx_header, Gso, GsoKind, Offload};
use keepstate_dataplane::linux::{
    if_info, kernel_addresses, set_up, IfInfo, IoErrorKind, OffloadError, Ring, RingConfig,
    Segmenter, VnetHdr,
};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const V4_A: [u8; 4] = [10, 0, 0, 1];
const V4_B: [u8; 4] = [10, 0, 0, 2];
const V6_A: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_B: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

// ---------------------------------------------------------------------------------------
// Helpers shared by the offload and the root tests.

/// The pseudo-header sum (folded, not complemented) that a CHECKSUM_PARTIAL frame carries
/// in its transport checksum field, computed independently of the code under test.
fn pseudo_sum(src: &[u8], dst: &[u8], proto: u8, l4_len: usize) -> u16 {
    let mut s: u64 = 0;
    for w in src.chunks(2).chain(dst.chunks(2)) {
        s += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    s += u64::from(proto) + l4_len as u64;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn payload_pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// What a segment looked like to etherparse, after its checksums were verified.
#[derive(Debug)]
struct Parsed {
    vlan: Option<u16>,
    ip_id: Option<u16>,
    tcp: Option<etherparse::TcpHeader>,
    udp_len: Option<u16>,
    payload: Vec<u8>,
}

/// Parses `frame` with etherparse and checks IP lengths, the IPv4 header checksum and the
/// transport checksum (etherparse's own calculation).
fn parse_checked(frame: &[u8]) -> Parsed {
    let h = PacketHeaders::from_ethernet_slice(frame)
        .unwrap_or_else(|e| panic!("etherparse rejects frame: {e:?}"));
    let vlan = h.link_exts.iter().find_map(|x| match x {
        LinkExtHeader::Vlan(v) => Some(v.vlan_id.value()),
        _ => None,
    });
    let l2 = 14 + 4 * h.link_exts.len();
    let (payload, tcp_payload) = match h.payload {
        PayloadSlice::Tcp(p) => (p, true),
        PayloadSlice::Udp(p) => (p, false),
        other => panic!("not TCP/UDP: {other:?}"),
    };
    let mut ip_id = None;
    let mut tcp = None;
    let mut udp_len = None;
    match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), Some(t)) => {
            assert_eq!(
                usize::from(ip.total_len),
                frame.len() - l2,
                "IPv4 total length"
            );
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            ip_id = Some(ip.identification);
            match t {
                TransportHeader::Tcp(t) => {
                    assert!(tcp_payload);
                    assert_eq!(
                        t.checksum,
                        t.calc_checksum_ipv4(ip, payload).unwrap(),
                        "TCP checksum (v4)"
                    );
                    tcp = Some(t.clone());
                }
                TransportHeader::Udp(u) => {
                    assert_eq!(
                        u.checksum,
                        u.calc_checksum_ipv4(ip, payload).unwrap(),
                        "UDP checksum (v4)"
                    );
                    udp_len = Some(u.length);
                }
                other => panic!("unexpected transport {other:?}"),
            }
        }
        (Some(NetHeaders::Ipv6(ip, _)), Some(t)) => {
            assert_eq!(
                usize::from(ip.payload_length),
                frame.len() - l2 - 40,
                "IPv6 payload length"
            );
            match t {
                TransportHeader::Tcp(t) => {
                    assert_eq!(
                        t.checksum,
                        t.calc_checksum_ipv6(ip, payload).unwrap(),
                        "TCP checksum (v6)"
                    );
                    tcp = Some(t.clone());
                }
                TransportHeader::Udp(u) => {
                    assert_eq!(
                        u.checksum,
                        u.calc_checksum_ipv6(ip, payload).unwrap(),
                        "UDP checksum (v6)"
                    );
                    udp_len = Some(u.length);
                }
                other => panic!("unexpected transport {other:?}"),
            }
        }
        other => panic!("not IP: {other:?}"),
    }
    if let Some(l) = udp_len {
        assert_eq!(usize::from(l), payload.len() + 8, "UDP length");
    }
    Parsed {
        vlan,
        ip_id,
        tcp,
        udp_len,
        payload: payload.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------
// Offload unit tests (no root needed).

struct Super {
    frame: Vec<u8>,
    hdr: VnetHdr,
}

const TCP_OPTS: [TcpOptionElement; 3] = [
    TcpOptionElement::Noop,
    TcpOptionElement::Noop,
    TcpOptionElement::Timestamp(0x1122_3344, 0x5566_7788),
];

/// A TCP super-frame as the kernel hands it over: etherparse builds it, then the IPv4 id
/// and the partial checksum are put in like a GSO skb has them.
fn tcp_super(v6: bool, vlan: Option<u16>, payload: &[u8], seq: u32, mss: u16, ecn: bool) -> Super {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut frame = Vec::new();
    macro_rules! finish {
        ($ip:expr) => {{
            let mut t = $ip
                .tcp(40000, 443, seq, 501)
                .options(&TCP_OPTS)
                .unwrap()
                .ack(77)
                .psh()
                .fin();
            if ecn {
                t = t.cwr().ece();
            }
            t.write(&mut frame, payload).unwrap();
        }};
    }
    match (v6, vlan) {
        (false, None) => finish!(eth.ipv4(V4_A, V4_B, 64)),
        (false, Some(v)) => finish!(eth
            .single_vlan(VlanId::try_new(v).unwrap())
            .ipv4(V4_A, V4_B, 64)),
        (true, None) => finish!(eth.ipv6(V6_A, V6_B, 64)),
        (true, Some(v)) => finish!(eth
            .single_vlan(VlanId::try_new(v).unwrap())
            .ipv6(V6_A, V6_B, 64)),
    }
    let nh = if vlan.is_some() { 18 } else { 14 };
    let l4 = nh + if v6 { 40 } else { 20 };
    let l4_len = frame.len() - l4;
    let ps = if v6 {
        pseudo_sum(&V6_A, &V6_B, 6, l4_len)
    } else {
        // A non-zero starting id that wraps during segmentation.
        frame[nh + 4..nh + 6].copy_from_slice(&0xfffeu16.to_be_bytes());
        pseudo_sum(&V4_A, &V4_B, 6, l4_len)
    };
    frame[l4 + 16..l4 + 18].copy_from_slice(&ps.to_be_bytes());
    let tcp_hdr_len = 20 + 12;
    let gso = if v6 {
        VnetHdr::GSO_TCPV6
    } else {
        VnetHdr::GSO_TCPV4
    } | if ecn { VnetHdr::GSO_ECN } else { 0 };
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: gso,
        hdr_len: (l4 + tcp_hdr_len) as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    Super { frame, hdr }
}

fn udp_super(v6: bool, vlan: Option<u16>, payload: &[u8], gso_size: u16) -> Super {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let mut frame = Vec::new();
    match (v6, vlan) {
        (false, None) => eth
            .ipv4(V4_A, V4_B, 64)
            .udp(5353, 4789)
            .write(&mut frame, payload)
            .unwrap(),
        (false, Some(v)) => eth
            .single_vlan(VlanId::try_new(v).unwrap())
            .ipv4(V4_A, V4_B, 64)
            .udp(5353, 4789)
            .write(&mut frame, payload)
            .unwrap(),
        (true, None) => eth
            .ipv6(V6_A, V6_B, 64)
            .udp(5353, 4789)
            .write(&mut frame, payload)
            .unwrap(),
        (true, Some(v)) => eth
            .single_vlan(VlanId::try_new(v).unwrap())
            .ipv6(V6_A, V6_B, 64)
            .udp(5353, 4789)
            .write(&mut frame, payload)
            .unwrap(),
    }
    let nh = if vlan.is_some() { 18 } else { 14 };
    let l4 = nh + if v6 { 40 } else { 20 };
    let ps = if v6 {
        pseudo_sum(&V6_A, &V6_B, 17, frame.len() - l4)
    } else {
        pseudo_sum(&V4_A, &V4_B, 17, frame.len() - l4)
    };
    frame[l4 + 6..l4 + 8].copy_from_slice(&ps.to_be_bytes());
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_UDP_L4,
        hdr_len: (l4 + 8) as u16,
        gso_size,
        csum_start: l4 as u16,
        csum_offset: 6,
    };
    Super { frame, hdr }
}

fn run_segmenter(seg: &mut Segmenter, s: &mut Super) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut out = Vec::new();
    let n = seg.process(&s.hdr, &mut s.frame, |f| out.push(f.to_vec()))?;
    assert_eq!(n, out.len(), "returned count equals frames emitted");
    Ok(out)
}

fn check_tcp_segmentation(v6: bool, vlan: Option<u16>, payload_len: usize, mss: u16, ecn: bool) {
    let payload = payload_pattern(payload_len, 7);
    let seq0 = 0xffff_d000u32; // wraps within the transfer
    let mut s = tcp_super(v6, vlan, &payload, seq0, mss, ecn);
    let super_len = s.frame.len();
    let mut seg = Segmenter::new();
    let out = run_segmenter(&mut seg, &mut s).unwrap();
    let mss_us = usize::from(mss);
    assert_eq!(
        out.len(),
        payload_len.div_ceil(mss_us).max(1),
        "segment count"
    );
    let hdrs = super_len - payload_len;
    let mut joined = Vec::new();
    for (i, f) in out.iter().enumerate() {
        let last = i + 1 == out.len();
        assert!(
            f.len() <= hdrs + mss_us,
            "segment {i} larger than headers + MSS"
        );
        let p = parse_checked(f);
        assert_eq!(p.vlan, vlan, "VLAN tag kept");
        let t = p.tcp.expect("tcp");
        assert_eq!(
            t.sequence_number,
            seq0.wrapping_add((i * mss_us) as u32),
            "seq of segment {i}"
        );
        assert_eq!(t.acknowledgment_number, 77);
        assert!(t.ack);
        assert_eq!(t.fin, last, "FIN only on the last (segment {i})");
        assert_eq!(t.psh, last, "PSH only on the last (segment {i})");
        assert_eq!(t.cwr, ecn && i == 0, "CWR only on the first (segment {i})");
        assert_eq!(t.ece, ecn, "ECE on all");
        assert_eq!(t.options.as_slice().len(), 12);
        assert_eq!(
            t.options_iterator().map(|o| o.unwrap()).collect::<Vec<_>>(),
            TCP_OPTS.to_vec(),
            "options kept"
        );
        if !v6 {
            assert_eq!(
                p.ip_id,
                Some(0xfffeu16.wrapping_add(i as u16)),
                "IPv4 id increments"
            );
        }
        if !last {
            assert_eq!(p.payload.len(), mss_us);
        }
        joined.extend_from_slice(&p.payload);
    }
    assert_eq!(
        joined, payload,
        "segments carry the original payload in order"
    );
}

#[test]
fn gso_tcpv4_segments() {
    check_tcp_segmentation(false, None, 20_000, 1448, false);
    check_tcp_segmentation(false, None, 64_000, 1448, true);
    check_tcp_segmentation(false, None, 1448 * 7, 1448, false); // exact multiple
    check_tcp_segmentation(false, None, 100, 1448, false); // one segment
}

/// A router rewrites each segment in place (MAC addresses, TTL, NAT) before the next is
/// built: every segment must still start from the sender's headers.
#[test]
fn segments_survive_the_caller_rewriting_them() {
    let payload = payload_pattern(5000, 7);
    let mut s = tcp_super(false, None, &payload, 1000, 1400, false);
    let mut seg = Segmenter::new();
    let mut out: Vec<Vec<u8>> = Vec::new();
    let n = seg
        .process(&s.hdr, &mut s.frame, |f| {
            out.push(f.to_vec());
            f.fill(0xee);
        })
        .unwrap();
    assert_eq!(n, 4);
    let mut joined = Vec::new();
    for f in &out {
        let p = parse_checked(f);
        joined.extend_from_slice(&p.payload);
    }
    assert_eq!(joined, payload);
}

#[test]
fn gso_tcpv6_segments() {
    check_tcp_segmentation(true, None, 30_001, 1428, false);
    check_tcp_segmentation(true, None, 9000, 1000, true);
}

#[test]
fn gso_tcp_vlan_tagged_frames_use_absolute_offsets() {
    check_tcp_segmentation(false, Some(42), 10_000, 1444, false);
    check_tcp_segmentation(true, Some(4000), 10_000, 1424, true);
}

fn check_udp_segmentation(v6: bool, vlan: Option<u16>, payload_len: usize, gso_size: u16) {
    let payload = payload_pattern(payload_len, 3);
    let mut s = udp_super(v6, vlan, &payload, gso_size);
    let out = run_segmenter(&mut Segmenter::new(), &mut s).unwrap();
    let gs = usize::from(gso_size);
    assert_eq!(out.len(), payload_len.div_ceil(gs));
    let mut ids = Vec::new();
    for (i, f) in out.iter().enumerate() {
        let p = parse_checked(f);
        assert_eq!(p.vlan, vlan);
        assert_eq!(
            p.payload,
            payload[i * gs..((i + 1) * gs).min(payload_len)],
            "datagram {i}"
        );
        assert!(p.udp_len.is_some());
        ids.extend(p.ip_id);
    }
    if !v6 {
        assert!(
            ids.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
            "IPv4 ids increment: {ids:?}"
        );
    }
}

#[test]
fn gso_udp_l4_segments() {
    check_udp_segmentation(false, None, 12_000, 1200);
    check_udp_segmentation(false, Some(7), 5_001, 1000);
    check_udp_segmentation(true, None, 8_000, 1232);
    check_udp_segmentation(true, Some(7), 999, 1232);
}

/// Builds a frame with etherparse, replaces its transport checksum with the pseudo-header
/// sum, and expects completion to restore exactly what etherparse computed.
#[test]
fn partial_checksums_are_completed() {
    let payload = payload_pattern(777, 9);
    let mut cases: Vec<(Vec<u8>, usize, usize, u8, bool)> = Vec::new(); // frame, l4, csum_offset, proto, v6
    let mut f = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_A, V4_B, 64)
        .tcp(1, 2, 3, 4)
        .options(&TCP_OPTS)
        .unwrap()
        .write(&mut f, &payload)
        .unwrap();
    cases.push((f, 34, 16, 6, false));
    let mut f = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(V6_A, V6_B, 64)
        .udp(1, 2)
        .write(&mut f, &payload)
        .unwrap();
    cases.push((f, 54, 6, 17, true));
    let mut f = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv4(V4_A, V4_B, 64)
        .udp(1, 2)
        .write(&mut f, &payload)
        .unwrap();
    cases.push((f, 38, 6, 17, false));
    let mut f = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(VlanId::try_new(100).unwrap())
        .ipv6(V6_A, V6_B, 64)
        .tcp(1, 2, 3, 4)
        .write(&mut f, &payload[..776])
        .unwrap();
    cases.push((f, 58, 16, 6, true));

    let mut seg = Segmenter::new();
    for (orig, l4, off, proto, v6) in cases {
        parse_checked(&orig);
        let (src, dst): (&[u8], &[u8]) = if v6 { (&V6_A, &V6_B) } else { (&V4_A, &V4_B) };
        let mut partial = orig.clone();
        let ps = pseudo_sum(src, dst, proto, orig.len() - l4);
        partial[l4 + off..l4 + off + 2].copy_from_slice(&ps.to_be_bytes());
        assert_ne!(partial, orig);
        let hdr = VnetHdr {
            flags: VnetHdr::F_NEEDS_CSUM,
            csum_start: l4 as u16,
            csum_offset: off as u16,
            ..VnetHdr::default()
        };
        let mut out = Vec::new();
        let n = seg
            .process(&hdr, &mut partial, |f| out.push(f.to_vec()))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            out[0], orig,
            "completed checksum equals etherparse's (l4 at {l4})"
        );
        parse_checked(&out[0]);
    }
}

#[test]
fn plain_frames_pass_through_untouched() {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_A, V4_B, 64)
        .udp(1, 2)
        .write(&mut f, b"hello")
        .unwrap();
    let orig = f.clone();
    for flags in [0, VnetHdr::F_DATA_VALID] {
        let mut out = Vec::new();
        let hdr = VnetHdr {
            flags,
            ..VnetHdr::default()
        };
        assert_eq!(
            Segmenter::new().process(&hdr, &mut f, |x| out.push(x.to_vec())),
            Ok(1)
        );
        assert_eq!(out, vec![orig.clone()]);
    }
}

#[test]
fn vnet_header_bytes_are_host_order() {
    let h = VnetHdr {
        flags: 1,
        gso_type: 0x81,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
    assert_eq!(VnetHdr::parse(&[0u8; 9]), None);
    #[cfg(target_endian = "little")]
    assert_eq!(h.to_bytes(), [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]);
}

#[test]
fn bad_metadata_is_an_error() {
    let payload = payload_pattern(5000, 1);
    let base = tcp_super(false, None, &payload, 1, 1000, false);
    let mut seg = Segmenter::new();
    let mut try_hdr = |h: VnetHdr| {
        let mut f = base.frame.clone();
        let mut n = 0;
        let r = seg.process(&h, &mut f, |_| n += 1);
        assert_eq!(n, 0, "nothing emitted on error");
        r
    };
    let b = base.hdr;
    assert_eq!(
        try_hdr(VnetHdr { gso_type: 9, ..b }),
        Err(OffloadError::UnknownGsoType(9))
    );
    assert!(matches!(
        try_hdr(VnetHdr {
            gso_type: VnetHdr::GSO_UDP,
            ..b
        }),
        Err(OffloadError::Unsupported(_))
    ));
    assert!(matches!(
        try_hdr(VnetHdr {
            gso_type: VnetHdr::GSO_UDP_L4 | VnetHdr::GSO_ECN,
            ..b
        }),
        Err(OffloadError::Unsupported(_))
    ));
    assert!(matches!(
        try_hdr(VnetHdr {
            gso_type: VnetHdr::GSO_ECN,
            ..b
        }),
        Err(OffloadError::Unsupported(_))
    ));
    assert!(matches!(
        try_hdr(VnetHdr { flags: 4, ..b }),
        Err(OffloadError::UnknownFlags(4))
    ));
    assert!(matches!(
        try_hdr(VnetHdr { gso_size: 0, ..b }),
        Err(OffloadError::Malformed(_))
    ));
    assert!(matches!(
        try_hdr(VnetHdr {
            gso_type: VnetHdr::GSO_TCPV6,
            ..b
        }),
        Err(OffloadError::Malformed(_))
    ));
    assert!(matches!(
        try_hdr(VnetHdr {
            csum_start: 30,
            ..b
        }),
        Err(OffloadError::Malformed(_))
    ));
    assert!(matches!(
        try_hdr(VnetHdr {
            csum_offset: 6,
            ..b
        }),
        Err(OffloadError::Malformed(_))
    ));
    let no_gso = VnetHdr {
        gso_type: 0,
        gso_size: 0,
        ..b
    };
    assert!(matches!(
        try_hdr(VnetHdr {
            csum_start: 60_000,
            ..no_gso
        }),
        Err(OffloadError::ChecksumOutOfRange { .. })
    ));
    let len = base.frame.len() as u16;
    assert!(matches!(
        try_hdr(VnetHdr {
            csum_start: len - 1,
            csum_offset: 0,
            ..no_gso
        }),
        Err(OffloadError::ChecksumOutOfRange { .. })
    ));
    assert!(matches!(
        try_hdr(VnetHdr {
            csum_start: 34,
            csum_offset: u16::MAX,
            ..no_gso
        }),
        Err(OffloadError::ChecksumOutOfRange { .. })
    ));
}

/// csum_start past IPv6 extension headers: the transport header is found behind them and
/// the extension headers are copied into every segment.
#[test]
fn gso_tcpv6_behind_extension_headers() {
    use etherparse::{IpHeaders, IpNumber, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader};
    let payload = payload_pattern(7000, 11);
    let ip = Ipv6Header {
        source: V6_A,
        destination: V6_B,
        hop_limit: 64,
        ..Default::default()
    };
    let exts = Ipv6Extensions {
        destination_options: Some(
            Ipv6RawExtHeader::new_raw(IpNumber::TCP, &[1, 4, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
                .unwrap(),
        ),
        ..Default::default()
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ip(IpHeaders::Ipv6(ip, exts))
        .tcp(1, 2, 100, 1000)
        .ack(5)
        .psh()
        .write(&mut frame, &payload)
        .unwrap();
    let l4 = 14 + 40 + 16;
    assert_eq!(frame[l4 + 12] >> 4, 5, "TCP header where expected");
    let hdr = VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: VnetHdr::GSO_TCPV6,
        hdr_len: (l4 + 20) as u16,
        gso_size: 1400,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    let mut out = Vec::new();
    assert_eq!(
        Segmenter::new().process(&hdr, &mut frame, |f| out.push(f.to_vec())),
        Ok(5)
    );
    let mut joined = Vec::new();
    for (i, f) in out.iter().enumerate() {
        let p = parse_checked(f);
        let t = p.tcp.unwrap();
        assert_eq!(t.sequence_number, 100 + 1400 * i as u32);
        assert_eq!(t.psh, i == 4);
        assert_eq!(&f[54..70], &frame[54..70], "extension header copied");
        joined.extend(p.payload);
    }
    assert_eq!(joined, payload);
    // Pointing csum_start at the extension header instead is refused.
    let bad = VnetHdr {
        csum_start: 54,
        ..hdr
    };
    assert!(Segmenter::new().process(&bad, &mut frame, |_| {}).is_err());
}

/// xorshift64*, so the fuzz loop is reproducible without another dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn malformed_metadata_and_frames_never_panic() {
    let mut rng = Rng(0x6b65_6570_7374_6174);
    let p = payload_pattern(4000, 5);
    let templates = [
        tcp_super(false, None, &p, 9, 1000, false),
        tcp_super(true, Some(5), &p, 9, 1200, true),
        udp_super(false, None, &p, 900),
        udp_super(true, None, &p[..50], 900),
    ];
    let mut seg = Segmenter::new();
    let started = Instant::now();
    let mut ok = 0;
    for _ in 0..20_000 {
        let t = &templates[rng.below(templates.len())];
        let mut frame = t.frame.clone();
        let mut hdr = t.hdr;
        for _ in 0..rng.below(4) {
            match rng.below(9) {
                0 => frame.truncate(rng.below(frame.len() + 1)),
                1 => {
                    let i = rng.below(frame.len().clamp(1, 80));
                    if let Some(b) = frame.get_mut(i) {
                        *b = rng.next() as u8;
                    }
                }
                2 => hdr.flags = rng.next() as u8 & 7,
                3 => {
                    hdr.gso_type = [0, 1, 3, 4, 5, 0x81, 0x84, 0x85, rng.next() as u8][rng.below(9)]
                }
                4 => hdr.gso_size = [0, 1, 7, 1448, u16::MAX, rng.next() as u16][rng.below(6)],
                5 => hdr.csum_start = rng.next() as u16 % 100,
                6 => hdr.csum_offset = [0, 6, 16, rng.next() as u16][rng.below(4)],
                7 => hdr.csum_start = u16::MAX - rng.below(4) as u16,
                _ => frame.extend_from_slice(&[0; 3]),
            }
        }
        let orig_len = frame.len();
        let mut emitted = 0;
        if let Ok(n) = seg.process(&hdr, &mut frame, |f| {
            emitted += 1;
            assert!(
                f.len() <= orig_len,
                "a segment is never longer than its super-frame"
            );
        }) {
            assert_eq!(n, emitted);
            ok += 1;
        }
    }
    assert!(ok > 0, "some mutations stay valid");
    assert!(started.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------------------------------
// Interface errors (no root needed).

#[test]
fn missing_and_invalid_interfaces_are_named() {
    let name = format!("ksx{}", std::process::id());
    let e = if_info(&name).unwrap_err();
    assert_eq!(e.kind(), IoErrorKind::NoSuchInterface);
    assert_eq!(
        e.to_string(),
        format!("interface {name}: no such interface")
    );
    let e = kernel_addresses(&name).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("interface {name}: no such interface")
    );
    let e = set_up(&name).unwrap_err();
    assert_eq!(e.kind(), IoErrorKind::NoSuchInterface);
    let e = if_info("a-name-longer-than-ifnamsiz").unwrap_err();
    assert_eq!(e.kind(), IoErrorKind::InvalidName);
    assert!(
        e.to_string()
            .starts_with("interface a-name-longer-than-ifnamsiz: not a valid interface name"),
        "{e}"
    );
    let lo = if_info("lo").unwrap();
    assert!(lo.ifindex > 0);
    assert!(lo.up);
    assert!(
        lo.kernel_addrs.contains(&"127.0.0.1".parse().unwrap()),
        "{lo:?}"
    );
}

/// Without CAP_NET_RAW, opening a ring fails with a message that says so. Capabilities are
/// per thread on Linux, so only a scratch thread loses it.
#[test]
fn ring_without_cap_net_raw_says_what_is_missing() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED ring_without_cap_net_raw_says_what_is_missing: needs root (to hold and drop CAP_NET_RAW)");
        return;
    }
    let lo = if_info("lo").unwrap();
    let err = std::thread::spawn(move || {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data words, as capget(2) says.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()),
                0
            );
            d[0].effective &= !(1 << 13); // CAP_NET_RAW
            assert_eq!(
                libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()),
                0
            );
        }
        Ring::open(&lo, &RingConfig::default()).unwrap_err()
    })
    .join()
    .unwrap();
    assert_eq!(err.kind(), IoErrorKind::Permission);
    assert_eq!(
        err.to_string(),
        "interface lo: opening a packet socket needs root or CAP_NET_RAW (got EPERM)"
    );
}

// ---------------------------------------------------------------------------------------
// Super-frames kept whole (no root needed).

/// Makes the IPv4 header checksum right again after a test changed the header.
fn fix_ipv4_checksum(frame: &mut [u8], nh: usize) {
    let (h, _) = etherparse::Ipv4Header::from_slice(&frame[nh..]).unwrap();
    let c = h.calc_header_checksum();
    frame[nh + 10..nh + 12].copy_from_slice(&c.to_be_bytes());
}

/// The super-frames the kernel hands over (partial checksum, as `tcp_super`/`udp_super`
/// build them, IPv4 header checksum valid), with the kind and size they stand for.
fn kernel_supers() -> Vec<(String, Super, Gso)> {
    let mut v = Vec::new();
    for (v6, vlan, ecn) in [
        (false, None, false),
        (true, None, false),
        (false, Some(7), false),
        (true, Some(7), true),
        (false, None, true),
    ] {
        let mut s = tcp_super(
            v6,
            vlan,
            &payload_pattern(10_000, 3),
            0xffff_f000,
            1448,
            ecn,
        );
        if !v6 {
            fix_ipv4_checksum(&mut s.frame, if vlan.is_some() { 18 } else { 14 });
        }
        let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
        v.push((
            format!("tcp v6={v6} vlan={vlan:?} ecn={ecn}"),
            s,
            Gso { kind, size: 1448 },
        ));
    }
    for (v6, vlan) in [(false, None), (true, None), (false, Some(9))] {
        let s = udp_super(v6, vlan, &payload_pattern(6_000, 5), 1200);
        let g = Gso {
            kind: GsoKind::UdpL4,
            size: 1200,
        };
        v.push((format!("udp v6={v6} vlan={vlan:?}"), s, g));
    }
    v
}

#[test]
fn super_frames_are_kept_whole_with_their_checksum_completed() {
    for (what, mut s, gso) in kernel_supers() {
        let payload = parse_payload_unchecked(&s.frame);
        let off = prepare_super(&s.hdr, &mut s.frame).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(off, Offload { gso: Some(gso) }, "{what}");
        // etherparse verifies the transport checksum over the whole super-frame.
        let p = parse_checked(&s.frame);
        assert_eq!(p.payload, payload, "{what}: payload untouched");
    }
}

/// The payload etherparse sees, without checking checksums (a partial one is not valid).
fn parse_payload_unchecked(frame: &[u8]) -> Vec<u8> {
    match PacketHeaders::from_ethernet_slice(frame).unwrap().payload {
        PayloadSlice::Tcp(p) | PayloadSlice::Udp(p) => p.to_vec(),
        other => panic!("not TCP/UDP: {other:?}"),
    }
}

#[test]
fn super_frame_checksums_are_computed_when_the_field_holds_no_partial_sum() {
    for (what, mut s, gso) in kernel_supers() {
        // CHECKSUM_UNNECESSARY from the kernel: the field is not to be trusted.
        s.hdr.flags = VnetHdr::F_DATA_VALID;
        let l4 = usize::from(s.hdr.csum_start) + usize::from(s.hdr.csum_offset);
        s.frame[l4..l4 + 2].copy_from_slice(&[0xde, 0xad]);
        assert_eq!(
            prepare_super(&s.hdr, &mut s.frame).unwrap(),
            Offload { gso: Some(gso) },
            "{what}"
        );
        parse_checked(&s.frame);
    }
}

#[test]
fn a_super_frame_of_one_segment_is_an_ordinary_frame() {
    let mut s = tcp_super(false, None, &payload_pattern(1000, 1), 1, 1448, false);
    fix_ipv4_checksum(&mut s.frame, 14);
    assert_eq!(prepare_super(&s.hdr, &mut s.frame).unwrap(), Offload::NONE);
    assert_eq!(parse_checked(&s.frame).payload.len(), 1000);
}

#[test]
fn super_frames_whose_lengths_do_not_describe_them_are_not_kept_whole() {
    // BIG TCP leaves the IPv4 total length 0; a UDP length that disagrees is as bad.
    let mut s = tcp_super(false, None, &payload_pattern(10_000, 1), 1, 1448, false);
    s.frame[16..18].copy_from_slice(&[0, 0]);
    let before = s.frame.clone();
    assert!(prepare_super(&s.hdr, &mut s.frame).is_err());
    assert_eq!(s.frame, before, "untouched");
    // The ring segments it instead; the segmenter rewrites every length.
    let segs = run_segmenter(&mut Segmenter::new(), &mut s).unwrap();
    assert_eq!(segs.len(), 7);
    for f in &segs {
        parse_checked(f);
    }

    let mut u = udp_super(true, None, &payload_pattern(6_000, 1), 1200);
    u.frame[14 + 40 + 4..14 + 40 + 6].copy_from_slice(&1208u16.to_be_bytes());
    assert!(prepare_super(&u.hdr, &mut u.frame).is_err());
    // Bad metadata is refused as by the segmenter.
    let mut t = tcp_super(false, None, &payload_pattern(10_000, 1), 1, 1448, false);
    t.hdr.gso_size = 0;
    assert!(prepare_super(&t.hdr, &mut t.frame).is_err());
    t.hdr.gso_size = 1448;
    t.hdr.gso_type = VnetHdr::GSO_TCPV6;
    assert!(prepare_super(&t.hdr, &mut t.frame).is_err());
    t.hdr.gso_type = VnetHdr::GSO_UDP;
    assert!(prepare_super(&t.hdr, &mut t.frame).is_err());
}

#[test]
fn the_tx_header_is_what_the_kernel_gave_and_the_checksum_partial_again() {
    // A super-frame kept whole and sent on unchanged must go out as it came in: the
    // kernel's own virtio-net header and partial checksum (`tcp_super` builds them as a
    // GSO skb has them, independently of the code under test).
    for (what, s, gso) in kernel_supers() {
        let mut frame = s.frame.clone();
        prepare_super(&s.hdr, &mut frame).unwrap();
        let full = frame.clone();
        let hdr = tx_header(&mut frame, gso).unwrap_or_else(|e| panic!("{what}: {e}"));
        let mut want = s.hdr;
        // The kernel's hdr_len is a hint; ours covers exactly the headers.
        want.hdr_len = hdr.hdr_len;
        assert_eq!(hdr, want, "{what}");
        assert_eq!(
            frame, s.frame,
            "{what}: checksum field holds the pseudo-header sum"
        );
        let nh = if frame[12..14] == [0x81, 0x00] {
            18
        } else {
            14
        };
        let th_len = if gso.kind == GsoKind::UdpL4 {
            8
        } else {
            usize::from(frame[usize::from(hdr.csum_start) + 12] >> 4) * 4
        };
        assert_eq!(
            usize::from(hdr.hdr_len),
            usize::from(hdr.csum_start) + th_len,
            "{what}"
        );
        assert_eq!(
            segment_ip_len(&full, gso),
            Some(usize::from(hdr.csum_start) + th_len - nh + usize::from(gso.size)),
            "{what}"
        );
        // What the kernel does with it when the device cannot checksum: complete it.
        keepstate_dataplane::gso::complete_checksum(&mut frame, hdr.csum_start, hdr.csum_offset)
            .unwrap();
        assert_eq!(
            frame, full,
            "{what}: completing the partial sum gives the full checksum"
        );
    }
}

#[test]
fn the_tx_header_follows_translated_addresses() {
    // After NAT the pseudo-header sum is the new addresses': rewrite the source (fixing
    // the checksums as a translator would, here by rebuilding) and compare.
    let payload = payload_pattern(5_000, 9);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([203, 0, 113, 2], V4_B, 63)
        .tcp(61_000, 443, 5, 100)
        .ack(1)
        .write(&mut frame, &payload)
        .unwrap();
    let gso = Gso {
        kind: GsoKind::TcpV4,
        size: 1000,
    };
    let hdr = tx_header(&mut frame, gso).unwrap();
    assert_eq!(
        (
            hdr.flags,
            hdr.gso_type,
            hdr.hdr_len,
            hdr.gso_size,
            hdr.csum_start,
            hdr.csum_offset
        ),
        (VnetHdr::F_NEEDS_CSUM, VnetHdr::GSO_TCPV4, 54, 1000, 34, 16)
    );
    let want = pseudo_sum(&[203, 0, 113, 2], &V4_B, 6, 20 + 5_000);
    assert_eq!(&frame[50..52], &want.to_be_bytes());
    // Headers that do not match the kind are refused.
    let mut f2 = frame.clone();
    assert!(tx_header(
        &mut f2,
        Gso {
            kind: GsoKind::TcpV6,
            size: 1000
        }
    )
    .is_err());
    assert!(tx_header(
        &mut f2,
        Gso {
            kind: GsoKind::UdpL4,
            size: 1000
        }
    )
    .is_err());
    assert!(tx_header(
        &mut f2,
        Gso {
            kind: GsoKind::TcpV4,
            size: 0
        }
    )
    .is_err());
}

// ---------------------------------------------------------------------------------------
// Root tests: veth pairs in namespaces.

fn names(tag: char) -> (String, String, String, String) {
    let pid = std::process::id();
    (
        format!("ksio-{pid}-{tag}-r"),
        format!("ksio-{pid}-{tag}-p"),
        format!("ksio{pid}{tag}a"),
        format!("ksio{pid}{tag}b"),
    )
}

/// A test frame: our experimental ethertype and a sequence number, `len` bytes in all.
fn test_frame(src: [u8; 6], dst: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    Ethernet2Header {
        source: src,
        destination: dst,
        ether_type: EtherType(0x88b5),
    }
    .write(&mut f)
    .unwrap();
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend(payload_pattern(len - f.len(), seq as u8));
    f
}

fn is_ours(f: &[u8]) -> bool {
    matches!(f.get(12..14), Some([0x88, 0xb5]) | Some([0x81, 0x00]))
}

/// Receives for up to `dur` or until `want` frames that `keep` accepts have arrived.
fn collect(
    ring: &mut Ring,
    dur: Duration,
    want: usize,
    keep: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + dur;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        ring.recv(20, |f, _| {
            if keep(f) {
                got.push(f.to_vec());
            }
        })
        .unwrap();
    }
    got
}

#[test]
fn rings_carry_frames_intact_in_order_and_do_not_read_back_their_own() {
    let test = "rings_carry_frames_intact_in_order_and_do_not_read_back_their_own";
    let (ns, _, a, b) = names('f');
    let Some(_guard) = Netns::new(test, std::slice::from_ref(&ns)) else {
        return;
    };
    ip(&[
        "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b,
    ]);

    let (ia, ib, mut ra, mut rb): (IfInfo, IfInfo, Ring, Ring) = in_netns(&ns, || {
        let before = if_info(&a).unwrap();
        assert!(!before.up, "a new veth is down");
        set_up(&a).unwrap();
        set_up(&b).unwrap();
        let ia = if_info(&a).unwrap();
        let ib = if_info(&b).unwrap();
        assert!(ia.up && ib.up);
        let cfg = RingConfig::default();
        let ra = Ring::open(&ia, &cfg).unwrap();
        let rb = Ring::open(&ib, &cfg).unwrap();
        (ia, ib, ra, rb)
    });
    assert_eq!(ia.mtu, 1500);
    assert_ne!(ia.mac, ib.mac);
    assert_ne!(ia.ifindex, ib.ifindex);

    // 100 frames of varied sizes, every 10th a VLAN-tagged UDP frame: the receiving
    // kernel strips the tag into metadata and the ring must put it back.
    let mut sent = Vec::new();
    for i in 0..100u32 {
        if i % 10 == 9 {
            let mut f = Vec::new();
            PacketBuilder::ethernet2(ia.mac, ib.mac)
                .single_vlan(VlanId::try_new(42).unwrap())
                .ipv4(V4_A, V4_B, 64)
                .udp(1000, 2000)
                .write(&mut f, &i.to_be_bytes())
                .unwrap();
            sent.push(f);
        } else {
            sent.push(test_frame(ia.mac, ib.mac, i, 60 + (i as usize * 97) % 1455));
        }
    }
    let n = ra.send(sent.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(n, sent.len());
    let got = collect(&mut rb, Duration::from_secs(3), sent.len(), is_ours);
    assert_eq!(got.len(), sent.len(), "all frames arrive");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "frame {i} arrives intact and in order");
    }
    parse_checked(&got[9]);

    // Our own frames are not read back on the sending ring, though it does receive.
    let own = collect(&mut ra, Duration::from_millis(200), usize::MAX, is_ours);
    assert!(own.is_empty(), "{} of our own frames read back", own.len());
    let back: Vec<Vec<u8>> = (0..5)
        .map(|i| test_frame(ib.mac, ia.mac, 1000 + i, 200))
        .collect();
    assert_eq!(rb.send(back.iter().map(Vec::as_slice)).unwrap(), 5);
    let got = collect(&mut ra, Duration::from_secs(2), 5, is_ours);
    assert_eq!(got, back);

    // A frame larger than the MTU is refused and skipped; the rest still go.
    let big = test_frame(ia.mac, ib.mac, 7777, 3000);
    let small = test_frame(ia.mac, ib.mac, 7778, 100);
    assert_eq!(
        ra.send([big.as_slice(), small.as_slice()].into_iter())
            .unwrap(),
        1
    );
    let got = collect(&mut rb, Duration::from_secs(2), 1, is_ours);
    assert_eq!(got, vec![small]);

    let sa = ra.stats();
    let sb = rb.stats();
    eprintln!("ring a: {sa:?}\nring b: {sb:?}");
    assert_eq!(sa.send_rejected, 1);
    assert_eq!(sa.frames_sent, 101);
    assert_eq!(
        sa.outgoing_skipped, 0,
        "PACKET_IGNORE_OUTGOING keeps them out of the ring"
    );
    assert!(
        sb.frames_received >= 101 && sb.kernel_packets >= 101,
        "{sb:?}"
    );
    assert_eq!(sb.kernel_drops, 0);
}

#[test]
fn fanout_group_shares_an_interface() {
    let test = "fanout_group_shares_an_interface";
    let (ns, _, a, b) = names('o');
    let Some(_guard) = Netns::new(test, std::slice::from_ref(&ns)) else {
        return;
    };
    ip(&[
        "-n", &ns, "link", "add", &a, "type", "veth", "peer", "name", &b,
    ]);
    let (ia, ib, mut ra, mut rb1, mut rb2) = in_netns(&ns, || {
        set_up(&a).unwrap();
        set_up(&b).unwrap();
        let ia = if_info(&a).unwrap();
        let ib = if_info(&b).unwrap();
        let cfg = RingConfig {
            block_size: 1 << 16,
            block_count: 4,
            fanout_group: Some(7),
            ..RingConfig::default()
        };
        let ra = Ring::open(&ia, &RingConfig::default()).unwrap();
        (
            ia.clone(),
            ib.clone(),
            ra,
            Ring::open(&ib, &cfg).unwrap(),
            Ring::open(&ib, &cfg).unwrap(),
        )
    });
    // 64 UDP flows, 4 frames each (one of them in the reverse direction).
    let mut frames = Vec::new();
    for flow in 0..64u16 {
        for k in 0..4u16 {
            let mut f = Vec::new();
            let (s, d, sp, dp) = if k == 3 {
                (V4_B, V4_A, 53, 1024 + flow)
            } else {
                (V4_A, V4_B, 1024 + flow, 53)
            };
            PacketBuilder::ethernet2(ia.mac, ib.mac)
                .ipv4(s, d, 64)
                .udp(sp, dp)
                .write(&mut f, &[k as u8; 32])
                .unwrap();
            frames.push(f);
        }
    }
    assert_eq!(
        ra.send(frames.iter().map(Vec::as_slice)).unwrap(),
        frames.len()
    );
    let is_udp = |f: &[u8]| f.get(23) == Some(&17) && f.get(12..14) == Some(&[0x08, 0x00]);
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while got1.len() + got2.len() < frames.len() && Instant::now() < deadline {
        rb1.recv(10, |f, _| {
            if is_udp(f) {
                got1.push(f.to_vec())
            }
        })
        .unwrap();
        rb2.recv(10, |f, _| {
            if is_udp(f) {
                got2.push(f.to_vec())
            }
        })
        .unwrap();
    }
    assert_eq!(
        got1.len() + got2.len(),
        frames.len(),
        "each frame reaches exactly one member"
    );
    assert!(
        !got1.is_empty() && !got2.is_empty(),
        "both members get a share: {} / {}",
        got1.len(),
        got2.len()
    );
    // Both directions of a flow meet the same member (the kernel's hash is symmetric).
    let flow_of = |f: &Vec<u8>| {
        let sp = u16::from_be_bytes([f[34], f[35]]);
        let dp = u16::from_be_bytes([f[36], f[37]]);
        sp.max(dp)
    };
    let flows1: std::collections::BTreeSet<u16> = got1.iter().map(flow_of).collect();
    let flows2: std::collections::BTreeSet<u16> = got2.iter().map(flow_of).collect();
    assert!(
        flows1.is_disjoint(&flows2),
        "a flow split across members: {:?}",
        flows1.intersection(&flows2).collect::<Vec<_>>()
    );
}

/// The ring side in one namespace, the peer (a kernel TCP/UDP stack) in another, joined
/// by a veth pair; the peer's static neighbour entry points the ring side's address at the
/// ring interface's MAC, and the ring side's kernel has no address, so nothing but the ring
/// answers.
struct Pair {
    _guard: Netns,
    peer_ns: String,
    ring: Ring,
    ring_info: IfInfo,
}

impl Pair {
    fn new(test: &str, tag: char) -> Option<Pair> {
        let (rns, pns, a, b) = names(tag);
        let guard = Netns::new(test, &[rns.clone(), pns.clone()])?;
        ip(&[
            "-n", &rns, "link", "add", &b, "type", "veth", "peer", "name", &a, "netns", &pns,
        ]);
        ip(&["-n", &pns, "link", "set", "lo", "up"]);
        ip(&["-n", &pns, "addr", "add", "10.99.0.1/24", "dev", &a]);
        ip(&["-n", &pns, "addr", "add", "fd99::1/64", "dev", &a, "nodad"]);
        ip(&["-n", &pns, "link", "set", &a, "up"]);
        let (ring, ring_info) = in_netns(&rns, || {
            set_up(&b).unwrap();
            let info = if_info(&b).unwrap();
            // These tests are about segmentation on receive.
            let cfg = RingConfig {
                gso_passthrough: false,
                ..RingConfig::default()
            };
            (Ring::open(&info, &cfg).unwrap(), info)
        });
        let mac = ring_info
            .mac
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip(&[
            "-n",
            &pns,
            "neigh",
            "add",
            "10.99.0.2",
            "lladdr",
            &mac,
            "dev",
            &a,
            "nud",
            "permanent",
        ]);
        ip(&[
            "-n",
            &pns,
            "-6",
            "neigh",
            "add",
            "fd99::2",
            "lladdr",
            &mac,
            "dev",
            &a,
            "nud",
            "permanent",
        ]);
        Some(Pair {
            _guard: guard,
            peer_ns: pns,
            ring,
            ring_info,
        })
    }
}

/// A real TCP transfer from the peer's kernel: the ring side answers the handshake and
/// acknowledges data with frames etherparse builds, so the peer sends TSO super-frames
/// across the veth. Every frame the ring delivers must be an ordinary, MTU-sized frame
/// with valid checksums, and the payload must be the stream that was written.
fn tcp_transfer(test: &str, tag: char, v6: bool) {
    let Some(mut pair) = Pair::new(test, tag) else {
        return;
    };
    let total = 400_000usize;
    let data = payload_pattern(total, 0x5a);
    let done = AtomicBool::new(false);
    let (dst, src): (std::net::IpAddr, std::net::IpAddr) = if v6 {
        ("fd99::2".parse().unwrap(), "fd99::1".parse().unwrap())
    } else {
        ("10.99.0.2".parse().unwrap(), "10.99.0.1".parse().unwrap())
    };
    let mtu = pair.ring_info.mtu as usize;
    let our_mac = pair.ring_info.mac;
    let mut written = 0usize;
    let mut stream = BTreeMap::new(); // offset -> payload
    let mut contiguous = 0usize;
    let mut frames_seen = 0usize;
    std::thread::scope(|s| {
        let peer = s.spawn(|| {
            enter_then(&pair.peer_ns, || {
                use std::io::Write;
                let mut c = std::net::TcpStream::connect_timeout(
                    &std::net::SocketAddr::new(dst, 5001),
                    Duration::from_secs(3),
                )
                .unwrap();
                c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut w = 0;
                while w < data.len() {
                    match c.write(&data[w..]) {
                        Ok(n) => w += n,
                        Err(_) => break,
                    }
                }
                let deadline = Instant::now() + Duration::from_secs(6);
                while !done.load(Ordering::Relaxed) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                w
            })
        });
        let ring = &mut pair.ring;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut isn = None::<u32>;
        let our_isn = 0x1000_0000u32;
        let mut peer_mac = [0u8; 6];
        let mut sport = 0u16;
        let mut ts_val = 0u32;
        while contiguous < total && Instant::now() < deadline {
            let mut batch = Vec::new();
            ring.recv(10, |f, _| batch.push(f.to_vec())).unwrap();
            let mut reply = false;
            for f in batch {
                let Ok(h) = PacketHeaders::from_ethernet_slice(&f) else {
                    continue;
                };
                let Some(TransportHeader::Tcp(t)) = &h.transport else {
                    continue;
                };
                if t.destination_port != 5001 {
                    continue;
                }
                frames_seen += 1;
                assert!(
                    f.len() <= mtu + 14,
                    "frame of {} bytes exceeds the MTU",
                    f.len()
                );
                let p = parse_checked(&f);
                let t = p.tcp.unwrap();
                for o in t.options_iterator().flatten() {
                    if let TcpOptionElement::Timestamp(v, _) = o {
                        ts_val = v;
                    }
                }
                if t.syn {
                    isn = Some(t.sequence_number);
                    peer_mac.copy_from_slice(&f[6..12]);
                    sport = t.source_port;
                    reply = true;
                } else if let Some(isn) = isn {
                    let off = t.sequence_number.wrapping_sub(isn.wrapping_add(1)) as usize;
                    if !p.payload.is_empty() && off < total {
                        stream.insert(off, p.payload);
                        reply = true;
                    }
                }
            }
            while let Some((&off, seg)) = stream.range(..=contiguous).next_back() {
                if off + seg.len() <= contiguous {
                    break;
                }
                contiguous = off + seg.len();
            }
            let Some(isn) = isn.filter(|_| reply) else {
                continue;
            };
            let mut out = Vec::new();
            let b = PacketBuilder::ethernet2(our_mac, peer_mac);
            let opts = [
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::WindowScale(7),
                TcpOptionElement::Timestamp(1, ts_val),
            ];
            let ack = isn.wrapping_add(1).wrapping_add(contiguous as u32);
            macro_rules! tcp {
                ($ip:expr) => {{
                    let t = $ip.tcp(
                        5001,
                        sport,
                        if contiguous == 0 && stream.is_empty() {
                            our_isn
                        } else {
                            our_isn + 1
                        },
                        65535,
                    );
                    if stream.is_empty() && contiguous == 0 {
                        t.options(&opts)
                            .unwrap()
                            .syn()
                            .ack(ack)
                            .write(&mut out, &[])
                            .unwrap();
                    } else {
                        t.options(&opts[2..])
                            .unwrap()
                            .ack(ack)
                            .write(&mut out, &[])
                            .unwrap();
                    }
                }};
            }
            match (src, dst) {
                (std::net::IpAddr::V6(s6), std::net::IpAddr::V6(d6)) => {
                    tcp!(b.ipv6(d6.octets(), s6.octets(), 64))
                }
                (std::net::IpAddr::V4(s4), std::net::IpAddr::V4(d4)) => {
                    tcp!(b.ipv4(d4.octets(), s4.octets(), 64))
                }
                _ => unreachable!(),
            }
            ring.send(std::iter::once(out.as_slice())).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        written = peer.join().unwrap();
    });
    let st = pair.ring.stats();
    eprintln!("{test}: written {written}, received {contiguous} contiguous in {frames_seen} frames; {st:?}");
    assert!(
        contiguous >= 100_000,
        "the transfer made progress: {contiguous} bytes"
    );
    let joined: Vec<u8> = {
        let mut v = Vec::new();
        for (off, seg) in &stream {
            if *off == v.len() {
                v.extend_from_slice(seg);
            } else if *off < v.len() && off + seg.len() > v.len() {
                v.extend_from_slice(&seg[v.len() - off..]);
            }
        }
        v
    };
    assert_eq!(
        &joined[..contiguous],
        &data[..contiguous],
        "the stream arrives as written"
    );
    assert!(
        st.gso_segmented > 0,
        "TPACKET_V3 delivered virtio-net headers with GSO super-frames: {st:?}"
    );
    assert!(
        st.gso_segments > st.gso_segmented,
        "super-frames became several segments"
    );
    assert!(
        st.checksums_completed > 0,
        "the SYN arrived with a partial checksum and was completed"
    );
    assert_eq!(st.bad_offload_drops, 0);
    assert_eq!(st.truncated_drops, 0);
}

#[test]
fn tcp_gso_from_a_kernel_becomes_mtu_frames_v4() {
    tcp_transfer("tcp_gso_from_a_kernel_becomes_mtu_frames_v4", 't', false);
}

#[test]
fn tcp_gso_from_a_kernel_becomes_mtu_frames_v6() {
    tcp_transfer("tcp_gso_from_a_kernel_becomes_mtu_frames_v6", 's', true);
}

/// UDP segmentation offload (`UDP_SEGMENT`): one send of 10 datagrams' worth crosses the
/// veth as one UDP_L4 super-frame and leaves the ring as 10 datagrams.
#[test]
fn udp_gso_from_a_kernel_becomes_datagrams() {
    let test = "udp_gso_from_a_kernel_becomes_datagrams";
    let Some(mut pair) = Pair::new(test, 'u') else {
        return;
    };
    let data = payload_pattern(12_000, 0x33);
    for v6 in [false, true] {
        let (bind, dst) = if v6 {
            ("[fd99::1]:0", "[fd99::2]:5002")
        } else {
            ("10.99.0.1:0", "10.99.0.2:5002")
        };
        in_netns(&pair.peer_ns, || {
            let s = std::net::UdpSocket::bind(bind).unwrap();
            let gso: libc::c_int = 1200;
            // SAFETY: UDP_SEGMENT takes an int, passed with its size.
            let r = unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::SOL_UDP,
                    103,
                    (&gso as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(r, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
            assert_eq!(s.send_to(&data, dst).unwrap(), data.len());
        });
        let is_ours = |f: &[u8]| {
            PacketHeaders::from_ethernet_slice(f).is_ok_and(|h| matches!(h.transport, Some(TransportHeader::Udp(u)) if u.destination_port == 5002))
        };
        let got = collect(&mut pair.ring, Duration::from_secs(3), 10, is_ours);
        assert_eq!(got.len(), 10, "ten datagrams (v6: {v6})");
        for (i, f) in got.iter().enumerate() {
            assert!(f.len() <= pair.ring_info.mtu as usize + 14);
            let p = parse_checked(f);
            assert_eq!(
                p.payload,
                data[i * 1200..(i + 1) * 1200],
                "datagram {i} (v6: {v6})"
            );
        }
    }
    let st = pair.ring.stats();
    eprintln!("{test}: {st:?}");
    assert!(st.gso_segmented >= 2, "{st:?}");
    assert_eq!(st.bad_offload_drops, 0);
}

/// Two namespaces joined through a third where two rings bridge every frame (a userspace
/// forwarding loop): `c` (10.97.0.1, fd97::1) -- veth -- [x  rings  y] -- veth -- `s`
/// (10.97.0.2, fd97::2). The rings keep GSO super-frames whole and send them on as GSO
/// frames with [`Ring::send_offloaded`].
struct Bridge {
    _guard: Netns,
    client_ns: String,
    server_ns: String,
    x: Ring,
    y: Ring,
}

impl Bridge {
    /// `kernel_checksums`: `y` loses its checksum offload (`ethtool -K y tx off`), so the
    /// kernel segments the super-frames sent there in software and computes every
    /// segment's checksum from the partial sum we leave, and `s` loses receive checksum
    /// offload, so the server's TCP verifies them: a wrong partial sum stalls the transfer.
    fn new(test: &str, tag: char, kernel_checksums: bool) -> Option<Bridge> {
        if kernel_checksums && Command::new("ethtool").arg("--version").output().is_err() {
            eprintln!("SKIPPED {test}: needs ethtool (apt-get install ethtool)");
            return None;
        }
        let pid = std::process::id();
        let (cns, rns, sns) = (
            format!("ksio-{pid}-{tag}-c"),
            format!("ksio-{pid}-{tag}-r"),
            format!("ksio-{pid}-{tag}-s"),
        );
        let (c, x, y, s) = (
            format!("ksio{pid}{tag}c"),
            format!("ksio{pid}{tag}x"),
            format!("ksio{pid}{tag}y"),
            format!("ksio{pid}{tag}s"),
        );
        let guard = Netns::new(test, &[cns.clone(), rns.clone(), sns.clone()])?;
        ip(&[
            "-n", &rns, "link", "add", &x, "type", "veth", "peer", "name", &c, "netns", &cns,
        ]);
        ip(&[
            "-n", &rns, "link", "add", &y, "type", "veth", "peer", "name", &s, "netns", &sns,
        ]);
        for (ns, dev, v4, v6) in [
            (&cns, &c, "10.97.0.1/24", "fd97::1/64"),
            (&sns, &s, "10.97.0.2/24", "fd97::2/64"),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "addr", "add", v4, "dev", dev]);
            ip(&["-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        if kernel_checksums {
            // veth marks frames without a checksum to finish as verified unless the
            // receiving end lacks receive checksum offload: `s` must check them itself.
            for (ns, dev, dir) in [(&rns, &y, "tx"), (&sns, &s, "rx")] {
                let st = Command::new("ip")
                    .args(["netns", "exec", ns, "ethtool", "-K", dev, dir, "off"])
                    .output()
                    .expect("run ethtool");
                assert!(
                    st.status.success(),
                    "ethtool -K {dev} {dir} off: {}",
                    String::from_utf8_lossy(&st.stderr)
                );
            }
        }
        let (rx, ry) = in_netns(&rns, || {
            let open = |name: &str| {
                set_up(name).unwrap();
                Ring::open(&if_info(name).unwrap(), &RingConfig::default()).unwrap()
            };
            (open(&x), open(&y))
        });
        Some(Bridge {
            _guard: guard,
            client_ns: cns,
            server_ns: sns,
            x: rx,
            y: ry,
        })
    }
}

/// A TCP transfer from `c` to `s` through the bridge: the stream must arrive intact, and
/// the client's TSO super-frames must have crossed the rings whole.
fn gso_through_a_ring_bridge(test: &str, tag: char, v6: bool, kernel_checksums: bool) {
    let Some(mut br) = Bridge::new(test, tag, kernel_checksums) else {
        return;
    };
    let data = payload_pattern(8 << 20, 0x77);
    let server: std::net::SocketAddr = if v6 {
        "[fd97::2]:5003".parse().unwrap()
    } else {
        "10.97.0.2:5003".parse().unwrap()
    };
    let listener = in_netns(&br.server_ns, || {
        let l = std::net::TcpListener::bind(server).unwrap();
        l.set_nonblocking(true).unwrap();
        l
    });
    let stop = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut received, mut written) = (Vec::new(), 0usize);
    std::thread::scope(|sc| {
        let (x, y) = (&mut br.x, &mut br.y);
        let stop = &stop;
        let forwarder = sc.spawn(move || {
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                x.recv(1, |f, o| {
                    y.send_offloaded(std::iter::once((f, o))).unwrap();
                })
                .unwrap();
                y.recv(1, |f, o| {
                    x.send_offloaded(std::iter::once((f, o))).unwrap();
                })
                .unwrap();
            }
        });
        let client = sc.spawn(|| {
            enter_then(&br.client_ns, || {
                use std::io::Write;
                let mut c =
                    std::net::TcpStream::connect_timeout(&server, Duration::from_secs(3)).unwrap();
                c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut w = 0;
                while w < data.len() && Instant::now() < deadline {
                    match c.write(&data[w..]) {
                        Ok(n) => w += n,
                        Err(_) => break,
                    }
                }
                let _ = c.shutdown(std::net::Shutdown::Write);
                w
            })
        });
        // Accepted and read here: the socket lives in the server's namespace already.
        let mut conn = None;
        while conn.is_none() && Instant::now() < deadline {
            match listener.accept() {
                Ok((s, _)) => conn = Some(s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        if let Some(mut s) = conn {
            use std::io::Read;
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            while Instant::now() < deadline {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        }
        written = client.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        forwarder.join().unwrap();
    });
    let (sx, sy) = (br.x.stats(), br.y.stats());
    eprintln!(
        "{test}: written {written}, received {}\n  x: {sx:?}\n  y: {sy:?}",
        received.len()
    );
    assert_eq!(written, data.len(), "the client wrote everything in time");
    assert!(received == data, "the stream arrives intact and whole");
    assert!(
        sx.gso_passed > 0,
        "super-frames were received whole: {sx:?}"
    );
    assert!(sy.gso_sent > 0, "super-frames were sent whole: {sy:?}");
    assert_eq!(sy.gso_sent, sx.gso_passed, "every one received was sent on");
    assert_eq!(
        sx.send_rejected + sy.send_rejected,
        0,
        "the kernel took every send"
    );
    assert_eq!(sx.bad_offload_drops + sy.bad_offload_drops, 0);
}

#[test]
fn gso_super_frames_cross_a_ring_bridge_whole_v4() {
    gso_through_a_ring_bridge(
        "gso_super_frames_cross_a_ring_bridge_whole_v4",
        'g',
        false,
        false,
    );
}

#[test]
fn gso_super_frames_cross_a_ring_bridge_whole_v6() {
    gso_through_a_ring_bridge(
        "gso_super_frames_cross_a_ring_bridge_whole_v6",
        'h',
        true,
        false,
    );
}

#[test]
fn gso_partial_checksums_hold_when_the_kernel_segments_v4() {
    gso_through_a_ring_bridge(
        "gso_partial_checksums_hold_when_the_kernel_segments_v4",
        'k',
        false,
        true,
    );
}

#[test]
fn gso_partial_checksums_hold_when_the_kernel_segments_v6() {
    gso_through_a_ring_bridge(
        "gso_partial_checksums_hold_when_the_kernel_segments_v6",
        'l',
        true,
        true,
    );
}
