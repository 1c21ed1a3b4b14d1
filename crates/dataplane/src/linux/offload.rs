//! Offload resolution for frames read from a packet socket with `PACKET_VNET_HDR`.
//!
//! The sans-IO work lives in [`crate::gso`], which the router (on any platform) shares;
//! it is re-exported here, where the ring that needs it is.

pub use crate::gso::{
    complete_checksum, prepare_super, segment_ip_len, tx_header, Gso, GsoKind, Offload,
    OffloadError, Segmenter, VnetHdr, VNET_HDR_LEN,
};
