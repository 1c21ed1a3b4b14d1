//! `Firewall::reload`: a new policy in force without losing the connection table. Policies
//! are TOML text, packets are built with etherparse and what leaves is read back with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use keepstate_engine::{Config, Conn, L4Tuple, LinkType, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::{Decision, Firewall, Ingress, ReloadError, ReloadOptions};
use keepstate_policy::ruleset::Verdict;

const HOST: [u8; 4] = [192, 168, 1, 23];
const SERVER: [u8; 4] = [198, 51, 100, 10];
const CLIENT: [u8; 4] = [192, 0, 2, 77];
const PF_SERVER: [u8; 4] = [192, 168, 1, 10];
const WAN_ADDR: [u8; 4] = [203, 0, 113, 2];
const LAN: Ingress = Ingress::Arrived(0);
const WAN: Ingress = Ingress::Arrived(1);

/// LAN to WAN forwarded (masqueraded when `masquerade`), a port forward to the LAN server
/// when `forward`, and `extra` appended.
fn policy(masquerade: bool, forward: bool, extra: &str) -> String {
    let pf = if forward {
        r#"
[[port_forward]]
name = "web"
src = "wan"
proto = "tcp"
external_port = 8080
internal_ip = "192.168.1.10"
internal_port = 80
"#
    } else {
        ""
    };
    format!(
        r#"
[defaults]
drop_invalid = true
accept_established = true

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
masquerade = {masquerade}

[[forwarding]]
src = "lan"
dest = "wan"
{pf}{extra}
"#
    )
}

/// LAN to WAN TCP port 7 refused.
const NO_ECHO: &str = r#"
[[rule]]
name = "No-Echo"
src = "lan"
dest = "wan"
proto = "tcp"
dest_port = 7
action = "reject"
"#;

fn parse(text: &str) -> keepstate_policy::model::Policy {
    config::parse("reload.toml", text, None).unwrap().policy
}

struct Rig {
    fw: Firewall,
    now: Time,
}

impl Rig {
    fn new(text: &str) -> Rig {
        Rig {
            fw: Firewall::new(parse(text), Config::default()),
            now: Time::from_secs(1000),
        }
    }

    fn send(&mut self, ingress: Ingress, frame: &[u8]) -> (Decision, Vec<u8>) {
        self.now = self.now.saturating_add_secs(1);
        let d = self
            .fw
            .process(self.now, LinkType::Ethernet, frame, frame.len(), ingress);
        let out = if d.translated {
            self.fw.frame().to_vec()
        } else {
            frame.to_vec()
        };
        (d, out)
    }

    fn reload(&mut self, text: &str, keep: bool) -> keepstate_policy::firewall::ReloadReport {
        let opts = ReloadOptions {
            keep_forbidden: keep,
        };
        self.fw.reload(self.now, parse(text), opts).unwrap()
    }

    /// A full handshake `src:sport -> dst:dport`, the SYN/ACK sent back to `reply_to`.
    fn handshake(&mut self, from: Ingress, ends: Ends, reply_to: ([u8; 4], u16)) {
        self.handshake_via(from, ends, (ends.2, ends.3), reply_to);
    }

    /// [`Rig::handshake`] with the SYN/ACK coming from `reply_from` (a port forward's
    /// server).
    fn handshake_via(
        &mut self,
        from: Ingress,
        ends: Ends,
        reply_from: ([u8; 4], u16),
        reply_to: ([u8; 4], u16),
    ) {
        let (src, sport, dst, dport) = ends;
        let back = if from == LAN { WAN } else { LAN };
        let (d, _) = self.send(from, &tcp(src, sport, dst, dport, Flags::Syn, 1000, 0));
        assert_eq!(d.verdict, Verdict::Accept, "SYN");
        let (rs, rp) = reply_from;
        let synack = tcp(rs, rp, reply_to.0, reply_to.1, Flags::SynAck, 5000, 1001);
        let (d, _) = self.send(back, &synack);
        assert_eq!(d.verdict, Verdict::Accept, "SYN/ACK");
        let (d, _) = self.send(from, &tcp(src, sport, dst, dport, Flags::Ack, 1001, 5001));
        assert_eq!(d.verdict, Verdict::Accept, "ACK");
    }

    fn conns_to(&self, dport: u16) -> Vec<Conn> {
        self.fw
            .connections()
            .into_iter()
            .filter(|c| matches!(c.original.l4, L4Tuple::Ports { dport: p, .. } if p == dport))
            .collect()
    }
}

type Ends = ([u8; 4], u16, [u8; 4], u16);

#[derive(Clone, Copy)]
enum Flags {
    Syn,
    SynAck,
    Ack,
}

fn tcp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    f: Flags,
    seq: u32,
    ack: u32,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 2, 0x23], [2, 0, 0, 0, 1, 1])
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64_240);
    let b = match f {
        Flags::Syn => b.syn(),
        Flags::SynAck => b.syn().ack(ack),
        Flags::Ack => b.ack(ack),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// The addressing of a frame as etherparse reads it, its checksums verified.
fn ends_of(frame: &[u8]) -> Ends {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    let h = ip.header();
    let hdr = h.to_header();
    assert_eq!(
        hdr.header_checksum,
        hdr.calc_header_checksum(),
        "IP checksum"
    );
    let Some(TransportSlice::Tcp(t)) = p.transport else {
        panic!("not TCP")
    };
    let want = t.to_header().calc_checksum_ipv4(&hdr, t.payload()).unwrap();
    assert_eq!(t.checksum(), want, "TCP checksum");
    (
        h.source(),
        t.source_port(),
        h.destination(),
        t.destination_port(),
    )
}

#[test]
fn connections_the_new_policy_allows_are_kept() {
    let text = policy(false, false, "");
    let mut rig = Rig::new(&text);
    rig.handshake(LAN, (HOST, 40_000, SERVER, 80), (HOST, 40_000));
    rig.handshake(LAN, (HOST, 40_001, SERVER, 7), (HOST, 40_001));
    // A reload of the same policy, and of one with an unrelated rule: nothing goes.
    let r = rig.reload(&text, false);
    assert_eq!((r.checked, r.forbidden, r.removed, r.kept), (2, 0, 0, 2));
    let r = rig.reload(&policy(false, false, &NO_ECHO.replace("= 7", "= 9")), false);
    assert_eq!((r.forbidden, r.removed, r.kept), (0, 0, 2));
    // The connection carries on as established.
    let (d, _) = rig.send(LAN, &tcp(HOST, 40_000, SERVER, 80, Flags::Ack, 1001, 5001));
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(d.outcome.state, keepstate_engine::CtState::Established);
}

#[test]
fn connections_the_new_policy_forbids_are_removed() {
    let mut rig = Rig::new(&policy(false, false, ""));
    rig.handshake(LAN, (HOST, 40_000, SERVER, 80), (HOST, 40_000));
    rig.handshake(LAN, (HOST, 40_001, SERVER, 7), (HOST, 40_001));
    let r = rig.reload(&policy(false, false, NO_ECHO), false);
    assert_eq!((r.checked, r.forbidden, r.removed, r.kept), (2, 1, 1, 1));
    assert_eq!(r.listed.len(), 1);
    assert_eq!(
        r.listed[0].original.l4,
        L4Tuple::Ports {
            sport: 40_001,
            dport: 7
        }
    );
    assert!(rig.conns_to(7).is_empty());
    assert_eq!(rig.conns_to(80).len(), 1);
    // Its next packet is judged afresh, and refused by the new rule.
    let (d, _) = rig.send(LAN, &tcp(HOST, 40_001, SERVER, 7, Flags::Ack, 1001, 5001));
    assert_ne!(d.verdict, Verdict::Accept, "{d:?}");
    // A new one too.
    let (d, _) = rig.send(LAN, &tcp(HOST, 40_002, SERVER, 7, Flags::Syn, 1, 0));
    assert!(matches!(d.verdict, Verdict::Reject(_)), "{d:?}");
    assert_eq!(
        rig.fw.describe(d.by.unwrap()),
        "No-Echo",
        "the new rule decides"
    );
}

#[test]
fn forbidden_connections_can_be_kept() {
    let mut rig = Rig::new(&policy(false, false, ""));
    rig.handshake(LAN, (HOST, 40_001, SERVER, 7), (HOST, 40_001));
    let r = rig.reload(&policy(false, false, NO_ECHO), true);
    assert_eq!((r.forbidden, r.removed, r.kept), (1, 0, 1));
    let (d, _) = rig.send(LAN, &tcp(HOST, 40_001, SERVER, 7, Flags::Ack, 1001, 5001));
    assert_eq!(d.verdict, Verdict::Accept, "kept, still established");
}

#[test]
fn translated_connections_keep_translating() {
    let mut rig = Rig::new(&policy(true, false, ""));
    rig.handshake(LAN, (HOST, 40_000, SERVER, 80), (WAN_ADDR, 40_000));
    let conn = rig.conns_to(80)[0];
    let outside = match conn.reply.l4 {
        L4Tuple::Ports { dport, .. } => dport,
        _ => unreachable!(),
    };
    assert_eq!(conn.reply.dst, std::net::IpAddr::from(WAN_ADDR));
    // Masquerade off in the new policy: new connections go out untranslated, but the open
    // one keeps its translation both ways.
    let r = rig.reload(&policy(false, false, ""), false);
    assert_eq!((r.forbidden, r.kept), (0, 1));
    let (d, out) = rig.send(LAN, &tcp(HOST, 40_000, SERVER, 80, Flags::Ack, 1001, 5001));
    assert_eq!(d.verdict, Verdict::Accept);
    assert!(d.translated);
    assert_eq!(ends_of(&out), (WAN_ADDR, outside, SERVER, 80));
    let (d, back) = rig.send(
        WAN,
        &tcp(SERVER, 80, WAN_ADDR, outside, Flags::Ack, 5001, 1001),
    );
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(ends_of(&back), (SERVER, 80, HOST, 40_000));
    let (d, out) = rig.send(LAN, &tcp(HOST, 41_000, SERVER, 80, Flags::Syn, 1, 0));
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(ends_of(&out), (HOST, 41_000, SERVER, 80), "not masqueraded");

    // A port-forwarded connection stays while its forward does, and goes with it.
    let mut rig = Rig::new(&policy(true, true, ""));
    let ends = (CLIENT, 50_000, WAN_ADDR, 8080);
    rig.handshake_via(WAN, ends, (PF_SERVER, 80), (CLIENT, 50_000));
    let r = rig.reload(&policy(true, true, ""), false);
    assert_eq!((r.forbidden, r.kept), (0, 1));
    let (d, out) = rig.send(
        WAN,
        &tcp(CLIENT, 50_000, WAN_ADDR, 8080, Flags::Ack, 1001, 5001),
    );
    assert_eq!(d.verdict, Verdict::Accept);
    assert_eq!(ends_of(&out), (CLIENT, 50_000, PF_SERVER, 80));
    let r = rig.reload(&policy(true, false, ""), false);
    assert_eq!((r.forbidden, r.removed, r.kept), (1, 1, 0));
}

#[test]
fn a_bad_policy_is_refused_and_the_old_one_stays() {
    let text = policy(false, false, "");
    let mut rig = Rig::new(&text);
    rig.handshake(LAN, (HOST, 40_001, SERVER, 7), (HOST, 40_001));
    let bad = policy(
        false,
        false,
        "[[rule]]\nname = \"x\"\nsrc = \"nowhere\"\naction = \"drop\"\n",
    );
    let errs = config::parse("reload.toml", &bad, None).unwrap_err();
    let e = ReloadError::from(errs).to_string();
    assert!(e.starts_with("reload.toml:"), "{e}");
    let loc: Vec<&str> = e.splitn(4, ':').collect();
    assert!(
        loc[1].parse::<u32>().unwrap() > 30 && loc[2].parse::<u32>().is_ok(),
        "{e}"
    );
    assert!(e.contains("nowhere"), "{e}");
    // Nothing was handed to the firewall: the old policy decides as before.
    assert_eq!(rig.fw.policy(), &parse(&text));
    let (d, _) = rig.send(LAN, &tcp(HOST, 40_001, SERVER, 7, Flags::Ack, 1001, 5001));
    assert_eq!(d.verdict, Verdict::Accept);
}

#[test]
fn changed_interfaces_are_refused() {
    let text = policy(true, false, "");
    let mut rig = Rig::new(&text);
    rig.handshake(LAN, (HOST, 40_000, SERVER, 80), (WAN_ADDR, 40_000));
    let renamed = text.replace("\"wan0\"", "\"wan1\"");
    let e = rig
        .fw
        .reload(rig.now, parse(&renamed), ReloadOptions::default())
        .unwrap_err();
    assert!(matches!(e, ReloadError::InterfacesChanged { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("interfaces changed"), "{msg}");
    assert!(msg.contains("restart keepstate run"), "{msg}");
    // Stricter: a NO_ECHO-like change made alongside is not applied either.
    assert_eq!(rig.fw.policy(), &parse(&text));
    assert_eq!(rig.conns_to(80).len(), 1);
    let extra = format!(
        "{text}\n[[interface]]\nname = \"dmz0\"\nzone = \"lan\"\naddress = \"10.9.0.1/24\"\n"
    );
    let e = rig
        .fw
        .reload(rig.now, parse(&extra), ReloadOptions::default())
        .unwrap_err();
    assert!(e.to_string().contains("dmz0"), "{e}");
}
