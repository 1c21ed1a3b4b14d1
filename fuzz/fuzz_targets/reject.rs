//! Arbitrary bytes as an offending IP packet, answered with every reject code: building the
//! answer must never panic, must leave `out` empty when it skips, and every answer must be a
//! well-formed IP packet with valid checksums within the ICMP size limits.
#![no_main]

use keepstate_engine::wire::{checksum, PROTO_ICMP};
use keepstate_policy::model::RejectCode;
use keepstate_policy::reject::{build, ICMPV6_MAX_LEN, ICMP_MAX_LEN};
use libfuzzer_sys::fuzz_target;

const CODES: [RejectCode; 4] = [
    RejectCode::PortUnreachable,
    RejectCode::HostUnreachable,
    RejectCode::NetUnreachable,
    RejectCode::AdminProhibited,
];

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    for code in CODES {
        match build(data, code, &mut out) {
            Ok(()) => check(data, &out),
            Err(reason) => {
                assert!(out.is_empty(), "{reason}: out not cleared");
                assert!(!reason.name().is_empty());
            }
        }
    }
});

/// The answer's own headers are consistent: same IP version as the offender, lengths that
/// add up, checksums that verify.
fn check(data: &[u8], out: &[u8]) {
    assert_eq!(data[0] >> 4, out[0] >> 4, "answer in another IP version");
    match out[0] >> 4 {
        4 => {
            assert!(out.len() <= ICMP_MAX_LEN);
            assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), out.len());
            assert!(checksum::verifies(checksum::add(0, &out[..20])));
            let l4 = &out[20..];
            let sum = if out[9] == PROTO_ICMP {
                checksum::add(0, l4)
            } else {
                let len = u32::try_from(l4.len()).unwrap_or(0);
                checksum::add(
                    checksum::pseudo_header(&out[12..16], &out[16..20], out[9], len),
                    l4,
                )
            };
            assert!(checksum::verifies(sum));
        }
        6 => {
            assert!(out.len() <= ICMPV6_MAX_LEN);
            assert_eq!(
                usize::from(u16::from_be_bytes([out[4], out[5]])) + 40,
                out.len()
            );
            let l4 = &out[40..];
            let len = u32::try_from(l4.len()).unwrap_or(0);
            let pseudo = checksum::pseudo_header(&out[8..24], &out[24..40], out[6], len);
            assert!(checksum::verifies(checksum::add(pseudo, l4)));
        }
        v => panic!("answer with IP version {v}"),
    }
}
