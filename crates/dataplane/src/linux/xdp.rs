//! AF_XDP: one XDP socket per receive queue of an interface, with its own UMEM, fed by a
//! minimal XDP program that redirects every frame of a queue to the socket bound there.
//!
//! The program is loaded with bpf(2) directly (no libbpf): an XSKMAP with one entry per
//! receive queue and five hand-assembled instructions,
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)      ; ctx->rx_queue_index
//! r1 = <map>                  ; BPF_LD_IMM64 with BPF_PSEUDO_MAP_FD
//! r3 = XDP_PASS               ; what bpf_redirect_map returns for an empty slot
//! call bpf_redirect_map
//! exit
//! ```
//!
//! so a queue without a socket hands its frames to the kernel as if nothing were attached.
//! It is attached through a BPF link (BPF_LINK_CREATE): the attachment lives exactly as
//! long as the link's descriptor, which [`XdpProgram`] holds, so a process that dies leaves
//! no program behind. Native (driver) mode is tried first and generic (skb) mode taken
//! when the driver refuses; [`XdpProgram::mode`] says which.
//!
//! Limits, by design of this small backend:
//! - No multi-buffer (`XDP_USE_SG` is not requested): a frame larger than a UMEM frame
//!   ([`XdpConfig::frame_size`]) cannot arrive; the kernel drops it. With the default 4 KiB
//!   frames that is anything above an MTU of about 3.5 KiB (native mode keeps headroom).
//! - No offload metadata: XDP sees frames as they are in memory, so every frame received
//!   has [`Offload::NONE`]. Frames that never were on a wire (a veth peer's, which the
//!   sending stack left `CHECKSUM_PARTIAL`) carry only the pseudo-header sum in their TCP
//!   or UDP checksum field, and nothing says so: [`complete_partial_checksum`] recognises
//!   that value and completes the checksum, for every frame received. A frame corrupted
//!   on a wire so that its field happens to equal that sum (one in 65536 corrupted
//!   frames, after the NIC's own checks) would be "repaired" too.
//! - A VLAN tag the sender left in metadata (a veth peer's 802.1Q device with
//!   `tx-vlan-offload`) is not in the frame XDP sees, so it is lost. A GSO super-frame handed to [`XdpSocket::send_offloaded`] (one
//!   that came in through a packet socket, say) is cut into segments here.
//! - Attaching XDP to a veth stops the kernel doing GSO towards it (its peer loses
//!   software GSO), so on veth links no super-frames are lost by this.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::iface::{
    gone_or, last_errno, poll_one, set_opt, take_socket_error, IfInfo, IoError, IoErrorKind,
};
use super::offload::{complete_checksum, Offload, Segmenter};

const CAP_BPF: &str = "CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN)";
const CAP_XSK: &str = "CAP_NET_RAW";

// bpf(2) commands, types and helpers (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `BPF_XDP` of `enum bpf_attach_type`.
const BPF_XDP: u32 = 37;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;
/// `offsetof(struct xdp_md, rx_queue_index)`.
const XDP_MD_RX_QUEUE_INDEX: i16 = 16;
// include/uapi/linux/if_link.h
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `ETHTOOL_GCHANNELS` (include/uapi/linux/ethtool.h).
const ETHTOOL_GCHANNELS: u32 = 0x3c;
/// `sizeof(union bpf_attr)` as of the commands used here; the kernel zero-fills the rest.
const BPF_ATTR_LEN: usize = 144;
const BPF_ATTR_LEN_UINT: libc::c_uint = 144;
const _: () = assert!(BPF_ATTR_LEN_UINT as usize == BPF_ATTR_LEN);
const AF_XDP_U16: u16 = 44;
const _: () = assert!(AF_XDP_U16 as libc::c_int == libc::AF_XDP);
/// Completions and TX descriptors handled per batch.
const TX_KICK_TRIES: usize = 256;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`), before any socket buffer exists.
    Native,
    /// In the core network stack (`XDP_FLAGS_SKB_MODE`), for drivers without XDP: works
    /// everywhere but saves little over a packet socket.
    Generic,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

/// How an [`XdpProgram`] and its [`XdpSocket`]s are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// UMEM frames per socket, half for receiving and half for sending; even, at least 2.
    pub frame_count: u32,
    /// Bytes per UMEM frame: a power of two from 2048 to the page size. The largest frame
    /// that can be received or sent (no multi-buffer).
    pub frame_size: u32,
    /// `None`: native mode, else generic. `Some`: only that mode.
    pub mode: Option<XdpMode>,
    /// Try a zero-copy bind (the driver DMAs into the UMEM) before a copying one.
    pub zero_copy: bool,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            frame_count: 4096,
            frame_size: 4096,
            mode: None,
            zero_copy: true,
        }
    }
}

/// Counters of one socket; the `kernel_*` ones are the kernel's `XDP_STATISTICS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpStats {
    /// Frames read from the receive ring and handed to the caller.
    pub frames_received: u64,
    /// Receive descriptors that did not describe a frame in our UMEM (never expected).
    pub rx_invalid: u64,
    /// Received TCP/UDP frames whose checksum field held the pseudo-header sum of a
    /// `CHECKSUM_PARTIAL` packet, completed here.
    pub checksums_completed: u64,
    /// Frames put on the transmit ring (segments counted one by one).
    pub frames_sent: u64,
    /// GSO super-frames cut into segments before sending.
    pub gso_segmented: u64,
    /// Frames not sent: empty, larger than a UMEM frame or the MTU, or a super-frame whose
    /// headers do not match its offload.
    pub send_rejected: u64,
    /// Times a send stopped early because every transmit frame was in flight.
    pub send_backpressure: u64,
    /// Frames the kernel dropped for want of room in the receive ring or fill ring.
    pub kernel_rx_dropped: u64,
    pub kernel_rx_ring_full: u64,
    pub kernel_rx_fill_ring_empty: u64,
    pub kernel_rx_invalid_descs: u64,
    pub kernel_tx_invalid_descs: u64,
}

/// A memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mmap {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, unmapped once; nothing borrows
        // the memory past the owner's lifetime.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A `union bpf_attr`, filled field by field at the offsets of the uapi header.
#[repr(C, align(8))]
struct BpfAttr([u8; BPF_ATTR_LEN]);

impl BpfAttr {
    fn new() -> BpfAttr {
        BpfAttr([0; BPF_ATTR_LEN])
    }

    fn put(&mut self, off: usize, bytes: &[u8]) -> &mut Self {
        if let Some(d) = self.0.get_mut(off..off + bytes.len()) {
            d.copy_from_slice(bytes);
        }
        self
    }

    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.put(off, &v.to_ne_bytes())
    }

    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.put(off, &v.to_ne_bytes())
    }
}

/// bpf(2); the new descriptor (or 0) or the errno.
fn bpf(cmd: libc::c_long, attr: &mut BpfAttr) -> Result<libc::c_long, i32> {
    // SAFETY: attr is an 8-aligned buffer of BPF_ATTR_LEN bytes laid out as the bpf_attr
    // member cmd reads; every pointer stored in it points at memory the caller keeps alive
    // across this call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut BpfAttr).cast::<libc::c_void>(),
            BPF_ATTR_LEN_UINT,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

fn owned_fd(r: libc::c_long) -> Option<OwnedFd> {
    let fd = RawFd::try_from(r).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: fd is a descriptor bpf(2) just created for us and nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One eBPF instruction (`struct bpf_insn`): the register nibbles' order follows the
/// bitfield layout of the host's byte order.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let regs = if cfg!(target_endian = "little") {
        (dst & 0xf) | (src << 4)
    } else {
        (dst << 4) | (src & 0xf)
    };
    let o = off.to_ne_bytes();
    let i = imm.to_ne_bytes();
    [code, regs, o[0], o[1], i[0], i[1], i[2], i[3]]
}

/// The redirecting program for the XSKMAP `map_fd`.
fn program(map_fd: RawFd) -> [[u8; 8]; 6] {
    [
        // BPF_LDX | BPF_MEM | BPF_W: r2 = *(u32 *)(r1 + rx_queue_index)
        insn(0x61, 2, 1, XDP_MD_RX_QUEUE_INDEX, 0),
        // BPF_LD | BPF_DW | BPF_IMM, two slots: r1 = map
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // BPF_ALU64 | BPF_MOV | BPF_K: r3 = XDP_PASS (returned when the slot is empty)
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // BPF_JMP | BPF_CALL
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // BPF_JMP | BPF_EXIT
        insn(0x95, 0, 0, 0, 0),
    ]
}

fn config_error(name: &str, what: String) -> IoError {
    IoError::new(name, IoErrorKind::InvalidConfig, what, None)
}

/// The number of receive queues of `iface` (at least 1): ETHTOOL_GCHANNELS, which asks
/// the namespace the calling thread is in, else `/sys/class/net/IF/queues/rx-*` when sysfs
/// shows this very interface, else 1.
pub fn rx_queues(iface: &IfInfo) -> u32 {
    channels(&iface.name)
        .or_else(|| sysfs_queues(iface))
        .unwrap_or(1)
        .max(1)
}

fn channels(name: &str) -> Option<u32> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    // SAFETY: ifreq is plain data; all zeroes is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, &s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = libc::c_char::from_ne_bytes([s]);
    }
    req.ifr_ifru.ifru_data = ch.as_mut_ptr().cast();
    // SAFETY: socket() takes no pointers; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: raw is a fresh descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS reads the name from req and writes a
    // struct ethtool_channels (9 u32s) through ifru_data, which points at `ch`, alive and
    // exclusively borrowed for the call.
    let r = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL as _,
            &mut req as *mut libc::ifreq,
        )
    };
    if r < 0 {
        return None;
    }
    let n = ch[5].max(ch[8]);
    (n > 0).then_some(n)
}

fn sysfs_queues(iface: &IfInfo) -> Option<u32> {
    let dir = format!("/sys/class/net/{}", iface.name);
    let idx = std::fs::read_to_string(format!("{dir}/ifindex")).ok()?;
    if idx.trim().parse::<u32>().ok()? != iface.ifindex {
        return None;
    }
    let n = std::fs::read_dir(format!("{dir}/queues"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// The XDP program on one interface, with its XSKMAP. Detached when dropped (the link's
/// descriptor closes), which [`XdpSocket`]s delay by holding it in an `Arc`.
#[derive(Debug)]
pub struct XdpProgram {
    // Field order is drop order: the link (the attachment) goes first.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    name: String,
    ifindex: u32,
    mode: XdpMode,
    queues: u32,
}

impl XdpProgram {
    /// Creates the XSKMAP (one slot per receive queue, [`rx_queues`]), loads the program
    /// and attaches it to `iface`: native mode unless refused (or `cfg.mode` says
    /// otherwise), else generic. Fails (EBUSY) when another program is attached there.
    pub fn attach(iface: &IfInfo, cfg: &XdpConfig) -> Result<Arc<XdpProgram>, IoError> {
        let name = iface.name.as_str();
        let queues = rx_queues(iface);

        let mut map_name = [0u8; 16];
        for (d, s) in map_name.iter_mut().zip(b"keepstate_xsks") {
            *d = *s;
        }
        let mut attr = BpfAttr::new();
        attr.u32(0, BPF_MAP_TYPE_XSKMAP)
            .u32(4, 4)
            .u32(8, 4)
            .u32(12, queues)
            .put(28, &map_name);
        let map = bpf(BPF_MAP_CREATE, &mut attr)
            .map_err(|e| {
                let what = if e == libc::EINVAL {
                    "creating the XSKMAP (bpf BPF_MAP_CREATE; kernel without CONFIG_XDP_SOCKETS?)"
                } else {
                    "creating the XDP socket map (bpf BPF_MAP_CREATE)"
                };
                bpf_error(name, what, e)
            })
            .and_then(|r| {
                owned_fd(r).ok_or_else(|| config_error(name, "bpf returned no map".into()))
            })?;

        let insns = program(map.as_raw_fd());
        let license = b"Dual MIT/GPL\0";
        let mut prog_name = [0u8; 16];
        for (d, s) in prog_name.iter_mut().zip(b"keepstate_xsk") {
            *d = *s;
        }
        let mut log = vec![0u8; 0];
        let mut prog = None;
        let mut last = 0;
        // The second try asks for the verifier's log, for the error message.
        for log_level in [0u32, 1] {
            if log_level == 1 {
                log = vec![0u8; 16 * 1024];
            }
            let mut attr = BpfAttr::new();
            attr.u32(0, BPF_PROG_TYPE_XDP)
                .u32(4, u32::try_from(insns.len()).unwrap_or(0))
                .u64(8, insns.as_ptr() as u64)
                .u64(16, license.as_ptr() as u64)
                .u32(24, log_level)
                .u32(28, u32::try_from(log.len()).unwrap_or(0))
                .u64(
                    32,
                    if log.is_empty() {
                        0
                    } else {
                        log.as_mut_ptr() as u64
                    },
                )
                .put(48, &prog_name)
                .u32(68, BPF_XDP);
            match bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(r) => {
                    prog = owned_fd(r);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let Some(prog) = prog else {
            let msg = String::from_utf8_lossy(&log);
            let msg = msg.trim_end_matches('\0').trim();
            let what = if msg.is_empty() {
                "loading the XDP program (bpf BPF_PROG_LOAD)".to_owned()
            } else {
                format!("loading the XDP program (bpf BPF_PROG_LOAD; verifier: {msg})")
            };
            return Err(bpf_error(name, &what, last));
        };

        let modes: &[XdpMode] = match cfg.mode {
            None => &[XdpMode::Native, XdpMode::Generic],
            Some(XdpMode::Native) => &[XdpMode::Native],
            Some(XdpMode::Generic) => &[XdpMode::Generic],
        };
        let mut refused = Vec::new();
        for &mode in modes {
            let flags = match mode {
                XdpMode::Native => XDP_FLAGS_DRV_MODE,
                XdpMode::Generic => XDP_FLAGS_SKB_MODE,
            };
            let prog_fd = u32::try_from(prog.as_raw_fd()).unwrap_or(0);
            let mut attr = BpfAttr::new();
            attr.u32(0, prog_fd)
                .u32(4, iface.ifindex)
                .u32(8, BPF_XDP)
                .u32(12, flags);
            match bpf(BPF_LINK_CREATE, &mut attr) {
                Ok(r) => {
                    let Some(link) = owned_fd(r) else {
                        return Err(config_error(name, "bpf returned no link".into()));
                    };
                    return Ok(Arc::new(XdpProgram {
                        _link: link,
                        _prog: prog,
                        map,
                        name: name.to_owned(),
                        ifindex: iface.ifindex,
                        mode,
                        queues,
                    }));
                }
                // Another program is there: no other mode would change that.
                Err(libc::EBUSY) => {
                    return Err(IoError::new(
                        name,
                        IoErrorKind::Os,
                        "attaching the XDP program: another XDP program is attached \
                         (`ip link set dev IF xdp off` removes one not held by a link)",
                        Some(libc::EBUSY),
                    ))
                }
                Err(e @ (libc::EPERM | libc::EACCES | libc::ENODEV)) => {
                    return Err(bpf_error(name, "attaching the XDP program", e))
                }
                Err(e) => refused.push((mode, e)),
            }
        }
        let (mode, e) = refused.last().copied().unwrap_or((XdpMode::Generic, 0));
        Err(bpf_error(
            name,
            &format!("attaching the XDP program ({mode} mode, after trying {modes:?})"),
            e,
        ))
    }

    /// How the program is attached.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// Receive queues the map has slots for.
    pub fn queues(&self) -> u32 {
        self.queues
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Points slot `queue` of the map at the XDP socket `fd`.
    fn insert(&self, queue: u32, fd: RawFd) -> Result<(), IoError> {
        let key = queue;
        let value = u32::try_from(fd).unwrap_or(u32::MAX);
        let mut attr = BpfAttr::new();
        attr.u32(0, u32::try_from(self.map.as_raw_fd()).unwrap_or(u32::MAX))
            .u64(8, (&key as *const u32) as u64)
            .u64(16, (&value as *const u32) as u64)
            .u64(24, 0);
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(|_| ())
            .map_err(|e| bpf_error(&self.name, "adding the socket to the XSKMAP", e))
    }
}

fn bpf_error(name: &str, what: &str, errno: i32) -> IoError {
    match errno {
        libc::EPERM | libc::EACCES => IoError::os(name, what, CAP_BPF, errno),
        libc::ENOSYS => IoError::new(
            name,
            IoErrorKind::Os,
            format!("{what}: no bpf(2) in this kernel (CONFIG_BPF_SYSCALL)"),
            Some(errno),
        ),
        _ => IoError::os(name, what, CAP_BPF, errno),
    }
}

/// One of the four rings of an XDP socket, mapped: its producer and consumer indices
/// (shared with the kernel), flags, and entries of `entry` bytes.
#[derive(Debug)]
struct XskRing {
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    desc: *mut u8,
    size: u32,
    entry: usize,
    /// Our own index (producer of a ring we fill, consumer of one we read), as last
    /// published or not yet published.
    local: u32,
    /// The kernel's index as last read.
    remote: u32,
}

impl XskRing {
    /// Maps the ring at page offset `pgoff` whose layout `off` describes.
    fn map(
        fd: &OwnedFd,
        name: &str,
        off: &libc::xdp_ring_offset,
        pgoff: u64,
        size: u32,
        entry: usize,
        what: &str,
    ) -> Result<XskRing, IoError> {
        let desc_off = usize::try_from(off.desc)
            .map_err(|_| config_error(name, "ring offset out of range".into()))?;
        let len = (size as usize)
            .checked_mul(entry)
            .and_then(|l| l.checked_add(desc_off))
            .ok_or_else(|| config_error(name, "ring too large".into()))?;
        for o in [off.producer, off.consumer, off.flags] {
            if o.checked_add(4).is_none_or(|e| e > off.desc) {
                return Err(config_error(name, format!("{what}: odd ring layout")));
            }
        }
        let pgoff = libc::off_t::try_from(pgoff)
            .map_err(|_| config_error(name, "ring offsets need a 64-bit off_t".into()))?;
        // SAFETY: maps the ring the kernel allocated for this socket with the length its
        // XDP_MMAP_OFFSETS layout gives; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(IoError::last_os(
                name,
                &format!("mapping the {what} ring"),
                CAP_XSK,
            ));
        }
        let map = Mmap {
            ptr: ptr.cast(),
            len,
        };
        // Each offset is below `desc_off`, a usize (checked above).
        let at = |o: u64| map.ptr.wrapping_add(usize::try_from(o).unwrap_or(0));
        Ok(XskRing {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            desc: at(off.desc),
            size,
            entry,
            local: 0,
            remote: 0,
            _map: map,
        })
    }

    fn index(&self, which: *const AtomicU32, order: Ordering) -> u32 {
        // SAFETY: `which` points at a 4-aligned u32 inside the live mapping (checked in
        // map(): the offsets lie before the descriptors); the kernel updates it
        // concurrently, hence the atomic access.
        unsafe { (*which).load(order) }
    }

    fn publish(&self, which: *const AtomicU32, v: u32) {
        // SAFETY: as in index(); Release orders our descriptor writes (or reads) before the
        // index that hands them to the kernel.
        unsafe { (*which).store(v, Ordering::Release) }
    }

    fn needs_wakeup(&self) -> bool {
        self.index(self.flags, Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entries the kernel produced that we have not consumed (a ring we read).
    fn available(&mut self) -> u32 {
        self.remote = self.index(self.producer, Ordering::Acquire);
        self.remote.wrapping_sub(self.local).min(self.size)
    }

    /// Marks `n` entries consumed and tells the kernel (a ring we read).
    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        self.publish(self.consumer, self.local);
    }

    /// Free entries (a ring we fill), counting ones written but not yet submitted.
    fn free(&mut self, pending: u32) -> u32 {
        self.remote = self.index(self.consumer, Ordering::Acquire);
        let used = self.local.wrapping_add(pending).wrapping_sub(self.remote);
        self.size.saturating_sub(used)
    }

    /// Hands `n` written entries to the kernel (a ring we fill).
    fn submit(&mut self, n: u32) {
        if n > 0 {
            self.local = self.local.wrapping_add(n);
            self.publish(self.producer, self.local);
        }
    }

    /// Whether the kernel has consumed everything we submitted (a ring we fill).
    fn drained(&self) -> bool {
        self.index(self.consumer, Ordering::Acquire) == self.local
    }

    /// The entry `i` places after our index.
    fn slot(&self, i: u32) -> *mut u8 {
        let idx = self.local.wrapping_add(i) & (self.size - 1);
        self.desc.wrapping_add(idx as usize * self.entry)
    }

    fn read_u64(&self, i: u32) -> u64 {
        // SAFETY: slot() stays inside the mapping (index masked by the power-of-two size);
        // the entry was published by the kernel (producer read with Acquire).
        unsafe { std::ptr::read_unaligned(self.slot(i).cast::<u64>()) }
    }

    fn write_u64(&self, i: u32, v: u64) {
        // SAFETY: slot() stays inside the mapping; the entry is free (checked with free()),
        // so the kernel does not read it until submit() publishes it.
        unsafe { std::ptr::write_unaligned(self.slot(i).cast::<u64>(), v) }
    }

    fn read_desc(&self, i: u32) -> libc::xdp_desc {
        // SAFETY: as read_u64, for a ring of xdp_desc entries (plain integers).
        unsafe { std::ptr::read_unaligned(self.slot(i).cast::<libc::xdp_desc>()) }
    }

    fn write_desc(&self, i: u32, addr: u64, len: u32) {
        let d = libc::xdp_desc {
            addr,
            len,
            options: 0,
        };
        // SAFETY: as write_u64, for a ring of xdp_desc entries.
        unsafe { std::ptr::write_unaligned(self.slot(i).cast::<libc::xdp_desc>(), d) }
    }
}

/// One AF_XDP socket bound to one receive queue of one interface, with its own UMEM: the
/// first half of the frames receive (they circulate through the fill and receive rings),
/// the second half send (transmit ring, then back through the completion ring).
#[derive(Debug)]
pub struct XdpSocket {
    // Field order is drop order: the socket closes before its rings and UMEM are unmapped,
    // and the program (shared by the interface's sockets) is detached last.
    fd: OwnedFd,
    rx: XskRing,
    tx: XskRing,
    fill: XskRing,
    comp: XskRing,
    umem: Mmap,
    program: Arc<XdpProgram>,
    name: String,
    queue: u32,
    frame_size: u32,
    rx_frames: u32,
    /// The largest frame sent: MTU plus an Ethernet header and one VLAN tag, at most a frame.
    max_tx: usize,
    zero_copy: bool,
    /// Transmit frames not in flight.
    tx_free: Vec<u64>,
    /// Receive frames read but not yet back on the fill ring.
    refill: Vec<u64>,
    segmenter: Segmenter,
    stats: XdpStats,
}

// SAFETY: the mappings are owned by the socket alone (nothing else holds the pointers) and
// are only touched through `&mut self`; the shared XdpProgram is only file descriptors.
unsafe impl Send for XdpSocket {}

fn xsk_setsockopt<T>(
    fd: &OwnedFd,
    name: &str,
    opt: libc::c_int,
    val: &T,
    what: &str,
) -> Result<(), IoError> {
    set_opt(fd, name, libc::SOL_XDP, opt, val, what, CAP_XSK)
}

impl XdpSocket {
    /// Attaches a program to `iface` ([`XdpProgram::attach`]) and opens a socket on
    /// `queue`. For several queues of one interface use [`XdpProgram::attach`] once and
    /// [`XdpSocket::open_on`] per queue.
    pub fn open(iface: &IfInfo, queue: u32, cfg: &XdpConfig) -> Result<XdpSocket, IoError> {
        let prog = XdpProgram::attach(iface, cfg)?;
        XdpSocket::open_on(&prog, iface, queue, cfg)
    }

    /// Opens a socket on receive queue `queue` of `iface`, whose program `prog` is, and
    /// points the program's slot for that queue at it.
    pub fn open_on(
        prog: &Arc<XdpProgram>,
        iface: &IfInfo,
        queue: u32,
        cfg: &XdpConfig,
    ) -> Result<XdpSocket, IoError> {
        let name = iface.name.as_str();
        if prog.ifindex != iface.ifindex {
            return Err(config_error(
                name,
                "the XDP program belongs to another interface".into(),
            ));
        }
        if queue >= prog.queues {
            return Err(config_error(
                name,
                format!(
                    "receive queue {queue} does not exist (the interface has {})",
                    prog.queues
                ),
            ));
        }
        // SAFETY: sysconf takes no pointers.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let fs = cfg.frame_size as usize;
        if !fs.is_power_of_two() || fs < 2048 || fs > page {
            return Err(config_error(
                name,
                format!(
                    "XDP frame size {fs} must be a power of two from 2048 to the page size ({page})"
                ),
            ));
        }
        if cfg.frame_count < 2 || !cfg.frame_count.is_multiple_of(2) {
            return Err(config_error(
                name,
                format!(
                    "XDP frame count {} must be even and at least 2",
                    cfg.frame_count
                ),
            ));
        }
        let rx_frames = cfg.frame_count / 2;
        let ring_size = rx_frames
            .checked_next_power_of_two()
            .ok_or_else(|| config_error(name, "too many XDP frames".into()))?;
        let umem_len = (cfg.frame_count as usize)
            .checked_mul(fs)
            .ok_or_else(|| config_error(name, "UMEM too large".into()))?;

        // SAFETY: socket() takes no pointers; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            let e = last_errno();
            if e == libc::EAFNOSUPPORT {
                return Err(IoError::new(
                    name,
                    IoErrorKind::Os,
                    "AF_XDP not available (kernel without CONFIG_XDP_SOCKETS?)",
                    Some(e),
                ));
            }
            return Err(IoError::os(name, "opening an AF_XDP socket", CAP_XSK, e));
        }
        // SAFETY: raw is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        // SAFETY: anonymous private mapping, no pointers in; checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                umem_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(IoError::last_os(name, "allocating the UMEM", CAP_XSK));
        }
        let umem = Mmap {
            ptr: ptr.cast(),
            len: umem_len,
        };
        let reg = libc::xdp_umem_reg {
            addr: umem.ptr as u64,
            len: umem_len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        xsk_setsockopt(
            &fd,
            name,
            libc::XDP_UMEM_REG,
            &reg,
            "registering the UMEM (XDP_UMEM_REG; without CAP_IPC_LOCK it counts against RLIMIT_MEMLOCK)",
        )?;
        let n = libc::c_int::try_from(ring_size)
            .map_err(|_| config_error(name, "ring too large".into()))?;
        for (opt, what) in [
            (libc::XDP_UMEM_FILL_RING, "sizing the fill ring"),
            (libc::XDP_UMEM_COMPLETION_RING, "sizing the completion ring"),
            (libc::XDP_RX_RING, "sizing the receive ring"),
            (libc::XDP_TX_RING, "sizing the transmit ring"),
        ] {
            xsk_setsockopt(&fd, name, opt, &n, what)?;
        }
        // SAFETY: plain integers; zero is valid.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len =
            libc::socklen_t::try_from(std::mem::size_of::<libc::xdp_mmap_offsets>()).unwrap_or(0);
        // SAFETY: XDP_MMAP_OFFSETS writes at most len bytes of an xdp_mmap_offsets to off.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(IoError::last_os(
                name,
                "reading the ring layout (XDP_MMAP_OFFSETS)",
                CAP_XSK,
            ));
        }
        if len as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(config_error(
                name,
                "kernel too old for AF_XDP ring flags (before 5.4)".into(),
            ));
        }
        let desc_len = std::mem::size_of::<libc::xdp_desc>();
        let rx = XskRing::map(
            &fd,
            name,
            &off.rx,
            libc::XDP_PGOFF_RX_RING as u64,
            ring_size,
            desc_len,
            "receive",
        )?;
        let tx = XskRing::map(
            &fd,
            name,
            &off.tx,
            libc::XDP_PGOFF_TX_RING as u64,
            ring_size,
            desc_len,
            "transmit",
        )?;
        let fill = XskRing::map(
            &fd,
            name,
            &off.fr,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            ring_size,
            8,
            "fill",
        )?;
        let comp = XskRing::map(
            &fd,
            name,
            &off.cr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            ring_size,
            8,
            "completion",
        )?;

        let fsz = u64::from(cfg.frame_size);
        let mut sock = XdpSocket {
            fd,
            rx,
            tx,
            fill,
            comp,
            umem,
            program: prog.clone(),
            name: name.to_owned(),
            queue,
            frame_size: cfg.frame_size,
            rx_frames,
            max_tx: (iface.mtu as usize).saturating_add(18).min(fs),
            zero_copy: false,
            tx_free: (u64::from(rx_frames)..u64::from(cfg.frame_count))
                .rev()
                .map(|i| i * fsz)
                .collect(),
            refill: (0..u64::from(rx_frames)).map(|i| i * fsz).collect(),
            segmenter: Segmenter::new(),
            stats: XdpStats::default(),
        };
        sock.refill_ring();

        // SAFETY: sockaddr_xdp is plain data; zero is valid.
        let mut sxdp: libc::sockaddr_xdp = unsafe { std::mem::zeroed() };
        sxdp.sxdp_family = AF_XDP_U16;
        sxdp.sxdp_ifindex = iface.ifindex;
        sxdp.sxdp_queue_id = queue;
        let tries: &[(u16, bool)] = if cfg.zero_copy {
            &[(libc::XDP_ZEROCOPY, true), (libc::XDP_COPY, false)]
        } else {
            &[(libc::XDP_COPY, false)]
        };
        let mut bound = Err(0);
        for &(mode, zc) in tries {
            sxdp.sxdp_flags = mode | libc::XDP_USE_NEED_WAKEUP;
            // SAFETY: sxdp is a valid sockaddr_xdp and the length given is its size.
            let r = unsafe {
                libc::bind(
                    sock.fd.as_raw_fd(),
                    (&sxdp as *const libc::sockaddr_xdp).cast(),
                    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_xdp>())
                        .unwrap_or(0),
                )
            };
            if r == 0 {
                bound = Ok(zc);
                break;
            }
            bound = Err(last_errno());
        }
        match bound {
            Ok(zc) => sock.zero_copy = zc,
            Err(e) => {
                return Err(IoError::os(
                    name,
                    &format!("binding the AF_XDP socket to queue {queue}"),
                    CAP_XSK,
                    e,
                ))
            }
        }
        prog.insert(queue, sock.fd.as_raw_fd())?;
        Ok(sock)
    }

    /// The socket, to poll for POLLIN.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// How the interface's XDP program is attached.
    pub fn mode(&self) -> XdpMode {
        self.program.mode
    }

    /// Whether the driver moves frames in and out of the UMEM itself (XDP_ZEROCOPY) rather
    /// than the kernel copying them (XDP_COPY).
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The interface's program, shared with its other sockets.
    pub fn program(&self) -> &Arc<XdpProgram> {
        &self.program
    }

    /// Puts read receive frames back on the fill ring, as many as fit.
    fn refill_ring(&mut self) {
        let n = u32::try_from(self.refill.len())
            .unwrap_or(u32::MAX)
            .min(self.fill.free(0));
        for i in 0..n {
            if let Some(addr) = self.refill.pop() {
                self.fill.write_u64(i, addr);
            }
        }
        self.fill.submit(n);
    }

    /// The UMEM bytes of a received frame: `addr` (which may lie past the start of its
    /// frame, by the kernel's headroom) and `len`, inside one receive frame.
    fn rx_frame(&mut self, addr: u64, len: u32) -> Option<(&mut [u8], u64)> {
        let fs = u64::from(self.frame_size);
        let base = addr - addr % fs;
        let end = addr.checked_add(u64::from(len))?;
        if base / fs >= u64::from(self.rx_frames) || end > base + fs {
            return None;
        }
        let start = usize::try_from(addr).ok()?;
        let len = usize::try_from(len).ok()?;
        if start.checked_add(len)? > self.umem.len {
            return None;
        }
        // SAFETY: [start, start+len) lies inside the UMEM (checked above) within one receive
        // frame that the kernel handed to us through the receive ring and does not touch
        // again until we put it back on the fill ring; `&mut self` makes the slice unique.
        let frame = unsafe { std::slice::from_raw_parts_mut(self.umem.ptr.add(start), len) };
        Some((frame, base))
    }

    /// Waits up to `timeout_ms` (poll; negative waits indefinitely, 0 not at all) for
    /// frames, then calls `f` for each received frame in order, in place in the UMEM, with
    /// [`Offload::NONE`] (XDP sees frames as on the wire). Their frames then go back on the
    /// fill ring. Returns how many frames were delivered. An `Err` of kind
    /// [`IoErrorKind::InterfaceGone`] reports that the interface went down or away.
    pub fn recv(
        &mut self,
        timeout_ms: i32,
        mut f: impl FnMut(&mut [u8], Offload),
    ) -> Result<usize, IoError> {
        // Frames left on the transmit ring by an earlier send go out now.
        if !self.tx.drained() {
            self.kick()?;
        }
        if self.rx.available() == 0 {
            // With need_wakeup the driver (zero-copy) waits for a syscall before it takes
            // fill ring frames again; poll is one.
            if timeout_ms != 0 || self.fill.needs_wakeup() {
                let revents =
                    match poll_one(self.fd(), &self.name, CAP_XSK, libc::POLLIN, timeout_ms)? {
                        Some(r) => r,
                        None => return Ok(0),
                    };
                if revents & libc::POLLERR != 0 {
                    self.take_socket_error()?;
                }
            }
            if self.rx.available() == 0 {
                return Ok(0);
            }
        }
        let n = self.rx.available();
        let mut delivered = 0;
        let mut completed = 0;
        for i in 0..n {
            let d = self.rx.read_desc(i);
            match self.rx_frame(d.addr, d.len) {
                Some((frame, base)) => {
                    completed += u64::from(complete_partial_checksum(frame));
                    f(frame, Offload::NONE);
                    delivered += 1;
                    self.refill.push(base);
                }
                None => {
                    self.stats.rx_invalid += 1;
                    // A frame of ours with a bad length still goes back; anything else is
                    // not ours to hand out.
                    let fs = u64::from(self.frame_size);
                    if d.addr / fs < u64::from(self.rx_frames) {
                        self.refill.push(d.addr - d.addr % fs);
                    }
                }
            }
        }
        self.rx.release(n);
        self.refill_ring();
        if self.fill.needs_wakeup() {
            // SAFETY: recvfrom with no buffer only wakes the driver; no pointers are read.
            unsafe {
                libc::recvfrom(
                    self.fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        self.stats.frames_received += delivered as u64;
        self.stats.checksums_completed += completed;
        Ok(delivered)
    }

    fn take_socket_error(&mut self) -> Result<(), IoError> {
        take_socket_error(self.fd(), &self.name, "AF_XDP socket error", CAP_XSK)
    }

    /// Moves completed transmit frames back to the free list.
    fn reclaim(&mut self) {
        let n = self.comp.available();
        let fs = u64::from(self.frame_size);
        let total = u64::from(self.rx_frames) * 2;
        for i in 0..n {
            let addr = self.comp.read_u64(i);
            let idx = addr / fs;
            // Only our transmit frames; anything else would hand out a frame twice.
            if idx >= u64::from(self.rx_frames)
                && idx < total
                && self.tx_free.len() < self.rx_frames as usize
            {
                self.tx_free.push(idx * fs);
            }
        }
        self.comp.release(n);
    }

    /// Tells the kernel about the transmit ring (in copy mode the sending happens in this
    /// call, a bounded number of frames per call), until it has taken all or stops taking.
    fn kick(&mut self) -> Result<(), IoError> {
        for _ in 0..TX_KICK_TRIES {
            if self.tx.drained() || !self.tx.needs_wakeup() {
                break;
            }
            let before = self.tx.index(self.tx.consumer, Ordering::Acquire);
            // SAFETY: sendto with no buffer and no address only starts transmission.
            let r = unsafe {
                libc::sendto(
                    self.fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r >= 0 {
                continue;
            }
            match last_errno() {
                libc::EINTR => {}
                libc::EAGAIN | libc::EBUSY | libc::ENOBUFS => {
                    // EAGAIN also ends a call that sent its budget: go on while it progresses.
                    if self.tx.index(self.tx.consumer, Ordering::Acquire) == before {
                        break;
                    }
                }
                e => return Err(gone_or(&self.name, "sending frames (sendto)", CAP_XSK, e)),
            }
        }
        self.reclaim();
        Ok(())
    }

    /// Sends `frames` (plain Ethernet frames): each is copied into a free transmit frame of
    /// the UMEM and put on the transmit ring, and the kernel is told. Returns how many were
    /// queued. Stops early (counted in [`XdpStats::send_backpressure`]) when every transmit
    /// frame is in flight; the rest are not sent. An empty frame, or one larger than the
    /// MTU (plus Ethernet header and a VLAN tag) or a UMEM frame, is skipped and counted in
    /// [`XdpStats::send_rejected`].
    pub fn send<'a>(&mut self, frames: impl Iterator<Item = &'a [u8]>) -> Result<usize, IoError> {
        self.send_offloaded(frames.map(|f| (f, Offload::NONE)))
    }

    /// [`XdpSocket::send`] for frames with their [`Offload`]: a GSO super-frame (with a
    /// complete transport checksum, as the router leaves it) is cut into segments here,
    /// each with its own checksums, since XDP has no GSO. One whose headers do not match
    /// its offload is skipped and counted in [`XdpStats::send_rejected`].
    pub fn send_offloaded<F: AsRef<[u8]>>(
        &mut self,
        frames: impl Iterator<Item = (F, Offload)>,
    ) -> Result<usize, IoError> {
        self.reclaim();
        let mut pending = 0u32;
        let mut sent = 0usize;
        let mut full = false;
        for (frame, offload) in frames {
            let frame = frame.as_ref();
            match offload.gso {
                None => match self.queue_frame(frame, &mut pending)? {
                    Some(true) => sent += 1,
                    Some(false) => self.stats.send_rejected += 1,
                    None => full = true,
                },
                Some(gso) => {
                    let mut segs = Vec::new();
                    let r = self
                        .segmenter
                        .segment_gso(frame, gso, |s| segs.push(s.to_vec()));
                    if r.is_err() {
                        self.stats.send_rejected += 1;
                        continue;
                    }
                    self.stats.gso_segmented += 1;
                    for s in &segs {
                        match self.queue_frame(s, &mut pending)? {
                            Some(true) => sent += 1,
                            Some(false) => self.stats.send_rejected += 1,
                            None => {
                                full = true;
                                break;
                            }
                        }
                    }
                }
            }
            if full {
                break;
            }
        }
        self.tx.submit(pending);
        self.kick()?;
        if full {
            self.stats.send_backpressure += 1;
        }
        self.stats.frames_sent += sent as u64;
        Ok(sent)
    }

    /// Copies `frame` into a free transmit frame and writes its descriptor (`pending`
    /// written, not yet submitted). `Some(false)`: not sendable; `None`: no free frame even
    /// after handing the kernel what is pending.
    fn queue_frame(&mut self, frame: &[u8], pending: &mut u32) -> Result<Option<bool>, IoError> {
        if frame.is_empty() || frame.len() > self.max_tx {
            return Ok(Some(false));
        }
        if self.tx_free.is_empty() || self.tx.free(*pending) == 0 {
            self.tx.submit(*pending);
            *pending = 0;
            self.kick()?;
            if self.tx_free.is_empty() || self.tx.free(0) == 0 {
                return Ok(None);
            }
        }
        let Some(addr) = self.tx_free.pop() else {
            return Ok(None);
        };
        let (Ok(at), Ok(len)) = (usize::try_from(addr), u32::try_from(frame.len())) else {
            return Ok(Some(false));
        };
        if at
            .checked_add(frame.len())
            .is_none_or(|e| e > self.umem.len)
        {
            return Ok(Some(false));
        }
        // SAFETY: [at, at+len) lies inside the UMEM (checked above) in a transmit frame that
        // is on our free list, so the kernel is not reading it; frame is a separate buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), self.umem.ptr.add(at), frame.len());
        }
        self.tx.write_desc(*pending, addr, len);
        *pending += 1;
        Ok(Some(true))
    }

    /// Our counters and the kernel's (XDP_STATISTICS).
    pub fn stats(&mut self) -> XdpStats {
        // SAFETY: plain integers; zero is valid.
        let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len =
            libc::socklen_t::try_from(std::mem::size_of::<libc::xdp_statistics>()).unwrap_or(0);
        // SAFETY: XDP_STATISTICS writes at most len bytes of an xdp_statistics to st.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut st as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.kernel_rx_dropped = st.rx_dropped;
            self.stats.kernel_rx_invalid_descs = st.rx_invalid_descs;
            self.stats.kernel_tx_invalid_descs = st.tx_invalid_descs;
            self.stats.kernel_rx_ring_full = st.rx_ring_full;
            self.stats.kernel_rx_fill_ring_empty = st.rx_fill_ring_empty_descs;
        }
        self.stats
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The folded (not complemented) one's complement sum of `words` as big-endian u16s.
fn fold_sum(parts: &[&[u8]], extra: u32) -> u16 {
    let mut s = u64::from(extra);
    for p in parts {
        for w in p.chunks(2) {
            let hi = w.first().copied().unwrap_or(0);
            let lo = w.get(1).copied().unwrap_or(0);
            s += u64::from(u16::from_be_bytes([hi, lo]));
        }
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    u16::try_from(s).unwrap_or(u16::MAX)
}

/// Completes the TCP or UDP checksum of an unfragmented IPv4 or IPv6 (no extension
/// headers) frame, behind at most two VLAN tags, whose checksum field holds exactly the
/// pseudo-header sum of its addresses, protocol and transport length: what the sending
/// stack leaves for the device to finish (`CHECKSUM_PARTIAL`). Returns whether it did.
/// Any other frame is left alone; a checksum that was already complete and happened to
/// equal that sum is recomputed to the same value.
pub fn complete_partial_checksum(frame: &mut [u8]) -> bool {
    let mut at = 12;
    let mut ty = be16(frame, at);
    for _ in 0..2 {
        if matches!(ty, Some(0x8100 | 0x88a8)) {
            at += 4;
            ty = be16(frame, at);
        }
    }
    let nh = at + 2;
    let (proto, l4, end, pseudo) = match ty {
        Some(0x0800) => {
            let Some(&vihl) = frame.get(nh) else {
                return false;
            };
            let ihl = usize::from(vihl & 0xf) * 4;
            let (Some(total), Some(frag), Some(&proto)) =
                (be16(frame, nh + 2), be16(frame, nh + 6), frame.get(nh + 9))
            else {
                return false;
            };
            let total = usize::from(total);
            if vihl >> 4 != 4 || ihl < 20 || total < ihl || frag & 0x3fff != 0 {
                return false;
            }
            let (Some(addrs), Ok(l4_len)) =
                (frame.get(nh + 12..nh + 20), u16::try_from(total - ihl))
            else {
                return false;
            };
            let pseudo = fold_sum(&[addrs], u32::from(proto) + u32::from(l4_len));
            (proto, nh + ihl, nh + total, pseudo)
        }
        Some(0x86dd) => {
            let (Some(plen), Some(&proto), Some(addrs)) = (
                be16(frame, nh + 4),
                frame.get(nh + 6),
                frame.get(nh + 8..nh + 40),
            ) else {
                return false;
            };
            let pseudo = fold_sum(&[addrs], u32::from(proto) + u32::from(plen));
            (proto, nh + 40, nh + 40 + usize::from(plen), pseudo)
        }
        _ => return false,
    };
    let off: u16 = match proto {
        6 => 16,
        17 => 6,
        _ => return false,
    };
    if end > frame.len() || be16(frame, l4 + usize::from(off)) != Some(pseudo) {
        return false;
    }
    let (Some(ip), Ok(start)) = (frame.get_mut(..end), u16::try_from(l4)) else {
        return false;
    };
    complete_checksum(ip, start, off).is_ok()
}
