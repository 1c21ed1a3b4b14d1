//! The configuration file: one test per kind of mistake, each pinning the line and column
//! the message points at; the shipped examples; and the shadowed-rule warning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use keepstate_engine::{Family, Time};
use keepstate_policy::config::{self, Diagnostic, Severity};
use keepstate_policy::model::{
    Action, AddrItem, IcmpMatch, Limit, PolicyAction, RejectCode, StateSet, ZoneSel,
};

/// Zones, interfaces and a set for the snippets below to refer to.
const BASE: &str = r#"[[zone]]
name = "lan"
input = "accept"
forward = "accept"

[[zone]]
name = "wan"
masquerade = true

[[interface]]
name = "lan0"
zone = "lan"
address = ["192.168.1.1/24", "2001:db8:1::1/64"]

[[interface]]
name = "wan0"
zone = "wan"
address = "203.0.113.2/24"
default_route = true

[[set]]
name = "blocklist"
prefixes = ["198.51.100.0/24", "2001:db8:bad::/48"]
"#;

fn base_lines() -> u32 {
    u32::try_from(BASE.lines().count()).unwrap()
}

fn parse(text: &str) -> Result<config::Loaded, Vec<Diagnostic>> {
    config::parse("test.toml", text, None).map_err(|e| e.0)
}

/// Parses BASE followed by `snippet`; `line` counts within the snippet.
#[track_caller]
fn error_at(snippet: &str, line: u32, col: u32, needle: &str) -> Vec<Diagnostic> {
    let text = format!("{BASE}{snippet}");
    error_in(&text, base_lines() + line, col, needle)
}

/// Parses `text` and expects an error at `line`:`col` whose message contains `needle`.
#[track_caller]
fn error_in(text: &str, line: u32, col: u32, needle: &str) -> Vec<Diagnostic> {
    let errors = match parse(text) {
        Ok(_) => panic!("expected an error containing {needle:?}, the file parsed"),
        Err(e) => e,
    };
    let found = errors
        .iter()
        .any(|d| d.line == line && d.col == col && d.message.contains(needle));
    assert!(
        found,
        "no error at {line}:{col} containing {needle:?}; got:\n{}",
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for d in &errors {
        assert_eq!(d.severity, Severity::Error);
        assert_eq!(d.file, "test.toml");
    }
    errors
}

#[track_caller]
fn ok(snippet: &str) -> config::Loaded {
    match parse(&format!("{BASE}{snippet}")) {
        Ok(l) => l,
        Err(e) => panic!(
            "expected no errors, got:\n{}",
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

// --- Syntax, structure and types ------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let text = "[defaults]\ndrop_invalid = tru\n";
    error_in(text, 2, 16, "invalid TOML");
    let text = "[[zone]]\nname = \"lan\nx = 1\n";
    error_in(text, 2, 12, "invalid TOML");
}

#[test]
fn duplicate_key_is_a_syntax_error() {
    let text = "[[zone]]\nname = \"lan\"\nname = \"wan\"\n";
    error_in(text, 3, 1, "`name` is defined twice");
}

#[test]
fn diagnostics_display_like_a_compiler() {
    let errors = error_in("[defaults]\ndrop_invalid = 1\n", 2, 16, "boolean");
    let shown = errors[0].to_string();
    assert!(
        shown.starts_with("test.toml:2:16: error: `drop_invalid` must be a boolean"),
        "{shown}"
    );
}

#[test]
fn unknown_field_lists_the_allowed_ones() {
    let errors = error_at(
        "[[rule]]\nsrc = \"wan\"\ndest_prot = 22\naction = \"drop\"\n",
        3,
        1,
        "unknown field `dest_prot` in [[rule]] (did you mean `dest_port`?)",
    );
    assert!(errors[0]
        .message
        .contains("allowed fields: name, src, dest,"));
    error_in(
        "[defaults]\nsyn_floood = true\n",
        2,
        1,
        "allowed fields: drop_invalid",
    );
    error_in(
        "[[zone]]\nname = \"x\"\nmasq = true\n",
        3,
        1,
        "use `masquerade`",
    );
    error_in(
        "[[zone]]\nname = \"x\"\nrp_filter = true\n",
        3,
        1,
        "use `antispoof`",
    );
    error_in("[defaults]\nscan_ports = 70000\n", 2, 14, "scan_ports");
    error_in("[defaults]\nscan_ports = 257\n", 2, 14, "from 0 to 256");
    error_in(
        "[tracking]\nadaptive_start = 80\nadaptive_end = 70\n",
        3,
        16,
        "`adaptive_end` (70%) must be above `adaptive_start` (80%)",
    );
    error_in(
        "[defaults]\nsynflood_rate = 25\n",
        2,
        1,
        "use `synflood_limit = \"25/s burst 50\"`",
    );
    error_at(
        "[[zone]]\nname = \"dmz\"\nsyn_limit = \"fast\"\n",
        3,
        14,
        "`fast` is not a rate",
    );
    error_in(
        "[zones]\n",
        1,
        2,
        "unknown section `zones` (did you mean `zone`?)",
    );
}

#[test]
fn single_table_where_sections_repeat() {
    error_in(
        "[zone]\nname = \"lan\"\n",
        1,
        2,
        "write [[zone]] with double brackets",
    );
    error_in("[[defaults]]\n", 1, 3, "write [defaults], not [[defaults]]");
}

#[test]
fn wrong_type() {
    error_in(
        "[[zone]]\nname = \"lan\"\nmasquerade = \"yes\"\n",
        3,
        14,
        "`masquerade` must be a boolean (true or false), found a string",
    );
    error_in(
        "[[zone]]\nname = \"lan\"\nantispoof = 1\n",
        3,
        13,
        "`antispoof` must be a boolean (true or false), found an integer",
    );
    error_in(
        "[tracking]\nmax_connections = \"many\"\n",
        2,
        19,
        "must be a whole number from 1 to 4294967295, found a string",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\ndest_ip = 10\naction = \"drop\"\n",
        3,
        11,
        "`dest_ip` must be an address, prefix or \"@set\"",
    );
}

#[test]
fn columns_count_characters() {
    // `ö` is two bytes; the column after it still counts it once.
    error_at(
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = [\"@blöck\", \"10.0.0.0/40\"]\naction = \"drop\"\n",
        3,
        31,
        "prefix length 40 is out of range for IPv4",
    );
}

#[test]
fn missing_file() {
    let err = config::load(Path::new("/nonexistent/keepstate.toml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].line, 0);
    assert!(err.0[0]
        .to_string()
        .starts_with("/nonexistent/keepstate.toml: error: cannot read"));
}

// --- Names and references -------------------------------------------------------------

#[test]
fn unknown_zone_lists_defined_zones() {
    let errors = error_at(
        "[[rule]]\nsrc = \"wna\"\naction = \"drop\"\n",
        2,
        7,
        "unknown zone `wna` (did you mean `wan`?); defined zones: lan, wan",
    );
    assert_eq!(errors.len(), 1);
    error_at(
        "[[interface]]\nname = \"dmz0\"\nzone = \"dmz\"\naddress = \"10.9.0.1/24\"\n",
        3,
        8,
        "unknown zone `dmz`; defined zones: lan, wan",
    );
}

#[test]
fn unknown_interface() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nin_iface = \"eth9\"\naction = \"drop\"\n",
        3,
        12,
        "unknown interface `eth9`; defined interfaces: lan0, wan0",
    );
}

#[test]
fn interface_outside_the_rule_zone() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nin_iface = \"lan0\"\naction = \"drop\"\n",
        3,
        12,
        "interface `lan0` is in zone `lan`, but the rule's `src` is `wan`",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nout_iface = \"lan0\"\naction = \"drop\"\n",
        3,
        13,
        "packets to the firewall itself have no outgoing interface",
    );
}

#[test]
fn unknown_set() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = [\"10.0.0.0/8\", \"!@blocklsit\"]\naction = \"drop\"\n",
        3,
        26,
        "`src_ip` mixes negated and plain items",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = \"@blocklsit\"\naction = \"drop\"\n",
        3,
        11,
        "unknown set `blocklsit` (did you mean `blocklist`?); defined sets: blocklist",
    );
}

#[test]
fn duplicate_names_point_at_the_second() {
    error_at(
        "[[zone]]\nname = \"lan\"\n",
        2,
        8,
        "duplicate zone name `lan`: already defined at line 2",
    );
    error_at(
        "[[interface]]\nname = \"wan0\"\nzone = \"wan\"\n",
        2,
        8,
        "duplicate interface name `wan0`: already defined at line 16",
    );
    error_at(
        "[[set]]\nname = \"blocklist\"\nprefixes = []\n",
        2,
        8,
        "duplicate set name `blocklist`: already defined at line 22",
    );
    let first = base_lines() + 3;
    error_at(
        "[[rule]]\nname = \"a\"\nsrc = \"wan\"\naction = \"drop\"\n[[rule]]\nname = \"a\"\nsrc = \"lan\"\naction = \"drop\"\n",
        6,
        8,
        &format!("duplicate rule name `a`: already defined at line {}", first - 1),
    );
}

#[test]
fn forwarding_to_unknown_zones() {
    let errors = error_at(
        "[[forwarding]]\nsrc = \"lna\"\ndest = \"dmz\"\n",
        2,
        7,
        "unknown zone `lna` (did you mean `lan`?)",
    );
    assert!(errors.iter().any(|d| d.line == base_lines() + 3
        && d.col == 8
        && d.message.contains("unknown zone `dmz`")));
    error_at(
        "[[forwarding]]\nsrc = \"lan\"\n",
        1,
        1,
        "[[forwarding]] needs `dest`",
    );
}

// --- Values -----------------------------------------------------------------------------

#[test]
fn bad_address() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\ndest_ip = \"10.0.0/8\"\naction = \"drop\"\n",
        3,
        12,
        "`10.0.0/8` is not an address: expected an address with an optional prefix length, like 192.0.2.0/24",
    );
    error_at(
        "[[interface]]\nname = \"x0\"\nzone = \"lan\"\naddress = \"10.0.0.1\"\n",
        4,
        12,
        "`10.0.0.1` has no prefix length",
    );
}

#[test]
fn gateway_values() {
    let iface = |gw: &str| {
        format!(
            "[[interface]]\nname = \"up0\"\nzone = \"wan\"\naddress = [\"198.51.100.2/24\", \
             \"2001:db8:5::2/64\"]\ngateway = {gw}\n"
        )
    };
    // One address, or one per family; an IPv6 gateway may be link-local.
    let l = ok(&iface("\"198.51.100.1\""));
    let up = &l.policy.interfaces[usize::from(l.policy.iface_by_name("up0").unwrap())];
    assert_eq!(
        up.gateway,
        ["198.51.100.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let l = ok(&iface("[\"198.51.100.1\", \"fe80::1\"]"));
    let up = &l.policy.interfaces[usize::from(l.policy.iface_by_name("up0").unwrap())];
    assert_eq!(
        up.gateway,
        [
            "198.51.100.1".parse::<std::net::IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
    let up = &ok("").policy.interfaces[1];
    assert!(up.gateway.is_empty(), "no gateway unless written");

    // Line 5 of the snippet, column 11 is where the value (or the list) starts.
    error_at(
        &iface("\"198.51.100\""),
        5,
        11,
        "`198.51.100` is not an address",
    );
    error_at(
        &iface("\"198.51.100.1/24\""),
        5,
        11,
        "`198.51.100.1/24` is a prefix: a gateway is one address",
    );
    error_at(&iface("1"), 5, 11, "`gateway` must be");
    error_at(
        &iface("[\"198.51.100.1\", \"198.51.100.254\"]"),
        5,
        28,
        "a second IPv4 gateway `198.51.100.254`: interface `up0` already has `198.51.100.1`",
    );
    error_at(
        &iface("\"192.0.2.1\""),
        5,
        11,
        "gateway `192.0.2.1` is not on a network of interface `up0` (its networks: \
         198.51.100.2/24)",
    );
    error_at(
        &iface("\"ff02::2\""),
        5,
        11,
        "gateway `ff02::2` is not a unicast address",
    );
    error_at(
        "[[interface]]\nname = \"up0\"\nzone = \"wan\"\ngateways = \"192.0.2.1\"\n",
        4,
        1,
        "use `gateway` (a string or a list)",
    );
}

#[test]
fn prefix_length_out_of_range() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = \"2001:db8::/129\"\naction = \"drop\"\n",
        3,
        22,
        "prefix length 129 is out of range for IPv6 (0 to 128)",
    );
}

#[test]
fn port_out_of_range_or_reversed() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\ndest_port = [22, \"1000-70000\"]\naction = \"accept\"\n",
        4,
        24,
        "port 70000 is out of range (0 to 65535)",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\ndest_port = \"8080-8000\"\naction = \"accept\"\n",
        4,
        14,
        "reversed port range 8080-8000",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"udp\"\nsrc_port = 65536\naction = \"accept\"\n",
        4,
        12,
        "`src_port` is out of range: expected a whole number from 0 to 65535",
    );
}

#[test]
fn unknown_protocol() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = [\"tcp\", \"tpc\"]\naction = \"accept\"\n",
        3,
        18,
        "unknown protocol `tpc` (did you mean `tcp`?)",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = 256\naction = \"accept\"\n",
        3,
        9,
        "`proto` is out of range: expected a whole number from 0 to 255",
    );
}

#[test]
fn unknown_icmp_type() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"icmp\"\nicmp_type = [\"echo-request\", \"echo-requets\"]\naction = \"accept\"\n",
        4,
        31,
        "unknown ICMP type `echo-requets` (did you mean `echo-request`?)",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"icmp\"\nicmp_type = \"neighbour-solicitation\"\naction = \"accept\"\n",
        4,
        14,
        "is an ICMPv6 type, but this rule matches only ICMP (IPv4)",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"icmp\"\nicmp_type = \"3/256\"\naction = \"accept\"\n",
        4,
        16,
        "ICMP code 256 is out of range",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\nicmp_type = 8\naction = \"accept\"\n",
        4,
        1,
        "`icmp_type` needs proto \"icmp\" or \"icmpv6\"",
    );
}

#[test]
fn bad_tcp_flag() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\ntcp_flags = \"syn, !akc\"\naction = \"drop\"\n",
        4,
        19,
        "unknown TCP flag `akc` (did you mean `ack`?)",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = \"udp\"\ntcp_flags = \"syn\"\naction = \"drop\"\n",
        4,
        1,
        "`tcp_flags` matches only TCP",
    );
}

#[test]
fn bad_state_name() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nct_state = [\"new\", \"establshed\"]\naction = \"drop\"\n",
        3,
        21,
        "unknown connection state `establshed` (did you mean `established`?): expected new, established, related, invalid, untracked",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nct_direction = \"orig\"\naction = \"drop\"\n",
        3,
        16,
        "unknown direction `orig`",
    );
}

#[test]
fn bad_limit() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nlimit = \"5/fortnight\"\naction = \"accept\"\n",
        3,
        12,
        "unknown time unit `fortnight`",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nlimit = \"5/s burst ten\"\naction = \"accept\"\n",
        3,
        20,
        "`ten` is not a burst size",
    );
    error_in(
        "[defaults]\nreject_limit = \"fast\"\n",
        2,
        17,
        "`fast` is not a rate",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nlimit_per = \"source\"\naction = \"accept\"\n",
        3,
        1,
        "`limit_per` needs a `limit`",
    );
}

#[test]
fn ports_need_a_protocol_with_ports() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nproto = [\"udp\", \"icmp\"]\ndest_port = 53\naction = \"accept\"\n",
        4,
        1,
        "`dest_port` cannot match protocol icmp (it has no ports)",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\ndest_port = 53\naction = \"accept\"\n",
        3,
        1,
        "`dest_port` needs a `proto` with ports",
    );
}

#[test]
fn rule_needs_a_chain_and_an_action() {
    error_at(
        "[[rule]]\naction = \"drop\"\n",
        1,
        1,
        "[[rule]] needs `src`, `dest` or both",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\n",
        1,
        1,
        "[[rule]] needs an `action`",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\naction = \"accept\"\nreject_with = \"host-unreachable\"\n",
        4,
        1,
        "`reject_with` applies only to action = \"reject\"",
    );
}

#[test]
fn families_that_contradict() {
    error_at(
        "[[rule]]\nsrc = \"wan\"\nfamily = \"ipv6\"\nsrc_ip = \"10.0.0.0/8\"\naction = \"drop\"\n",
        4,
        1,
        "`src_ip` holds only IPv4 addresses, but the rule's family is IPv6",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = \"10.0.0.0/8\"\ndest_ip = \"2001:db8::/32\"\naction = \"drop\"\n",
        4,
        1,
        "`src_ip` holds only IPv4 addresses and `dest_ip` only IPv6",
    );
    error_at(
        "[[rule]]\nsrc = \"wan\"\nfamily = \"ipv6\"\nproto = \"icmp\"\naction = \"drop\"\n",
        4,
        1,
        "proto `icmp` cannot match IPv6 packets",
    );
}

#[test]
fn notrack_cannot_match_what_tracking_decides() {
    error_at(
        "[[notrack]]\nsrc = \"lan\"\ndest = \"wan\"\n",
        3,
        1,
        "`dest` cannot be used in a [[notrack]] rule: the destination zone is known only after routing",
    );
    error_at(
        "[[notrack]]\nsrc = \"lan\"\nout_iface = \"wan0\"\n",
        3,
        1,
        "`out_iface` cannot be used in a [[notrack]] rule",
    );
    error_at(
        "[[notrack]]\nsrc = \"lan\"\nct_state = \"new\"\n",
        3,
        1,
        "`ct_state` cannot be used in a [[notrack]] rule: notrack decides before tracking",
    );
    error_at(
        "[[notrack]]\nproto = \"udp\"\n",
        1,
        1,
        "[[notrack]] needs `src`",
    );
}

#[test]
fn every_error_is_reported_in_one_pass() {
    let errors = error_at(
        "[[rule]]\nsrc = \"wna\"\nproto = \"tpc\"\naction = \"alow\"\n[[zone]]\nname = \"dmz\"\ninput = \"maybe\"\n",
        2,
        7,
        "unknown zone",
    );
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let lines: Vec<u32> = errors.iter().map(|d| d.line - base_lines()).collect();
    assert_eq!(lines, [2, 3, 4, 7]);
}

// --- Port forwards ------------------------------------------------------------------------

#[test]
fn port_forward_outside_every_prefix_warns() {
    let loaded = ok(
        "[[port_forward]]\nname = \"web\"\nsrc = \"wan\"\nproto = \"tcp\"\nexternal_port = 8080\ninternal_ip = \"10.9.9.9\"\ninternal_port = 80\n",
    );
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert_eq!((w.line, w.col), (base_lines() + 6, 1));
    assert_eq!(w.severity, Severity::Warning);
    assert!(w
        .message
        .contains("internal_ip 10.9.9.9 is not inside any interface's"));
    assert!(w.to_string().contains(": warning: "));

    let loaded = ok(
        "[[port_forward]]\nsrc = \"wan\"\nexternal_port = \"8000-8010\"\ninternal_ip = \"192.168.1.10\"\nsrc_ip = \"198.51.100.0/24\"\n",
    );
    assert!(loaded.warnings.is_empty());
    let pf = &loaded.policy.port_forwards[0];
    assert_eq!(pf.proto, [6, 17]);
    assert_eq!(pf.external_ports, (8000, 8010));
    assert!(pf.reflection);
    error_at(
        "[[port_forward]]\nsrc = \"wan\"\nexternal_port = 80\ninternal_ip = \"192.168.1.0/24\"\n",
        4,
        15,
        "must be a single address",
    );
}

// --- Set files ------------------------------------------------------------------------------

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keepstate-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn set_file_errors_name_that_file() {
    let dir = scratch_dir("setfile");
    std::fs::write(
        dir.join("bad.txt"),
        "# blocklist\n198.51.100.0/24\n  10.0.0.0/33 # too long\n\n2001:db8::/32\n",
    )
    .unwrap();
    let conf = dir.join("policy.toml");
    std::fs::write(&conf, "[[set]]\nname = \"b\"\nfile = \"bad.txt\"\n").unwrap();
    let errors = config::load(&conf).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert!(e.file.ends_with("bad.txt"), "{e}");
    assert_eq!((e.line, e.col), (3, 12));
    assert!(e.message.contains("prefix length 33 is out of range"));

    std::fs::write(&conf, "[[set]]\nname = \"b\"\nfile = \"missing.txt\"\n").unwrap();
    let errors = config::load(&conf).unwrap_err().0;
    assert_eq!((errors[0].line, errors[0].col), (3, 8));
    assert!(errors[0].message.contains("cannot read set file"));

    // Without a directory to look in (text parsed from memory), a set file is an error.
    error_in(
        "[[set]]\nname = \"b\"\nfile = \"bad.txt\"\n",
        3,
        8,
        "set files",
    );
}

#[test]
fn large_set_file() {
    let dir = scratch_dir("large");
    let mut list = String::from("# 100,000 prefixes\n");
    for i in 0..100_000u32 {
        let [_, a, b, c] = (0x0a00_0000 + i * 4).to_be_bytes();
        list.push_str(&format!("10.{a}.{b}.{c}/30\n"));
    }
    list.push_str("10.0.0.0/30\n");
    std::fs::write(dir.join("big.txt"), list).unwrap();
    let conf = dir.join("policy.toml");
    std::fs::write(&conf, "[[set]]\nname = \"big\"\nfile = \"big.txt\"\n").unwrap();
    let loaded = config::load(&conf).unwrap();
    assert_eq!(loaded.policy.sets[0].prefixes.len(), 100_000);
    // The repeated last line is reported where it is.
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert_eq!(loaded.warnings[0].line, 100_002);
    assert!(loaded.warnings[0].message.contains("(line 2)"));
}

// --- What the file means ------------------------------------------------------------------

#[test]
fn icmp_names_resolve_per_family() {
    let loaded = ok(
        "[[rule]]\nsrc = \"wan\"\nicmp_type = \"echo-request\"\naction = \"accept\"\n[[rule]]\nsrc = \"wan\"\nfamily = \"ipv6\"\nicmp_type = [\"echo-request\", \"3/0\"]\naction = \"accept\"\n",
    );
    let both = &loaded.policy.rules[0].m;
    assert_eq!(both.proto, [1, 58]);
    assert_eq!(
        both.icmp,
        [
            IcmpMatch {
                v6: false,
                ty: 8,
                code: None
            },
            IcmpMatch {
                v6: true,
                ty: 128,
                code: None
            }
        ]
    );
    let v6 = &loaded.policy.rules[1].m;
    assert_eq!(v6.proto, [58]);
    assert_eq!(
        v6.icmp,
        [
            IcmpMatch {
                v6: true,
                ty: 128,
                code: None
            },
            IcmpMatch {
                v6: true,
                ty: 3,
                code: Some(0)
            }
        ]
    );
}

#[test]
fn rule_fields_convert() {
    let loaded = ok(r#"[[rule]]
name = "r"
src = "*"
dest = "lan"
in_iface = "wan0"
proto = ["tcp", 17]
src_ip = ["!10.0.0.0/8", "!@blocklist"]
dest_port = [22, "8000-8080"]
ct_state = "new, related"
ct_direction = "original"
action = "reject"
reject_with = "admin-prohibited"
log = true
limit = "10/minute"
limit_per = "source"
"#);
    let r = &loaded.policy.rules[0];
    assert_eq!(r.name.as_deref(), Some("r"));
    assert_eq!(r.m.src, Some(ZoneSel::Any));
    assert_eq!(r.m.dest, Some(ZoneSel::Zone(0)));
    assert_eq!(r.m.in_iface, Some(1));
    assert_eq!(r.m.proto, [6, 17]);
    assert!(r.m.src_addr.negate);
    assert_eq!(r.m.src_addr.items.len(), 2);
    assert_eq!(r.m.src_addr.items[1], AddrItem::Set(0));
    assert_eq!(r.m.family, None, "the set holds both families");
    assert_eq!(r.m.dport.ranges, [(22, 22), (8000, 8080)]);
    assert_eq!(
        r.m.ct_state,
        StateSet::of(&[
            keepstate_engine::CtState::New,
            keepstate_engine::CtState::Related
        ])
    );
    assert_eq!(r.action, Action::Reject(RejectCode::AdminProhibited));
    assert!(r.log);
    assert_eq!(
        r.limit,
        Some(Limit {
            count: 10,
            per: Time::from_secs(60),
            burst: 5,
            per_source: true
        })
    );
    assert_eq!(r.span.line, base_lines() + 1);

    let loaded = ok("[[rule]]\nsrc = \"wan\"\nsrc_ip = \"10.0.0.0/8\"\naction = \"drop\"\n");
    assert_eq!(
        loaded.policy.rules[0].m.family,
        Some(Family::V4),
        "from the addresses"
    );
}

// --- Shadowed rules -------------------------------------------------------------------------

#[test]
fn shadowed_rule_warns() {
    let loaded = ok(r#"[[rule]]
name = "low-ports"
src = "wan"
proto = ["tcp", "udp"]
dest_port = "1-1024"
action = "drop"

[[rule]]
name = "ssh"
src = "wan"
proto = "tcp"
dest_port = 22
src_ip = "198.51.100.7"
ct_state = "new"
action = "accept"
"#);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert_eq!((w.line, w.col), (base_lines() + 8, 1));
    assert!(
        w.message.contains(&format!(
            "rule `ssh` can never match: rule `low-ports` (line {}) drops every packet it would match",
            base_lines() + 1
        )),
        "{}",
        w.message
    );
}

#[test]
fn shadow_through_wildcards_and_sets() {
    let loaded = ok(r#"[[rule]]
src = "*"
src_ip = "@blocklist"
action = "drop"

[[rule]]
src = "wan"
dest = "lan"
src_ip = "198.51.100.7"
proto = "tcp"
action = "accept"
"#);
    assert!(
        loaded.warnings.is_empty(),
        "forward is not input: {:?}",
        loaded.warnings
    );

    let loaded = ok(r#"[[rule]]
src = "*"
src_ip = "@blocklist"
action = "drop"

[[rule]]
src = "wan"
src_ip = "198.51.100.7"
proto = "tcp"
action = "accept"
"#);
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(loaded.warnings[0]
        .message
        .contains("rule #2 can never match: rule #1"));
}

#[test]
fn no_shadow_when_not_certain() {
    let cases = [
        // The earlier rule is rate-limited: past the limit, packets go on.
        "[[rule]]\nsrc = \"wan\"\nproto = \"icmp\"\nlimit = \"1/s\"\naction = \"accept\"\n[[rule]]\nsrc = \"wan\"\nproto = \"icmp\"\naction = \"drop\"\n",
        // The earlier rule matches only new connections, the later one any state.
        "[[rule]]\nsrc = \"wan\"\nct_state = \"new\"\naction = \"drop\"\n[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\naction = \"accept\"\n",
        // Not terminal: log goes on to the next rule.
        "[[rule]]\nsrc = \"wan\"\naction = \"log\"\n[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\naction = \"accept\"\n",
        // A prefix does not surely contain a set (its contents may change).
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = [\"198.51.100.0/24\", \"2001:db8:bad::/48\"]\naction = \"drop\"\n[[rule]]\nsrc = \"wan\"\nsrc_ip = \"@blocklist\"\naction = \"accept\"\n",
        // Partly overlapping ports.
        "[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\ndest_port = \"1-100\"\naction = \"drop\"\n[[rule]]\nsrc = \"wan\"\nproto = \"tcp\"\ndest_port = \"50-150\"\naction = \"accept\"\n",
        // Different chains: input from wan and output to wan.
        "[[rule]]\nsrc = \"wan\"\naction = \"drop\"\n[[rule]]\ndest = \"wan\"\naction = \"accept\"\n",
        // Negations that do not nest the right way round.
        "[[rule]]\nsrc = \"wan\"\nsrc_ip = \"!10.0.0.0/8\"\naction = \"drop\"\n[[rule]]\nsrc = \"wan\"\nsrc_ip = \"!10.1.0.0/16\"\naction = \"accept\"\n",
    ];
    for case in cases {
        let loaded = ok(case);
        assert!(loaded.warnings.is_empty(), "{case}\n{:?}", loaded.warnings);
    }
}

// --- The shipped examples -------------------------------------------------------------------

fn example(name: &str) -> config::Loaded {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    match config::load(&path) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn home_router_example() {
    let loaded = example("home-router.toml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let p = &loaded.policy;
    assert!(p.defaults.drop_invalid && p.defaults.accept_established);
    let wan = p.zone_by_name("wan").unwrap();
    let lan = p.zone_by_name("lan").unwrap();
    let wan_zone = &p.zones[usize::from(wan)];
    assert_eq!(wan_zone.input, PolicyAction::Drop);
    assert_eq!(wan_zone.forward, PolicyAction::Drop);
    assert!(wan_zone.masquerade);
    assert_eq!(p.zones[usize::from(lan)].input, PolicyAction::Accept);
    assert_eq!(p.forwardings.len(), 1);
    assert_eq!((p.forwardings[0].src, p.forwardings[0].dest), (lan, wan));
    assert_eq!(p.tracking.timeouts.tcp_established, 7440);

    // The interfaces the sample capture uses.
    let lan0 = &p.interfaces[usize::from(p.iface_by_name("lan0").unwrap())];
    assert_eq!(lan0.mac, Some([2, 0, 0, 0, 1, 1]));
    assert!(lan0
        .addrs
        .iter()
        .any(|a| a.contains("192.168.1.23".parse().unwrap())));
    assert!(lan0
        .addrs
        .iter()
        .any(|a| a.contains("2001:db8:1::23".parse().unwrap())));
    let wan0 = &p.interfaces[usize::from(p.iface_by_name("wan0").unwrap())];
    assert_eq!(wan0.mac, Some([2, 0, 0, 0, 0, 1]));
    assert!(wan0.default_route);
    assert_eq!(
        wan0.gateway,
        [
            "203.0.113.1".parse::<std::net::IpAddr>().unwrap(),
            "2001:db8:fffe::1".parse().unwrap()
        ]
    );
    assert!(lan0.gateway.is_empty());

    let ping = p
        .rules
        .iter()
        .find(|r| r.name.as_deref() == Some("Allow-Ping"))
        .unwrap();
    assert_eq!(ping.m.src, Some(ZoneSel::Zone(wan)));
    assert_eq!(ping.m.dest, None, "to the router itself");
    assert_eq!(ping.m.proto, [1]);
    assert_eq!(
        ping.m.icmp,
        [IcmpMatch {
            v6: false,
            ty: 8,
            code: None
        }]
    );
    assert_eq!(ping.action, Action::Accept);
    assert_eq!(
        ping.limit,
        Some(Limit {
            count: 5,
            per: Time::from_secs(1),
            burst: 10,
            per_source: false
        })
    );
    // Nothing from the internet is accepted into the LAN by a rule.
    assert!(p.rules.iter().all(|r| r.m.dest.is_none()));
    let nd = p
        .rules
        .iter()
        .find(|r| r.name.as_deref() == Some("Allow-ICMPv6-Input"))
        .unwrap();
    assert!(nd.m.icmp.contains(&IcmpMatch {
        v6: true,
        ty: 135,
        code: None
    }));
}

#[test]
fn home_router_example_commented_sections() {
    // The sections shown commented out must work once uncommented.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let (active, commented) = text.split_at(text.find("# --- More, commented out").unwrap());
    let uncommented: String = commented
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let text = format!("{active}{uncommented}");
    let loaded = match config::parse("home-router.toml", &text, None) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let p = &loaded.policy;
    assert_eq!(p.sets.len(), 1);
    assert_eq!(p.notrack.len(), 1);
    assert_eq!(p.port_forwards.len(), 1);
    assert_eq!(p.port_forwards[0].internal_port, Some(80));
    assert_eq!(p.rules.len(), 8);
}

#[test]
fn server_example() {
    let loaded = example("server.toml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let p = &loaded.policy;
    assert_eq!(p.zones.len(), 1);
    assert_eq!(p.zones[0].input, PolicyAction::Drop);
    assert!(!p.zones[0].masquerade);
    assert!(p.forwardings.is_empty());
    assert_eq!(p.tracking.tcp_loose, Some(false));
    let ssh = p
        .rules
        .iter()
        .find(|r| r.name.as_deref() == Some("Allow-SSH"))
        .unwrap();
    assert_eq!(ssh.m.dport.ranges, [(22, 22)]);
    assert_eq!(
        ssh.m.ct_state,
        StateSet::of(&[keepstate_engine::CtState::New])
    );
    assert!(ssh.limit.unwrap().per_source);
    assert_eq!(p.rules[0].action, Action::Drop, "the blocklist comes first");
}

#[test]
fn snat_needs_a_source_address() {
    error_at(
        "\n[[snat]]\ndest = \"wan\"\nsrc_ip = \"192.168.1.0/24\"\n",
        2,
        1,
        "[[snat]] needs `to`",
    );
    error_at(
        "\n[[snat]]\ndest = \"wan\"\nto = \"203.0.113.0/28\"\n",
        4,
        6,
        "`to` must be a single address",
    );
}

#[test]
fn one_to_one_needs_one_zone_and_matching_families() {
    error_at(
        "\n[[one_to_one]]\nzone = \"*\"\ninternal_ip = \"192.168.1.5\"\nexternal_ip = \"203.0.113.5\"\n",
        3,
        8,
        "must name one zone",
    );
    error_at(
        "\n[[one_to_one]]\nzone = \"wan\"\ninternal_ip = \"192.168.1.5\"\nexternal_ip = \"2001:db8::5\"\n",
        5,
        1,
        "different families",
    );
    let text = format!(
        "{BASE}\n[[one_to_one]]\nzone = \"wan\"\ninternal_ip = \"192.168.1.5\"\nexternal_ip = \"203.0.113.5\"\n"
    );
    let p = parse(&text).unwrap().policy;
    assert_eq!(p.one_to_one.len(), 1);
    assert!(p.uses_nat());
}

#[test]
fn reserve_connections_is_read_and_kept_within_the_limit() {
    let text = format!("{BASE}[tracking]\nreserve_connections = 50000\n");
    let loaded = parse(&text).unwrap();
    assert_eq!(loaded.policy.tracking.reserve_connections, Some(50_000));
    error_at(
        "[tracking]\nmax_connections = 1000\nreserve_connections = 5000\n",
        3,
        23,
        "`reserve_connections` (5000) is above `max_connections` (1000)",
    );
    error_at(
        "[tracking]\nreserve_connections = -1\n",
        2,
        23,
        "`reserve_connections` is out of range: expected a whole number from 0 to 4294967295",
    );
}
