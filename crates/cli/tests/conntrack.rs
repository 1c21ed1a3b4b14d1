//! `keepstate conntrack` and `keepstate status` against a control API served in-process over
//! a router fed with etherparse-built frames: output compared with conntrack-tools' recorded
//! lines, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../control/tests/common/mod.rs"]
mod common;
use common::*;

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use keepstate_control::{serve, Server};

fn server(token: Option<&str>) -> Server {
    let mut rig = rig(false);
    rig.recorded();
    let now = rig.now;
    serve(
        "127.0.0.1:0".parse().unwrap(),
        token.map(str::to_string),
        Arc::new(Mutex::new(rig.r)),
        move || now,
    )
    .unwrap()
}

fn ks(s: &Server, args: &[&str]) -> Output {
    let addr = s.addr().to_string();
    Command::new(env!("CARGO_BIN_EXE_keepstate"))
        .args(args)
        .args(["--control", &addr])
        .env_remove("KEEPSTATE_TOKEN")
        .output()
        .unwrap()
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8(o.stdout.clone()).unwrap(),
        String::from_utf8(o.stderr.clone()).unwrap(),
    )
}

#[test]
fn list_is_conntrack_tools_output() {
    let s = server(None);
    let o = ks(&s, &["conntrack", "-L"]);
    let (so, se) = out(&o);
    assert!(o.status.success(), "{se}");
    assert_eq!(so, RECORDED_L);
    assert_eq!(se, format!("{SHOWN_3}\n"));

    let (so, _) = out(&ks(&s, &["conntrack", "-L", "-o", "extended"]));
    assert_eq!(so, RECORDED_EXTENDED);
    let (so, se) = out(&ks(&s, &["conntrack", "-L", "-p", "tcp", "--dport", "80"]));
    assert_eq!(so, RECORDED_TCP_80);
    assert_eq!(
        se,
        "conntrack v1.4 (keepstate): 1 flow entries have been shown.\n"
    );
    let (so, _) = out(&ks(
        &s,
        &["conntrack", "-L", "-s", "192.168.1.23", "-p", "udp"],
    ));
    assert_eq!(so, RECORDED_L.lines().nth(1).unwrap().to_string() + "\n");
    let (so, _) = out(&ks(
        &s,
        &[
            "conntrack",
            "-L",
            "--state",
            "ESTABLISHED",
            "-d",
            "198.51.100.0/24",
        ],
    ));
    assert_eq!(so, RECORDED_TCP_80);
    let (so, se) = out(&ks(&s, &["conntrack", "-L", "-s", "10.0.0.1"]));
    assert_eq!(so, "");
    assert_eq!(
        se,
        "conntrack v1.4 (keepstate): 0 flow entries have been shown.\n"
    );

    let (so, _) = out(&ks(&s, &["conntrack", "-L", "-o", "json"]));
    let lines: Vec<serde_json::Value> = so
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["line"].as_str().unwrap(),
        RECORDED_L.lines().next().unwrap()
    );

    let (so, _) = out(&ks(&s, &["conntrack", "-C"]));
    assert_eq!(so, "3\n");
    let (so, _) = out(&ks(&s, &["conntrack", "-C", "-p", "icmp"]));
    assert_eq!(so, "1\n");

    // conntrack -S's line as conntrack-tools 1.4.7 prints it, one table as "cpu 0".
    let (so, _) = out(&ks(&s, &["conntrack", "-S"]));
    assert_eq!(
        so,
        "cpu=0   \tfound=3 invalid=0 insert=3 insert_failed=0 drop=0 early_drop=0 error=0 \
         search_restart=0 clash_resolve=0 chaintoolong=0 \n"
    );
}

#[test]
fn delete_and_flush() {
    let s = server(None);
    let o = ks(&s, &["conntrack", "-D", "-p", "udp"]);
    let (so, se) = out(&o);
    assert!(o.status.success(), "{se}");
    assert_eq!(so, RECORDED_L.lines().nth(1).unwrap().to_string() + "\n");
    assert_eq!(
        se,
        "conntrack v1.4 (keepstate): 1 flow entries have been deleted.\n"
    );
    // Nothing left to delete: conntrack exits with 1.
    let o = ks(&s, &["conntrack", "-D", "-p", "udp"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        out(&o).1,
        "conntrack v1.4 (keepstate): 0 flow entries have been deleted.\n"
    );
    // Without a filter -D refuses rather than empty the table.
    let o = ks(&s, &["conntrack", "-D"]);
    assert!(!o.status.success());
    assert!(out(&o).1.contains("-F"));
    assert_eq!(out(&ks(&s, &["conntrack", "-C"])).0, "2\n");

    let o = ks(&s, &["conntrack", "-F"]);
    assert!(o.status.success());
    assert_eq!(
        out(&o).1,
        "conntrack v1.4 (keepstate): connection tracking table has been emptied.\n"
    );
    assert_eq!(out(&ks(&s, &["conntrack", "-C"])).0, "0\n");
}

#[test]
fn status_and_tokens() {
    let s = server(Some("tok-123"));
    // Without the token: refused, with the API's reason.
    let o = ks(&s, &["conntrack", "-L"]);
    assert!(!o.status.success());
    let (_, se) = out(&o);
    assert!(se.contains("HTTP 401") && se.contains("Bearer"), "{se}");
    let o = ks(&s, &["conntrack", "-C", "--token", "tok-123"]);
    assert_eq!(out(&o).0, "3\n");
    let addr = s.addr().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_keepstate"))
        .args(["status", "--control", &addr])
        .env("KEEPSTATE_TOKEN", "tok-123")
        .output()
        .unwrap();
    let (so, se) = out(&o);
    assert!(o.status.success(), "{se}");
    assert!(so.starts_with("keepstate "), "{so}");
    assert!(so.contains("interfaces:  lan0, wan0\n"), "{so}");
    assert!(so.contains("connections: 3 of "), "{so}");
    assert!(so.contains("packets:     6 judged"), "{so}");

    // A bad filter value is the API's 400, named.
    let o = ks(
        &s,
        &["conntrack", "-L", "--token", "tok-123", "-p", "bogus"],
    );
    assert!(!o.status.success());
    assert!(out(&o).1.contains("proto:"), "{}", out(&o).1);
}

#[test]
fn no_api_is_a_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_keepstate"))
        .args(["conntrack", "-L", "--control", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(out(&o).1.contains("cannot reach the control API"));
}

#[test]
fn events_are_printed_as_conntrack_e_prints_them() {
    use keepstate_dataplane::router::Out;
    use std::io::BufRead;
    use std::process::Stdio;
    use std::time::Duration;
    let mut rig = rig(false);
    rig.r.firewall_mut().engine_mut().set_events(1024);
    rig.recorded();
    let now = rig.now;
    let router = Arc::new(Mutex::new(rig.r));
    let s = serve(
        "127.0.0.1:0".parse().unwrap(),
        None,
        router.clone(),
        move || now,
    )
    .unwrap();
    let addr = s.addr().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keepstate"))
        .args(["conntrack", "-E", "-p", "udp", "-e", "NEW,DESTROY"])
        .args(["--control", &addr])
        .env_remove("KEEPSTATE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.event_streams() < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "conntrack -E never subscribed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv4(HOST, REMOTE, 64)
        .udp(40_002, 53)
        .write(&mut f, b"hi")
        .unwrap();
    router
        .lock()
        .unwrap()
        .handle(now, LAN, &mut f, &mut Out::new());
    let d = http(s.addr(), "DELETE", "/api/v1/connections?proto=udp", None);
    assert_eq!(d.status, 200, "{d:?}");
    let lines: Vec<String> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(10)).ok())
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        lines,
        [
            "    [NEW] udp      17 30 src=192.168.1.23 dst=198.51.100.10 sport=40002 dport=53 \
             [UNREPLIED] src=198.51.100.10 dst=192.168.1.23 sport=53 dport=40002",
            // The recorded table's UDP connection goes too, with 29 s left.
            "[DESTROY] udp      17 29 src=192.168.1.23 dst=198.51.100.10 sport=40001 dport=53 \
             packets=1 bytes=33 [UNREPLIED] src=198.51.100.10 dst=192.168.1.23 sport=53 \
             dport=40001 packets=0 bytes=0",
        ]
    );
}
