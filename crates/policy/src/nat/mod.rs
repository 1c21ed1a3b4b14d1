//! Network address translation: in-place packet rewriting with incremental checksum updates
//! ([`rewrite`], [`rewrite_icmp_error`]).
//!
//! Sans-IO like the rest of the policy: bytes in, bytes changed in place; no clock, no I/O.
//!
//! # Where NAT sits
//!
//! The engine tracks every connection by its tuple between the translations (after
//! destination NAT, before source NAT), so rules see inside addresses, and keeps each
//! connection's translation in its entry, filed under the tuples packets arrive with: one
//! lookup finds a connection from either side, as netfilter's conntrack does
//! (`keepstate_engine::nat`). The firewall asks for a translation when a connection opens
//! and rewrites each packet as the engine reports.
//!
//! # Behaviour (RFC 4787)
//!
//! - Mapping: [`Mapping::AddressAndPortDependent`] (netfilter's masquerade) makes a mapping
//!   per full translated tuple, so one outside port can serve several destinations;
//!   [`Mapping::EndpointIndependent`] (RFC 4787 REQ-1, what games and peer-to-peer need)
//!   gives an inside endpoint (address, port or ICMP identifier) the same outside port
//!   towards every destination, and never gives that port to another inside endpoint while
//!   it is held.
//! - Port preservation: like netfilter's `get_unique_tuple`, the inside source port is kept
//!   whenever the translated tuple stays unique, whatever the configured range; only when it
//!   is not is a port picked from the range (starting at an offset derived from a keyed hash
//!   of the tuple, since tuples are attacker-chosen, then scanning once round the range).
//!   The state table is the record of tuples in use, so the router's own connections from
//!   its outside address are avoided too, and a port is free again as soon as its
//!   connection leaves the table.
//! - ICMP queries (echo, timestamp, information, address mask; ICMPv6 echo) are translated
//!   by their identifier, which plays the part of both ports (`sport == dport == id`). They
//!   allocate identifiers from the same configured range as ports (the model's `nat_ports`
//!   covers both), so the defaults never pick identifiers below 1024 but keep any identifier
//!   that is free.
//! - Filtering: keepstate's filtering is address-and-port-dependent in both mapping modes:
//!   a translated connection only matches replies from the exact endpoint the inside host
//!   contacted, and the stateful filter admits inbound packets only for connections it
//!   tracks. An endpoint-independent mapping therefore makes the outside port *predictable*
//!   for other peers (so hole punching works) without opening it to them.

mod rewrite;

use core::fmt;
use core::net::IpAddr;

pub use rewrite::{
    rewrite, rewrite_icmp_error, rewrite_icmp_error_outer, rewrite_ipv4, rewrite_ipv4_plain,
    rewrite_octets, rewrite_tcp_seq,
};

/// A connection's addressing in one direction. For ICMP and ICMPv6 queries both ports are
/// the query identifier; for protocols without ports both are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple5 {
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl Tuple5 {
    /// The tuple of a packet travelling the other way.
    pub fn reversed(&self) -> Tuple5 {
        Tuple5 {
            proto: self.proto,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

impl From<keepstate_engine::Flow> for Tuple5 {
    fn from(f: keepstate_engine::Flow) -> Tuple5 {
        Tuple5 {
            proto: f.proto,
            src: f.src,
            sport: f.sport,
            dst: f.dst,
            dport: f.dport,
        }
    }
}

#[cfg(doc)]
use crate::model::Mapping;

/// Why a packet could not be rewritten. The packet is left exactly as it was. The
/// kebab-case names are stable, like `DropReason`'s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum NatSkip {
    /// The bytes end before a header or field that must be read or changed does, or before
    /// the length the IP header states.
    Truncated,
    /// The version nibble is neither 4 nor 6.
    BadIpVersion,
    /// A length that cannot be right (IPv4 header below 20 bytes or longer than the total
    /// length), a hop-by-hop header that does not directly follow the IPv6 header, or an
    /// ICMP error quoting a packet of the other IP version.
    Malformed,
    /// More IPv6 extension headers than are followed before the upper-layer header.
    ExtensionChainTooLong,
    /// An address to write is of the other IP version than the packet.
    FamilyMismatch,
    /// The destination of an IPv6 packet whose routing header still has segments left: the
    /// transport checksum covers the final destination, not the one in the header.
    RoutingHeader,
    /// An ICMP error in a non-first fragment: its quoted packet is in another fragment.
    Fragment,
    /// [`rewrite_icmp_error`] was given a packet that is not an ICMP or ICMPv6 error.
    NotIcmpError,
}

impl NatSkip {
    /// Every reason, in declaration order (for metrics that list zero counts too).
    pub const ALL: &'static [NatSkip] = &[
        NatSkip::Truncated,
        NatSkip::BadIpVersion,
        NatSkip::Malformed,
        NatSkip::ExtensionChainTooLong,
        NatSkip::FamilyMismatch,
        NatSkip::RoutingHeader,
        NatSkip::Fragment,
        NatSkip::NotIcmpError,
    ];

    /// The stable kebab-case name.
    pub const fn name(self) -> &'static str {
        match self {
            NatSkip::Truncated => "truncated",
            NatSkip::BadIpVersion => "bad-ip-version",
            NatSkip::Malformed => "malformed",
            NatSkip::ExtensionChainTooLong => "extension-chain-too-long",
            NatSkip::FamilyMismatch => "family-mismatch",
            NatSkip::RoutingHeader => "routing-header",
            NatSkip::Fragment => "fragment",
            NatSkip::NotIcmpError => "not-icmp-error",
        }
    }

    /// Parses a stable name back into the reason.
    pub fn from_name(name: &str) -> Option<NatSkip> {
        NatSkip::ALL.iter().copied().find(|r| r.name() == name)
    }
}

impl fmt::Display for NatSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for NatSkip {}
