//! NAT through the whole firewall, by its public API only: policies are TOML text, packets
//! are built with etherparse's `PacketBuilder`, go through `Firewall::process`, and what
//! leaves (`Firewall::frame`) is read back with etherparse's `SlicedPacket`, every checksum
//! recomputed by etherparse. Nothing here names the NAT table itself, so these tests hold
//! wherever the firewall keeps its bindings.
// The random generator narrows its output on purpose.
#![allow(clippy::cast_possible_truncation)]

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use etherparse::{
    icmpv4, Icmpv4Type, IpNumber, Ipv4HeaderSlice, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};
use keepstate_engine::{
    Config, Conn, CtState, Direction, DropReason, L4Tuple, LinkType, TcpState, Time, Tuple,
};
use keepstate_policy::config;
use keepstate_policy::firewall::{Decision, Firewall, Frame, Ingress};
use keepstate_policy::model::IfaceId;
use keepstate_policy::ruleset::Verdict;

type Addr = [u8; 4];
/// A packet's addressing: (source, source port, destination, destination port), an ICMP
/// echo's identifier as both ports, zeros for protocols without ports.
type Ends = (Addr, u16, Addr, u16);

/// The router's outside address (wan0) and inside address (lan0).
const WAN: Addr = [203, 0, 113, 2];
const ROUTER_LAN: Addr = [192, 168, 1, 1];
/// Servers on the internet.
const SERVER: Addr = [198, 51, 100, 10];
const SERVER2: Addr = [198, 51, 100, 20];
const SERVER3: Addr = [192, 0, 2, 30];
/// An outside client using a port forward.
const CLIENT: Addr = [192, 0, 2, 77];
/// The LAN server behind the port forwards.
const PF_SERVER: Addr = [192, 168, 1, 10];
/// A router on the internet that reports a TTL running out.
const HOP: Addr = [100, 64, 0, 1];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 2, 0x23];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 1, 1];

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const GRE: u8 = 47;

fn lan_host(n: u8) -> Addr {
    [192, 168, 1, n]
}

// --- Policies ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mapping {
    AddressAndPortDependent,
    EndpointIndependent,
}

impl Mapping {
    fn name(self) -> &'static str {
        match self {
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
            Mapping::EndpointIndependent => "endpoint-independent",
        }
    }
}

/// A two-interface router: the LAN may go anywhere, the WAN zone masquerades with `mapping`
/// and lets nothing new in; `nat_ports` narrows the port range, `extra` is appended.
fn policy(mapping: Mapping, nat_ports: Option<&str>, extra: &str) -> String {
    let ports = nat_ports
        .map(|r| format!("nat_ports = \"{r}\"\n"))
        .unwrap_or_default();
    let mapping = mapping.name();
    format!(
        r#"
[defaults]
drop_invalid = true
accept_established = true
{ports}
[[interface]]
name = "lan0"
zone = "lan"
address = "192.168.1.1/24"

[[interface]]
name = "wan0"
zone = "wan"
address = "203.0.113.2/24"
default_route = true

[[zone]]
name = "lan"
input = "accept"
output = "accept"
forward = "accept"

[[zone]]
name = "wan"
input = "drop"
output = "accept"
forward = "drop"
masquerade = true
mapping = "{mapping}"

[[forwarding]]
src = "lan"
dest = "wan"
{extra}
"#
    )
}

/// TCP 8080 and UDP 5060 of the WAN address go to the LAN server, on other ports.
const PORT_FORWARDS: &str = r#"
[[port_forward]]
name = "web"
src = "wan"
proto = "tcp"
external_port = 8080
internal_ip = "192.168.1.10"
internal_port = 80

[[port_forward]]
name = "sip"
src = "wan"
proto = "udp"
external_port = 5060
internal_ip = "192.168.1.10"
internal_port = 5070
"#;

// --- The firewall under test ------------------------------------------------------------

struct Rig {
    fw: Firewall,
    now: Time,
    lan: IfaceId,
    wan: IfaceId,
}

impl Rig {
    fn new(text: &str) -> Rig {
        let loaded = config::parse("nat_firewall.toml", text, None)
            .unwrap_or_else(|e| panic!("the test policy does not load: {e:?}"));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let p = loaded.policy;
        let lan = p.iface_by_name("lan0").unwrap_or_else(|| panic!("no lan0"));
        let wan = p.iface_by_name("wan0").unwrap_or_else(|| panic!("no wan0"));
        Rig {
            fw: Firewall::new(p, Config::default()),
            now: Time::from_secs(1_000),
            lan,
            wan,
        }
    }

    fn with(mapping: Mapping) -> Rig {
        Rig::new(&policy(mapping, None, ""))
    }

    fn process(&mut self, ingress: Ingress, frame: &[u8]) -> Decision {
        self.fw
            .process(self.now, LinkType::Ethernet, frame, frame.len(), ingress)
    }

    fn lan(&mut self, frame: &[u8]) -> Decision {
        let i = Ingress::Arrived(self.lan);
        self.process(i, frame)
    }

    fn wan(&mut self, frame: &[u8]) -> Decision {
        let i = Ingress::Arrived(self.wan);
        self.process(i, frame)
    }

    fn local(&mut self, frame: &[u8]) -> Decision {
        self.process(Ingress::Local, frame)
    }

    /// Processes a packet NAT must translate, and returns it as it leaves.
    fn through(&mut self, ingress: Ingress, frame: &[u8], what: &str) -> (Decision, Vec<u8>) {
        let d = self.process(ingress, frame);
        assert_eq!(d.verdict, Verdict::Accept, "{what}: {d:?}");
        assert!(d.translated, "{what}: not translated: {d:?}");
        let out = self.fw.frame().to_vec();
        assert_eq!(out.get(..14), frame.get(..14), "{what}: link header kept");
        assert_eq!(out.len(), frame.len(), "{what}: length kept");
        (d, out)
    }

    /// A packet arriving on the LAN, as it leaves.
    fn out(&mut self, frame: &[u8], what: &str) -> Vec<u8> {
        let i = Ingress::Arrived(self.lan);
        self.through(i, frame, what).1
    }

    /// A packet arriving on the WAN, as it leaves.
    fn back(&mut self, frame: &[u8], what: &str) -> Vec<u8> {
        let i = Ingress::Arrived(self.wan);
        self.through(i, frame, what).1
    }

    fn advance_secs(&mut self, s: u64) {
        self.now = self.now.saturating_add_secs(s);
    }

    /// The listed connection whose original direction came from `src`.
    fn listed_from(&self, src: Addr, sport: u16) -> Conn {
        let all = self.fw.connections();
        let found = all
            .iter()
            .find(|c| ends(&c.original).0 == src && ends(&c.original).1 == sport);
        *found.unwrap_or_else(|| panic!("no connection from {src:?}:{sport} in {all:?}"))
    }
}

// --- Packets ----------------------------------------------------------------------------

fn udp(src: Addr, sport: u16, dst: Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap_or_else(|e| panic!("building UDP: {e:?}"));
    out
}

fn echo(src: Addr, dst: Addr, id: u16, seq: u16, reply: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(src, dst, 64);
    let step = if reply {
        ip.icmpv4_echo_reply(id, seq)
    } else {
        ip.icmpv4_echo_request(id, seq)
    };
    step.write(&mut out, payload)
        .unwrap_or_else(|e| panic!("building ICMP echo: {e:?}"));
    out
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;

/// A TCP segment; ACK is set exactly when `ack` is given.
#[derive(Clone, Copy, Debug)]
struct Seg {
    seq: u32,
    ack: Option<u32>,
    flags: u8,
}

fn tcp(src: Addr, sport: u16, dst: Addr, dport: u16, seg: Seg, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seg.seq, 64_240);
    if seg.flags & SYN != 0 {
        b = b.syn();
    }
    if seg.flags & FIN != 0 {
        b = b.fin();
    }
    if seg.flags & PSH != 0 {
        b = b.psh();
    }
    if seg.flags & RST != 0 {
        b = b.rst();
    }
    if let Some(a) = seg.ack {
        b = b.ack(a);
    }
    let mut out = Vec::new();
    b.write(&mut out, payload)
        .unwrap_or_else(|e| panic!("building TCP: {e:?}"));
    out
}

/// An IPv4 packet of protocol `proto` carrying `payload` (no transport header etherparse
/// knows).
fn raw_ip(src: Addr, dst: Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .write(&mut out, IpNumber(proto), payload)
        .unwrap_or_else(|e| panic!("building protocol {proto}: {e:?}"));
    out
}

fn icmp_error(src: Addr, dst: Addr, ty: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4(ty)
        .write(&mut out, quote)
        .unwrap_or_else(|e| panic!("building ICMP error: {e:?}"));
    out
}

/// The IP packet in an Ethernet frame.
fn ip_of(frame: &[u8]) -> &[u8] {
    assert_eq!(
        frame.get(12..14),
        Some(&[0x08, 0x00][..]),
        "an IPv4 Ethernet frame"
    );
    frame.get(14..).unwrap_or_default()
}

// --- Independent checks -----------------------------------------------------------------

/// Reads a frame as it leaves, checking every checksum with etherparse.
fn checked(frame: &[u8]) -> Ends {
    checked_ip(ip_of(frame))
}

/// Reads a whole IPv4 packet, checking its header checksum and length and the transport
/// checksum (TCP, UDP, ICMP) with etherparse.
fn checked_ip(ip: &[u8]) -> Ends {
    let s = SlicedPacket::from_ip(ip).unwrap_or_else(|e| panic!("unreadable packet: {e:?}"));
    let Some(NetSlice::Ipv4(v4)) = &s.net else {
        panic!("expected IPv4: {:?}", s.net)
    };
    let h = v4.header();
    assert_eq!(
        h.header_checksum(),
        h.to_header().calc_header_checksum(),
        "IPv4 header checksum"
    );
    assert_eq!(usize::from(h.total_len()), ip.len(), "IPv4 total length");
    let (src, dst) = (h.source(), h.destination());
    let (sport, dport) = match &s.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t
                .calc_checksum_ipv4(src, dst)
                .unwrap_or_else(|e| panic!("TCP checksum: {e:?}"));
            assert_eq!(t.checksum(), want, "TCP checksum");
            (t.source_port(), t.destination_port())
        }
        Some(TransportSlice::Udp(u)) => {
            assert_ne!(u.checksum(), 0, "the UDP checksum was filled in");
            let want = u
                .to_header()
                .calc_checksum_ipv4_raw(src, dst, u.payload())
                .unwrap_or_else(|e| panic!("UDP checksum: {e:?}"));
            assert_eq!(u.checksum(), want, "UDP checksum");
            (u.source_port(), u.destination_port())
        }
        Some(TransportSlice::Icmpv4(m)) => {
            assert_eq!(
                m.checksum(),
                m.icmp_type().calc_checksum(m.payload()),
                "ICMP checksum"
            );
            match m.icmp_type() {
                Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => (e.id, e.id),
                _ => (0, 0),
            }
        }
        None => (0, 0),
        Some(other) => panic!("unexpected transport {other:?}"),
    };
    (src, sport, dst, dport)
}

/// The transport payload of a frame (for protocols etherparse does not know, the IP
/// payload).
fn payload(frame: &[u8]) -> Vec<u8> {
    let s = SlicedPacket::from_ip(ip_of(frame)).unwrap_or_else(|e| panic!("unreadable: {e:?}"));
    match (&s.transport, &s.net) {
        (Some(TransportSlice::Tcp(t)), _) => t.payload().to_vec(),
        (Some(TransportSlice::Udp(u)), _) => u.payload().to_vec(),
        (Some(TransportSlice::Icmpv4(m)), _) => m.payload().to_vec(),
        (None, Some(NetSlice::Ipv4(v4))) => v4.payload().payload.to_vec(),
        other => panic!("unexpected packet {other:?}"),
    }
}

/// Sequence and acknowledgment numbers and flags (SYN, FIN, ACK) of a TCP frame.
fn tcp_numbers(frame: &[u8]) -> (u32, u32, bool, bool, bool) {
    let s = SlicedPacket::from_ip(ip_of(frame)).unwrap_or_else(|e| panic!("unreadable: {e:?}"));
    let Some(TransportSlice::Tcp(t)) = &s.transport else {
        panic!("expected TCP: {:?}", s.transport)
    };
    (
        t.sequence_number(),
        t.acknowledgment_number(),
        t.syn(),
        t.fin(),
        t.ack(),
    )
}

/// An ICMP error as it leaves, checked: the outer IPv4 header and ICMP checksums and the
/// quoted IPv4 header's checksum. Returns the outer source and destination, the ICMP type
/// and code, and the quote.
fn checked_error(frame: &[u8]) -> (Addr, Addr, u8, u8, Vec<u8>) {
    let ip = ip_of(frame);
    let s = SlicedPacket::from_ip(ip).unwrap_or_else(|e| panic!("unreadable: {e:?}"));
    let Some(NetSlice::Ipv4(v4)) = &s.net else {
        panic!("expected IPv4: {:?}", s.net)
    };
    let h = v4.header();
    assert_eq!(
        h.header_checksum(),
        h.to_header().calc_header_checksum(),
        "outer IPv4 header checksum"
    );
    let Some(TransportSlice::Icmpv4(m)) = &s.transport else {
        panic!("expected ICMP: {:?}", s.transport)
    };
    assert_eq!(
        m.checksum(),
        m.icmp_type().calc_checksum(m.payload()),
        "ICMP checksum"
    );
    let quote = m.payload();
    let q = Ipv4HeaderSlice::from_slice(quote)
        .unwrap_or_else(|e| panic!("the quote is not an IPv4 header: {e:?}"));
    assert_eq!(
        q.header_checksum(),
        q.to_header().calc_header_checksum(),
        "quoted IPv4 header checksum"
    );
    (
        h.source(),
        h.destination(),
        m.type_u8(),
        m.code_u8(),
        quote.to_vec(),
    )
}

fn v4(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(x) => x.octets(),
        IpAddr::V6(x) => panic!("expected IPv4, got {x}"),
    }
}

/// A listed tuple as [`Ends`].
fn ends(t: &Tuple) -> Ends {
    let (s, d) = match t.l4 {
        L4Tuple::Ports { sport, dport } => (sport, dport),
        L4Tuple::Icmp { id, .. } => (id, id),
        L4Tuple::None => (0, 0),
    };
    (v4(t.src), s, v4(t.dst), d)
}

fn accepted(d: &Decision) -> bool {
    d.verdict == Verdict::Accept
}

/// A fixed-seed xorshift generator, so every run tests the same inputs.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// What a test connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    Echo,
}

impl Kind {
    fn proto(self) -> u8 {
        match self {
            Kind::Tcp => TCP,
            Kind::Udp => UDP,
            Kind::Echo => ICMP,
        }
    }

    /// The first packet of a connection (a SYN for TCP; for echo `sport` is the identifier
    /// and `dport` unused).
    fn first(self, src: Addr, sport: u16, dst: Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        match self {
            Kind::Tcp => tcp(
                src,
                sport,
                dst,
                dport,
                Seg {
                    seq: 1000,
                    ack: None,
                    flags: SYN,
                },
                &[],
            ),
            Kind::Udp => udp(src, sport, dst, dport, payload),
            Kind::Echo => echo(src, dst, sport, 1, false, payload),
        }
    }

    /// The answer to [`Kind::first`] (a SYN/ACK for TCP).
    fn answer(self, src: Addr, sport: u16, dst: Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        match self {
            Kind::Tcp => tcp(
                src,
                sport,
                dst,
                dport,
                Seg {
                    seq: 7000,
                    ack: Some(1001),
                    flags: SYN,
                },
                &[],
            ),
            Kind::Udp => udp(src, sport, dst, dport, payload),
            Kind::Echo => echo(src, dst, dport, 1, true, payload),
        }
    }

    /// The payload [`Kind::first`] and [`Kind::answer`] carry.
    fn carried(self, payload: &[u8]) -> Vec<u8> {
        match self {
            Kind::Tcp => Vec::new(),
            Kind::Udp | Kind::Echo => payload.to_vec(),
        }
    }
}

// --- 1. Round trips ---------------------------------------------------------------------

/// Many random connections from a few LAN hosts and ports to a few servers, so that
/// collisions happen: each leaves from the WAN address, the server's answer to the
/// translated tuple reaches the LAN host at its own port, every checksum verifies, and the
/// listing shows each connection as netfilter would.
fn round_trip(mapping: Mapping, seed: u64) {
    let mut r = Rig::with(mapping);
    let mut rng = XorShift(seed);
    let servers = [SERVER, SERVER2, SERVER3];
    let mut opened: HashSet<(u8, Ends)> = HashSet::new();
    // Per outside tuple (protocol, outside port, server, server port): who owns it.
    let mut outside: HashMap<(u8, u16, Addr, u16), (Addr, u16)> = HashMap::new();
    // Per (protocol, outside port): the inside endpoints using it.
    let mut port_users: HashMap<(u8, u16), HashSet<(Addr, u16)>> = HashMap::new();
    // Per inside endpoint: its outside ports.
    let mut endpoint_ports: HashMap<(u8, Addr, u16), HashSet<u16>> = HashMap::new();
    let mut listed: HashSet<(u8, Ends, Ends)> = HashSet::new();
    let mut moved = 0;
    let mut kinds = [0usize; 3];
    for i in 0..900 {
        let kind = match rng.below(3) {
            0 => Kind::Tcp,
            1 => Kind::Udp,
            _ => Kind::Echo,
        };
        let proto = kind.proto();
        let host = lan_host(20 + rng.below(6) as u8);
        let server = servers[rng.below(3) as usize];
        let sport = if rng.below(3) == 0 {
            1024 + rng.below(64_000) as u16
        } else {
            40_000 + rng.below(4) as u16
        };
        let dport = match kind {
            Kind::Echo => sport,
            _ => [53, 443, 80][rng.below(3) as usize],
        };
        if !opened.insert((proto, (host, sport, server, dport))) {
            // That connection is already open.
            continue;
        }
        kinds[kind as usize] += 1;
        let n = rng.below(48) as usize;
        let data = rng.bytes(n);
        let what = format!("#{i} {kind:?} {host:?}:{sport} -> {server:?}:{dport} ({mapping:?})");

        let (d, sent) = r.through(
            Ingress::Arrived(r.lan),
            &kind.first(host, sport, server, dport, &data),
            &what,
        );
        assert_eq!(d.outcome.state, CtState::New, "{what}");
        let (src, port, dst, dp) = checked(&sent);
        assert_eq!(
            (src, dst),
            (WAN, server),
            "{what}: leaves from the WAN address"
        );
        let out_dport = if kind == Kind::Echo { port } else { dport };
        assert_eq!(dp, out_dport, "{what}: destination port kept");
        assert_eq!(payload(&sent), kind.carried(&data), "{what}: payload kept");
        moved += usize::from(port != sport);
        assert_eq!(
            outside.insert((proto, port, server, out_dport), (host, sport)),
            None,
            "{what}: outside tuple used twice"
        );
        port_users
            .entry((proto, port))
            .or_default()
            .insert((host, sport));
        endpoint_ports
            .entry((proto, host, sport))
            .or_default()
            .insert(port);

        let d = r.wan(&kind.answer(server, out_dport, WAN, port, &data));
        assert!(accepted(&d), "{what}: answer {d:?}");
        assert!(d.translated, "{what}: answer not translated {d:?}");
        assert_eq!(d.outcome.state, CtState::Established, "{what}");
        assert_eq!(d.outcome.dir, Some(Direction::Reply), "{what}");
        let back = r.fw.frame().to_vec();
        assert_eq!(
            checked(&back),
            (server, dport, host, sport),
            "{what}: the answer reaches the LAN host at its own port"
        );
        assert_eq!(payload(&back), kind.carried(&data), "{what}: payload kept");
        listed.insert((
            proto,
            (host, sport, server, dport),
            (server, out_dport, WAN, port),
        ));
    }
    assert!(
        kinds.iter().all(|k| *k > 100),
        "every kind was exercised: {kinds:?}"
    );
    assert!(moved > 50, "collisions were exercised: {moved}");
    if mapping == Mapping::EndpointIndependent {
        for (endpoint, ports) in &endpoint_ports {
            assert_eq!(ports.len(), 1, "EIM: one outside port for {endpoint:?}");
        }
        for (port, users) in &port_users {
            assert_eq!(users.len(), 1, "EIM: {port:?} serves one inside endpoint");
        }
    } else {
        assert!(
            port_users.values().any(|u| u.len() > 1),
            "APDM shares outside ports between destinations"
        );
    }
    // The listing: the original as the LAN host sent it, the reply to the WAN address.
    let got: HashSet<(u8, Ends, Ends)> =
        r.fw.connections()
            .iter()
            .map(|c| (c.proto, ends(&c.original), ends(&c.reply)))
            .collect();
    let missing: Vec<_> = listed.difference(&got).collect();
    let unexpected: Vec<_> = got.difference(&listed).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "listing: missing {missing:?}, unexpected {unexpected:?}"
    );
    assert_eq!(r.fw.engine().len(), listed.len());
    assert_eq!(r.fw.nat_bindings(), listed.len());
    let stats = r.fw.nat_stats().unwrap_or_else(|| panic!("NAT is on"));
    assert_eq!(stats.exhausted, 0);
    if let Err(e) = r.fw.engine().check_table() {
        panic!("state table inconsistent: {e}");
    }
}

#[test]
fn round_trip_address_and_port_dependent() {
    round_trip(Mapping::AddressAndPortDependent, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn round_trip_endpoint_independent() {
    round_trip(Mapping::EndpointIndependent, 0x2545_f491_4f6c_dd1d);
}

// --- 2, 3. Port choice ------------------------------------------------------------------

#[test]
fn source_port_kept_when_free_and_moved_on_collision() {
    for mapping in [
        Mapping::AddressAndPortDependent,
        Mapping::EndpointIndependent,
    ] {
        for kind in [Kind::Tcp, Kind::Udp] {
            let what = format!("{kind:?} {mapping:?}");
            let mut r = Rig::with(mapping);
            let (a, b, c) = (lan_host(20), lan_host(21), lan_host(22));
            let port_of = |r: &mut Rig, host, server| {
                let sent = r.out(&kind.first(host, 40_000, server, 443, b"q"), &what);
                let (src, port, dst, dport) = checked(&sent);
                assert_eq!((src, dst, dport), (WAN, server, 443), "{what}");
                port
            };
            let pa = port_of(&mut r, a, SERVER);
            assert_eq!(pa, 40_000, "{what}: the source port is kept when free");
            let pb = port_of(&mut r, b, SERVER);
            assert_ne!(pb, 40_000, "{what}: the same tuple cannot be used twice");
            assert!(pb >= 1024, "{what}: from the default range: {pb}");
            let pc = port_of(&mut r, c, SERVER2);
            match mapping {
                Mapping::AddressAndPortDependent => {
                    assert_eq!(pc, 40_000, "{what}: another server, the tuple is unique");
                }
                Mapping::EndpointIndependent => {
                    // 40000 may only be a's, to every destination.
                    assert_ne!(pc, 40_000, "{what}: an EIM port serves one endpoint");
                    assert_ne!(pc, pb, "{what}: an EIM port serves one endpoint");
                }
            }
            // Each answer goes to the host that owns the outside tuple.
            for (server, port, host) in [(SERVER, pa, a), (SERVER, pb, b), (SERVER2, pc, c)] {
                let back = r.back(&kind.answer(server, 443, WAN, port, b"r"), &what);
                assert_eq!(checked(&back), (server, 443, host, 40_000), "{what}");
            }
        }
    }
}

/// A server's RST answering a SYN ends the connection there and then (netfilter: there
/// never was one); the RST itself must still reach the LAN host translated, with valid
/// checksums, and the outside port is free again.
#[test]
fn reset_answering_a_syn_is_translated_although_it_removes_the_connection() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let host = lan_host(30);
    let syn = Seg {
        seq: 1000,
        ack: None,
        flags: SYN,
    };
    let sent = r.out(&tcp(host, 41_000, SERVER, 443, syn, &[]), "syn");
    let (src, port, dst, _) = checked(&sent);
    assert_eq!((src, dst), (WAN, SERVER));
    assert_eq!(r.fw.engine().len(), 1);
    let rst = Seg {
        seq: 0,
        ack: Some(1001),
        flags: RST,
    };
    let back = r.back(&tcp(SERVER, 443, WAN, port, rst, &[]), "rst");
    assert_eq!(checked(&back), (SERVER, 443, host, 41_000));
    assert_eq!(tcp_numbers(&back).1, 1001);
    assert_eq!(r.fw.engine().len(), 0, "the RST removed the connection");
    r.fw.engine().check_table().expect("table consistent");
}

#[test]
fn endpoint_independent_mapping_uses_one_port_for_every_server() {
    let mut r = Rig::with(Mapping::EndpointIndependent);
    // Another host holds 3478, so the endpoint under test is given a port from the range.
    let first = r.out(&udp(lan_host(9), 3478, SERVER3, 3478, b"x"), "holder");
    assert_eq!(checked(&first).1, 3478);
    let host = lan_host(30);
    let mut ports = Vec::new();
    for server in [SERVER, SERVER2, SERVER3] {
        let sent = r.out(&udp(host, 3478, server, 3478, b"binding request"), "eim");
        let (src, port, dst, _) = checked(&sent);
        assert_eq!((src, dst), (WAN, server));
        ports.push(port);
    }
    assert_ne!(ports[0], 3478);
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    let port = ports[0];
    for server in [SERVER, SERVER2, SERVER3] {
        let back = r.back(&udp(server, 3478, WAN, port, b"binding response"), "eim");
        assert_eq!(checked(&back), (server, 3478, host, 3478));
    }
    // TCP from one endpoint to two servers keeps one port as well.
    let mut tcp_ports = Vec::new();
    for server in [SERVER, SERVER2] {
        let sent = r.out(&Kind::Tcp.first(host, 50_000, server, 443, b""), "eim tcp");
        tcp_ports.push(checked(&sent).1);
    }
    assert_eq!(tcp_ports[0], tcp_ports[1]);
    // Filtering stays address-and-port-dependent: a server the host never contacted does
    // not get in through the mapping.
    let d = r.wan(&udp([198, 51, 100, 99], 3478, WAN, port, b"unsolicited"));
    assert_eq!(d.verdict, Verdict::Drop, "{d:?}");
    assert!(!d.translated);
}

// --- 4, 5. Exhaustion, ICMP identifiers --------------------------------------------------

#[test]
fn exhausted_ports_drop_new_connections_until_they_expire() {
    let mut r = Rig::new(&policy(
        Mapping::AddressAndPortDependent,
        Some("5000-5001"),
        "",
    ));
    let hosts = [30, 31, 32, 33].map(lan_host);
    // Every host uses source port 5000 towards the same server: two fit in the range.
    let mut ports = Vec::new();
    for h in &hosts[..2] {
        let sent = r.out(&udp(*h, 5000, SERVER, 53, b"q"), "fits");
        ports.push(checked(&sent).1);
    }
    assert_eq!(ports, [5000, 5001]);
    let stats = |r: &Rig| {
        r.fw.nat_stats()
            .unwrap_or_else(|| panic!("NAT is on"))
            .exhausted
    };
    assert_eq!(stats(&r), 0);
    for h in &hosts[2..] {
        let d = r.lan(&udp(*h, 5000, SERVER, 53, b"q"));
        assert_eq!(d.verdict, Verdict::Drop, "{d:?}");
        assert_eq!(d.outcome.reason, Some(DropReason::NatPortsExhausted));
        assert_eq!(
            d.outcome.reason.map(DropReason::name),
            Some("nat-ports-exhausted")
        );
        assert!(!d.translated);
    }
    assert_eq!(stats(&r), 2);
    assert_eq!(
        r.fw.engine().len(),
        2,
        "refused connections are not tracked"
    );
    assert_eq!(r.fw.nat_bindings(), 2);
    // The two connections still work.
    for (h, p) in hosts.iter().zip(&ports) {
        let back = r.back(&udp(SERVER, 53, WAN, *p, b"a"), "answer");
        assert_eq!(checked(&back), (SERVER, 53, *h, 5000));
    }
    // Towards another server the tuple is unique again, and the port is kept.
    let sent = r.out(&udp(hosts[2], 5000, SERVER2, 53, b"q"), "other server");
    assert_eq!(checked(&sent).1, 5000);

    // Later, past every UDP timeout; the router sees other traffic meanwhile.
    r.advance_secs(300);
    for i in 0..64 {
        let d = r.lan(&udp(lan_host(40), 10_000 + i, ROUTER_LAN, 53, b"tick"));
        assert!(accepted(&d), "{d:?}");
        assert!(!d.translated, "to the router itself");
    }
    assert!(
        r.fw.connections()
            .iter()
            .all(|c| ends(&c.original).0 == lan_host(40)),
        "the old connections expired"
    );
    // The ports are back: two new connections fit, the third does not.
    let mut again = Vec::new();
    for h in &hosts[2..] {
        let sent = r.out(&udp(*h, 5000, SERVER, 53, b"q"), "after expiry");
        again.push(checked(&sent).1);
    }
    again.sort_unstable();
    assert_eq!(again, [5000, 5001]);
    assert_eq!(r.fw.nat_bindings(), 2, "expired bindings were released");
    let d = r.lan(&udp(hosts[0], 5000, SERVER, 53, b"q"));
    assert_eq!(d.outcome.reason, Some(DropReason::NatPortsExhausted));
    assert_eq!(stats(&r), 3);
}

#[test]
fn icmp_echo_identifiers_are_allocated_like_ports() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let (a, b) = (lan_host(50), lan_host(51));
    let id = 0x1234;
    let sent_a = r.out(&echo(a, SERVER, id, 1, false, b"ping a"), "a");
    let sent_b = r.out(&echo(b, SERVER, id, 1, false, b"ping b"), "b");
    let (src, ida, dst, _) = checked(&sent_a);
    assert_eq!((src, ida, dst), (WAN, id, SERVER), "kept when free");
    let (src, idb, dst, _) = checked(&sent_b);
    assert_eq!((src, dst), (WAN, SERVER));
    assert_ne!(idb, id, "the same identifier to the same server is moved");
    assert_eq!(payload(&sent_b), b"ping b");
    // Replies, in either order, reach the right host with its own identifier.
    for (outside, host, seq, data) in [(idb, b, 7, &b"pong b"[..]), (ida, a, 8, b"pong a")] {
        let back = r.back(&echo(SERVER, WAN, outside, seq, true, data), "reply");
        assert_eq!(checked(&back), (SERVER, id, host, id));
        assert_eq!(payload(&back), data);
        let s = SlicedPacket::from_ip(ip_of(&back)).unwrap_or_else(|e| panic!("{e:?}"));
        let Some(TransportSlice::Icmpv4(m)) = &s.transport else {
            panic!("expected ICMP")
        };
        let Icmpv4Type::EchoReply(h) = m.icmp_type() else {
            panic!("expected an echo reply: {:?}", m.icmp_type())
        };
        assert_eq!(h.seq, seq, "the sequence number is kept");
    }
}

#[test]
fn echo_with_a_changed_identifier_is_listed_and_guarded_like_ports() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let (a, b) = (lan_host(54), lan_host(55));
    let id = 0x4242;
    r.out(&echo(a, SERVER, id, 1, false, b"a"), "a");
    let sent = r.out(&echo(b, SERVER, id, 1, false, b"b"), "b");
    let idb = checked(&sent).1;
    assert_ne!(idb, id);
    let back = r.back(&echo(SERVER, WAN, idb, 1, true, b"b"), "reply");
    assert_eq!(checked(&back), (SERVER, id, b, id));
    // A reply sent straight to the inside host is refused, as for ports.
    let d = r.wan(&echo(SERVER, b, id, 2, true, b"b"));
    assert_eq!(d.verdict, Verdict::Drop, "{d:?}");
    assert_eq!(d.outcome.reason, Some(DropReason::NatBypass));
    // The listing: the original as b sent it, the reply to the WAN address with the
    // identifier used outside.
    let c = r.listed_from(b, id);
    assert_eq!(ends(&c.original), (b, id, SERVER, id));
    assert_eq!(ends(&c.reply), (SERVER, idb, WAN, idb));
}

#[test]
fn icmp_echo_identifiers_come_from_the_port_range() {
    let mut r = Rig::new(&policy(
        Mapping::AddressAndPortDependent,
        Some("5000-5001"),
        "",
    ));
    let mut ids = Vec::new();
    for h in 50..53 {
        let sent = r.out(&echo(lan_host(h), SERVER, 1, 1, false, b"ping"), "echo");
        ids.push(checked(&sent).1);
    }
    ids.sort_unstable();
    assert_eq!(ids, [1, 5000, 5001]);
    let d = r.lan(&echo(lan_host(53), SERVER, 1, 1, false, b"ping"));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.outcome.reason, Some(DropReason::NatPortsExhausted));
    // Another identifier outside the range is simply kept.
    let sent = r.out(&echo(lan_host(53), SERVER, 2, 1, false, b"ping"), "id 2");
    assert_eq!(checked(&sent).1, 2);
}

// --- 6. Protocols without ports ---------------------------------------------------------

#[test]
fn gre_is_masqueraded_and_its_reply_returns() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let (a, b) = (lan_host(60), lan_host(61));
    // A GRE header (no flags, carrying IPv4) and a few bytes.
    let gre = [0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x14, 1, 2, 3, 4];
    let sent = r.out(&raw_ip(a, SERVER, GRE, &gre), "gre out");
    assert_eq!(checked(&sent), (WAN, 0, SERVER, 0));
    assert_eq!(payload(&sent), gre);
    let back = r.back(&raw_ip(SERVER, WAN, GRE, &gre), "gre back");
    assert_eq!(checked(&back), (SERVER, 0, a, 0));
    assert_eq!(payload(&back), gre);
    let c = r.listed_from(a, 0);
    assert_eq!(c.proto, GRE);
    assert_eq!(ends(&c.reply), (SERVER, 0, WAN, 0));
    // Without ports, a second host cannot share the WAN address towards that server...
    let d = r.lan(&raw_ip(b, SERVER, GRE, &gre));
    assert_eq!(d.verdict, Verdict::Drop, "{d:?}");
    assert_eq!(d.outcome.reason, Some(DropReason::NatPortsExhausted));
    // ...but can towards another.
    let sent = r.out(&raw_ip(b, SERVER2, GRE, &gre), "gre to another server");
    assert_eq!(checked(&sent), (WAN, 0, SERVER2, 0));
    let back = r.back(&raw_ip(SERVER2, WAN, GRE, &gre), "gre back");
    assert_eq!(checked(&back), (SERVER2, 0, b, 0));
}

// --- 7. The router's own connections ----------------------------------------------------

#[test]
fn router_own_connection_moves_a_masqueraded_port() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let p = 40_000;
    let own = tcp(
        WAN,
        p,
        SERVER,
        443,
        Seg {
            seq: 100,
            ack: None,
            flags: SYN,
        },
        &[],
    );
    let d = r.local(&own);
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.state, CtState::New);
    let host = lan_host(70);
    let sent = r.out(&Kind::Tcp.first(host, p, SERVER, 443, b""), "lan");
    let (src, port, ..) = checked(&sent);
    assert_eq!(src, WAN);
    assert_ne!(
        port, p,
        "WAN:{p} to the server is the router's own connection"
    );
    // The server's answer to the router stays with the router...
    let d = r.wan(&tcp(
        SERVER,
        443,
        WAN,
        p,
        Seg {
            seq: 5000,
            ack: Some(101),
            flags: SYN,
        },
        &[],
    ));
    assert!(accepted(&d), "{d:?}");
    assert!(
        !d.translated,
        "the router's answer is not for the LAN: {d:?}"
    );
    assert_eq!(d.outcome.state, CtState::Established);
    // ...and the answer to the masqueraded connection reaches the LAN host.
    let back = r.back(&Kind::Tcp.answer(SERVER, 443, WAN, port, b""), "lan answer");
    assert_eq!(checked(&back), (SERVER, 443, host, p));
}

// --- 8. ICMP errors ---------------------------------------------------------------------

#[test]
fn time_exceeded_is_translated_back_to_the_lan_host() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let host = lan_host(80);
    // (kind, source port, destination port, bytes of the translated packet quoted, whether
    // another host holds the port first so that the probe's is changed)
    let cases = [
        (Kind::Udp, 33_434, 33_434, usize::MAX, true),
        (Kind::Udp, 33_435, 33_435, 28, true),
        (Kind::Udp, 33_436, 33_436, usize::MAX, false),
        (Kind::Tcp, 45_000, 443, usize::MAX, true),
        (Kind::Tcp, 45_001, 443, 28, true),
        (Kind::Echo, 777, 777, usize::MAX, false),
    ];
    for (kind, sport, dport, quote_len, taken) in cases {
        time_exceeded_case(&mut r, host, kind, (sport, dport), quote_len, taken);
    }
}

#[test]
fn time_exceeded_about_an_echo_with_a_changed_identifier() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    time_exceeded_case(
        &mut r,
        lan_host(80),
        Kind::Echo,
        (778, 778),
        usize::MAX,
        true,
    );
}

/// A probe from `host` to SERVER leaves masqueraded (with its source port or identifier
/// changed when `taken`: another host holds it first), HOP reports its TTL ran out quoting
/// `quote_len` bytes of it as it left: the error reaches `host` from HOP, quoting the probe
/// as `host` sent it.
fn time_exceeded_case(
    r: &mut Rig,
    host: Addr,
    kind: Kind,
    (sport, dport): (u16, u16),
    quote_len: usize,
    taken: bool,
) {
    let what = format!("{kind:?} from port {sport} quoting {quote_len}");
    if taken {
        r.out(
            &kind.first(lan_host(81), sport, SERVER, dport, b"other"),
            &what,
        );
    }
    let probe = kind.first(host, sport, SERVER, dport, b"traceroute probe");
    let left = r.out(&probe, &what);
    let (_, port, ..) = checked(&left);
    assert_eq!(port != sport, taken, "{what}");
    let left_ip = ip_of(&left);
    let quote = &left_ip[..quote_len.min(left_ip.len())];
    let err = icmp_error(
        HOP,
        WAN,
        Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit),
        quote,
    );
    let (d, back) = r.through(Ingress::Arrived(r.wan), &err, &what);
    assert_eq!(d.outcome.state, CtState::Related, "{what}");
    let (src, dst, ty, code, q) = checked_error(&back);
    assert_eq!((src, dst), (HOP, host), "{what}: outer addresses");
    assert_eq!((ty, code), (11, 0), "{what}");
    // The quote is now what the LAN host sent, byte for byte: addresses, ports, the
    // quoted checksums.
    let sent_ip = ip_of(&probe);
    assert_eq!(q.len(), quote.len(), "{what}");
    assert_eq!(&q[..], &sent_ip[..q.len()], "{what}: quote");
    if quote_len == usize::MAX {
        assert_eq!(checked_ip(&q), checked_ip(sent_ip), "{what}");
    }
}

#[test]
fn port_unreachable_from_a_port_forward_server_leaves_from_the_wan_address() {
    let mut r = Rig::new(&policy(
        Mapping::AddressAndPortDependent,
        None,
        PORT_FORWARDS,
    ));
    let invite = udp(CLIENT, 5000, WAN, 5060, b"INVITE sip:x@example.net SIP/2.0");
    let delivered = r.back(&invite, "forwarded");
    assert_eq!(checked(&delivered), (CLIENT, 5000, PF_SERVER, 5070));
    // Nothing listens: the server answers with port unreachable, quoting what it got.
    let err = icmp_error(
        PF_SERVER,
        CLIENT,
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
        ip_of(&delivered),
    );
    let (d, out) = r.through(Ingress::Arrived(r.lan), &err, "port unreachable");
    assert_eq!(d.outcome.state, CtState::Related);
    let (src, dst, ty, code, q) = checked_error(&out);
    assert_eq!((src, dst), (WAN, CLIENT), "from the WAN address");
    assert_eq!((ty, code), (3, 3));
    // The quote is the packet as the client sent it: to the WAN address, port 5060.
    assert_eq!(checked_ip(&q), (CLIENT, 5000, WAN, 5060));
    assert_eq!(&q[..], ip_of(&invite));
}

// --- 9. The listing ---------------------------------------------------------------------

#[test]
fn connections_list_translated_tuples_as_netfilter_does() {
    let mut r = Rig::new(&policy(
        Mapping::AddressAndPortDependent,
        None,
        PORT_FORWARDS,
    ));
    // Masquerade, with the second host's port moved.
    let (a, b) = (lan_host(90), lan_host(91));
    r.out(&Kind::Tcp.first(a, 40_000, SERVER, 443, b""), "a");
    let sent = r.out(&Kind::Tcp.first(b, 40_000, SERVER, 443, b""), "b");
    let pb = checked(&sent).1;
    assert_ne!(pb, 40_000);
    for (host, port) in [(a, 40_000), (b, pb)] {
        let c = r.listed_from(host, 40_000);
        assert_eq!(c.proto, TCP);
        assert_eq!(ends(&c.original), (host, 40_000, SERVER, 443));
        assert_eq!(ends(&c.reply), (SERVER, 443, WAN, port));
        assert_eq!(c.tcp_state, Some(TcpState::SynSent));
    }
    r.back(&Kind::Tcp.answer(SERVER, 443, WAN, pb, b""), "b answered");
    let c = r.listed_from(b, 40_000);
    assert_eq!(ends(&c.original), (b, 40_000, SERVER, 443));
    assert_eq!(ends(&c.reply), (SERVER, 443, WAN, pb));
    assert!(c.seen_reply);

    // A port forward: the original to the WAN address, the reply from the LAN server.
    let syn = tcp(
        CLIENT,
        51_000,
        WAN,
        8080,
        Seg {
            seq: 1,
            ack: None,
            flags: SYN,
        },
        &[],
    );
    let delivered = r.back(&syn, "forwarded");
    assert_eq!(checked(&delivered), (CLIENT, 51_000, PF_SERVER, 80));
    let c = r.listed_from(CLIENT, 51_000);
    assert_eq!(ends(&c.original), (CLIENT, 51_000, WAN, 8080));
    assert_eq!(ends(&c.reply), (PF_SERVER, 80, CLIENT, 51_000));
    let synack = tcp(
        PF_SERVER,
        80,
        CLIENT,
        51_000,
        Seg {
            seq: 900,
            ack: Some(2),
            flags: SYN,
        },
        &[],
    );
    let answered = r.out(&synack, "server answers");
    assert_eq!(checked(&answered), (WAN, 8080, CLIENT, 51_000));
    let c = r.listed_from(CLIENT, 51_000);
    assert_eq!(ends(&c.original), (CLIENT, 51_000, WAN, 8080));
    assert_eq!(ends(&c.reply), (PF_SERVER, 80, CLIENT, 51_000));
    assert_eq!(r.fw.connections().len(), 3);
}

// --- 10. Bypass -------------------------------------------------------------------------

#[test]
fn replies_to_the_inside_address_are_dropped_as_nat_bypass() {
    for mapping in [
        Mapping::AddressAndPortDependent,
        Mapping::EndpointIndependent,
    ] {
        let mut r = Rig::with(mapping);
        let host = lan_host(100);
        for kind in [Kind::Udp, Kind::Tcp] {
            let sent = r.out(&kind.first(host, 41_000, SERVER, 443, b"q"), "out");
            let port = checked(&sent).1;
            let entries = r.fw.engine().len();
            // Straight to the LAN host, as if the router only routed.
            let d = r.wan(&kind.answer(SERVER, 443, host, 41_000, b"a"));
            assert_eq!(d.verdict, Verdict::Drop, "{kind:?} {mapping:?}: {d:?}");
            assert_eq!(d.outcome.reason, Some(DropReason::NatBypass));
            assert_eq!(d.outcome.reason.map(DropReason::name), Some("nat-bypass"));
            assert!(!d.translated);
            assert_eq!(r.fw.engine().len(), entries);
            // The proper answer, to the WAN address, still passes.
            let back = r.back(&kind.answer(SERVER, 443, WAN, port, b"a"), "back");
            assert_eq!(checked(&back), (SERVER, 443, host, 41_000));
        }
    }
}

// --- 11. A whole TCP connection ---------------------------------------------------------

#[test]
fn tcp_connection_through_masquerade_from_syn_to_time_wait() {
    let mut r = Rig::with(Mapping::AddressAndPortDependent);
    let host = lan_host(110);
    let sport = 50_123;
    // Another host holds the port, so this connection's is moved.
    r.out(
        &Kind::Tcp.first(lan_host(111), sport, SERVER, 80, b""),
        "other",
    );
    let request = b"GET / HTTP/1.0\r\nHost: example.net\r\n\r\n";
    let response = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    let (c_isn, s_isn) = (0x1234_5678u32, 0xfedc_ba98u32);
    let req_len = request.len() as u32;
    let resp_len = response.len() as u32;
    let c = |seq: u32, ack: Option<u32>, flags: u8, data: &[u8]| {
        tcp(host, sport, SERVER, 80, Seg { seq, ack, flags }, data)
    };
    // SYN
    let syn = c(c_isn, None, SYN, &[]);
    let (d, left) = r.through(Ingress::Arrived(r.lan), &syn, "SYN");
    assert_eq!(d.outcome.state, CtState::New);
    assert_eq!(tcp_numbers(&left), tcp_numbers(&syn));
    let (src, port, dst, dport) = checked(&left);
    assert_eq!((src, dst, dport), (WAN, SERVER, 80));
    assert_ne!(port, sport);
    let s = |seq: u32, ack: u32, flags: u8, data: &[u8]| {
        tcp(
            SERVER,
            80,
            WAN,
            port,
            Seg {
                seq,
                ack: Some(ack),
                flags,
            },
            data,
        )
    };
    // (from the LAN host, the segment as sent, its payload, what it is)
    let c1 = c_isn.wrapping_add(1);
    let s1 = s_isn.wrapping_add(1);
    let steps: Vec<(bool, Vec<u8>, &[u8], &str)> = vec![
        (false, s(s_isn, c1, SYN, &[]), &[], "SYN/ACK"),
        (true, c(c1, Some(s1), 0, &[]), &[], "ACK"),
        (true, c(c1, Some(s1), PSH, request), request, "request"),
        (
            false,
            s(s1, c1.wrapping_add(req_len), PSH, response),
            response,
            "response",
        ),
        (
            true,
            c(
                c1.wrapping_add(req_len),
                Some(s1.wrapping_add(resp_len)),
                FIN,
                &[],
            ),
            &[],
            "client FIN",
        ),
        (
            false,
            s(
                s1.wrapping_add(resp_len),
                c1.wrapping_add(req_len).wrapping_add(1),
                FIN,
                &[],
            ),
            &[],
            "server FIN",
        ),
        (
            true,
            c(
                c1.wrapping_add(req_len).wrapping_add(1),
                Some(s1.wrapping_add(resp_len).wrapping_add(1)),
                0,
                &[],
            ),
            &[],
            "last ACK",
        ),
    ];
    for (from_lan, packet, data, what) in &steps {
        let sent = tcp_numbers(packet);
        let (d, out) = if *from_lan {
            r.through(Ingress::Arrived(r.lan), packet, what)
        } else {
            r.through(Ingress::Arrived(r.wan), packet, what)
        };
        assert_eq!(d.outcome.state, CtState::Established, "{what}: {d:?}");
        let want = if *from_lan {
            (WAN, port, SERVER, 80)
        } else {
            (SERVER, 80, host, sport)
        };
        assert_eq!(checked(&out), want, "{what}");
        assert_eq!(
            tcp_numbers(&out),
            sent,
            "{what}: sequence numbers and flags kept"
        );
        assert_eq!(payload(&out), *data, "{what}");
    }
    let all = r.fw.connections();
    let entry = all
        .iter()
        .find(|c| ends(&c.original).0 == host)
        .map(|c| c.tcp_state);
    assert!(
        matches!(
            entry,
            None | Some(Some(TcpState::TimeWait | TcpState::Close))
        ),
        "the connection is closing or gone: {entry:?}"
    );
}

// --- Pipelined batches ------------------------------------------------------------------

/// `process_batch_in_place` looks each frame's connection up a few frames ahead; it must
/// decide and rewrite exactly as `process_in_place` on each frame does, across batch
/// boundaries, for connections opened, answered, translated and closed inside the
/// look-ahead window, with stray and malformed frames between them.
#[test]
fn batches_decide_and_rewrite_as_single_frames_do() {
    let mut rng = XorShift(0x5eed_ba7c);
    let (lan, wan) = {
        let r = Rig::with(Mapping::AddressAndPortDependent);
        (r.lan, r.wan)
    };
    // (frame, arrives on the LAN): a few packets of many short connections, interleaved.
    let mut frames: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut open: Vec<(Addr, u16, Addr, u8)> = Vec::new();
    for i in 0..3_000u32 {
        let pick = rng.below(10);
        if pick < 3 || open.is_empty() {
            let host = lan_host(10 + (rng.below(5) as u8));
            // Few ports, so masquerade must move some of them.
            let sport = 50_000 + rng.below(40) as u16;
            let server = [SERVER, SERVER2, SERVER3][rng.below(3) as usize];
            let kind = if rng.below(2) == 0 { TCP } else { UDP };
            let first = if kind == TCP {
                let syn = Seg {
                    seq: 1000,
                    ack: None,
                    flags: SYN,
                };
                tcp(host, sport, server, 443, syn, &[])
            } else {
                udp(host, sport, server, 53, b"query")
            };
            frames.push((first, true));
            open.push((host, sport, server, kind));
        } else if pick < 8 {
            // An answer to the WAN address at a port that may or may not be the
            // connection's: some pass, some are unsolicited.
            let (_, sport, server, kind) = open[rng.below(open.len() as u64) as usize];
            let port = if rng.below(4) == 0 {
                1024 + rng.below(60_000) as u16
            } else {
                sport
            };
            let f = if kind == TCP {
                let synack = Seg {
                    seq: 7000,
                    ack: Some(1001),
                    flags: SYN,
                };
                tcp(server, 443, WAN, port, synack, &[])
            } else {
                udp(server, 53, WAN, port, b"answer")
            };
            frames.push((f, false));
        } else if pick < 9 {
            let (host, sport, server, kind) = open[rng.below(open.len() as u64) as usize];
            let f = if kind == TCP {
                let ack = Seg {
                    seq: 1001,
                    ack: Some(7001),
                    flags: PSH,
                };
                tcp(host, sport, server, 443, ack, b"data")
            } else {
                udp(host, sport, server, 53, b"again")
            };
            frames.push((f, true));
        } else {
            // Garbage: random bytes behind an Ethernet header, some cut short.
            let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 2, 0x23, 0x08, 0x00];
            let n = rng.below(80) as usize;
            f.extend(rng.bytes(n));
            frames.push((f, i % 2 == 0));
        }
    }
    let ingress = |on_lan: bool| Ingress::Arrived(if on_lan { lan } else { wan });
    let now = Time::from_secs(1_000);

    let mut single = Rig::with(Mapping::AddressAndPortDependent);
    let mut want: Vec<(Decision, Vec<u8>)> = Vec::new();
    for (f, on_lan) in &frames {
        let mut buf = f.clone();
        let len = buf.len();
        let d =
            single
                .fw
                .process_in_place(now, LinkType::Ethernet, &mut buf, len, ingress(*on_lan));
        want.push((d, buf));
    }

    for batch in [1, 7, 64, 256] {
        let mut batched = Rig::with(Mapping::AddressAndPortDependent);
        let mut bufs: Vec<Vec<u8>> = frames.iter().map(|(f, _)| f.clone()).collect();
        let mut got: Vec<Option<Decision>> = vec![None; frames.len()];
        let mut start = 0;
        for chunk in bufs.chunks_mut(batch) {
            let mut batch_frames: Vec<Frame<'_>> = chunk
                .iter_mut()
                .zip(&frames[start..])
                .map(|(b, (_, on_lan))| {
                    let wire_len = b.len();
                    Frame {
                        now,
                        link: LinkType::Ethernet,
                        data: b.as_mut_slice(),
                        wire_len,
                        ingress: ingress(*on_lan),
                    }
                })
                .collect();
            let n = batch_frames.len();
            batched
                .fw
                .process_batch_in_place(&mut batch_frames, |_, j, d| got[start + j] = Some(d));
            start += n;
        }
        for (i, ((d, out), (g, b))) in want.iter().zip(got.iter().zip(&bufs)).enumerate() {
            assert_eq!(Some(*d), *g, "batch {batch}, frame {i}: decision");
            assert_eq!(out, b, "batch {batch}, frame {i}: bytes");
        }
        assert_eq!(
            single.fw.connections().len(),
            batched.fw.connections().len(),
            "batch {batch}: table"
        );
        batched.fw.engine().check_table().expect("table consistent");
    }
    let translated = want.iter().filter(|(d, _)| d.translated).count();
    let dropped = want
        .iter()
        .filter(|(d, _)| d.verdict == Verdict::Drop)
        .count();
    assert!(translated > 1_000, "the trace exercises NAT: {translated}");
    assert!(dropped > 100, "and drops: {dropped}");
}

#[test]
fn reserved_room_takes_translated_connections_without_growing() {
    const N: u16 = 3_000;
    let reserve = format!("[tracking]\nreserve_connections = {N}\n");
    let mut reserved = Rig::new(&policy(Mapping::AddressAndPortDependent, None, &reserve));
    let mut plain = Rig::with(Mapping::AddressAndPortDependent);
    let room = reserved.fw.engine().memory_bytes();
    let start = plain.fw.engine().memory_bytes();
    assert!(
        room > usize::from(N) * (104 + 52),
        "room for entries and translation records: {room} bytes"
    );
    for i in 0..N {
        let host = lan_host(10 + (i % 100) as u8);
        let sport = 20_000 + i;
        let query = udp(host, sport, SERVER, 53, b"query");
        let out = reserved.out(&query, "query");
        assert_eq!(out, plain.out(&query, "query"), "translated alike");
        let (_, port, _, _) = checked(&out);
        let answer = udp(SERVER, 53, WAN, port, b"answer");
        let back = reserved.back(&answer, "answer");
        assert_eq!(back, plain.back(&answer, "answer"));
    }
    assert_eq!(reserved.fw.connections().len(), usize::from(N));
    assert_eq!(
        reserved.fw.engine().memory_bytes(),
        room,
        "nothing allocated after the reservation"
    );
    assert!(
        plain.fw.engine().memory_bytes() > start,
        "the other table grew"
    );
    reserved.fw.engine().check_table().unwrap();
}
