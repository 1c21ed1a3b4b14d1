//! The router through its public API, as the daemon drives it: Ethernet frames built with
//! etherparse go into `Router::handle` with a simulated clock, and every frame it produces
//! is read back with etherparse, checksums recomputed there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacket, ArpPacketSlice, EtherType, Icmpv4Type, Icmpv6Type,
    IpHeaders, IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
    UdpHeader,
};
use keepstate_dataplane::gso::{tx_header, GsoKind, Offload, Segmenter, VnetHdr};
use keepstate_dataplane::neigh::NeighState;
use keepstate_dataplane::router::{Handled, Out, Port, Router, RouterConfig};
use keepstate_engine::{Config, DropReason, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::Firewall;
use keepstate_policy::model::IfaceId;

const LAN: IfaceId = 0;
const WAN: IfaceId = 1;
const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x23];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x10];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];

const ROUTER_LAN: [u8; 4] = [192, 168, 1, 1];
const ROUTER_WAN: [u8; 4] = [203, 0, 113, 2];
const GW: [u8; 4] = [203, 0, 113, 1];
const HOST: [u8; 4] = [192, 168, 1, 23];
const PF_SERVER: [u8; 4] = [192, 168, 1, 10];
const REMOTE: [u8; 4] = [198, 51, 100, 10];
const CLIENT: [u8; 4] = [198, 51, 100, 77];

fn v6(s: &str) -> [u8; 16] {
    s.parse::<Ipv6Addr>().unwrap().octets()
}

/// The home-router policy, cut down, with the uplink's gateways and a web port forward.
const POLICY: &str = r#"
[defaults]
drop_invalid = true
accept_established = true
reject_limit = "10/s burst 20"

[[interface]]
name = "lan0"
zone = "lan"
address = ["192.168.1.1/24", "2001:db8:1::1/64"]
mac = "02:00:00:00:01:01"

[[interface]]
name = "wan0"
zone = "wan"
address = ["203.0.113.2/24", "2001:db8:fffe::2/64"]
default_route = true
gateway = ["203.0.113.1", "2001:db8:fffe::1"]
mac = "02:00:00:00:00:01"

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
antispoof = true

[[forwarding]]
src = "lan"
dest = "wan"

[[rule]]
name = "Allow-Ping"
src = "wan"
proto = "icmp"
icmp_type = "echo-request"
limit = "5/s burst 10"
action = "accept"

[[rule]]
name = "Allow-Ping6"
src = "wan"
proto = "icmpv6"
icmp_type = "echo-request"
limit = "5/s burst 10"
action = "accept"

[[rule]]
name = "No-SMTP-Out"
src = "lan"
dest = "wan"
proto = "tcp"
dest_port = 25
action = "reject"

[[port_forward]]
name = "Web"
src = "wan"
proto = "tcp"
external_port = 8080
internal_ip = "192.168.1.10"
internal_port = 80
"#;

struct Rig {
    r: Router,
    out: Out,
    now: Time,
}

fn rig_with(cfg: impl FnOnce(&mut RouterConfig)) -> Rig {
    let loaded = config::parse("test.toml", POLICY, None).unwrap();
    let fw = Firewall::new(loaded.policy, Config::default());
    let mut c = RouterConfig::new(vec![
        Port {
            iface: LAN,
            name: "lan0".into(),
            mac: LAN_MAC,
            mtu: 1500,
        },
        Port {
            iface: WAN,
            name: "wan0".into(),
            mac: WAN_MAC,
            mtu: 1400,
        },
    ]);
    cfg(&mut c);
    Rig {
        r: Router::new(fw, c),
        out: Out::new(),
        now: Time::from_secs(1000),
    }
}

fn rig() -> Rig {
    rig_with(|_| {})
}

impl Rig {
    /// Hands a frame to the router; `self.out` then holds what it sent.
    fn send(&mut self, port: IfaceId, mut frame: Vec<u8>) -> Handled {
        self.out.clear();
        self.r.handle(self.now, port, &mut frame, &mut self.out)
    }

    fn tick(&mut self, ms: u64) {
        self.now = Time::from_nanos(self.now.as_nanos() + ms * 1_000_000);
        self.out.clear();
        self.r.tick(self.now, &mut self.out);
    }

    fn sent(&self) -> Vec<(IfaceId, Vec<u8>)> {
        self.out.iter().map(|(p, f)| (p, f.to_vec())).collect()
    }

    fn only(&self, port: IfaceId) -> Vec<u8> {
        let s = self.sent();
        assert_eq!(s.len(), 1, "expected one frame, got {s:?}");
        assert_eq!(s[0].0, port, "sent on the wrong port");
        s[0].1.clone()
    }

    /// Makes the WAN gateway known (it sends us an ARP request for our address).
    fn learn_gateway(&mut self) {
        let h = self.send(WAN, arp(1, GW_MAC, [0xff; 6], GW, [0; 6], ROUTER_WAN));
        assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    }

    /// Answers the router's ARP request for `ip` from `mac`, releasing what waits.
    fn arp_reply(&mut self, port: IfaceId, ip: [u8; 4], mac: [u8; 6], router: [u8; 4]) {
        let our = if port == LAN { LAN_MAC } else { WAN_MAC };
        let h = self.send(port, arp(2, mac, our, ip, our, router));
        assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    }
}

// --- Frame builders and readers -----------------------------------------------------------

fn arp(
    op: u16,
    sha: [u8; 6],
    eth_dst: [u8; 6],
    spa: [u8; 4],
    tha: [u8; 6],
    tpa: [u8; 4],
) -> Vec<u8> {
    let pkt: ArpPacket = ArpEthIpv4Packet {
        operation: ArpOperation(op),
        sender_mac: sha,
        sender_ipv4: spa,
        target_mac: tha,
        target_ipv4: tpa,
    }
    .into();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(sha, eth_dst)
        .arp(pkt)
        .write(&mut out)
        .unwrap();
    out
}

fn read_arp(frame: &[u8]) -> ArpEthIpv4Packet {
    assert_eq!(&frame[12..14], &[0x08, 0x06], "not ARP");
    ArpPacketSlice::from_slice(&frame[14..])
        .unwrap()
        .to_packet()
        .try_eth_ipv4()
        .unwrap()
}

#[allow(clippy::too_many_arguments)]
fn tcp4(
    eth: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(eth.0, eth.1)
        .ipv4(src, dst, ttl)
        .tcp(sport, dport, seq, 64_240);
    match ack {
        Some(a) => b = b.syn().ack(a),
        None => b = b.syn(),
    }
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn udp4(
    eth: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    df: bool,
    len: usize,
) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, src, dst).unwrap();
    h.dont_fragment = df;
    h.identification = 0x4242;
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth.0, eth.1)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(40_000, 9)
        .write(&mut out, &payload)
        .unwrap();
    out
}

fn udp6(eth: ([u8; 6], [u8; 6]), src: [u8; 16], dst: [u8; 16], hops: u8, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth.0, eth.1)
        .ipv6(src, dst, hops)
        .udp(40_000, 9)
        .write(&mut out, &payload)
        .unwrap();
    out
}

fn ping4(eth: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], seq: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth.0, eth.1)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(0x77, seq)
        .write(&mut out, b"keepstate ping payload")
        .unwrap();
    out
}

/// A neighbour solicitation for `target` with our source link-layer address option.
fn ns(eth_src: [u8; 6], src: [u8; 16], target: [u8; 16], hops: u8) -> Vec<u8> {
    let t = Ipv6Addr::from(target).octets();
    let group = v6(&format!(
        "ff02::1:ff{:02x}:{:02x}{:02x}",
        t[13], t[14], t[15]
    ));
    let eth_dst = [0x33, 0x33, 0xff, t[13], t[14], t[15]];
    let mut payload = target.to_vec();
    payload.extend_from_slice(&[1, 1]);
    payload.extend_from_slice(&eth_src);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .ipv6(src, group, hops)
        .icmpv6(Icmpv6Type::NeighborSolicitation)
        .write(&mut out, &payload)
        .unwrap();
    out
}

/// A solicited neighbour advertisement for `target` at `mac`, to `dst`.
fn na(mac: [u8; 6], eth_dst: [u8; 6], src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut payload = src.to_vec();
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&mac);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac, eth_dst)
        .ipv6(src, dst, 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(
            etherparse::icmpv6::NeighborAdvertisementHeader {
                router: true,
                solicited: true,
                r#override: true,
            },
        ))
        .write(&mut out, &payload)
        .unwrap();
    out
}

/// What a frame the router sent holds, with every checksum verified by etherparse.
#[derive(Debug)]
struct Seen {
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    /// (source port, destination port) for TCP and UDP.
    ports: Option<(u16, u16)>,
    tcp_flags: Option<(bool, bool, bool)>,
    /// ICMP or ICMPv6 type and code, the 4 bytes after the checksum, and the payload.
    icmp: Option<(u8, u8, [u8; 4], Vec<u8>)>,
}

fn seen(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let eth = match &p.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e.to_header(),
        other => panic!("not Ethernet: {other:?}"),
    };
    let (src, dst, ttl, v4h, v6h) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
            (
                IpAddr::from(h.source),
                IpAddr::from(h.destination),
                h.time_to_live,
                Some(h),
                None,
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            (
                IpAddr::from(h.source),
                IpAddr::from(h.destination),
                h.hop_limit,
                None,
                Some(h),
            )
        }
        other => panic!("not IP: {other:?}"),
    };
    let mut s = Seen {
        eth_src: eth.source,
        eth_dst: eth.destination,
        src,
        dst,
        ttl,
        ports: None,
        tcp_flags: None,
        icmp: None,
    };
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = match (&v4h, &v6h) {
                (Some(h), _) => t.to_header().calc_checksum_ipv4(h, t.payload()).unwrap(),
                (_, Some(h)) => t.to_header().calc_checksum_ipv6(h, t.payload()).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(t.checksum(), want, "TCP checksum");
            s.ports = Some((t.source_port(), t.destination_port()));
            s.tcp_flags = Some((t.syn(), t.ack(), t.rst()));
        }
        Some(TransportSlice::Udp(u)) => {
            let want = match (&v4h, &v6h) {
                (Some(h), _) => u.to_header().calc_checksum_ipv4(h, u.payload()).unwrap(),
                (_, Some(h)) => u.to_header().calc_checksum_ipv6(h, u.payload()).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(u.checksum(), want, "UDP checksum");
            s.ports = Some((u.source_port(), u.destination_port()));
        }
        Some(TransportSlice::Icmpv4(i)) => {
            assert_eq!(
                i.checksum(),
                i.icmp_type().calc_checksum(i.payload()),
                "ICMP checksum"
            );
            let b = i.slice();
            s.icmp = Some((
                i.type_u8(),
                i.code_u8(),
                [b[4], b[5], b[6], b[7]],
                b[8..].to_vec(),
            ));
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let (IpAddr::V6(a), IpAddr::V6(b)) = (src, dst) else {
                unreachable!()
            };
            let want = i
                .icmp_type()
                .calc_checksum(a.octets(), b.octets(), i.payload())
                .unwrap();
            assert_eq!(i.checksum(), want, "ICMPv6 checksum");
            let sl = i.slice();
            s.icmp = Some((
                i.type_u8(),
                i.code_u8(),
                [sl[4], sl[5], sl[6], sl[7]],
                sl[8..].to_vec(),
            ));
        }
        other => panic!("unexpected transport {other:?}"),
    }
    s
}

fn ip4(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

fn ip6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

fn dropped(h: &Handled) -> Option<DropReason> {
    match h {
        Handled::Dropped { reason, .. } => Some(*reason),
        _ => None,
    }
}

// --- ARP and neighbour discovery ----------------------------------------------------------

#[test]
fn arp_request_for_the_router_is_answered() {
    let mut t = rig();
    let h = t.send(LAN, arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], ROUTER_LAN));
    assert!(
        matches!(h, Handled::Local { decision } if decision.by.is_none()),
        "{h:?}"
    );
    let f = t.only(LAN);
    assert_eq!(&f[..6], &HOST_MAC, "back to the asker");
    assert_eq!(&f[6..12], &LAN_MAC);
    let a = read_arp(&f);
    assert_eq!(a.operation, ArpOperation::REPLY);
    assert_eq!(a.sender_mac, LAN_MAC);
    assert_eq!(a.sender_ipv4, ROUTER_LAN);
    assert_eq!(a.target_mac, HOST_MAC);
    assert_eq!(a.target_ipv4, HOST);
    assert_eq!(t.r.stats().arp_answered, 1);
    // The asker is learnt, unconfirmed, as Linux does.
    let n: Vec<_> = t.r.neighbours().collect();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].addr, ip4(HOST));
    assert_eq!(n[0].port, LAN);
    assert_eq!(n[0].mac, Some(HOST_MAC));
    assert_eq!(n[0].state, NeighState::Stale);

    // Not for us: another host's address, or our WAN address asked on the LAN port.
    let h = t.send(
        LAN,
        arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], [192, 168, 1, 99]),
    );
    assert_eq!(dropped(&h), Some(DropReason::NotForUs));
    assert!(t.out.is_empty());
    let h = t.send(LAN, arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], ROUTER_WAN));
    assert_eq!(dropped(&h), Some(DropReason::NotForUs));
    assert!(t.out.is_empty());
}

#[test]
fn neighbour_solicitations_for_own_addresses_are_answered() {
    let mut t = rig();
    let host6 = v6("2001:db8:1::23");
    for (target, name) in [
        (v6("2001:db8:1::1"), "global"),
        (t.r.link_local(LAN).unwrap().octets(), "link-local"),
    ] {
        assert_eq!(
            Ipv6Addr::from(v6("fe80::ff:fe00:101")),
            t.r.link_local(LAN).unwrap(),
            "EUI-64 from 02:00:00:00:01:01"
        );
        let h = t.send(LAN, ns(HOST_MAC, host6, target, 255));
        assert!(matches!(h, Handled::Local { .. }), "{name}: {h:?}");
        let f = t.only(LAN);
        let s = seen(&f);
        assert_eq!(s.eth_dst, HOST_MAC, "{name}");
        assert_eq!(s.eth_src, LAN_MAC);
        assert_eq!(
            s.src,
            IpAddr::from(target),
            "{name}: from the target address"
        );
        assert_eq!(s.dst, IpAddr::from(host6));
        assert_eq!(s.ttl, 255, "ND hop limit");
        let (ty, code, flags, body) = s.icmp.unwrap();
        assert_eq!((ty, code), (136, 0));
        assert_eq!(flags[0] & 0xe0, 0xe0, "{name}: router, solicited, override");
        assert_eq!(&body[..16], &target);
        assert_eq!(&body[16..18], &[2, 1], "target link-layer address option");
        assert_eq!(&body[18..24], &LAN_MAC);
    }
    assert_eq!(t.r.stats().nd_answered, 2);
    let n: Vec<_> = t.r.neighbours().collect();
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].addr, n[0].mac), (IpAddr::from(host6), Some(HOST_MAC)));

    // Off-link (hop limit below 255): not answered.
    let h = t.send(LAN, ns(HOST_MAC, host6, v6("2001:db8:1::1"), 64));
    assert!(dropped(&h).is_some());
    assert!(t.out.is_empty());
    // Someone else's address.
    let h = t.send(LAN, ns(HOST_MAC, host6, v6("2001:db8:1::99"), 255));
    assert!(t.out.is_empty(), "{h:?}");
}

// --- Forwarding with NAT -------------------------------------------------------------------

#[test]
fn lan_to_wan_resolves_the_gateway_masquerades_and_replies_come_back() {
    let mut t = rig();
    let syn = tcp4(
        (HOST_MAC, LAN_MAC),
        HOST,
        REMOTE,
        64,
        40_000,
        443,
        1000,
        None,
    );
    let h = t.send(LAN, syn);
    assert_eq!(h, Handled::Queued);
    // An ARP request for the gateway, from the WAN port.
    let f = t.only(WAN);
    assert_eq!(&f[..6], &[0xff; 6]);
    assert_eq!(&f[6..12], &WAN_MAC);
    let a = read_arp(&f);
    assert_eq!(a.operation, ArpOperation::REQUEST);
    assert_eq!((a.sender_mac, a.sender_ipv4), (WAN_MAC, ROUTER_WAN));
    assert_eq!(a.target_ipv4, GW);
    assert_eq!(t.r.stats().queued, 1);

    // The gateway answers: the SYN leaves, masqueraded.
    t.arp_reply(WAN, GW, GW_MAC, ROUTER_WAN);
    let s = seen(&t.only(WAN));
    assert_eq!((s.eth_dst, s.eth_src), (GW_MAC, WAN_MAC));
    assert_eq!(s.ttl, 63);
    assert_eq!(s.src, ip4(ROUTER_WAN), "masqueraded");
    assert_eq!(s.dst, ip4(REMOTE));
    let (nat_port, dport) = s.ports.unwrap();
    assert_eq!(dport, 443);
    assert_eq!(t.r.stats().forwarded, 1);

    // The SYN/ACK comes back through the gateway: to the LAN host, after ARP for it.
    let synack = tcp4(
        (GW_MAC, WAN_MAC),
        REMOTE,
        ROUTER_WAN,
        60,
        443,
        nat_port,
        5000,
        Some(1001),
    );
    let h = t.send(WAN, synack);
    assert_eq!(h, Handled::Queued);
    let a = read_arp(&t.only(LAN));
    assert_eq!(a.operation, ArpOperation::REQUEST);
    assert_eq!(
        (a.sender_mac, a.sender_ipv4, a.target_ipv4),
        (LAN_MAC, ROUTER_LAN, HOST)
    );
    t.arp_reply(LAN, HOST, HOST_MAC, ROUTER_LAN);
    let s = seen(&t.only(LAN));
    assert_eq!((s.eth_dst, s.eth_src), (HOST_MAC, LAN_MAC));
    assert_eq!((s.src, s.dst), (ip4(REMOTE), ip4(HOST)));
    assert_eq!(s.ports, Some((443, 40_000)), "translated back");
    assert_eq!(s.ttl, 59);
    assert_eq!(s.tcp_flags, Some((true, true, false)));

    // Known neighbours now: the next packet goes at once.
    let mut ack = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv4(HOST, REMOTE, 64)
        .tcp(40_000, 443, 1001, 64_240)
        .ack(5001)
        .write(&mut ack, &[])
        .unwrap();
    let h = t.send(LAN, ack);
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    let s = seen(&t.only(WAN));
    assert_eq!((s.src, s.ports), (ip4(ROUTER_WAN), Some((nat_port, 443))));

    // Per port, as `ip -s link` would count on the router's side: in on the LAN the SYN,
    // the ARP reply and the ACK; out the ARP request, the SYN/ACK; and the mirror on the WAN.
    let ports: Vec<_> = t.r.port_stats().collect();
    assert_eq!(ports.len(), 2);
    let (lan_name, lan) = ports[0];
    let (wan_name, wan) = ports[1];
    assert_eq!((lan_name, wan_name), ("lan0", "wan0"));
    assert_eq!((lan.rx_packets, lan.tx_packets, lan.dropped), (3, 2, 0));
    assert_eq!((wan.rx_packets, wan.tx_packets, wan.dropped), (2, 3, 0));
    assert!(lan.rx_bytes > 0 && wan.tx_bytes > 0);
}

#[test]
fn unsolicited_wan_syn_is_dropped() {
    let mut t = rig();
    t.learn_gateway();
    let h = t.send(
        WAN,
        tcp4((GW_MAC, WAN_MAC), REMOTE, ROUTER_WAN, 60, 5555, 22, 1, None),
    );
    assert_eq!(dropped(&h), Some(DropReason::ZonePolicy), "{h:?}");
    assert!(t.out.is_empty());
    let h = t.send(
        WAN,
        tcp4((GW_MAC, WAN_MAC), REMOTE, HOST, 60, 5555, 80, 1, None),
    );
    assert!(dropped(&h).is_some(), "{h:?}");
    assert!(t.out.is_empty());
    assert_eq!(t.r.stats().dropped_total(), 2);
}

#[test]
fn port_forward_reaches_the_lan_server() {
    let mut t = rig();
    t.learn_gateway();
    let h = t.send(
        WAN,
        tcp4(
            (GW_MAC, WAN_MAC),
            CLIENT,
            ROUTER_WAN,
            57,
            5555,
            8080,
            77,
            None,
        ),
    );
    assert_eq!(h, Handled::Queued);
    let a = read_arp(&t.only(LAN));
    assert_eq!(a.target_ipv4, PF_SERVER);
    t.arp_reply(LAN, PF_SERVER, SERVER_MAC, ROUTER_LAN);
    let s = seen(&t.only(LAN));
    assert_eq!((s.eth_dst, s.eth_src), (SERVER_MAC, LAN_MAC));
    assert_eq!((s.src, s.dst), (ip4(CLIENT), ip4(PF_SERVER)));
    assert_eq!(s.ports, Some((5555, 80)));
    assert_eq!(s.ttl, 56);

    // The server's answer goes back to the client through the gateway, from 203.0.113.2:8080.
    let h = t.send(
        LAN,
        tcp4(
            (SERVER_MAC, LAN_MAC),
            PF_SERVER,
            CLIENT,
            64,
            80,
            5555,
            9,
            Some(78),
        ),
    );
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    let s = seen(&t.only(WAN));
    assert_eq!(s.eth_dst, GW_MAC);
    assert_eq!(
        (s.src, s.dst, s.ports),
        (ip4(ROUTER_WAN), ip4(CLIENT), Some((8080, 5555)))
    );
}

// --- ICMP errors -------------------------------------------------------------------------

#[test]
fn ttl_one_gets_time_exceeded_quoting_the_packet_as_sent() {
    let mut t = rig();
    t.learn_gateway();
    let pkt = udp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 1, true, 40);
    let ip_len = pkt.len() - 14;
    let h = t.send(LAN, pkt.clone());
    assert_eq!(dropped(&h), Some(DropReason::TtlExceeded), "{h:?}");
    let s = seen(&t.only(LAN));
    assert_eq!((s.eth_dst, s.eth_src), (HOST_MAC, LAN_MAC));
    assert_eq!((s.src, s.dst), (ip4(ROUTER_LAN), ip4(HOST)));
    let (ty, code, _, quote) = s.icmp.unwrap();
    assert_eq!((ty, code), (11, 0));
    assert_eq!(
        quote,
        pkt[14..14 + ip_len].to_vec(),
        "the whole packet, untranslated"
    );
    assert_eq!(t.r.stats().icmp_errors_sent, 1);
    assert_eq!(t.r.stats().dropped_for(DropReason::TtlExceeded), 1);

    // Through the port forward: the quote keeps the address the client used, not the server's.
    let pkt = tcp4(
        (GW_MAC, WAN_MAC),
        CLIENT,
        ROUTER_WAN,
        1,
        5555,
        8080,
        77,
        None,
    );
    let h = t.send(WAN, pkt.clone());
    assert_eq!(dropped(&h), Some(DropReason::TtlExceeded), "{h:?}");
    let s = seen(&t.only(WAN));
    assert_eq!(
        (s.eth_dst, s.src, s.dst),
        (GW_MAC, ip4(ROUTER_WAN), ip4(CLIENT))
    );
    let (ty, _, _, quote) = s.icmp.unwrap();
    assert_eq!(ty, 11);
    assert_eq!(quote, pkt[14..].to_vec(), "no DNAT leaks into the quote");

    // Never about an ICMP error.
    let mut err = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv4(HOST, REMOTE, 1)
        .icmpv4(Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut err, &pkt[14..42])
        .unwrap();
    t.send(LAN, err);
    assert!(t.out.is_empty());
}

#[test]
fn df_packet_over_the_wan_mtu_gets_fragmentation_needed() {
    let mut t = rig();
    t.learn_gateway();
    let pkt = udp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, true, 1420);
    assert_eq!(pkt.len() - 14, 1448);
    let h = t.send(LAN, pkt.clone());
    assert_eq!(dropped(&h), Some(DropReason::PacketTooBig), "{h:?}");
    let s = seen(&t.only(LAN));
    assert_eq!(
        (s.src, s.dst, s.eth_dst),
        (ip4(ROUTER_LAN), ip4(HOST), HOST_MAC)
    );
    let (ty, code, rest, quote) = s.icmp.unwrap();
    assert_eq!((ty, code), (3, 4));
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1400, "next-hop MTU");
    assert_eq!(quote.len(), 576 - 28, "as much as fits in 576 bytes");
    assert_eq!(
        quote,
        pkt[14..14 + 548].to_vec(),
        "quoted as sent (source not masqueraded)"
    );
}

#[test]
fn packet_over_the_wan_mtu_without_df_is_fragmented() {
    let mut t = rig();
    t.learn_gateway();
    let pkt = udp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, false, 3000);
    let h = t.send(LAN, pkt.clone());
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    let frames = t.sent();
    assert_eq!(frames.len(), 3);
    let mut data = Vec::new();
    for (i, (port, f)) in frames.iter().enumerate() {
        assert_eq!(*port, WAN);
        assert_eq!(&f[..6], &GW_MAC);
        let h = Ipv4Header::from_slice(&f[14..]).unwrap().0;
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert!(usize::from(h.total_len) <= 1400);
        assert_eq!(h.source, ROUTER_WAN, "masqueraded");
        assert_eq!(h.time_to_live, 63);
        assert_eq!(h.identification, 0x4242);
        assert_eq!(usize::from(h.fragment_offset.value()) * 8, data.len());
        assert_eq!(h.more_fragments, i < 2);
        data.extend_from_slice(&f[34..14 + usize::from(h.total_len)]);
    }
    // The datagram reassembles to the original UDP payload behind a rewritten UDP header.
    assert_eq!(data.len(), 8 + 3000);
    assert_eq!(&data[8..], &pkt[14 + 28..]);
    assert_eq!(t.r.stats().fragments_sent, 3);
}

#[test]
fn ipv6_over_the_wan_mtu_gets_packet_too_big() {
    let mut t = rig();
    let host6 = v6("2001:db8:1::23");
    let pkt = udp6(
        (HOST_MAC, LAN_MAC),
        host6,
        v6("2001:db8:ffff::10"),
        64,
        1400,
    );
    let h = t.send(LAN, pkt.clone());
    assert_eq!(dropped(&h), Some(DropReason::PacketTooBig), "{h:?}");
    let s = seen(&t.only(LAN));
    assert_eq!((s.src, s.dst), (ip6("2001:db8:1::1"), IpAddr::from(host6)));
    let (ty, code, mtu, quote) = s.icmp.unwrap();
    assert_eq!((ty, code), (2, 0));
    assert_eq!(u32::from_be_bytes(mtu), 1400);
    assert_eq!(quote, pkt[14..14 + 1280 - 48].to_vec());
}

// --- Packets for the router ----------------------------------------------------------------

#[test]
fn ping_to_the_lan_address_is_answered() {
    let mut t = rig();
    // The host has asked for our MAC first, so we know it.
    t.send(LAN, arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], ROUTER_LAN));
    let req = ping4((HOST_MAC, LAN_MAC), HOST, ROUTER_LAN, 7);
    let h = t.send(LAN, req.clone());
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let replies: Vec<Seen> = t
        .sent()
        .iter()
        .filter(|(_, f)| f[12..14] == [8, 0])
        .map(|(p, f)| {
            assert_eq!(*p, LAN);
            seen(f)
        })
        .collect();
    assert_eq!(replies.len(), 1, "{:?}", t.sent());
    let s = &replies[0];
    assert_eq!((s.eth_dst, s.eth_src), (HOST_MAC, LAN_MAC));
    assert_eq!((s.src, s.dst), (ip4(ROUTER_LAN), ip4(HOST)));
    let (ty, code, rest, body) = s.icmp.clone().unwrap();
    assert_eq!((ty, code), (0, 0));
    assert_eq!(rest, [0, 0x77, 0, 7], "identifier and sequence");
    assert_eq!(body, b"keepstate ping payload");
    assert_eq!(t.r.stats().echo_replies_sent, 1);
}

#[test]
fn ping_to_the_wan_address_is_answered_through_the_gateway() {
    let mut t = rig();
    t.learn_gateway();
    let h = t.send(WAN, ping4((GW_MAC, WAN_MAC), REMOTE, ROUTER_WAN, 1));
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let replies: Vec<(IfaceId, Vec<u8>)> = t
        .sent()
        .into_iter()
        .filter(|(_, f)| f[12..14] == [8, 0])
        .collect();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, WAN);
    let s = seen(&replies[0].1);
    assert_eq!(s.eth_dst, GW_MAC);
    assert_eq!((s.src, s.dst), (ip4(ROUTER_WAN), ip4(REMOTE)));
    assert_eq!(s.icmp.unwrap().0, 0);
    // A broadcast ping is ignored.
    let h = t.send(
        LAN,
        ping4((HOST_MAC, [0xff; 6]), HOST, [192, 168, 1, 255], 2),
    );
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    assert!(t.out.iter().all(|(_, f)| f[12..14] != [8, 0]));
}

#[test]
fn closed_ports_answer_with_rst_and_port_unreachable() {
    let mut t = rig();
    t.send(LAN, arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], ROUTER_LAN));
    let h = t.send(
        LAN,
        tcp4(
            (HOST_MAC, LAN_MAC),
            HOST,
            ROUTER_LAN,
            64,
            40_001,
            22,
            1234,
            None,
        ),
    );
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let rst: Vec<Seen> = t
        .sent()
        .iter()
        .filter(|(_, f)| f[12..14] == [8, 0])
        .map(|(_, f)| seen(f))
        .collect();
    assert_eq!(rst.len(), 1);
    assert_eq!((rst[0].src, rst[0].dst), (ip4(ROUTER_LAN), ip4(HOST)));
    assert_eq!(rst[0].ports, Some((22, 40_001)));
    assert_eq!(
        rst[0].tcp_flags,
        Some((false, true, true)),
        "RST+ACK to a SYN"
    );

    let h = t.send(
        LAN,
        udp4((HOST_MAC, LAN_MAC), HOST, ROUTER_LAN, 64, true, 10),
    );
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let un: Vec<Seen> = t
        .sent()
        .iter()
        .filter(|(_, f)| f[12..14] == [8, 0])
        .map(|(_, f)| seen(f))
        .collect();
    assert_eq!(un.len(), 1);
    let (ty, code, _, _) = un[0].icmp.clone().unwrap();
    assert_eq!((ty, code), (3, 3));
    assert_eq!(t.r.stats().dropped_for(DropReason::LocalPortClosed), 2);
}

// --- Neighbour resolution ------------------------------------------------------------------

#[test]
fn unresolved_neighbour_drops_the_queue_after_three_tries() {
    let mut t = rig();
    let h = t.send(
        LAN,
        tcp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, 40_000, 443, 1, None),
    );
    assert_eq!(h, Handled::Queued);
    assert_eq!(t.r.stats().arp_requests_sent, 1);
    t.tick(500);
    assert!(t.out.is_empty(), "not before a second has passed");
    for n in 2..=3 {
        t.tick(500);
        let a = read_arp(&t.only(WAN));
        assert_eq!(a.target_ipv4, GW);
        assert_eq!(t.r.stats().arp_requests_sent, n);
        t.tick(500);
    }
    assert_eq!(t.r.stats().dropped_for(DropReason::NeighbourUnresolved), 0);
    t.tick(500);
    assert!(t.out.is_empty());
    assert_eq!(t.r.stats().dropped_for(DropReason::NeighbourUnresolved), 1);
    assert!(t
        .r
        .neighbours()
        .any(|n| n.addr == ip4(GW) && n.state == NeighState::Failed));
    // Failed: the next packet is dropped at once, with no new request.
    let h = t.send(
        LAN,
        tcp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, 40_001, 443, 1, None),
    );
    assert_eq!(dropped(&h), Some(DropReason::NeighbourUnresolved));
    assert!(t.out.is_empty());
    // A while later resolution starts over.
    t.tick(5000);
    let h = t.send(
        LAN,
        tcp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, 40_002, 443, 1, None),
    );
    assert_eq!(h, Handled::Queued);
    assert_eq!(read_arp(&t.only(WAN)).target_ipv4, GW);
}

#[test]
fn neighbour_queues_are_bounded() {
    let mut t = rig();
    for sport in 0..5u16 {
        let h = t.send(
            LAN,
            tcp4(
                (HOST_MAC, LAN_MAC),
                HOST,
                REMOTE,
                64,
                40_000 + sport,
                443,
                1,
                None,
            ),
        );
        assert_eq!(h, Handled::Queued);
    }
    // Three wait; the two oldest were pushed out.
    assert_eq!(t.r.stats().dropped_for(DropReason::NeighbourUnresolved), 2);
    assert_eq!(t.r.stats().arp_requests_sent, 1, "one request for them all");
    t.arp_reply(WAN, GW, GW_MAC, ROUTER_WAN);
    let sent = t.sent();
    assert_eq!(sent.len(), 3);
    let mut ports: Vec<u16> = Vec::new();
    for (p, f) in &sent {
        assert_eq!(*p, WAN);
        let s = seen(f);
        assert_eq!(s.eth_dst, GW_MAC);
        ports.push(s.ports.unwrap().1);
    }
    assert!(ports.iter().all(|&p| p == 443));

    // The overall bound: three neighbours, room for two packets.
    let mut t = rig_with(|c| c.neigh.queue_total = 2);
    for host in [50u8, 51, 52] {
        let h = t.send(
            LAN,
            tcp4(
                (HOST_MAC, LAN_MAC),
                HOST,
                [192, 168, 1, host],
                64,
                40_000,
                80,
                1,
                None,
            ),
        );
        assert_eq!(h, Handled::Queued);
    }
    assert_eq!(t.r.stats().dropped_for(DropReason::NeighbourUnresolved), 1);
    // The first host's packet was the one pushed out.
    t.arp_reply(LAN, [192, 168, 1, 50], [2, 0, 0, 0, 0, 50], ROUTER_LAN);
    assert!(t.out.is_empty());
    t.arp_reply(LAN, [192, 168, 1, 52], [2, 0, 0, 0, 0, 52], ROUTER_LAN);
    assert_eq!(seen(&t.only(LAN)).dst, ip4([192, 168, 1, 52]));
}

// --- Link layer ----------------------------------------------------------------------------

#[test]
fn frames_not_for_us_are_dropped() {
    let mut t = rig();
    let mut f = ping4((HOST_MAC, [2, 0, 0, 0, 3, 3]), HOST, ROUTER_LAN, 1);
    let h = t.send(LAN, f.clone());
    assert_eq!(dropped(&h), Some(DropReason::NotForUs));
    // An ethertype the router does not speak, and an 802.1Q-tagged frame.
    f[0..6].copy_from_slice(&LAN_MAC);
    f[12..14].copy_from_slice(&[0x88, 0xcc]);
    assert_eq!(dropped(&t.send(LAN, f.clone())), Some(DropReason::NotForUs));
    let mut tagged = f[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
    tagged.extend_from_slice(&ping4((HOST_MAC, LAN_MAC), HOST, ROUTER_LAN, 1)[14..]);
    assert_eq!(dropped(&t.send(LAN, tagged)), Some(DropReason::NotForUs));
    // An unknown port.
    assert_eq!(
        dropped(&t.send(7, ping4((HOST_MAC, LAN_MAC), HOST, ROUTER_LAN, 1))),
        Some(DropReason::NotForUs)
    );
    assert!(t.out.is_empty());
    assert_eq!(t.r.stats().dropped_for(DropReason::NotForUs), 4);
    let _ = EtherType::ARP;
}

// --- IPv6 ----------------------------------------------------------------------------------

#[test]
fn ipv6_is_forwarded_without_nat_after_neighbour_discovery() {
    let mut t = rig();
    let host6 = v6("2001:db8:1::23");
    let remote6 = v6("2001:db8:ffff::10");
    let gw6 = v6("2001:db8:fffe::1");
    let pkt = udp6((HOST_MAC, LAN_MAC), host6, remote6, 64, 100);
    assert_eq!(t.send(LAN, pkt.clone()), Handled::Queued);
    // A solicitation for the gateway to its solicited-node group.
    let s = seen(&t.only(WAN));
    assert_eq!(s.eth_dst, [0x33, 0x33, 0xff, 0, 0, 1]);
    assert_eq!(s.eth_src, WAN_MAC);
    assert_eq!(s.dst, ip6("ff02::1:ff00:1"));
    assert_eq!(s.src, ip6("2001:db8:fffe::2"));
    assert_eq!(s.ttl, 255);
    let (ty, _, _, body) = s.icmp.unwrap();
    assert_eq!(ty, 135);
    assert_eq!(&body[..16], &gw6);
    assert_eq!(
        &body[16..24],
        &[1, 1, 2, 0, 0, 0, 0, 1],
        "source link-layer option"
    );
    assert_eq!(t.r.stats().nd_solicits_sent, 1);

    let h = t.send(WAN, na(GW_MAC, WAN_MAC, gw6, v6("2001:db8:fffe::2")));
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let s = seen(&t.only(WAN));
    assert_eq!((s.eth_dst, s.eth_src), (GW_MAC, WAN_MAC));
    assert_eq!(
        (s.src, s.dst),
        (IpAddr::from(host6), IpAddr::from(remote6)),
        "no NAT"
    );
    assert_eq!(s.ttl, 63);
    assert_eq!(s.ports, Some((40_000, 9)));
    assert!(t
        .r
        .neighbours()
        .any(|n| n.addr == IpAddr::from(gw6) && n.state == NeighState::Reachable));

    // Hop limit 1: time exceeded.
    let pkt = udp6((HOST_MAC, LAN_MAC), host6, remote6, 1, 10);
    let h = t.send(LAN, pkt.clone());
    assert_eq!(dropped(&h), Some(DropReason::TtlExceeded));
    let s = seen(&t.only(LAN));
    assert_eq!((s.src, s.dst), (ip6("2001:db8:1::1"), IpAddr::from(host6)));
    let (ty, code, _, quote) = s.icmp.unwrap();
    assert_eq!((ty, code), (3, 0));
    assert_eq!(quote, pkt[14..].to_vec());
}

// --- Robustness ----------------------------------------------------------------------------

#[test]
fn garbage_frames_never_panic() {
    let mut t = rig();
    t.learn_gateway();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let templates = [
        ping4((HOST_MAC, LAN_MAC), HOST, ROUTER_LAN, 1),
        tcp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 2, 1, 2, 3, None),
        udp6(
            (HOST_MAC, LAN_MAC),
            v6("2001:db8:1::23"),
            v6("2001:db8:ffff::1"),
            1,
            30,
        ),
        ns(HOST_MAC, v6("2001:db8:1::23"), v6("2001:db8:1::1"), 255),
        arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], ROUTER_LAN),
    ];
    let (mut local, mut queued, mut drops, mut fwd) = (0u64, 0u64, 0u64, 0u64);
    for i in 0..20_000u32 {
        let r = next();
        let mut frame = if r % 3 == 0 {
            // Pure noise.
            let len = (next() % 200) as usize;
            (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            // A real frame with a few bytes flipped and maybe cut short.
            let mut f = templates[(r >> 8) as usize % templates.len()].clone();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % f.len();
                if at >= 12 || next() % 8 == 0 {
                    f[at] = next() as u8;
                }
            }
            if next() % 4 == 0 {
                let keep = (next() as usize) % (f.len() + 1);
                f.truncate(keep);
            }
            f
        };
        let port = if r & 0x10 == 0 { LAN } else { WAN };
        t.out.clear();
        match t.r.handle(t.now, port, &mut frame, &mut t.out) {
            Handled::Local { .. } => local += 1,
            Handled::Queued => queued += 1,
            Handled::Dropped { .. } => drops += 1,
            Handled::Forwarded { .. } => fwd += 1,
        }
        for (_, f) in t.out.iter() {
            assert!(
                f.len() >= 14 && f.len() <= 1514,
                "frame of {} bytes",
                f.len()
            );
        }
        if i % 100 == 0 {
            t.tick(137);
        }
    }
    // Every frame is counted once; drops and forwards also count frames that waited.
    let s = t.r.stats();
    assert_eq!(s.local, local + 1, "the gateway's ARP request too");
    assert_eq!(s.queued, queued);
    assert!(s.dropped_total() >= drops);
    assert!(s.forwarded >= fwd);
    assert!(drops > 10_000, "most garbage is refused: {drops}");
}

#[test]
fn firewall_reject_answers_go_back_to_the_sender() {
    let mut t = rig();
    let h = t.send(
        LAN,
        tcp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, 40_000, 25, 99, None),
    );
    assert_eq!(dropped(&h), Some(DropReason::RuleReject), "{h:?}");
    let s = seen(&t.only(LAN));
    assert_eq!(
        (s.eth_dst, s.eth_src),
        (HOST_MAC, LAN_MAC),
        "straight back to the sender"
    );
    assert_eq!((s.src, s.dst), (ip4(REMOTE), ip4(HOST)));
    assert_eq!(s.ports, Some((25, 40_000)));
    assert_eq!(s.tcp_flags, Some((false, true, true)));
    assert_eq!(t.r.stats().rejects_sent, 1);
}

#[test]
fn stale_neighbours_are_used_then_reprobed() {
    let mut t = rig();
    t.learn_gateway();
    let syn = |sport| tcp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, sport, 443, 1, None);
    // Learnt from its request: used at once, no probe yet.
    let h = t.send(LAN, syn(40_000));
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    assert_eq!(t.sent().len(), 1);
    let state = |t: &Rig| t.r.neighbours().find(|n| n.addr == ip4(GW)).unwrap().state;
    assert_eq!(state(&t), NeighState::Delay);
    // Five seconds later, a unicast probe to the address we have.
    t.tick(4900);
    assert!(t.out.is_empty());
    t.tick(200);
    let f = t.only(WAN);
    assert_eq!(&f[..6], &GW_MAC, "unicast");
    assert_eq!(read_arp(&f).target_ipv4, GW);
    assert_eq!(state(&t), NeighState::Probe);
    // Still used while probing; the answer confirms it.
    let h = t.send(LAN, syn(40_001));
    assert!(matches!(h, Handled::Forwarded { .. }), "{h:?}");
    t.arp_reply(WAN, GW, GW_MAC, ROUTER_WAN);
    assert!(t.out.is_empty());
    assert_eq!(state(&t), NeighState::Reachable);
    // Reachable for 30 s, then stale again.
    t.tick(31_000);
    assert_eq!(state(&t), NeighState::Stale);
    // Unused for a minute, forgotten.
    t.tick(61_000);
    assert!(t.r.neighbours().all(|n| n.addr != ip4(GW)));
}

#[test]
fn ping_to_the_link_local_address_is_answered() {
    let mut t = rig();
    let ll = t.r.link_local(LAN).unwrap().octets();
    let host_ll = v6("fe80::23");
    let mut req = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv6(host_ll, ll, 64)
        .icmpv6_echo_request(5, 6)
        .write(&mut req, b"ll")
        .unwrap();
    let h = t.send(LAN, req);
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let s = seen(&t.only(LAN));
    assert_eq!((s.eth_dst, s.eth_src), (HOST_MAC, LAN_MAC));
    assert_eq!((s.src, s.dst), (IpAddr::from(ll), IpAddr::from(host_ll)));
    let (ty, _, rest, body) = s.icmp.unwrap();
    assert_eq!(ty, 129);
    assert_eq!(rest, [0, 5, 0, 6]);
    assert_eq!(body, b"ll");
    // Another host's link-local address is never routed.
    let mut other = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv6(host_ll, v6("fe80::99"), 64)
        .udp(1, 2)
        .write(&mut other, b"x")
        .unwrap();
    assert_eq!(dropped(&t.send(LAN, other)), Some(DropReason::NotForUs));
    assert!(t.out.is_empty());
}

#[test]
fn nothing_is_sent_without_being_asked_and_ticks_are_quiet_when_idle() {
    let mut t = rig();
    for _ in 0..50 {
        t.tick(100);
        assert!(t.out.is_empty());
    }
    let _ = Ipv4Addr::UNSPECIFIED;
}

// --- GSO super-frames -----------------------------------------------------------------------

impl Rig {
    fn send_offloaded(&mut self, port: IfaceId, mut frame: Vec<u8>, offload: Offload) -> Handled {
        self.out.clear();
        self.r
            .handle_offloaded(self.now, port, &mut frame, offload, &mut self.out)
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + (i >> 8)) as u8).collect()
}

/// A UDP super-frame of `count` datagrams of `size` bytes, LAN host to the remote host, as
/// a packet socket hands it over once its checksum is complete (etherparse computes it).
fn udp4_super(df: bool, size: usize, count: usize) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, HOST, REMOTE).unwrap();
    h.dont_fragment = df;
    h.identification = 0x1000;
    let mut out = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(5000, 5001)
        .write(&mut out, &pattern(size * count))
        .unwrap();
    out
}

#[test]
fn gso_super_frame_leaves_whole_with_its_offload_and_translated_headers() {
    let mut t = rig();
    t.learn_gateway();
    let h = t.send(LAN, arp(1, HOST_MAC, [0xff; 6], HOST, [0; 6], ROUTER_LAN));
    assert!(matches!(h, Handled::Local { .. }), "{h:?}");
    let syn = tcp4(
        (HOST_MAC, LAN_MAC),
        HOST,
        REMOTE,
        64,
        40_000,
        443,
        1000,
        None,
    );
    assert!(matches!(
        t.send(LAN, syn),
        Handled::Forwarded { out: WAN, .. }
    ));
    let (nat_port, _) = seen(&t.only(WAN)).ports.unwrap();
    let synack = tcp4(
        (GW_MAC, WAN_MAC),
        REMOTE,
        ROUTER_WAN,
        60,
        443,
        nat_port,
        5000,
        Some(1001),
    );
    assert!(matches!(
        t.send(WAN, synack),
        Handled::Forwarded { out: LAN, .. }
    ));

    // Ten segments' worth of data in one frame, segments sized for the WAN's 1400 MTU.
    let payload = pattern(13_600);
    let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, HOST, REMOTE).unwrap();
    ip.dont_fragment = true;
    let mut sf = Vec::new();
    PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ip(IpHeaders::Ipv4(ip, Default::default()))
        .tcp(40_000, 443, 1001, 64_240)
        .ack(5001)
        .psh()
        .write(&mut sf, &payload)
        .unwrap();
    let gso = Offload::gso(GsoKind::TcpV4, 1360);
    let h = t.send_offloaded(LAN, sf.clone(), gso);
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    let frames: Vec<_> = t
        .out
        .iter_offload()
        .map(|(p, f, o)| (p, f.to_vec(), o))
        .collect();
    assert_eq!(frames.len(), 1, "one frame, not its segments");
    let (port, f, off) = &frames[0];
    assert_eq!((*port, *off), (WAN, gso), "sent with its offload");
    assert_eq!(f.len(), sf.len());
    // `seen` verifies the checksums: the TCP one over the whole super-frame.
    let s = seen(f);
    assert_eq!((s.eth_dst, s.eth_src), (GW_MAC, WAN_MAC));
    assert_eq!(
        (s.src, s.dst),
        (ip4(ROUTER_WAN), ip4(REMOTE)),
        "masqueraded"
    );
    assert_eq!(s.ports, Some((nat_port, 443)));
    assert_eq!(s.ttl, 63);
    assert_eq!(&f[54..], &payload[..]);
    assert_eq!(t.r.stats().gso_forwarded, 1);
    assert_eq!(t.r.stats().forwarded, 3);

    // What the ring then sends, and what the kernel makes of it: ten valid segments.
    let (_, wire, o) = t.out.iter_mut().next().unwrap();
    let hdr = tx_header(wire, o.gso.unwrap()).unwrap();
    assert_eq!(
        (
            hdr.gso_type,
            hdr.gso_size,
            hdr.hdr_len,
            hdr.csum_start,
            hdr.csum_offset
        ),
        (VnetHdr::GSO_TCPV4, 1360, 54, 34, 16)
    );
    let mut wire = wire.to_vec();
    let mut segs = Vec::new();
    Segmenter::new()
        .process(&hdr, &mut wire, |x| segs.push(x.to_vec()))
        .unwrap();
    assert_eq!(segs.len(), 10);
    for (i, x) in segs.iter().enumerate() {
        assert_eq!(x.len(), 14 + 1400);
        let s = seen(x);
        assert_eq!((s.src, s.ports), (ip4(ROUTER_WAN), Some((nat_port, 443))));
        assert_eq!(&x[54..], &payload[i * 1360..(i + 1) * 1360]);
    }
}

#[test]
fn gso_super_frame_with_df_over_the_egress_mtu_gets_one_fragmentation_needed() {
    let mut t = rig();
    t.learn_gateway();
    // Segments of 1500 bytes for a 1400-byte WAN.
    let sf = udp4_super(true, 1472, 4);
    let h = t.send_offloaded(LAN, sf.clone(), Offload::gso(GsoKind::UdpL4, 1472));
    assert_eq!(dropped(&h), Some(DropReason::PacketTooBig), "{h:?}");
    let s = seen(&t.only(LAN));
    assert_eq!((s.src, s.dst), (ip4(ROUTER_LAN), ip4(HOST)));
    let (ty, code, rest, quote) = s.icmp.unwrap();
    assert_eq!((ty, code), (3, 4));
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1400, "next-hop MTU");
    assert_eq!(quote.len(), 548);
    // Quoted as its first segment went (or would have gone) on the wire.
    let (q, _) = Ipv4Header::from_slice(&quote).unwrap();
    assert_eq!(q.total_len, 1500);
    assert_eq!(q.header_checksum, q.calc_header_checksum());
    assert_eq!((q.source, q.destination), (HOST, REMOTE));
    assert_eq!(&quote[20..], &sf[34..14 + 548]);
    assert_eq!(t.r.stats().gso_forwarded, 0);
}

#[test]
fn gso_super_frame_without_df_over_the_egress_mtu_is_segmented_then_fragmented() {
    let mut t = rig();
    t.learn_gateway();
    let sf = udp4_super(false, 1472, 4);
    let h = t.send_offloaded(LAN, sf.clone(), Offload::gso(GsoKind::UdpL4, 1472));
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    let frames: Vec<_> = t
        .out
        .iter_offload()
        .map(|(p, f, o)| (p, f.to_vec(), o))
        .collect();
    // Four 1500-byte datagrams, each in two fragments.
    assert_eq!(frames.len(), 8);
    let mut datagrams: std::collections::BTreeMap<u16, Vec<u8>> = Default::default();
    let mut nat_port = None;
    for (port, f, off) in &frames {
        assert_eq!((*port, *off), (WAN, Offload::NONE));
        assert_eq!(&f[..6], &GW_MAC);
        let (h, _) = Ipv4Header::from_slice(&f[14..]).unwrap();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert!(usize::from(h.total_len) <= 1400);
        assert_eq!(
            (h.source, h.destination),
            (ROUTER_WAN, REMOTE),
            "masqueraded"
        );
        assert_eq!(h.time_to_live, 63);
        let d = datagrams.entry(h.identification).or_default();
        assert_eq!(usize::from(h.fragment_offset.value()) * 8, d.len());
        d.extend_from_slice(&f[34..14 + usize::from(h.total_len)]);
    }
    assert_eq!(datagrams.len(), 4);
    for (i, d) in datagrams.values().enumerate() {
        let (u, body) = UdpHeader::from_slice(d).unwrap();
        assert_eq!(usize::from(u.length), 8 + 1472);
        assert_eq!(body, &pattern(4 * 1472)[i * 1472..(i + 1) * 1472]);
        assert_eq!(
            u.checksum,
            u.calc_checksum_ipv4_raw(ROUTER_WAN, REMOTE, body).unwrap(),
            "UDP checksum of datagram {i}"
        );
        assert_eq!(u.destination_port, 5001);
        nat_port.get_or_insert(u.source_port);
        assert_eq!(nat_port, Some(u.source_port), "one translation for all");
    }
    let st = t.r.stats();
    assert_eq!(
        (st.gso_segmented, st.fragments_sent, st.gso_forwarded),
        (1, 8, 0)
    );
}

#[test]
fn gso_offload_that_does_not_match_the_frame_is_ignored() {
    let mut t = rig();
    t.learn_gateway();
    // A TCP kind on a UDP datagram that fits: forwarded as an ordinary frame.
    let pkt = udp4((HOST_MAC, LAN_MAC), HOST, REMOTE, 64, true, 1000);
    let h = t.send_offloaded(LAN, pkt, Offload::gso(GsoKind::TcpV4, 500));
    assert!(matches!(h, Handled::Forwarded { out: WAN, .. }), "{h:?}");
    let frames: Vec<_> = t.out.iter_offload().map(|(_, _, o)| o).collect();
    assert_eq!(frames, vec![Offload::NONE]);
}
