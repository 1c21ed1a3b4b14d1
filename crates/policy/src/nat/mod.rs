//! Network address translation building blocks: in-place packet rewriting with incremental
//! checksum updates ([`rewrite`], [`rewrite_icmp_error`]) and the table of bindings between
//! a connection's original tuple and its translated form ([`NatTable`]).
//!
//! Sans-IO like the rest of the policy: bytes in, bytes changed in place; no clock, no I/O.
//!
//! # Where NAT sits
//!
//! The engine tracks every connection by its *untranslated* tuple (LAN host to server), so
//! rules and the state table see inside addresses. The caller rewrites around it, in
//! netfilter's places:
//!
//! - prerouting, before the engine: packets arriving for a translated address and port (the
//!   replies of a masqueraded connection) are looked up with [`NatTable::find_reply`] and
//!   their destination rewritten back; a port forward's first packet gets a binding from
//!   [`NatTable::dnat`] and its destination rewritten to the inside server;
//! - postrouting, after the filter accepted: the source of a masqueraded connection's
//!   packets is rewritten to the outside address ([`NatTable::snat`]), and the source of a
//!   port-forward server's replies back to the outside address.
//!
//! # Behaviour (RFC 4787)
//!
//! - Mapping: [`Mapping::AddressAndPortDependent`] (netfilter's masquerade) makes a mapping
//!   per full translated tuple, so one outside port can serve several destinations;
//!   [`Mapping::EndpointIndependent`] (RFC 4787 REQ-1, what games and peer-to-peer need)
//!   gives an inside endpoint (address, port) the same outside port towards every
//!   destination, and never gives that port to another inside endpoint while it is held.
//! - Port preservation: like netfilter's `get_unique_tuple`, the inside source port is kept
//!   whenever the translated tuple stays unique, whatever the configured range; only when it
//!   is not is a port picked from the range (starting at an offset derived from a keyed hash
//!   of the tuple, since tuples are attacker-chosen, then scanning once round the range).
//! - ICMP queries (echo, timestamp, information, address mask; ICMPv6 echo) are translated
//!   by their identifier, which plays the part of both ports (`sport == dport == id`). They
//!   allocate identifiers from the same configured range as ports (the model's `nat_ports`
//!   covers both), so the defaults never pick identifiers below 1024 but keep any identifier
//!   that is free.
//! - Filtering: keepstate's filtering is address-and-port-dependent in both mapping modes:
//!   a binding only matches replies from the exact endpoint the inside host contacted
//!   ([`NatTable::find_reply`] looks up the full tuple), and the stateful filter in front of
//!   it admits inbound packets only for connections it tracks. An endpoint-independent
//!   mapping therefore makes the outside port *predictable* for other peers (so hole
//!   punching works) without opening it to them.
//! - Collisions with connections that are not translated (the router's own connections from
//!   its outside address) are the caller's to report: [`NatTable::snat_with`] takes a
//!   predicate for tuples already in use elsewhere.

mod rewrite;
mod table;

use core::fmt;

pub use rewrite::{rewrite, rewrite_icmp_error, rewrite_icmp_error_outer};
pub use table::{Binding, BindingId, NatTable, Rewrite, Tuple5};

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

/// Why no binding could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatError {
    /// Every port (or ICMP identifier) of the range is taken for this destination, or, for
    /// a protocol without ports, the single translated tuple is. Also what a translation to
    /// an address of the other IP version gets: no port of that address can serve it.
    PortsExhausted,
}

impl NatError {
    /// The stable kebab-case name.
    pub const fn name(self) -> &'static str {
        match self {
            NatError::PortsExhausted => "nat-ports-exhausted",
        }
    }
}

impl fmt::Display for NatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for NatError {}
