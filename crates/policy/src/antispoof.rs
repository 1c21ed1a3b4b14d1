//! What kind of source address a packet claims, for the reverse-path check (`antispoof`).
//!
//! Martians are addresses no network hands out to a sender (RFC 6890's "source: false"
//! entries that matter in practice): such a packet is forged or broken wherever it
//! arrives. Link-scoped sources (IPv4 link-local, IPv6 link-local, and the unspecified
//! address in the few messages that must use it: a DHCP client's DISCOVER, IPv6 duplicate
//! address detection and MLD reports) never route anywhere, so a reverse-path check cannot
//! judge them and leaves them to the rules.

use core::net::IpAddr;

use keepstate_engine::wire::{PROTO_ICMPV6, PROTO_UDP};
use keepstate_engine::PacketMeta;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Martian,
    LinkScoped,
    Routable,
}

/// Source addresses no host on the internet has (RFC 6890's special-purpose registries,
/// RFC 1918 private space, shared CGN space, documentation and benchmarking ranges):
/// "bogons", for zones facing the internet with `drop_bogons`. IPv6 link-local stays
/// allowed, since neighbour discovery with the upstream router uses it.
pub(crate) fn is_bogon(src: IpAddr) -> bool {
    let net = |a: u128, len: u32| (a, len);
    let (bits, width, nets): (u128, u32, &[(u128, u32)]) = match src {
        IpAddr::V4(a) => (
            u128::from(u32::from(a)),
            32,
            &[
                net(0x0000_0000, 8),
                net(0x0a00_0000, 8),
                net(0x6440_0000, 10),
                net(0x7f00_0000, 8),
                net(0xa9fe_0000, 16),
                net(0xac10_0000, 12),
                net(0xc000_0000, 24),
                net(0xc000_0200, 24),
                net(0xc0a8_0000, 16),
                net(0xc612_0000, 15),
                net(0xc633_6400, 24),
                net(0xcb00_7100, 24),
                net(0xe000_0000, 4),
                net(0xf000_0000, 4),
            ],
        ),
        IpAddr::V6(a) => (
            u128::from(a),
            128,
            &[
                net(0, 127),
                net(0xffff_0000_0000, 96),
                net(0x0100_0000_0000_0000_0000_0000_0000_0000, 64),
                net(0x2001_0db8_0000_0000_0000_0000_0000_0000, 32),
                net(0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),
                net(0xff00_0000_0000_0000_0000_0000_0000_0000, 8),
            ],
        ),
    };
    nets.iter().any(|&(n, len)| {
        let shift = width - len;
        bits >> shift == n >> shift
    })
}

pub(crate) fn classify(src: IpAddr, m: &PacketMeta) -> Source {
    match src {
        IpAddr::V4(a) => {
            let o = a.octets();
            if a.is_unspecified() && m.proto == Some(PROTO_UDP) && m.dport == Some(67) {
                // A DHCP client has no address yet.
                Source::LinkScoped
            } else if o[0] == 0 || a.is_loopback() || a.is_multicast() || o[0] >= 240 {
                Source::Martian
            } else if a.is_link_local() {
                Source::LinkScoped
            } else {
                Source::Routable
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            // Router and neighbour solicitation (duplicate address detection) and MLD
            // reports may come from the unspecified address (RFC 4861, RFC 3810).
            let unspecified_ok =
                m.proto == Some(PROTO_ICMPV6) && matches!(m.icmp_type, Some(131 | 133 | 135 | 143));
            if a.is_unspecified() {
                if unspecified_ok {
                    Source::LinkScoped
                } else {
                    Source::Martian
                }
            } else if a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some() {
                Source::Martian
            } else if s[0] & 0xffc0 == 0xfe80 {
                Source::LinkScoped
            } else {
                Source::Routable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(proto: u8, dport: Option<u16>, icmp_type: Option<u8>) -> PacketMeta {
        PacketMeta {
            proto: Some(proto),
            dport,
            icmp_type,
            ..PacketMeta::default()
        }
    }

    #[test]
    fn kinds() {
        let tcp = meta(6, Some(80), None);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0u8; 4]));
        for m in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(classify(ip(m), &tcp), Source::Martian, "{m}");
        }
        for m in ["::", "::1", "ff02::1", "::ffff:192.0.2.1"] {
            assert_eq!(classify(ip(m), &tcp), Source::Martian, "{m}");
        }
        assert_eq!(classify(ip("169.254.1.1"), &tcp), Source::LinkScoped);
        assert_eq!(classify(ip("fe80::1"), &tcp), Source::LinkScoped);
        let dhcp = meta(PROTO_UDP, Some(67), None);
        assert_eq!(classify(ip("0.0.0.0"), &dhcp), Source::LinkScoped);
        let dad = meta(PROTO_ICMPV6, None, Some(135));
        assert_eq!(classify(ip("::"), &dad), Source::LinkScoped);
        for r in ["192.0.2.1", "10.1.2.3", "2001:db8::1", "fd00::1"] {
            assert_eq!(classify(ip(r), &tcp), Source::Routable, "{r}");
        }
    }

    #[test]
    fn bogons() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([8u8, 8, 8, 8]));
        for b in [
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
            "169.254.9.9",
            "192.0.2.7",
            "198.18.0.1",
            "198.51.100.9",
            "203.0.113.5",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "2001:db8::1",
            "fd12::1",
            "ff02::1",
            "::ffff:1.2.3.4",
        ] {
            assert!(is_bogon(ip(b)), "{b}");
        }
        for g in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450::1",
            "fe80::1",
        ] {
            assert!(!is_bogon(ip(g)), "{g}");
        }
    }
}
