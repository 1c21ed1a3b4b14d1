//! Scenarios for each promise of the home-router policy, through the whole firewall (engine +
//! rules), with packets built by etherparse and the shipped example configuration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::net::IpAddr;
use std::path::Path;

use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket, TransportSlice};
use keepstate_engine::{Config, CtState, Direction, DropReason, LinkType, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::{Decision, Firewall, Ingress};
use keepstate_policy::model::{IfaceId, Policy};
use keepstate_policy::ruleset::{Decider, Verdict};

const LAN_HOST: [u8; 4] = [192, 168, 1, 23];
const LAN_HOST6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x23,
];
const WEB: [u8; 4] = [203, 0, 113, 10];
const WEB6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const SCANNER: [u8; 4] = [198, 51, 100, 66];
const WAN_ADDR: [u8; 4] = [203, 0, 113, 2];
const MAC_A: [u8; 6] = [2, 0, 0, 0, 2, 0x23];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 1, 1];

fn example(name: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    let loaded = config::load(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    loaded.policy
}

struct Rig {
    fw: Firewall,
    now: Time,
    lan: IfaceId,
    wan: IfaceId,
}

impl Rig {
    fn home() -> Rig {
        Rig::with(example("home-router.toml"), "lan0", "wan0")
    }

    fn with(policy: Policy, lan: &str, wan: &str) -> Rig {
        let lan = policy.iface_by_name(lan).unwrap();
        let wan = policy.iface_by_name(wan).unwrap();
        Rig {
            fw: Firewall::new(policy, Config::default()),
            now: Time::from_secs(1_000),
            lan,
            wan,
        }
    }

    fn send(&mut self, iface: IfaceId, frame: &[u8]) -> Decision {
        self.fw.process(
            self.now,
            LinkType::Ethernet,
            frame,
            frame.len(),
            Ingress::Arrived(iface),
        )
    }

    fn lan(&mut self, frame: &[u8]) -> Decision {
        let i = self.lan;
        self.send(i, frame)
    }

    fn wan(&mut self, frame: &[u8]) -> Decision {
        let i = self.wan;
        self.send(i, frame)
    }

    fn advance_ms(&mut self, ms: u64) {
        self.now = Time::from_nanos(self.now.as_nanos() + ms * 1_000_000);
    }
}

fn tcp4(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_240);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src, dst, 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

fn ping4(src: [u8; 4], dst: [u8; 4], seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(0x77, seq)
        .write(&mut out, &[0u8; 32])
        .unwrap();
    out
}

fn accepted(d: &Decision) -> bool {
    d.verdict == Verdict::Accept
}

/// Parses a frame the firewall sends on and checks every checksum with etherparse.
fn checked(frame: &[u8]) -> (IpAddr, IpAddr, u16, u16) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("expected IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let (sport, dport) = match p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want);
            (t.source_port(), t.destination_port())
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), want);
            (u.source_port(), u.destination_port())
        }
        other => panic!("unexpected transport {other:?}"),
    };
    (
        IpAddr::from(h.source),
        IpAddr::from(h.destination),
        sport,
        dport,
    )
}

#[test]
fn lan_to_wan_is_masqueraded_and_replies_come_back() {
    let mut r = Rig::home();
    let syn = r.lan(&tcp4(LAN_HOST, WEB, 50_000, 443, 1000, None, true));
    assert!(accepted(&syn), "{syn:?}");
    assert_eq!(syn.outcome.state, CtState::New);
    assert_eq!(r.fw.describe(syn.by.unwrap()), "forwarding lan->wan");
    // It leaves from the WAN address, keeping its port.
    assert!(syn.translated);
    let out = checked(r.fw.frame());
    assert_eq!(
        out,
        (IpAddr::from(WAN_ADDR), IpAddr::from(WEB), 50_000, 443)
    );
    // The answer comes to the WAN address and goes on to the LAN host.
    let synack = r.wan(&tcp4(WEB, WAN_ADDR, 443, 50_000, 9000, Some(1001), true));
    assert!(accepted(&synack), "{synack:?}");
    assert_eq!(synack.outcome.state, CtState::Established);
    assert_eq!(synack.outcome.dir, Some(Direction::Reply));
    assert_eq!(synack.by, Some(Decider::Established));
    let back = checked(r.fw.frame());
    assert_eq!(
        back,
        (IpAddr::from(WEB), IpAddr::from(LAN_HOST), 443, 50_000)
    );
    let ack = r.lan(&tcp4(LAN_HOST, WEB, 50_000, 443, 1001, Some(9001), false));
    assert!(accepted(&ack));
    assert_eq!(r.fw.engine().len(), 1);
    assert_eq!(r.fw.nat_bindings(), 1);
    // The listing shows the reply tuple addressed to the WAN address, as netfilter does.
    let c = r.fw.connections();
    assert_eq!(c[0].reply.dst, IpAddr::from(WAN_ADDR));
    assert_eq!(c[0].original.src, IpAddr::from(LAN_HOST));
    // A "reply" sent to the LAN host's own address does not belong to the connection.
    let sneaky = r.wan(&tcp4(WEB, LAN_HOST, 443, 50_000, 9001, Some(1001), false));
    assert_eq!(sneaky.verdict, Verdict::Drop);
    assert_eq!(sneaky.outcome.reason, Some(DropReason::NatBypass));
}

#[test]
fn masquerade_ports_return_to_the_pool_when_connections_expire() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml"),
    )
    .unwrap()
    .replacen(
        "\n[defaults]\n",
        "\n[defaults]\nnat_ports = \"5000-5001\"\n",
        1,
    );
    let mut r = rig(&text);
    // Two LAN hosts use the same source port to the same server: the second is moved into
    // the two-port range, the third finds it full.
    let hosts = [
        [192, 168, 1, 30],
        [192, 168, 1, 31],
        [192, 168, 1, 32],
        [192, 168, 1, 33],
    ];
    let mut ports = Vec::new();
    for h in &hosts[..3] {
        let d = r.lan(&udp4(*h, WEB, 7000, 53, b"q"));
        assert!(accepted(&d), "{d:?}");
        ports.push(checked(r.fw.frame()).2);
    }
    assert_eq!(ports[0], 7000);
    assert!((5000..=5001).contains(&ports[1]) && (5000..=5001).contains(&ports[2]));
    assert_ne!(ports[1], ports[2]);
    let d = r.lan(&udp4(hosts[3], WEB, 7000, 53, b"q"));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.outcome.reason, Some(DropReason::NatPortsExhausted));
    assert!(r.fw.nat_stats().unwrap().exhausted >= 1);
    assert_eq!(
        r.fw.engine().len(),
        3,
        "the refused connection is not tracked"
    );
    // After the UDP timeout the bindings are swept and the ports can be used again.
    r.advance_ms(31_000);
    for i in 0..8u16 {
        r.lan(&udp4([192, 168, 1, 40], WEB, 9000 + i, 80, b"tick"));
    }
    let d = r.lan(&udp4(hosts[3], WEB, 7000, 53, b"q"));
    assert!(accepted(&d), "{d:?}");
}

#[test]
fn port_forward_with_source_restriction_and_hairpin() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml"),
    )
    .unwrap()
        + r#"
[[port_forward]]
name = "web"
src = "wan"
proto = "tcp"
external_port = 8080
internal_ip = "192.168.1.10"
internal_port = 80
src_ip = "198.51.100.0/24"
reflection = true
"#;
    let mut r = rig(&text);
    let server = [192, 168, 1, 10];
    // Allowed source: the SYN to the WAN address goes to the server, accepted without a rule.
    let d = r.wan(&tcp4(SCANNER, WAN_ADDR, 40_000, 8080, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(r.fw.describe(d.by.unwrap()), "port forward web");
    assert_eq!(
        checked(r.fw.frame()),
        (IpAddr::from(SCANNER), IpAddr::from(server), 40_000, 80)
    );
    let as_delivered = r.fw.frame()[14..].to_vec();
    // The server's answer leaves from the WAN address and port the client used.
    let d = r.lan(&tcp4(server, SCANNER, 80, 40_000, 500, Some(2), true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(
        checked(r.fw.frame()),
        (IpAddr::from(WAN_ADDR), IpAddr::from(SCANNER), 8080, 40_000)
    );
    let listed = r.fw.connections();
    assert!(listed
        .iter()
        .any(|c| c.original.dst == IpAddr::from(WAN_ADDR) && c.reply.src == IpAddr::from(server)));
    // An ICMP error from the server about the forwarded packet leaves from the WAN address
    // and quotes the packet as the client sent it (to the WAN address, port 8080).
    let mut err = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(server, SCANNER, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut err, &as_delivered[..28])
        .unwrap();
    let d = r.lan(&err);
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.state, CtState::Related);
    assert!(d.translated, "{d:?}");
    let sent = r.fw.frame().to_vec();
    let out = SlicedPacket::from_ethernet(&sent).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = out.net else {
        panic!("expected IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.source, WAN_ADDR);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let Some(TransportSlice::Icmpv4(m)) = out.transport else {
        panic!("expected ICMP")
    };
    assert_eq!(
        m.checksum(),
        m.header().icmp_type.calc_checksum(m.payload())
    );
    let quoted = etherparse::Ipv4HeaderSlice::from_slice(m.payload()).unwrap();
    assert_eq!(quoted.destination(), WAN_ADDR);
    assert_eq!(quoted.source(), SCANNER);
    let qh = quoted.to_header();
    assert_eq!(qh.header_checksum, qh.calc_header_checksum());
    assert_eq!(&m.payload()[22..24], &8080u16.to_be_bytes());
    // A source outside the restriction is not forwarded: the router itself drops it.
    let d = r.wan(&tcp4(WEB, WAN_ADDR, 40_001, 8080, 1, None, true));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(r.fw.describe(d.by.unwrap()), "zone wan input policy");
    // Hairpin: a LAN host using the WAN address reaches the server, seen from the router's
    // LAN address so the answer comes back through the router.
    let d = r.lan(&tcp4(LAN_HOST, WAN_ADDR, 45_000, 8080, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    assert!(d.translated, "{d:?}");
    let (src, dst, _, dport) = checked(r.fw.frame());
    assert_eq!(
        (src, dst, dport),
        (IpAddr::from([192, 168, 1, 1]), IpAddr::from(server), 80)
    );
}

#[test]
fn unsolicited_inbound_is_dropped_and_never_tracked() {
    let mut r = Rig::home();
    let d = r.wan(&tcp4(SCANNER, LAN_HOST, 54_321, 22, 7, None, true));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.outcome.state, CtState::New);
    assert_eq!(d.outcome.reason, Some(DropReason::ZonePolicy));
    assert_eq!(r.fw.describe(d.by.unwrap()), "zone wan forward policy");
    assert!(
        r.fw.engine().is_empty(),
        "a refused SYN must not occupy the table"
    );
    // To the router itself as well.
    let d = r.wan(&tcp4(SCANNER, WAN_ADDR, 54_321, 22, 7, None, true));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(r.fw.describe(d.by.unwrap()), "zone wan input policy");
    // An inbound UDP "reply" to a port nobody used is new, hence dropped.
    let d = r.wan(&udp4(WEB, LAN_HOST, 53, 40_000, b"x"));
    assert_eq!((d.verdict, d.outcome.state), (Verdict::Drop, CtState::New));
}

#[test]
fn related_icmp_errors_pass_and_stray_ones_do_not() {
    let mut r = Rig::home();
    let probe = udp4(LAN_HOST, WEB, 43_100, 33_434, b"probe");
    assert!(accepted(&r.lan(&probe)));
    // The router at 198.51.100.1 reports the probe's TTL ran out, quoting its IP+UDP header.
    let quoted = &probe[14..14 + 28];
    let mut err = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([198, 51, 100, 1], LAN_HOST, 60)
        .icmpv4(Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut err, quoted)
        .unwrap();
    let d = r.wan(&err);
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.state, CtState::Related);
    // The same error about a connection that does not exist is invalid and dropped.
    let other = udp4(LAN_HOST, WEB, 43_101, 33_999, b"probe");
    let mut stray = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([198, 51, 100, 1], LAN_HOST, 60)
        .icmpv4(Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut stray, &other[14..14 + 28])
        .unwrap();
    let d = r.wan(&stray);
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.outcome.state, CtState::Invalid);
    assert_eq!(d.outcome.reason, Some(DropReason::IcmpErrorNoConnection));
    assert_eq!(d.by, Some(Decider::DropInvalid));
}

#[test]
fn invalid_is_dropped_with_the_engines_reason() {
    let mut r = Rig::home();
    // A SYN/ACK for no connection.
    let d = r.wan(&tcp4(WEB, LAN_HOST, 443, 50_999, 5, Some(6), true));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(d.outcome.state, CtState::Invalid);
    assert_eq!(d.outcome.reason, Some(DropReason::TcpNotSyn));
    assert_eq!(r.fw.describe(d.by.unwrap()), "defaults.drop_invalid");
}

#[test]
fn echo_requests_to_the_wan_address_are_rate_limited() {
    let mut r = Rig::home();
    let limit =
        r.fw.policy()
            .rules
            .iter()
            .find(|x| x.name.as_deref() == Some("Allow-Ping"))
            .and_then(|x| x.limit)
            .expect("Allow-Ping has a limit");
    let burst = limit.burst as usize;
    let mut passed = 0;
    // Twice the burst, all at once: exactly the burst passes.
    for seq in 0..(2 * burst as u16) {
        if accepted(&r.wan(&ping4(SCANNER, WAN_ADDR, seq))) {
            passed += 1;
        }
    }
    assert_eq!(passed, burst);
    // One interval later, one more token.
    r.advance_ms(limit.per.as_nanos() / u64::from(limit.count) / 1_000_000);
    assert!(accepted(&r.wan(&ping4(SCANNER, WAN_ADDR, 100))));
    assert!(!accepted(&r.wan(&ping4(SCANNER, WAN_ADDR, 101))));
    let hits = r.fw.ruleset().counters()[r
        .fw
        .policy()
        .rules
        .iter()
        .position(|x| x.name.as_deref() == Some("Allow-Ping"))
        .unwrap()]
    .packets;
    assert_eq!(hits, burst as u64 + 1);
    // Echo requests through the router to a LAN host are not the router's to answer: the
    // wan zone's forward policy drops them whatever the limit.
    assert!(!accepted(&r.wan(&ping4(SCANNER, LAN_HOST, 1))));
}

#[test]
fn ipv6_is_routed_with_spi_and_no_nat() {
    let mut r = Rig::home();
    let q = udp6(LAN_HOST6, WEB6, 40_000, 53, b"q");
    assert!(accepted(&r.lan(&q)));
    let a = udp6(WEB6, LAN_HOST6, 53, 40_000, b"a");
    let d = r.wan(&a);
    assert!(accepted(&d));
    assert_eq!(d.outcome.state, CtState::Established);
    // Unsolicited inbound IPv6 is dropped just the same.
    let d = r.wan(&udp6(WEB6, LAN_HOST6, 53, 40_001, b"a"));
    assert_eq!(d.verdict, Verdict::Drop);
}

const NOTRACK_POLICY: &str = r#"
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
[[forwarding]]
src = "lan"
dest = "wan"
[[notrack]]
name = "no-track-ntp"
src = "wan"
proto = "udp"
dest_port = 123
[[rule]]
name = "Allow-NTP-untracked"
src = "wan"
dest = "lan"
proto = "udp"
dest_port = 123
ct_state = "untracked"
action = "accept"
[[rule]]
name = "Reject-Telnet"
src = "wan"
dest = "lan"
proto = ["tcp", "udp"]
dest_port = 23
action = "reject"
"#;

fn rig(text: &str) -> Rig {
    let loaded = config::parse("test.toml", text, None).unwrap_or_else(|e| panic!("{e:?}"));
    Rig::with(loaded.policy, "lan0", "wan0")
}

#[test]
fn notrack_exempts_and_stateless_rules_judge() {
    let mut r = rig(NOTRACK_POLICY);
    let d = r.wan(&udp4(WEB, LAN_HOST, 40_000, 123, b"ntp"));
    assert_eq!(d.outcome.state, CtState::Untracked);
    assert_eq!(d.notrack, Some(0));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(r.fw.describe(d.by.unwrap()), "Allow-NTP-untracked");
    assert!(
        r.fw.engine().is_empty(),
        "untracked traffic leaves no entry"
    );
    assert_eq!(r.fw.ruleset().notrack_counters()[0].packets, 1);
    assert_eq!(r.fw.stats().notracked, 1);
    // Other UDP is tracked, and dropped as unsolicited.
    let d = r.wan(&udp4(WEB, LAN_HOST, 40_000, 124, b"x"));
    assert_eq!(d.outcome.state, CtState::New);
    assert_eq!(d.notrack, None);
    assert_eq!(d.verdict, Verdict::Drop);
}

#[test]
fn reject_answers_tcp_with_rst_and_udp_with_port_unreachable() {
    let mut r = rig(NOTRACK_POLICY);
    let syn = tcp4(SCANNER, LAN_HOST, 40_000, 23, 0x1000, None, true);
    let d = r.wan(&syn);
    assert!(matches!(d.verdict, Verdict::Reject(_)));
    assert_eq!(d.outcome.reason, Some(DropReason::RuleReject));
    assert!(d.reply);
    let answer = r.fw.reply().to_vec();
    let rst = SlicedPacket::from_ip(&answer).unwrap();
    let Some(TransportSlice::Tcp(t)) = rst.transport else {
        panic!("expected TCP")
    };
    assert!(t.rst() && t.ack());
    assert_eq!((t.source_port(), t.destination_port()), (23, 40_000));
    assert_eq!(t.acknowledgment_number(), 0x1001);
    let Some(etherparse::NetSlice::Ipv4(ip)) = rst.net else {
        panic!("expected IPv4")
    };
    assert_eq!(ip.header().source(), LAN_HOST);
    assert_eq!(ip.header().destination(), SCANNER);
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    assert_eq!(
        t.checksum(),
        t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap()
    );
    // UDP gets an ICMP port unreachable from the router's WAN address (it was forwarding).
    let d = r.wan(&udp4(SCANNER, LAN_HOST, 40_000, 23, b"hi"));
    assert!(d.reply);
    let icmp = SlicedPacket::from_ip(r.fw.reply()).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = icmp.net else {
        panic!("expected IPv4")
    };
    assert_eq!(ip.header().source(), WAN_ADDR);
    let Some(TransportSlice::Icmpv4(m)) = icmp.transport else {
        panic!("expected ICMP")
    };
    assert_eq!(m.type_u8(), 3);
    assert_eq!(m.code_u8(), 3);
    assert!(r.fw.engine().is_empty());
}

#[test]
fn reject_answers_are_rate_limited() {
    let mut r = rig(NOTRACK_POLICY);
    let limit = r.fw.policy().defaults.reject_limit;
    let mut answered = 0;
    for i in 0..(limit.burst + 10) {
        let d = r.wan(&udp4(SCANNER, LAN_HOST, 1000 + i as u16, 23, b"x"));
        assert!(matches!(d.verdict, Verdict::Reject(_)));
        answered += usize::from(d.reply);
    }
    assert_eq!(answered, limit.burst as usize);
    assert_eq!(r.fw.stats().replies, u64::from(limit.burst));
}

#[test]
fn server_example_is_spi_without_nat() {
    let p = example("server.toml");
    assert!(p.zones.iter().all(|z| !z.masquerade));
    assert!(p.port_forwards.is_empty());
    let wan = p.interfaces[0].name.clone();
    let own = p.interfaces[0].addrs[0].addr;
    let mut fw = Firewall::new(p.clone(), Config::default());
    // A capture on the server's own interface, directions unrecorded.
    let iface = Ingress::Seen(p.iface_by_name(&wan).unwrap());
    let IpAddr::V4(own4) = own else {
        panic!("the server example's first address is IPv4")
    };
    let own4 = own4.octets();
    let now = Time::from_secs(10);
    let mut send = |f: &[u8]| fw.process(now, LinkType::Ethernet, f, f.len(), iface);
    // SSH is open to new connections, other ports are not.
    assert!(accepted(&send(&tcp4(
        SCANNER, own4, 40_000, 22, 1, None, true
    ))));
    assert!(!accepted(&send(&tcp4(
        SCANNER, own4, 40_000, 3306, 1, None, true
    ))));
    // The server's own outbound connection gets its replies.
    let d = send(&tcp4(own4, WEB, 41_000, 443, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    let d = send(&tcp4(WEB, own4, 443, 41_000, 50, Some(2), true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.state, CtState::Established);
}

const STATIC_NAT: &str = r#"
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
[[forwarding]]
src = "lan"
dest = "wan"
[[snat]]
name = "office"
dest = "wan"
src_ip = "192.168.1.64/26"
to = ["203.0.113.70", "203.0.113.71"]
[[one_to_one]]
name = "camera"
zone = "wan"
internal_ip = "192.168.1.50"
external_ip = "203.0.113.50"
[[rule]]
name = "Allow-Camera-HTTPS"
src = "wan"
dest = "lan"
dest_ip = "192.168.1.50"
proto = "tcp"
dest_port = 443
action = "accept"
"#;

#[test]
fn static_snat_pool_keeps_each_host_on_one_address() {
    let mut r = rig(STATIC_NAT);
    let mut seen = Vec::new();
    for host in 64..72u8 {
        let mut firsts = Vec::new();
        for port in [1000u16, 2000] {
            let d = r.lan(&udp4([192, 168, 1, host], WEB, port, 53, b"q"));
            assert!(accepted(&d), "{d:?}");
            firsts.push(checked(r.fw.frame()).0);
        }
        // The same host always gets the same pool address.
        assert_eq!(firsts[0], firsts[1]);
        assert!(
            firsts[0] == IpAddr::from([203, 0, 113, 70])
                || firsts[0] == IpAddr::from([203, 0, 113, 71]),
            "{firsts:?}"
        );
        seen.push(firsts[0]);
    }
    // Both pool addresses are used.
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2);
    // Outside the SNAT's sources: masquerade.
    r.lan(&udp4([192, 168, 1, 20], WEB, 1000, 53, b"q"));
    assert_eq!(checked(r.fw.frame()).0, IpAddr::from(WAN_ADDR));
}

#[test]
fn one_to_one_nat_both_ways_with_rules_deciding() {
    let mut r = rig(STATIC_NAT);
    let camera = [192, 168, 1, 50];
    let external = [203, 0, 113, 50];
    // Outbound: the camera appears as its own outside address, port kept.
    let d = r.lan(&tcp4(camera, WEB, 33_000, 443, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(
        checked(r.fw.frame()),
        (IpAddr::from(external), IpAddr::from(WEB), 33_000, 443)
    );
    let d = r.wan(&tcp4(WEB, external, 443, 33_000, 7, Some(2), true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(
        checked(r.fw.frame()),
        (IpAddr::from(WEB), IpAddr::from(camera), 443, 33_000)
    );
    // Inbound to the outside address: translated, then judged by the rules on the inside
    // address. HTTPS is allowed...
    let d = r.wan(&tcp4(SCANNER, external, 40_000, 443, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(r.fw.describe(d.by.unwrap()), "Allow-Camera-HTTPS");
    assert_eq!(
        checked(r.fw.frame()),
        (IpAddr::from(SCANNER), IpAddr::from(camera), 40_000, 443)
    );
    // ...and the camera's answer leaves from the outside address.
    let d = r.lan(&tcp4(camera, SCANNER, 443, 40_000, 9, Some(2), true));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(
        checked(r.fw.frame()),
        (IpAddr::from(external), IpAddr::from(SCANNER), 443, 40_000)
    );
    // ...telnet is not, and the dropped connection leaves no binding or entry behind.
    let bindings = r.fw.nat_bindings();
    let entries = r.fw.engine().len();
    let d = r.wan(&tcp4(SCANNER, external, 40_001, 23, 1, None, true));
    assert_eq!(d.verdict, Verdict::Drop);
    assert_eq!(r.fw.nat_bindings(), bindings);
    assert_eq!(r.fw.engine().len(), entries);
}

fn reason(d: &Decision) -> Option<&'static str> {
    d.outcome.reason.map(DropReason::name)
}

#[test]
fn antispoof_drops_sources_that_cannot_arrive_where_they_did() {
    let mut r = Rig::home();
    let wan_zone = r.fw.topology().zone_of(r.wan);
    // Claiming a LAN host, or the router itself, from the WAN side.
    for src in [LAN_HOST, WAN_ADDR, [192, 168, 1, 1]] {
        let d = r.wan(&tcp4(src, LAN_HOST, 40_000, 22, 1, None, true));
        assert!(!accepted(&d), "{src:?}: {d:?}");
        assert_eq!(reason(&d), Some("spoofed-source"), "{src:?}");
        assert_eq!(d.by, Some(Decider::Antispoof(wan_zone)));
        assert_eq!(
            r.fw.describe(Decider::Antispoof(wan_zone)),
            "zone wan antispoof"
        );
    }
    // Addresses no sender has.
    for src in [
        [127, 0, 0, 1],
        [0, 1, 2, 3],
        [224, 0, 0, 5],
        [255, 255, 255, 255],
    ] {
        let d = r.wan(&udp4(src, WAN_ADDR, 5_000, 53, b"x"));
        assert!(!accepted(&d), "{src:?}: {d:?}");
        assert_eq!(reason(&d), Some("martian-source"), "{src:?}");
    }
    // A LAN host using an outside address as its source.
    let d = r.lan(&tcp4(SCANNER, WEB, 40_000, 443, 1, None, true));
    assert_eq!(reason(&d), Some("spoofed-source"));
    assert!(!accepted(&d));
    // Nothing of it reached the state table.
    assert_eq!(r.fw.engine().len(), 0);
    assert_eq!(r.fw.engine().stats().created, 0);

    // What may arrive there still passes the check and meets the policy.
    let d = r.wan(&tcp4(SCANNER, WAN_ADDR, 40_000, 22, 1, None, true));
    assert_eq!(reason(&d), Some("zone-policy"));
    let d = r.lan(&tcp4(LAN_HOST, WEB, 40_000, 443, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    // A DHCP client has no address yet.
    let d = r.lan(&udp4([0; 4], [255; 4], 68, 67, b"discover"));
    assert!(accepted(&d), "{d:?}");
    assert_ne!(reason(&d), Some("martian-source"));
}

#[test]
fn antispoof_follows_established_connections_too() {
    let mut r = Rig::home();
    let syn = tcp4(LAN_HOST, WEB, 40_001, 443, 100, None, true);
    assert!(accepted(&r.lan(&syn)));
    let reply = r.fw.frame().to_vec();
    let (_, _, sport, _) = checked(&reply);
    let synack = tcp4(WEB, WAN_ADDR, 443, sport, 7_000, Some(101), true);
    assert!(accepted(&r.wan(&synack)));
    // The LAN host's own packet of that connection, injected from the WAN side.
    let forged = tcp4(LAN_HOST, WEB, 40_001, 443, 101, Some(7_001), false);
    let d = r.wan(&forged);
    assert!(!accepted(&d), "{d:?}");
    assert_eq!(reason(&d), Some("spoofed-source"));
    // From the LAN it is the connection's next packet.
    let d = r.lan(&forged);
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.state, CtState::Established);
}

#[test]
fn antispoof_can_be_switched_off_per_zone_and_needs_a_known_ingress() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml"),
    )
    .unwrap();
    let off = text.replacen("antispoof = true", "antispoof = false", 1);
    assert_ne!(off, text, "the example switches antispoof on for wan");
    let mut r = rig(&off);
    let d = r.wan(&tcp4(LAN_HOST, LAN_HOST, 40_000, 22, 1, None, true));
    assert_ne!(reason(&d), Some("spoofed-source"), "{d:?}");
    // Without knowing where a packet came from there is nothing to check.
    let mut r = Rig::home();
    let f = tcp4(LAN_HOST, WEB, 40_002, 443, 1, None, true);
    let d =
        r.fw.process(r.now, LinkType::Ethernet, &f, f.len(), Ingress::Unknown);
    assert!(accepted(&d), "{d:?}");
}

fn home_router_text() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml"),
    )
    .unwrap()
}

/// The home-router example with `wan` lines added to the wan zone and, with `forward`, the
/// "web" port forward (WAN 8080 to 192.168.1.10:80) carrying `forward`'s extra lines.
fn home_with(wan: &str, forward: Option<&str>) -> String {
    let mut text =
        home_router_text().replace("antispoof = true", &format!("antispoof = true\n{wan}"));
    if let Some(extra) = forward {
        text += &format!(
            "\n[[port_forward]]\nname = \"web\"\nsrc = \"wan\"\nproto = \"tcp\"\nexternal_port = 8080\ninternal_ip = \"192.168.1.10\"\ninternal_port = 80\n{extra}\n"
        );
    }
    text
}

#[test]
fn syn_flood_to_the_router_is_limited_per_zone() {
    let mut r = Rig::home();
    let router = [192, 168, 1, 1];
    // The default: 25/s burst 50 new TCP connections to the firewall, per arrival zone.
    let mut passed = 0;
    for i in 0..80u16 {
        let d = r.lan(&tcp4(LAN_HOST, router, 10_000 + i, 22, 1, None, true));
        if accepted(&d) {
            passed += 1;
        } else {
            assert_eq!(reason(&d), Some("syn-flood"), "{d:?}");
            let z = r.fw.topology().zone_of(r.lan);
            assert_eq!(d.by, Some(Decider::SynFlood(z)));
            assert_eq!(r.fw.describe(d.by.unwrap()), "zone lan syn limit");
        }
    }
    assert_eq!(passed, 50);
    // Refused SYNs never entered the table.
    assert_eq!(r.fw.engine().len(), 50);
    // A flood from the WAN does not use up the LAN's allowance, and a second later the
    // bucket has refilled by 25.
    for i in 0..100u16 {
        let d = r.wan(&tcp4(SCANNER, WAN_ADDR, 20_000 + i, 22, 1, None, true));
        assert!(!accepted(&d));
    }
    r.advance_ms(1_000);
    let passed = (0..40u16)
        .filter(|i| accepted(&r.lan(&tcp4(LAN_HOST, router, 30_000 + i, 22, 1, None, true))))
        .count();
    assert_eq!(passed, 25);
    // Established traffic and forwarded connections are not counted.
    for i in 0..60u16 {
        let d = r.lan(&tcp4(LAN_HOST, WEB, 40_000 + i, 443, 1, None, true));
        assert!(accepted(&d), "{d:?}");
    }
}

#[test]
fn zone_syn_limit_protects_port_forwarded_servers() {
    let text = home_with("syn_limit = \"10/s burst 20\"", Some(""));
    let mut r = rig(&text);
    let mut reasons = std::collections::BTreeMap::new();
    for i in 0..1_000u32 {
        let src = [198, 51, (i >> 8) as u8, i as u8];
        let d = r.wan(&tcp4(src, WAN_ADDR, 40_000, 8080, 1, None, true));
        *reasons.entry(reason(&d).unwrap_or("accepted")).or_insert(0) += 1;
    }
    assert_eq!(reasons.get("accepted"), Some(&20), "{reasons:?}");
    assert_eq!(reasons.get("syn-flood"), Some(&980), "{reasons:?}");
    assert_eq!(r.fw.engine().len(), 20);
}

#[test]
fn synflood_protect_can_be_switched_off() {
    let text =
        home_router_text().replacen("synflood_protect = true", "synflood_protect = false", 1);
    let mut r = rig(&text);
    for i in 0..200u16 {
        let d = r.lan(&tcp4(
            LAN_HOST,
            [192, 168, 1, 1],
            10_000 + i,
            22,
            1,
            None,
            true,
        ));
        assert!(accepted(&d), "{d:?}");
    }
}

fn tcp4_flags(src: [u8; 4], dst: [u8; 4], dport: u16, flags: &str) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(50_000, dport, 1, 1024);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            'U' => b.urg(0),
            _ => b,
        };
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

#[test]
fn flag_scans_are_named_and_counted() {
    use keepstate_policy::scan::Scan;
    let mut r = Rig::home();
    for (flags, want) in [
        ("SF", Scan::SynFin),
        ("SR", Scan::SynRst),
        ("FPU", Scan::Xmas),
        ("F", Scan::Fin),
        ("", Scan::Null),
    ] {
        let d = r.wan(&tcp4_flags(SCANNER, WAN_ADDR, 22, flags));
        assert!(!accepted(&d), "{flags}: {d:?}");
        assert_eq!(reason(&d), Some("tcp-bad-flags"), "{flags}");
        assert_eq!(d.scan, Some(want), "{flags}");
        assert_eq!(r.fw.stats().scans[want.index()], 1, "{flags}");
    }
    // An ordinary SYN is not a scan, and nothing was tracked.
    let d = r.wan(&tcp4_flags(SCANNER, WAN_ADDR, 22, "S"));
    assert_eq!(d.scan, None);
    assert_eq!(r.fw.engine().len(), 0);
}

#[test]
fn a_port_sweep_is_reported_once_per_window() {
    use keepstate_policy::scan::Scan;
    let mut r = Rig::home();
    let mut reported = Vec::new();
    for port in 1..=100u16 {
        let d = r.wan(&tcp4(SCANNER, WAN_ADDR, 40_000, port, 1, None, true));
        assert!(!accepted(&d));
        if d.scan.is_some() {
            reported.push((port, d.scan));
        }
    }
    // The default: 20 distinct refused ports within 10 s, counted exactly, so the report
    // comes at the 20th port.
    assert_eq!(reported, [(20, Some(Scan::Ports))]);
    assert_eq!(r.fw.stats().scans[Scan::Ports.index()], 1);
    // Another source retrying one refused port, and a LAN host opening many allowed
    // connections, are no sweeps.
    for _ in 0..100 {
        let d = r.wan(&tcp4(
            [198, 51, 100, 99],
            WAN_ADDR,
            40_000,
            23,
            1,
            None,
            true,
        ));
        assert_eq!(d.scan, None);
    }
    for port in 1..=100u16 {
        let d = r.lan(&tcp4(LAN_HOST, WEB, 40_000, port, 1, None, true));
        assert!(accepted(&d));
        assert_eq!(d.scan, None);
    }
    // After the window the same sweep is reported again.
    r.advance_ms(11_000);
    let again = (101..=200u16)
        .filter(|&port| {
            r.wan(&tcp4(SCANNER, WAN_ADDR, 40_000, port, 1, None, true))
                .scan
                .is_some()
        })
        .count();
    assert_eq!(again, 1);
}

fn ping4_id(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(id, 1)
        .write(&mut out, &[0u8; 8])
        .unwrap();
    out
}

#[test]
fn udp_and_icmp_flood_limits_per_zone() {
    let text = home_router_text().replacen(
        "forward = \"accept\"",
        "forward = \"accept\"\nudp_limit = \"10/s burst 10\"\nicmp_limit = \"5/s burst 5\"",
        1,
    );
    let mut r = rig(&text);
    let mut udp = std::collections::BTreeMap::new();
    for i in 0..30u16 {
        let d = r.lan(&udp4(LAN_HOST, WEB, 30_000 + i, 53, b"query"));
        *udp.entry(reason(&d).unwrap_or("accepted")).or_insert(0) += 1;
    }
    assert_eq!(udp.get("accepted"), Some(&10), "{udp:?}");
    assert_eq!(udp.get("udp-flood"), Some(&20), "{udp:?}");
    // Answers to the flows that got through are not new flows.
    let reply = r.wan(&udp4(WEB, WAN_ADDR, 53, 30_000, b"answer"));
    assert!(accepted(&reply), "{reply:?}");
    let mut icmp = 0;
    for id in 0..20u16 {
        let d = r.lan(&ping4_id(LAN_HOST, WEB, id));
        if accepted(&d) {
            icmp += 1;
        } else {
            assert_eq!(reason(&d), Some("icmp-flood"));
            assert_eq!(r.fw.describe(d.by.unwrap()), "zone lan icmp limit");
        }
    }
    assert_eq!(icmp, 5);
    // A second later the buckets have refilled.
    r.advance_ms(1_000);
    assert!(accepted(&r.lan(&udp4(LAN_HOST, WEB, 31_000, 53, b"query"))));
}

#[test]
fn a_source_over_its_connection_rate_is_blocked_for_a_while() {
    let text = home_with(
        "src_conn_limit = \"5/s burst 5\"\noverload_timeout = 60",
        Some(""),
    );
    let mut r = rig(&text);
    let attacker = [198, 51, 100, 7];
    let neighbour = [198, 51, 100, 8];
    let mut got = Vec::new();
    for i in 0..8u16 {
        let d = r.wan(&tcp4(attacker, WAN_ADDR, 41_000 + i, 8080, 1, None, true));
        got.push(reason(&d).unwrap_or("accepted"));
    }
    assert_eq!(
        got,
        [
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "accepted",
            "source-overload",
            "source-overload",
            "source-overload"
        ]
    );
    // Blocked: even its connection that got through is cut off.
    let server = [192, 168, 1, 10];
    let synack = tcp4(server, attacker, 80, 41_000, 9_000, Some(2), true);
    assert!(accepted(&r.lan(&synack)));
    let d = r.wan(&tcp4(
        attacker,
        WAN_ADDR,
        41_000,
        8080,
        2,
        Some(9_001),
        false,
    ));
    assert_eq!(reason(&d), Some("source-overload"), "{d:?}");
    // Others are not.
    let d = r.wan(&tcp4(neighbour, WAN_ADDR, 42_000, 8080, 1, None, true));
    assert!(accepted(&d), "{d:?}");
    // After the block has run out the source may connect again.
    r.advance_ms(61_000);
    let d = r.wan(&tcp4(attacker, WAN_ADDR, 43_000, 8080, 1, None, true));
    assert!(accepted(&d), "{d:?}");
}

#[test]
fn connections_per_source_are_capped_and_given_back() {
    let text = home_router_text().replacen(
        "forward = \"accept\"",
        "forward = \"accept\"\nsrc_conn_max = 3",
        1,
    );
    let mut r = rig(&text);
    let lan_zone = r.fw.topology().zone_of(r.lan);
    let mut got = Vec::new();
    for i in 0..5u16 {
        let d = r.lan(&udp4(LAN_HOST, WEB, 30_000 + i, 53, b"q"));
        got.push(reason(&d).unwrap_or("accepted"));
        if i == 3 {
            assert_eq!(d.by, Some(Decider::ConnLimit(lan_zone)));
        }
    }
    assert_eq!(
        got,
        [
            "accepted",
            "accepted",
            "accepted",
            "source-conn-limit",
            "source-conn-limit"
        ]
    );
    assert_eq!(r.fw.engine().len(), 3);
    // Retransmits of an open connection are not new connections.
    assert!(accepted(&r.lan(&udp4(LAN_HOST, WEB, 30_000, 53, b"q"))));
    // Another host has its own allowance.
    assert!(accepted(&r.lan(&udp4(
        [192, 168, 1, 24],
        WEB,
        30_000,
        53,
        b"q"
    ))));
    // Once the host's connections have expired, it may open new ones.
    r.advance_ms(31_000);
    for _ in 0..64 {
        r.wan(&udp4(SCANNER, WAN_ADDR, 1, 9, b"tick"));
    }
    let d = r.lan(&udp4(LAN_HOST, WEB, 31_000, 53, b"q"));
    assert!(accepted(&d), "{d:?}");
}

/// One IPv4 fragment of a UDP datagram: `data` is this piece of the UDP bytes, `offset` in
/// 8-byte units.
fn udp4_fragment(src: [u8; 4], dst: [u8; 4], offset: u16, more: bool, data: &[u8]) -> Vec<u8> {
    let len = u16::try_from(data.len()).unwrap();
    let mut ip = etherparse::Ipv4Header::new(len, 64, etherparse::IpNumber::UDP, src, dst).unwrap();
    ip.identification = 0x1234;
    ip.dont_fragment = false;
    ip.more_fragments = more;
    ip.fragment_offset = etherparse::IpFragOffset::try_new(offset).unwrap();
    let mut v = Vec::new();
    etherparse::Ethernet2Header {
        source: MAC_A,
        destination: MAC_B,
        ether_type: etherparse::EtherType::IPV4,
    }
    .write(&mut v)
    .unwrap();
    ip.write(&mut v).unwrap();
    v.extend_from_slice(data);
    v
}

#[test]
fn fragmented_udp_passes_masquerade_and_the_rules() {
    let mut r = Rig::home();
    // A 1,208-byte DNS answer's worth of UDP (header and payload), in two pieces, from a LAN
    // host to a server and back.
    let whole = udp4(LAN_HOST, WEB, 40_000, 53, &[0x5a; 1200]);
    let udp = &whole[34..];
    let d = r.lan(&udp4_fragment(LAN_HOST, WEB, 0, true, &udp[..800]));
    assert!(accepted(&d), "{d:?}");
    assert!(d.translated);
    let out1 = r.fw.frame().to_vec();
    let d = r.lan(&udp4_fragment(LAN_HOST, WEB, 100, false, &udp[800..]));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.meta.dport, Some(53), "rules saw the ports");
    assert!(
        d.translated,
        "the second piece leaves from the WAN address too"
    );
    let out2 = r.fw.frame().to_vec();
    for f in [&out1, &out2] {
        let p = SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(IpAddr::from(h.source), IpAddr::from(WAN_ADDR));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }
    // The answer, fragmented too, comes back to the LAN host.
    // etherparse does not read a fragment's transport header: the source port is the first
    // two bytes after the IPv4 header.
    let port = u16::from_be_bytes([out1[34], out1[35]]);
    let answer = udp4(WEB, WAN_ADDR, 53, port, &[0xa5; 1200]);
    let udp = &answer[34..];
    for (off, more, piece) in [(0u16, true, &udp[..800]), (100, false, &udp[800..])] {
        let d = r.wan(&udp4_fragment(WEB, WAN_ADDR, off, more, piece));
        assert!(accepted(&d), "{d:?}");
        assert_eq!(d.outcome.state, CtState::Established);
        let p = SlicedPacket::from_ethernet(r.fw.frame()).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("IPv4")
        };
        assert_eq!(
            IpAddr::from(ip.header().destination()),
            IpAddr::from(LAN_HOST)
        );
    }
    // A piece with no first is still refused.
    let d = r.wan(&udp4_fragment(WEB, WAN_ADDR, 50, false, &[0; 64]));
    assert!(!accepted(&d));
}

/// The TCP fields of a frame: (src, dst, sport, dport, seq, ack, flags), after checking its
/// IPv4 header and TCP checksums with etherparse.
fn tcp_of(frame: &[u8]) -> (IpAddr, IpAddr, u16, u16, u32, u32, u8) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("expected IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("expected TCP")
    };
    let th = t.to_header();
    let want = th.calc_checksum_ipv4(&h, t.payload()).unwrap();
    assert_eq!(th.checksum, want, "TCP checksum");
    let flags = u8::from(th.fin)
        | u8::from(th.syn) << 1
        | u8::from(th.rst) << 2
        | u8::from(th.psh) << 3
        | u8::from(th.ack) << 4;
    (
        IpAddr::from(h.source),
        IpAddr::from(h.destination),
        th.source_port,
        th.destination_port,
        th.sequence_number,
        th.acknowledgment_number,
        flags,
    )
}

fn tcp4_data(
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    data: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_240)
        .ack(ack)
        .psh()
        .write(&mut out, data)
        .unwrap();
    out
}

#[test]
fn syn_proxy_completes_handshakes_itself_and_translates_sequence_numbers() {
    let text = home_with("", Some("synproxy = true"));
    let mut r = rig(&text);
    let client = [198, 51, 100, 7];
    let server = [192, 168, 1, 10];
    let (c, s, w) = (
        IpAddr::from(client),
        IpAddr::from(server),
        IpAddr::from(WAN_ADDR),
    );
    // 1. The client's SYN is answered by the firewall with a cookie; nothing is tracked.
    let d = r.wan(&tcp4(client, WAN_ADDR, 40_000, 8080, 1_000, None, true));
    assert!(!accepted(&d));
    assert_eq!(reason(&d), Some("syn-proxy"));
    assert_eq!(r.fw.describe(d.by.unwrap()), "synproxy web");
    assert!(d.reply);
    assert_eq!(r.fw.engine().len(), 0);
    // The answer is an IP packet: give it an Ethernet header to read it back.
    let mut answer = vec![0u8; 12];
    answer.extend_from_slice(&[0x08, 0x00]);
    answer.extend_from_slice(r.fw.reply());
    let (src, dst, sport, dport, cookie, ack, flags) = tcp_of(&answer);
    assert_eq!(
        (src, dst, sport, dport, ack, flags),
        (w, c, 8080, 40_000, 1_001, 0x12)
    );
    // 2. A wrong cookie opens nothing.
    let d = r.wan(&tcp4(
        client,
        WAN_ADDR,
        40_000,
        8080,
        1_001,
        Some(cookie ^ 0x100),
        false,
    ));
    assert_eq!(reason(&d), Some("syn-proxy-cookie"));
    assert!(!d.inject);
    assert_eq!(r.fw.engine().len(), 0);
    // 3. The right one: the firewall opens the connection to the server with the
    //    client's own initial sequence number.
    let d = r.wan(&tcp4(
        client,
        WAN_ADDR,
        40_000,
        8080,
        1_001,
        Some(cookie.wrapping_add(1)),
        false,
    ));
    assert!(!accepted(&d), "the ACK itself goes no further");
    assert!(d.inject, "{d:?}");
    let (src, dst, sport, dport, seq, _, flags) = tcp_of(r.fw.injected());
    assert_eq!(
        (src, dst, sport, dport, seq, flags),
        (c, s, 40_000, 80, 1_000, 0x02)
    );
    assert_eq!(r.fw.engine().len(), 1);
    // 4. The server's SYN/ACK is answered in the client's place and not passed on.
    let server_isn = 7_000_000u32;
    let d = r.lan(&tcp4(
        server,
        client,
        80,
        40_000,
        server_isn,
        Some(1_001),
        true,
    ));
    assert!(!accepted(&d), "{d:?}");
    assert_eq!(reason(&d), Some("syn-proxy"));
    assert!(d.inject);
    let (src, dst, sport, dport, seq, ack, flags) = tcp_of(r.fw.injected());
    assert_eq!(
        (src, dst, sport, dport, seq, ack, flags),
        (c, s, 40_000, 80, 1_001, server_isn.wrapping_add(1), 0x10)
    );
    // 5. Data both ways: the client's acknowledgments move into the server's sequence space
    //    and the server's sequence numbers into the client's; checksums stay right.
    let d = r.wan(&tcp4_data(
        client,
        WAN_ADDR,
        40_000,
        8080,
        1_001,
        cookie.wrapping_add(1),
        b"GET /",
    ));
    assert!(accepted(&d), "{d:?}");
    assert_eq!(d.outcome.state, CtState::Established);
    let (src, dst, _, dport, seq, ack, _) = tcp_of(r.fw.frame());
    assert_eq!(
        (src, dst, dport, seq, ack),
        (c, s, 80, 1_001, server_isn.wrapping_add(1))
    );
    let d = r.lan(&tcp4_data(
        server,
        client,
        80,
        40_000,
        server_isn.wrapping_add(1),
        1_006,
        b"200 OK",
    ));
    assert!(accepted(&d), "{d:?}");
    let (src, dst, sport, _, seq, ack, _) = tcp_of(r.fw.frame());
    assert_eq!(
        (src, dst, sport, seq, ack),
        (w, c, 8080, cookie.wrapping_add(1), 1_006)
    );
    let conn = r.fw.connections();
    assert_eq!(conn.len(), 1);
    assert_eq!(
        conn[0].tcp_state,
        Some(keepstate_engine::TcpState::Established)
    );
}

#[test]
fn syn_proxy_keeps_a_syn_flood_out_of_the_table() {
    let text = home_router_text()
        + r#"
[[port_forward]]
src = "wan"
proto = "tcp"
external_port = 443
internal_ip = "192.168.1.10"
synproxy = true
"#;
    let mut r = rig(&text);
    for i in 0..5_000u32 {
        let src = [100, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8];
        let d = r.wan(&tcp4(
            src,
            WAN_ADDR,
            1024 + (i % 60_000) as u16,
            443,
            i,
            None,
            true,
        ));
        assert!(d.reply && !accepted(&d));
    }
    assert_eq!(r.fw.engine().len(), 0);
    assert_eq!(r.fw.engine().stats().created, 0);
}

#[test]
fn drop_bogons_refuses_special_purpose_sources_from_the_internet() {
    let text =
        home_router_text().replace("antispoof = true", "antispoof = true\ndrop_bogons = true");
    let mut r = rig(&text);
    for src in [
        [10, 1, 2, 3],
        [172, 16, 0, 9],
        [100, 64, 1, 1],
        [192, 0, 2, 55],
    ] {
        let d = r.wan(&tcp4(src, WAN_ADDR, 40_000, 22, 1, None, true));
        assert_eq!(reason(&d), Some("bogon-source"), "{src:?}");
    }
    // An ordinary internet address meets the policy as usual.
    let d = r.wan(&tcp4([8, 8, 8, 8], WAN_ADDR, 40_000, 22, 1, None, true));
    assert_eq!(reason(&d), Some("zone-policy"));
    // The LAN zone does not drop bogons: its hosts have private addresses.
    let d = r.lan(&tcp4(LAN_HOST, [8, 8, 8, 8], 40_000, 443, 1, None, true));
    assert!(accepted(&d), "{d:?}");
}

#[allow(clippy::too_many_arguments)]
fn tcp6_seg(
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    data: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6(src, dst, 64)
        .tcp(sport, dport, seq, 64_240);
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    let mut out = Vec::new();
    b.write(&mut out, data).unwrap();
    out
}

/// The TCP fields of an IPv6 frame, checksum verified by etherparse.
fn tcp6_of(frame: &[u8]) -> (IpAddr, IpAddr, u16, u16, u32, u32) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
        panic!("expected IPv6")
    };
    let (s, d) = (ip.header().source(), ip.header().destination());
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("expected TCP")
    };
    let th = t.to_header();
    let want = th
        .calc_checksum_ipv6(&ip.header().to_header(), t.payload())
        .unwrap();
    assert_eq!(th.checksum, want, "TCP checksum");
    (
        IpAddr::from(s),
        IpAddr::from(d),
        th.source_port,
        th.destination_port,
        th.sequence_number,
        th.acknowledgment_number,
    )
}

#[test]
fn syn_proxy_over_ipv6() {
    let wan6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
    ];
    let server6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let text = home_router_text()
        + r#"
[[port_forward]]
src = "wan"
proto = "tcp"
external_ip = "2001:db8:fffe::2"
external_port = 8443
internal_ip = "2001:db8:1::10"
internal_port = 443
synproxy = true
"#;
    let mut r = rig(&text);
    let d = r.wan(&tcp6_seg(WEB6, wan6, 50_000, 8443, 77, None, true, &[]));
    assert!(d.reply, "{d:?}");
    let mut answer = vec![0u8; 12];
    answer.extend_from_slice(&[0x86, 0xdd]);
    answer.extend_from_slice(r.fw.reply());
    let (_, _, _, _, cookie, ack) = tcp6_of(&answer);
    assert_eq!(ack, 78);
    let d = r.wan(&tcp6_seg(
        WEB6,
        wan6,
        50_000,
        8443,
        78,
        Some(cookie.wrapping_add(1)),
        false,
        &[],
    ));
    assert!(d.inject, "{d:?}");
    let (src, dst, _, dport, seq, _) = tcp6_of(r.fw.injected());
    assert_eq!(
        (src, dst, dport, seq),
        (IpAddr::from(WEB6), IpAddr::from(server6), 443, 77)
    );
    let d = r.lan(&tcp6_seg(
        server6,
        WEB6,
        443,
        50_000,
        900_000,
        Some(78),
        true,
        &[],
    ));
    assert!(d.inject && !accepted(&d), "{d:?}");
    let d = r.lan(&tcp6_seg(
        server6,
        WEB6,
        443,
        50_000,
        900_001,
        Some(78),
        false,
        b"hello",
    ));
    assert!(accepted(&d), "{d:?}");
    let (src, _, sport, _, seq, _) = tcp6_of(r.fw.frame());
    assert_eq!(
        (src, sport, seq),
        (IpAddr::from(wan6), 8443, cookie.wrapping_add(1))
    );
}
