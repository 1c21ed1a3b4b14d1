//! The policy as plain data: what a configuration file says, with names resolved to indices.
//!
//! `config` builds a [`Policy`] from TOML and reports errors with file, line and column;
//! `ruleset` compiles it for fast per-packet evaluation. Keeping this layer free of both lets
//! tests and embedders build policies in code.

use core::fmt;
use core::net::IpAddr;
use keepstate_engine::{CtState, Direction, Family, Time, Timeouts};

pub type ZoneId = u16;
pub type IfaceId = u16;
pub type SetId = u32;

/// Where in the configuration file something was written (1-based), for messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub line: u32,
    pub col: u32,
}

/// An address prefix (`192.0.2.0/24`, `2001:db8::/32`); a single address has the full length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The address as written (host bits may be set: an interface address keeps its own).
    pub addr: IpAddr,
    pub len: u8,
}

impl IpNet {
    /// Builds a prefix; `None` if `len` exceeds the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpNet> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (len <= max).then_some(IpNet { addr, len })
    }

    pub fn host(addr: IpAddr) -> IpNet {
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        IpNet { addr, len }
    }

    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The address with host bits cleared, as a 128-bit value (IPv4 in the low 32 bits).
    pub fn network_bits(&self) -> u128 {
        let (v, width) = addr_bits(self.addr);
        v & prefix_mask(width, self.len)
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        let (v, width) = addr_bits(a);
        let (_, own) = addr_bits(self.addr);
        width == own && (v & prefix_mask(width, self.len)) == self.network_bits()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An address as an integer and the family's width in bits.
pub fn addr_bits(a: IpAddr) -> (u128, u8) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

/// The mask of a `len`-bit prefix within a `width`-bit address.
pub fn prefix_mask(width: u8, len: u8) -> u128 {
    let width = u32::from(width.min(128));
    let len = u32::from(len).min(width);
    if len == 0 {
        return 0;
    }
    // `len` ones, then `width - len` zeros; both shifts stay below 128.
    (u128::MAX >> (128 - len)) << (width - len)
}

/// A network interface of the firewall.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub zone: ZoneId,
    /// The firewall's own addresses on this interface, each with its connected prefix
    /// (`192.168.1.1/24`). Packets to one of them go to the input chain; the prefixes route.
    pub addrs: Vec<IpNet>,
    /// Further prefixes reachable through this interface (static routes).
    pub routes: Vec<IpNet>,
    /// The default route leaves through this interface (the WAN uplink).
    pub default_route: bool,
    /// The next-hop router for the default route and the static routes through this
    /// interface, at most one per family (`gateway = ["203.0.113.1", "fe80::1"]`). Without
    /// one for a family, those destinations are treated as on-link.
    pub gateway: Vec<IpAddr>,
    /// Linux interface index, to name packets in cooked (SLL2) captures.
    pub ifindex: Option<u32>,
    /// MAC address, to name packets in plain Ethernet captures by their destination.
    pub mac: Option<[u8; 6]>,
    pub span: Span,
}

/// What a zone does with traffic no rule decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyAction {
    Accept,
    Drop,
    Reject,
}

impl PolicyAction {
    pub const fn name(self) -> &'static str {
        match self {
            PolicyAction::Accept => "accept",
            PolicyAction::Drop => "drop",
            PolicyAction::Reject => "reject",
        }
    }
}

/// NAT mapping behaviour on a masquerading zone (RFC 4787); the NAT issue implements it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// A new mapping per destination address and port (netfilter's default).
    #[default]
    AddressAndPortDependent,
    /// One mapping per internal address and port ("full cone").
    EndpointIndependent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    /// Traffic from this zone to the firewall itself.
    pub input: PolicyAction,
    /// Traffic from the firewall to this zone.
    pub output: PolicyAction,
    /// Traffic from this zone forwarded to any zone (unless a forwarding or rule says more).
    pub forward: PolicyAction,
    /// Rewrite the source of traffic leaving through this zone to the interface's address.
    pub masquerade: bool,
    pub mapping: Mapping,
    /// Drop packets arriving here whose source address routes back through another
    /// interface, is one of the firewall's own, or is a martian (strict reverse-path check,
    /// like pf's `antispoof` and Linux's `rp_filter`).
    pub antispoof: bool,
    /// Also drop packets arriving here from bogon sources (private, shared, documentation
    /// and other special-purpose space): for a zone facing the internet directly. Off by
    /// default, as a WAN behind another router legitimately sees private addresses.
    pub drop_bogons: bool,
    /// Rate-limit new TCP connections forwarded from this zone (to port-forwarded servers,
    /// say): one bucket for the zone.
    pub syn_limit: Option<Limit>,
    /// Rate-limit new UDP flows and ICMP queries from this zone (to the firewall or
    /// forwarded): one bucket each for the zone.
    pub udp_limit: Option<Limit>,
    pub icmp_limit: Option<Limit>,
    /// Per-source rate of new connections from this zone; a source over it is blocked
    /// (every packet from it dropped, established ones too) for `overload_timeout`.
    pub src_conn_limit: Option<Limit>,
    pub overload_timeout: Time,
    /// Most connections one source may have open from this zone at once (pf's
    /// `max-src-conn`).
    pub src_conn_max: Option<u32>,
    pub span: Span,
}

/// Forwarding of new connections from one zone to another is allowed (OpenWrt's
/// `config forwarding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forwarding {
    pub src: ZoneId,
    pub dest: ZoneId,
    pub span: Span,
}

/// A named set of prefixes that rules refer to by name (`@blocklist`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixSet {
    pub name: String,
    pub prefixes: Vec<IpNet>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneSel {
    /// `"*"`: any zone.
    Any,
    Zone(ZoneId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrItem {
    Net(IpNet),
    Set(SetId),
}

/// Addresses a rule matches: any of the items; `negate` inverts. Empty items match any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddrMatch {
    pub items: Vec<AddrItem>,
    pub negate: bool,
}

impl AddrMatch {
    pub fn is_any(&self) -> bool {
        self.items.is_empty() && !self.negate
    }
}

/// Inclusive port ranges; empty matches any port (and packets without ports).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortMatch {
    pub ranges: Vec<(u16, u16)>,
}

impl PortMatch {
    pub fn is_any(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// An ICMP or ICMPv6 type with an optional code (`echo-request`, `3/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpMatch {
    /// ICMPv6 when true, ICMP otherwise.
    pub v6: bool,
    pub ty: u8,
    pub code: Option<u8>,
}

/// TCP flags: those in `mask` must equal `value` (`"syn,!ack"` gives mask SYN|ACK, value SYN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFlagsMatch {
    pub mask: u8,
    pub value: u8,
}

/// A set of connection states as a bit mask (`1 << CtState as u8`); 0 matches any state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateSet(pub u8);

impl StateSet {
    pub const ANY: StateSet = StateSet(0);

    pub fn of(states: &[CtState]) -> StateSet {
        StateSet(states.iter().fold(0, |m, s| m | 1 << (*s as u8)))
    }

    pub fn contains(self, s: CtState) -> bool {
        self.0 == 0 || self.0 & (1 << (s as u8)) != 0
    }
}

/// A token-bucket rate: `count` packets per `per` (nanoseconds), bursts up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub count: u32,
    pub per: Time,
    pub burst: u32,
    /// One bucket per source address instead of one for the rule.
    pub per_source: bool,
}

/// ICMP/ICMPv6 code sent by `reject` for non-TCP traffic (TCP always gets a RST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RejectCode {
    #[default]
    PortUnreachable,
    HostUnreachable,
    NetUnreachable,
    AdminProhibited,
}

impl RejectCode {
    pub const fn name(self) -> &'static str {
        match self {
            RejectCode::PortUnreachable => "port-unreachable",
            RejectCode::HostUnreachable => "host-unreachable",
            RejectCode::NetUnreachable => "net-unreachable",
            RejectCode::AdminProhibited => "admin-prohibited",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    Reject(RejectCode),
    /// Log and go on to the next rule (nftables' `log`).
    Log,
    /// Count and go on to the next rule (nftables' `counter`).
    Counter,
}

impl Action {
    /// Whether the first match with this action decides the packet.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Action::Accept | Action::Drop | Action::Reject(_))
    }
}

/// What a rule matches. Every field left at its default matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    /// Source zone; `None` means the firewall itself (the output chain).
    pub src: Option<ZoneSel>,
    /// Destination zone; `None` means the firewall itself (the input chain).
    pub dest: Option<ZoneSel>,
    pub in_iface: Option<IfaceId>,
    pub out_iface: Option<IfaceId>,
    pub family: Option<Family>,
    pub src_addr: AddrMatch,
    pub dst_addr: AddrMatch,
    /// IP protocol numbers; empty matches any.
    pub proto: Vec<u8>,
    pub sport: PortMatch,
    pub dport: PortMatch,
    /// Any of these ICMP/ICMPv6 types; empty matches any.
    pub icmp: Vec<IcmpMatch>,
    pub tcp_flags: Option<TcpFlagsMatch>,
    pub ct_state: StateSet,
    pub ct_dir: Option<Direction>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name, or `None` (messages then use `rule #N`, counting from 1).
    pub name: Option<String>,
    pub m: Match,
    pub action: Action,
    /// Also log packets this rule decides (rate-limited by `Defaults::log_limit`).
    pub log: bool,
    /// The rule matches only while under this rate (nftables' `limit rate`).
    pub limit: Option<Limit>,
    pub span: Span,
}

/// A notrack rule: matching packets skip connection tracking (the raw table). Only what is
/// known before routing can be matched: `m.src`/`m.in_iface` and the header fields; `m.dest`,
/// `m.out_iface`, `m.ct_state` and `m.ct_dir` are left at their defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotrackRule {
    pub name: Option<String>,
    pub m: Match,
    pub span: Span,
}

/// A port forward (destination NAT) from a zone's address to an internal host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub name: Option<String>,
    /// Zone the connections arrive from (usually `wan`).
    pub src: ZoneId,
    /// TCP and/or UDP.
    pub proto: Vec<u8>,
    /// The external address; `None` means the addresses of the `src` zone's interfaces.
    pub external_addr: Option<IpAddr>,
    pub external_ports: (u16, u16),
    pub internal_addr: IpAddr,
    /// First internal port; `None` keeps the external port.
    pub internal_port: Option<u16>,
    /// Only these sources may use the forward.
    pub src_addr: AddrMatch,
    /// NAT reflection: LAN hosts using the external address reach the internal host.
    pub reflection: bool,
    /// TCP handshakes from outside are completed by the firewall first, with SYN cookies,
    /// and only then opened to the server (nftables' `synproxy`): a SYN flood reaches
    /// neither the server nor the state table.
    pub synproxy: bool,
    pub span: Span,
}

/// Static source NAT: new connections leaving through `dest` from `src_addr` get a source
/// address from `to` (one address, or a pool: a source always gets the same pool address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snat {
    pub name: Option<String>,
    pub dest: ZoneId,
    pub src_addr: AddrMatch,
    pub to: Vec<IpAddr>,
    pub span: Span,
}

/// 1:1 NAT (pf's `binat`): `internal` appears as `external` towards `zone`, in both
/// directions. Unlike a port forward it opens nothing: rules decide what may come in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneToOne {
    pub name: Option<String>,
    pub zone: ZoneId,
    pub internal: IpAddr,
    pub external: IpAddr,
    pub span: Span,
}

/// Global settings (OpenWrt's `config defaults`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Drop packets in state `invalid` before any rule (fw4's `drop_invalid`).
    pub drop_invalid: bool,
    /// Accept packets in state `established` or `related` before any rule (what every fw4
    /// chain starts with).
    pub accept_established: bool,
    /// How often `reject` may answer, so it cannot be used to amplify.
    pub reject_limit: Limit,
    /// How often `log` may write.
    pub log_limit: Limit,
    /// Ports (and ICMP identifiers) masquerade picks from when it cannot keep the original.
    pub nat_ports: (u16, u16),
    /// Rate-limit new TCP connections to the firewall itself (fw4's `synflood_protect`):
    /// at most `synflood_limit`, one bucket per zone they arrive from.
    pub synflood_protect: bool,
    pub synflood_limit: Limit,
    /// A source whose refused new connections reach this many distinct ports within
    /// `scan_window` is reported as a port scan (0: off; at most 256).
    pub scan_ports: u16,
    pub scan_window: Time,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            drop_invalid: true,
            accept_established: true,
            reject_limit: Limit {
                count: 10,
                per: Time::from_secs(1),
                burst: 20,
                per_source: false,
            },
            log_limit: Limit {
                count: 5,
                per: Time::from_secs(1),
                burst: 10,
                per_source: false,
            },
            nat_ports: (1024, 65535),
            // OpenWrt ships with synflood_protect on, 25/s burst 50.
            synflood_protect: true,
            synflood_limit: Limit {
                count: 25,
                per: Time::from_secs(1),
                burst: 50,
                per_source: false,
            },
            scan_ports: 20,
            scan_window: Time::from_secs(10),
        }
    }
}

/// Engine settings the file overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracking {
    pub max_connections: Option<u32>,
    /// Connections to set aside room for when the firewall starts (see
    /// [`keepstate_engine::Engine::reserve`]): netfilter's `hashsize`, as a count of
    /// connections.
    pub reserve_connections: Option<u32>,
    /// Netfilter's defaults unless the file sets them.
    pub timeouts: Timeouts,
    pub tcp_loose: Option<bool>,
    pub tcp_liberal: Option<bool>,
    pub verify_checksums: Option<bool>,
    /// Adaptive timeouts: (start, end) in percent of the table limit (pf's adaptive.start
    /// and adaptive.end; 60 and 120 there).
    pub adaptive: Option<(u32, u32)>,
}

/// A whole firewall policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub defaults: Defaults,
    pub tracking: Tracking,
    pub interfaces: Vec<Interface>,
    pub zones: Vec<Zone>,
    pub forwardings: Vec<Forwarding>,
    pub sets: Vec<PrefixSet>,
    /// Filter rules in file order; the first terminal match decides.
    pub rules: Vec<Rule>,
    pub notrack: Vec<NotrackRule>,
    pub port_forwards: Vec<PortForward>,
    /// Static source NAT, first match wins, before masquerade.
    pub snat: Vec<Snat>,
    pub one_to_one: Vec<OneToOne>,
}

impl Policy {
    pub fn zone_by_name(&self, name: &str) -> Option<ZoneId> {
        self.zones
            .iter()
            .position(|z| z.name == name)
            .and_then(|i| ZoneId::try_from(i).ok())
    }

    pub fn iface_by_name(&self, name: &str) -> Option<IfaceId> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .and_then(|i| IfaceId::try_from(i).ok())
    }

    /// Whether the policy asks for address translation.
    pub fn uses_nat(&self) -> bool {
        self.zones.iter().any(|z| z.masquerade)
            || !self.port_forwards.is_empty()
            || !self.snat.is_empty()
            || !self.one_to_one.is_empty()
    }

    /// How messages and traces name rule `index` (0-based).
    pub fn rule_label(&self, index: usize) -> String {
        match self.rules.get(index).and_then(|r| r.name.as_deref()) {
            Some(n) => n.to_string(),
            None => format!("rule #{}", index + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_contains() {
        let n = IpNet::new("192.168.1.1".parse().unwrap(), 24).unwrap();
        assert!(n.contains("192.168.1.200".parse().unwrap()));
        assert!(!n.contains("192.168.2.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all = IpNet::new("0.0.0.0".parse().unwrap(), 0).unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6 = IpNet::new("2001:db8::".parse().unwrap(), 32).unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::".parse().unwrap()));
        let full = IpNet::new("::".parse().unwrap(), 128).unwrap();
        assert!(full.contains("::".parse().unwrap()));
        assert!(IpNet::new("10.0.0.0".parse().unwrap(), 33).is_none());
    }

    #[test]
    fn state_sets() {
        let s = StateSet::of(&[CtState::Established, CtState::Related]);
        assert!(s.contains(CtState::Established));
        assert!(!s.contains(CtState::New));
        assert!(StateSet::ANY.contains(CtState::Invalid));
    }
}
