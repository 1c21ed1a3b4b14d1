//! Linux packet-socket I/O for the live router.
//!
//! - [`iface`]: interface facts ([`IfInfo`]), bringing an interface up, and [`IoError`].
//! - [`ring`]: [`Ring`], one AF_PACKET socket on one interface with a TPACKET_V3 receive
//!   ring and batched transmit.
//! - [`xdp`]: [`XdpSocket`], one AF_XDP socket on one receive queue of an interface, fed
//!   by a minimal XDP program ([`XdpProgram`]) loaded and attached with bpf(2): the fast
//!   path where the kernel allows it, with the same shape as [`Ring`].
//! - [`offload`]: resolution of the virtio-net header the kernel puts in front of each
//!   received frame (the sans-IO code is [`crate::gso`]'s): checksum completion, and GSO
//!   super-frames either kept whole (with their segment size) or segmented.
//!
//! Offloads are handled rather than switched off: with `PACKET_VNET_HDR` the kernel's
//! `tpacket_rcv` writes a `struct virtio_net_hdr` just before the MAC header of every frame
//! in a TPACKET_V3 ring (checked by the root tests in `tests/linux_io.rs`), so the
//! interfaces keep GRO/TSO. The router sees frames with full checksums: MTU-sized ones,
//! and (with [`RingConfig::gso_passthrough`], the default) super-frames with their
//! [`Offload`], which [`Ring::send_offloaded`] sends as GSO frames again.

pub mod iface;
pub mod offload;
pub mod ring;
pub mod xdp;

pub use iface::{if_info, kernel_addresses, set_up, IfInfo, IoError, IoErrorKind};
pub use offload::{Gso, GsoKind, Offload, OffloadError, Segmenter, VnetHdr, VNET_HDR_LEN};
pub use ring::{Ring, RingConfig, RingStats};
pub use xdp::{
    complete_partial_checksum, rx_queues, XdpConfig, XdpMode, XdpProgram, XdpSocket, XdpStats,
};
