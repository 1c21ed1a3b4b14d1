//! Writes seed inputs for the cargo-fuzz targets in fuzz/corpus/ (ignored by default):
//! `cargo test -p keepstate-engine --test fuzz_seeds -- --ignored`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;
use common::*;
use std::path::PathBuf;

fn link_byte(l: LinkType) -> u8 {
    u8::try_from(ALL_LINKS.iter().position(|x| *x == l).unwrap()).unwrap()
}

fn seeds() -> Vec<(&'static str, LinkType, Vec<u8>)> {
    let mut f = Flow::v4();
    let g = Flow::v6();
    let syn = f.seg(
        true,
        f.cseq,
        0,
        SYN,
        65535,
        &[TcpOptionElement::WindowScale(7)],
        &[],
    );
    f.cseq += 1;
    let synack = f.seg(
        false,
        f.sseq,
        f.cseq,
        SYN | ACK,
        65535,
        &[TcpOptionElement::WindowScale(7)],
        &[],
    );
    f.sseq += 1;
    let ack = f.seg(
        true,
        f.cseq,
        f.sseq,
        ACK | PSH,
        512,
        &[],
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let emb = udp_raw(v4(10, 0, 0, 1), v4(198, 51, 100, 1), 33434, 33435, &[0; 8]);
    vec![
        ("tcp_syn", LinkType::Ethernet, syn),
        ("tcp_synack", LinkType::Ethernet, synack),
        ("tcp_data", LinkType::Ethernet, ack),
        (
            "tcp6_syn",
            LinkType::Ethernet,
            g.seg(true, 1, 0, SYN, 100, &[], &[]),
        ),
        ("udp4_raw", LinkType::Ipv4, emb.clone()),
        (
            "udp6_raw",
            LinkType::Raw,
            udp_raw(v6(1), v6(2), 5353, 5353, b"mdns"),
        ),
        (
            "icmp_echo",
            LinkType::Ethernet,
            echo4(v4(10, 0, 0, 1), v4(10, 0, 0, 2), false, 1, 1),
        ),
        (
            "icmp_time_exceeded",
            LinkType::Ethernet,
            icmp4_frame(
                v4(10, 0, 0, 254),
                v4(10, 0, 0, 1),
                Icmpv4Type::TimeExceeded(
                    etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
                ),
                &emb,
            ),
        ),
    ]
}

#[test]
#[ignore = "writes fuzz/corpus seed files"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let parse = root.join("parse");
    let seq = root.join("sequence");
    std::fs::create_dir_all(&parse).unwrap();
    std::fs::create_dir_all(&seq).unwrap();
    let all = seeds();
    let mut conv = Vec::new();
    for (name, link, bytes) in &all {
        let mut p = vec![link_byte(*link)];
        p.extend_from_slice(bytes);
        std::fs::write(parse.join(name), p).unwrap();
        // sequence format: [link][step][len u16 BE][bytes]
        let mut s = vec![link_byte(*link), 2];
        s.extend_from_slice(&u16::try_from(bytes.len()).unwrap().to_be_bytes());
        s.extend_from_slice(bytes);
        if name.starts_with("tcp_") {
            conv.extend_from_slice(&s);
        }
        std::fs::write(seq.join(name), s).unwrap();
    }
    std::fs::write(seq.join("tcp_handshake"), conv).unwrap();
}
