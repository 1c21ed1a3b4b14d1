//! Reading and writing the few headers the router itself deals in: Ethernet, ARP, the IP
//! headers it forwards, and the ICMP, ICMPv6 and neighbour-discovery messages it sends.
//!
//! Every read is checked (`get`), so no frame can make these panic. Builders append to a
//! caller's buffer, which the router reuses from packet to packet.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keepstate_engine::wire::{checksum, PROTO_ICMP, PROTO_ICMPV6};

pub const ETH_LEN: usize = 14;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// TTL and hop limit of what the router originates (Linux's defaults).
pub const TTL: u8 = 64;
/// RFC 1812 4.3.2.3: an ICMP error holds as much of the packet as fits in 576 bytes.
pub const ICMP_MAX_LEN: usize = 576;
/// RFC 4443 2.4(c): an ICMPv6 error is at most the IPv6 minimum MTU.
pub const ICMPV6_MAX_LEN: usize = 1280;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
const ND_REDIRECT: u8 = 137;
const ND_OPT_SOURCE_LL: u8 = 1;
const ND_OPT_TARGET_LL: u8 = 2;

/// Longest IPv6 extension-header chain followed.
const MAX_EXT_HEADERS: usize = 8;

pub fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

pub fn array_at<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub fn is_multicast_mac(m: &[u8; 6]) -> bool {
    m[0] & 1 != 0
}

/// `33:33:xx:xx:xx:xx`, the Ethernet group of an IPv6 multicast address (RFC 2464 7).
pub fn ipv6_multicast_mac(a: &Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// `ff02::1:ffXX:XXXX`, the solicited-node group of an address (RFC 4291 2.7.1).
pub fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The link-local address a port derives from its MAC (modified EUI-64, RFC 4291 2.5.1).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    let [a, b, c, d, e, f] = mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        a ^ 0x02,
        b,
        c,
        0xff,
        0xfe,
        d,
        e,
        f,
    ])
}

pub fn is_link_local_v6(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// An address that names one host that may send or be answered (RFC 1122 3.2.1.3, RFC 4291).
pub fn is_unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !matches!(v.octets()[0], 0 | 127 | 224..=255),
        IpAddr::V6(v) => {
            let bits = u128::from(v);
            !v.is_multicast() && bits > 1 && bits >> 32 != 0xffff
        }
    }
}

/// The Ethernet header: destination, source, ethertype.
pub fn write_eth(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    if let Some(h) = buf.get_mut(..ETH_LEN) {
        h[..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&src);
        h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    }
}

/// The fields of an IP header the router needs, from a packet starting at its IP header.
#[derive(Clone, Copy, Debug)]
pub struct IpInfo {
    pub v4: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The datagram's length as its header states.
    pub len: usize,
    pub ttl: u8,
    /// IPv4: Don't Fragment; IPv6: always (routers never fragment IPv6).
    pub df: bool,
    /// A fragment other than the first (its transport header is elsewhere).
    pub later_fragment: bool,
    /// A fragment, first or later.
    pub fragment: bool,
    /// The upper-layer protocol and where it starts, when reachable.
    pub proto: Option<u8>,
    pub l4: usize,
}

/// Reads an IP header. `Err` carries the drop reason for what is wrong.
pub fn ip_info(ip: &[u8]) -> Result<IpInfo, keepstate_engine::DropReason> {
    parse_ip(ip, true)
}

/// [`ip_info`] for the start of a packet kept to quote it: its stated length may exceed
/// what was kept (`len` is then what was kept).
pub fn ip_info_prefix(ip: &[u8]) -> Result<IpInfo, keepstate_engine::DropReason> {
    parse_ip(ip, false)
}

fn parse_ip(ip: &[u8], whole: bool) -> Result<IpInfo, keepstate_engine::DropReason> {
    use keepstate_engine::DropReason as R;
    let first = *ip.first().ok_or(R::Truncated)?;
    match first >> 4 {
        4 => {
            let h: [u8; 20] = array_at(ip, 0).ok_or(R::Truncated)?;
            let hlen = usize::from(first & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
            if hlen < 20 {
                return Err(R::BadIpHeaderLength);
            }
            if total < hlen || (whole && total > ip.len()) {
                return Err(R::BadIpLength);
            }
            let total = total.min(ip.len());
            if total < hlen {
                return Err(R::Truncated);
            }
            let frag = u16::from_be_bytes([h[6], h[7]]);
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            let offset = frag & 0x1fff;
            Ok(IpInfo {
                v4: true,
                src: IpAddr::V4(src),
                dst: IpAddr::V4(dst),
                len: total,
                ttl: h[8],
                df: frag & 0x4000 != 0,
                later_fragment: offset != 0,
                fragment: offset != 0 || frag & 0x2000 != 0,
                proto: Some(h[9]),
                l4: hlen,
            })
        }
        6 => {
            let h: [u8; 40] = array_at(ip, 0).ok_or(R::Truncated)?;
            let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
            // A zero payload length is a jumbogram (RFC 2675): not on Ethernet.
            if payload == 0 && h[6] != 59 || (whole && 40 + payload > ip.len()) {
                return Err(R::BadIpLength);
            }
            let payload = payload.min(ip.len() - 40);
            let src: [u8; 16] = array_at(&h, 8).ok_or(R::Truncated)?;
            let dst: [u8; 16] = array_at(&h, 24).ok_or(R::Truncated)?;
            let packet = ip.get(..40 + payload).ok_or(R::Truncated)?;
            let (proto, l4, later, fragment) = upper_v6(packet, h[6]);
            Ok(IpInfo {
                v4: false,
                src: IpAddr::V6(Ipv6Addr::from(src)),
                dst: IpAddr::V6(Ipv6Addr::from(dst)),
                len: 40 + payload,
                ttl: h[7],
                df: true,
                later_fragment: later,
                fragment,
                proto,
                l4,
            })
        }
        _ => Err(R::BadIpVersion),
    }
}

/// Follows IPv6 extension headers: the upper-layer protocol and offset (`None` when the
/// chain is broken or too long), whether this is a later fragment, and whether a fragment.
fn upper_v6(packet: &[u8], mut next: u8) -> (Option<u8>, usize, bool, bool) {
    let mut off = 40;
    let mut fragment = false;
    for _ in 0..=MAX_EXT_HEADERS {
        let len = match next {
            0 | 43 | 60 => match packet.get(off + 1) {
                Some(&l) => (usize::from(l) + 1) * 8,
                None => return (None, off, false, fragment),
            },
            44 => {
                let Some(fo) = u16_at(packet, off + 2) else {
                    return (None, off, false, true);
                };
                if fo >> 3 != 0 {
                    return (None, off, true, true);
                }
                fragment |= fo & 1 != 0;
                8
            }
            51 => match packet.get(off + 1) {
                Some(&l) => (usize::from(l) + 2) * 4,
                None => return (None, off, false, fragment),
            },
            proto => return (Some(proto), off, false, fragment),
        };
        next = match packet.get(off) {
            Some(&n) => n,
            None => return (None, off, false, fragment),
        };
        off += len;
        if off > packet.len() {
            return (None, off, false, fragment);
        }
    }
    (None, off, false, fragment)
}

/// Whether the packet is an ICMP or ICMPv6 error (or a type that may be one, or a redirect):
/// the router never answers those with an error (RFC 1122 3.2.2, RFC 4443 2.4(e)).
pub fn is_icmp_error(ip: &[u8], info: &IpInfo) -> bool {
    let ty = ip.get(info.l4).copied();
    match (info.v4, info.proto, ty) {
        (true, Some(PROTO_ICMP), Some(t)) => matches!(t, 3 | 4 | 5 | 11 | 12) || t > 18,
        (false, Some(PROTO_ICMPV6), Some(t)) => t < 128 || t == ND_REDIRECT,
        // A quoted header that cannot be read might be an error: stay silent.
        (_, Some(PROTO_ICMP | PROTO_ICMPV6), None) => true,
        (false, None, _) => true,
        _ => false,
    }
}

/// Sets the IPv4 header checksum.
pub fn ipv4_checksum(h: &mut [u8]) {
    let hlen = h.first().map_or(20, |b| usize::from(b & 0x0f) * 4);
    if let Some(c) = h.get_mut(10..12) {
        c.copy_from_slice(&[0, 0]);
    }
    let Some(head) = h.get(..hlen) else {
        return;
    };
    let sum = !checksum::fold(checksum::add(0, head));
    if let Some(c) = h.get_mut(10..12) {
        c.copy_from_slice(&sum.to_be_bytes());
    }
}

/// Decrements the TTL (IPv4, checksum updated incrementally as RFC 1624 eqn. 3 says) or hop
/// limit (IPv6) of the packet starting at `ip`.
pub fn decrement_ttl(ip: &mut [u8]) {
    match ip.first().map(|b| b >> 4) {
        Some(4) => {
            let (Some(&ttl), Some(&proto), Some(c)) = (ip.get(8), ip.get(9), u16_at(ip, 10)) else {
                return;
            };
            let new_ttl = ttl.saturating_sub(1);
            let old = u16::from_be_bytes([ttl, proto]);
            let new = u16::from_be_bytes([new_ttl, proto]);
            // HC' = ~(~HC + ~m + m'), in one's-complement arithmetic.
            let sum = u64::from(!c) + u64::from(!old) + u64::from(new);
            let c2 = !checksum::fold(sum);
            if let Some(t) = ip.get_mut(8) {
                *t = new_ttl;
            }
            if let Some(cs) = ip.get_mut(10..12) {
                cs.copy_from_slice(&c2.to_be_bytes());
            }
        }
        Some(6) => {
            if let Some(h) = ip.get_mut(7) {
                *h = h.saturating_sub(1);
            }
        }
        _ => {}
    }
}

/// Appends an IPv4 header without options.
pub fn push_ipv4_header(
    buf: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    tos: u8,
    id: u16,
    payload_len: usize,
) {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let start = buf.len();
    buf.extend_from_slice(&[0x45, tos]);
    buf.extend_from_slice(&total.to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&[0, 0, TTL, proto, 0, 0]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
    if let Some(h) = buf.get_mut(start..) {
        ipv4_checksum(h);
    }
}

/// Appends an IPv6 header.
pub fn push_ipv6_header(
    buf: &mut Vec<u8>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop_limit: u8,
    payload_len: usize,
) {
    let len = u16::try_from(payload_len).unwrap_or(u16::MAX);
    buf.extend_from_slice(&[0x60, 0, 0, 0]);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&[next, hop_limit]);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&dst.octets());
}

/// Fills in the checksum (bytes 2..4) of the ICMP or ICMPv6 message `msg`.
pub fn icmp_checksum(msg: &mut [u8], v6: Option<(Ipv6Addr, Ipv6Addr)>) {
    if let Some(c) = msg.get_mut(2..4) {
        c.copy_from_slice(&[0, 0]);
    }
    let pseudo = match v6 {
        Some((s, d)) => checksum::pseudo_header(
            &s.octets(),
            &d.octets(),
            PROTO_ICMPV6,
            u32::try_from(msg.len()).unwrap_or(u32::MAX),
        ),
        None => 0,
    };
    let sum = !checksum::fold(checksum::add(pseudo, msg));
    if let Some(c) = msg.get_mut(2..4) {
        c.copy_from_slice(&sum.to_be_bytes());
    }
}

/// Appends a whole frame (Ethernet header with zero addresses, to be set when sent) holding
/// an ICMP or ICMPv6 message from `src` to `dst`: `head` (type, code, checksum placeholder,
/// four bytes), then `body`.
#[allow(clippy::too_many_arguments)]
pub fn push_icmp(
    buf: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    id: u16,
    tos: u8,
    head: [u8; 8],
    body: &[u8],
) -> bool {
    buf.clear();
    let len = head.len() + body.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf.extend_from_slice(&[0; ETH_LEN]);
            write_eth(buf, [0; 6], [0; 6], ETHERTYPE_IPV4);
            push_ipv4_header(buf, s, d, PROTO_ICMP, tos, id, len);
            let at = buf.len();
            buf.extend_from_slice(&head);
            buf.extend_from_slice(body);
            if let Some(m) = buf.get_mut(at..) {
                icmp_checksum(m, None);
            }
            true
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            buf.extend_from_slice(&[0; ETH_LEN]);
            write_eth(buf, [0; 6], [0; 6], ETHERTYPE_IPV6);
            push_ipv6_header(buf, s, d, PROTO_ICMPV6, TTL, len);
            let at = buf.len();
            buf.extend_from_slice(&head);
            buf.extend_from_slice(body);
            if let Some(m) = buf.get_mut(at..) {
                icmp_checksum(m, Some((s, d)));
            }
            true
        }
        _ => false,
    }
}

/// An ARP request or reply, padded to Ethernet's 60-byte minimum.
#[allow(clippy::too_many_arguments)]
pub fn push_arp(
    buf: &mut Vec<u8>,
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) {
    buf.clear();
    buf.extend_from_slice(&[0; ETH_LEN]);
    write_eth(buf, eth_dst, sha, ETHERTYPE_ARP);
    buf.extend_from_slice(&[0, 1, 0x08, 0, 6, 4]);
    buf.extend_from_slice(&op.to_be_bytes());
    buf.extend_from_slice(&sha);
    buf.extend_from_slice(&spa.octets());
    buf.extend_from_slice(&tha);
    buf.extend_from_slice(&tpa.octets());
    buf.resize(60, 0);
}

/// A neighbour solicitation (`advert` false) or advertisement with our link-layer address
/// option, as a whole frame; hop limit 255 (RFC 4861 7.1).
#[allow(clippy::too_many_arguments)]
pub fn push_nd(
    buf: &mut Vec<u8>,
    eth_dst: [u8; 6],
    mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    advert: Option<u8>,
) {
    buf.clear();
    buf.extend_from_slice(&[0; ETH_LEN]);
    write_eth(buf, eth_dst, mac, ETHERTYPE_IPV6);
    push_ipv6_header(buf, src, dst, PROTO_ICMPV6, 255, 32);
    let at = buf.len();
    let (ty, flags, opt) = match advert {
        Some(f) => (ND_NEIGHBOR_ADVERT, f, ND_OPT_TARGET_LL),
        None => (ND_NEIGHBOR_SOLICIT, 0, ND_OPT_SOURCE_LL),
    };
    buf.extend_from_slice(&[ty, 0, 0, 0, flags, 0, 0, 0]);
    buf.extend_from_slice(&target.octets());
    buf.extend_from_slice(&[opt, 1]);
    buf.extend_from_slice(&mac);
    if let Some(m) = buf.get_mut(at..) {
        icmp_checksum(m, Some((src, dst)));
    }
}

/// A neighbour solicitation or advertisement, validated as RFC 4861 7.1 asks.
#[derive(Clone, Copy, Debug)]
pub struct Nd {
    pub advert: bool,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub target: Ipv6Addr,
    /// NA flags byte (router 0x80, solicited 0x40, override 0x20).
    pub flags: u8,
    /// The source (NS) or target (NA) link-layer address option.
    pub lladdr: Option<[u8; 6]>,
}

pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// Whether an IPv6 packet (from its IP header) is a neighbour solicitation or advertisement
/// with no extension headers: the router handles those itself.
pub fn nd_type(ip: &[u8]) -> Option<u8> {
    if ip.get(6) != Some(&PROTO_ICMPV6) {
        return None;
    }
    let ty = *ip.get(40)?;
    matches!(ty, ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT).then_some(ty)
}

/// Parses and validates an NS or NA (from its IPv6 header on). `Err` has the drop reason.
pub fn parse_nd(ip: &[u8]) -> Result<Nd, keepstate_engine::DropReason> {
    use keepstate_engine::DropReason as R;
    let info = ip_info(ip)?;
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (info.src, info.dst) else {
        return Err(R::BadIpVersion);
    };
    // Hop limit 255 proves the sender is on this link: nothing forwarded it.
    if info.ttl != 255 {
        return Err(R::SpoofedSource);
    }
    let msg = ip.get(40..info.len).ok_or(R::Truncated)?;
    if msg.len() < 24 {
        return Err(R::Truncated);
    }
    let pseudo = checksum::pseudo_header(
        &src.octets(),
        &dst.octets(),
        PROTO_ICMPV6,
        u32::try_from(msg.len()).unwrap_or(u32::MAX),
    );
    if !checksum::verifies(checksum::add(pseudo, msg)) {
        return Err(R::BadChecksum);
    }
    let advert = msg.first() == Some(&ND_NEIGHBOR_ADVERT);
    if msg.get(1) != Some(&0) {
        return Err(R::IcmpBadType);
    }
    let target = Ipv6Addr::from(array_at::<16>(msg, 8).ok_or(R::Truncated)?);
    if target.is_multicast() {
        return Err(R::IcmpBadType);
    }
    let flags = msg.get(4).copied().unwrap_or(0);
    let want = if advert {
        ND_OPT_TARGET_LL
    } else {
        ND_OPT_SOURCE_LL
    };
    let mut lladdr = None;
    let mut off = 24;
    while off < msg.len() {
        let ty = *msg.get(off).ok_or(R::Truncated)?;
        let len = usize::from(*msg.get(off + 1).ok_or(R::Truncated)?) * 8;
        if len == 0 || off + len > msg.len() {
            return Err(R::IcmpBadType);
        }
        if ty == want && len == 8 {
            lladdr = array_at::<6>(msg, off + 2);
        }
        off += len;
    }
    if src.is_unspecified() {
        // Duplicate address detection: to the solicited-node group, no source address to
        // learn (RFC 4861 7.1.1).
        let to_group =
            dst.segments()[..6] == [0xff02, 0, 0, 0, 0, 1] && dst.segments()[6] & 0xff00 == 0xff00;
        if advert || !to_group || lladdr.is_some() {
            return Err(R::BadSourceAddress);
        }
    }
    if advert && dst.is_multicast() && flags & NA_SOLICITED != 0 {
        return Err(R::IcmpBadType);
    }
    Ok(Nd {
        advert,
        src,
        dst,
        target,
        flags,
        lladdr,
    })
}

/// Fragments the IPv4 packet `ip` (its header stated length) so that each fragment's IP
/// packet is at most `mtu` bytes (RFC 791 3.2): each is passed to `emit` as a whole frame,
/// `eth` in front. Options without the copy flag stay in the first fragment only. Returns
/// false when it cannot be done (MTU too small for a header and 8 bytes of data).
pub fn fragment_v4(
    eth: &[u8],
    ip: &[u8],
    mtu: usize,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> bool {
    let Ok(info) = ip_info(ip) else {
        return false;
    };
    let hlen = info.l4;
    let (Some(header), Some(data)) = (ip.get(..hlen), ip.get(hlen..info.len)) else {
        return false;
    };
    // Later fragments carry only the options marked "copied", padded to a 4-byte boundary.
    let mut later_opts = [0u8; 40];
    let mut later_len = 0;
    let mut off = 20;
    while off < hlen {
        let Some(&ty) = header.get(off) else { break };
        match ty {
            0 => break,
            1 => off += 1,
            _ => {
                let len = usize::from(header.get(off + 1).copied().unwrap_or(0));
                if len < 2 || off + len > hlen {
                    break;
                }
                if ty & 0x80 != 0 {
                    if let (Some(d), Some(s)) = (
                        later_opts.get_mut(later_len..later_len + len),
                        header.get(off..off + len),
                    ) {
                        d.copy_from_slice(s);
                        later_len += len;
                    }
                }
                off += len;
            }
        }
    }
    let later_hlen = 20 + later_len.div_ceil(4) * 4;
    let frag_field = u16_at(header, 6).unwrap_or(0);
    let base_offset = usize::from(frag_field & 0x1fff) * 8;
    let more_after = frag_field & 0x2000 != 0;
    let mut pos = 0;
    let mut first = true;
    while pos < data.len() {
        let h = if first { hlen } else { later_hlen };
        let room = mtu.saturating_sub(h) / 8 * 8;
        if room == 0 {
            return false;
        }
        let end = (pos + room).min(data.len());
        let last = end == data.len();
        scratch.clear();
        scratch.extend_from_slice(eth);
        let at = scratch.len();
        if first {
            scratch.extend_from_slice(header);
        } else {
            scratch.extend_from_slice(header.get(..20).unwrap_or(&[]));
            scratch.extend_from_slice(later_opts.get(..later_len).unwrap_or(&[]));
            scratch.resize(at + later_hlen, 0);
            if let Some(b) = scratch.get_mut(at) {
                // `later_hlen` is at most 60, so the word count fits the nibble.
                *b = 0x40 | u8::try_from(later_hlen / 4).unwrap_or(5);
            }
        }
        scratch.extend_from_slice(data.get(pos..end).unwrap_or(&[]));
        let total = u16::try_from(h + end - pos).unwrap_or(u16::MAX);
        let offset = u16::try_from((base_offset + pos) / 8).unwrap_or(0) & 0x1fff;
        let mf = if !last || more_after { 0x2000 } else { 0 };
        let flags = (frag_field & 0x4000) | mf | offset;
        if let Some(hd) = scratch.get_mut(at..) {
            if let Some(t) = hd.get_mut(2..4) {
                t.copy_from_slice(&total.to_be_bytes());
            }
            if let Some(f) = hd.get_mut(6..8) {
                f.copy_from_slice(&flags.to_be_bytes());
            }
            ipv4_checksum(hd);
        }
        emit(scratch);
        pos = end;
        first = false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_link_local() {
        let a = link_local([0x02, 0x00, 0x00, 0x00, 0x01, 0x01]);
        assert_eq!(
            a,
            "fe80::ff:fe00:101"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::UNSPECIFIED)
        );
        let b = link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
        assert_eq!(
            b,
            "fe80::5054:ff:fe12:3456"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn ttl_decrement_keeps_the_checksum_right() {
        for ttl in [2u8, 64, 128, 255] {
            let mut h = [
                0x45, 0, 0, 20, 0x12, 0x34, 0x40, 0, ttl, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
            ];
            ipv4_checksum(&mut h);
            decrement_ttl(&mut h);
            assert_eq!(h[8], ttl - 1);
            assert!(checksum::verifies(checksum::add(0, &h)));
        }
    }
}
