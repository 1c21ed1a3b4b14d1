//! Packets through the whole firewall with NAT: a home-router policy with masquerade, a port
//! forward with reflection, static SNAT and 1:1 NAT, so every NAT stage sees hostile input.
//!
//! Input format, repeated: [ingress:1][time step:1][len:2 big-endian][len bytes of Ethernet].
#![no_main]

use keepstate_engine::{Config, LinkType, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::{Firewall, Ingress};
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
external_port = "8080-8081"
internal_ip = "192.168.1.10"
internal_port = 80
[[port_forward]]
name = "proxied"
src = "wan"
proto = "tcp"
external_port = 443
internal_ip = "192.168.1.11"
synproxy = true
[[snat]]
dest = "wan"
src_ip = "192.168.1.64/26"
to = ["203.0.113.70", "203.0.113.71"]
[[one_to_one]]
zone = "wan"
internal_ip = "192.168.1.50"
external_ip = "203.0.113.50"
[[rule]]
src = "wan"
dest = "lan"
proto = "udp"
dest_port = 9
action = "reject"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(loaded) = config::parse("fuzz.toml", POLICY, None) else {
        panic!("the fuzz policy must parse");
    };
    let mut fw = Firewall::new(loaded.policy, Config::default());
    let mut now = Time::from_secs(1);
    let mut rest = data;
    while rest.len() >= 4 {
        let ingress = match rest[0] % 4 {
            0 => Ingress::Arrived(0),
            1 => Ingress::Arrived(1),
            2 => Ingress::Seen(1),
            _ => Ingress::Unknown,
        };
        let step_ms = u64::from(rest[1]) * 500;
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        rest = &rest[4..];
        let take = len.min(rest.len());
        let (pkt, tail) = rest.split_at(take);
        rest = tail;
        now = Time::from_nanos(now.as_nanos() + step_ms * 1_000_000);
        let d = fw.process(now, LinkType::Ethernet, pkt, pkt.len(), ingress);
        if d.translated {
            // What leaves is the same frame, rewritten: never longer or shorter.
            assert_eq!(fw.frame().len(), pkt.len());
        }
        if d.reply {
            assert!(!fw.reply().is_empty());
        }
        if d.inject {
            assert!(!fw.injected().is_empty());
        }
        assert!(fw.engine().len() <= 16);
        if let Err(e) = fw.engine().check_table() {
            panic!("state table inconsistent: {e}");
        }
    }
    let _ = fw.connections();
});
