//! `keepstate check`: parse a policy file, report every error and warning, and summarise what
//! it compiles to.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Result};
use keepstate_engine::Timeouts;
use keepstate_policy::config::{self, describe_limit, describe_match, describe_zone};
use keepstate_policy::model::{Action, Mapping, Policy, Rule, ZoneSel};

#[derive(clap::Args)]
pub struct Args {
    /// Policy file (TOML; see examples/home-router.toml).
    file: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let loaded = match config::load(&args.file) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            let n = errors.0.len();
            bail!(
                "{}: {n} error{}",
                args.file.display(),
                if n == 1 { "" } else { "s" }
            );
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    print!("{}", summary(&loaded.policy));
    Ok(())
}

/// What the policy says, section by section, in the file's own words.
pub fn summary(p: &Policy) -> String {
    let mut out = String::new();
    let _ = summary_into(&mut out, p);
    out
}

fn summary_into(out: &mut String, p: &Policy) -> std::fmt::Result {
    let d = &p.defaults;
    writeln!(
        out,
        "defaults: drop_invalid {}, accept_established {}, reject_limit {}, log_limit {}",
        on_off(d.drop_invalid),
        on_off(d.accept_established),
        describe_limit(&d.reject_limit),
        describe_limit(&d.log_limit)
    )?;
    if d.synflood_protect {
        writeln!(
            out,
            "syn flood: new TCP connections to the firewall at most {} per zone",
            describe_limit(&d.synflood_limit)
        )?;
    } else {
        writeln!(
            out,
            "syn flood: no limit on new TCP connections to the firewall"
        )?;
    }
    tracking(out, p)?;

    heading(out, "interfaces", p.interfaces.len())?;
    let width = p.interfaces.iter().map(|i| i.name.len()).max().unwrap_or(0);
    for i in &p.interfaces {
        let zone = describe_zone(p, Some(ZoneSel::Zone(i.zone)));
        write!(out, "  {:width$}  zone {zone}", i.name)?;
        for a in &i.addrs {
            write!(out, "  {a}")?;
        }
        for r in &i.routes {
            write!(out, "  route {r}")?;
        }
        if i.default_route {
            write!(out, "  default route")?;
        }
        if let Some(n) = i.ifindex {
            write!(out, "  ifindex {n}")?;
        }
        if let Some(m) = i.mac {
            let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
            write!(out, "  mac {}", hex.join(":"))?;
        }
        writeln!(out)?;
    }

    heading(out, "zones", p.zones.len())?;
    let width = p.zones.iter().map(|z| z.name.len()).max().unwrap_or(0);
    for z in &p.zones {
        let mut line = format!(
            "  {:width$}  input {:6}  output {:6}  forward {:6}",
            z.name,
            z.input.name(),
            z.output.name(),
            z.forward.name()
        );
        if z.masquerade {
            let mapping = match z.mapping {
                Mapping::AddressAndPortDependent => "address-and-port-dependent",
                Mapping::EndpointIndependent => "endpoint-independent",
            };
            write!(line, "  masquerade ({mapping})")?;
        }
        if !z.antispoof {
            // On is the default; say so only when it is off.
            write!(line, "  antispoof off")?;
        }
        if z.drop_bogons {
            write!(line, "  drop_bogons")?;
        }
        for (name, l) in [
            ("syn_limit", &z.syn_limit),
            ("udp_limit", &z.udp_limit),
            ("icmp_limit", &z.icmp_limit),
        ] {
            if let Some(l) = l {
                write!(line, "  {name} {}", describe_limit(l))?;
            }
        }
        if let Some(n) = z.src_conn_max {
            write!(line, "  src_conn_max {n}")?;
        }
        if let Some(l) = &z.src_conn_limit {
            write!(
                line,
                "  src_conn_limit {} (block {}s)",
                describe_limit(l),
                z.overload_timeout.as_secs()
            )?;
        }
        writeln!(out, "{}", line.trim_end())?;
    }

    heading(out, "forwardings", p.forwardings.len())?;
    for f in &p.forwardings {
        writeln!(
            out,
            "  {} -> {}",
            describe_zone(p, Some(ZoneSel::Zone(f.src))),
            describe_zone(p, Some(ZoneSel::Zone(f.dest)))
        )?;
    }

    heading(out, "sets", p.sets.len())?;
    for s in &p.sets {
        let n = s.prefixes.len();
        let v4 = s.prefixes.iter().filter(|p| p.addr.is_ipv4()).count();
        writeln!(
            out,
            "  @{}: {n} prefix{} ({v4} IPv4, {} IPv6)",
            s.name,
            if n == 1 { "" } else { "es" },
            n - v4
        )?;
    }

    rules(out, p)?;

    heading(out, "notrack rules", p.notrack.len())?;
    for (i, r) in p.notrack.iter().enumerate() {
        let label = r
            .name
            .clone()
            .unwrap_or_else(|| format!("notrack #{}", i + 1));
        writeln!(
            out,
            "  {label}  from {}  {}",
            describe_zone(p, r.m.src),
            describe_match(p, &r.m)
        )?;
    }

    heading(out, "port forwards", p.port_forwards.len())?;
    for (i, f) in p.port_forwards.iter().enumerate() {
        let label = f
            .name
            .clone()
            .unwrap_or_else(|| format!("port forward #{}", i + 1));
        let protos: Vec<&str> = f
            .proto
            .iter()
            .map(|&n| keepstate_engine::proto_name(n))
            .collect();
        let ext = match f.external_addr {
            Some(a) => a.to_string(),
            None => format!("{} address", describe_zone(p, Some(ZoneSel::Zone(f.src)))),
        };
        let (lo, hi) = f.external_ports;
        let ports = if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        };
        let to_port = f.internal_port.unwrap_or(lo);
        write!(
            out,
            "  {label}  {} {ext} port {ports} -> {} port {to_port}",
            protos.join("+"),
            f.internal_addr
        )?;
        if !f.src_addr.is_any() {
            let m = keepstate_policy::model::Match {
                src_addr: f.src_addr.clone(),
                ..Default::default()
            };
            write!(out, "  {}", describe_match(p, &m))?;
        }
        if f.synproxy {
            write!(out, "  synproxy")?;
        }
        if f.reflection {
            write!(out, "  reflection")?;
        }
        writeln!(out)?;
    }
    if !p.snat.is_empty() {
        heading(out, "static source NAT", p.snat.len())?;
        for (i, x) in p.snat.iter().enumerate() {
            let label = x.name.clone().unwrap_or_else(|| format!("snat #{}", i + 1));
            let to: Vec<String> = x.to.iter().map(ToString::to_string).collect();
            write!(
                out,
                "  {label}  to {}  -> {}",
                describe_zone(p, Some(ZoneSel::Zone(x.dest))),
                to.join(", ")
            )?;
            if !x.src_addr.is_any() {
                let m = keepstate_policy::model::Match {
                    src_addr: x.src_addr.clone(),
                    ..Default::default()
                };
                write!(out, "  {}", describe_match(p, &m))?;
            }
            writeln!(out)?;
        }
    }
    if !p.one_to_one.is_empty() {
        heading(out, "1:1 NAT", p.one_to_one.len())?;
        for (i, x) in p.one_to_one.iter().enumerate() {
            let label = x
                .name
                .clone()
                .unwrap_or_else(|| format!("one_to_one #{}", i + 1));
            writeln!(
                out,
                "  {label}  {} <-> {} towards {}",
                x.internal,
                x.external,
                describe_zone(p, Some(ZoneSel::Zone(x.zone)))
            )?;
        }
    }
    Ok(())
}

/// A section's title, with `none` when it is empty.
fn heading(out: &mut String, what: &str, n: usize) -> std::fmt::Result {
    if n == 0 {
        writeln!(out, "\n{what}: none")
    } else {
        writeln!(out, "\n{what} ({n}):")
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Only what the file changes from the engine's defaults.
fn tracking(out: &mut String, p: &Policy) -> std::fmt::Result {
    let t = &p.tracking;
    let mut parts = Vec::new();
    if let Some(n) = t.max_connections {
        parts.push(format!("max_connections {n}"));
    }
    if let Some(n) = t.reserve_connections {
        parts.push(format!("room reserved for {n} connections"));
    }
    for (name, v) in [
        ("tcp_loose", t.tcp_loose),
        ("tcp_liberal", t.tcp_liberal),
        ("verify_checksums", t.verify_checksums),
    ] {
        if let Some(b) = v {
            parts.push(format!("{name} {}", on_off(b)));
        }
    }
    if let Some((s, e)) = t.adaptive {
        parts.push(format!("adaptive timeouts {s}%..{e}% of the limit"));
    }
    let (now, def) = (&t.timeouts, Timeouts::default());
    for (name, v, d) in [
        ("tcp_syn_sent", now.tcp_syn_sent, def.tcp_syn_sent),
        ("tcp_syn_recv", now.tcp_syn_recv, def.tcp_syn_recv),
        ("tcp_established", now.tcp_established, def.tcp_established),
        ("tcp_fin_wait", now.tcp_fin_wait, def.tcp_fin_wait),
        ("tcp_close_wait", now.tcp_close_wait, def.tcp_close_wait),
        ("tcp_last_ack", now.tcp_last_ack, def.tcp_last_ack),
        ("tcp_time_wait", now.tcp_time_wait, def.tcp_time_wait),
        ("tcp_close", now.tcp_close, def.tcp_close),
        (
            "tcp_unacknowledged",
            now.tcp_unacknowledged,
            def.tcp_unacknowledged,
        ),
        ("udp_unreplied", now.udp_unreplied, def.udp_unreplied),
        ("udp_stream", now.udp_stream, def.udp_stream),
        ("icmp", now.icmp, def.icmp),
        ("generic", now.generic, def.generic),
    ] {
        if v != d {
            parts.push(format!("timeout {name} {v}s (default {d}s)"));
        }
    }
    if parts.is_empty() {
        writeln!(out, "tracking: engine defaults")
    } else {
        writeln!(out, "tracking: {}", parts.join(", "))
    }
}

/// Rules grouped by chain (source and destination zone), chains in order of first use.
fn rules(out: &mut String, p: &Policy) -> std::fmt::Result {
    heading(out, "rules", p.rules.len())?;
    let mut chains: Vec<(Option<ZoneSel>, Option<ZoneSel>, Vec<usize>)> = Vec::new();
    for (i, r) in p.rules.iter().enumerate() {
        match chains
            .iter_mut()
            .find(|(s, d, _)| *s == r.m.src && *d == r.m.dest)
        {
            Some((_, _, list)) => list.push(i),
            None => chains.push((r.m.src, r.m.dest, vec![i])),
        }
    }
    let width = (0..p.rules.len())
        .map(|i| p.rule_label(i).len())
        .max()
        .unwrap_or(0);
    for (src, dest, list) in &chains {
        let kind = match (src, dest) {
            (None, _) => "output",
            (_, None) => "input",
            _ => "forward",
        };
        let n = list.len();
        writeln!(
            out,
            "  {} -> {} ({kind}): {n} rule{}",
            describe_zone(p, *src),
            describe_zone(p, *dest),
            if n == 1 { "" } else { "s" }
        )?;
        for &i in list {
            let Some(r) = p.rules.get(i) else { continue };
            writeln!(out, "    {:width$}  {}", p.rule_label(i), rule_text(p, r))?;
        }
    }
    Ok(())
}

fn rule_text(p: &Policy, r: &Rule) -> String {
    let mut s = describe_match(p, &r.m);
    if !s.is_empty() {
        s.push_str("  ");
    }
    if let Some(l) = &r.limit {
        let _ = write!(s, "limit {}  ", describe_limit(l));
    }
    if r.log {
        s.push_str("log  ");
    }
    match r.action {
        Action::Accept => s.push_str("accept"),
        Action::Drop => s.push_str("drop"),
        Action::Reject(code) => {
            let _ = write!(s, "reject with {}", code.name());
        }
        Action::Log => s.push_str("log"),
        Action::Counter => s.push_str("counter"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn example(name: &str) -> config::Loaded {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        config::load(&path).unwrap()
    }

    #[test]
    fn home_router_summary() {
        let loaded = example("home-router.toml");
        assert!(loaded.warnings.is_empty());
        let s = summary(&loaded.policy);
        for want in [
            "tracking: tcp_loose on, adaptive timeouts 60%..120% of the limit, timeout tcp_established 7440s (default 432000s)",
            "  wan0  zone wan  203.0.113.2/24  2001:db8:fffe::2/64  default route  mac 02:00:00:00:00:01",
            "  wan  input drop    output accept  forward drop    masquerade (address-and-port-dependent)",
            "forwardings (1):\n  lan -> wan\n",
            "  wan -> firewall (input): 7 rules\n",
            "    Allow-Ping          proto=icmp icmp_type=echo-request  limit 5/s burst 10  accept\n",
            "notrack rules: none",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }

    #[test]
    fn server_summary() {
        let loaded = example("server.toml");
        assert!(loaded.warnings.is_empty());
        let s = summary(&loaded.policy);
        for want in [
            "  @blocklist: 2 prefixes (1 IPv4, 1 IPv6)",
            "  wan -> firewall (input): 6 rules\n",
            "proto=tcp dest_port=22 ct_state=new  limit 10/minute burst 5 per source  accept",
            "forwardings: none",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }
}
