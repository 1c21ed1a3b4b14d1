//! Why a packet is invalid or dropped: one enum, shared by traces, logs, metrics and the UI.
//!
//! The kebab-case names are a stable interface: scripts, dashboards and alert rules match on
//! them. Add variants freely; never rename or reuse one.

use core::fmt;

macro_rules! reasons {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, )*) => {
        /// A named reason for an `invalid` classification or a drop.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum DropReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in declaration order (for metrics that list zero counts too).
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];

            /// How many reasons there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable kebab-case name.
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }

            /// Parses a stable name back into the reason.
            pub fn from_name(name: &str) -> Option<DropReason> {
                match name { $( $name => Some(DropReason::$variant), )* _ => None }
            }

            /// Dense index for counter arrays.
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

reasons! {
    /// The frame or a header inside it ends before the header does.
    Truncated = "truncated",
    /// The capture's link type is not one the engine reads.
    UnsupportedLinkType = "unsupported-link-type",
    /// More VLAN tags than the two (802.1ad + 802.1Q) that are supported.
    TooManyVlanTags = "too-many-vlan-tags",
    /// The IP version nibble does not match the link's protocol.
    BadIpVersion = "bad-ip-version",
    /// IPv4 header length below 20 bytes or beyond the packet.
    BadIpHeaderLength = "bad-ip-header-length",
    /// IPv4 total length or IPv6 payload length inconsistent with the frame.
    BadIpLength = "bad-ip-length",
    /// IPv4 header checksum does not verify.
    BadIpChecksum = "bad-ip-checksum",
    /// Source address that can never be a sender (multicast, broadcast, unspecified for TCP).
    BadSourceAddress = "bad-source-address",
    /// An IPv6 extension header is malformed.
    BadIpv6ExtensionHeader = "bad-ipv6-extension-header",
    /// The IPv6 extension-header chain is longer than the engine follows.
    Ipv6ExtensionChainTooLong = "ipv6-extension-chain-too-long",
    /// A non-first fragment: its transport header is in another fragment.
    Fragment = "fragment",
    /// A first fragment too short to hold the transport header.
    TinyFragment = "tiny-fragment",
    /// A fragment overlapping a piece of its datagram already seen (or of a datagram that
    /// had an overlap): the whole datagram is refused, as RFC 5722 asks.
    FragmentOverlap = "fragment-overlap",
    /// TCP data offset below 5 words or beyond the segment.
    TcpBadHeader = "tcp-bad-header",
    /// A TCP option runs past the header.
    TcpBadOption = "tcp-bad-option",
    /// A flag combination no TCP sends (SYN+FIN, NULL, Xmas, SYN+RST...).
    TcpBadFlags = "tcp-bad-flags",
    /// Transport checksum does not verify.
    BadChecksum = "bad-checksum",
    /// No tracked connection and this segment cannot open one (SYN/ACK, FIN, RST, or an ACK
    /// with mid-stream pickup off).
    TcpNotSyn = "tcp-not-syn",
    /// The segment is not allowed in the connection's current state.
    TcpInvalidTransition = "tcp-invalid-transition",
    /// Sequence number beyond what the receiver allowed (van Rooij bound I).
    TcpSeqOverWindow = "tcp-seq-over-window",
    /// Acknowledges data never sent (van Rooij bound III).
    TcpAckOverWindow = "tcp-ack-over-window",
    /// A RST whose sequence number is outside the window.
    TcpRstOutOfWindow = "tcp-rst-out-of-window",
    /// UDP length field inconsistent with the IP payload.
    UdpBadLength = "udp-bad-length",
    /// An ICMP/ICMPv6 type that can neither open nor belong to a connection.
    IcmpBadType = "icmp-bad-type",
    /// An echo (or other query) reply with no matching request.
    IcmpUnsolicitedReply = "icmp-unsolicited-reply",
    /// An ICMP error whose embedded header matches no tracked connection.
    IcmpErrorNoConnection = "icmp-error-no-connection",
    /// An ICMP error that matches a connection but is not addressed to its sender.
    IcmpErrorAddressMismatch = "icmp-error-address-mismatch",
    /// An ICMP error whose embedded packet is itself an ICMP error, or is malformed.
    IcmpErrorBadEmbedded = "icmp-error-bad-embedded",
    /// The state table is full of assured connections; the new one was refused.
    TableFull = "table-full",
    /// A policy rule's action is `drop`.
    RuleDrop = "rule-drop",
    /// A policy rule's action is `reject` (an answer is sent while the reject limit allows).
    RuleReject = "rule-reject",
    /// No rule decided and the zone's default policy drops or rejects.
    ZonePolicy = "zone-policy",
    /// The packet's zone is unknown: neither its interface nor a route names one.
    NoZone = "no-zone",
    /// Masquerade found no free port (or ICMP identifier) for a new connection.
    NatPortsExhausted = "nat-ports-exhausted",
    /// A reply addressed straight to the inside address of a masqueraded connection instead
    /// of to the address it was translated to: netfilter would not match it either.
    NatBypass = "nat-bypass",
    /// The packet belongs to a translated connection but cannot be rewritten (cut short, or
    /// an ICMP error quoting too little): sent on untranslated it would leak inside
    /// addresses.
    NatUnwritable = "nat-unwritable",
    /// Arrived on an interface its source address does not route back through, or claiming
    /// one of the firewall's own addresses: the zone's reverse-path check (`antispoof`).
    SpoofedSource = "spoofed-source",
    /// A source address no network hands out (unspecified, loopback, multicast, broadcast,
    /// reserved), arriving on a zone with `antispoof`.
    MartianSource = "martian-source",
    /// A source in private, shared, documentation or other special-purpose space, arriving
    /// on a zone with `drop_bogons`.
    BogonSource = "bogon-source",
    /// A new TCP connection over its zone's SYN rate (`synflood_protect` for connections to
    /// the firewall itself, the zone's `syn_limit` for forwarded ones).
    SynFlood = "syn-flood",
    /// A new UDP flow over its zone's `udp_limit`.
    UdpFlood = "udp-flood",
    /// A new ICMP or ICMPv6 query over its zone's `icmp_limit`.
    IcmpFlood = "icmp-flood",
    /// From a source that opened connections faster than its zone's `src_conn_limit`: it
    /// is blocked for the zone's `overload_timeout`.
    SourceOverload = "source-overload",
    /// The source already has as many connections from its zone as `src_conn_max` allows.
    SourceConnLimit = "source-conn-limit",
    /// A TCP packet to a SYN-proxied port forward that the proxy handled itself: a SYN it
    /// answered with a cookie, the ACK completing that handshake, the server's SYN/ACK it
    /// answered in the client's place, or anything else with no connection.
    SynProxy = "syn-proxy",
    /// An ACK to a SYN-proxied port forward whose SYN cookie is wrong or too old.
    SynProxyCookie = "syn-proxy-cookie",
    /// The live router: a forwarded packet whose TTL or hop limit ran out (answered with
    /// ICMP time exceeded).
    TtlExceeded = "ttl-exceeded",
    /// The live router: no route, or no next hop, towards the destination.
    NoRoute = "no-route",
    /// The live router: the next hop's link-layer address could not be resolved (ARP or
    /// neighbour discovery went unanswered), or too many packets were already waiting for it.
    NeighbourUnresolved = "neighbour-unresolved",
    /// The live router: larger than the egress MTU and not fragmentable here (IPv4 with DF,
    /// or IPv6); answered with ICMP fragmentation needed or packet too big.
    PacketTooBig = "packet-too-big",
    /// The live router: a frame addressed to another station's MAC address (the port is
    /// promiscuous) or a link-layer protocol the router does not speak.
    NotForUs = "not-for-us",
    /// The live router: accepted for the router itself, but no local service listens there
    /// (answered as a closed port: TCP RST or ICMP port unreachable).
    LocalPortClosed = "local-port-closed",
    /// The live dataplane: the kernel handed over an offloaded frame (GSO, partial checksum)
    /// whose offload metadata does not fit the packet.
    BadOffload = "bad-offload",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_kebab_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(seen.insert(r.name()), "duplicate {}", r.name());
            assert!(r
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
        }
    }
}
