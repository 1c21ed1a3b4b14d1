//! Frames through the live router's sans-IO core (ARP, neighbour discovery, routing, ICMP
//! errors, fragmentation, the firewall with NAT inside), on either port, with time moving
//! so that neighbour retries, expiry and queues all run.
//!
//! Input format, repeated: [port:1][time step:1][len:2 big-endian][len bytes of Ethernet].
//! A port byte of 0xff instead runs the timers.
#![no_main]

use keepstate_dataplane::router::{Out, Port, Router, RouterConfig};
use keepstate_engine::{Config, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::Firewall;
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
[tracking]
max_connections = 16
[defaults]
nat_ports = "5000-5003"
[[interface]]
name = "lan0"
zone = "lan"
address = ["192.168.1.1/24", "2001:db8:1::1/64"]
[[interface]]
name = "wan0"
zone = "wan"
address = ["203.0.113.2/24", "2001:db8:fffe::2/64"]
default_route = true
gateway = ["203.0.113.1", "2001:db8:fffe::1"]
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
[[port_forward]]
name = "web"
src = "wan"
external_port = 8080
internal_ip = "192.168.1.10"
internal_port = 80
reflection = true
[[rule]]
name = "ping"
src = "wan"
proto = "icmp"
icmp_type = "echo-request"
action = "accept"
[[rule]]
src = "wan"
dest = "lan"
proto = "udp"
dest_port = 9
action = "reject"
"#;

const LAN_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const WAN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fuzz_target!(|data: &[u8]| {
    let Ok(loaded) = config::parse("fuzz.toml", POLICY, None) else {
        panic!("the fuzz policy must parse");
    };
    let fw = Firewall::new(loaded.policy, Config::default());
    let ports = vec![
        Port {
            iface: 0,
            name: "lan0".into(),
            mac: LAN_MAC,
            mtu: 1500,
        },
        Port {
            iface: 1,
            name: "wan0".into(),
            mac: WAN_MAC,
            mtu: 1400,
        },
    ];
    let mut router = Router::new(fw, RouterConfig::new(ports));
    let mut out = Out::new();
    let mut now = Time::from_secs(1);
    let mut rest = data;
    let mut frame = Vec::new();
    while rest.len() >= 4 {
        let port = rest[0];
        let step_ms = u64::from(rest[1]) * 100;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        let take = len.min(rest.len());
        let (pkt, tail) = rest.split_at(take);
        rest = tail;
        now = Time::from_nanos(now.as_nanos() + step_ms * 1_000_000);
        out.clear();
        if port == 0xff {
            router.tick(now, &mut out);
        } else {
            frame.clear();
            frame.extend_from_slice(pkt);
            router.handle(now, u16::from(port % 2), &mut frame, &mut out);
        }
        for (p, f) in out.iter() {
            assert!(p <= 1, "a frame for a port that does not exist");
            // Every frame the router sends carries an Ethernet header with our source MAC.
            assert!(f.len() >= 14);
            assert!(f[6..12] == LAN_MAC || f[6..12] == WAN_MAC);
        }
        if let Err(e) = router.firewall().engine().check_table() {
            panic!("state table inconsistent: {e}");
        }
    }
    let _ = router.neighbours().count();
});
