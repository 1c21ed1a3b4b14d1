//! A router fed with etherparse-built frames, and a raw HTTP client, for the control API's
//! tests (the CLI's tests include this file too).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use etherparse::{PacketBuilder, TcpOptionElement};
use keepstate_dataplane::router::{Handled, Out, Port, Router, RouterConfig};
use keepstate_engine::{Config, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::Firewall;
use keepstate_policy::model::IfaceId;

pub const LAN: IfaceId = 0;
pub const WAN: IfaceId = 1;
pub const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
pub const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const HOST_MAC: [u8; 6] = [2, 0, 0, 0, 2, 0x23];
pub const GW_MAC: [u8; 6] = [2, 0, 0, 0, 9, 9];

pub const HOST: [u8; 4] = [192, 168, 1, 23];
pub const HOST2: [u8; 4] = [192, 168, 1, 24];
pub const REMOTE: [u8; 4] = [198, 51, 100, 10];
pub const REMOTE2: [u8; 4] = [198, 51, 100, 20];
pub const ROUTER_WAN: [u8; 4] = [203, 0, 113, 2];

/// LAN to WAN forwarded without translation (so listings compare with a plain kernel's),
/// or masqueraded.
pub fn policy(masquerade: bool) -> String {
    format!(
        r#"
[defaults]
drop_invalid = true
accept_established = true

[[interface]]
name = "lan0"
zone = "lan"
address = ["192.168.1.1/24"]
mac = "02:00:00:00:01:01"

[[interface]]
name = "wan0"
zone = "wan"
address = ["203.0.113.2/24"]
default_route = true
gateway = ["203.0.113.1"]
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
masquerade = {masquerade}

[[forwarding]]
src = "lan"
dest = "wan"
"#
    )
}

pub struct Rig {
    pub r: Router,
    pub out: Out,
    pub now: Time,
}

pub fn rig(masquerade: bool) -> Rig {
    let loaded = config::parse("test.toml", &policy(masquerade), None).unwrap();
    let fw = Firewall::new(loaded.policy, Config::default());
    let c = RouterConfig::new(vec![
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
            mtu: 1500,
        },
    ]);
    Rig {
        r: Router::new(fw, c),
        out: Out::new(),
        now: Time::from_secs(1000),
    }
}

/// Linux's SYN options: MSS, SACK permitted, timestamps, window scale (20 bytes).
fn syn_opts() -> Vec<TcpOptionElement> {
    vec![
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(1, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(7),
    ]
}

/// Timestamps after two no-ops (12 bytes), as Linux sends on an established connection.
fn ts_opts() -> Vec<TcpOptionElement> {
    vec![
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(2, 1),
    ]
}

impl Rig {
    pub fn send(&mut self, port: IfaceId, mut frame: Vec<u8>) -> Handled {
        self.out.clear();
        self.r.handle(self.now, port, &mut frame, &mut self.out)
    }

    pub fn advance(&mut self, secs: u64) {
        self.now = self.now.saturating_add_secs(secs);
    }

    /// From a LAN host out to the internet (towards the gateway).
    fn out_eth(&self) -> ([u8; 6], [u8; 6]) {
        (HOST_MAC, LAN_MAC)
    }

    fn in_eth(&self) -> ([u8; 6], [u8; 6]) {
        (GW_MAC, WAN_MAC)
    }

    /// A TCP handshake from `src:sport` to `dst:dport` (SYN and ACK 60 and 52 bytes of IP,
    /// the SYN/ACK 60, as Linux sends them). `reply_to` is where replies are addressed
    /// (the masquerading address under NAT).
    pub fn tcp_handshake(
        &mut self,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        reply_to: ([u8; 4], u16),
    ) {
        let (o, i) = (self.out_eth(), self.in_eth());
        let mut f = Vec::new();
        PacketBuilder::ethernet2(o.0, o.1)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 64_240)
            .syn()
            .options(&syn_opts())
            .unwrap()
            .write(&mut f, &[])
            .unwrap();
        let h = self.send(LAN, f);
        assert!(!matches!(h, Handled::Dropped { .. }), "SYN: {h:?}");
        let mut f = Vec::new();
        PacketBuilder::ethernet2(i.0, i.1)
            .ipv4(dst, reply_to.0, 64)
            .tcp(dport, reply_to.1, 5000, 65_160)
            .syn()
            .ack(1001)
            .options(&syn_opts())
            .unwrap()
            .write(&mut f, &[])
            .unwrap();
        let h = self.send(WAN, f);
        assert!(!matches!(h, Handled::Dropped { .. }), "SYN/ACK: {h:?}");
        let mut f = Vec::new();
        PacketBuilder::ethernet2(o.0, o.1)
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1001, 502)
            .ack(5001)
            .options(&ts_opts())
            .unwrap()
            .write(&mut f, &[])
            .unwrap();
        let h = self.send(LAN, f);
        assert!(!matches!(h, Handled::Dropped { .. }), "ACK: {h:?}");
    }

    /// One UDP datagram out.
    pub fn udp(&mut self, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) {
        let o = self.out_eth();
        let mut f = Vec::new();
        PacketBuilder::ethernet2(o.0, o.1)
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut f, payload)
            .unwrap();
        let h = self.send(LAN, f);
        assert!(!matches!(h, Handled::Dropped { .. }), "UDP: {h:?}");
    }

    /// An echo request out (84 bytes of IP, as ping's default) and its reply back.
    pub fn ping(&mut self, src: [u8; 4], dst: [u8; 4], id: u16, reply_to: [u8; 4]) {
        let (o, i) = (self.out_eth(), self.in_eth());
        let payload = [0x5au8; 56];
        let mut f = Vec::new();
        PacketBuilder::ethernet2(o.0, o.1)
            .ipv4(src, dst, 64)
            .icmpv4_echo_request(id, 1)
            .write(&mut f, &payload)
            .unwrap();
        let h = self.send(LAN, f);
        assert!(!matches!(h, Handled::Dropped { .. }), "echo: {h:?}");
        let mut f = Vec::new();
        PacketBuilder::ethernet2(i.0, i.1)
            .ipv4(dst, reply_to, 64)
            .icmpv4_echo_reply(id, 1)
            .write(&mut f, &payload)
            .unwrap();
        let h = self.send(WAN, f);
        assert!(!matches!(h, Handled::Dropped { .. }), "echo reply: {h:?}");
    }

    /// The three connections of the recording below, opened in its order, listed a second
    /// after.
    pub fn recorded(&mut self) {
        self.tcp_handshake(HOST, 40_000, REMOTE, 80, (HOST, 40_000));
        self.udp(HOST, 40_001, REMOTE, 53, b"hello");
        self.ping(HOST, REMOTE, 4356, HOST);
        self.advance(1);
    }
}

/// `conntrack -L` from conntrack-tools v1.4.7 on Linux, with accounting on, recorded
/// (`nf_conntrack_acct=1`) from a namespace where 192.168.1.23 opened a TCP connection to
/// 198.51.100.10:80 (handshake only), sent "hello" to its port 53 and pinged it once, listed
/// within the second.
pub const RECORDED_L: &str = "\
tcp      6 431999 ESTABLISHED src=192.168.1.23 dst=198.51.100.10 sport=40000 dport=80 packets=2 bytes=112 src=198.51.100.10 dst=192.168.1.23 sport=80 dport=40000 packets=1 bytes=60 [ASSURED] mark=0 use=1
udp      17 29 src=192.168.1.23 dst=198.51.100.10 sport=40001 dport=53 packets=1 bytes=33 [UNREPLIED] src=198.51.100.10 dst=192.168.1.23 sport=53 dport=40001 packets=0 bytes=0 mark=0 use=1
icmp     1 29 src=192.168.1.23 dst=198.51.100.10 type=8 code=0 id=4356 packets=1 bytes=84 src=198.51.100.10 dst=192.168.1.23 type=0 code=0 id=4356 packets=1 bytes=84 mark=0 use=1
";

/// The same table, `conntrack -L -o extended`.
pub const RECORDED_EXTENDED: &str = "\
ipv4     2 tcp      6 431999 ESTABLISHED src=192.168.1.23 dst=198.51.100.10 sport=40000 dport=80 packets=2 bytes=112 src=198.51.100.10 dst=192.168.1.23 sport=80 dport=40000 packets=1 bytes=60 [ASSURED] mark=0 use=1
ipv4     2 udp      17 29 src=192.168.1.23 dst=198.51.100.10 sport=40001 dport=53 packets=1 bytes=33 [UNREPLIED] src=198.51.100.10 dst=192.168.1.23 sport=53 dport=40001 packets=0 bytes=0 mark=0 use=1
ipv4     2 icmp     1 29 src=192.168.1.23 dst=198.51.100.10 type=8 code=0 id=4356 packets=1 bytes=84 src=198.51.100.10 dst=192.168.1.23 type=0 code=0 id=4356 packets=1 bytes=84 mark=0 use=1
";

/// `conntrack -L -p tcp --dport 80` of the same table.
pub const RECORDED_TCP_80: &str = "\
tcp      6 431999 ESTABLISHED src=192.168.1.23 dst=198.51.100.10 sport=40000 dport=80 packets=2 bytes=112 src=198.51.100.10 dst=192.168.1.23 sport=80 dport=40000 packets=1 bytes=60 [ASSURED] mark=0 use=1
";

/// conntrack-tools' summary lines (standard error), with keepstate's signature.
pub const SHOWN_3: &str = "conntrack v1.4 (keepstate): 3 flow entries have been shown.";

/// An HTTP answer.
#[derive(Debug)]
pub struct Http {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One request on a fresh connection, read to the end (the server closes after answering
/// a `Connection: close` request).
pub fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> Http {
    request(addr, method, path, token, None)
}

/// [`http`] with a JSON body.
pub fn http_body(addr: SocketAddr, method: &str, path: &str, body: &str) -> Http {
    request(addr, method, path, None, Some(body))
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Http {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else if method != "GET" {
        req.push_str("Content-Length: 0\r\n\r\n");
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    // Only the event stream is chunked; everything else answers with a length.
    let streaming = path.starts_with("/api/v1/events");
    assert_eq!(chunked, streaming && status == 200, "{path}: {head}");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Http {
        status,
        headers,
        body,
    }
}

/// A chunked body's data, checking every chunk's length and the final empty chunk.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            assert_eq!(tail, "\r\n", "trailer");
            return out;
        }
        out.push_str(&tail[..n]);
        assert_eq!(&tail[n..n + 2], "\r\n");
        rest = &tail[n + 2..];
    }
}
