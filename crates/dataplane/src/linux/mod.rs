//! Linux packet-socket I/O for the live router.
//!
//! - [`iface`]: interface facts ([`IfInfo`]), bringing an interface up, and [`IoError`].
//! - [`ring`]: [`Ring`], one AF_PACKET socket on one interface with a TPACKET_V3 receive
//!   ring and batched transmit.
//! - [`offload`]: sans-IO resolution of the virtio-net header the kernel puts in front of
//!   each received frame: GSO segmentation and checksum completion.
//!
//! Offloads are handled rather than switched off: with `PACKET_VNET_HDR` the kernel's
//! `tpacket_rcv` writes a `struct virtio_net_hdr` just before the MAC header of every frame
//! in a TPACKET_V3 ring (checked by the root tests in `tests/linux_io.rs`), so the
//! interfaces keep GRO/TSO and the router still only ever sees MTU-sized frames with full
//! checksums.

pub mod iface;
pub mod offload;
pub mod ring;

pub use iface::{if_info, kernel_addresses, set_up, IfInfo, IoError, IoErrorKind};
pub use offload::{OffloadError, Segmenter, VnetHdr, VNET_HDR_LEN};
pub use ring::{Ring, RingConfig, RingStats};
