//! keepstate's live router.
//!
//! - [`router`]: the forwarding core, sans-IO like the engine: frames and `now` in, frames
//!   to send out. ARP and IPv6 neighbour discovery, routing to a next hop, TTL, ICMP errors
//!   and echo replies from the router's own addresses, with every IP packet judged (and
//!   translated) by the [`keepstate_policy::firewall::Firewall`] on the way.
//! - [`neigh`]: the neighbour cache behind it.
//! - [`gso`]: GSO super-frames and partial checksums (virtio-net headers): kept whole
//!   through the router, or cut into segments where they must be.
//! - [`linux`]: packet-socket I/O on Linux (TPACKET_V3 rings), interface facts, and the
//!   offload handling (virtio-net headers) that turns what the kernel hands over into
//!   ordinary frames.

pub mod gso;
pub mod neigh;
pub mod router;

#[cfg(target_os = "linux")]
pub mod linux;
