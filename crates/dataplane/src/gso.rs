//! GSO super-frames and partial checksums, sans-IO (any platform): the virtio-net header
//! a Linux packet socket puts in front of each frame ([`VnetHdr`]), and what the router
//! does with the frames it describes.
//!
//! With offloads on (the default on veth, and wherever GRO runs) the kernel hands a packet
//! socket "super-frames": one TCP or UDP frame of up to 64 KiB that stands for many
//! MTU-sized segments (GSO), and frames whose transport checksum holds only the
//! pseudo-header sum because the checksum was to be finished by hardware
//! (`CHECKSUM_PARTIAL`). Two ways to deal with them:
//!
//! - [`Segmenter`] turns one frame plus its [`VnetHdr`] into the ordinary frames it stands
//!   for, the way the kernel's own `skb_segment`/`skb_checksum_help` would.
//! - [`prepare_super`] keeps a super-frame whole: its transport checksum is completed over
//!   the whole frame (so the firewall verifies and incrementally updates it like any
//!   packet's) and its segment size is returned as [`Gso`], to travel with it
//!   ([`Offload`]) through the router to the egress port, where [`tx_header`] turns it back
//!   into a GSO send: the kernel, or the device, segments it there. That is what the
//!   kernel's own forwarding does with a GRO'd skb.

use std::fmt;

/// Size of `struct virtio_net_hdr` (without the `num_buffers` of the mergeable variant).
pub const VNET_HDR_LEN: usize = 10;

const ETH_HDR_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` as a packet socket writes it in front of each frame.
///
/// Byte order: packet sockets use legacy virtio, whose fields are in the host's byte order
/// (`af_packet.c` passes `vio_le()`, which is `virtio_legacy_is_little_endian()`: true on
/// little-endian hosts). [`VnetHdr::parse`] and [`VnetHdr::to_bytes`] therefore use native
/// byte order, which is little-endian on x86-64 and arm64, and right on big-endian hosts too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// [`VnetHdr::F_NEEDS_CSUM`], [`VnetHdr::F_DATA_VALID`].
    pub flags: u8,
    /// One of the `GSO_*` values, possibly with [`VnetHdr::GSO_ECN`] or'd in.
    pub gso_type: u8,
    /// Length of the headers the kernel counted; a hint only, never trusted here.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where checksumming starts, from the first byte of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The transport checksum holds only the pseudo-header sum and must be completed.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// The checksum was already verified (receive side); nothing to do.
    pub const F_DATA_VALID: u8 = 2;
    /// Not a super-frame.
    pub const GSO_NONE: u8 = 0;
    /// TCP over IPv4 super-frame.
    pub const GSO_TCPV4: u8 = 1;
    /// UDP fragmentation offload (UFO): IP fragments, not produced by current kernels.
    pub const GSO_UDP: u8 = 3;
    /// TCP over IPv6 super-frame.
    pub const GSO_TCPV6: u8 = 4;
    /// UDP segmentation offload (USO, `UDP_SEGMENT`): one UDP datagram per segment.
    pub const GSO_UDP_L4: u8 = 5;
    /// The TCP super-frame carries CWR, which belongs on the first segment only.
    pub const GSO_ECN: u8 = 0x80;

    /// Reads a header from the first [`VNET_HDR_LEN`] bytes, in host byte order (see the
    /// type's documentation). `None` when `b` is too short.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; VNET_HDR_LEN] = b.get(..VNET_HDR_LEN)?.try_into().ok()?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    /// The header's wire form, host byte order.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Whether the frame needs no work at all.
    pub fn is_plain(&self) -> bool {
        self.gso_type == Self::GSO_NONE && self.flags & Self::F_NEEDS_CSUM == 0
    }
}

/// Why a frame's offload metadata could not be honoured; the frame is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffloadError {
    /// Flag bits this code does not know (e.g. `VIRTIO_NET_HDR_F_RSC_INFO`).
    UnknownFlags(u8),
    /// A `gso_type` this code does not know.
    UnknownGsoType(u8),
    /// A known `gso_type` that is not supported (UFO, ECN on UDP, ...).
    Unsupported(&'static str),
    /// `csum_start`/`csum_offset` point outside the frame.
    ChecksumOutOfRange {
        csum_start: u16,
        csum_offset: u16,
        frame_len: usize,
    },
    /// Headers that do not match the metadata, or that do not fit in the frame.
    Malformed(&'static str),
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadError::UnknownFlags(x) => write!(f, "unknown virtio-net header flags {x:#04x}"),
            OffloadError::UnknownGsoType(x) => write!(f, "unknown GSO type {x:#04x}"),
            OffloadError::Unsupported(what) => write!(f, "unsupported offload: {what}"),
            OffloadError::ChecksumOutOfRange { csum_start, csum_offset, frame_len } => write!(
                f,
                "checksum offsets outside the frame (start {csum_start}, offset {csum_offset}, frame {frame_len} bytes)"
            ),
            OffloadError::Malformed(what) => write!(f, "malformed offload frame: {what}"),
        }
    }
}

impl std::error::Error for OffloadError {}

/// Adds `data` to a running one's complement sum, as big-endian 16-bit words. `data` must
/// start at an even offset of the checksummed range (every caller's does). Summing 32-bit
/// words and folding later gives the same result because 2^16 = 1 (mod 2^16 - 1).
fn sum_bytes(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let mut rest = chunks.remainder().chunks(2);
    for c in &mut rest {
        let hi = c.first().copied().unwrap_or(0);
        let lo = c.get(1).copied().unwrap_or(0);
        acc += u64::from(u16::from_be_bytes([hi, lo]));
    }
    acc
}

/// Folds a sum to 16 bits (not complemented).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 bits.
    u16::try_from(acc).unwrap_or(0xffff)
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at.checked_add(1)?)?,
    ]))
}

fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at.checked_add(2)?)?
        .copy_from_slice(&v.to_be_bytes());
    Some(())
}

/// Completes a `CHECKSUM_PARTIAL` checksum in place: the one's complement sum from
/// `csum_start` to the end of the frame (the field holds the pseudo-header sum), stored at
/// `csum_start + csum_offset`. A result of zero is stored as `0xffff`, like the kernel's
/// `skb_checksum_help` (equivalent for TCP, required for UDP).
pub fn complete_checksum(
    frame: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), OffloadError> {
    let err = OffloadError::ChecksumOutOfRange {
        csum_start,
        csum_offset,
        frame_len: frame.len(),
    };
    let start = usize::from(csum_start);
    let at = start
        .checked_add(usize::from(csum_offset))
        .ok_or(err.clone())?;
    match at.checked_add(2) {
        Some(end) if end <= frame.len() => {}
        _ => return Err(err),
    }
    let covered = frame.get(start..).ok_or(err.clone())?;
    let sum = !fold(sum_bytes(0, covered));
    put16(frame, at, if sum == 0 { 0xffff } else { sum }).ok_or(err)
}

/// Where the IP header starts, past any VLAN tags, and its ethertype.
fn network_header(frame: &[u8]) -> Result<(usize, u16), OffloadError> {
    let mut at = 12usize;
    // Bounded: QinQ stacks deeper than a few tags are not something a router forwards.
    for _ in 0..4 {
        let ty = be16(frame, at).ok_or(OffloadError::Malformed(
            "frame shorter than an Ethernet header",
        ))?;
        if matches!(ty, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD) {
            at += 4;
        } else {
            return Ok((at + 2, ty));
        }
    }
    Err(OffloadError::Malformed("too many VLAN tags"))
}

/// Facts about a super-frame's headers, checked against the frame.
struct Layout {
    /// Start of the IP header.
    nh: usize,
    ipv4: bool,
    /// Start of the TCP/UDP header.
    l4: usize,
    tcp: bool,
    /// End of the headers copied into every segment.
    hdrs_len: usize,
}

fn ipv6_transport(frame: &[u8], nh: usize, l4: Option<usize>) -> Result<(usize, u8), OffloadError> {
    let mut next = *frame
        .get(nh + 6)
        .ok_or(OffloadError::Malformed("truncated IPv6 header"))?;
    let mut at = nh + 40;
    // Walks the extension headers the kernel may put between the IPv6 and TCP/UDP headers,
    // bounded in count.
    for _ in 0..8 {
        if matches!(next, IPPROTO_TCP | IPPROTO_UDP) || l4 == Some(at) {
            return Ok((at, next));
        }
        match next {
            0 | 43 | 60 => {
                let len = frame
                    .get(at + 1)
                    .ok_or(OffloadError::Malformed("truncated IPv6 extension header"))?;
                next = *frame
                    .get(at)
                    .ok_or(OffloadError::Malformed("truncated IPv6 extension header"))?;
                at += (usize::from(*len) + 1) * 8;
            }
            44 => return Err(OffloadError::Malformed("IPv6 fragment in a GSO frame")),
            _ => {
                return Err(OffloadError::Malformed(
                    "IPv6 GSO frame is neither TCP nor UDP",
                ))
            }
        }
    }
    Err(OffloadError::Malformed("too many IPv6 extension headers"))
}

fn layout(hdr: &VnetHdr, frame: &[u8], gso: u8) -> Result<Layout, OffloadError> {
    let (nh, ethertype) = network_header(frame)?;
    let ipv4 = match (ethertype, gso) {
        (ETHERTYPE_IPV4, VnetHdr::GSO_TCPV4 | VnetHdr::GSO_UDP_L4) => true,
        (ETHERTYPE_IPV6, VnetHdr::GSO_TCPV6 | VnetHdr::GSO_UDP_L4) => false,
        _ => {
            return Err(OffloadError::Malformed(
                "GSO type does not match the frame's ethertype",
            ))
        }
    };
    let wanted = if gso == VnetHdr::GSO_UDP_L4 {
        IPPROTO_UDP
    } else {
        IPPROTO_TCP
    };
    let given_l4 = (hdr.flags & VnetHdr::F_NEEDS_CSUM != 0).then_some(usize::from(hdr.csum_start));
    let (l4, proto) = if ipv4 {
        let vihl = *frame
            .get(nh)
            .ok_or(OffloadError::Malformed("truncated IPv4 header"))?;
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return Err(OffloadError::Malformed("bad IPv4 version or header length"));
        }
        let proto = *frame
            .get(nh + 9)
            .ok_or(OffloadError::Malformed("truncated IPv4 header"))?;
        (nh + ihl, proto)
    } else {
        if frame.get(nh).map(|b| b >> 4) != Some(6) {
            return Err(OffloadError::Malformed("bad IPv6 version"));
        }
        ipv6_transport(frame, nh, given_l4)?
    };
    if proto != wanted {
        return Err(OffloadError::Malformed(
            "GSO type does not match the IP protocol",
        ));
    }
    if given_l4.is_some_and(|g| g != l4) {
        return Err(OffloadError::Malformed(
            "csum_start is not the transport header",
        ));
    }
    let tcp = proto == IPPROTO_TCP;
    if given_l4.is_some() && usize::from(hdr.csum_offset) != if tcp { 16 } else { 6 } {
        return Err(OffloadError::Malformed(
            "csum_offset is not the transport checksum field",
        ));
    }
    let l4_len = if tcp {
        let off = *frame
            .get(l4 + 12)
            .ok_or(OffloadError::Malformed("truncated TCP header"))?;
        let len = usize::from(off >> 4) * 4;
        if len < 20 {
            return Err(OffloadError::Malformed("TCP data offset below 20 bytes"));
        }
        len
    } else {
        8
    };
    let hdrs_len = l4 + l4_len;
    if hdrs_len > frame.len() {
        return Err(OffloadError::Malformed("headers longer than the frame"));
    }
    Ok(Layout {
        nh,
        ipv4,
        l4,
        tcp,
        hdrs_len,
    })
}

/// Resolves offloads; owns the scratch buffer segments are built in, so that once it has
/// grown to the largest segment no allocation happens per packet.
#[derive(Debug, Default)]
pub struct Segmenter {
    scratch: Vec<u8>,
}

impl Segmenter {
    pub fn new() -> Self {
        Segmenter {
            scratch: Vec::with_capacity(ETH_HDR_LEN + 65_536),
        }
    }

    /// Turns `frame` (as received, with its header `hdr`) into ordinary frames, calling
    /// `emit` for each in order, and returns how many it emitted.
    ///
    /// - No offload: `frame` itself.
    /// - `F_NEEDS_CSUM` without GSO: `frame` with its checksum completed in place.
    /// - GSO TCPv4/TCPv6/UDP_L4: segments of `gso_size` payload bytes built in the scratch
    ///   buffer, with IPv4 total length, incrementing IPv4 id and header checksum, IPv6
    ///   payload length, TCP sequence numbers, FIN/PSH on the last segment only and CWR on
    ///   the first only, UDP length, and full transport checksums.
    ///
    /// On error nothing has been emitted (metadata is checked before the first segment).
    pub fn process(
        &mut self,
        hdr: &VnetHdr,
        frame: &mut [u8],
        mut emit: impl FnMut(&mut [u8]),
    ) -> Result<usize, OffloadError> {
        let known = VnetHdr::F_NEEDS_CSUM | VnetHdr::F_DATA_VALID;
        if hdr.flags & !known != 0 {
            return Err(OffloadError::UnknownFlags(hdr.flags));
        }
        let ecn = hdr.gso_type & VnetHdr::GSO_ECN != 0;
        let gso = hdr.gso_type & !VnetHdr::GSO_ECN;
        match gso {
            VnetHdr::GSO_NONE => {
                if ecn {
                    return Err(OffloadError::Unsupported("ECN flag without GSO"));
                }
                if hdr.flags & VnetHdr::F_NEEDS_CSUM != 0 {
                    complete_checksum(frame, hdr.csum_start, hdr.csum_offset)?;
                }
                emit(frame);
                Ok(1)
            }
            VnetHdr::GSO_TCPV4 | VnetHdr::GSO_TCPV6 => self.segment(hdr, frame, gso, emit),
            VnetHdr::GSO_UDP_L4 if ecn => {
                Err(OffloadError::Unsupported("ECN flag on UDP segmentation"))
            }
            VnetHdr::GSO_UDP_L4 => self.segment(hdr, frame, gso, emit),
            VnetHdr::GSO_UDP => Err(OffloadError::Unsupported("UDP fragmentation offload (UFO)")),
            other => Err(OffloadError::UnknownGsoType(other)),
        }
    }

    /// Cuts `frame`, a super-frame with the segmentation `gso` (as [`prepare_super`] found
    /// it), into its segments, calling `emit` for each in order, as [`Segmenter::process`]
    /// does for a received one: for a router whose egress port cannot take the segments
    /// whole. Every segment gets a full transport checksum, whatever the frame's field holds.
    pub fn segment_gso(
        &mut self,
        frame: &[u8],
        gso: Gso,
        emit: impl FnMut(&mut [u8]),
    ) -> Result<usize, OffloadError> {
        let hdr = VnetHdr {
            gso_type: gso.kind.vnet_type(),
            gso_size: gso.size,
            ..VnetHdr::default()
        };
        self.segment(&hdr, frame, gso.kind.vnet_type(), emit)
    }

    fn segment(
        &mut self,
        hdr: &VnetHdr,
        frame: &[u8],
        gso: u8,
        mut emit: impl FnMut(&mut [u8]),
    ) -> Result<usize, OffloadError> {
        let lay = layout(hdr, frame, gso)?;
        let mss = usize::from(hdr.gso_size);
        if mss == 0 {
            return Err(OffloadError::Malformed("GSO frame with gso_size 0"));
        }
        let (headers, payload) = frame.split_at(lay.hdrs_len);
        let seg_max = lay.hdrs_len + mss.min(payload.len());
        // Every segment's lengths must fit their 16-bit fields; checked once for the largest.
        if u16::try_from(seg_max - lay.nh).is_err() {
            return Err(OffloadError::Malformed(
                "segment longer than an IP packet can be",
            ));
        }
        let ip_id = be16(headers, lay.nh + 4).unwrap_or(0);
        let seq = if lay.tcp {
            let s = headers
                .get(lay.l4 + 4..lay.l4 + 8)
                .ok_or(OffloadError::Malformed("truncated TCP header"))?;
            u32::from_be_bytes([s[0], s[1], s[2], s[3]])
        } else {
            0
        };
        let tcp_flags = if lay.tcp {
            headers.get(lay.l4 + 13).copied().unwrap_or(0)
        } else {
            0
        };
        // The pseudo-header without the length, which changes per segment.
        let pseudo = addrs_sum(headers, &lay);

        self.scratch.clear();
        self.scratch.resize(seg_max, 0);
        let count = payload.len().div_ceil(mss).max(1);
        let mut chunks = payload.chunks(mss);
        for i in 0..count {
            let chunk = chunks.next().unwrap_or(&[]);
            let first = i == 0;
            let last = i + 1 == count;
            let seg_len = lay.hdrs_len + chunk.len();
            let seg = self
                .scratch
                .get_mut(..seg_len)
                .ok_or(OffloadError::Malformed("segment size"))?;
            // The headers are copied afresh for every segment: `emit` may rewrite them in
            // place (a router changes MAC addresses, TTL, NAT), and the next segment must
            // start from what the sender sent.
            seg[..lay.hdrs_len].copy_from_slice(headers);
            seg[lay.hdrs_len..].copy_from_slice(chunk);
            let l4_len = seg_len - lay.l4;
            let bad = || OffloadError::Malformed("segment header rewrite");
            if lay.ipv4 {
                let tot = u16::try_from(seg_len - lay.nh).map_err(|_| bad())?;
                put16(seg, lay.nh + 2, tot).ok_or_else(bad)?;
                let idx = u16::try_from(i & 0xffff).map_err(|_| bad())?;
                put16(seg, lay.nh + 4, ip_id.wrapping_add(idx)).ok_or_else(bad)?;
                put16(seg, lay.nh + 10, 0).ok_or_else(bad)?;
                let ihl = lay.l4 - lay.nh;
                let c = !fold(sum_bytes(0, seg.get(lay.nh..lay.nh + ihl).ok_or_else(bad)?));
                put16(seg, lay.nh + 10, c).ok_or_else(bad)?;
            } else {
                let plen = u16::try_from(seg_len - lay.nh - 40).map_err(|_| bad())?;
                put16(seg, lay.nh + 4, plen).ok_or_else(bad)?;
            }
            let csum_at = if lay.tcp {
                let off = u32::try_from(i * mss).map_err(|_| bad())?;
                seg.get_mut(lay.l4 + 4..lay.l4 + 8)
                    .ok_or_else(bad)?
                    .copy_from_slice(&seq.wrapping_add(off).to_be_bytes());
                let mut fl = tcp_flags;
                if !last {
                    fl &= !(TCP_FIN | TCP_PSH);
                }
                if !first {
                    fl &= !TCP_CWR;
                }
                *seg.get_mut(lay.l4 + 13).ok_or_else(bad)? = fl;
                lay.l4 + 16
            } else {
                put16(seg, lay.l4 + 4, u16::try_from(l4_len).map_err(|_| bad())?)
                    .ok_or_else(bad)?;
                lay.l4 + 6
            };
            put16(seg, csum_at, 0).ok_or_else(bad)?;
            let len_word = u64::try_from(l4_len).map_err(|_| bad())?;
            let sum = !fold(sum_bytes(
                pseudo + len_word,
                seg.get(lay.l4..).ok_or_else(bad)?,
            ));
            // UDP reserves zero for "no checksum"; its one's complement twin stands in.
            let sum = if sum == 0 && !lay.tcp { 0xffff } else { sum };
            put16(seg, csum_at, sum).ok_or_else(bad)?;
            emit(seg);
        }
        Ok(count)
    }
}

/// The kind of super-frame a frame is, which says how it is cut into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4: segments of `size` payload bytes with advancing sequence numbers.
    TcpV4,
    /// TCP over IPv6.
    TcpV6,
    /// UDP segmentation (`UDP_SEGMENT`), IPv4 or IPv6: one datagram per `size` bytes.
    UdpL4,
}

impl GsoKind {
    /// The `gso_type` of the virtio-net header, without [`VnetHdr::GSO_ECN`].
    pub fn vnet_type(self) -> u8 {
        match self {
            GsoKind::TcpV4 => VnetHdr::GSO_TCPV4,
            GsoKind::TcpV6 => VnetHdr::GSO_TCPV6,
            GsoKind::UdpL4 => VnetHdr::GSO_UDP_L4,
        }
    }

    /// The kind for a `gso_type` (the ECN bit ignored); `None` for anything not kept whole.
    pub fn from_vnet(gso_type: u8) -> Option<GsoKind> {
        match gso_type & !VnetHdr::GSO_ECN {
            VnetHdr::GSO_TCPV4 => Some(GsoKind::TcpV4),
            VnetHdr::GSO_TCPV6 => Some(GsoKind::TcpV6),
            VnetHdr::GSO_UDP_L4 => Some(GsoKind::UdpL4),
            _ => None,
        }
    }

    fn is_tcp(self) -> bool {
        matches!(self, GsoKind::TcpV4 | GsoKind::TcpV6)
    }
}

/// A super-frame's segmentation: its kind and the payload bytes per segment (the MSS for
/// TCP, the datagram payload for UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Gso {
    pub kind: GsoKind,
    pub size: u16,
}

/// What travels with a frame besides its bytes: whether it is a GSO super-frame. A
/// super-frame's transport checksum is always complete (over the whole frame) while it is
/// in the router's hands; it becomes a partial one only on the way out ([`tx_header`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Offload {
    pub gso: Option<Gso>,
}

impl Offload {
    /// An ordinary frame.
    pub const NONE: Offload = Offload { gso: None };

    /// A super-frame of `kind` cut into segments of `size` payload bytes.
    pub fn gso(kind: GsoKind, size: u16) -> Offload {
        Offload {
            gso: Some(Gso { kind, size }),
        }
    }
}

/// The one's complement sum of the pseudo-header's addresses and protocol, without the
/// transport length (which differs between a super-frame and its segments).
fn addrs_sum(frame: &[u8], lay: &Layout) -> u64 {
    let (src, dst): (&[u8], &[u8]) = if lay.ipv4 {
        (
            frame.get(lay.nh + 12..lay.nh + 16).unwrap_or(&[]),
            frame.get(lay.nh + 16..lay.nh + 20).unwrap_or(&[]),
        )
    } else {
        (
            frame.get(lay.nh + 8..lay.nh + 24).unwrap_or(&[]),
            frame.get(lay.nh + 24..lay.nh + 40).unwrap_or(&[]),
        )
    };
    let proto = if lay.tcp { IPPROTO_TCP } else { IPPROTO_UDP };
    sum_bytes(sum_bytes(u64::from(proto), src), dst)
}

/// Where the transport checksum field is.
fn csum_field(lay: &Layout) -> usize {
    lay.l4 + if lay.tcp { 16 } else { 6 }
}

/// A super-frame as received, checked and made ready to be forwarded whole: its transport
/// checksum is completed over the whole frame in place (from the partial sum when
/// `F_NEEDS_CSUM` says the field holds one, computed afresh otherwise). Returns the frame's
/// [`Offload`]: `Offload::NONE` when the frame holds no more than one segment's payload
/// (it is then an ordinary frame with a full checksum).
///
/// `Err` when the frame cannot be kept whole: metadata not understood, headers that do not
/// match it, or IP (and UDP) lengths that do not describe the whole frame (Linux's BIG
/// TCP, beyond 64 KiB, leaves them zero). The frame is then untouched (every check comes
/// before the checksum is written), and [`Segmenter::process`] may still handle it.
pub fn prepare_super(hdr: &VnetHdr, frame: &mut [u8]) -> Result<Offload, OffloadError> {
    let known = VnetHdr::F_NEEDS_CSUM | VnetHdr::F_DATA_VALID;
    if hdr.flags & !known != 0 {
        return Err(OffloadError::UnknownFlags(hdr.flags));
    }
    let ecn = hdr.gso_type & VnetHdr::GSO_ECN != 0;
    let Some(kind) = GsoKind::from_vnet(hdr.gso_type) else {
        return Err(OffloadError::UnknownGsoType(hdr.gso_type));
    };
    if ecn && !kind.is_tcp() {
        return Err(OffloadError::Unsupported("ECN flag on UDP segmentation"));
    }
    if hdr.gso_size == 0 {
        return Err(OffloadError::Malformed("GSO frame with gso_size 0"));
    }
    let lay = layout(hdr, frame, kind.vnet_type())?;
    let len_err = OffloadError::Malformed("IP length does not describe the super-frame");
    let ip_len = frame.len() - lay.nh;
    let stated = if lay.ipv4 {
        be16(frame, lay.nh + 2).map(usize::from)
    } else {
        be16(frame, lay.nh + 4).map(|p| usize::from(p) + 40)
    };
    if stated != Some(ip_len) {
        return Err(len_err);
    }
    let l4_len = frame.len() - lay.l4;
    if !lay.tcp && be16(frame, lay.l4 + 4).map(usize::from) != Some(l4_len) {
        return Err(OffloadError::Malformed(
            "UDP length does not describe the super-frame",
        ));
    }
    let at = csum_field(&lay);
    if hdr.flags & VnetHdr::F_NEEDS_CSUM != 0 {
        // `layout` checked that csum_start/csum_offset are exactly this field.
        complete_checksum(frame, hdr.csum_start, hdr.csum_offset)?;
    } else {
        let bad = || OffloadError::Malformed("checksum field outside the frame");
        put16(frame, at, 0).ok_or_else(bad)?;
        let len_word = u64::try_from(l4_len).map_err(|_| bad())?;
        let covered = frame.get(lay.l4..).ok_or_else(bad)?;
        let sum = !fold(sum_bytes(addrs_sum(frame, &lay) + len_word, covered));
        put16(frame, at, if sum == 0 { 0xffff } else { sum }).ok_or_else(bad)?;
    }
    if frame.len() - lay.hdrs_len <= usize::from(hdr.gso_size) {
        return Ok(Offload::NONE);
    }
    Ok(Offload::gso(kind, hdr.gso_size))
}

fn layout_for(frame: &[u8], gso: Gso) -> Result<Layout, OffloadError> {
    let hdr = VnetHdr {
        gso_type: gso.kind.vnet_type(),
        gso_size: gso.size,
        ..VnetHdr::default()
    };
    layout(&hdr, frame, gso.kind.vnet_type())
}

/// The IP length of the longest segment `frame` would be cut into (headers plus `size`
/// payload bytes, or the whole packet when shorter): what must fit the egress MTU. `None`
/// when the frame's headers do not match `gso`.
pub fn segment_ip_len(frame: &[u8], gso: Gso) -> Option<usize> {
    if gso.size == 0 {
        return None;
    }
    let lay = layout_for(frame, gso).ok()?;
    let payload = frame.len() - lay.hdrs_len;
    Some(lay.hdrs_len - lay.nh + payload.min(usize::from(gso.size)))
}

/// The virtio-net header for sending `frame`, a super-frame with a complete transport
/// checksum, as one GSO send: `F_NEEDS_CSUM` with `csum_start` at the transport header and
/// `csum_offset` at its checksum field, `hdr_len` covering the headers, the `gso_type`
/// (with [`VnetHdr::GSO_ECN`] when the TCP header carries CWR, which the kernel then keeps
/// on the first segment only) and `gso_size`.
///
/// The checksum field is rewritten in place to what the kernel expects of
/// `CHECKSUM_PARTIAL`: the folded pseudo-header sum (not complemented) of the frame's
/// addresses, protocol and whole transport length, as `tcp_v4_send_check` leaves it
/// (`~tcp_v4_check(len, saddr, daddr, 0)`); whoever segments the frame adds each
/// segment's data to it.
pub fn tx_header(frame: &mut [u8], gso: Gso) -> Result<VnetHdr, OffloadError> {
    if gso.size == 0 {
        return Err(OffloadError::Malformed("GSO frame with gso_size 0"));
    }
    let lay = layout_for(frame, gso)?;
    let bad = || OffloadError::Malformed("super-frame too long for its headers' fields");
    let l4_len = u64::try_from(frame.len() - lay.l4).map_err(|_| bad())?;
    if l4_len > 0xffff {
        return Err(bad());
    }
    let pseudo = fold(addrs_sum(frame, &lay) + l4_len);
    let at = csum_field(&lay);
    put16(frame, at, pseudo).ok_or_else(bad)?;
    let cwr = lay.tcp && frame.get(lay.l4 + 13).is_some_and(|f| f & TCP_CWR != 0);
    Ok(VnetHdr {
        flags: VnetHdr::F_NEEDS_CSUM,
        gso_type: gso.kind.vnet_type() | if cwr { VnetHdr::GSO_ECN } else { 0 },
        hdr_len: u16::try_from(lay.hdrs_len).map_err(|_| bad())?,
        gso_size: gso.size,
        csum_start: u16::try_from(lay.l4).map_err(|_| bad())?,
        csum_offset: if lay.tcp { 16 } else { 6 },
    })
}
