#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keepstate"))
}

fn sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../samples/home-router.pcapng")
}

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    dir.join(format!("{}-{name}", std::process::id()))
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("run keepstate");
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    let se = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, so, se)
}

/// The count on a `  name   N` summary line.
fn count(summary: &str, name: &str) -> u64 {
    summary
        .lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(name)).then(|| it.next().and_then(|n| n.parse().ok()))?
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{summary}"))
}

#[test]
fn replay_sample_summary() {
    // Tracking alone: the IPv6 connections pair up; the IPv4 answers come back addressed to
    // the router's masquerading address, which only the policy (NAT) maps back.
    let (out, so, se) = run(bin().arg("replay").arg(sample()));
    assert!(out.status.success(), "{se}");
    assert!(count(&so, "new") > 0, "{so}");
    assert!(count(&so, "established") > 0, "{so}");
    assert!(count(&so, "invalid") >= 2, "{so}");
    assert!(so.contains("icmp-unsolicited-reply"), "{so}");
    assert!(so.contains("dropped: 0"), "{so}");
    assert!(so.contains("packets: "), "{so}");
    assert!(so.contains("connections at end: "), "{so}");
    assert!(so.contains("packets/s"), "{so}");
}

#[test]
fn replay_trace_json_lines() {
    let path = tmp("trace.jsonl");
    let (out, _, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg(sample())
        .arg("--trace")
        .arg(&path));
    assert!(out.status.success(), "{se}");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut n = 0u64;
    let mut related = 0;
    for line in text.lines() {
        n += 1;
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in [
            "n", "ts", "iface", "verdict", "ct_state", "dir", "reason", "proto", "src", "dst",
            "sport", "dport",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["n"].as_u64(), Some(n));
        assert!(v["ts"].as_f64().unwrap() > 1.7e9);
        // LAN-originated traffic enters by lan0, the rest by wan0. IPv4 leaves masqueraded
        // and its answers come back to the LAN host.
        if v["verdict"] == "accept"
            && v["proto"] != "icmpv6"
            && v["dst"] != "203.0.113.2"
            && v["iface"] == "lan0"
            && !v["src"].as_str().unwrap().contains(':')
        {
            assert_eq!(v["nat"]["src"], "203.0.113.2", "{line}");
        }
        if v["ct_state"] == "established" && v["iface"] == "wan0" && v["dst"] == "203.0.113.2" {
            assert!(
                v["nat"]["dst"].as_str().unwrap().starts_with("192.168.1."),
                "{line}"
            );
        }
        let lan_src = v["src"]
            .as_str()
            .is_some_and(|s| s.starts_with("192.168.1.") || s.starts_with("2001:db8:1::"));
        assert_eq!(v["iface"], if lan_src { "lan0" } else { "wan0" }, "{line}");
        if v["proto"] == "icmp" || v["proto"] == "icmpv6" {
            assert!(v["icmp_type"].is_u64() && v["icmp_code"].is_u64(), "{line}");
            assert!(v["sport"].is_null() && v["dport"].is_null(), "{line}");
        }
        if v["ct_state"] == "related" {
            related += 1;
        }
    }
    assert!(n > 50);
    assert!(related >= 4);
    std::fs::remove_file(&path).ok();

    // "-": the trace on stdout, the summary on stderr.
    let (out, so, se) = run(bin().arg("replay").arg(sample()).args(["--trace", "-"]));
    assert!(out.status.success(), "{se}");
    let first: serde_json::Value = serde_json::from_str(so.lines().next().unwrap()).unwrap();
    assert_eq!(first["n"], 1);
    assert!(se.contains("packets: "), "{se}");
}

#[test]
fn replay_list() {
    let (out, so, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg(sample())
        .arg("--list"));
    assert!(out.status.success(), "{se}");
    let lines: Vec<&str> = so
        .lines()
        .filter(|l| l.contains(" src=") && l.contains(" dst="))
        .collect();
    assert!(lines.len() >= 10, "{so}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("tcp") && l.contains("TIME_WAIT")));
    // Masqueraded connections list their replies addressed to the WAN address, as netfilter
    // does; IPv6 ones are routed untranslated.
    assert!(lines.iter().any(|l| l.starts_with("tcp")
        && l.contains("src=192.168.1.23 dst=203.0.113.10")
        && l.contains("src=203.0.113.10 dst=203.0.113.2 sport=443 dport=50432")));
    assert!(lines
        .iter()
        .any(|l| l.contains("src=2001:db8:ffff::10 dst=2001:db8:1::23")));
    assert!(
        se.contains(&format!(
            "conntrack v1.4 (keepstate): {} flow entries have been shown.",
            lines.len()
        )),
        "{se}"
    );
}

#[test]
fn synth_then_bench() {
    let path = tmp("synth.pcap");
    let (out, _, se) = run(bin()
        .args([
            "gen",
            "synth",
            "--connections",
            "300",
            "--rounds",
            "2",
            "--seed",
            "3",
            "--ipv6-share",
            "0.25",
            "-o",
        ])
        .arg(&path));
    assert!(out.status.success(), "{se}");

    let (out, so, se) = run(bin().arg("bench").arg(&path).args(["--batch", "7"]));
    assert!(out.status.success(), "{se}");
    let line = so.trim();
    let mut fields = std::collections::HashMap::new();
    for kv in line.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        fields.insert(k, v.parse::<f64>().unwrap());
    }
    assert_eq!(fields.len(), 5, "{line}");
    assert_eq!(fields["packets"], 300.0 * 10.0);
    assert!(fields["seconds"] >= 0.0 && fields["mpps"] >= 0.0);
    assert_eq!(fields["connections"], 300.0);
    assert!(fields["bytes_per_connection"] > 0.0);

    // With the table's room set aside first: the same connections, and the line says so.
    let (out, so, se) = run(bin().arg("bench").arg(&path).args(["--reserve", "300"]));
    assert!(out.status.success(), "{se}");
    let line = so.trim();
    assert!(line.contains(" connections=300 "), "{line}");
    assert!(line.contains(" reserved=300"), "{line}");

    // Every synthetic packet is valid.
    let (out, so, se) = run(bin().arg("replay").arg(&path));
    assert!(out.status.success(), "{se}");
    assert_eq!(count(&so, "invalid"), 0, "{so}");
    assert_eq!(count(&so, "new"), 300, "{so}");
    std::fs::remove_file(&path).ok();
}

/// `--timestamps`: every segment carries RFC 7323 timestamps, read back here with an
/// independent parser; the engine finds every packet valid.
#[test]
fn synth_with_timestamps() {
    let path = tmp("synth-ts.pcap");
    let (out, _, se) = run(bin()
        .args([
            "gen",
            "synth",
            "--connections",
            "50",
            "--rounds",
            "1",
            "--timestamps",
            "-o",
        ])
        .arg(&path));
    assert!(out.status.success(), "{se}");
    let file = std::fs::File::open(&path).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
    let mut seen = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let s = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
        let Some(etherparse::TransportSlice::Tcp(t)) = s.transport else {
            panic!("not TCP");
        };
        let ts = t.options_iterator().find_map(|o| match o {
            Ok(etherparse::TcpOptionElement::Timestamp(val, ecr)) => Some((val, ecr)),
            _ => None,
        });
        let (_, ecr) = ts.expect("every segment has timestamps");
        // Only a SYN without ACK has nothing to echo.
        assert_eq!(ecr == 0, t.syn() && !t.ack());
        if t.syn() {
            assert!(t.options_iterator().any(|o| matches!(
                o,
                Ok(etherparse::TcpOptionElement::MaximumSegmentSize(1460))
            )));
        }
        seen += 1;
    }
    assert_eq!(seen, 50 * 8);
    let (out, so, se) = run(bin().arg("replay").arg(&path));
    assert!(out.status.success(), "{se}");
    assert_eq!(count(&so, "invalid"), 0, "{so}");
    std::fs::remove_file(&path).ok();
}

#[test]
fn corrupt_file_fails_with_name_and_offset() {
    // Bad header.
    let path = tmp("garbage.pcap");
    std::fs::write(&path, b"this is not a capture file at all").unwrap();
    let (out, _, se) = run(bin().arg("replay").arg(&path));
    assert!(!out.status.success());
    assert!(
        se.contains("garbage.pcap") && se.contains("offset 0"),
        "{se}"
    );
    std::fs::remove_file(&path).ok();

    // Bad block length in the middle of the sample.
    let mut bytes = std::fs::read(sample()).unwrap();
    // The section header's length, then the interface block's; the first packet follows.
    let shb = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
    let idb = u32::from_le_bytes(bytes[shb + 4..shb + 8].try_into().unwrap()) as usize;
    let first = shb + idb;
    let epb = u32::from_le_bytes(bytes[first + 4..first + 8].try_into().unwrap()) as usize;
    let second = first + epb;
    bytes[second + 4..second + 8].copy_from_slice(&7u32.to_le_bytes());
    let path = tmp("corrupt.pcapng");
    std::fs::write(&path, &bytes).unwrap();
    let (out, _, se) = run(bin().arg("replay").arg(&path));
    assert!(!out.status.success());
    assert!(
        se.contains("corrupt.pcapng") && se.contains(&format!("offset {second}")),
        "{se}"
    );
    std::fs::remove_file(&path).ok();
}

#[test]
fn truncated_last_packet_is_reported_not_fatal() {
    let bytes = std::fs::read(sample()).unwrap();
    let path = tmp("cut.pcapng");
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let (out, so, se) = run(bin().arg("replay").arg(&path));
    assert!(out.status.success(), "{se}");
    assert!(se.contains("truncated") && se.contains("offset"), "{se}");
    assert!(so.contains("packets: "), "{so}");
    std::fs::remove_file(&path).ok();
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[test]
fn replay_with_the_home_router_policy() {
    let (out, so, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg("--trace")
        .arg("-")
        .arg(sample()));
    assert!(out.status.success(), "{se}");
    // With --trace -, the trace is stdout and the summary stderr.
    let mut scan_dropped = 0;
    let mut lan_accepted = 0;
    for line in so.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v.get("rule").is_some(), "{line}");
        // The scan hits the router's own (masquerading) address.
        if v["src"] == "198.51.100.66" {
            assert_eq!(v["verdict"], "drop", "{line}");
            assert_eq!(v["reason"], "zone-policy", "{line}");
            assert_eq!(v["rule"], "zone wan input policy", "{line}");
            scan_dropped += 1;
        }
        // IPv6 is routed: the LAN host itself is scanned, and the forward policy drops it.
        if v["src"] == "2001:db8:bad::66" {
            assert_eq!(v["rule"], "zone wan forward policy", "{line}");
            assert_eq!(v["verdict"], "drop", "{line}");
        }
        if v["iface"] == "lan0" {
            assert_eq!(v["verdict"], "accept", "{line}");
            lan_accepted += 1;
        }
        if v["ct_state"] == "related" {
            assert_eq!(v["verdict"], "accept", "{line}");
        }
        if v["ct_state"] == "invalid" {
            assert_eq!(v["verdict"], "drop", "{line}");
            assert_eq!(v["rule"], "defaults.drop_invalid", "{line}");
        }
    }
    assert_eq!(scan_dropped, 7);
    assert!(lan_accepted > 20);
    // The pings to the WAN address: burst 10 plus one token refilled in 0.3 s at 5/s.
    assert_eq!(count(&se, "Allow-Ping"), 11, "{se}");
    assert!(se.contains("rule hits:"), "{se}");
    assert!(se.contains("zone wan input policy"), "{se}");
}

#[test]
fn check_prints_the_compiled_policy() {
    let (out, so, se) = run(bin().arg("check").arg(example("home-router.toml")));
    assert!(out.status.success(), "{se}");
    assert!(so.contains("wan -> firewall (input): 7 rules"), "{so}");
    assert!(so.contains("lan -> wan"), "{so}");
    assert!(!se.contains("warning"), "{se}");
    let (out, _, se) = run(bin().arg("check").arg(example("server.toml")));
    assert!(out.status.success(), "{se}");
}

#[test]
fn check_reports_errors_with_file_line_and_column() {
    let path = tmp("bad.toml");
    std::fs::write(
        &path,
        "[[zone]]\nname = \"lan\"\ninput = \"acept\"\n[[rule]]\nsrc = \"wna\"\nproto = \"tcp\"\ndest_port = 70000\naction = \"accept\"\n",
    )
    .unwrap();
    let (out, _, se) = run(bin().arg("check").arg(&path));
    assert_eq!(out.status.code(), Some(1), "{se}");
    let p = path.display();
    assert!(
        se.contains(&format!("{p}:3:9: error: unknown policy")),
        "{se}"
    );
    assert!(
        se.contains(&format!("{p}:5:7: error: unknown zone `wna`")),
        "{se}"
    );
    assert!(
        se.contains(&format!("{p}:7:13: error: `dest_port` is out of range")),
        "{se}"
    );
    // replay refuses the same file before reading the capture.
    let (out, _, se) = run(bin().arg("replay").arg("--config").arg(&path).arg(sample()));
    assert!(!out.status.success());
    assert!(se.contains(":5:7:"), "{se}");
}

#[test]
fn iface_mac_names_ethernet_ingress() {
    // A plain pcap of the sample's frames has no interface names: the destination MAC says
    // which router port each frame entered by.
    let pcap = tmp("sample.pcap");
    let data = std::fs::read(sample()).unwrap();
    let cap = keepstate_capture::Capture::from_bytes("sample", data).unwrap();
    let mut w = pcap_file::pcap::PcapWriter::new(Vec::new()).unwrap();
    for r in cap.records() {
        let r = r.unwrap();
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::from_nanos(r.ts.as_nanos()),
            u32::try_from(r.wire_len).unwrap(),
            r.data,
        ))
        .unwrap();
    }
    std::fs::write(&pcap, w.into_writer()).unwrap();
    let (out, so, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg("--iface-mac")
        .arg("02:00:00:00:01:01=lan0")
        .arg("--trace")
        .arg("-")
        .arg(&pcap));
    assert!(out.status.success(), "{se}");
    let drops = so
        .lines()
        .filter(|l| l.contains("\"verdict\":\"drop\""))
        .count();
    // Same decisions as with the pcapng's interface names: 7 scan SYNs, 5 pings over the
    // limit, the SSH SYN to the router, the IPv6 SYN to the LAN host and 2 invalid packets.
    assert_eq!(drops, 16, "{se}");
    let (out, _, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg("--iface-mac")
        .arg("02:00:00:00:01:01=nope")
        .arg(&pcap));
    assert!(!out.status.success());
    assert!(se.contains("\"nope\" is not defined"), "{se}");
}

#[test]
fn cooked_capture_uses_ifindex_and_skips_outgoing_copies() {
    // `tcpdump -i any` on the router: every forwarded frame twice, in on one port (ifindex 2
    // = lan0, 3 = wan0) and out on the other, as Linux cooked v2 records.
    let cfg = tmp("ifindex.toml");
    let text = std::fs::read_to_string(example("home-router.toml"))
        .unwrap()
        .replace("name = \"lan0\"", "name = \"lan0\"\nifindex = 2")
        .replace("name = \"wan0\"", "name = \"wan0\"\nifindex = 3");
    std::fs::write(&cfg, text).unwrap();
    let data = std::fs::read(sample()).unwrap();
    let cap = keepstate_capture::Capture::from_bytes("sample", data).unwrap();
    let header = pcap_file::pcap::PcapHeader {
        datalink: pcap_file::DataLink::LINUX_SLL2,
        ..Default::default()
    };
    let mut w = pcap_file::pcap::PcapWriter::with_header(Vec::new(), header).unwrap();
    let mut frames = 0;
    for r in cap.records() {
        let r = r.unwrap();
        let from_lan = r.iface == Some("lan0");
        for (ifindex, pkt_type) in [
            (if from_lan { 2 } else { 3 }, 0u8),
            (if from_lan { 3 } else { 2 }, 4),
        ] {
            let mut f = Vec::new();
            f.extend_from_slice(&r.data[12..14]); // protocol (ethertype)
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&u32::to_be_bytes(ifindex));
            f.extend_from_slice(&[0, 1, pkt_type, 6]);
            f.extend_from_slice(&r.data[6..12]);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&r.data[14..]);
            w.write_packet(&pcap_file::pcap::PcapPacket::new(
                std::time::Duration::from_nanos(r.ts.as_nanos()),
                u32::try_from(f.len()).unwrap(),
                &f,
            ))
            .unwrap();
        }
        frames += 1;
    }
    let pcap = tmp("cooked.pcap");
    std::fs::write(&pcap, w.into_writer()).unwrap();
    let (out, so, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(&cfg)
        .arg("--trace")
        .arg("-")
        .arg(&pcap));
    assert!(out.status.success(), "{se}");
    assert_eq!(so.lines().count(), frames, "{se}");
    // The trace names the interface found from the ifindex.
    let first: serde_json::Value = serde_json::from_str(so.lines().next().unwrap()).unwrap();
    assert_eq!(first["iface"], "lan0", "{so}");
    assert!(
        se.contains(&format!("skipped outgoing copies: {frames}")),
        "{se}"
    );
    let drops = so
        .lines()
        .filter(|l| l.contains("\"verdict\":\"drop\""))
        .count();
    assert_eq!(drops, 16, "{se}");
}

#[test]
fn scans_are_logged_traced_and_counted() {
    // A scanner on the WAN side: an Xmas probe, then SYNs to 30 ports of the router's WAN
    // address, each frame addressed to wan0's MAC.
    let wan_mac = [0x02, 0, 0, 0, 0, 0x01];
    let scanner_mac = [0x02, 0, 0, 0, 0xee, 0x01];
    let mut w = pcap_file::pcap::PcapWriter::new(Vec::new()).unwrap();
    let mut frame = |i: u32, b: etherparse::PacketBuilderStep<etherparse::TcpHeader>| {
        let mut v = Vec::new();
        b.write(&mut v, &[]).unwrap();
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            std::time::Duration::from_millis(1_700_000_000_000 + u64::from(i)),
            u32::try_from(v.len()).unwrap(),
            &v,
        ))
        .unwrap();
    };
    let base = || {
        etherparse::PacketBuilder::ethernet2(scanner_mac, wan_mac).ipv4(
            [198, 51, 100, 66],
            [203, 0, 113, 2],
            64,
        )
    };
    frame(0, base().tcp(50_000, 80, 1, 1024).fin().psh().urg(0));
    for p in 1..=30u16 {
        frame(u32::from(p), base().tcp(50_000, p, 1, 1024).syn());
    }
    let pcap = tmp("scan.pcap");
    std::fs::write(&pcap, w.into_writer()).unwrap();
    let (out, so, se) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg("--trace")
        .arg("-")
        .arg(&pcap));
    assert!(out.status.success(), "{se}");
    assert!(
        se.contains("keepstate: scan: ") && se.contains("kind=xmas"),
        "{se}"
    );
    assert_eq!(se.matches("kind=ports").count(), 1, "{se}");
    assert_eq!(so.matches("\"scan\":\"xmas\"").count(), 1, "{so}");
    assert_eq!(so.matches("\"scan\":\"ports\"").count(), 1, "{so}");
    let (_, summary, _) = run(bin()
        .arg("replay")
        .arg("--config")
        .arg(example("home-router.toml"))
        .arg(&pcap));
    assert!(summary.contains("scans:  xmas 1  ports 1"), "{summary}");
}

/// `bench --config --against`: the masquerade benchmark against the routed one in one run,
/// interleaved; every packet of both synthetic traces is accepted and both lines and the
/// ratio are printed. Bad `--against` values are refused with a reason.
#[test]
fn bench_against_a_baseline() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (routed, masq) = (tmp("routed.pcap"), tmp("masq.pcap"));
    for (path, extra) in [(&routed, None), (&masq, Some("203.0.113.2"))] {
        let mut cmd = bin();
        cmd.args(["gen", "synth", "--connections", "200", "--rounds", "3"]);
        if let Some(a) = extra {
            cmd.args(["--masquerade", a]);
        }
        let (out, _, se) = run(cmd.arg("-o").arg(path));
        assert!(out.status.success(), "{se}");
    }
    let against = format!(
        "{}:{}",
        root.join("bench/routed.toml").display(),
        routed.display()
    );
    let (out, so, se) = run(bin()
        .arg("bench")
        .arg("--config")
        .arg(root.join("bench/masquerade.toml"))
        .arg(&masq)
        .arg("--against")
        .arg(&against));
    assert!(out.status.success(), "{se}");
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines.len(), 3, "{so}");
    let packets = 200 * (3 + 2 * 3 + 3);
    for (line, label) in lines.iter().zip(["baseline ", "this "]) {
        assert!(line.starts_with(label), "{line}");
        assert!(line.contains(&format!(" packets={packets} ")), "{line}");
        assert!(line.contains(&format!(" accepted={packets}")), "{line}");
        assert!(line.contains(" connections=200 "), "{line}");
    }
    let ratio: f64 = lines[2]
        .strip_prefix("ratio=")
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("{so}"));
    assert!(ratio > 0.0, "{so}");

    let (out, _, se) = run(bin()
        .arg("bench")
        .arg("--config")
        .arg(root.join("bench/masquerade.toml"))
        .arg(&masq)
        .args(["--against", "no-colon-here"]));
    assert!(!out.status.success());
    assert!(se.contains("expected POLICY.toml:CAPTURE"), "{se}");
    std::fs::remove_file(&routed).ok();
    std::fs::remove_file(&masq).ok();
}
