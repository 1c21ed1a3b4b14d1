//! From the TOML tree to the model: every section, field and name reference.
//!
//! The walk goes on after an error so that one run reports every problem; a section whose
//! name is unusable is left out, and fields with errors keep their defaults, so later
//! references to it do not cascade into more messages.

use core::net::IpAddr;
use std::collections::HashMap;
use std::path::Path;

use keepstate_engine::{CtState, Direction, Family, Timeouts};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::values::{self, Proto, ValueError, ICMP, ICMPV6, TCP, UDP, WITH_PORTS};
use super::{Cx, Diagnostic, Severity};
use crate::model::{
    Action, AddrItem, AddrMatch, Defaults, Forwarding, IcmpMatch, IfaceId, Interface, IpNet, Limit,
    Mapping, Match, NotrackRule, Policy, PolicyAction, PortForward, PortMatch, PrefixSet,
    RejectCode, Rule, SetId, Span, StateSet, TcpFlagsMatch, Tracking, Zone, ZoneId, ZoneSel,
};
use crate::model::{OneToOne, Snat};

type Val<'i> = Spanned<DeValue<'i>>;

const TOP_FIELDS: &[&str] = &[
    "defaults",
    "tracking",
    "interface",
    "zone",
    "forwarding",
    "set",
    "rule",
    "notrack",
    "port_forward",
    "snat",
    "one_to_one",
];
const DEFAULTS_FIELDS: &[&str] = &[
    "drop_invalid",
    "accept_established",
    "reject_limit",
    "log_limit",
    "nat_ports",
    "synflood_protect",
    "synflood_limit",
    "scan_ports",
    "scan_window",
    "input",
    "output",
    "forward",
];
const TRACKING_FIELDS: &[&str] = &[
    "max_connections",
    "reserve_connections",
    "tcp_loose",
    "tcp_liberal",
    "verify_checksums",
    "adaptive_start",
    "adaptive_end",
    "timeouts",
];
const TIMEOUT_FIELDS: &[&str] = &[
    "tcp_syn_sent",
    "tcp_syn_recv",
    "tcp_established",
    "tcp_fin_wait",
    "tcp_close_wait",
    "tcp_last_ack",
    "tcp_time_wait",
    "tcp_close",
    "tcp_unacknowledged",
    "udp_unreplied",
    "udp_stream",
    "icmp",
    "generic",
];
const INTERFACE_FIELDS: &[&str] = &[
    "name",
    "zone",
    "address",
    "routes",
    "default_route",
    "gateway",
    "ifindex",
    "mac",
];
const ZONE_FIELDS: &[&str] = &[
    "name",
    "input",
    "output",
    "forward",
    "masquerade",
    "mapping",
    "antispoof",
    "drop_bogons",
    "syn_limit",
    "udp_limit",
    "icmp_limit",
    "src_conn_limit",
    "overload_timeout",
    "src_conn_max",
];
const FORWARDING_FIELDS: &[&str] = &["src", "dest"];
const SET_FIELDS: &[&str] = &["name", "prefixes", "file"];
const RULE_FIELDS: &[&str] = &[
    "name",
    "src",
    "dest",
    "in_iface",
    "out_iface",
    "family",
    "proto",
    "src_ip",
    "dest_ip",
    "src_port",
    "dest_port",
    "icmp_type",
    "tcp_flags",
    "ct_state",
    "ct_direction",
    "action",
    "reject_with",
    "log",
    "limit",
    "limit_per",
];
const NOTRACK_FIELDS: &[&str] = &[
    "name",
    "src",
    "in_iface",
    "family",
    "proto",
    "src_ip",
    "dest_ip",
    "src_port",
    "dest_port",
    "icmp_type",
    "tcp_flags",
];
const PORT_FORWARD_FIELDS: &[&str] = &[
    "name",
    "src",
    "proto",
    "external_ip",
    "external_port",
    "internal_ip",
    "internal_port",
    "src_ip",
    "reflection",
    "synproxy",
];

/// fw4 and nftables spellings users bring along, and where those fields live here.
const RULE_HINTS: &[(&str, &str)] = &[
    ("target", "the verdict is called `action` here"),
    ("dport", "use `dest_port`"),
    ("sport", "use `src_port`"),
    ("saddr", "use `src_ip`"),
    ("daddr", "use `dest_ip`"),
    ("state", "use `ct_state`"),
    ("direction", "use `ct_direction`"),
];
/// Fields of a filter rule that a notrack rule cannot have, and why.
const NOTRACK_FORBIDDEN: &[(&str, &str)] = &[
    (
        "dest",
        "the destination zone is known only after routing, and notrack decides before tracking; \
        match `dest_ip` instead",
    ),
    (
        "out_iface",
        "the outgoing interface is known only after routing, and notrack decides before \
        tracking; match `dest_ip` instead",
    ),
    (
        "ct_state",
        "notrack decides before tracking, so there is no connection state yet",
    ),
    (
        "ct_direction",
        "notrack decides before tracking, so there is no connection yet",
    ),
    (
        "action",
        "a notrack rule has no action: matching packets skip connection tracking, then meet the \
        filter rules in state `untracked`",
    ),
    ("reject_with", "a notrack rule has no action"),
    ("log", "a notrack rule does not log"),
    ("limit", "a notrack rule cannot be rate-limited"),
    ("limit_per", "a notrack rule cannot be rate-limited"),
];
const ZONE_HINTS: &[(&str, &str)] = &[
    ("masq", "use `masquerade`"),
    ("rp_filter", "use `antispoof`"),
    ("urpf", "use `antispoof`"),
    (
        "network",
        "interfaces join a zone with `zone = \"...\"` in their [[interface]] section",
    ),
    (
        "device",
        "interfaces join a zone with `zone = \"...\"` in their [[interface]] section",
    ),
];
const PORT_FORWARD_HINTS: &[(&str, &str)] = &[
    ("dest_ip", "the address inside is called `internal_ip`"),
    ("dest_port", "the port inside is called `internal_port`"),
    ("src_dport", "the port outside is called `external_port`"),
    ("src_dip", "the address outside is called `external_ip`"),
    ("dest", "the destination follows from `internal_ip`"),
];

/// One `[name]` or `[[name]]` table and where its header is.
#[derive(Clone, Copy)]
struct Section<'t, 'i> {
    kind: &'static str,
    at: usize,
    table: &'t DeTable<'i>,
}

impl<'t, 'i> Section<'t, 'i> {
    fn get(&self, key: &str) -> Option<&'t Val<'i>> {
        self.table.get(key)
    }

    /// Where `key` is written, or the section's header.
    fn key_at(&self, key: &str) -> usize {
        self.table
            .get_key_value(key)
            .map_or(self.at, |(k, _)| k.span().start)
    }
}

/// Names defined so far of one kind, for references, duplicates and messages.
struct Names {
    what: &'static str,
    list: Vec<(String, Span)>,
    index: HashMap<String, usize>,
}

impl Names {
    fn new(what: &'static str) -> Names {
        Names {
            what,
            list: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Registers `name` written at `at`; false (with an error) if it is taken.
    fn add(&mut self, cx: &mut Cx, name: &str, at: usize) -> bool {
        if let Some(first) = self.index.get(name).and_then(|&i| self.list.get(i)) {
            let line = first.1.line;
            cx.error(
                at,
                format!(
                    "duplicate {} name `{name}`: already defined at line {line}",
                    self.what
                ),
            );
            return false;
        }
        self.index.insert(name.to_string(), self.list.len());
        self.list.push((name.to_string(), cx.span(at)));
        true
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The index of `name`, or an error that lists what is defined.
    fn resolve(&self, cx: &mut Cx, name: &str, at: usize) -> Option<usize> {
        if let Some(i) = self.find(name) {
            return Some(i);
        }
        let defined: Vec<&str> = self.list.iter().map(|(n, _)| n.as_str()).collect();
        let known = if defined.is_empty() {
            format!("no {}s are defined", self.what)
        } else {
            format!("defined {}s: {}", self.what, defined.join(", "))
        };
        cx.error(
            at,
            format!(
                "unknown {} `{name}`{}; {known}",
                self.what,
                values::suggest(name, defined.iter().copied())
            ),
        );
        None
    }
}

/// Zone policies for zones that do not set their own (fw4's `defaults` input/output/forward).
struct ZoneFallback {
    input: PolicyAction,
    output: PolicyAction,
    forward: PolicyAction,
}

pub(super) fn document(cx: &mut Cx) -> Option<Policy> {
    let (doc, syntax) = DeTable::parse_recoverable(cx.src.text);
    if !syntax.is_empty() {
        for e in &syntax {
            let at = e.span().map_or(0, |s| s.start);
            let mut msg = e.message().to_string();
            if msg == "duplicate key" {
                let key = e.span().map_or("", |s| cx.raw(s));
                msg = format!(
                    "`{key}` is defined twice in the same table (a [[section]] needs double \
                    brackets every time)"
                );
            }
            cx.error(at, format!("invalid TOML: {msg}"));
        }
        return None;
    }
    let root = doc.get_ref();
    let top = Section {
        kind: "the top level",
        at: 0,
        table: root,
    };
    for (k, v) in root.iter() {
        let key = k.get_ref().as_ref();
        if !TOP_FIELDS.contains(&key) {
            let kind = if matches!(v.get_ref(), DeValue::Table(_)) {
                "section"
            } else {
                "key"
            };
            cx.error(
                k.span().start,
                format!(
                    "unknown {kind} `{key}`{}; the sections are [defaults], [tracking], \
                    [[interface]], [[zone]], [[forwarding]], [[set]], [[rule]], [[notrack]] and \
                    [[port_forward]]",
                    values::suggest(key, TOP_FIELDS.iter().copied())
                ),
            );
        }
    }

    let mut policy = Policy::default();
    let fallback = match single(cx, top, "defaults") {
        Some(s) => defaults(cx, s, &mut policy.defaults),
        None => ZoneFallback {
            input: PolicyAction::Drop,
            output: PolicyAction::Accept,
            forward: PolicyAction::Drop,
        },
    };
    if let Some(s) = single(cx, top, "tracking") {
        tracking(cx, s, &mut policy.tracking);
    }

    let mut sets = Names::new("set");
    for s in array(cx, top, "set") {
        set(cx, s, &mut sets, &mut policy.sets);
    }
    let mut zones = Names::new("zone");
    for s in array(cx, top, "zone") {
        zone(cx, s, &fallback, &mut zones, &mut policy.zones);
    }
    let mut ifaces = Names::new("interface");
    for s in array(cx, top, "interface") {
        interface(cx, s, &zones, &mut ifaces, &mut policy.interfaces);
    }
    let mut seen_fwd = HashMap::new();
    for s in array(cx, top, "forwarding") {
        if let Some(f) = forwarding(cx, s, &zones) {
            let key = (f.src, f.dest);
            if let Some(line) = seen_fwd.get(&key) {
                cx.warn(
                    s.at,
                    format!("this forwarding repeats the one at line {line}"),
                );
            } else {
                seen_fwd.insert(key, f.span.line);
                policy.forwardings.push(f);
            }
        }
    }

    let refs = Refs {
        zones: &zones,
        ifaces: &ifaces,
        sets: &sets,
        set_data: &policy.sets,
        iface_data: &policy.interfaces,
    };
    policy.rules = each(cx, top, "rule", "rule", &refs, rule);
    policy.notrack = each(cx, top, "notrack", "notrack rule", &refs, notrack_rule);
    policy.port_forwards = each(cx, top, "port_forward", "port forward", &refs, port_forward);
    policy.snat = each(cx, top, "snat", "snat", &refs, snat);
    policy.one_to_one = each(cx, top, "one_to_one", "one_to_one", &refs, one_to_one);
    Some(policy)
}

/// Every `[[key]]` section built by `build`, names checked for duplicates as `what`.
fn each<'t, 'i, T>(
    cx: &mut Cx,
    top: Section<'t, 'i>,
    key: &'static str,
    what: &'static str,
    refs: &Refs,
    build: impl Fn(&mut Cx, Section<'t, 'i>, &Refs, &mut Names) -> Option<T>,
) -> Vec<T> {
    let mut names = Names::new(what);
    array(cx, top, key)
        .into_iter()
        .filter_map(|s| build(cx, s, refs, &mut names))
        .collect()
}

/// A `[name]` section, if present.
fn single<'t, 'i>(
    cx: &mut Cx,
    top: Section<'t, 'i>,
    name: &'static str,
) -> Option<Section<'t, 'i>> {
    let v = top.get(name)?;
    match v.get_ref() {
        DeValue::Table(t) => Some(Section {
            kind: name,
            at: v.span().start,
            table: t,
        }),
        DeValue::Array(_) => {
            cx.error(
                top.key_at(name),
                format!("`{name}` is a single section: write [{name}], not [[{name}]]"),
            );
            None
        }
        other => {
            cx.error(
                v.span().start,
                format!(
                    "`{name}` must be a section written [{name}], found {}",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// The `[[name]]` sections, in file order.
fn array<'t, 'i>(cx: &mut Cx, top: Section<'t, 'i>, name: &'static str) -> Vec<Section<'t, 'i>> {
    let Some(v) = top.get(name) else {
        return Vec::new();
    };
    let kind = match name {
        "interface" => "[[interface]]",
        "zone" => "[[zone]]",
        "forwarding" => "[[forwarding]]",
        "set" => "[[set]]",
        "rule" => "[[rule]]",
        "notrack" => "[[notrack]]",
        _ => "[[port_forward]]",
    };
    match v.get_ref() {
        DeValue::Array(items) => {
            let mut out = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::Table(t) => out.push(Section {
                        kind,
                        at: item.span().start,
                        table: t,
                    }),
                    other => cx.error(
                        item.span().start,
                        format!(
                            "each `{name}` must be a table (a {kind} section), found {}",
                            type_name(other)
                        ),
                    ),
                }
            }
            out
        }
        DeValue::Table(_) => {
            cx.error(
                top.key_at(name),
                format!(
                    "`{name}` sections repeat: write {kind} with double brackets, one per {}",
                    name.replace('_', " ")
                ),
            );
            Vec::new()
        }
        other => {
            cx.error(
                v.span().start,
                format!(
                    "`{name}` must be {kind} sections, found {}",
                    type_name(other)
                ),
            );
            Vec::new()
        }
    }
}

fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reports every key of `sec` not in `allowed`.
fn check_fields(cx: &mut Cx, sec: Section, allowed: &[&str], hints: &[(&str, &str)]) {
    check_fields_but(cx, sec, allowed, hints, &[]);
}

/// Like [`check_fields`], leaving out keys in `reported` (the caller has a better message).
fn check_fields_but(
    cx: &mut Cx,
    sec: Section,
    allowed: &[&str],
    hints: &[(&str, &str)],
    reported: &[&str],
) {
    for (k, _) in sec.table.iter() {
        let key = k.get_ref().as_ref();
        if allowed.contains(&key) || reported.contains(&key) {
            continue;
        }
        let msg = match hints.iter().find(|(h, _)| *h == key) {
            Some((_, hint)) => format!("unknown field `{key}` in {}: {hint}", sec.kind),
            None => format!(
                "unknown field `{key}` in {}{}; allowed fields: {}",
                sec.kind,
                values::suggest(key, allowed.iter().copied()),
                allowed.join(", ")
            ),
        };
        cx.error(k.span().start, msg);
    }
}

impl<'a> Cx<'a> {
    fn type_error(&mut self, v: &Val, field: &str, expected: &str) {
        self.error(
            v.span().start,
            format!(
                "`{field}` must be {expected}, found {}",
                type_name(v.get_ref())
            ),
        );
    }

    fn string<'v>(&mut self, v: &'v Val, field: &str, expected: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.type_error(v, field, expected);
                None
            }
        }
    }

    fn boolean(&mut self, v: &Val, field: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, field, "a boolean (true or false)");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    fn integer(&mut self, v: &Val, field: &str, min: i128, max: i128) -> Option<i128> {
        let DeValue::Integer(i) = v.get_ref() else {
            self.type_error(v, field, &format!("a whole number from {min} to {max}"));
            return None;
        };
        match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(
                    v.span().start,
                    format!(
                        "`{field}` is out of range: expected a whole number from {min} to {max}"
                    ),
                );
                None
            }
        }
    }

    /// Reports a [`ValueError`] inside string value `v` whose content is `s`.
    fn value_error(&mut self, v: &Val, s: &str, e: ValueError) {
        let at = self.offset_in_string(v.span(), s, e.at);
        self.error(at, e.msg);
    }

    /// A name: a non-empty string without spaces or the characters that mean something in
    /// references (`*`, `@`, `!`).
    fn name(&mut self, sec: Section, what: &str) -> Option<(String, usize)> {
        let Some(v) = sec.get("name") else {
            self.error(sec.at, format!("{} needs a `name`", sec.kind));
            return None;
        };
        let s = self.string(v, "name", &format!("the {what}'s name as a string"))?;
        let bad = s.is_empty()
            || s.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '*' | '@' | '!' | ','));
        if bad {
            self.error(
                v.span().start,
                format!(
                    "`{s}` is not a usable {what} name: expected a non-empty name without \
                    spaces, `*`, `@`, `!` or `,`"
                ),
            );
            return None;
        }
        Some((s.to_string(), v.span().start))
    }
}

/// A single value or an array of them, as a list.
fn list<'v, 'i>(v: &'v Val<'i>) -> Vec<&'v Val<'i>> {
    match v.get_ref() {
        DeValue::Array(a) => a.iter().collect(),
        _ => vec![v],
    }
}

fn policy_action(cx: &mut Cx, sec: Section, field: &str) -> Option<PolicyAction> {
    let v = sec.get(field)?;
    let s = cx.string(
        v,
        field,
        "one of the strings \"accept\", \"drop\" or \"reject\"",
    )?;
    match s.to_ascii_lowercase().as_str() {
        "accept" => Some(PolicyAction::Accept),
        "drop" => Some(PolicyAction::Drop),
        "reject" => Some(PolicyAction::Reject),
        _ => {
            cx.error(
                v.span().start,
                format!("unknown policy `{s}` for `{field}`: expected accept, drop or reject"),
            );
            None
        }
    }
}

fn limit_field(cx: &mut Cx, sec: Section, field: &str) -> Option<Limit> {
    let v = sec.get(field)?;
    let s = cx.string(v, field, "a rate like \"5/s burst 10\"")?;
    match values::limit(s) {
        Ok(l) => Some(l),
        Err(e) => {
            cx.value_error(v, s, e);
            None
        }
    }
}

fn bool_field(cx: &mut Cx, sec: Section, field: &str) -> Option<bool> {
    let v = sec.get(field)?;
    cx.boolean(v, field)
}

fn defaults(cx: &mut Cx, sec: Section, d: &mut Defaults) -> ZoneFallback {
    check_fields(
        cx,
        sec,
        DEFAULTS_FIELDS,
        &[
            ("syn_flood", "use `synflood_protect` (and `synflood_limit`)"),
            ("synflood_rate", "use `synflood_limit = \"25/s burst 50\"`"),
            ("synflood_burst", "use `synflood_limit = \"25/s burst 50\"`"),
        ],
    );
    if let Some(b) = bool_field(cx, sec, "drop_invalid") {
        d.drop_invalid = b;
    }
    if let Some(b) = bool_field(cx, sec, "accept_established") {
        d.accept_established = b;
    }
    if let Some(l) = limit_field(cx, sec, "reject_limit") {
        d.reject_limit = l;
    }
    if let Some(l) = limit_field(cx, sec, "log_limit") {
        d.log_limit = l;
    }
    if let Some(v) = sec.get("nat_ports") {
        if let Some(r) = single_port_range(cx, v, "nat_ports") {
            d.nat_ports = r;
        }
    }
    if let Some(b) = bool_field(cx, sec, "synflood_protect") {
        d.synflood_protect = b;
    }
    if let Some(l) = limit_field(cx, sec, "synflood_limit") {
        d.synflood_limit = l;
    }
    if let Some(v) = sec.get("scan_ports") {
        if let Some(n) = cx
            .integer(v, "scan_ports", 0, i128::from(crate::scan::MAX_SCAN_PORTS))
            .and_then(|n| u16::try_from(n).ok())
        {
            d.scan_ports = n;
        }
    }
    if let Some(v) = sec.get("scan_window") {
        if let Some(n) = cx
            .integer(v, "scan_window", 1, 86_400)
            .and_then(|n| u64::try_from(n).ok())
        {
            d.scan_window = keepstate_engine::Time::from_secs(n);
        }
    }
    ZoneFallback {
        input: policy_action(cx, sec, "input").unwrap_or(PolicyAction::Drop),
        output: policy_action(cx, sec, "output").unwrap_or(PolicyAction::Accept),
        forward: policy_action(cx, sec, "forward").unwrap_or(PolicyAction::Drop),
    }
}

fn tracking(cx: &mut Cx, sec: Section, t: &mut Tracking) {
    check_fields(cx, sec, TRACKING_FIELDS, &[]);
    if let Some(v) = sec.get("max_connections") {
        t.max_connections = cx
            .integer(v, "max_connections", 1, i128::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok());
    }
    if let Some(v) = sec.get("reserve_connections") {
        t.reserve_connections = cx
            .integer(v, "reserve_connections", 0, i128::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok());
        if let (Some(r), Some(m)) = (t.reserve_connections, t.max_connections) {
            if r > m {
                cx.error(
                    v.span().start,
                    format!("`reserve_connections` ({r}) is above `max_connections` ({m})"),
                );
            }
        }
    }
    t.tcp_loose = bool_field(cx, sec, "tcp_loose");
    t.tcp_liberal = bool_field(cx, sec, "tcp_liberal");
    t.verify_checksums = bool_field(cx, sec, "verify_checksums");
    let pct = |cx: &mut Cx, field: &str| {
        sec.get(field).and_then(|v| {
            cx.integer(v, field, 1, 1000)
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| (n, v.span().start))
        })
    };
    let start = pct(cx, "adaptive_start");
    let end = pct(cx, "adaptive_end");
    if start.is_some() || end.is_some() {
        let (s, e) = (start.map_or(60, |x| x.0), end.map_or(120, |x| x.0));
        if e <= s {
            let at = end.or(start).map_or(sec.at, |x| x.1);
            cx.error(
                at,
                format!("`adaptive_end` ({e}%) must be above `adaptive_start` ({s}%)"),
            );
        } else {
            t.adaptive = Some((s, e));
        }
    }
    let Some(v) = sec.get("timeouts") else {
        return;
    };
    let DeValue::Table(table) = v.get_ref() else {
        cx.type_error(v, "timeouts", "a [tracking.timeouts] section");
        return;
    };
    let sub = Section {
        kind: "[tracking.timeouts]",
        at: v.span().start,
        table,
    };
    check_fields(cx, sub, TIMEOUT_FIELDS, &[]);
    // Destructured without `..`, so a timeout added to the engine fails to compile here
    // until the file can set it.
    let Timeouts {
        tcp_syn_sent,
        tcp_syn_recv,
        tcp_established,
        tcp_fin_wait,
        tcp_close_wait,
        tcp_last_ack,
        tcp_time_wait,
        tcp_close,
        tcp_unacknowledged,
        udp_unreplied,
        udp_stream,
        icmp,
        generic,
    } = &mut t.timeouts;
    let slots: [(&str, &mut u32); 13] = [
        ("tcp_syn_sent", tcp_syn_sent),
        ("tcp_syn_recv", tcp_syn_recv),
        ("tcp_established", tcp_established),
        ("tcp_fin_wait", tcp_fin_wait),
        ("tcp_close_wait", tcp_close_wait),
        ("tcp_last_ack", tcp_last_ack),
        ("tcp_time_wait", tcp_time_wait),
        ("tcp_close", tcp_close),
        ("tcp_unacknowledged", tcp_unacknowledged),
        ("udp_unreplied", udp_unreplied),
        ("udp_stream", udp_stream),
        ("icmp", icmp),
        ("generic", generic),
    ];
    for (name, slot) in slots {
        if let Some(v) = sub.get(name) {
            if let Some(n) = cx
                .integer(v, name, 1, i128::from(u32::MAX))
                .and_then(|n| u32::try_from(n).ok())
            {
                *slot = n;
            }
        }
    }
}

fn set(cx: &mut Cx, sec: Section, names: &mut Names, out: &mut Vec<PrefixSet>) {
    check_fields(cx, sec, SET_FIELDS, &[]);
    let Some((name, at)) = cx.name(sec, "set") else {
        return;
    };
    let mut prefixes = Vec::new();
    if let Some(v) = sec.get("prefixes") {
        for item in list(v) {
            let Some(s) = cx.string(item, "prefixes", "a list of prefixes as strings") else {
                continue;
            };
            match values::prefix(s.trim(), false) {
                Ok(p) => prefixes.push((p, cx.span(item.span().start), cx.src.name.clone())),
                Err(e) => cx.value_error(item, s, e),
            }
        }
    }
    if let Some(v) = sec.get("file") {
        if let Some(file) = cx.string(v, "file", "a file name as a string") {
            set_file(cx, v, file, &mut prefixes);
        }
    }
    if sec.get("prefixes").is_none() && sec.get("file").is_none() {
        cx.error(
            sec.at,
            format!("set `{name}` needs `prefixes` (a list) or `file` (one prefix per line)"),
        );
    }
    // A duplicate says nothing wrong about the policy, but often one of the two was meant to
    // be something else; a few are shown, not thousands from a careless list.
    let mut seen: HashMap<(u128, u8, bool), (Span, String)> = HashMap::new();
    let mut dups = 0usize;
    let mut kept = Vec::with_capacity(prefixes.len());
    for (p, span, file) in prefixes {
        let key = (p.network_bits(), p.len, p.addr.is_ipv6());
        if let Some((first, first_file)) = seen.get(&key) {
            dups += 1;
            if dups <= 5 {
                let place = if *first_file == file {
                    format!("line {}", first.line)
                } else {
                    format!("{first_file}:{}", first.line)
                };
                let d = Diagnostic {
                    file,
                    line: span.line,
                    col: span.col,
                    severity: Severity::Warning,
                    message: format!("set `{name}` already has {p} ({place})"),
                };
                cx.warnings.push(d);
            }
            continue;
        }
        seen.insert(key, (span, file));
        kept.push(p);
    }
    if dups > 5 {
        cx.warn(
            at,
            format!("set `{name}` has {dups} duplicate prefixes in all (the first 5 are shown)"),
        );
    }
    if names.add(cx, &name, at) {
        out.push(PrefixSet {
            name,
            prefixes: kept,
            span: cx.span(sec.at),
        });
    }
}

/// Reads a set's prefix file: one prefix per line, `#` starts a comment.
fn set_file(cx: &mut Cx, v: &Val, file: &str, out: &mut Vec<(IpNet, Span, String)>) {
    let Some(base) = cx.base_dir else {
        cx.error(
            v.span().start,
            "set files can only be used when the configuration is loaded from a file",
        );
        return;
    };
    let path = base.join(file);
    let shown = display_path(&path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            cx.error(v.span().start, format!("cannot read set file {shown}: {e}"));
            return;
        }
    };
    const MAX_ERRORS: usize = 20;
    let mut errors = 0usize;
    for (n, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        let trimmed = content.trim_start();
        let start = content.len() - trimmed.len();
        let word = trimmed.trim_end();
        if word.is_empty() {
            continue;
        }
        let line_no = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let col_of = |byte: usize| {
            let chars = line.get(..byte).map_or(0, |s| s.chars().count());
            u32::try_from(chars + 1).unwrap_or(u32::MAX)
        };
        let problem = if word.contains(char::is_whitespace) {
            Some((0, "expected one prefix per line".to_string()))
        } else {
            match values::prefix(word, false) {
                Ok(p) => {
                    out.push((
                        p,
                        Span {
                            line: line_no,
                            col: col_of(start),
                        },
                        shown.clone(),
                    ));
                    None
                }
                Err(e) => Some((e.at, e.msg)),
            }
        };
        if let Some((at, msg)) = problem {
            errors += 1;
            if errors <= MAX_ERRORS {
                cx.errors.push(Diagnostic {
                    file: shown.clone(),
                    line: line_no,
                    col: col_of(start + at),
                    severity: Severity::Error,
                    message: msg,
                });
            }
        }
    }
    if errors > MAX_ERRORS {
        cx.error(
            v.span().start,
            format!(
                "set file {shown} has {errors} bad lines in all (the first {MAX_ERRORS} are shown)"
            ),
        );
    }
}

fn display_path(p: &Path) -> String {
    let s = p.display().to_string();
    s.strip_prefix("./").map_or(s.clone(), str::to_string)
}

fn zone(
    cx: &mut Cx,
    sec: Section,
    fallback: &ZoneFallback,
    names: &mut Names,
    out: &mut Vec<Zone>,
) {
    check_fields(cx, sec, ZONE_FIELDS, ZONE_HINTS);
    let Some((name, at)) = cx.name(sec, "zone") else {
        return;
    };
    let input = policy_action(cx, sec, "input").unwrap_or(fallback.input);
    let output = policy_action(cx, sec, "output").unwrap_or(fallback.output);
    let forward = policy_action(cx, sec, "forward").unwrap_or(fallback.forward);
    let masquerade = bool_field(cx, sec, "masquerade").unwrap_or(false);
    let antispoof = bool_field(cx, sec, "antispoof").unwrap_or(true);
    let drop_bogons = bool_field(cx, sec, "drop_bogons").unwrap_or(false);
    let syn_limit = limit_field(cx, sec, "syn_limit");
    let udp_limit = limit_field(cx, sec, "udp_limit");
    let icmp_limit = limit_field(cx, sec, "icmp_limit");
    let src_conn_limit = limit_field(cx, sec, "src_conn_limit");
    let src_conn_max = sec.get("src_conn_max").and_then(|v| {
        cx.integer(v, "src_conn_max", 1, i128::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok())
    });
    let mut overload_timeout = keepstate_engine::Time::from_secs(600);
    if let Some(v) = sec.get("overload_timeout") {
        if let Some(n) = cx
            .integer(v, "overload_timeout", 1, 7 * 86_400)
            .and_then(|n| u64::try_from(n).ok())
        {
            overload_timeout = keepstate_engine::Time::from_secs(n);
        }
        if src_conn_limit.is_none() {
            cx.warn(
                sec.key_at("overload_timeout"),
                format!("`overload_timeout` has no effect: zone `{name}` has no `src_conn_limit`"),
            );
        }
    }
    let mut mapping = Mapping::default();
    if let Some(v) = sec.get("mapping") {
        let expected = "\"address-and-port-dependent\" or \"endpoint-independent\"";
        if let Some(s) = cx.string(v, "mapping", expected) {
            match s {
                "address-and-port-dependent" => mapping = Mapping::AddressAndPortDependent,
                "endpoint-independent" => mapping = Mapping::EndpointIndependent,
                _ => cx.error(
                    v.span().start,
                    format!("unknown mapping `{s}`: expected {expected}"),
                ),
            }
        }
        if !masquerade {
            cx.warn(
                sec.key_at("mapping"),
                format!("`mapping` has no effect: zone `{name}` does not masquerade"),
            );
        }
    }
    if out.len() > usize::from(ZoneId::MAX) {
        cx.error(at, "too many zones (at most 65536)");
        return;
    }
    if names.add(cx, &name, at) {
        out.push(Zone {
            name,
            input,
            output,
            forward,
            masquerade,
            mapping,
            antispoof,
            drop_bogons,
            syn_limit,
            udp_limit,
            icmp_limit,
            src_conn_limit,
            overload_timeout,
            src_conn_max,
            span: cx.span(sec.at),
        });
    }
}

fn interface(
    cx: &mut Cx,
    sec: Section,
    zones: &Names,
    names: &mut Names,
    out: &mut Vec<Interface>,
) {
    check_fields(
        cx,
        sec,
        INTERFACE_FIELDS,
        &[
            ("addresses", "use `address` (a string or a list)"),
            ("ipaddr", "use `address`"),
            ("gateways", "use `gateway` (a string or a list)"),
            ("via", "use `gateway`"),
        ],
    );
    let Some((name, at)) = cx.name(sec, "interface") else {
        return;
    };
    let zone = match sec.get("zone") {
        None => {
            cx.error(sec.at, format!("interface `{name}` needs a `zone`"));
            None
        }
        Some(v) => cx
            .string(v, "zone", "a zone name")
            .and_then(|z| zones.resolve(cx, z, v.span().start))
            .and_then(|i| ZoneId::try_from(i).ok()),
    };
    let prefixes = |cx: &mut Cx, field: &str, need_len: bool| {
        let mut out = Vec::new();
        if let Some(v) = sec.get(field) {
            for item in list(v) {
                let Some(s) = cx.string(
                    item,
                    field,
                    "an address with its prefix length as a string, or a list of them",
                ) else {
                    continue;
                };
                match values::prefix(s.trim(), need_len) {
                    Ok(p) => out.push(p),
                    Err(e) => cx.value_error(item, s, e),
                }
            }
        }
        out
    };
    let addrs = prefixes(cx, "address", true);
    let routes = prefixes(cx, "routes", false);
    let default_route = bool_field(cx, sec, "default_route").unwrap_or(false);
    let gateway = gateways(cx, sec, &name, &addrs);
    let ifindex = sec
        .get("ifindex")
        .and_then(|v| cx.integer(v, "ifindex", 1, i128::from(u32::MAX)))
        .and_then(|n| u32::try_from(n).ok());
    let mut mac = None;
    if let Some(v) = sec.get("mac") {
        if let Some(s) = cx.string(v, "mac", "a MAC address like \"02:00:00:00:00:01\"") {
            match values::mac(s) {
                Ok(m) => mac = Some(m),
                Err(e) => cx.value_error(v, s, e),
            }
        }
    }
    if out.len() > usize::from(IfaceId::MAX) {
        cx.error(at, "too many interfaces (at most 65536)");
        return;
    }
    if names.add(cx, &name, at) {
        out.push(Interface {
            name,
            zone: zone.unwrap_or(0),
            addrs,
            routes,
            default_route,
            gateway,
            ifindex,
            mac,
            span: cx.span(sec.at),
        });
    }
}

/// An interface's `gateway`: bare addresses, at most one per family, each a unicast address
/// on one of the interface's networks (or, for IPv6, link-local: routers advertise those),
/// as Linux insists a gateway be reachable on-link.
fn gateways(cx: &mut Cx, sec: Section, iface: &str, addrs: &[IpNet]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let Some(v) = sec.get("gateway") else {
        return out;
    };
    for item in list(v) {
        let Some(s) = cx.string(
            item,
            "gateway",
            "an address as a string (\"203.0.113.1\"), or a list with one per family",
        ) else {
            continue;
        };
        let a = match s.trim().parse::<IpAddr>() {
            Ok(a) => a,
            Err(_) => {
                let msg = if s.contains('/') {
                    format!("`{s}` is a prefix: a gateway is one address, like 203.0.113.1")
                } else {
                    format!("`{s}` is not an address: expected one like 203.0.113.1 or fe80::1")
                };
                cx.error(item.span().start, msg);
                continue;
            }
        };
        let unicast = match a {
            IpAddr::V4(v) => {
                !(v.is_unspecified() || v.is_multicast() || v.is_broadcast() || v.is_loopback())
            }
            IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast() || v.is_loopback()),
        };
        if !unicast {
            cx.error(
                item.span().start,
                format!("gateway `{a}` is not a unicast address"),
            );
            continue;
        }
        let link_local = matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local && !addrs.iter().any(|n| n.contains(a)) {
            let nets = addrs
                .iter()
                .filter(|n| n.addr.is_ipv4() == a.is_ipv4())
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            let has = if nets.is_empty() {
                "it has no address of that family".to_string()
            } else {
                format!("its networks: {}", nets.join(", "))
            };
            cx.error(
                item.span().start,
                format!("gateway `{a}` is not on a network of interface `{iface}` ({has})"),
            );
            continue;
        }
        if let Some(first) = out.iter().find(|g| g.is_ipv4() == a.is_ipv4()) {
            let fam = if a.is_ipv4() { "IPv4" } else { "IPv6" };
            cx.error(
                item.span().start,
                format!("a second {fam} gateway `{a}`: interface `{iface}` already has `{first}`"),
            );
            continue;
        }
        out.push(a);
    }
    out
}

/// A zone reference; `*` is any zone when `any` allows it.
fn zone_sel(
    cx: &mut Cx,
    sec: Section,
    field: &str,
    zones: &Names,
    any: bool,
) -> Option<Option<ZoneSel>> {
    let Some(v) = sec.get(field) else {
        return Some(None);
    };
    let expected = if any {
        "a zone name or \"*\""
    } else {
        "a zone name"
    };
    let s = cx.string(v, field, expected)?;
    if s == "*" {
        if any {
            return Some(Some(ZoneSel::Any));
        }
        cx.error(
            v.span().start,
            format!("`{field}` must name one zone here, not \"*\""),
        );
        return None;
    }
    let i = zones.resolve(cx, s, v.span().start)?;
    let id = ZoneId::try_from(i).ok()?;
    Some(Some(ZoneSel::Zone(id)))
}

fn forwarding(cx: &mut Cx, sec: Section, zones: &Names) -> Option<Forwarding> {
    check_fields(cx, sec, FORWARDING_FIELDS, &[]);
    let mut ok = true;
    for field in ["src", "dest"] {
        if sec.get(field).is_none() {
            cx.error(
                sec.at,
                format!("[[forwarding]] needs `{field}` (a zone name)"),
            );
            ok = false;
        }
    }
    let src = zone_sel(cx, sec, "src", zones, false);
    let dest = zone_sel(cx, sec, "dest", zones, false);
    match (src, dest) {
        (Some(Some(ZoneSel::Zone(src))), Some(Some(ZoneSel::Zone(dest)))) if ok => {
            Some(Forwarding {
                src,
                dest,
                span: cx.span(sec.at),
            })
        }
        _ => None,
    }
}

/// Everything rules refer to.
struct Refs<'r> {
    zones: &'r Names,
    ifaces: &'r Names,
    sets: &'r Names,
    set_data: &'r [PrefixSet],
    iface_data: &'r [Interface],
}

impl Refs<'_> {
    fn zone_name(&self, id: ZoneId) -> &str {
        self.zones
            .list
            .get(usize::from(id))
            .map_or("?", |(n, _)| n.as_str())
    }

    /// Which families an address match can hold.
    fn families(&self, m: &AddrMatch) -> (bool, bool) {
        let mut v4 = false;
        let mut v6 = false;
        for item in &m.items {
            match item {
                AddrItem::Net(n) => {
                    v4 |= n.addr.is_ipv4();
                    v6 |= n.addr.is_ipv6();
                }
                AddrItem::Set(id) => {
                    let prefixes = usize::try_from(*id)
                        .ok()
                        .and_then(|i| self.set_data.get(i))
                        .map_or(&[][..], |s| s.prefixes.as_slice());
                    for p in prefixes {
                        v4 |= p.addr.is_ipv4();
                        v6 |= p.addr.is_ipv6();
                    }
                }
            }
        }
        (v4, v6)
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn rule(cx: &mut Cx, sec: Section, refs: &Refs, names: &mut Names) -> Option<Rule> {
    check_fields(cx, sec, RULE_FIELDS, RULE_HINTS);
    let before = cx.errors.len();
    let name = rule_name(cx, sec, names);
    let m = matcher(cx, sec, refs, false);

    let action = match sec.get("action") {
        None => {
            cx.error(
                sec.at,
                "[[rule]] needs an `action`: accept, drop, reject, log or counter",
            );
            None
        }
        Some(v) => cx
            .string(v, "action", "accept, drop, reject, log or counter")
            .and_then(|s| match s.to_ascii_lowercase().as_str() {
                "accept" => Some(Action::Accept),
                "drop" => Some(Action::Drop),
                "reject" => Some(Action::Reject(RejectCode::default())),
                "log" => Some(Action::Log),
                "counter" => Some(Action::Counter),
                "notrack" => {
                    cx.error(
                        v.span().start,
                        "notrack is not a rule action here: write the rule as a [[notrack]] \
                        section",
                    );
                    None
                }
                _ => {
                    cx.error(
                        v.span().start,
                        format!(
                            "unknown action `{s}`: expected accept, drop, reject, log or counter"
                        ),
                    );
                    None
                }
            }),
    };
    let mut action = action.unwrap_or(Action::Drop);
    if let Some(v) = sec.get("reject_with") {
        let expected = "port-unreachable, host-unreachable, net-unreachable or admin-prohibited";
        if let Some(s) = cx.string(v, "reject_with", expected) {
            let code = match s {
                "port-unreachable" => Some(RejectCode::PortUnreachable),
                "host-unreachable" => Some(RejectCode::HostUnreachable),
                "net-unreachable" | "network-unreachable" => Some(RejectCode::NetUnreachable),
                "admin-prohibited" => Some(RejectCode::AdminProhibited),
                _ => {
                    cx.error(
                        v.span().start,
                        format!(
                            "unknown reject answer `{s}`: expected {expected} (TCP is always \
                            answered with a RST)"
                        ),
                    );
                    None
                }
            };
            match (&mut action, code) {
                (Action::Reject(c), Some(code)) => *c = code,
                (_, Some(_)) => cx.error(
                    sec.key_at("reject_with"),
                    "`reject_with` applies only to action = \"reject\"",
                ),
                _ => {}
            }
        }
    }
    let log = bool_field(cx, sec, "log").unwrap_or(false);
    let mut limit = limit_field(cx, sec, "limit");
    if let Some(v) = sec.get("limit_per") {
        if let Some(s) = cx.string(v, "limit_per", "\"rule\" or \"source\"") {
            let per_source = match s {
                "rule" => Some(false),
                "source" => Some(true),
                _ => {
                    cx.error(
                        v.span().start,
                        format!(
                            "unknown `limit_per` value `{s}`: expected \"rule\" (one bucket \
                            for the rule) or \"source\" (one per source address)"
                        ),
                    );
                    None
                }
            };
            match (&mut limit, per_source) {
                (Some(l), Some(p)) => l.per_source = p,
                (None, Some(_)) if sec.get("limit").is_none() => {
                    cx.error(sec.key_at("limit_per"), "`limit_per` needs a `limit`")
                }
                _ => {}
            }
        }
    }
    if cx.errors.len() != before {
        return None;
    }
    Some(Rule {
        name,
        m: m?,
        action,
        log,
        limit,
        span: cx.span(sec.at),
    })
}

fn rule_name(cx: &mut Cx, sec: Section, names: &mut Names) -> Option<String> {
    sec.get("name")?;
    let (name, at) = cx.name(sec, "rule")?;
    names.add(cx, &name, at);
    Some(name)
}

fn notrack_rule(cx: &mut Cx, sec: Section, refs: &Refs, names: &mut Names) -> Option<NotrackRule> {
    for (k, _) in sec.table.iter() {
        let key = k.get_ref().as_ref();
        if let Some((_, why)) = NOTRACK_FORBIDDEN.iter().find(|(f, _)| *f == key) {
            cx.error(
                k.span().start,
                format!("`{key}` cannot be used in a [[notrack]] rule: {why}"),
            );
        }
    }
    let forbidden: Vec<&str> = NOTRACK_FORBIDDEN.iter().map(|(f, _)| *f).collect();
    check_fields_but(cx, sec, NOTRACK_FIELDS, RULE_HINTS, &forbidden);
    let before = cx.errors.len();
    let name = rule_name(cx, sec, names);
    if sec.get("src").is_none() {
        cx.error(
            sec.at,
            "[[notrack]] needs `src`: the zone the packets arrive from, or \"*\" for any",
        );
    }
    let m = matcher(cx, sec, refs, true);
    if cx.errors.len() != before {
        return None;
    }
    Some(NotrackRule {
        name,
        m: m?,
        span: cx.span(sec.at),
    })
}

/// The match part of a rule; `notrack` for a notrack rule, which matches no destination
/// zone. `None` when any field has an error (already reported).
fn matcher(cx: &mut Cx, sec: Section, refs: &Refs, notrack: bool) -> Option<Match> {
    let before = cx.errors.len();
    let mut m = Match::default();

    let src = zone_sel(cx, sec, "src", refs.zones, true).flatten();
    let dest = if notrack {
        None
    } else {
        zone_sel(cx, sec, "dest", refs.zones, true).flatten()
    };
    m.src = src;
    m.dest = dest;
    if !notrack && sec.get("src").is_none() && sec.get("dest").is_none() {
        cx.error(
            sec.at,
            "[[rule]] needs `src`, `dest` or both: `src` alone matches traffic to the firewall \
            (input), `dest` alone traffic from it (output), both forwarded traffic; use \"*\" for \
            any zone",
        );
    }

    for (field, slot, zone, chain_end) in [
        ("in_iface", &mut m.in_iface, src, "src"),
        ("out_iface", &mut m.out_iface, dest, "dest"),
    ] {
        let Some(v) = sec.get(field) else { continue };
        let Some(s) = cx.string(v, field, "an interface name") else {
            continue;
        };
        let Some(i) = refs.ifaces.resolve(cx, s, v.span().start) else {
            continue;
        };
        let Ok(id) = IfaceId::try_from(i) else {
            continue;
        };
        let iface_zone = refs.iface_data.get(i).map(|f| f.zone);
        let written = sec.get(chain_end).is_some();
        match (zone, iface_zone) {
            (None, _) if !written => {
                let side = if field == "in_iface" {
                    "packets the firewall sends itself have no incoming interface; add `src`"
                } else {
                    "packets to the firewall itself have no outgoing interface; add `dest`"
                };
                cx.error(
                    v.span().start,
                    format!("`{field}` cannot match here: {side}"),
                );
            }
            (Some(ZoneSel::Zone(z)), Some(fz)) if z != fz => cx.error(
                v.span().start,
                format!(
                    "interface `{s}` is in zone `{}`, but the rule's `{chain_end}` is `{}`: the \
                    rule could never match",
                    refs.zone_name(fz),
                    refs.zone_name(z)
                ),
            ),
            _ => {}
        }
        *slot = Some(id);
    }

    if let Some(v) = sec.get("family") {
        if let Some(s) = cx.string(v, "family", "\"ipv4\", \"ipv6\" or \"any\"") {
            match s.to_ascii_lowercase().as_str() {
                "ipv4" => m.family = Some(Family::V4),
                "ipv6" => m.family = Some(Family::V6),
                "any" => {}
                _ => cx.error(
                    v.span().start,
                    format!("unknown family `{s}`: expected \"ipv4\", \"ipv6\" or \"any\""),
                ),
            }
        }
    }

    if let Some(v) = sec.get("proto") {
        m.proto = protocols(cx, v, "proto");
    }
    if let Some(v) = sec.get("src_ip") {
        m.src_addr = addr_match(cx, v, "src_ip", refs).unwrap_or_default();
    }
    if let Some(v) = sec.get("dest_ip") {
        m.dst_addr = addr_match(cx, v, "dest_ip", refs).unwrap_or_default();
    }
    infer_family(cx, sec, refs, &mut m);
    check_icmp_family(cx, sec, &m);

    for (field, slot) in [("src_port", &mut m.sport), ("dest_port", &mut m.dport)] {
        let Some(v) = sec.get(field) else { continue };
        *slot = port_match(cx, v, field);
        let without: Vec<&str> = m
            .proto
            .iter()
            .filter(|p| !WITH_PORTS.contains(p))
            .map(|&p| values::protocol_name(p).unwrap_or("?"))
            .collect();
        if m.proto.is_empty() {
            cx.error(
                sec.key_at(field),
                format!(
                    "`{field}` needs a `proto` with ports: add proto = \"tcp\", \"udp\" or \
                    [\"tcp\", \"udp\"] (or sctp, udplite, dccp)"
                ),
            );
        } else if !without.is_empty() {
            cx.error(
                sec.key_at(field),
                format!(
                    "`{field}` cannot match protocol {} (it has no ports): ports need tcp, udp, \
                    sctp, udplite or dccp",
                    without.join(", ")
                ),
            );
        }
    }

    if let Some(v) = sec.get("icmp_type") {
        m.icmp = icmp_types(cx, sec, v, &mut m.proto, m.family);
    }

    if let Some(v) = sec.get("tcp_flags") {
        m.tcp_flags = tcp_flags(cx, v);
        if m.proto.as_slice() != [TCP] {
            cx.error(
                sec.key_at("tcp_flags"),
                "`tcp_flags` matches only TCP: the rule needs proto = \"tcp\"",
            );
        }
    }

    if !notrack {
        if let Some(v) = sec.get("ct_state") {
            m.ct_state = states(cx, v);
        }
        if let Some(v) = sec.get("ct_direction") {
            if let Some(s) = cx.string(v, "ct_direction", "\"original\" or \"reply\"") {
                match s {
                    "original" => m.ct_dir = Some(Direction::Original),
                    "reply" => m.ct_dir = Some(Direction::Reply),
                    _ => cx.error(
                        v.span().start,
                        format!(
                            "unknown direction `{s}`: expected \"original\" (as the \
                            connection was opened) or \"reply\""
                        ),
                    ),
                }
            }
        }
    }

    (cx.errors.len() == before).then_some(m)
}

/// Protocol names and numbers; empty means any.
fn protocols(cx: &mut Cx, v: &Val, field: &str) -> Vec<u8> {
    let expected = "a protocol name (tcp, udp, icmp, icmpv6, ...) or number, or a list of them";
    let mut out: Vec<u8> = Vec::new();
    let mut any = false;
    for item in list(v) {
        let p = match item.get_ref() {
            DeValue::Integer(_) => cx
                .integer(item, field, 0, 255)
                .and_then(|n| u8::try_from(n).ok())
                .map(Proto::One),
            DeValue::String(s) => match values::protocol(s.trim()) {
                Ok(p) => Some(p),
                Err(e) => {
                    cx.value_error(item, s, e);
                    None
                }
            },
            _ => {
                cx.type_error(item, field, expected);
                None
            }
        };
        match p {
            Some(Proto::One(n)) => out.push(n),
            Some(Proto::TcpUdp) => out.extend([TCP, UDP]),
            Some(Proto::Any) => any = true,
            None => {}
        }
    }
    if any {
        return Vec::new();
    }
    let mut seen = [false; 256];
    out.retain(|&p| !core::mem::replace(&mut seen[usize::from(p)], true));
    out
}

fn addr_match(cx: &mut Cx, v: &Val, field: &str, refs: &Refs) -> Option<AddrMatch> {
    let expected = "an address, prefix or \"@set\" as a string, or a list of them";
    let mut m = AddrMatch::default();
    let mut first_neg = None;
    let mut mixed = false;
    let mut ok = true;
    for item in list(v) {
        let Some(s) = cx.string(item, field, expected) else {
            ok = false;
            continue;
        };
        let lead = s.len() - s.trim_start().len();
        let body = s.trim();
        let (neg, body, at) = match body.strip_prefix('!') {
            Some(rest) => (
                true,
                rest.trim_start(),
                lead + 1 + (rest.len() - rest.trim_start().len()),
            ),
            None => (false, body, lead),
        };
        match first_neg {
            None => first_neg = Some(neg),
            Some(f) if f != neg && !mixed => {
                let at = cx.offset_in_string(item.span(), s, lead);
                cx.error(
                    at,
                    format!(
                        "`{field}` mixes negated and plain items: negate every item (the \
                        rule then matches addresses in none of them) or none"
                    ),
                );
                mixed = true;
                ok = false;
            }
            _ => {}
        }
        if let Some(set) = body.strip_prefix('@') {
            let set_at = cx.offset_in_string(item.span(), s, at);
            match refs
                .sets
                .resolve(cx, set, set_at)
                .and_then(|i| SetId::try_from(i).ok())
            {
                Some(id) => m.items.push(AddrItem::Set(id)),
                None => ok = false,
            }
            continue;
        }
        match values::prefix(body, false) {
            Ok(p) => m.items.push(AddrItem::Net(p)),
            Err(mut e) => {
                e.at += at;
                cx.value_error(item, s, e);
                ok = false;
            }
        }
    }
    m.negate = first_neg.unwrap_or(false);
    ok.then_some(m)
}

/// A rule whose addresses are all of one family matches only that family (as in fw4), and
/// addresses that contradict `family` or each other are errors.
fn infer_family(cx: &mut Cx, sec: Section, refs: &Refs, m: &mut Match) {
    let src = refs.families(&m.src_addr);
    let dst = refs.families(&m.dst_addr);
    let only = |(v4, v6): (bool, bool)| match (v4, v6) {
        (true, false) => Some(Family::V4),
        (false, true) => Some(Family::V6),
        _ => None,
    };
    let (s, d) = (only(src), only(dst));
    if let (Some(a), Some(b)) = (s, d) {
        if a != b {
            cx.error(
                sec.key_at("dest_ip"),
                format!(
                    "`src_ip` holds only {} addresses and `dest_ip` only {}: the rule could \
                    never match",
                    family_name(a),
                    family_name(b)
                ),
            );
            return;
        }
    }
    if let Some(f) = m.family {
        for (field, fams) in [("src_ip", src), ("dest_ip", dst)] {
            if let Some(o) = only(fams) {
                if o != f {
                    cx.error(
                        sec.key_at(field),
                        format!(
                            "`{field}` holds only {} addresses, but the rule's family is {}",
                            family_name(o),
                            family_name(f)
                        ),
                    );
                }
            }
        }
        return;
    }
    m.family = s.or(d);
}

fn check_icmp_family(cx: &mut Cx, sec: Section, m: &Match) {
    let Some(f) = m.family else { return };
    let (wrong, right, name) = match f {
        Family::V4 => (ICMPV6, "icmp", "icmpv6"),
        Family::V6 => (ICMP, "icmpv6", "icmp"),
    };
    if m.proto.contains(&wrong) {
        cx.error(
            sec.key_at("proto"),
            format!(
                "proto `{name}` cannot match {} packets, and this rule matches only {} ({}); use \
                `{right}`",
                family_name(f),
                family_name(f),
                if sec.get("family").is_some() {
                    "its `family`"
                } else {
                    "its addresses"
                }
            ),
        );
    }
}

fn port_match(cx: &mut Cx, v: &Val, field: &str) -> PortMatch {
    let expected = "a port number, a range like \"1024-65535\", or a list of them";
    let mut out = PortMatch::default();
    for item in list(v) {
        match item.get_ref() {
            DeValue::Integer(_) => {
                if let Some(p) = cx
                    .integer(item, field, 0, 65535)
                    .and_then(|n| u16::try_from(n).ok())
                {
                    out.ranges.push((p, p));
                }
            }
            DeValue::String(s) => match values::port_range(s.trim()) {
                Ok(r) => out.ranges.push(r),
                Err(e) => cx.value_error(item, s, e),
            },
            _ => cx.type_error(item, field, expected),
        }
    }
    out
}

/// ICMP types for the rule's protocols and family; with no `proto`, the types decide it.
fn icmp_types(
    cx: &mut Cx,
    sec: Section,
    v: &Val,
    proto: &mut Vec<u8>,
    family: Option<Family>,
) -> Vec<IcmpMatch> {
    let v4 = (proto.is_empty() || proto.contains(&ICMP)) && family != Some(Family::V6);
    let v6 = (proto.is_empty() || proto.contains(&ICMPV6)) && family != Some(Family::V4);
    if !v4 && !v6 {
        if !proto.is_empty() && !proto.contains(&ICMP) && !proto.contains(&ICMPV6) {
            cx.error(
                sec.key_at("icmp_type"),
                "`icmp_type` needs proto \"icmp\" or \"icmpv6\" (or no `proto`)",
            );
        }
        return Vec::new();
    }
    let mut out: Vec<IcmpMatch> = Vec::new();
    for item in list(v) {
        let found = match item.get_ref() {
            DeValue::Integer(_) => cx
                .integer(item, "icmp_type", 0, 255)
                .and_then(|n| u8::try_from(n).ok())
                .map(|ty| {
                    [(v4, false), (v6, true)]
                        .into_iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, v6)| IcmpMatch { v6, ty, code: None })
                        .collect::<Vec<_>>()
                }),
            DeValue::String(s) => match values::icmp_type(s.trim(), v4, v6) {
                Ok(list) => Some(list),
                Err(e) => {
                    cx.value_error(item, s, e);
                    None
                }
            },
            _ => {
                cx.type_error(
                    item,
                    "icmp_type",
                    "an ICMP type name, number or \"type/code\", or a list of them",
                );
                None
            }
        };
        for i in found.unwrap_or_default() {
            if !out.contains(&i) {
                out.push(i);
            }
        }
    }
    if proto.is_empty() {
        if out.iter().any(|i| !i.v6) {
            proto.push(ICMP);
        }
        if out.iter().any(|i| i.v6) {
            proto.push(ICMPV6);
        }
    }
    out
}

fn tcp_flags(cx: &mut Cx, v: &Val) -> Option<TcpFlagsMatch> {
    let mut m = TcpFlagsMatch { mask: 0, value: 0 };
    let mut ok = true;
    for item in list(v) {
        let Some(s) = cx.string(
            item,
            "tcp_flags",
            "flags like \"syn,!ack\" or a list of them",
        ) else {
            ok = false;
            continue;
        };
        let mut at = 0;
        for part in s.split(',') {
            let lead = part.len() - part.trim_start().len();
            if let Err(e) = values::tcp_flag(part.trim(), at + lead, &mut m) {
                cx.value_error(item, s, e);
                ok = false;
            }
            at += part.len() + 1;
        }
    }
    (ok && m.mask != 0).then_some(m)
}

fn states(cx: &mut Cx, v: &Val) -> StateSet {
    let mut found: Vec<CtState> = Vec::new();
    for item in list(v) {
        let Some(s) = cx.string(
            item,
            "ct_state",
            "a state name (new, established, related, invalid, untracked) or a list of them",
        ) else {
            continue;
        };
        let mut at = 0;
        for part in s.split(',') {
            let lead = part.len() - part.trim_start().len();
            match values::ct_state(part.trim()) {
                Ok(c) => found.push(c),
                Err(mut e) => {
                    e.at = at + lead;
                    cx.value_error(item, s, e);
                }
            }
            at += part.len() + 1;
        }
    }
    StateSet::of(&found)
}

fn port_forward(cx: &mut Cx, sec: Section, refs: &Refs, names: &mut Names) -> Option<PortForward> {
    check_fields(cx, sec, PORT_FORWARD_FIELDS, PORT_FORWARD_HINTS);
    let before = cx.errors.len();
    let name = rule_name(cx, sec, names);
    let src = match zone_sel(cx, sec, "src", refs.zones, false) {
        Some(Some(ZoneSel::Zone(z))) => Some(z),
        Some(None) => {
            cx.error(
                sec.at,
                "[[port_forward]] needs `src`: the zone the connections arrive from (usually \
                \"wan\")",
            );
            None
        }
        _ => None,
    };
    let proto = match sec.get("proto") {
        None => vec![TCP, UDP],
        Some(v) => {
            let p = protocols(cx, v, "proto");
            if p.is_empty() || p.iter().any(|&p| p != TCP && p != UDP) {
                cx.error(
                    v.span().start,
                    "a port forward's `proto` must be \"tcp\", \"udp\" or both",
                );
            }
            p
        }
    };
    let single_addr =
        |cx: &mut Cx, field: &str| sec.get(field).and_then(|v| one_address(cx, v, field));
    let external_addr = single_addr(cx, "external_ip");
    let internal_addr = single_addr(cx, "internal_ip");
    if sec.get("internal_ip").is_none() {
        cx.error(
            sec.at,
            "[[port_forward]] needs `internal_ip`: the address of the host inside",
        );
    }
    let external_ports = match sec.get("external_port") {
        None => {
            cx.error(
                sec.at,
                "[[port_forward]] needs `external_port`: a port or range like \"8000-8010\"",
            );
            None
        }
        Some(v) => single_port_range(cx, v, "external_port"),
    };
    let internal_port = sec
        .get("internal_port")
        .and_then(|v| cx.integer(v, "internal_port", 1, 65535))
        .and_then(|n| u16::try_from(n).ok());
    if let (Some((lo, hi)), Some(ip)) = (external_ports, internal_port) {
        if u32::from(ip) + u32::from(hi - lo) > 65535 {
            cx.error(
                sec.key_at("internal_port"),
                format!(
                    "internal ports {ip}-{} run past 65535: the external range {lo}-{hi} maps \
                    onto consecutive internal ports",
                    u32::from(ip) + u32::from(hi - lo)
                ),
            );
        }
    }
    let src_addr = match sec.get("src_ip") {
        Some(v) => addr_match(cx, v, "src_ip", refs).unwrap_or_default(),
        None => AddrMatch::default(),
    };
    let reflection = bool_field(cx, sec, "reflection").unwrap_or(true);
    let synproxy = bool_field(cx, sec, "synproxy").unwrap_or(false);
    if synproxy && !proto.contains(&keepstate_engine::wire::PROTO_TCP) {
        cx.warn(
            sec.key_at("synproxy"),
            "`synproxy` has no effect: the forward is not for TCP",
        );
    }

    if let (Some(i), Some(e)) = (internal_addr, external_addr) {
        if i.is_ipv4() != e.is_ipv4() {
            cx.error(
                sec.key_at("external_ip"),
                "`external_ip` and `internal_ip` are of different families",
            );
        }
    }
    if let Some(i) = internal_addr {
        let (v4, v6) = refs.families(&src_addr);
        if !src_addr.negate && (v4 || v6) && !(if i.is_ipv4() { v4 } else { v6 }) {
            cx.error(
                sec.key_at("src_ip"),
                "`src_ip` holds no address of the internal address's family: the forward could \
                never be used",
            );
        }
        let reachable = refs
            .iface_data
            .iter()
            .any(|f| f.addrs.iter().chain(&f.routes).any(|p| p.contains(i)));
        if !reachable {
            cx.warn(
                sec.key_at("internal_ip"),
                format!(
                    "internal_ip {i} is not inside any interface's address prefix or routes: \
                    the firewall has no route to it"
                ),
            );
        }
    }
    if cx.errors.len() != before {
        return None;
    }
    Some(PortForward {
        name,
        src: src?,
        proto,
        external_addr,
        external_ports: external_ports?,
        internal_addr: internal_addr?,
        internal_port,
        src_addr,
        reflection,
        synproxy,
        span: cx.span(sec.at),
    })
}

const SNAT_FIELDS: &[&str] = &["name", "dest", "src_ip", "to"];
const ONE_TO_ONE_FIELDS: &[&str] = &["name", "zone", "internal_ip", "external_ip"];

/// A single address (not a prefix) in `field`.
fn one_address(cx: &mut Cx, v: &Val, field: &str) -> Option<IpAddr> {
    let s = cx.string(v, field, "an address as a string")?;
    if s.contains('/') {
        cx.error(
            v.span().start,
            format!("`{field}` must be a single address, not a prefix"),
        );
        return None;
    }
    match values::prefix(s.trim(), false) {
        Ok(p) => Some(p.addr),
        Err(e) => {
            cx.value_error(v, s, e);
            None
        }
    }
}

/// The zone named by `field`, which must be a single zone (not "*").
fn one_zone(cx: &mut Cx, sec: Section, field: &str, what: &str, refs: &Refs) -> Option<ZoneId> {
    match zone_sel(cx, sec, field, refs.zones, false) {
        Some(Some(ZoneSel::Zone(z))) => Some(z),
        Some(None) => {
            cx.error(sec.at, format!("{what} needs `{field}`: a zone name"));
            None
        }
        Some(Some(ZoneSel::Any)) => {
            cx.error(
                sec.key_at(field),
                format!("`{field}` must name one zone, not \"*\""),
            );
            None
        }
        None => None,
    }
}

fn snat(cx: &mut Cx, sec: Section, refs: &Refs, names: &mut Names) -> Option<Snat> {
    check_fields(cx, sec, SNAT_FIELDS, &[]);
    let before = cx.errors.len();
    let name = rule_name(cx, sec, names);
    let dest = one_zone(cx, sec, "dest", "[[snat]]", refs);
    let src_addr = match sec.get("src_ip") {
        Some(v) => addr_match(cx, v, "src_ip", refs).unwrap_or_default(),
        None => AddrMatch::default(),
    };
    let mut to = Vec::new();
    match sec.get("to") {
        None => cx.error(
            sec.at,
            "[[snat]] needs `to`: the source address, or a list of them (a pool)",
        ),
        Some(v) => {
            for item in list(v) {
                if let Some(a) = one_address(cx, item, "to") {
                    to.push(a);
                }
            }
        }
    }
    if to
        .iter()
        .any(|a| a.is_ipv4() != to.first().is_some_and(|f| f.is_ipv4()))
    {
        cx.error(
            sec.key_at("to"),
            "the addresses in `to` are of different families",
        );
    }
    if cx.errors.len() != before {
        return None;
    }
    Some(Snat {
        name,
        dest: dest?,
        src_addr,
        to,
        span: cx.span(sec.at),
    })
}

fn one_to_one(cx: &mut Cx, sec: Section, refs: &Refs, names: &mut Names) -> Option<OneToOne> {
    check_fields(cx, sec, ONE_TO_ONE_FIELDS, &[]);
    let before = cx.errors.len();
    let name = rule_name(cx, sec, names);
    let zone = one_zone(cx, sec, "zone", "[[one_to_one]]", refs);
    let addr = |cx: &mut Cx, field: &str| match sec.get(field) {
        Some(v) => one_address(cx, v, field),
        None => {
            cx.error(sec.at, format!("[[one_to_one]] needs `{field}`"));
            None
        }
    };
    let internal = addr(cx, "internal_ip");
    let external = addr(cx, "external_ip");
    if let (Some(i), Some(e)) = (internal, external) {
        if i.is_ipv4() != e.is_ipv4() {
            cx.error(
                sec.key_at("external_ip"),
                "`external_ip` and `internal_ip` are of different families",
            );
        }
    }
    if cx.errors.len() != before {
        return None;
    }
    Some(OneToOne {
        name,
        zone: zone?,
        internal: internal?,
        external: external?,
        span: cx.span(sec.at),
    })
}

/// One port or range (not a list), ports 1 to 65535.
fn single_port_range(cx: &mut Cx, v: &Val, field: &str) -> Option<(u16, u16)> {
    let r = match v.get_ref() {
        DeValue::Integer(_) => {
            let p = cx
                .integer(v, field, 1, 65535)
                .and_then(|n| u16::try_from(n).ok())?;
            (p, p)
        }
        DeValue::String(s) => match values::port_range(s.trim()) {
            Ok(r) => r,
            Err(e) => {
                cx.value_error(v, s, e);
                return None;
            }
        },
        _ => {
            cx.type_error(v, field, "a port number or a range like \"8000-8010\"");
            return None;
        }
    };
    if r.0 == 0 {
        cx.error(v.span().start, format!("`{field}` cannot include port 0"));
        return None;
    }
    Some(r)
}
