//! Arbitrary bytes as a packet to translate, with fuzzer-chosen addresses and ports:
//! `rewrite` and `rewrite_icmp_error` must never panic, must leave the packet untouched when
//! they refuse it, must keep a valid IPv4 header checksum valid, and must be idempotent
//! (the same rewrite again changes nothing, checksums included).
//!
//! Layout: byte 0 picks which of source and destination are given and their address
//! families; bytes 1..5 are two ports; bytes 5..21 address material; the rest is the packet.
#![no_main]

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keepstate_engine::wire::checksum;
use keepstate_policy::nat::{rewrite, rewrite_icmp_error_outer};
use libfuzzer_sys::fuzz_target;

fn addr(v6: bool, m: &[u8; 16], salt: u8) -> IpAddr {
    let mut b = *m;
    b[15] ^= salt;
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[12], b[13], b[14], b[15]))
    }
}

/// The IPv4 header checksum verifies (true for anything that is not a whole IPv4 header).
fn v4_header_ok(p: &[u8]) -> bool {
    let Some(&v) = p.first() else {
        return true;
    };
    let hlen = usize::from(v & 0x0f) * 4;
    match p.get(..hlen) {
        Some(h) if v >> 4 == 4 && hlen >= 20 => checksum::verifies(checksum::add(0, h)),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 21 {
        return;
    }
    let (head, packet) = data.split_at(21);
    let flags = head[0];
    let pa = u16::from_be_bytes([head[1], head[2]]);
    let pb = u16::from_be_bytes([head[3], head[4]]);
    let mut m = [0u8; 16];
    m.copy_from_slice(&head[5..21]);
    // Mostly the packet's own family, sometimes the other one.
    let own_v6 = packet.first().is_some_and(|v| v >> 4 == 6);
    let v6 = if flags & 0x40 != 0 { !own_v6 } else { own_v6 };
    let src = (flags & 1 != 0).then(|| (addr(v6, &m, 1), pa));
    let dst = (flags & 2 != 0).then(|| (addr(v6, &m, 2), pb));
    let outer_src = (flags & 4 != 0).then(|| addr(v6, &m, 3));
    let outer_dst = (flags & 8 != 0).then(|| addr(v6, &m, 4));

    let header_ok = v4_header_ok(packet);
    let mut p = packet.to_vec();
    match rewrite(&mut p, src, dst) {
        Err(skip) => {
            assert_eq!(p, packet, "{skip}: refused but changed");
            assert!(!skip.name().is_empty());
        }
        Ok(()) => {
            if header_ok {
                assert!(v4_header_ok(&p), "IPv4 header checksum broken");
            }
            let once = p.clone();
            assert_eq!(rewrite(&mut p, src, dst), Ok(()));
            assert_eq!(p, once, "rewrite not idempotent");
        }
    }

    let mut p = packet.to_vec();
    match rewrite_icmp_error_outer(&mut p, outer_src, outer_dst, src, dst) {
        Err(skip) => assert_eq!(p, packet, "{skip}: refused but changed"),
        Ok(()) => {
            if header_ok {
                assert!(v4_header_ok(&p), "IPv4 header checksum broken");
            }
            let once = p.clone();
            assert_eq!(
                rewrite_icmp_error_outer(&mut p, outer_src, outer_dst, src, dst),
                Ok(())
            );
            assert_eq!(p, once, "ICMP error rewrite not idempotent");
        }
    }
});
