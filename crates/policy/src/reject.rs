//! The answers `reject` sends: a TCP RST for TCP, an ICMP or ICMPv6 destination unreachable
//! for everything else, built the way Linux's `nf_reject` builds them.
//!
//! Sans-IO like the rest of the policy: the offending packet's bytes in (from its IP header
//! on), the answer's bytes out (a whole IP packet back to the offender; the caller adds the
//! link layer). A packet that must not be answered (RFC 1122 3.2.2, RFC 1812 4.3.2.7,
//! RFC 4443 2.4(e)) or cannot be read gets a named [`RejectSkip`] instead.
//!
//! Every read of the offending packet is checked, so no input can make [`build`] panic.

use core::fmt;

use keepstate_engine::wire::{
    checksum, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

use crate::model::RejectCode;

/// TTL and hop limit of every answer: Linux's defaults (`net.ipv4.ip_default_ttl`,
/// `net.ipv6.conf.*.hop_limit`).
pub const TTL: u8 = 64;

/// The longest ICMP error, IP header included: RFC 1812 4.3.2.3 lets an error quote as much
/// of the offending datagram as fits in 576 bytes, and Linux does exactly that.
pub const ICMP_MAX_LEN: usize = 576;

/// The longest ICMPv6 error: the IPv6 minimum MTU, so the error itself is never too big for
/// the path back (RFC 4443 2.4(c)).
pub const ICMPV6_MAX_LEN: usize = 1280;

/// The longest IPv6 extension-header chain followed, as in the engine's parser: a longer one
/// is either an attack or nothing a real stack sends.
const MAX_EXT_HEADERS: usize = 8;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
/// ICMP and ICMPv6 destination unreachable: type, code, checksum, four unused bytes.
const ICMP_HEADER_LEN: usize = 8;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_REDIRECT: u8 = 137;
/// Linux's `NR_ICMP_TYPES`: `icmp_send` stays silent about ICMP types above it, since an
/// unknown type might be an error.
const ICMP_MAX_KNOWN_TYPE: u8 = 18;

/// ICMP precedence "internetwork control" (RFC 1812 4.3.2.5), which Linux gives its errors.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
/// Don't Fragment, no offset. Answers are at most 576 bytes, so they are atomic datagrams
/// and their identification may be zero (RFC 6864 4.1), which keeps `build` deterministic.
const IPV4_DF: [u8; 2] = [0x40, 0x00];

/// Why a packet gets no answer. The kebab-case names are stable, like `DropReason`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectSkip {
    /// The bytes end before a header does, or before the length the IP header states.
    Truncated,
    /// The version nibble is neither 4 nor 6.
    BadIpVersion,
    /// A length that cannot be right: an IPv4 header below 20 bytes or longer than the total
    /// length, a TCP data offset below 5 words or past the segment, a hop-by-hop header that
    /// does not directly follow the IPv6 header.
    Malformed,
    /// More IPv6 extension headers than are followed before the upper-layer header.
    ExtensionChainTooLong,
    /// A non-first fragment (the transport header is in another fragment), or the first
    /// fragment of a TCP segment without ACK, whose RST must acknowledge the whole segment,
    /// a length only reassembly knows.
    Fragment,
    /// The packet is a TCP RST: answering one could start a RST war (RFC 9293 3.10.7.1).
    TcpRst,
    /// The packet is an ICMP or ICMPv6 error, or an ICMPv6 redirect: never an error about an
    /// error (RFC 1122 3.2.2, RFC 4443 2.4(e)).
    IcmpError,
    /// An ICMP type Linux does not know, which might be an error.
    IcmpUnknownType,
    /// The source is not one host's address (unspecified, `0.0.0.0/8`, loopback, multicast,
    /// broadcast, IPv4 class E, IPv4-mapped IPv6), so the answer would go nowhere or to many.
    SourceNotUnicast,
    /// The destination is multicast, broadcast or otherwise not one host's address: no errors
    /// for those (RFC 1122 3.2.2), and the answer would have to come from it.
    DestinationNotUnicast,
}

impl RejectSkip {
    /// Every reason, in declaration order (for metrics that list zero counts too).
    pub const ALL: &'static [RejectSkip] = &[
        RejectSkip::Truncated,
        RejectSkip::BadIpVersion,
        RejectSkip::Malformed,
        RejectSkip::ExtensionChainTooLong,
        RejectSkip::Fragment,
        RejectSkip::TcpRst,
        RejectSkip::IcmpError,
        RejectSkip::IcmpUnknownType,
        RejectSkip::SourceNotUnicast,
        RejectSkip::DestinationNotUnicast,
    ];

    /// The stable kebab-case name.
    pub const fn name(self) -> &'static str {
        match self {
            RejectSkip::Truncated => "truncated",
            RejectSkip::BadIpVersion => "bad-ip-version",
            RejectSkip::Malformed => "malformed",
            RejectSkip::ExtensionChainTooLong => "extension-chain-too-long",
            RejectSkip::Fragment => "fragment",
            RejectSkip::TcpRst => "tcp-rst",
            RejectSkip::IcmpError => "icmp-error",
            RejectSkip::IcmpUnknownType => "icmp-unknown-type",
            RejectSkip::SourceNotUnicast => "source-not-unicast",
            RejectSkip::DestinationNotUnicast => "destination-not-unicast",
        }
    }

    /// Parses a stable name back into the reason.
    pub fn from_name(name: &str) -> Option<RejectSkip> {
        RejectSkip::ALL.iter().copied().find(|r| r.name() == name)
    }
}

impl fmt::Display for RejectSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for RejectSkip {}

/// The ICMP destination-unreachable code for `code` (RFC 792, RFC 1812 5.2.7.1).
pub const fn icmp_code(code: RejectCode) -> u8 {
    match code {
        RejectCode::NetUnreachable => 0,
        RejectCode::HostUnreachable => 1,
        RejectCode::PortUnreachable => 3,
        RejectCode::AdminProhibited => 13,
    }
}

/// The ICMPv6 destination-unreachable code for `code` (RFC 4443 3.1): IPv6 has no "host
/// unreachable", its nearest is "address unreachable", and "net" is "no route".
pub const fn icmpv6_code(code: RejectCode) -> u8 {
    match code {
        RejectCode::NetUnreachable => 0,
        RejectCode::AdminProhibited => 1,
        RejectCode::HostUnreachable => 3,
        RejectCode::PortUnreachable => 4,
    }
}

/// Builds the answer `reject` sends to `ip_packet` (which starts at its IP header) into
/// `out`: a TCP RST for TCP, an ICMP/ICMPv6 destination unreachable with `code` otherwise.
///
/// `out` is cleared first and stays empty when the packet gets no answer. The answer comes
/// from the offending packet's destination address. The transport checksum of the offending
/// packet is not checked: the engine does that, as configured. What only the caller can see
/// is the caller's to check: packets that arrived as link-layer broadcast or multicast, and
/// directed broadcasts, get no answer either (RFC 1122 3.2.2, RFC 4443 2.4(e)).
pub fn build(ip_packet: &[u8], code: RejectCode, out: &mut Vec<u8>) -> Result<(), RejectSkip> {
    build_from(ip_packet, code, None, out)
}

/// [`build`], with ICMP/ICMPv6 errors sent from `router` instead: a router that refuses a
/// packet it would have forwarded answers from its own address on the offender's side
/// (RFC 1812 4.3.2.4), as Linux does. A TCP RST still comes from the destination the
/// offender tried to reach, and an address of the other family is ignored.
pub fn build_from(
    ip_packet: &[u8],
    code: RejectCode,
    router: Option<core::net::IpAddr>,
    out: &mut Vec<u8>,
) -> Result<(), RejectSkip> {
    out.clear();
    let mut pkt = Offending::parse(ip_packet)?;
    if pkt.proto != PROTO_TCP {
        match (&mut pkt.addrs, router) {
            (Addrs::V4 { dst, .. }, Some(core::net::IpAddr::V4(r))) => *dst = r.octets(),
            (Addrs::V6 { dst, .. }, Some(core::net::IpAddr::V6(r))) => *dst = r.octets(),
            _ => {}
        }
    }
    match (pkt.addrs, pkt.proto) {
        (_, PROTO_TCP) => {
            let rst = reset(&pkt)?;
            emit(out, pkt.addrs, PROTO_TCP, 0, &rst, &[]);
        }
        (Addrs::V4 { .. }, PROTO_ICMP) => {
            let ty = *pkt.l4.first().ok_or(RejectSkip::Truncated)?;
            // Destination unreachable, source quench, redirect, time exceeded, parameter
            // problem: the errors of RFC 792 and the ones Linux's `icmp_pointers` marks.
            if matches!(ty, 3 | 4 | 5 | 11 | 12) {
                return Err(RejectSkip::IcmpError);
            }
            if ty > ICMP_MAX_KNOWN_TYPE {
                return Err(RejectSkip::IcmpUnknownType);
            }
            unreachable(out, &pkt, code);
        }
        (Addrs::V6 { .. }, PROTO_ICMPV6) => {
            let ty = *pkt.l4.first().ok_or(RejectSkip::Truncated)?;
            // Types below 128 are errors (RFC 4443 2.1).
            if ty < 128 || ty == ICMPV6_REDIRECT {
                return Err(RejectSkip::IcmpError);
            }
            unreachable(out, &pkt, code);
        }
        _ => unreachable(out, &pkt, code),
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Addrs {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

/// The offending packet, read as far as an answer needs.
struct Offending<'a> {
    addrs: Addrs,
    /// The packet up to the length its IP header states: link-layer padding is not quoted
    /// and does not count as TCP payload.
    packet: &'a [u8],
    /// The upper-layer protocol, past any IPv6 extension headers.
    proto: u8,
    /// The upper-layer bytes in this packet.
    l4: &'a [u8],
    /// More fragments follow, so `l4` is only the start of the upper-layer message.
    first_fragment: bool,
}

impl<'a> Offending<'a> {
    fn parse(b: &'a [u8]) -> Result<Offending<'a>, RejectSkip> {
        let v = b.first().ok_or(RejectSkip::Truncated)?;
        match v >> 4 {
            4 => Offending::parse_v4(b),
            6 => Offending::parse_v6(b),
            _ => Err(RejectSkip::BadIpVersion),
        }
    }

    fn parse_v4(b: &'a [u8]) -> Result<Offending<'a>, RejectSkip> {
        let h: [u8; IPV4_HEADER_LEN] = array_at(b, 0).ok_or(RejectSkip::Truncated)?;
        let [vihl, _tos, t0, t1, _id0, _id1, f0, f1, _ttl, proto, ..] = h;
        let hlen = usize::from(vihl & 0x0f) * 4;
        if hlen < IPV4_HEADER_LEN {
            return Err(RejectSkip::Malformed);
        }
        let total = usize::from(u16::from_be_bytes([t0, t1]));
        if total < hlen {
            return Err(RejectSkip::Malformed);
        }
        let packet = b.get(..total).ok_or(RejectSkip::Truncated)?;
        let src: [u8; 4] = array_at(&h, 12).ok_or(RejectSkip::Truncated)?;
        let dst: [u8; 4] = array_at(&h, 16).ok_or(RejectSkip::Truncated)?;
        check_addrs(v4_unicast(src), v4_unicast(dst))?;
        let frag = u16::from_be_bytes([f0, f1]);
        if frag & 0x1fff != 0 {
            return Err(RejectSkip::Fragment);
        }
        Ok(Offending {
            addrs: Addrs::V4 { src, dst },
            packet,
            proto,
            l4: packet.get(hlen..).ok_or(RejectSkip::Truncated)?,
            first_fragment: frag & 0x2000 != 0,
        })
    }

    fn parse_v6(b: &'a [u8]) -> Result<Offending<'a>, RejectSkip> {
        let payload_len = u16_at(b, 4).ok_or(RejectSkip::Truncated)?;
        let total = IPV6_HEADER_LEN + usize::from(payload_len);
        let packet = b.get(..total).ok_or(RejectSkip::Truncated)?;
        let src: [u8; 16] = array_at(packet, 8).ok_or(RejectSkip::Truncated)?;
        let dst: [u8; 16] = array_at(packet, 24).ok_or(RejectSkip::Truncated)?;
        check_addrs(v6_unicast(src), v6_unicast(dst))?;
        let mut next = u8_at(packet, 6).ok_or(RejectSkip::Truncated)?;
        let mut off = IPV6_HEADER_LEN;
        let mut first_fragment = false;
        for _ in 0..=MAX_EXT_HEADERS {
            let len = match next {
                // Hop-by-hop options are only valid first (RFC 8200 4.1); Linux drops others.
                0 if off != IPV6_HEADER_LEN => return Err(RejectSkip::Malformed),
                // Hop-by-hop, routing, destination options: (length + 1) * 8 bytes.
                0 | 43 | 60 => (usize::from(ext_byte(packet, off, 1)?) + 1) * 8,
                44 => {
                    let fo = u16_at(packet, off + 2).ok_or(RejectSkip::Truncated)?;
                    if fo >> 3 != 0 {
                        return Err(RejectSkip::Fragment);
                    }
                    // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
                    first_fragment |= fo & 1 != 0;
                    8
                }
                // Authentication header: (length + 2) * 4 bytes.
                51 => (usize::from(ext_byte(packet, off, 1)?) + 2) * 4,
                proto => {
                    return Ok(Offending {
                        addrs: Addrs::V6 { src, dst },
                        packet,
                        proto,
                        l4: packet.get(off..).ok_or(RejectSkip::Truncated)?,
                        first_fragment,
                    })
                }
            };
            next = ext_byte(packet, off, 0)?;
            off += len;
            if off > packet.len() {
                return Err(RejectSkip::Truncated);
            }
        }
        Err(RejectSkip::ExtensionChainTooLong)
    }
}

/// Byte `at` of the extension header starting at `off`.
fn ext_byte(packet: &[u8], off: usize, at: usize) -> Result<u8, RejectSkip> {
    u8_at(packet, off + at).ok_or(RejectSkip::Truncated)
}

fn check_addrs(src_unicast: bool, dst_unicast: bool) -> Result<(), RejectSkip> {
    if !src_unicast {
        return Err(RejectSkip::SourceNotUnicast);
    }
    if !dst_unicast {
        return Err(RejectSkip::DestinationNotUnicast);
    }
    Ok(())
}

/// Whether an IPv4 address names one host that may send or be answered: not `0.0.0.0/8`
/// ("this network"), loopback (never on a wire), multicast `224/4`, nor class E `240/4`,
/// which includes the limited broadcast `255.255.255.255`. A directed broadcast needs the
/// interface's prefix to spot; that is the caller's to check.
fn v4_unicast(a: [u8; 4]) -> bool {
    !matches!(a[0], 0 | 127 | 224..=255)
}

/// Whether an IPv6 address names one host: not multicast `ff00::/8`, unspecified `::`,
/// loopback `::1` (never on a wire), nor IPv4-mapped `::ffff:0:0/96` (RFC 4291 2.5.5.2:
/// not for packets on the wire; Linux drops them on input).
fn v6_unicast(a: [u8; 16]) -> bool {
    let v = u128::from_be_bytes(a);
    a[0] != 0xff && v > 1 && v >> 32 != 0xffff
}

/// The RST answering the TCP segment in `pkt` (RFC 9293 3.10.7.1, Linux's
/// `nf_reject_ip_tcphdr_put`), checksum not yet filled in.
fn reset(pkt: &Offending<'_>) -> Result<[u8; TCP_HEADER_LEN], RejectSkip> {
    let th: [u8; TCP_HEADER_LEN] = array_at(pkt.l4, 0).ok_or(RejectSkip::Truncated)?;
    let [sp0, sp1, dp0, dp1, q0, q1, q2, q3, a0, a1, a2, a3, offset, flags, ..] = th;
    let hlen = usize::from(offset >> 4) * 4;
    if hlen < TCP_HEADER_LEN {
        return Err(RejectSkip::Malformed);
    }
    let payload = pkt
        .l4
        .len()
        .checked_sub(hlen)
        .ok_or(RejectSkip::Malformed)?;
    if flags & TCP_RST != 0 {
        return Err(RejectSkip::TcpRst);
    }
    let (seq, ack, rst_flags) = if flags & TCP_ACK != 0 {
        // The sender will accept a RST whose sequence number is the one it expects next,
        // which is what it acknowledged.
        (u32::from_be_bytes([a0, a1, a2, a3]), 0, TCP_RST)
    } else {
        // Without an ACK to echo, the RST acknowledges the whole segment so that a sender in
        // SYN-SENT accepts it.
        if pkt.first_fragment {
            return Err(RejectSkip::Fragment);
        }
        let payload = u32::try_from(payload).map_err(|_| RejectSkip::Malformed)?;
        let len = payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        let ack = u32::from_be_bytes([q0, q1, q2, q3]).wrapping_add(len);
        (0, ack, TCP_RST | TCP_ACK)
    };
    let [s0, s1, s2, s3] = seq.to_be_bytes();
    let [k0, k1, k2, k3] = ack.to_be_bytes();
    // Data offset 5 words (no options); window 0, checksum (filled in by `emit`), urgent
    // pointer 0.
    let data_offset = 0x50;
    Ok([
        dp0,
        dp1,
        sp0,
        sp1,
        s0,
        s1,
        s2,
        s3,
        k0,
        k1,
        k2,
        k3,
        data_offset,
        rst_flags,
        0,
        0,
        0,
        0,
        0,
        0,
    ])
}

/// The destination unreachable for `pkt`, quoting as much of it as the error may hold.
fn unreachable(out: &mut Vec<u8>, pkt: &Offending<'_>, code: RejectCode) {
    let (proto, ty, code, max) = match pkt.addrs {
        Addrs::V4 { .. } => (
            PROTO_ICMP,
            ICMP_DEST_UNREACH,
            icmp_code(code),
            ICMP_MAX_LEN - IPV4_HEADER_LEN - ICMP_HEADER_LEN,
        ),
        Addrs::V6 { .. } => (
            PROTO_ICMPV6,
            ICMPV6_DEST_UNREACH,
            icmpv6_code(code),
            ICMPV6_MAX_LEN - IPV6_HEADER_LEN - ICMP_HEADER_LEN,
        ),
    };
    let quote = pkt.packet.get(..max).unwrap_or(pkt.packet);
    // Type, code, checksum (filled in by `emit`), four unused bytes.
    let header = [ty, code, 0, 0, 0, 0, 0, 0];
    emit(
        out,
        pkt.addrs,
        proto,
        TOS_INTERNETWORK_CONTROL,
        &header,
        quote,
    );
}

/// Appends the IP header back to the offender, then `l4_header` with its checksum filled in
/// (bytes 16..18 for TCP, 2..4 for ICMP and ICMPv6), then `payload`.
fn emit(out: &mut Vec<u8>, addrs: Addrs, proto: u8, tos: u8, l4_header: &[u8], payload: &[u8]) {
    // Answers are at most ICMPV6_MAX_LEN bytes, so every length fits its 16-bit field.
    let l4_bytes = l4_header.len() + payload.len();
    let l4_len = u16::try_from(l4_bytes).unwrap_or(u16::MAX);
    // The answer goes back: its source is the offender's destination.
    let pseudo = match addrs {
        Addrs::V4 { src, dst } => {
            let total = u16::try_from(IPV4_HEADER_LEN + l4_bytes).unwrap_or(u16::MAX);
            out.extend_from_slice(&ipv4_header(dst, src, proto, tos, total));
            // ICMP, unlike ICMPv6 and TCP, has no pseudo header.
            if proto == PROTO_ICMP {
                0
            } else {
                checksum::pseudo_header(&dst, &src, proto, u32::from(l4_len))
            }
        }
        Addrs::V6 { src, dst } => {
            let [l0, l1] = l4_len.to_be_bytes();
            // Traffic class and flow label 0, as Linux sends its RSTs and ICMPv6 errors.
            out.extend_from_slice(&[0x60, 0, 0, 0, l0, l1, proto, TTL]);
            out.extend_from_slice(&dst);
            out.extend_from_slice(&src);
            checksum::pseudo_header(&dst, &src, proto, u32::from(l4_len))
        }
    };
    let sum = checksum::add(checksum::add(pseudo, l4_header), payload);
    let [c0, c1] = (!checksum::fold(sum)).to_be_bytes();
    let at = if proto == PROTO_TCP { 16 } else { 2 };
    out.extend(
        l4_header
            .iter()
            .enumerate()
            .map(|(i, &b)| match i.checked_sub(at) {
                Some(0) => c0,
                Some(1) => c1,
                _ => b,
            }),
    );
    out.extend_from_slice(payload);
}

/// An IPv4 header without options from `src` to `dst`, checksum included.
fn ipv4_header(src: [u8; 4], dst: [u8; 4], proto: u8, tos: u8, total: u16) -> [u8; 20] {
    let [t0, t1] = total.to_be_bytes();
    let [f0, f1] = IPV4_DF;
    let [s0, s1, s2, s3] = src;
    let [d0, d1, d2, d3] = dst;
    let mut h = [
        0x45, tos, t0, t1, 0, 0, f0, f1, TTL, proto, 0, 0, s0, s1, s2, s3, d0, d1, d2, d3,
    ];
    let [c0, c1] = (!checksum::fold(checksum::add(0, &h))).to_be_bytes();
    h[10] = c0;
    h[11] = c1;
    h
}

fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    array_at(b, off).map(u16::from_be_bytes)
}

fn array_at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}
