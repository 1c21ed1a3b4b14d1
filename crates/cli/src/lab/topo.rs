//! The lab's namespaces, links, addresses and (kernel router) nftables ruleset, built with
//! `ip`, `sysctl` and `nft` run inside the namespaces.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The namespace roles of a lab, each `<prefix>-<role>`.
pub const ROLES: [&str; 5] = ["router", "lan1", "lan2", "wan", "sw"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RouterKind {
    /// `keepstate run` routes; the kernel holds no addresses on lan0/wan0.
    Keepstate,
    /// The kernel routes, with an nftables ruleset equivalent to the home-router policy.
    Kernel,
}

impl RouterKind {
    pub const fn name(self) -> &'static str {
        match self {
            RouterKind::Keepstate => "keepstate",
            RouterKind::Kernel => "kernel",
        }
    }
}

pub fn ns(prefix: &str, role: &str) -> String {
    format!("{prefix}-{role}")
}

/// The router ports' MAC addresses: keepstate answers ARP and ND with the ones in its
/// policy, so the kernel's interfaces must carry the same.
pub struct RouterMacs {
    pub lan0: String,
    pub wan0: String,
}

impl Default for RouterMacs {
    fn default() -> Self {
        RouterMacs {
            lan0: "02:00:00:00:01:01".into(),
            wan0: "02:00:00:00:00:01".into(),
        }
    }
}

/// The MACs of `lan0` and `wan0` in the policy (the defaults where it gives none).
pub fn router_macs(config: &Path) -> Result<RouterMacs> {
    let loaded =
        keepstate_policy::config::load(config).map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let mut macs = RouterMacs::default();
    for name in ["lan0", "wan0"] {
        let Some(iface) = loaded.policy.interfaces.iter().find(|i| i.name == name) else {
            bail!(
                "{}: the lab's router has interfaces lan0 and wan0, but the policy has no {name}",
                config.display()
            );
        };
        if let Some(m) = iface.mac {
            let text = m
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            if name == "lan0" {
                macs.lan0 = text;
            } else {
                macs.wan0 = text;
            }
        }
    }
    Ok(macs)
}

fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// Says which package to install for each missing tool.
pub fn check_tools(router: RouterKind) -> Result<()> {
    let mut need = vec![
        ("ip", "iproute2"),
        ("sysctl", "procps"),
        ("python3", "python3"),
        ("ping", "iputils-ping"),
    ];
    if router == RouterKind::Kernel {
        need.push(("nft", "nftables"));
    }
    let missing: Vec<String> = need
        .iter()
        .filter(|(t, _)| !on_path(t))
        .map(|(t, pkg)| format!("`{t}` (apt install {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!("keepstate lab needs {}", missing.join(", "));
    }
    Ok(())
}

/// Runs a command to completion; an error carries its stderr.
pub fn cmd(argv: &[&str]) -> Result<()> {
    let Some((prog, rest)) = argv.split_first() else {
        bail!("empty command");
    };
    let out = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {prog}"))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `ip -n NS ARGS...`
fn ip_n(ns: &str, args: &[&str]) -> Result<()> {
    let mut argv = vec!["ip", "-n", ns];
    argv.extend_from_slice(args);
    cmd(&argv)
}

fn sysctl(ns: &str, settings: &[&str]) -> Result<()> {
    let mut argv = vec!["ip", "netns", "exec", ns, "sysctl", "-q", "-w"];
    argv.extend_from_slice(settings);
    cmd(&argv)
}

/// The lab's namespaces that exist now.
pub fn existing_namespaces(prefix: &str) -> Vec<String> {
    ROLES
        .iter()
        .map(|r| ns(prefix, r))
        .filter(|n| Path::new("/run/netns").join(n).exists())
        .collect()
}

pub fn delete_namespace(name: &str) -> Result<()> {
    cmd(&["ip", "netns", "del", name])
}

/// Every process in a namespace (`ip netns pids`).
pub fn pids_in(name: &str) -> Vec<i32> {
    let Ok(out) = Command::new("ip")
        .args(["netns", "pids", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// One ping with a one-second wait: does `to` answer from inside `ns`?
pub fn ping_once(ns: &str, to: &str) -> Result<bool> {
    let status = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", "-q", to])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("run ping")?;
    Ok(status.success())
}

/// Namespaces, links, addresses and routes; for the kernel router also forwarding and the
/// nftables ruleset. Leaves half a lab behind on error: the caller tears it down.
pub fn build(p: &str, router: RouterKind, macs: &RouterMacs, wan_mtu: Option<u32>) -> Result<()> {
    let r = ns(p, "router");
    let sw = ns(p, "sw");
    let l1 = ns(p, "lan1");
    let l2 = ns(p, "lan2");
    let wan = ns(p, "wan");
    for role in ROLES {
        cmd(&["ip", "netns", "add", &ns(p, role)])?;
    }
    // Before any link exists, so new interfaces get these: addresses usable at once (no
    // duplicate address detection), no router advertisements or redirects changing routes
    // behind the tests' back, and ICMP errors never rate-limited by the hosts themselves.
    let common = [
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.all.accept_ra=0",
        "net.ipv6.conf.default.accept_ra=0",
        "net.ipv4.conf.all.accept_redirects=0",
        "net.ipv4.conf.default.accept_redirects=0",
        "net.ipv6.conf.all.accept_redirects=0",
        "net.ipv6.conf.default.accept_redirects=0",
        "net.ipv4.icmp_ratelimit=0",
        "net.ipv6.icmp.ratelimit=0",
    ];
    for n in [&l1, &l2, &wan, &r] {
        sysctl(n, &common)?;
    }
    // The switch is layer 2 only: no IPv6 of its own sending router solicitations and MLD.
    sysctl(
        &sw,
        &[
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )?;
    match router {
        // keepstate answers ND itself; the kernel's own IPv6 on lan0/wan0 would only add
        // link-local chatter with the same MAC (`keepstate run` disables it as well).
        RouterKind::Keepstate => sysctl(&r, &["net.ipv6.conf.default.disable_ipv6=1"])?,
        RouterKind::Kernel => sysctl(
            &r,
            &[
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
                // The port forward's reflection routes LAN to LAN: no redirect for that.
                "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
            ],
        )?,
    }

    ip_n(
        &r,
        &[
            "link", "add", "lan0", "address", &macs.lan0, "type", "veth", "peer", "name", "rtr",
            "netns", &sw,
        ],
    )?;
    ip_n(
        &r,
        &[
            "link", "add", "wan0", "address", &macs.wan0, "type", "veth", "peer", "name", "eth0",
            "netns", &wan,
        ],
    )?;
    ip_n(
        &l1,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "lan1", "netns", &sw,
        ],
    )?;
    ip_n(
        &l2,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "lan2", "netns", &sw,
        ],
    )?;
    ip_n(
        &sw,
        &[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            // Unknown multicast (IPv6 neighbour solicitations) goes to every port.
            "mcast_snooping",
            "0",
        ],
    )?;
    for port in ["rtr", "lan1", "lan2"] {
        ip_n(&sw, &["link", "set", port, "master", "br0"])?;
    }
    if let Some(mtu) = wan_mtu {
        let m = mtu.to_string();
        ip_n(&r, &["link", "set", "wan0", "mtu", &m])?;
        ip_n(&wan, &["link", "set", "eth0", "mtu", &m])?;
    }
    for (n, links) in [
        (&sw, &["lo", "br0", "rtr", "lan1", "lan2"][..]),
        (&l1, &["lo", "eth0"][..]),
        (&l2, &["lo", "eth0"][..]),
        (&wan, &["lo", "eth0"][..]),
        (&r, &["lo", "lan0", "wan0"][..]),
    ] {
        for l in links {
            ip_n(n, &["link", "set", l, "up"])?;
        }
    }

    host(
        &l1,
        &["192.168.1.10/24", "2001:db8:1::10/64"],
        "192.168.1.1",
        "2001:db8:1::1",
    )?;
    host(
        &l2,
        &["192.168.1.11/24", "2001:db8:1::11/64"],
        "192.168.1.1",
        "2001:db8:1::1",
    )?;
    // The internet: the router's gateway, and where everything else routes back through
    // the router.
    host(
        &wan,
        &["203.0.113.1/24", "198.51.100.1/24", "2001:db8:fffe::1/64"],
        "203.0.113.2",
        "2001:db8:fffe::2",
    )?;

    if router == RouterKind::Kernel {
        host_addrs(&r, "lan0", &["192.168.1.1/24", "2001:db8:1::1/64"])?;
        host_addrs(&r, "wan0", &["203.0.113.2/24", "2001:db8:fffe::2/64"])?;
        ip_n(&r, &["route", "add", "default", "via", "203.0.113.1"])?;
        ip_n(
            &r,
            &["-6", "route", "add", "default", "via", "2001:db8:fffe::1"],
        )?;
        let file = std::env::temp_dir().join(format!("keepstate-lab-{p}.nft"));
        std::fs::write(&file, KERNEL_RULESET)
            .with_context(|| format!("write {}", file.display()))?;
        let r2 = cmd(&[
            "ip",
            "netns",
            "exec",
            &r,
            "nft",
            "-f",
            &file.display().to_string(),
        ]);
        let _ = std::fs::remove_file(&file);
        r2?;
    }
    Ok(())
}

fn host_addrs(ns: &str, dev: &str, addrs: &[&str]) -> Result<()> {
    for a in addrs {
        if a.contains(':') {
            ip_n(ns, &["addr", "add", a, "dev", dev, "nodad"])?;
        } else {
            ip_n(ns, &["addr", "add", a, "dev", dev])?;
        }
    }
    Ok(())
}

fn host(ns: &str, addrs: &[&str], gw4: &str, gw6: &str) -> Result<()> {
    host_addrs(ns, "eth0", addrs)?;
    ip_n(ns, &["route", "add", "default", "via", gw4])?;
    ip_n(ns, &["-6", "route", "add", "default", "via", gw6])
}

/// The kernel baseline: what examples/home-router.toml says, in nftables (fw4's shape).
pub const KERNEL_RULESET: &str = r#"
flush ruleset

table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        ct state established,related accept
        ct state invalid drop
        iifname "lo" accept
        iifname "lan0" accept
        iifname "wan0" meta nfproto ipv4 udp dport 68 accept comment "Allow-DHCP-Renew"
        iifname "wan0" icmp type echo-request limit rate 5/second burst 10 packets accept comment "Allow-Ping"
        iifname "wan0" icmpv6 type echo-request limit rate 5/second burst 10 packets accept comment "Allow-Ping6"
        iifname "wan0" meta l4proto igmp accept comment "Allow-IGMP"
        iifname "wan0" meta nfproto ipv6 udp dport 546 accept comment "Allow-DHCPv6"
        iifname "wan0" ip6 saddr fe80::/10 icmpv6 type { mld-listener-query, mld-listener-report, mld-listener-done, mld2-listener-report } accept comment "Allow-MLD"
        iifname "wan0" icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, nd-router-solicit, nd-neighbor-solicit, nd-router-advert, nd-neighbor-advert } limit rate 1000/second accept comment "Allow-ICMPv6-Input"
        iifname "wan0" drop
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "lan0" oifname "wan0" accept
        ct status dnat accept comment "port forwards"
    }
    chain output {
        type filter hook output priority filter; policy accept;
    }
}

table ip nat {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan0" ip saddr 203.0.113.1 ip daddr 203.0.113.2 tcp dport 8080 dnat to 192.168.1.10:80 comment "Web-Server"
        iifname "lan0" ip daddr 203.0.113.2 tcp dport 8080 dnat to 192.168.1.10:80 comment "Web-Server reflection"
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" masquerade
        oifname "lan0" ip saddr 192.168.1.0/24 ip daddr 192.168.1.10 tcp dport 80 ct status dnat masquerade comment "reflection"
    }
}
"#;
