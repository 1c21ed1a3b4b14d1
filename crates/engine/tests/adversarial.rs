//! Adversarial scenarios, in the style of OpenBSD pf's regression suite: one scenario per file
//! under `adversarial/`, each opening with a one-line description that `adversarial/README.md`
//! lists. Packets are built with etherparse and only the engine's public API is used.
//!
//! A scenario where the engine's behaviour is arguably wrong asserts the behaviour it should
//! have and is marked `#[ignore = "why"]`; `cargo test -- --ignored` runs those.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_arguments)]

mod common;

mod adversarial {
    mod ack_of_unsent_data;
    mod blind_data_injection;
    mod challenge_ack;
    mod challenge_ack_recovery;
    mod fragments_follow_their_first;
    mod handshake_during_flood;
    mod icmp_error_address_mismatch;
    mod icmp_error_embeds_error;
    mod icmp_error_unknown_connection;
    mod ipv4_fragment_without_first;
    mod ipv4_tiny_fragment;
    mod overlapping_fragments;
    mod rst_before_gap;
    mod rst_out_of_window;
    mod scans_to_closed_port;
    mod syn_ack_bad_ack_poisons_syn_sent;
    mod syn_ack_resyncs_ignored_syn;
    mod syn_flood;
    mod table_full;
    mod table_full_half_open;
    mod ttl_and_hop_limit;
    mod unsolicited_syn_ack;
    mod window_scale_edge;
}

use common::*;
use std::net::IpAddr;

/// A client-server connection through the handshake, with 100 bytes sent and acknowledged
/// each way, so both windows are known and nothing is left unacknowledged.
fn established() -> (Sim, Flow) {
    let mut sim = Sim::new();
    let mut f = Flow::v4();
    open(&mut sim, &mut f);
    exchange(&mut sim, &mut f);
    (sim, f)
}

/// SYN, SYN/ACK, ACK for `f`, in a table that may hold other connections.
#[track_caller]
fn open(sim: &mut Sim, f: &mut Flow) {
    expect_new(&f.c(sim, SYN, &[]));
    expect_est_reply(&f.s(sim, SYN | ACK, &[]));
    expect_est_orig(&f.c(sim, ACK, &[]));
    assert_eq!(
        conn_of(sim, f).unwrap().tcp_state,
        Some(TcpState::Established)
    );
}

/// Each side sends 100 bytes and the other acknowledges them: the connection still works.
#[track_caller]
fn exchange(sim: &mut Sim, f: &mut Flow) {
    expect_est_orig(&f.c(sim, ACK | PSH, &[0xc1; 100]));
    expect_est_reply(&f.s(sim, ACK | PSH, &[0x5e; 100]));
    expect_est_orig(&f.c(sim, ACK, &[]));
    assert_eq!(
        conn_of(sim, f).unwrap().tcp_state,
        Some(TcpState::Established)
    );
}

/// The connection `f` opened (client to server), if it is tracked.
fn conn_of(sim: &Sim, f: &Flow) -> Option<Conn> {
    sim.engine.connections().find(|c| {
        c.original.src == f.c
            && c.original.dst == f.s
            && c.original.l4
                == L4Tuple::Ports {
                    sport: f.cp,
                    dport: f.sp,
                }
    })
}

/// ICMP destination unreachable, port unreachable.
fn port_unreachable() -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port)
}

/// ICMP time exceeded in transit.
fn ttl_exceeded() -> Icmpv4Type {
    Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
}

/// An Ethernet frame carrying one IPv4 fragment of a TCP datagram: `data` is the fragment's
/// share of the TCP bytes, `offset` counts 8-byte units.
fn ipv4_tcp_fragment(src: IpAddr, dst: IpAddr, offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 addresses expected");
    };
    let len = u16::try_from(data.len()).unwrap();
    let mut ip = Ipv4Header::new(len, 64, IpNumber::TCP, s.octets(), d.octets()).unwrap();
    ip.identification = 0x4b53;
    ip.dont_fragment = false;
    ip.more_fragments = more;
    ip.fragment_offset = IpFragOffset::try_new(offset).unwrap();
    let eth = etherparse::Ethernet2Header {
        source: MAC_C,
        destination: MAC_S,
        ether_type: EtherType::IPV4,
    };
    let mut v = Vec::new();
    eth.write(&mut v).unwrap();
    ip.write(&mut v).unwrap(); // computes the header checksum
    v.extend_from_slice(data);
    v
}

/// The TCP bytes (header and payload, checksum filled in) of a segment from `f`'s client.
fn client_tcp_bytes(f: &Flow, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let raw = tcp_raw(f.c, f.s, f.cp, f.sp, seq, ack, flags, payload);
    raw[20..].to_vec()
}

/// Every scenario file is declared above, opens with a one-line `//!` description, holds
/// exactly one `#[test]`, and is listed in the README with that description.
#[test]
fn readme_lists_every_scenario() {
    use std::{fs, path::Path};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/adversarial");
    let readme = fs::read_to_string(dir.join("README.md")).unwrap();
    let harness = fs::read_to_string(dir.with_extension("rs")).unwrap();
    let ignored_from = readme
        .lines()
        .position(|l| l.starts_with("## Ignored"))
        .unwrap();
    let mut listed = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        listed += 1;
        let name = path.file_stem().unwrap().to_str().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let desc = lines
            .next()
            .and_then(|l| l.strip_prefix("//! "))
            .unwrap_or_else(|| panic!("{name}.rs must open with a `//! ` description"));
        assert!(
            !lines.next().unwrap_or("").starts_with("//!"),
            "{name}.rs: the description is one line"
        );
        assert_eq!(text.matches("#[test]").count(), 1, "{name}.rs: one #[test]");
        assert!(
            harness.contains(&format!("    mod {name};\n")),
            "{name}.rs is not declared in adversarial.rs"
        );
        let line = format!("- `{name}.rs`: {desc}");
        let at = readme.lines().position(|l| l == line);
        let at = at.unwrap_or_else(|| panic!("README.md lacks the line:\n{line}"));
        assert_eq!(
            at > ignored_from,
            text.contains("#[ignore"),
            "{name}.rs is listed in the wrong README section"
        );
    }
    let entries = readme.lines().filter(|l| l.starts_with("- `")).count();
    assert_eq!(entries, listed, "README.md lists files that do not exist");
}
