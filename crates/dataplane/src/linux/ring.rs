//! One AF_PACKET socket bound to one interface: a TPACKET_V3 receive ring and batched
//! transmit (sendmmsg), with a virtio-net header in front of every frame in both
//! directions (`PACKET_VNET_HDR`): partial checksums are completed here, and GSO
//! super-frames are either handed over whole with their segment size (and sent whole
//! again, as GSO sends) or segmented here (see [`super::offload`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use super::iface::{
    gone_or, last_errno, poll_one, set_opt, take_socket_error, IfInfo, IoError, IoErrorKind,
};
use super::offload::{prepare_super, tx_header, Offload, Segmenter, VnetHdr, VNET_HDR_LEN};

/// `TPACKET_V3` of `enum tpacket_versions`.
const TPACKET_V3: libc::c_int = 2;
/// Frames sent per sendmmsg call.
const SEND_BATCH: usize = 64;
/// `tp_frame_size` for the ring request: TPACKET_V3 packs frames of any size into blocks,
/// but the kernel still checks a frame size against the block size.
const FRAME_SIZE: u32 = 2048;
// The C constants are ints; the structures hold them in 16 bits.
const AF_PACKET_U16: u16 = 17;
const ETH_P_ALL_U16: u16 = 0x0003;
const PACKET_MR_PROMISC_U16: u16 = 1;
const _: () = assert!(AF_PACKET_U16 as libc::c_int == libc::AF_PACKET);
const _: () = assert!(ETH_P_ALL_U16 as libc::c_int == libc::ETH_P_ALL);
const _: () = assert!(PACKET_MR_PROMISC_U16 as libc::c_int == libc::PACKET_MR_PROMISC);
const CAP_RAW: &str = "CAP_NET_RAW";
const CAP_RAW_ADMIN: &str = "CAP_NET_RAW and CAP_NET_ADMIN";

/// How a [`Ring`] is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per ring block: a multiple of the page size, and large enough for the largest
    /// super-frame (64 KiB plus headers) or such frames are dropped as truncated.
    pub block_size: u32,
    pub block_count: u32,
    /// A block that is not full is handed to userspace after this long (`tp_retire_blk_tov`),
    /// which bounds the latency a quiet link adds.
    pub block_timeout_ms: u32,
    /// Rings on one interface with the same group share its frames by the kernel's flow
    /// hash (`PACKET_FANOUT_HASH`), which is symmetric when the kernel computes it, so both
    /// directions of a flow meet one worker. A hash the NIC supplied (RSS) need not be
    /// symmetric. Fragments hash by addresses only, so they may reach another worker than
    /// the unfragmented packets of their flow.
    pub fanout_group: Option<u16>,
    /// Receive every frame on the link (`PACKET_MR_PROMISC`), not only those the kernel
    /// would accept for the interface's own MAC.
    pub promiscuous: bool,
    /// Hand GSO super-frames (TCPv4, TCPv6, UDP_L4) to the caller whole, with their
    /// checksum completed and their [`Offload`], rather than segmenting them: a router
    /// then judges and rewrites one frame instead of ~45, and [`Ring::send_offloaded`]
    /// lets the kernel (or the NIC) segment it on the way out. Off: every frame delivered
    /// is an ordinary one, no longer than the interface's MTU.
    pub gso_passthrough: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            block_count: 8,
            block_timeout_ms: 2,
            fanout_group: None,
            promiscuous: true,
            gso_passthrough: true,
        }
    }
}

/// Counters of one ring. The `kernel_*` ones are the kernel's `PACKET_STATISTICS`,
/// summed since the ring was opened (the kernel resets them on each read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames the kernel put in the ring (`tp_packets`).
    pub kernel_packets: u64,
    /// Frames the kernel dropped because the ring was full (`tp_drops`).
    pub kernel_drops: u64,
    /// Times the ring was full and froze (`tp_freeze_q_cnt`).
    pub kernel_freeze_q_cnt: u64,
    /// Frames read from the ring (before segmentation; not counting the drops below).
    pub frames_received: u64,
    /// Frames handed to the caller (after segmentation).
    pub frames_delivered: u64,
    /// GSO super-frames handed to the caller whole ([`RingConfig::gso_passthrough`]).
    pub gso_passed: u64,
    /// GSO super-frames segmented.
    pub gso_segmented: u64,
    /// Segments those super-frames became.
    pub gso_segments: u64,
    /// Partial checksums completed on frames that were not super-frames.
    pub checksums_completed: u64,
    /// Frames dropped because their offload metadata could not be honoured.
    pub bad_offload_drops: u64,
    /// Frames dropped because the ring held less than the whole frame.
    pub truncated_drops: u64,
    /// Our own frames seen despite `PACKET_IGNORE_OUTGOING`, not delivered.
    pub outgoing_skipped: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Of those, GSO super-frames sent whole.
    pub gso_sent: u64,
    /// Frames the kernel refused to send (too big for the MTU, malformed); skipped.
    pub send_rejected: u64,
    /// Times a send stopped early because the device queue or socket buffer was full.
    pub send_backpressure: u64,
}

/// One AF_PACKET socket bound to one interface: a TPACKET_V3 receive ring (mmap'd
/// blocks) and batched transmit.
#[derive(Debug)]
pub struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    block_size: usize,
    block_count: usize,
    /// The next block to read, in the order the kernel fills them.
    cur: usize,
    name: String,
    segmenter: Segmenter,
    gso_passthrough: bool,
    stats: RingStats,
}

// SAFETY: the mapping is owned by the Ring alone (nothing else holds the pointer) and is
// only touched through `&mut self`, so moving the Ring to another thread is sound.
unsafe impl Send for Ring {}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: map/map_len are exactly what mmap returned, unmapped once; the socket
        // (closed after this by OwnedFd) no longer matters to the mapping.
        unsafe { libc::munmap(self.map.cast(), self.map_len) };
    }
}

fn setsockopt<T>(
    fd: &OwnedFd,
    name: &str,
    opt: libc::c_int,
    val: &T,
    what: &str,
    cap: &str,
) -> Result<(), IoError> {
    set_opt(fd, name, libc::SOL_PACKET, opt, val, what, cap)
}

/// Sizes of the small structs passed to the kernel, which always fit a socklen_t.
fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn config_error(name: &str, what: String) -> IoError {
    IoError::new(name, IoErrorKind::InvalidConfig, what, None)
}

impl Ring {
    /// Opens the socket, sets up the ring and binds it to `iface`.
    pub fn open(iface: &IfInfo, cfg: &RingConfig) -> Result<Ring, IoError> {
        let name = iface.name.as_str();
        // SAFETY: sysconf takes no pointers.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(1);
        let block_size = usize::try_from(cfg.block_size)
            .map_err(|_| config_error(name, "block size too large".into()))?;
        let block_count = usize::try_from(cfg.block_count)
            .map_err(|_| config_error(name, "block count too large".into()))?;
        if block_size == 0 || block_size % page != 0 {
            return Err(config_error(name, format!("ring block size {block_size} must be a non-zero multiple of the page size ({page})")));
        }
        if block_count == 0 {
            return Err(config_error(
                name,
                "ring block count must be at least 1".into(),
            ));
        }
        let map_len = block_size
            .checked_mul(block_count)
            .filter(|l| u32::try_from(*l).is_ok())
            .ok_or_else(|| config_error(name, "ring larger than 4 GiB".into()))?;
        let ifindex = libc::c_int::try_from(iface.ifindex)
            .map_err(|_| config_error(name, "ifindex out of range".into()))?;

        // Protocol 0: the socket receives nothing until bind() names the interface, so no
        // frame of another interface lands in the ring meanwhile.
        // SAFETY: socket() takes no pointers; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(IoError::last_os(name, "opening a packet socket", CAP_RAW));
        }
        // SAFETY: raw is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        setsockopt(
            &fd,
            name,
            libc::PACKET_VERSION,
            &TPACKET_V3,
            "selecting TPACKET_V3",
            CAP_RAW,
        )?;
        // Must precede the ring: the kernel refuses it (EBUSY) once a ring exists.
        let one: libc::c_int = 1;
        setsockopt(
            &fd,
            name,
            libc::PACKET_VNET_HDR,
            &one,
            "enabling virtio-net headers (PACKET_VNET_HDR)",
            CAP_RAW,
        )?;
        match setsockopt(
            &fd,
            name,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
            "PACKET_IGNORE_OUTGOING",
            CAP_RAW,
        ) {
            // Kernels before 4.20 lack it; recv() also skips PACKET_OUTGOING frames.
            Err(e) if e.errno() == Some(libc::ENOPROTOOPT) => {}
            other => other?,
        }

        // SAFETY: tpacket_req3 is plain integers; zero is valid.
        let mut req: libc::tpacket_req3 = unsafe { std::mem::zeroed() };
        req.tp_block_size = cfg.block_size;
        req.tp_block_nr = cfg.block_count;
        req.tp_frame_size = FRAME_SIZE.min(cfg.block_size);
        req.tp_frame_nr = (cfg.block_size / req.tp_frame_size).saturating_mul(cfg.block_count);
        req.tp_retire_blk_tov = cfg.block_timeout_ms;
        setsockopt(
            &fd,
            name,
            libc::PACKET_RX_RING,
            &req,
            "setting up the receive ring (PACKET_RX_RING)",
            CAP_RAW,
        )?;

        // SAFETY: maps the ring the kernel just allocated for this socket, map_len bytes
        // as requested; the result is checked against MAP_FAILED.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(IoError::last_os(name, "mapping the receive ring", CAP_RAW));
        }
        let ring = Ring {
            fd,
            map: map.cast(),
            map_len,
            block_size,
            block_count,
            cur: 0,
            name: name.to_owned(),
            segmenter: Segmenter::new(),
            gso_passthrough: cfg.gso_passthrough,
            stats: RingStats::default(),
        };

        // SAFETY: sockaddr_ll is plain data; zero is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = AF_PACKET_U16;
        sll.sll_protocol = ETH_P_ALL_U16.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll and the length given is its size.
        let r = unsafe {
            libc::bind(
                ring.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                socklen_of::<libc::sockaddr_ll>(),
            )
        };
        if r < 0 {
            return Err(IoError::last_os(name, "binding the packet socket", CAP_RAW));
        }

        if cfg.promiscuous {
            // SAFETY: packet_mreq is plain data; zero is valid.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = ifindex;
            mreq.mr_type = PACKET_MR_PROMISC_U16;
            setsockopt(
                &ring.fd,
                name,
                libc::PACKET_ADD_MEMBERSHIP,
                &mreq,
                "enabling promiscuous mode",
                CAP_RAW_ADMIN,
            )?;
        }
        if let Some(group) = cfg.fanout_group {
            // The group shares one hook, whose own ignore-outgoing flag is this one: without
            // it every frame any member sends would be handed back to the group.
            const IGNORE_OUTGOING: libc::c_int = 0x4000;
            let arg = libc::c_int::from(group)
                | (((libc::PACKET_FANOUT_HASH as libc::c_int) | IGNORE_OUTGOING) << 16);
            setsockopt(
                &ring.fd,
                name,
                libc::PACKET_FANOUT,
                &arg,
                &format!("joining fanout group {group}"),
                CAP_RAW,
            )?;
        }
        Ok(ring)
    }

    /// The socket, for poll() over several rings (readable when a block is ready).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The interface this ring is bound to.
    pub fn interface(&self) -> &str {
        &self.name
    }

    fn block_status(&self, i: usize) -> &AtomicU32 {
        let off = i * self.block_size
            + std::mem::offset_of!(libc::tpacket_block_desc, hdr)
            + std::mem::offset_of!(libc::tpacket_hdr_v1, block_status);
        // SAFETY: i < block_count, so the word lies inside the mapping, 4-aligned (blocks
        // are page-aligned and the offset is 8); the kernel updates it concurrently, which
        // is why it is read atomically.
        unsafe { AtomicU32::from_ptr(self.map.add(off).cast()) }
    }

    fn block_ready(&self, i: usize) -> bool {
        self.block_status(i).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Waits up to `timeout_ms` (poll; negative waits indefinitely, 0 not at all) for
    /// frames, then calls `f` for each received frame in order, with its [`Offload`]: an
    /// Ethernet frame with a VLAN tag the kernel had moved to metadata put back in the
    /// frame, partial checksums completed, and GSO super-frames either whole with their
    /// segment size in the [`Offload`] (and their checksum completed over the whole frame)
    /// under [`RingConfig::gso_passthrough`], or segmented into ordinary frames (then, and
    /// for every other frame, the [`Offload`] is [`Offload::NONE`]). A super-frame that
    /// cannot be kept whole (e.g. lengths beyond 64 KiB) is segmented. Each block is
    /// released to the kernel once read. Returns how many frames were delivered.
    ///
    /// A frame the kernel marked outgoing, one that did not fit whole in the ring, or one
    /// with offload metadata that cannot be honoured is dropped and counted in
    /// [`RingStats`]. An `Err` of kind [`IoErrorKind::InterfaceGone`] reports that the
    /// interface went down or away (the socket error is cleared, and the ring receives
    /// again if the interface comes back up).
    pub fn recv(
        &mut self,
        timeout_ms: i32,
        mut f: impl FnMut(&mut [u8], Offload),
    ) -> Result<usize, IoError> {
        if !self.block_ready(self.cur) {
            let revents = match poll_one(
                self.fd(),
                &self.name,
                CAP_RAW,
                libc::POLLIN | libc::POLLERR,
                timeout_ms,
            )? {
                Some(r) => r,
                None => return Ok(0),
            };
            if revents & libc::POLLERR != 0 {
                self.take_socket_error()?;
            }
            if !self.block_ready(self.cur) {
                return Ok(0);
            }
        }
        let mut delivered = 0;
        // At most one pass over the ring: a caller that cannot keep up still returns.
        for _ in 0..self.block_count {
            if !self.block_ready(self.cur) {
                break;
            }
            delivered += self.read_block(self.cur, &mut f);
            self.block_status(self.cur)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.cur = (self.cur + 1) % self.block_count;
        }
        Ok(delivered)
    }

    fn take_socket_error(&mut self) -> Result<(), IoError> {
        take_socket_error(self.fd(), &self.name, "packet socket error", CAP_RAW)
    }

    /// Delivers the frames of user-owned block `i`; returns how many were delivered.
    fn read_block(&mut self, i: usize, f: &mut impl FnMut(&mut [u8], Offload)) -> usize {
        // SAFETY: block i lies inside the mapping and is owned by userspace until its
        // status goes back to TP_STATUS_KERNEL (after this returns): the kernel neither
        // reads nor writes it meanwhile, so a unique slice over it is sound.
        let block = unsafe {
            std::slice::from_raw_parts_mut(self.map.add(i * self.block_size), self.block_size)
        };
        let desc_len = std::mem::size_of::<libc::tpacket_block_desc>();
        let Some(desc) = block.get(..desc_len) else {
            return 0;
        };
        // SAFETY: desc holds size_of::<tpacket_block_desc>() bytes; the struct is plain
        // integers, so any bytes are a valid value; read_unaligned copies it out.
        let desc: libc::tpacket_block_desc =
            unsafe { std::ptr::read_unaligned(desc.as_ptr().cast()) };
        // SAFETY: TPACKET_V3 blocks carry the bh1 variant, the union's only member.
        let bh1 = unsafe { desc.hdr.bh1 };
        let mut off = bh1.offset_to_first_pkt as usize;
        let hdr_len = std::mem::size_of::<libc::tpacket3_hdr>();
        let sll_at = hdr_len.next_multiple_of(libc::TPACKET_ALIGNMENT);
        let mut delivered = 0;
        for _ in 0..bh1.num_pkts {
            let Some(h) = block.get(off..off.saturating_add(hdr_len)) else {
                break;
            };
            // SAFETY: h holds a whole tpacket3_hdr (plain integers); copied out unaligned.
            let h: libc::tpacket3_hdr = unsafe { std::ptr::read_unaligned(h.as_ptr().cast()) };
            let pkttype = block
                .get(off + sll_at + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype))
                .copied();
            delivered += self.one_frame(block, off, &h, pkttype, f);
            if h.tp_next_offset == 0 {
                break;
            }
            off = off.saturating_add(h.tp_next_offset as usize);
        }
        delivered
    }

    /// Resolves and delivers the frame whose tpacket3_hdr `h` sits at `off` in `block`.
    fn one_frame(
        &mut self,
        block: &mut [u8],
        off: usize,
        h: &libc::tpacket3_hdr,
        pkttype: Option<u8>,
        f: &mut impl FnMut(&mut [u8], Offload),
    ) -> usize {
        if pkttype == Some(libc::PACKET_OUTGOING) {
            self.stats.outgoing_skipped += 1;
            return 0;
        }
        if h.tp_snaplen != h.tp_len {
            self.stats.truncated_drops += 1;
            return 0;
        }
        let mac = off + usize::from(h.tp_mac);
        let mut len = h.tp_snaplen as usize;
        // The kernel writes the virtio-net header just before the MAC header.
        let Some(mut vnet) = mac
            .checked_sub(VNET_HDR_LEN)
            .and_then(|s| block.get(s..mac))
            .and_then(VnetHdr::parse)
        else {
            self.stats.bad_offload_drops += 1;
            return 0;
        };
        let mut start = mac;
        if h.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
            // The kernel moved the tag into metadata (receive VLAN offload, done in
            // software for every device); a router forwards it, so it goes back in front
            // of the ethertype. The bytes before the frame (sockaddr_ll, virtio header,
            // already read) are ours to overwrite while the block is.
            let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                h.hv1.tp_vlan_tpid
            } else {
                0x8100
            };
            let tci = (h.hv1.tp_vlan_tci & 0xffff) as u16;
            let Some(new_start) = start.checked_sub(4).filter(|s| *s >= off) else {
                self.stats.bad_offload_drops += 1;
                return 0;
            };
            if mac + 12 > block.len() || mac + len > block.len() {
                self.stats.truncated_drops += 1;
                return 0;
            }
            block.copy_within(mac..mac + 12, new_start);
            let mut tag = [0u8; 4];
            tag[..2].copy_from_slice(&tpid.to_be_bytes());
            tag[2..].copy_from_slice(&tci.to_be_bytes());
            if let Some(t) = block.get_mut(new_start + 12..new_start + 16) {
                t.copy_from_slice(&tag);
            }
            start = new_start;
            len += 4;
            if vnet.flags & VnetHdr::F_NEEDS_CSUM != 0 {
                let Some(cs) = vnet.csum_start.checked_add(4) else {
                    self.stats.bad_offload_drops += 1;
                    return 0;
                };
                vnet.csum_start = cs;
            }
        }
        let Some(frame) = block.get_mut(start..start.saturating_add(len)) else {
            self.stats.truncated_drops += 1;
            return 0;
        };
        self.stats.frames_received += 1;
        if vnet.is_plain() {
            f(frame, Offload::NONE);
            self.stats.frames_delivered += 1;
            return 1;
        }
        if self.gso_passthrough && vnet.gso_type != VnetHdr::GSO_NONE {
            // Not kept whole (BIG TCP lengths, say): segmented below.
            if let Ok(offload) = prepare_super(&vnet, frame) {
                f(frame, offload);
                if offload.gso.is_some() {
                    self.stats.gso_passed += 1;
                } else {
                    self.stats.checksums_completed += 1;
                }
                self.stats.frames_delivered += 1;
                return 1;
            }
        }
        match self
            .segmenter
            .process(&vnet, frame, |seg| f(seg, Offload::NONE))
        {
            Ok(n) => {
                if vnet.gso_type != VnetHdr::GSO_NONE {
                    self.stats.gso_segmented += 1;
                    self.stats.gso_segments += n as u64;
                } else {
                    self.stats.checksums_completed += 1;
                }
                self.stats.frames_delivered += n as u64;
                n
            }
            Err(_) => {
                self.stats.bad_offload_drops += 1;
                0
            }
        }
    }

    /// Sends `frames` (plain Ethernet frames; the zeroed virtio-net header the socket
    /// expects is added here) in batches of sendmmsg, without blocking. Returns how many
    /// went. When the device queue or socket buffer is full (ENOBUFS/EAGAIN) it stops and
    /// reports the count so far: the rest of that batch and of `frames` is not sent (the
    /// iterator is consumed at most one batch beyond the last frame sent). A frame the
    /// kernel refuses on its own (EMSGSIZE: larger than the MTU; EINVAL) is skipped and
    /// counted in [`RingStats::send_rejected`]. Other errors are returned when nothing
    /// was sent, else the count is.
    pub fn send<'a>(&mut self, frames: impl Iterator<Item = &'a [u8]>) -> Result<usize, IoError> {
        self.send_with(frames.map(|f| (f, [0u8; VNET_HDR_LEN])))
    }

    /// [`Ring::send`] for frames with their [`Offload`]: an ordinary frame goes with a
    /// zeroed virtio-net header, a GSO super-frame (with a complete transport checksum, as
    /// the router leaves it) with the header [`tx_header`] builds, which also turns its
    /// checksum field into the partial sum the kernel expects (hence `&mut`). The kernel
    /// does not check a GSO frame against the MTU; it (or the device) cuts it into
    /// segments of the given size, each of which must fit. A super-frame whose headers do
    /// not match its offload is skipped and counted in [`RingStats::send_rejected`].
    pub fn send_offloaded<'a>(
        &mut self,
        frames: impl Iterator<Item = (&'a mut [u8], Offload)>,
    ) -> Result<usize, IoError> {
        let mut unsendable = 0u64;
        let r = self.send_with(frames.filter_map(|(f, o)| match o.gso {
            None => Some((&*f, [0u8; VNET_HDR_LEN])),
            Some(g) => match tx_header(f, g) {
                Ok(h) => Some((&*f, h.to_bytes())),
                Err(_) => {
                    unsendable += 1;
                    None
                }
            },
        }));
        self.stats.send_rejected += unsendable;
        r
    }

    fn send_with<'a>(
        &mut self,
        frames: impl Iterator<Item = (&'a [u8], [u8; VNET_HDR_LEN])>,
    ) -> Result<usize, IoError> {
        let mut vnet = [[0u8; VNET_HDR_LEN]; SEND_BATCH];
        // SAFETY: iovec and mmsghdr are plain data (pointers and integers); zero is valid.
        let mut iov: [[libc::iovec; 2]; SEND_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
        let mut frames = frames.peekable();
        let mut sent = 0usize;
        while frames.peek().is_some() {
            let mut n = 0;
            while n < SEND_BATCH {
                let Some((frame, hdr)) = frames.next() else {
                    break;
                };
                vnet[n] = hdr;
                iov[n][0] = libc::iovec {
                    iov_base: vnet[n].as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                };
                // The kernel only reads from iov_base on send; the cast to *mut is the
                // C API's, not a licence to write.
                iov[n][1] = libc::iovec {
                    iov_base: frame.as_ptr() as *mut libc::c_void,
                    iov_len: frame.len(),
                };
                msgs[n].msg_hdr.msg_iov = iov[n].as_mut_ptr();
                msgs[n].msg_hdr.msg_iovlen = 2;
                n += 1;
            }
            let mut k = 0;
            // Every pass sends at least one frame, skips one, or returns; EINTR is retried
            // a bounded number of times.
            let mut eintr = 0;
            while k < n {
                let count = libc::c_uint::try_from(n - k).unwrap_or(1);
                // SAFETY: msgs[k..n] are initialised mmsghdrs whose iovecs point at the
                // virtio headers in `vnet` and at frames borrowed for 'a, all alive during the call.
                let r = unsafe {
                    libc::sendmmsg(self.fd(), msgs[k..].as_mut_ptr(), count, libc::MSG_DONTWAIT)
                };
                if let Ok(r) = usize::try_from(r) {
                    if r > 0 {
                        let done = vnet.get(k..k + r).unwrap_or(&[]);
                        self.stats.gso_sent += done.iter().filter(|h| h[1] != 0).count() as u64;
                        sent += r;
                        k += r;
                        continue;
                    }
                }
                let e = last_errno();
                match e {
                    libc::EINTR if eintr < 16 => eintr += 1,
                    libc::EAGAIN | libc::ENOBUFS | libc::EINTR => {
                        self.stats.send_backpressure += 1;
                        self.stats.frames_sent += sent as u64;
                        return Ok(sent);
                    }
                    libc::EMSGSIZE | libc::EINVAL => {
                        self.stats.send_rejected += 1;
                        k += 1;
                    }
                    _ => {
                        self.stats.frames_sent += sent as u64;
                        if sent > 0 {
                            return Ok(sent);
                        }
                        return Err(gone_or(&self.name, "sending frames", CAP_RAW, e));
                    }
                }
            }
        }
        self.stats.frames_sent += sent as u64;
        Ok(sent)
    }

    /// The kernel's counters (PACKET_STATISTICS, summed since opening) and ours.
    pub fn stats(&mut self) -> RingStats {
        // SAFETY: plain integers; zero is valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = socklen_of::<libc::tpacket_stats_v3>();
        // SAFETY: PACKET_STATISTICS on a TPACKET_V3 socket writes a tpacket_stats_v3,
        // whose size len gives.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.stats.kernel_packets += u64::from(st.tp_packets);
            self.stats.kernel_drops += u64::from(st.tp_drops);
            self.stats.kernel_freeze_q_cnt += u64::from(st.tp_freeze_q_cnt);
        }
        self.stats
    }
}
