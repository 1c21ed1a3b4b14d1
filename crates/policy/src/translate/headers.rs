//! Just enough header reading for NAT to find a packet's binding before the engine parses it:
//! where the IP header starts, the 5-tuple, and for ICMP errors the quoted packet's tuple.
//! Anything unusual gives `None`, and the packet then goes to the engine untranslated, which
//! judges it on its own.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keepstate_engine::LinkType;

use crate::nat::Tuple5;

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const MAX_EXT_HEADERS: usize = 8;

/// A packet's addressing as NAT sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Headers {
    /// Where the IP header starts in the frame.
    pub ip_offset: usize,
    pub tuple: Tuple5,
    /// For an ICMP/ICMPv6 error: the tuple of the packet it quotes, as that packet travelled.
    pub quoted: Option<Tuple5>,
}

fn u8_at(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).copied()
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    let s = b.get(i..i.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn arr<const N: usize>(b: &[u8], i: usize) -> Option<[u8; N]> {
    b.get(i..i.checked_add(N)?)?.try_into().ok()
}

/// Where the network header of a frame of this link type starts.
pub(crate) fn ip_offset(link: LinkType, data: &[u8]) -> Option<usize> {
    match link {
        LinkType::Ethernet => {
            let mut et = u16_at(data, 12)?;
            let mut off = 14;
            for _ in 0..2 {
                if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                    break;
                }
                et = u16_at(data, off + 2)?;
                off += 4;
            }
            matches!(et, 0x0800 | 0x86dd).then_some(off)
        }
        LinkType::LinuxSll => matches!(u16_at(data, 14)?, 0x0800 | 0x86dd).then_some(16),
        LinkType::LinuxSll2 => matches!(u16_at(data, 0)?, 0x0800 | 0x86dd).then_some(20),
        LinkType::Null => Some(4),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => Some(0),
    }
}

/// Reads a frame's headers; `None` for non-IP, malformed, or non-first fragments.
pub(crate) fn read(link: LinkType, data: &[u8]) -> Option<Headers> {
    let ip_offset = ip_offset(link, data)?;
    let ip = data.get(ip_offset..)?;
    let (tuple, l4, proto) = ip_tuple(ip)?;
    let quoted = match (proto, u8_at(l4, 0)?) {
        (PROTO_ICMP, 3 | 4 | 5 | 11 | 12) | (PROTO_ICMPV6, 1..=4) => {
            let inner = l4.get(8..)?;
            Some(ip_tuple(inner)?.0)
        }
        _ => None,
    };
    Some(Headers {
        ip_offset,
        tuple,
        quoted,
    })
}

/// The tuple of an IP packet.
pub(crate) fn read_ip(ip: &[u8]) -> Option<Tuple5> {
    ip_tuple(ip).map(|(t, _, _)| t)
}

/// The tuple of an IP packet (which may be a truncated quote), its transport bytes and
/// upper-layer protocol.
fn ip_tuple(ip: &[u8]) -> Option<(Tuple5, &[u8], u8)> {
    let (src, dst, proto, l4) = match u8_at(ip, 0)? >> 4 {
        4 => {
            let hlen = usize::from(u8_at(ip, 0)? & 0x0f) * 4;
            if hlen < 20 || u16_at(ip, 6)? & 0x1fff != 0 {
                return None;
            }
            let src = IpAddr::V4(Ipv4Addr::from(arr::<4>(ip, 12)?));
            let dst = IpAddr::V4(Ipv4Addr::from(arr::<4>(ip, 16)?));
            (src, dst, u8_at(ip, 9)?, ip.get(hlen..)?)
        }
        6 => {
            let src = IpAddr::V6(Ipv6Addr::from(arr::<16>(ip, 8)?));
            let dst = IpAddr::V6(Ipv6Addr::from(arr::<16>(ip, 24)?));
            let mut next = u8_at(ip, 6)?;
            let mut off = 40;
            let mut found = None;
            for _ in 0..=MAX_EXT_HEADERS {
                let len = match next {
                    0 | 43 | 60 => (usize::from(u8_at(ip, off + 1)?) + 1) * 8,
                    44 => {
                        if u16_at(ip, off + 2)? >> 3 != 0 {
                            return None;
                        }
                        8
                    }
                    51 => (usize::from(u8_at(ip, off + 1)?) + 2) * 4,
                    p => {
                        found = Some(p);
                        break;
                    }
                };
                next = u8_at(ip, off)?;
                off += len;
            }
            (src, dst, found?, ip.get(off..)?)
        }
        _ => return None,
    };
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (u16_at(l4, 0)?, u16_at(l4, 2)?),
        PROTO_ICMP | PROTO_ICMPV6 => {
            let ty = u8_at(l4, 0)?;
            let query = matches!(
                (proto, ty),
                (PROTO_ICMP, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
            ) || matches!((proto, ty), (PROTO_ICMPV6, 128 | 129));
            if query {
                let id = u16_at(l4, 4)?;
                (id, id)
            } else {
                (0, 0)
            }
        }
        _ => (0, 0),
    };
    let tuple = Tuple5 {
        proto,
        src,
        sport,
        dst,
        dport,
    };
    Some((tuple, l4, proto))
}
