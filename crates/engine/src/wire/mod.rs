//! Packet parsing: link layer, IPv4/IPv6 (with extension headers), TCP, UDP, ICMP, ICMPv6.
//!
//! One pass, no allocation, no copies beyond the few header fields the tracker needs. Every
//! read is checked (see `bytes`), so the result for any input is either a parsed view or a
//! [`DropReason`].

mod bytes;
pub mod checksum;

use crate::reason::DropReason;
use bytes::{array_at, u16_at, u32_at, u8_at};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// How the bytes of a captured frame begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, optionally with one or two 802.1Q / 802.1ad tags.
    Ethernet,
    /// Raw IP; the version nibble says IPv4 or IPv6.
    Raw,
    Ipv4,
    Ipv6,
    /// Linux cooked capture v1 (`tcpdump -i any` on older libpcap).
    LinuxSll,
    /// Linux cooked capture v2, which carries the interface index.
    LinuxSll2,
    /// BSD loopback: a 4-byte address family in host byte order.
    Null,
}

impl LinkType {
    /// Every link type, in a fixed order (fuzz corpora pick one by index into this).
    pub const ALL: [LinkType; 7] = [
        LinkType::Ethernet,
        LinkType::Raw,
        LinkType::Ipv4,
        LinkType::Ipv6,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
    ];

    /// Maps a pcap/pcapng LINKTYPE_ value.
    pub fn from_linktype(value: u32) -> Option<LinkType> {
        Some(match value {
            1 => LinkType::Ethernet,
            0 => LinkType::Null,
            12 | 14 | 101 => LinkType::Raw,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// Linux packet type for cooked captures: the packet was sent by this host.
pub const PACKET_OUTGOING: u16 = 4;

/// Link-layer facts that later stages (policy, replay) use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index, from a Linux cooked capture v2.
    pub ifindex: Option<u32>,
    /// Linux packet type (0 host, 1 broadcast, 2 multicast, 3 other host, 4 outgoing).
    pub pkt_type: Option<u16>,
    /// Outermost VLAN identifier, if tagged.
    pub vlan: Option<u16>,
    /// Ethertype (or cooked-capture protocol) of the payload.
    pub ethertype: u16,
    /// Where the network-layer header starts in the frame (to answer with a reject).
    pub ip_offset: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frag {
    Whole,
    First,
    Later,
}

/// An address in the engine's fixed-width form: IPv4 uses the first four bytes.
pub type Addr = [u8; 16];

pub(crate) fn addr_to_ip(family: Family, a: &Addr) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(*a)),
    }
}

/// An IPv4 address as [`Addr`], from its four bytes read as one native-endian word (as
/// [`Fast`] holds them).
#[inline(always)]
pub(crate) fn v4_addr(ne: u32) -> Addr {
    u128::from(u32::from_le_bytes(ne.to_ne_bytes())).to_le_bytes()
}

/// A packet's tuple as seen on the wire (source first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    pub src: Addr,
    pub dst: Addr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
}

impl Key {
    pub(crate) const EMPTY: Key = Key {
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        proto: 0,
        family: 0,
    };
}

/// The table key of a plain TCP or UDP packet, read without validation, only so a batch can
/// prefetch the table lines it will touch. Anything unusual returns `None`; the real parse
/// decides the packet's fate either way.
#[inline(always)]
pub(crate) fn peek_key(link: LinkType, data: &[u8]) -> Option<Key> {
    // Nearly every frame: untagged Ethernet, IPv4 without options, TCP or UDP. All of the
    // key then lies at fixed offsets in the first 38 bytes, read with one length check.
    if let (LinkType::Ethernet, Some(f)) = (link, data.first_chunk::<38>()) {
        // Constant indexes into an array, checked when compiling: the ethertype at 12, the
        // version and header length at 14, the protocol at 23, the addresses at 26 and 30,
        // the ports at 34 and 36.
        let proto = f[23];
        if [f[12], f[13], f[14]] == [0x08, 0x00, 0x45] && (proto == PROTO_TCP || proto == PROTO_UDP)
        {
            let mut k = Key {
                sport: u16::from_be_bytes([f[34], f[35]]),
                dport: u16::from_be_bytes([f[36], f[37]]),
                proto,
                family: 4,
                ..Key::EMPTY
            };
            k.src[..4].copy_from_slice(&[f[26], f[27], f[28], f[29]]);
            k.dst[..4].copy_from_slice(&[f[30], f[31], f[32], f[33]]);
            return Some(k);
        }
    }
    let off = match link {
        LinkType::Ethernet => match u16_at(data, 12)? {
            0x0800 | 0x86dd => 14,
            0x8100 | 0x88a8 => 18,
            _ => return None,
        },
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => 0,
        LinkType::LinuxSll => 16,
        LinkType::LinuxSll2 => 20,
        LinkType::Null => 4,
    };
    let ip = data.get(off..)?;
    let v = u8_at(ip, 0)?;
    let mut k = Key {
        family: 4,
        ..Key::EMPTY
    };
    let l4 = match v >> 4 {
        4 => {
            k.proto = u8_at(ip, 9)?;
            k.src[..4].copy_from_slice(&array_at::<4>(ip, 12)?);
            k.dst[..4].copy_from_slice(&array_at::<4>(ip, 16)?);
            usize::from(v & 0x0f) * 4
        }
        6 => {
            k.family = 6;
            k.proto = u8_at(ip, 6)?;
            k.src = array_at::<16>(ip, 8)?;
            k.dst = array_at::<16>(ip, 24)?;
            40
        }
        _ => return None,
    };
    if k.proto != PROTO_TCP && k.proto != PROTO_UDP {
        return None;
    }
    k.sport = u16_at(ip, l4)?;
    k.dport = u16_at(ip, l4 + 2)?;
    Some(k)
}

/// The common case, parsed and verified in one pass: an untagged Ethernet or raw IPv4 packet
/// without IP options, not fragmented, not cut short, carrying TCP or UDP with valid lengths,
/// valid TCP flags and (when asked) valid checksums.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fast {
    /// The addresses' bytes as they lie, each in one word (`to_ne_bytes` gives them back):
    /// as arrays they were stored a byte at a time.
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    /// Where the IP header starts in the frame.
    pub ip_offset: u16,
    /// The IP datagram length.
    pub len: u32,
    /// For UDP only `sport` and `dport` are set.
    pub tcp: Tcp,
}

/// Parses a packet of the common kind [`Fast`] describes; anything else (including every
/// packet the general parser would reject) returns `None` and takes the general path, which
/// gives the same answer for every packet this accepts. A packet accepted here has the key
/// [`peek_key`] reads, so the batch's prefetch hash is its table hash.
#[inline(always)]
pub(crate) fn parse_fast(link: LinkType, data: &[u8], verify_checksums: bool) -> Option<Fast> {
    let off: u16 = match link {
        LinkType::Ethernet => {
            if u16_at(data, 12)? != 0x0800 {
                return None;
            }
            14
        }
        LinkType::Raw | LinkType::Ipv4 => 0,
        _ => return None,
    };
    let b = data.get(usize::from(off)..)?;
    let h: &[u8; 20] = b.first_chunk::<20>()?;
    // Version 4, no options; whole (only DF may be set).
    if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    let total = u16::from_be_bytes([h[2], h[3]]);
    let l4 = b.get(20..usize::from(total))?;
    let proto = h[9];
    let l4_len = u32::from(total) - 20;
    // Both checksums, the header's and the transport's over `l4` (the bytes it covers),
    // in one pass; the pseudo-header's protocol and length are added here, as
    // `checksum::sum` reads words: as they lie.
    // (A function, not a closure: the closure was compiled out of line.)
    #[inline(always)]
    fn verifies(h: &[u8; 20], l4: &[u8], l4_len: u16) -> bool {
        let (header, sum) = checksum::sums_v4(h, l4);
        header
            && checksum::verifies_fast(
                sum + checksum::word(u16::from(h[9])) + checksum::word(l4_len),
            )
    }
    let tcp = match proto {
        PROTO_TCP => {
            let t: &[u8; 20] = l4.first_chunk::<20>()?;
            let (sport, dport) = (
                u16::from_be_bytes([t[0], t[1]]),
                u16::from_be_bytes([t[2], t[3]]),
            );
            let doff = u32::from(t[12] >> 4) * 4;
            let flags = t[13];
            if doff < 20 || doff > l4_len || !tcp_flags_valid(flags) {
                return None;
            }
            let options = if doff > 20 {
                parse_tcp_options(l4.get(20..doff as usize)?).ok()?
            } else {
                TcpOptions::default()
            };
            if verify_checksums && !verifies(h, l4, total - 20) {
                return None;
            }
            Tcp {
                sport,
                dport,
                seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
                ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
                flags,
                window: u16::from_be_bytes([t[14], t[15]]),
                payload_len: l4_len - doff,
                options,
            }
        }
        PROTO_UDP => {
            let u: &[u8; 8] = l4.first_chunk::<8>()?;
            let (sport, dport) = (
                u16::from_be_bytes([u[0], u[1]]),
                u16::from_be_bytes([u[2], u[3]]),
            );
            let ulen = u16::from_be_bytes([u[4], u[5]]);
            let sum = u16::from_be_bytes([u[6], u[7]]);
            if ulen < 8 || u32::from(ulen) > l4_len {
                return None;
            }
            if verify_checksums {
                // A zero UDP checksum over IPv4 means "none": the header's alone is checked.
                let ok = if sum == 0 {
                    checksum::sums_v4(h, &[]).0
                } else {
                    verifies(h, l4.get(..usize::from(ulen))?, ulen)
                };
                if !ok {
                    return None;
                }
            }
            Tcp {
                sport,
                dport,
                seq: 0,
                ack: 0,
                flags: 0,
                window: 0,
                payload_len: 0,
                options: TcpOptions::default(),
            }
        }
        _ => return None,
    };
    Some(Fast {
        src: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        dst: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        proto,
        ip_offset: off,
        len: u32::from(total),
        tcp,
    })
}

/// `ip` as an [`Addr`] (in its bytes, `Addr::to_ne_bytes` gives them back), when it is of the
/// family whose code (4 or 6) is `family`. A `u128`, aligned, rather than an array beside a
/// family tag (as [`addr_of`] gives): there the array sits at an odd offset, is copied in
/// pieces, and a whole-array read then spans the pieces, which the processor cannot serve
/// from its store queue. Seen in the code generated for a new translated connection; the
/// wall-clock gain was within the benchmark's noise, the instruction count fell by 5.
#[inline(always)]
pub(crate) fn addr_in(ip: IpAddr, family: u8) -> Option<u128> {
    match ip {
        IpAddr::V4(v4) if family == 4 => Some(u128::from(u32::from_ne_bytes(v4.octets()))),
        IpAddr::V6(v6) if family == 6 => Some(u128::from_ne_bytes(v6.octets())),
        _ => None,
    }
}

pub(crate) fn addr_of(ip: IpAddr) -> Option<(Family, Addr)> {
    Some(match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            (Family::V4, a)
        }
        IpAddr::V6(v6) => (Family::V6, v6.octets()),
    })
}

/// The IP layer of a packet.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ip<'a> {
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    /// Final protocol after IPv6 extension headers.
    pub proto: u8,
    /// Bytes the packet counts for: the IP datagram length from the header.
    pub len: u32,
    pub frag: Frag,
    /// Transport bytes present, clipped to the IP length.
    pub l4: &'a [u8],
    /// Length of the transport part according to the IP header.
    pub l4_len: u32,
    /// `l4` holds the whole transport part (the capture did not cut it and it is unfragmented).
    pub l4_complete: bool,
    /// For a fragment: the datagram's identification, and where this piece sits in its
    /// payload (bytes from the start of the transport header).
    pub frag_id: u32,
    pub frag_offset: u32,
}

/// Parses the link layer and returns the IP packet, or `Ok(None)` for a non-IP frame (ARP,
/// LLDP...), which connection tracking does not see.
#[inline(always)]
pub(crate) fn parse_frame<'a>(
    link: LinkType,
    data: &'a [u8],
    wire_len: usize,
    verify_checksums: bool,
    info: &mut LinkInfo,
) -> Result<Option<Ip<'a>>, DropReason> {
    let (ethertype, off) = match link {
        LinkType::Ethernet => {
            let mut et = u16_at(data, 12).ok_or(DropReason::Truncated)?;
            let mut off = 14;
            let mut tags = 0;
            while et == 0x8100 || et == 0x88a8 || et == 0x9100 {
                tags += 1;
                if tags > 2 {
                    return Err(DropReason::TooManyVlanTags);
                }
                let tci = u16_at(data, off).ok_or(DropReason::Truncated)?;
                if info.vlan.is_none() {
                    info.vlan = Some(tci & 0x0fff);
                }
                et = u16_at(data, off + 2).ok_or(DropReason::Truncated)?;
                off += 4;
            }
            (et, off)
        }
        LinkType::LinuxSll => {
            info.pkt_type = Some(u16_at(data, 0).ok_or(DropReason::Truncated)?);
            (u16_at(data, 14).ok_or(DropReason::Truncated)?, 16)
        }
        LinkType::LinuxSll2 => {
            let et = u16_at(data, 0).ok_or(DropReason::Truncated)?;
            info.ifindex = Some(u32_at(data, 4).ok_or(DropReason::Truncated)?);
            info.pkt_type = Some(u16::from(u8_at(data, 10).ok_or(DropReason::Truncated)?));
            if data.len() < 20 {
                return Err(DropReason::Truncated);
            }
            (et, 20)
        }
        LinkType::Null => {
            let fam = array_at::<4>(data, 0).ok_or(DropReason::Truncated)?;
            // Written in the capturing host's byte order; accept either.
            let v = u32::from_le_bytes(fam).min(u32::from_be_bytes(fam));
            let et = match v {
                2 => 0x0800,
                24 | 28 | 30 => 0x86dd,
                _ => 0,
            };
            (et, 4)
        }
        LinkType::Raw => match u8_at(data, 0).map(|b| b >> 4) {
            Some(4) => (0x0800, 0),
            Some(6) => (0x86dd, 0),
            Some(_) => return Err(DropReason::BadIpVersion),
            None => return Err(DropReason::Truncated),
        },
        LinkType::Ipv4 => (0x0800, 0),
        LinkType::Ipv6 => (0x86dd, 0),
    };
    info.ethertype = ethertype;
    // At most 14 + 2 * 4 bytes, so the conversion never saturates.
    info.ip_offset = u16::try_from(off).unwrap_or(u16::MAX);
    let payload = data.get(off..).unwrap_or(&[]);
    let cut = wire_len > data.len();
    match ethertype {
        0x0800 => parse_ipv4(payload, cut, verify_checksums, false).map(Some),
        0x86dd => parse_ipv6(payload, cut, false).map(Some),
        _ => Ok(None),
    }
}

/// Parses an IPv4 header. `cut` says the capture stored fewer bytes than were on the wire;
/// `embedded` relaxes length checks for the packet quoted inside an ICMP error.
#[inline]
pub(crate) fn parse_ipv4(
    b: &[u8],
    cut: bool,
    verify_checksum: bool,
    embedded: bool,
) -> Result<Ip<'_>, DropReason> {
    let vihl = u8_at(b, 0).ok_or(DropReason::Truncated)?;
    if vihl >> 4 != 4 {
        return Err(DropReason::BadIpVersion);
    }
    let hlen = usize::from(vihl & 0x0f) * 4;
    if hlen < 20 {
        return Err(DropReason::BadIpHeaderLength);
    }
    let header = b.get(..hlen).ok_or(if b.len() < 20 {
        DropReason::Truncated
    } else {
        DropReason::BadIpHeaderLength
    })?;
    let total = usize::from(u16_at(header, 2).ok_or(DropReason::Truncated)?);
    if total < hlen {
        return Err(DropReason::BadIpLength);
    }
    let complete = total <= b.len();
    if !complete && !cut && !embedded {
        return Err(DropReason::BadIpLength);
    }
    if verify_checksum && !embedded && !checksum::verifies(checksum::add(0, header)) {
        return Err(DropReason::BadIpChecksum);
    }
    let frag_word = u16_at(header, 6).ok_or(DropReason::Truncated)?;
    let frag_id = u32::from(u16_at(header, 4).ok_or(DropReason::Truncated)?);
    let offset = frag_word & 0x1fff;
    let more = frag_word & 0x2000 != 0;
    let frag = if offset != 0 {
        Frag::Later
    } else if more {
        Frag::First
    } else {
        Frag::Whole
    };
    let proto = u8_at(header, 9).ok_or(DropReason::Truncated)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&array_at::<4>(header, 12).ok_or(DropReason::Truncated)?);
    dst[..4].copy_from_slice(&array_at::<4>(header, 16).ok_or(DropReason::Truncated)?);
    let end = total.min(b.len());
    let l4 = b.get(hlen..end).unwrap_or(&[]);
    let l4_len = u32::try_from(total - hlen).unwrap_or(0);
    Ok(Ip {
        family: Family::V4,
        src,
        dst,
        proto,
        len: u32::try_from(total).unwrap_or(0),
        frag,
        l4,
        l4_len,
        l4_complete: complete && frag == Frag::Whole,
        frag_id,
        frag_offset: u32::from(offset) * 8,
    })
}

/// The longest IPv6 extension-header chain followed before giving up.
const MAX_EXT_HEADERS: usize = 8;

pub(crate) fn parse_ipv6(b: &[u8], cut: bool, embedded: bool) -> Result<Ip<'_>, DropReason> {
    let v = u8_at(b, 0).ok_or(DropReason::Truncated)?;
    if v >> 4 != 6 {
        return Err(DropReason::BadIpVersion);
    }
    if b.len() < 40 {
        return Err(DropReason::Truncated);
    }
    let payload_len = usize::from(u16_at(b, 4).ok_or(DropReason::Truncated)?);
    let total = 40 + payload_len;
    let complete = total <= b.len();
    if !complete && !cut && !embedded {
        return Err(DropReason::BadIpLength);
    }
    let end = total.min(b.len());
    let pkt = b.get(..end).unwrap_or(&[]);
    let src = array_at::<16>(b, 8).ok_or(DropReason::Truncated)?;
    let dst = array_at::<16>(b, 24).ok_or(DropReason::Truncated)?;
    let mut next = u8_at(b, 6).ok_or(DropReason::Truncated)?;
    let mut off = 40usize;
    let mut frag = Frag::Whole;
    let mut frag_id = 0u32;
    let mut frag_offset = 0u32;
    let mut count = 0;
    loop {
        match next {
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let nh = u8_at(pkt, off).ok_or(ext_truncated(complete))?;
                let hl = u8_at(pkt, off + 1).ok_or(ext_truncated(complete))?;
                let len = (usize::from(hl) + 1) * 8;
                if off + len > pkt.len() {
                    return Err(ext_truncated(complete));
                }
                next = nh;
                off += len;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let nh = u8_at(pkt, off).ok_or(ext_truncated(complete))?;
                let fo = u16_at(pkt, off + 2).ok_or(ext_truncated(complete))?;
                if off + 8 > pkt.len() {
                    return Err(ext_truncated(complete));
                }
                let offset = fo >> 3;
                let more = fo & 1 != 0;
                frag_id = u32_at(pkt, off + 4).ok_or(ext_truncated(complete))?;
                frag_offset = u32::from(offset) * 8;
                if offset != 0 {
                    frag = Frag::Later;
                } else if more {
                    frag = Frag::First;
                }
                // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
                next = nh;
                off += 8;
                if frag == Frag::Later {
                    break;
                }
            }
            // Authentication header: (len + 2) * 4 bytes.
            51 => {
                let nh = u8_at(pkt, off).ok_or(ext_truncated(complete))?;
                let hl = u8_at(pkt, off + 1).ok_or(ext_truncated(complete))?;
                let len = (usize::from(hl) + 2) * 4;
                if off + len > pkt.len() {
                    return Err(ext_truncated(complete));
                }
                next = nh;
                off += len;
            }
            _ => break,
        }
        count += 1;
        if count > MAX_EXT_HEADERS {
            return Err(DropReason::Ipv6ExtensionChainTooLong);
        }
    }
    let l4 = pkt.get(off..).unwrap_or(&[]);
    let l4_len = u32::try_from(total.saturating_sub(off)).unwrap_or(0);
    Ok(Ip {
        family: Family::V6,
        src,
        dst,
        proto: next,
        len: u32::try_from(total).unwrap_or(0),
        frag,
        l4,
        l4_len,
        l4_complete: complete && frag == Frag::Whole,
        frag_id,
        frag_offset,
    })
}

fn ext_truncated(complete: bool) -> DropReason {
    if complete {
        DropReason::BadIpv6ExtensionHeader
    } else {
        DropReason::Truncated
    }
}

/// The TCP options the tracker uses. The others it knows (MSS, timestamps) are checked for
/// their lengths and not kept: the parse result is copied about on every packet. Packed in
/// one word, built with shifts: as a struct of small fields it went through memory, written
/// a byte at a time and read back whole, which the processor cannot forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpOptions(u64);

impl TcpOptions {
    const WINDOW_SCALE: u64 = 1 << 8;
    const SACK_PERMITTED: u64 = 1 << 9;
    const SACK_SEEN: u64 = 1 << 10;

    /// The window scale option's shift count (bits 0-7, with bit 8 saying it was sent).
    #[inline(always)]
    pub(crate) fn window_scale(self) -> Option<u8> {
        #[allow(clippy::cast_possible_truncation)]
        (self.0 & Self::WINDOW_SCALE != 0).then_some(self.0 as u8)
    }

    #[inline(always)]
    pub(crate) fn sack_permitted(self) -> bool {
        self.0 & Self::SACK_PERMITTED != 0
    }

    /// The highest right edge among SACK blocks, which counts as the acknowledgement (bits
    /// 32-63, with bit 10 saying there was one).
    #[inline(always)]
    pub(crate) fn sack_max(self) -> Option<u32> {
        #[allow(clippy::cast_possible_truncation)]
        (self.0 & Self::SACK_SEEN != 0).then_some((self.0 >> 32) as u32)
    }

    fn set_window_scale(&mut self, s: u8) {
        self.0 = self.0 & !0xff | u64::from(s) | Self::WINDOW_SCALE;
    }

    fn set_sack_permitted(&mut self) {
        self.0 |= Self::SACK_PERMITTED;
    }

    /// Takes in a SACK block's right edge.
    fn note_sack(&mut self, right: u32) {
        if !self.sack_max().is_some_and(|m| crate::seq::after(m, right)) {
            self.0 = self.0 & 0xffff_ffff | u64::from(right) << 32 | Self::SACK_SEEN;
        }
    }
}

const _: () = assert!(core::mem::size_of::<TcpOptions>() == 8);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: u32,
    pub options: TcpOptions,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum IcmpKind<'a> {
    /// A query or its reply: tracked by identifier. `class` numbers the query kind so echo and
    /// timestamp with the same identifier stay apart.
    Query { id: u16, class: u8, reply: bool },
    /// An error quoting the start of the packet that caused it.
    Error { embedded: &'a [u8] },
    /// Neighbour discovery, router solicitation/advertisement, MLD: never tracked.
    Untracked,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Icmp<'a> {
    pub ty: u8,
    pub code: u8,
    pub kind: IcmpKind<'a>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport<'a> {
    Tcp(Tcp),
    Udp {
        sport: u16,
        dport: u16,
    },
    Icmp(Icmp<'a>),
    /// Tracked by addresses and protocol alone (GRE, ESP, SCTP...).
    Other,
}

#[inline]
fn l4_checksum_ok(ip: &Ip<'_>) -> bool {
    let alen = if ip.family == Family::V4 { 4 } else { 16 };
    let pseudo = checksum::pseudo_header(&ip.src[..alen], &ip.dst[..alen], ip.proto, ip.l4_len);
    checksum::verifies(checksum::add(pseudo, ip.l4))
}

/// Parses the transport header. For a non-first fragment the transport header is elsewhere:
/// the caller handles `Frag::Later` before calling.
#[inline]
pub(crate) fn parse_transport<'a>(
    ip: &Ip<'a>,
    verify_checksums: bool,
    embedded: bool,
) -> Result<Transport<'a>, DropReason> {
    let b = ip.l4;
    let check = verify_checksums && ip.l4_complete && !embedded;
    let short = if ip.frag == Frag::First {
        DropReason::TinyFragment
    } else {
        DropReason::Truncated
    };
    match ip.proto {
        PROTO_TCP => {
            let sport = u16_at(b, 0).ok_or(short)?;
            let dport = u16_at(b, 2).ok_or(short)?;
            let seq = u32_at(b, 4).ok_or(short)?;
            if embedded {
                // An ICMP error quotes at least 8 bytes: ports and sequence number.
                return Ok(Transport::Tcp(Tcp {
                    sport,
                    dport,
                    seq,
                    ack: u32_at(b, 8).unwrap_or(0),
                    flags: u8_at(b, 13).unwrap_or(0),
                    window: 0,
                    payload_len: 0,
                    options: TcpOptions::default(),
                }));
            }
            let ack = u32_at(b, 8).ok_or(short)?;
            let doff = usize::from(u8_at(b, 12).ok_or(short)? >> 4) * 4;
            let flags = u8_at(b, 13).ok_or(short)?;
            let window = u16_at(b, 14).ok_or(short)?;
            if b.len() < 20 {
                return Err(short);
            }
            if doff < 20 || doff as u64 > u64::from(ip.l4_len) {
                return Err(DropReason::TcpBadHeader);
            }
            let opts = b.get(20..doff).ok_or(short)?;
            let options = parse_tcp_options(opts)?;
            if check && !l4_checksum_ok(ip) {
                return Err(DropReason::BadChecksum);
            }
            let payload_len = ip.l4_len - u32::try_from(doff).unwrap_or(0);
            Ok(Transport::Tcp(Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                payload_len,
                options,
            }))
        }
        PROTO_UDP | 136 => {
            let sport = u16_at(b, 0).ok_or(short)?;
            let dport = u16_at(b, 2).ok_or(short)?;
            if embedded {
                return Ok(Transport::Udp { sport, dport });
            }
            let ulen = u16_at(b, 4).ok_or(short)?;
            let sum = u16_at(b, 6).ok_or(short)?;
            if ip.proto == PROTO_UDP
                && ip.frag == Frag::Whole
                && (ulen < 8 || u32::from(ulen) > ip.l4_len)
            {
                return Err(DropReason::UdpBadLength);
            }
            // A zero UDP checksum over IPv4 means "none"; over IPv6 it is not allowed.
            let skip = ip.proto == PROTO_UDP && sum == 0 && ip.family == Family::V4;
            // UDP-Lite (136) covers only part of the datagram; its coverage is not checked.
            if check && !skip && ip.proto == PROTO_UDP {
                let mut sub = *ip;
                sub.l4 = b.get(..usize::from(ulen)).unwrap_or(b);
                sub.l4_len = u32::from(ulen);
                if !l4_checksum_ok(&sub) {
                    return Err(DropReason::BadChecksum);
                }
            }
            Ok(Transport::Udp { sport, dport })
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let v6 = ip.proto == PROTO_ICMPV6;
            let ty = u8_at(b, 0).ok_or(short)?;
            let code = u8_at(b, 1).ok_or(short)?;
            if b.len() < 8 {
                return Err(short);
            }
            let id = u16_at(b, 4).ok_or(short)?;
            if check {
                let ok = if v6 {
                    l4_checksum_ok(ip)
                } else {
                    checksum::verifies(checksum::add(0, b))
                };
                if !ok {
                    return Err(DropReason::BadChecksum);
                }
            }
            let kind = if v6 {
                match ty {
                    128 => IcmpKind::Query {
                        id,
                        class: 0,
                        reply: false,
                    },
                    129 => IcmpKind::Query {
                        id,
                        class: 0,
                        reply: true,
                    },
                    139 => IcmpKind::Query {
                        id,
                        class: 1,
                        reply: false,
                    },
                    140 => IcmpKind::Query {
                        id,
                        class: 1,
                        reply: true,
                    },
                    1..=4 => IcmpKind::Error {
                        embedded: b.get(8..).unwrap_or(&[]),
                    },
                    130..=137 | 143 => IcmpKind::Untracked,
                    _ => return Err(DropReason::IcmpBadType),
                }
            } else {
                match ty {
                    8 => IcmpKind::Query {
                        id,
                        class: 0,
                        reply: false,
                    },
                    0 => IcmpKind::Query {
                        id,
                        class: 0,
                        reply: true,
                    },
                    13 => IcmpKind::Query {
                        id,
                        class: 1,
                        reply: false,
                    },
                    14 => IcmpKind::Query {
                        id,
                        class: 1,
                        reply: true,
                    },
                    15 => IcmpKind::Query {
                        id,
                        class: 2,
                        reply: false,
                    },
                    16 => IcmpKind::Query {
                        id,
                        class: 2,
                        reply: true,
                    },
                    17 => IcmpKind::Query {
                        id,
                        class: 3,
                        reply: false,
                    },
                    18 => IcmpKind::Query {
                        id,
                        class: 3,
                        reply: true,
                    },
                    3 | 4 | 5 | 11 | 12 => IcmpKind::Error {
                        embedded: b.get(8..).unwrap_or(&[]),
                    },
                    _ => return Err(DropReason::IcmpBadType),
                }
            };
            Ok(Transport::Icmp(Icmp { ty, code, kind }))
        }
        _ => Ok(Transport::Other),
    }
}

/// A TCP header's options. The layout nearly every segment of an established connection
/// carries once timestamps are agreed (two NOPs, then the timestamps: RFC 7323, appendix A,
/// as Linux and the BSDs send it) is recognised whole, as Linux's `tcp_fast_parse_options`
/// does; anything else is walked option by option. Out of line: inlined, it made the fast
/// parse around it spill registers.
#[inline(never)]
fn parse_tcp_options(o: &[u8]) -> Result<TcpOptions, DropReason> {
    if let &[1, 1, 8, 10, _, _, _, _, _, _, _, _] = o {
        return Ok(TcpOptions::default());
    }
    walk_tcp_options(o)
}

#[inline(always)]
fn walk_tcp_options(o: &[u8]) -> Result<TcpOptions, DropReason> {
    let mut out = TcpOptions::default();
    let mut i = 0;
    while let Some(&kind) = o.get(i) {
        match kind {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = usize::from(*o.get(i + 1).ok_or(DropReason::TcpBadOption)?);
        // For a length below 2 the range runs backwards and `get` refuses it, as it does
        // one past the end.
        let body = o.get(i + 2..i + len).ok_or(DropReason::TcpBadOption)?;
        match (kind, body) {
            // MSS and timestamps: only their lengths matter here.
            (2, &[_, _]) | (8, &[_, _, _, _, _, _, _, _]) => {}
            (3, &[s]) => out.set_window_scale(s),
            (4, []) => out.set_sack_permitted(),
            (5, blocks) if blocks.len() % 8 == 0 => {
                for block in blocks.chunks_exact(8) {
                    if let Some(right) = u32_at(block, 4) {
                        out.note_sack(right);
                    }
                }
            }
            (2..=5 | 8, _) => return Err(DropReason::TcpBadOption),
            _ => {}
        }
        i += len;
    }
    Ok(out)
}

/// The netfilter flag class of a segment, which indexes the state table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TcpClass {
    Syn = 0,
    SynAck = 1,
    Fin = 2,
    Ack = 3,
    Rst = 4,
    None = 5,
}

pub(crate) fn tcp_class(flags: u8) -> TcpClass {
    if flags & TCP_RST != 0 {
        TcpClass::Rst
    } else if flags & TCP_SYN != 0 {
        if flags & TCP_ACK != 0 {
            TcpClass::SynAck
        } else {
            TcpClass::Syn
        }
    } else if flags & TCP_FIN != 0 {
        TcpClass::Fin
    } else if flags & TCP_ACK != 0 {
        TcpClass::Ack
    } else {
        TcpClass::None
    }
}

/// Flag combinations a real TCP sends (PSH, ECE and CWR are ignored); everything else,
/// including SYN+FIN, SYN+RST, NULL and Xmas, is invalid.
pub(crate) fn tcp_flags_valid(flags: u8) -> bool {
    let f = flags & !(TCP_PSH | TCP_ECE | TCP_CWR);
    matches!(
        f,
        TCP_SYN
            | 0x22 // SYN|URG
            | 0x12 // SYN|ACK
            | TCP_RST
            | 0x14 // RST|ACK
            | 0x11 // FIN|ACK
            | 0x31 // FIN|ACK|URG
            | TCP_ACK
            | 0x30 // ACK|URG
    )
}

#[cfg(test)]
mod option_tests {
    use super::{parse_tcp_options, TcpOptions};
    use crate::reason::DropReason;
    use etherparse::{TcpHeader, TcpOptionElement};

    /// The walker as it was before the timestamps' fast path and the indexed loop: the
    /// reference the parser must agree with on every input.
    fn reference(mut o: &[u8]) -> Result<TcpOptions, DropReason> {
        let mut out = TcpOptions::default();
        while let Some((&kind, rest)) = o.split_first() {
            match kind {
                0 => break,
                1 => {
                    o = rest;
                    continue;
                }
                _ => {}
            }
            let len = usize::from(*rest.first().ok_or(DropReason::TcpBadOption)?);
            if len < 2 || len > o.len() {
                return Err(DropReason::TcpBadOption);
            }
            let body = o.get(2..len).ok_or(DropReason::TcpBadOption)?;
            let be32 = |b: &[u8], at: usize| {
                b.get(at..at + 4)
                    .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            };
            match (kind, body.len()) {
                (2, 2) | (8, 8) => {}
                (3, 1) => out.set_window_scale(body[0]),
                (4, 0) => out.set_sack_permitted(),
                (5, n) if n % 8 == 0 => {
                    for block in body.chunks_exact(8) {
                        if let Some(right) = be32(block, 4) {
                            out.note_sack(right);
                        }
                    }
                }
                (2..=5 | 8, _) => return Err(DropReason::TcpBadOption),
                _ => {}
            }
            o = o.get(len..).unwrap_or(&[]);
        }
        Ok(out)
    }

    /// The options area of a TCP header etherparse builds with `elements`.
    fn built(elements: &[TcpOptionElement]) -> Vec<u8> {
        let mut h = TcpHeader::new(1, 2, 3, 4);
        h.set_options(elements).expect("options fit");
        h.options.as_slice().to_vec()
    }

    #[test]
    fn the_layouts_stacks_send() {
        use TcpOptionElement::*;
        let linux_syn = built(&[
            MaximumSegmentSize(1460),
            SelectiveAcknowledgementPermitted,
            Timestamp(0x0102_0304, 0),
            Noop,
            WindowScale(7),
        ]);
        let got = parse_tcp_options(&linux_syn).expect("valid");
        assert!(got.sack_permitted());
        assert_eq!(got.window_scale(), Some(7));

        let windows_syn = built(&[
            MaximumSegmentSize(1440),
            Noop,
            WindowScale(8),
            Noop,
            Noop,
            SelectiveAcknowledgementPermitted,
        ]);
        let got = parse_tcp_options(&windows_syn).expect("valid");
        assert_eq!(got.window_scale(), Some(8));
        assert!(got.sack_permitted());

        // A segment of an established connection: two NOPs and the timestamps, the layout
        // recognised whole.
        let data = built(&[Noop, Noop, Timestamp(0xfedc_ba98, 0x7654_3210)]);
        assert_eq!(data.len(), 12);
        assert_eq!(parse_tcp_options(&data), Ok(TcpOptions::default()));

        let sack = built(&[
            Noop,
            Noop,
            SelectiveAcknowledgement((10, 20), [Some((30, 40)), None, None]),
        ]);
        assert_eq!(
            parse_tcp_options(&sack).expect("valid").sack_max(),
            Some(40)
        );
    }

    #[test]
    fn malformed_options_are_refused() {
        for bad in [
            &[2, 4, 5][..],             // cut short
            &[2, 1, 0, 0],              // length below 2
            &[3, 4, 7, 0],              // window scale of the wrong length
            &[8, 10, 0, 0, 0, 0, 0, 0], // timestamps cut short
            &[5, 7, 0, 0, 0, 0, 0],     // SACK not whole blocks
            &[1, 1, 8],                 // no length byte
        ] {
            assert_eq!(
                parse_tcp_options(bad),
                Err(DropReason::TcpBadOption),
                "{bad:?}"
            );
        }
        // An unknown option is skipped by its length; after the end of the list nothing is
        // read.
        assert_eq!(
            parse_tcp_options(&[30, 3, 9, 0, 2, 1]),
            Ok(TcpOptions::default())
        );
    }

    #[test]
    fn agrees_with_the_reference_walker_on_any_bytes() {
        // xorshift: deterministic, and no dependency for a few random byte strings.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for _ in 0..200_000 {
            let len = next() % 41;
            let o: Vec<u8> = (0..len)
                .map(|_| {
                    // Mostly kinds, lengths and NOPs that make sense, so that the walk goes
                    // deep; sometimes anything.
                    let [low, ..] = next().to_le_bytes();
                    match next() % 8 {
                        0 => low,
                        1 => 1,
                        2 => 2 + low % 7,
                        _ => low % 12,
                    }
                })
                .collect();
            assert_eq!(parse_tcp_options(&o), reference(&o), "{o:?}");
        }
        // The fast path's layout with every other byte in its place.
        let mut o = vec![1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8];
        for at in 0..4 {
            for v in 0..=255 {
                o[at] = v;
                assert_eq!(parse_tcp_options(&o), reference(&o), "{o:?}");
            }
            o[at] = [1, 1, 8, 10][at];
        }
    }
}
