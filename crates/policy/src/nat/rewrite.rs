//! In-place rewriting of addresses, ports and ICMP identifiers, with incremental checksum
//! updates (RFC 1624, equation 3: `HC' = ~(~HC + ~m + m')`).
//!
//! Checksums are only ever adjusted, never recomputed: a packet whose checksum was wrong
//! before stays wrong after, so the engine's verification (which runs on the rewritten
//! packet) still catches it, and the cost does not grow with the payload.
//!
//! Every function reads and checks all it needs before writing anything, so a packet that
//! cannot be rewritten comes back unchanged with a [`NatSkip`].
//!
//! All fields changed here lie at even offsets from the start of the data their checksum
//! covers (IP header fields, transport header fields, the quoted packet at offset 8 of an
//! ICMP message, IPv4 options and IPv6 extension headers being multiples of 4 and 8 bytes),
//! so their 16-bit words line up with the checksum's words.

use core::net::IpAddr;

use keepstate_engine::wire::{checksum, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use keepstate_engine::Ipv4Rewrite;

use super::NatSkip;

/// The longest IPv6 extension-header chain followed, as in the engine's parser.
const MAX_EXT_HEADERS: usize = 8;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
/// Bytes of a TCP header up to and including its checksum.
const TCP_CHECKSUM_END: usize = 18;
const UDP_HEADER_LEN: usize = 8;
/// Every ICMP and ICMPv6 message has at least type, code, checksum and four more bytes;
/// an ICMP error quotes at least that much of its packet's transport header (RFC 792).
const ICMP_HEADER_LEN: usize = 8;

fn u8_at(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).copied()
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    let s = b.get(i..i.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// An address as the bytes a header holds.
#[derive(Clone, Copy)]
enum Octets {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Octets {
    fn of(a: IpAddr) -> Octets {
        match a {
            IpAddr::V4(v) => Octets::V4(v.octets()),
            IpAddr::V6(v) => Octets::V6(v.octets()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Octets::V4(b) => b,
            Octets::V6(b) => b,
        }
    }
}

/// Where the fields NAT touches lie in an IP packet, as offsets into the slice parsed.
#[derive(Clone, Copy, Debug)]
struct IpLayout {
    v6: bool,
    /// The end of the packet: its stated length (link-layer padding excluded), or for a
    /// quoted packet the end of the quote.
    end: usize,
    src: usize,
    dst: usize,
    /// The upper-layer protocol, past any IPv6 extension headers.
    proto: u8,
    /// Where the upper-layer header starts; `None` in a non-first fragment.
    l4: Option<usize>,
    /// An IPv6 routing header still has segments to visit.
    routed: bool,
}

impl IpLayout {
    fn addr_len(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }
}

/// Reads the IP header of `b`. A `quoted` packet (inside an ICMP error) is usually cut
/// short, so its stated length only bounds it; an outer packet must be complete.
fn parse_ip(b: &[u8], quoted: bool) -> Result<IpLayout, NatSkip> {
    let v = u8_at(b, 0).ok_or(NatSkip::Truncated)?;
    match v >> 4 {
        4 => parse_v4(b, quoted),
        6 => parse_v6(b, quoted),
        _ => Err(NatSkip::BadIpVersion),
    }
}

fn parse_v4(b: &[u8], quoted: bool) -> Result<IpLayout, NatSkip> {
    if b.len() < IPV4_HEADER_LEN {
        return Err(NatSkip::Truncated);
    }
    let hlen = usize::from(u8_at(b, 0).ok_or(NatSkip::Truncated)? & 0x0f) * 4;
    if hlen < IPV4_HEADER_LEN {
        return Err(NatSkip::Malformed);
    }
    let total = usize::from(u16_at(b, 2).ok_or(NatSkip::Truncated)?);
    if total < hlen {
        return Err(NatSkip::Malformed);
    }
    let end = if quoted {
        total.min(b.len())
    } else if total > b.len() {
        return Err(NatSkip::Truncated);
    } else {
        total
    };
    if hlen > end {
        return Err(NatSkip::Truncated);
    }
    let frag = u16_at(b, 6).ok_or(NatSkip::Truncated)?;
    Ok(IpLayout {
        v6: false,
        end,
        src: 12,
        dst: 16,
        proto: u8_at(b, 9).ok_or(NatSkip::Truncated)?,
        l4: (frag & 0x1fff == 0).then_some(hlen),
        routed: false,
    })
}

fn parse_v6(b: &[u8], quoted: bool) -> Result<IpLayout, NatSkip> {
    if b.len() < IPV6_HEADER_LEN {
        return Err(NatSkip::Truncated);
    }
    let payload = usize::from(u16_at(b, 4).ok_or(NatSkip::Truncated)?);
    let stated = IPV6_HEADER_LEN + payload;
    let end = if quoted {
        stated.min(b.len())
    } else if stated > b.len() {
        return Err(NatSkip::Truncated);
    } else {
        stated
    };
    let packet = b.get(..end).ok_or(NatSkip::Truncated)?;
    let mut layout = IpLayout {
        v6: true,
        end,
        src: 8,
        dst: 24,
        proto: u8_at(packet, 6).ok_or(NatSkip::Truncated)?,
        l4: None,
        routed: false,
    };
    let mut off = IPV6_HEADER_LEN;
    for _ in 0..=MAX_EXT_HEADERS {
        let ext = |at: usize| u8_at(packet, off + at).ok_or(NatSkip::Truncated);
        let len = match layout.proto {
            // Hop-by-hop options are only valid first (RFC 8200 4.1).
            0 if off != IPV6_HEADER_LEN => return Err(NatSkip::Malformed),
            0 | 60 => (usize::from(ext(1)?) + 1) * 8,
            43 => {
                layout.routed |= ext(3)? != 0;
                (usize::from(ext(1)?) + 1) * 8
            }
            44 => {
                let fo = u16_at(packet, off + 2).ok_or(NatSkip::Truncated)?;
                if fo >> 3 != 0 {
                    // The transport header is in another fragment: addresses only.
                    layout.proto = ext(0)?;
                    return Ok(layout);
                }
                8
            }
            // Authentication header: (length + 2) * 4 bytes.
            51 => (usize::from(ext(1)?) + 2) * 4,
            _ => {
                layout.l4 = Some(off);
                return Ok(layout);
            }
        };
        layout.proto = ext(0)?;
        off += len;
        if off > end {
            return Err(NatSkip::Truncated);
        }
    }
    Err(NatSkip::ExtensionChainTooLong)
}

/// Where the transport fields NAT touches lie, as offsets into the slice parsed.
#[derive(Clone, Copy, Debug, Default)]
struct L4Fields {
    sport: Option<usize>,
    dport: Option<usize>,
    /// The ICMP query identifier, and whether the message is a request (whose identifier
    /// follows the source side) rather than a reply.
    ident: Option<(usize, bool)>,
    checksum: Option<usize>,
    /// The checksum covers the pseudo-header, so address changes reach it.
    pseudo: bool,
    /// UDP: a zero checksum is left alone, and a computed zero is sent as `0xffff`.
    udp: bool,
}

/// Whether an ICMP/ICMPv6 type is a query carrying an identifier, and if so whether it is
/// the request; the same types the engine tracks by identifier.
fn icmp_query(proto: u8, ty: u8) -> Option<bool> {
    match (proto, ty) {
        (PROTO_ICMP, 8 | 13 | 15 | 17) | (PROTO_ICMPV6, 128) => Some(true),
        (PROTO_ICMP, 0 | 14 | 16 | 18) | (PROTO_ICMPV6, 129) => Some(false),
        _ => None,
    }
}

/// Finds the transport fields of the packet `ip` laid out as `l`. An outer packet must hold
/// its whole fixed transport header; a quoted one must hold the eight bytes RFC 792 asks an
/// error to quote, and a TCP checksum only when the quote reaches it.
fn l4_fields(ip: &[u8], l: &IpLayout, quoted: bool) -> Result<L4Fields, NatSkip> {
    let Some(off) = l.l4 else {
        return Ok(L4Fields::default());
    };
    let avail = l.end.checked_sub(off).ok_or(NatSkip::Truncated)?;
    let need = |n: usize| {
        if avail < n {
            Err(NatSkip::Truncated)
        } else {
            Ok(())
        }
    };
    let mut f = L4Fields::default();
    match (l.proto, l.v6) {
        (PROTO_TCP, _) => {
            need(if quoted {
                ICMP_HEADER_LEN
            } else {
                TCP_HEADER_LEN
            })?;
            f.sport = Some(off);
            f.dport = Some(off + 2);
            f.checksum = (avail >= TCP_CHECKSUM_END).then_some(off + 16);
            f.pseudo = true;
        }
        (PROTO_UDP, _) => {
            need(UDP_HEADER_LEN)?;
            f.sport = Some(off);
            f.dport = Some(off + 2);
            f.checksum = Some(off + 6);
            f.pseudo = true;
            f.udp = true;
        }
        (PROTO_ICMP, false) | (PROTO_ICMPV6, true) => {
            need(ICMP_HEADER_LEN)?;
            let ty = u8_at(ip, off).ok_or(NatSkip::Truncated)?;
            f.ident = icmp_query(l.proto, ty).map(|request| (off + 4, request));
            f.checksum = Some(off + 2);
            f.pseudo = l.v6;
        }
        // Other protocols have no fields NAT knows; their addresses are still rewritten,
        // as netfilter does for protocols without a NAT helper.
        _ => {}
    }
    Ok(f)
}

/// The new identifier of an ICMP query: a request takes the source side's port if one is
/// given (else the destination's), a reply the destination side's (else the source's).
fn new_ident(request: bool, src: Option<u16>, dst: Option<u16>) -> Option<u16> {
    if request {
        src.or(dst)
    } else {
        dst.or(src)
    }
}

fn same_family(l: &IpLayout, a: Option<IpAddr>) -> Result<(), NatSkip> {
    match a {
        Some(a) if a.is_ipv6() != l.v6 => Err(NatSkip::FamilyMismatch),
        _ => Ok(()),
    }
}

/// The one's-complement difference `Σ(~old + new)` over the 16-bit words that change.
fn delta(old: &[u8], new: &[u8]) -> u64 {
    old.chunks_exact(2)
        .zip(new.chunks_exact(2))
        .filter(|(o, n)| o != n)
        .map(|(o, n)| match (o, n) {
            ([o0, o1], [n0, n1]) => {
                u64::from(!u16::from_be_bytes([*o0, *o1]))
                    + u64::from(u16::from_be_bytes([*n0, *n1]))
            }
            _ => 0,
        })
        .sum()
}

/// Writes `new` at `off` and returns the checksum difference. Offsets are checked before any
/// write, so a range that does not fit (which cannot happen) writes nothing.
fn replace(b: &mut [u8], off: usize, new: &[u8]) -> u64 {
    let Some(end) = off.checked_add(new.len()) else {
        return 0;
    };
    let Some(field) = b.get_mut(off..end) else {
        return 0;
    };
    let d = delta(field, new);
    field.copy_from_slice(new);
    d
}

/// Applies a difference to the checksum at `off` (RFC 1624 eqn. 3) and returns the checksum
/// field's own difference, for a checksum that covers this one (an ICMP error's covers the
/// quoted packet's). Leaves a UDP checksum of zero alone: over IPv4 it means "none", over
/// IPv6 it is invalid and must stay so.
fn adjust(b: &mut [u8], off: Option<usize>, d: u64, udp: bool) -> u64 {
    let Some(off) = off else {
        return 0;
    };
    let Some(old) = u16_at(b, off) else {
        return 0;
    };
    if d == 0 || (udp && old == 0) {
        return 0;
    }
    let mut new = !checksum::fold(u64::from(!old) + d);
    if udp && new == 0 {
        // RFC 768: a computed zero is transmitted as all ones.
        new = 0xffff;
    }
    replace(b, off, &new.to_be_bytes())
}

/// What one packet (outer or quoted) gets: addresses and transport fields.
#[derive(Clone, Copy, Default)]
struct Change {
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
}

/// Checks that a change fits the packet: right address family, and ports that exist. Only
/// reads.
fn check(ip: &[u8], l: &IpLayout, f: &L4Fields, c: &Change) -> Result<(), NatSkip> {
    same_family(l, c.src.map(|s| s.0))?;
    same_family(l, c.dst.map(|d| d.0))?;
    if l.routed && c.dst.is_some() {
        return Err(NatSkip::RoutingHeader);
    }
    // Every offset written below must lie inside `ip`.
    let end = l.end.min(ip.len());
    let fits = |off: Option<usize>, n: usize| {
        off.is_none_or(|o| o.checked_add(n).is_some_and(|e| e <= end))
    };
    let ok = fits(Some(l.src), l.addr_len())
        && fits(Some(l.dst), l.addr_len())
        && fits(f.sport, 2)
        && fits(f.dport, 2)
        && fits(f.ident.map(|i| i.0), 2)
        && fits(f.checksum, 2);
    if ok {
        Ok(())
    } else {
        Err(NatSkip::Truncated)
    }
}

/// Applies a checked change. Returns the sum of differences of every word written (for a
/// checksum covering this whole packet, as an ICMP error's covers its quote) and the
/// pseudo-header difference (for an ICMPv6 checksum whose pseudo-header this is).
fn apply(ip: &mut [u8], l: &IpLayout, f: &L4Fields, c: &Change) -> (u64, u64) {
    let mut written = 0;
    let mut pseudo = 0;
    if let Some((a, _)) = c.src {
        pseudo += replace(ip, l.src, Octets::of(a).bytes());
    }
    if let Some((a, _)) = c.dst {
        pseudo += replace(ip, l.dst, Octets::of(a).bytes());
    }
    written += pseudo;
    if !l.v6 {
        // The IPv4 header checksum covers the addresses.
        written += adjust(ip, Some(10), pseudo, false);
    }
    let mut ports = 0;
    if let (Some(off), Some((_, p))) = (f.sport, c.src) {
        ports += replace(ip, off, &p.to_be_bytes());
    }
    if let (Some(off), Some((_, p))) = (f.dport, c.dst) {
        ports += replace(ip, off, &p.to_be_bytes());
    }
    if let Some((off, request)) = f.ident {
        if let Some(id) = new_ident(request, c.src.map(|s| s.1), c.dst.map(|d| d.1)) {
            ports += replace(ip, off, &id.to_be_bytes());
        }
    }
    written += ports;
    let l4 = if f.pseudo { pseudo + ports } else { ports };
    written += adjust(ip, f.checksum, l4, f.udp);
    (written, pseudo)
}

/// Rewrites the source and/or destination of the IP packet `ip` (which starts at its IP
/// header) in place, updating every checksum the change reaches.
///
/// - Addresses: always, with the IPv4 header checksum.
/// - Ports: for TCP and UDP, with the transport checksum (which also covers the addresses
///   through its pseudo-header). A UDP checksum of zero is left zero: over IPv4 it means
///   "no checksum", over IPv6 it is invalid and stays so.
/// - ICMP and ICMPv6 queries (echo, and ICMP's timestamp, information and address-mask
///   messages): the identifier plays both ports. A request's identifier becomes the port
///   given with `src` (or with `dst` if only that is given), a reply's the port given with
///   `dst` (or with `src`), whenever it differs. ICMP's checksum has no pseudo-header, so
///   only identifier changes reach it; ICMPv6's covers the addresses too.
/// - Other protocols and ICMP non-queries: addresses only, ports ignored (an ICMPv6
///   checksum still follows the addresses). An ICMP error's quoted packet is left alone
///   here: [`rewrite_icmp_error`] translates it.
/// - A non-first fragment holds no transport header: addresses only. A first fragment's
///   transport checksum covers the whole datagram, and the incremental update is still
///   right for it.
///
/// The packet is read up to the length its IP header states (link-layer padding is left
/// alone). On error nothing has been written.
pub fn rewrite(
    ip: &mut [u8],
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) -> Result<(), NatSkip> {
    let v4 = |x: Option<(IpAddr, u16)>| match x {
        None => Some(None),
        Some((IpAddr::V4(a), p)) => Some(Some((a.octets(), p))),
        Some((IpAddr::V6(_), _)) => None,
    };
    if let (Some(s), Some(d)) = (v4(src), v4(dst)) {
        if rewrite_plain_v4(ip, s, d) {
            return Ok(());
        }
    }
    rewrite_any(ip, src, dst)
}

/// [`rewrite`] given addresses as the bytes a header holds (4 for IPv4, 16 for IPv6), as
/// the engine keeps them: the common IPv4 case needs no conversion at all.
pub fn rewrite_octets(
    ip: &mut [u8],
    src: Option<(&[u8], u16)>,
    dst: Option<(&[u8], u16)>,
) -> Result<(), NatSkip> {
    let v4 = |x: Option<(&[u8], u16)>| match x {
        None => Some(None),
        Some((b, p)) => <[u8; 4]>::try_from(b).ok().map(|a| Some((a, p))),
    };
    if let (Some(s), Some(d)) = (v4(src), v4(dst)) {
        if rewrite_plain_v4(ip, s, d) {
            return Ok(());
        }
    }
    let addr = |x: Option<(&[u8], u16)>| -> Result<Option<(IpAddr, u16)>, NatSkip> {
        let Some((b, p)) = x else {
            return Ok(None);
        };
        if let Ok(a) = <[u8; 4]>::try_from(b) {
            return Ok(Some((IpAddr::from(a), p)));
        }
        let a = <[u8; 16]>::try_from(b).map_err(|_| NatSkip::FamilyMismatch)?;
        Ok(Some((IpAddr::from(a), p)))
    };
    rewrite_any(ip, addr(src)?, addr(dst)?)
}

/// [`rewrite`] for any packet, its layout worked out first.
fn rewrite_any(
    ip: &mut [u8],
    src: Option<(IpAddr, u16)>,
    dst: Option<(IpAddr, u16)>,
) -> Result<(), NatSkip> {
    let l = parse_ip(ip, false)?;
    let f = l4_fields(ip, &l, false)?;
    let c = Change { src, dst };
    check(ip, &l, &f, &c)?;
    apply(ip, &l, &f, &c);
    Ok(())
}

/// Rewrites a packet of an IPv4 TCP or UDP connection as the engine's translation says,
/// with the checksum sums it worked out when the connection was translated: for plain IPv4
/// TCP or UDP only the fields are written and the two sums added; anything else (IPv4
/// options, a fragment) takes the general path, which works the sums out itself.
pub fn rewrite_ipv4(ip: &mut [u8], rw: &Ipv4Rewrite) -> Result<(), NatSkip> {
    if rewrite_ipv4_plain(ip, rw) {
        return Ok(());
    }
    let v4 = |x: Option<([u8; 4], u16)>| x.map(|(a, p)| (IpAddr::from(a), p));
    rewrite_any(ip, v4(rw.src), v4(rw.dst))
}

/// [`rewrite_ipv4`] for a plain packet (no IPv4 options, not a fragment, complete): returns
/// `false`, having written nothing, for any other.
#[inline(always)]
pub fn rewrite_ipv4_plain(ip: &mut [u8], rw: &Ipv4Rewrite) -> bool {
    let Some((p, ck, udp)) = plain_v4_headers(ip) else {
        return false;
    };
    write_fields(p, rw.src, rw.dst);
    checksum::add_folded_at(p, 10, rw.ip_sum, false);
    checksum::add_folded_at(p, ck, rw.l4_sum, udp);
    true
}

/// The IPv4 and TCP or UDP headers of a plain packet (no options, not a fragment, complete),
/// with where the transport checksum lies and whether it is UDP's.
#[inline(always)]
fn plain_v4_headers(ip: &mut [u8]) -> Option<(&mut [u8; 40], usize, bool)> {
    let h = ip.get(..IPV4_HEADER_LEN)?;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    let (ck, udp, l4) = match h[9] {
        PROTO_TCP => (IPV4_HEADER_LEN + 16, false, TCP_HEADER_LEN),
        PROTO_UDP => (IPV4_HEADER_LEN + 6, true, UDP_HEADER_LEN),
        _ => return None,
    };
    if h[0] != 0x45 || fragment || total > ip.len() || total < IPV4_HEADER_LEN + l4 {
        return None;
    }
    // Forty bytes cover the UDP case too when the packet has them; a shorter UDP packet
    // (28 to 39 bytes) takes the general path.
    let p = ip.get_mut(..IPV4_HEADER_LEN + TCP_HEADER_LEN)?;
    Some((<&mut [u8; 40]>::try_from(p).ok()?, ck, udp))
}

#[inline(always)]
fn write_fields(p: &mut [u8; 40], src: Option<([u8; 4], u16)>, dst: Option<([u8; 4], u16)>) {
    if let Some((a, port)) = src {
        p[12..16].copy_from_slice(&a);
        p[20..22].copy_from_slice(&port.to_be_bytes());
    }
    if let Some((a, port)) = dst {
        p[16..20].copy_from_slice(&a);
        p[22..24].copy_from_slice(&port.to_be_bytes());
    }
}

/// [`rewrite`] for the packet nearly every translated connection carries: IPv4 without
/// options, not a fragment, TCP or UDP, complete. Fixed offsets, no layout to work out.
/// Returns `false`, having written nothing, for anything else.
#[inline]
fn rewrite_plain_v4(
    ip: &mut [u8],
    src: Option<([u8; 4], u16)>,
    dst: Option<([u8; 4], u16)>,
) -> bool {
    let Some(h) = ip.get(..IPV4_HEADER_LEN) else {
        return false;
    };
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    let udp = match h[9] {
        PROTO_TCP => false,
        PROTO_UDP => true,
        _ => return false,
    };
    if h[0] != 0x45 || fragment || total > ip.len() {
        return false;
    }
    if udp {
        match ip.get_mut(..IPV4_HEADER_LEN + UDP_HEADER_LEN) {
            Some(p) if total >= p.len() => plain_v4::<28, 26>(p, src, dst, true),
            _ => return false,
        }
    } else {
        match ip.get_mut(..IPV4_HEADER_LEN + TCP_HEADER_LEN) {
            Some(p) if total >= p.len() => plain_v4::<40, 36>(p, src, dst, false),
            _ => return false,
        }
    }
    true
}

/// One 16-bit word's contribution to an incremental checksum update (nothing when it does
/// not change, so an unchanged packet keeps its exact checksum bytes).
#[inline(always)]
fn word(old: u16, new: u16) -> u64 {
    if old == new {
        0
    } else {
        u64::from(!old) + u64::from(new)
    }
}

/// The headers (IPv4 without options, then TCP or UDP) as a fixed array: `N` bytes (28
/// for UDP, 40 for TCP), the transport checksum at `CK`. Every index is a constant below
/// `N`.
#[inline(always)]
fn plain_v4<const N: usize, const CK: usize>(
    p: &mut [u8],
    src: Option<([u8; 4], u16)>,
    dst: Option<([u8; 4], u16)>,
    udp: bool,
) {
    let Ok(p) = <&mut [u8; N]>::try_from(p) else {
        return;
    };
    let mut addrs = 0u64;
    let mut ports = 0u64;
    if let Some(([a0, a1, a2, a3], port)) = src {
        addrs += word(
            u16::from_be_bytes([p[12], p[13]]),
            u16::from_be_bytes([a0, a1]),
        );
        addrs += word(
            u16::from_be_bytes([p[14], p[15]]),
            u16::from_be_bytes([a2, a3]),
        );
        ports += word(u16::from_be_bytes([p[20], p[21]]), port);
        p[12..16].copy_from_slice(&[a0, a1, a2, a3]);
        p[20..22].copy_from_slice(&port.to_be_bytes());
    }
    if let Some(([a0, a1, a2, a3], port)) = dst {
        addrs += word(
            u16::from_be_bytes([p[16], p[17]]),
            u16::from_be_bytes([a0, a1]),
        );
        addrs += word(
            u16::from_be_bytes([p[18], p[19]]),
            u16::from_be_bytes([a2, a3]),
        );
        ports += word(u16::from_be_bytes([p[22], p[23]]), port);
        p[16..20].copy_from_slice(&[a0, a1, a2, a3]);
        p[22..24].copy_from_slice(&port.to_be_bytes());
    }
    if addrs != 0 {
        let old = u16::from_be_bytes([p[10], p[11]]);
        let new = !checksum::fold(u64::from(!old) + addrs);
        p[10..12].copy_from_slice(&new.to_be_bytes());
    }
    let old = u16::from_be_bytes([p[CK], p[CK + 1]]);
    if addrs + ports != 0 && !(udp && old == 0) {
        let mut new = !checksum::fold(u64::from(!old) + addrs + ports);
        if udp && new == 0 {
            // RFC 768: a computed zero is transmitted as all ones.
            new = 0xffff;
        }
        p[CK..CK + 2].copy_from_slice(&new.to_be_bytes());
    }
}

/// Adds `seq_add` to a TCP segment's sequence number and `ack_add` to its acknowledgment
/// number (wrapping), with the checksum updated: a SYN proxy's connections carry the
/// proxy's initial sequence number on one side and the server's on the other. The ACK
/// field is changed only when the segment has the ACK flag. Anything but a TCP segment
/// with its header (a non-first fragment, say) is left alone.
pub fn rewrite_tcp_seq(ip: &mut [u8], seq_add: u32, ack_add: u32) -> Result<(), NatSkip> {
    let l = parse_ip(ip, false)?;
    if l.proto != PROTO_TCP {
        return Ok(());
    }
    let Some(off) = l.l4 else {
        return Ok(());
    };
    if off + TCP_HEADER_LEN > l.end {
        return Err(NatSkip::Truncated);
    }
    let word = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let Some(h) = ip.get(off..off + TCP_HEADER_LEN) else {
        return Err(NatSkip::Truncated);
    };
    let (seq, ack, flags) = (word(h, 4), word(h, 8), h[13]);
    let mut d = 0;
    if seq_add != 0 {
        d += replace(ip, off + 4, &seq.wrapping_add(seq_add).to_be_bytes());
    }
    if ack_add != 0 && flags & 0x10 != 0 {
        d += replace(ip, off + 8, &ack.wrapping_add(ack_add).to_be_bytes());
    }
    adjust(ip, Some(off + TCP_CHECKSUM_END - 2), d, false);
    Ok(())
}

/// Rewrites an ICMP or ICMPv6 error travelling back through NAT (netfilter's
/// `nf_nat_icmp_reply_translation`): the outer destination becomes `outer_dst`, and the
/// quoted packet's source and destination become `inner_src` and `inner_dst`.
///
/// The quoted packet is the one that left translated, so for a masqueraded connection its
/// source is the outside address and mapped port, and `inner_src` is the inside host's
/// address and port. Updated: the outer IPv4 header checksum; the quoted IPv4 header
/// checksum; the quoted transport checksum where the quote reaches it (quotes are often cut
/// short; the update keeps it consistent with the packet as it was sent); and the ICMP or
/// ICMPv6 checksum over everything changed in the message (ICMPv6's pseudo-header included),
/// incrementally, so an error that arrived corrupted stays detectably so.
///
/// The quote must hold its whole IP header and at least eight bytes of a TCP, UDP or ICMP
/// header (what RFC 792 requires). On error nothing has been written.
pub fn rewrite_icmp_error(
    ip: &mut [u8],
    outer_dst: Option<IpAddr>,
    inner_src: Option<(IpAddr, u16)>,
    inner_dst: Option<(IpAddr, u16)>,
) -> Result<(), NatSkip> {
    rewrite_icmp_error_outer(ip, None, outer_dst, inner_src, inner_dst)
}

/// [`rewrite_icmp_error`] that may also rewrite the outer source: an error sent by an inside
/// host about a translated connection (a port-forward server's port unreachable, say)
/// leaves with the outside address as its source and the quoted destination translated.
pub fn rewrite_icmp_error_outer(
    ip: &mut [u8],
    outer_src: Option<IpAddr>,
    outer_dst: Option<IpAddr>,
    inner_src: Option<(IpAddr, u16)>,
    inner_dst: Option<(IpAddr, u16)>,
) -> Result<(), NatSkip> {
    let outer = parse_ip(ip, false)?;
    let icmp = outer.l4.ok_or(NatSkip::Fragment)?;
    let icmp_proto = if outer.v6 { PROTO_ICMPV6 } else { PROTO_ICMP };
    if outer.proto != icmp_proto {
        return Err(NatSkip::NotIcmpError);
    }
    let body = icmp + ICMP_HEADER_LEN;
    if body > outer.end {
        return Err(NatSkip::Truncated);
    }
    let ty = u8_at(ip, icmp).ok_or(NatSkip::Truncated)?;
    // ICMP: destination unreachable, source quench, redirect, time exceeded, parameter
    // problem. ICMPv6: destination unreachable, packet too big, time exceeded, parameter
    // problem (RFC 4443 2.1).
    let error = if outer.v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    };
    if !error {
        return Err(NatSkip::NotIcmpError);
    }
    // Outer: addresses only (the "ports" of the outer ICMP message are not changed).
    let outer_change = Change {
        src: outer_src.map(|a| (a, 0)),
        dst: outer_dst.map(|a| (a, 0)),
    };
    let outer_fields = L4Fields::default();
    check(ip, &outer, &outer_fields, &outer_change)?;

    let quote = ip.get(body..outer.end).ok_or(NatSkip::Truncated)?;
    let inner = parse_ip(quote, true)?;
    if inner.v6 != outer.v6 {
        return Err(NatSkip::Malformed);
    }
    let inner_fields = l4_fields(quote, &inner, true)?;
    let inner_change = Change {
        src: inner_src,
        dst: inner_dst,
    };
    // The quoted packet travelled the other way: no routing-header objection applies to its
    // destination, which is just bytes in the quote.
    let inner_check = IpLayout {
        routed: false,
        ..inner
    };
    check(quote, &inner_check, &inner_fields, &inner_change)?;

    // Everything is checked: write.
    let Some(quote) = ip.get_mut(body..outer.end) else {
        return Err(NatSkip::Truncated);
    };
    let (in_body, _) = apply(quote, &inner, &inner_fields, &inner_change);
    let (_, outer_pseudo) = apply(ip, &outer, &outer_fields, &outer_change);
    let d = if outer.v6 {
        in_body + outer_pseudo
    } else {
        in_body
    };
    adjust(ip, Some(icmp + 2), d, false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed-offset path writes exactly what the general one does.
    #[test]
    fn plain_ipv4_path_matches_the_general_one() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..2000 {
            let udp = i % 2 == 0;
            let mut p = vec![0u8; if udp { 36 } else { 48 }];
            for b in p.iter_mut() {
                *b = next().to_le_bytes()[0];
            }
            let len = u16::try_from(p.len()).unwrap_or(0);
            p[0] = 0x45;
            p[2..4].copy_from_slice(&len.to_be_bytes());
            p[6] &= 0x80;
            p[7] = 0;
            p[9] = if udp { PROTO_UDP } else { PROTO_TCP };
            if udp && i % 6 == 0 {
                p[26] = 0;
                p[27] = 0;
            }
            let r = next().to_le_bytes();
            let addr = |o: usize| IpAddr::from([r[o], r[o + 1], r[o + 2], r[o + 3]]);
            let port = u16::from_be_bytes([r[0], r[7]]);
            let src = (i % 3 != 0).then(|| (addr(0), port));
            let dst = (i % 3 != 1).then(|| (addr(4), port ^ 0x5a5a));
            let mut fast = p.clone();
            let mut slow = p.clone();
            let v4 = |x: Option<(IpAddr, u16)>| match x {
                Some((IpAddr::V4(a), p)) => Some((a.octets(), p)),
                _ => None,
            };
            assert!(rewrite_plain_v4(&mut fast, v4(src), v4(dst)));
            assert_eq!(rewrite_any(&mut slow, src, dst), Ok(()));
            assert_eq!(fast, slow, "packet {i}");
        }
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives HC' = 0x0000.
        let mut b = [0xdd, 0x2f, 0x55, 0x55];
        let d = replace(&mut b, 2, &[0x32, 0x85]);
        adjust(&mut b, Some(0), d, false);
        assert_eq!(&b[..2], &[0x00, 0x00]);
    }
}
