//! The policy in force as the API lists it (zones, rules with their counters, forwardings,
//! port forwards, notrack rules), and the router's drop log, read under the router's lock
//! into plain rows that are rendered once it is let go.

use std::collections::BTreeMap;

use keepstate_dataplane::router::Router;
use keepstate_engine::{proto_name, DropReason, Time};
use keepstate_policy::config::{describe_limit, describe_match, describe_zone};
use keepstate_policy::model::{Action, Match, Policy, ZoneSel};

/// A zone and what it does with traffic no rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneRow {
    pub name: String,
    pub interfaces: Vec<String>,
    /// The connected prefixes of its interfaces.
    pub networks: Vec<String>,
    pub input: &'static str,
    pub output: &'static str,
    pub forward: &'static str,
    pub masquerade: bool,
}

/// A rule (or notrack rule) with its counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRow {
    /// 0-based, in file order.
    pub index: usize,
    /// Its name, or `rule #N` / `notrack #N`.
    pub name: String,
    pub src: String,
    pub dest: String,
    /// What else it matches, as the file writes it (`proto` → `tcp`, `dest_port` → `7`).
    pub fields: BTreeMap<String, String>,
    /// accept, drop, reject, log, counter; `notrack` for notrack rules.
    pub target: &'static str,
    pub log: bool,
    pub limit: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortForwardRow {
    pub index: usize,
    pub name: String,
    pub src: String,
    pub proto: String,
    /// The external address, or `None` for the addresses of the `src` zone.
    pub external_ip: Option<String>,
    /// `8080` or `8080-8090`.
    pub src_dport: String,
    pub dest_ip: String,
    pub dest_port: String,
    pub reflection: bool,
}

/// The policy in force, for `GET /api/v1/rules` and `keepstate rules`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub zones: Vec<ZoneRow>,
    pub rules: Vec<RuleRow>,
    /// (src, dest) zone names.
    pub forwards: Vec<(String, String)>,
    pub port_forwards: Vec<PortForwardRow>,
    pub notrack: Vec<RuleRow>,
}

/// One drop of the router's drop log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropRow {
    /// How long ago, in nanoseconds (of the clock packets are stamped with).
    pub age_ns: u64,
    pub reason: DropReason,
    pub rule: Option<String>,
    pub iface: String,
    pub out_iface: Option<String>,
    pub proto: Option<&'static str>,
    pub src: Option<String>,
    pub sport: Option<u16>,
    pub dst: Option<String>,
    pub dport: Option<u16>,
    pub len: u32,
}

fn zone_name(p: &Policy, z: u16) -> String {
    describe_zone(p, Some(ZoneSel::Zone(z)))
}

fn fields(p: &Policy, m: &Match) -> BTreeMap<String, String> {
    describe_match(p, m)
        .split(' ')
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const fn target(a: Action) -> &'static str {
    match a {
        Action::Accept => "accept",
        Action::Drop => "drop",
        Action::Reject(_) => "reject",
        Action::Log => "log",
        Action::Counter => "counter",
    }
}

fn range(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

pub(crate) fn rules(router: &Router) -> Rules {
    let fw = router.firewall();
    let p = fw.policy();
    let counters = fw.ruleset().counters();
    let notrack_counters = fw.ruleset().notrack_counters();
    let zones = p
        .zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let ifaces = p.interfaces.iter().filter(|f| usize::from(f.zone) == i);
            ZoneRow {
                name: z.name.clone(),
                interfaces: ifaces.clone().map(|f| f.name.clone()).collect(),
                networks: ifaces
                    .flat_map(|f| f.addrs.iter().map(|a| a.to_string()))
                    .collect(),
                input: z.input.name(),
                output: z.output.name(),
                forward: z.forward.name(),
                masquerade: z.masquerade,
            }
        })
        .collect();
    let rules = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = counters.get(i).copied().unwrap_or_default();
            RuleRow {
                index: i,
                name: p.rule_label(i),
                src: describe_zone(p, r.m.src),
                dest: describe_zone(p, r.m.dest),
                fields: fields(p, &r.m),
                target: target(r.action),
                log: r.log,
                limit: r.limit.as_ref().map(describe_limit),
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    let notrack = p
        .notrack
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = notrack_counters.get(i).copied().unwrap_or_default();
            RuleRow {
                index: i,
                name: r
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("notrack #{}", i + 1)),
                src: describe_zone(p, r.m.src),
                dest: describe_zone(p, r.m.dest),
                fields: fields(p, &r.m),
                target: "notrack",
                log: false,
                limit: None,
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    let forwards = p
        .forwardings
        .iter()
        .map(|f| (zone_name(p, f.src), zone_name(p, f.dest)))
        .collect();
    let port_forwards = p
        .port_forwards
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (lo, hi) = f.external_ports;
            let first = f.internal_port.unwrap_or(lo);
            let last = first.saturating_add(hi.saturating_sub(lo));
            PortForwardRow {
                index: i,
                name: f
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("port forward #{}", i + 1)),
                src: zone_name(p, f.src),
                proto: f
                    .proto
                    .iter()
                    .map(|&x| proto_name(x))
                    .collect::<Vec<_>>()
                    .join(","),
                external_ip: f.external_addr.map(|a| a.to_string()),
                src_dport: range(lo, hi),
                dest_ip: f.internal_addr.to_string(),
                dest_port: range(first, last),
                reflection: f.reflection,
            }
        })
        .collect();
    Rules {
        zones,
        rules,
        forwards,
        port_forwards,
        notrack,
    }
}

pub(crate) fn drops(router: &Router, now: Time, limit: usize) -> Vec<DropRow> {
    let name = |i: u16| {
        router
            .port(i)
            .map_or_else(|| format!("#{i}"), |p| p.name.clone())
    };
    router
        .drops()
        .take(limit)
        .map(|d| DropRow {
            age_ns: now.saturating_sub(d.time),
            reason: d.reason,
            rule: router.drop_rule(d),
            iface: name(d.iface),
            out_iface: d.out_iface.map(name),
            proto: d.proto.map(proto_name),
            src: d.src.map(|a| a.to_string()),
            sport: d.sport,
            dst: d.dst.map(|a| a.to_string()),
            dport: d.dport,
            len: d.len,
        })
        .collect()
}
