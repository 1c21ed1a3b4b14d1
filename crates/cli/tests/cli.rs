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
    let (out, so, se) = run(bin().arg("replay").arg(sample()));
    assert!(out.status.success(), "{se}");
    assert!(count(&so, "related") > 0, "{so}");
    assert!(count(&so, "new") > 0, "{so}");
    assert!(count(&so, "established") > 0, "{so}");
    assert!(count(&so, "invalid") >= 2, "{so}");
    assert!(so.contains("icmp-unsolicited-reply"), "{so}");
    assert!(so.contains("packets: "), "{so}");
    assert!(so.contains("connections at end: "), "{so}");
    assert!(so.contains("packets/s"), "{so}");
}

#[test]
fn replay_trace_json_lines() {
    let path = tmp("trace.jsonl");
    let (out, _, se) = run(bin().arg("replay").arg(sample()).arg("--trace").arg(&path));
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
        // LAN-originated traffic enters by lan0, the rest by wan0.
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
    let (out, so, se) = run(bin().arg("replay").arg(sample()).arg("--list"));
    assert!(out.status.success(), "{se}");
    let lines: Vec<&str> = so
        .lines()
        .filter(|l| l.contains(" src=") && l.contains(" dst="))
        .collect();
    assert!(lines.len() >= 10, "{so}");
    assert!(lines
        .iter()
        .any(|l| l.starts_with("tcp") && l.contains("SYN_SENT")));
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

    // Every synthetic packet is valid.
    let (out, so, se) = run(bin().arg("replay").arg(&path));
    assert!(out.status.success(), "{se}");
    assert_eq!(count(&so, "invalid"), 0, "{so}");
    assert_eq!(count(&so, "new"), 300, "{so}");
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
