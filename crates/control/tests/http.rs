//! The HTTP server on an ephemeral loopback port: every endpoint, errors with reasons,
//! token enforcement, and the OpenAPI document as a contract.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use keepstate_dataplane::router::Router;

use keepstate_control::{check_bind, parse_bind, serve, serve_with, Server, OPENAPI};
use serde_json::Value;

/// A policy file of its own for each server (tests run in parallel and rewrite theirs).
fn policy_file(text: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("control-http-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn server(token: Option<&str>) -> Server {
    server_with(token, policy_file(&policy(false))).0
}

/// A server over the recorded table that reloads `config`; also its router.
fn server_with(token: Option<&str>, config: std::path::PathBuf) -> (Server, Arc<Mutex<Router>>) {
    let mut rig = rig(false);
    rig.recorded();
    let now = rig.now;
    let router = Arc::new(Mutex::new(rig.r));
    let s = serve_with(
        "127.0.0.1:0".parse().unwrap(),
        token.map(str::to_string),
        router.clone(),
        move || now,
        Some(config),
    )
    .unwrap();
    (s, router)
}

fn error_of(r: &Http) -> String {
    assert_eq!(r.header("Content-Type"), Some("application/json"), "{r:?}");
    r.json()["error"].as_str().unwrap().to_string()
}

#[test]
fn endpoints() {
    let s = server(None);
    let a = s.addr();
    assert!(a.ip().is_loopback() && a.port() != 0);

    let r = http(a, "GET", "/api/v1/connections", None);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["total"], 3);
    assert_eq!(v["count"], 3);
    let lines: String = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["line"].as_str().unwrap().to_string() + "\n")
        .collect();
    assert_eq!(lines, RECORDED_L);
    let tcp = &v["items"][0];
    assert_eq!(tcp["proto"], "tcp");
    assert_eq!(tcp["state"], "ESTABLISHED");
    assert_eq!(tcp["original"]["sport"], 40_000);
    assert_eq!(tcp["original"]["bytes"], 112);
    assert_eq!(tcp["reply"]["packets"], 1);
    assert_eq!(tcp["flags"], serde_json::json!(["SEEN_REPLY", "ASSURED"]));
    assert_eq!(v["items"][2]["original"]["id"], 4356);

    let r = http(a, "GET", "/api/v1/connections?format=text", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, RECORDED_L);
    assert_eq!(r.header("X-Total-Count"), Some("3"));
    let r = http(a, "GET", "/api/v1/connections?format=extended", None);
    assert_eq!(r.body, RECORDED_EXTENDED);
    let r = http(
        a,
        "GET",
        "/api/v1/connections?proto=tcp&dport=80&format=text",
        None,
    );
    assert_eq!(r.body, RECORDED_TCP_80);
    let r = http(a, "GET", "/api/v1/connections?sort=bytes&limit=1", None);
    let v = r.json();
    assert_eq!(
        (v["total"].as_u64(), v["count"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(v["items"][0]["proto"], "tcp");
    let r = http(a, "GET", "/api/v1/connections?limit=2&offset=2", None);
    assert_eq!(r.json()["items"][0]["proto"], "icmp");

    let r = http(a, "GET", "/api/v1/connections/count?proto=udp", None);
    assert_eq!(r.json()["count"], 1);

    let r = http(a, "GET", "/api/v1/stats", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["connections"], 3);
    assert_eq!(v["engine"]["packets"], 6);

    let r = http(a, "GET", "/api/v1/status", None);
    let v = r.json();
    assert_eq!(v["connections"], 3);
    assert_eq!(v["interfaces"], serde_json::json!(["lan0", "wan0"]));

    let r = http(a, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    for want in [
        "# TYPE keepstate_packets_total counter\n",
        "keepstate_packets_total{verdict=\"accept\"} ",
        "keepstate_bytes_total{verdict=\"drop\"} 0\n",
        "keepstate_drops_total{reason=\"zone-policy\"} 0\n",
        "keepstate_connections{proto=\"tcp\",state=\"ESTABLISHED\"} 1\n",
        "keepstate_connections{proto=\"udp\",state=\"UNREPLIED\"} 1\n",
        "keepstate_connections_limit ",
        "keepstate_table_fill_ratio ",
        "keepstate_nat_ports_in_use 0\n",
        "# TYPE keepstate_interface_rx_packets_total counter\n",
        "keepstate_interface_rx_packets_total{interface=\"lan0\"} ",
        "keepstate_interface_tx_bytes_total{interface=\"wan0\"} ",
        "# TYPE keepstate_worker_lock_wait_seconds_total counter\n",
    ] {
        assert!(r.body.contains(want), "{want} missing from\n{}", r.body);
    }
    // Every sample line belongs to a family declared with HELP and TYPE.
    for line in r.body.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(r.body.contains(&format!("# TYPE {name} ")), "{line}");
        assert!(r.body.contains(&format!("# HELP {name} ")), "{line}");
    }

    let r = http(a, "GET", "/api/v1/openapi.json", None);
    assert_eq!(r.json()["openapi"], "3.0.3");

    let r = http(a, "DELETE", "/api/v1/connections?proto=udp", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["deleted"], 1);
    assert_eq!(v["items"][0]["proto"], "udp");
    let r = http(a, "GET", "/api/v1/connections/count", None);
    assert_eq!(r.json()["count"], 2);
    let r = http(a, "DELETE", "/api/v1/connections?proto=udp", None);
    assert_eq!(r.json()["deleted"], 0);

    let r = http(a, "POST", "/api/v1/connections/flush", None);
    assert_eq!(r.json()["deleted"], 2);
    let r = http(a, "GET", "/api/v1/connections", None);
    assert_eq!(r.json()["total"], 0);
    s.stop();
}

#[test]
fn bad_requests_are_refused_with_a_reason() {
    let s = server(None);
    let a = s.addr();
    for (path, name) in [
        ("/api/v1/connections?proto=bogus", "proto"),
        ("/api/v1/connections?src=300.1.1.1", "src"),
        ("/api/v1/connections?dport=http", "dport"),
        ("/api/v1/connections?limit=100000", "limit"),
        ("/api/v1/connections?sort=colour", "sort"),
        ("/api/v1/connections?state=SLEEPY", "state"),
        ("/api/v1/connections?frobnicate=1", "frobnicate"),
        ("/api/v1/connections/count?format=text", "format"),
        ("/api/v1/stats?verbose=1", "verbose"),
    ] {
        let r = http(a, "GET", path, None);
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert!(
            error_of(&r).starts_with(&format!("{name}:")),
            "{path}: {r:?}"
        );
    }
    // A deletion needs a filter.
    let r = http(a, "DELETE", "/api/v1/connections", None);
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("flush"), "{r:?}");
    assert_eq!(
        http(a, "GET", "/api/v1/connections/count", None).json()["count"],
        3
    );

    let r = http(a, "GET", "/api/v1/nothing", None);
    assert_eq!(r.status, 404);
    assert!(error_of(&r).contains("/api/v1/nothing"));
    let r = http(a, "GET", "/no-such-page", None);
    assert_eq!(r.status, 404);

    let r = http(a, "POST", "/api/v1/connections", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, DELETE"));
    assert!(error_of(&r).contains("POST"));
    let r = http(a, "GET", "/api/v1/connections/flush", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST"));
    let r = http(a, "PUT", "/metrics", None);
    assert_eq!(r.status, 405);
}

#[test]
fn tokens_are_enforced() {
    let s = server(Some("s3cret-token"));
    let a = s.addr();
    for path in [
        "/api/v1/connections",
        "/metrics",
        "/api/v1/openapi.json",
        "/nope",
    ] {
        let r = http(a, "GET", path, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(error_of(&r).contains("Bearer"), "{r:?}");
        assert!(r.header("WWW-Authenticate").unwrap().starts_with("Bearer"));
        let r = http(a, "GET", path, Some("s3cret-tokeN"));
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(error_of(&r), "wrong token");
        let r = http(a, "GET", path, Some("s3cret"));
        assert_eq!(r.status, 401, "{path}");
    }
    let r = http(a, "GET", "/api/v1/connections", Some("s3cret-token"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["total"], 3);
    let r = http(a, "GET", "/nope", Some("s3cret-token"));
    assert_eq!(r.status, 404);
}

/// The web interface's pages come from the same address without a token (a browser cannot
/// send one when it loads a page); the data they fetch still needs it.
#[test]
fn web_pages_are_served_with_their_headers() {
    let s = server(Some("s3cret-token"));
    let a = s.addr();
    let r = http(a, "GET", "/", None);
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("app.js"), "{}", r.body);
    let csp = r.header("Content-Security-Policy").unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(r.header("X-Content-Type-Options").unwrap(), "nosniff");
    let r = http(a, "GET", "/app.js", None);
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap()
        .starts_with("text/javascript"));
    // Pages are GET only; anything else and unknown paths go through the token check.
    assert_eq!(http(a, "POST", "/", None).status, 401);
    assert_eq!(http(a, "GET", "/no-such-page", None).status, 401);
    assert_eq!(http(a, "GET", "/api/v1/stats", None).status, 401);
}

#[test]
fn binds_beyond_loopback_need_a_token() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let e = check_bind(any, None).unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    assert!(check_bind(any, Some("")).is_err());
    assert!(check_bind(any, Some("t")).is_ok());
    assert!(check_bind("127.0.0.1:9180".parse().unwrap(), None).is_ok());
    assert!(check_bind("[::1]:9180".parse().unwrap(), None).is_ok());
    assert!(check_bind("[::]:9180".parse().unwrap(), None).is_err());
    assert!(check_bind("192.0.2.1:9180".parse().unwrap(), None).is_err());

    let router = Arc::new(Mutex::new(rig(false).r));
    let now = keepstate_engine::Time::from_secs(1);
    let refused = serve(any, None, router, move || now);
    assert!(refused.is_err(), "served on 0.0.0.0 without a token");

    assert_eq!(parse_bind("none").unwrap(), None);
    assert_eq!(
        parse_bind("127.0.0.1:9180").unwrap(),
        Some("127.0.0.1:9180".parse().unwrap())
    );
    assert!(parse_bind("localhost").is_err());
}

// --- The OpenAPI document as a contract ----------------------------------------------------

fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let path = r.strip_prefix("#/").expect("local reference");
            let mut cur = doc;
            for part in path.split('/') {
                cur = &cur[part];
            }
            assert!(!cur.is_null(), "dangling reference {r}");
            resolve(doc, cur)
        }
        None => v,
    }
}

/// Checks `value` has every field `schema` requires, recursively through properties and
/// array items; returns how many fields were checked.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> usize {
    let schema = resolve(doc, schema);
    let mut n = 0;
    if value.is_null() {
        assert!(schema["nullable"] == true, "{at} is null");
        return 0;
    }
    match schema["type"].as_str() {
        Some("object") => assert!(value.is_object(), "{at}: not an object: {value}"),
        Some("array") => assert!(value.is_array(), "{at}: not an array: {value}"),
        Some("integer") => assert!(value.is_u64() || value.is_i64(), "{at}: not an integer"),
        Some("string") => assert!(value.is_string(), "{at}: not a string: {value}"),
        _ => {}
    }
    if let Some(e) = schema["enum"].as_array() {
        assert!(e.contains(value), "{at}: {value} not in {e:?}");
    }
    for f in schema["required"].as_array().into_iter().flatten() {
        let f = f.as_str().unwrap();
        assert!(
            value.get(f).is_some(),
            "{at}: required field {f} missing: {value}"
        );
        n += 1;
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, s) in props {
            if let Some(v) = obj.get(k) {
                n += conforms(doc, s, v, &format!("{at}.{k}"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            n += conforms(doc, items, v, &format!("{at}[{i}]"));
        }
    }
    n
}

/// A valid sample for a parameter, from its schema.
fn sample(name: &str, schema: &Value) -> String {
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.as_str().unwrap().to_string();
    }
    match (name, schema["type"].as_str()) {
        ("proto", _) => "tcp".into(),
        (_, Some("integer")) => schema["default"]
            .as_u64()
            .or(schema["minimum"].as_u64())
            .unwrap_or(0)
            .to_string(),
        _ => "192.168.1.0%2F24".into(),
    }
}

#[test]
fn every_documented_operation_is_served_as_documented() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut checked_fields = 0;
    let mut ops = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            // A fresh server for each: deletions must not empty the table for the next.
            let s = server(None);
            let a = s.addr();
            let params: Vec<&Value> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| resolve(&doc, p))
                .collect();
            // DELETE needs a filter: give it the first documented one.
            // The event stream needs an end: `seconds=0` sends what is pending and ends.
            let base = if method == "DELETE" {
                "?proto=udp".to_string()
            } else if path == "/api/v1/events" {
                "?seconds=0".to_string()
            } else {
                String::new()
            };
            let r = http(a, &method, &format!("{path}{base}"), None);
            let ok = &op["responses"]["200"];
            assert!(!ok.is_null(), "{method} {path} documents no 200");
            assert_eq!(r.status, 200, "{method} {path}: {r:?}");
            if let Some(schema) = ok["content"]["application/json"].get("schema") {
                assert_eq!(r.header("Content-Type"), Some("application/json"));
                checked_fields += conforms(&doc, schema, &r.json(), &format!("{method} {path}"));
            } else {
                assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
            }
            // Every documented parameter is accepted with a valid value.
            for p in &params {
                let name = p["name"].as_str().unwrap();
                assert_eq!(p["in"], "query");
                let v = sample(name, &p["schema"]);
                // `order` is documented as needing `sort`.
                let with = match (name, path.as_str()) {
                    ("order", _) => "&sort=bytes",
                    ("seconds", _) => "",
                    (_, "/api/v1/events") => "&seconds=0",
                    _ => "",
                };
                let r = http(a, &method, &format!("{path}?{name}={v}{with}"), None);
                assert_eq!(r.status, 200, "{method} {path}?{name}={v}: {r:?}");
            }
            // Anything undocumented is refused, as the 400 response says.
            let sep = if base.is_empty() { "?" } else { "&" };
            let r = http(
                a,
                &method,
                &format!("{path}{base}{sep}undocumented=1"),
                None,
            );
            if !op["responses"]["400"].is_null() {
                assert_eq!(r.status, 400, "{method} {path}: {r:?}");
                let bad = resolve(&doc, &op["responses"]["400"]);
                let schema = &bad["content"]["application/json"]["schema"];
                conforms(&doc, schema, &r.json(), "400");
            }
            // The documented 401 appears once a token is required.
            if !op["responses"]["401"].is_null() {
                let t = server(Some("tok"));
                let r = http(t.addr(), &method, &format!("{path}{base}"), None);
                assert_eq!(r.status, 401, "{method} {path}");
            }
            ops += 1;
        }
    }
    assert_eq!(ops, 12, "every operation the server has is documented");
    assert!(checked_fields > 50, "{checked_fields}");
}

// --- Reload, rules, drops ------------------------------------------------------------------

/// LAN to WAN TCP port 80 refused, appended to the rig's policy.
const NO_HTTP: &str = r#"
[[rule]]
name = "No-HTTP"
src = "lan"
dest = "wan"
proto = "tcp"
dest_port = 80
action = "reject"
log = true
"#;

#[test]
fn reload_keeps_what_the_new_policy_allows_and_removes_the_rest() {
    let path = policy_file(&policy(false));
    let (s, _) = server_with(None, path.clone());
    let a = s.addr();
    // The same file again: every connection stays.
    let r = http(a, "POST", "/api/v1/reload", None);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(v["ok"], true);
    assert_eq!(
        (v["checked"].as_u64(), v["removed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(v["connections"], 3);

    // With the HTTP connection forbidden, but kept on request.
    std::fs::write(&path, policy(false) + NO_HTTP).unwrap();
    let r = http_body(a, "POST", "/api/v1/reload", r#"{"keep": true}"#);
    assert_eq!(r.status, 200, "{r:?}");
    let v = r.json();
    assert_eq!(
        (v["forbidden"].as_u64(), v["removed"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(v["connections"], 3);
    // And by default removed; the answer lists it as conntrack -L does.
    let r = http(a, "POST", "/api/v1/reload", None);
    let v = r.json();
    assert_eq!(
        (v["forbidden"].as_u64(), v["removed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["connections"], 2);
    let line = v["refused"][0].as_str().unwrap();
    assert_eq!(line, RECORDED_TCP_80.trim_end(), "{v}");
    assert_eq!(
        http(a, "GET", "/api/v1/connections/count?proto=tcp", None).json()["count"],
        0
    );
    // The new rule is listed, with its counters.
    let v = http(a, "GET", "/api/v1/rules", None).json();
    assert_eq!(v["rules"][0]["name"], "No-HTTP");
    assert_eq!(v["rules"][0]["target"], "reject");
    assert_eq!(v["rules"][0]["dest_port"], "80");
    s.stop();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_bad_reload_is_refused_with_its_diagnostics() {
    let path = policy_file(&policy(false));
    let (s, router) = server_with(None, path.clone());
    let a = s.addr();
    let before = router.lock().unwrap().firewall().policy().clone();

    // Errors in the file: 422, each diagnostic with file, line and column.
    std::fs::write(
        &path,
        policy(false) + "\n[[rule]]\nsrc = \"nowhere\"\naction = \"drop\"\n",
    )
    .unwrap();
    let r = http(a, "POST", "/api/v1/reload", None);
    assert_eq!(r.status, 422, "{r:?}");
    let v = r.json();
    assert!(v["error"].as_str().unwrap().contains("error"), "{v}");
    let d = v["diagnostics"][0].as_str().unwrap();
    let file = path.display().to_string();
    assert!(d.starts_with(&format!("{file}:")), "{d}");
    let rest: Vec<&str> = d[file.len() + 1..].splitn(3, ':').collect();
    assert!(rest[0].parse::<u32>().unwrap() > 30, "{d}");
    assert!(rest[1].parse::<u32>().unwrap() >= 1, "{d}");
    assert!(d.contains("nowhere"), "{d}");

    // Interfaces changed: refused, a restart is needed.
    std::fs::write(&path, policy(false).replace("\"wan0\"", "\"wan9\"")).unwrap();
    let r = http(a, "POST", "/api/v1/reload", None);
    assert_eq!(r.status, 422, "{r:?}");
    let e = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("interfaces changed") && e.contains("restart"),
        "{e}"
    );

    // Bad options: 400.
    std::fs::write(&path, policy(false)).unwrap();
    for body in ["{", "[1]", r#"{"keep": 1}"#, r#"{"flush": true}"#] {
        let r = http_body(a, "POST", "/api/v1/reload", body);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            r.json()["error"].as_str().unwrap().starts_with("body:"),
            "{r:?}"
        );
    }
    // A missing file: 422 too, and nothing changed through all of it.
    let _ = std::fs::remove_file(&path);
    let r = http(a, "POST", "/api/v1/reload", None);
    assert_eq!(r.status, 422, "{r:?}");
    assert!(r.json()["diagnostics"][0]
        .as_str()
        .unwrap()
        .contains("cannot read"));
    assert_eq!(router.lock().unwrap().firewall().policy(), &before);
    assert_eq!(
        http(a, "GET", "/api/v1/connections/count", None).json()["count"],
        3
    );
    s.stop();

    // A server without a policy file has nothing to reload.
    let mut rig = rig(false);
    rig.recorded();
    let now = rig.now;
    let plain = serve(
        "127.0.0.1:0".parse().unwrap(),
        None,
        Arc::new(Mutex::new(rig.r)),
        move || now,
    )
    .unwrap();
    let r = http(plain.addr(), "POST", "/api/v1/reload", None);
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(
        http(plain.addr(), "GET", "/api/v1/reload", None).status,
        405
    );
}

#[test]
fn rules_are_listed_with_their_counters() {
    let path = policy_file(&(policy(false) + NO_HTTP));
    let (s, router) = server_with(None, path.clone());
    let a = s.addr();
    // Put the rule in force and hit it once.
    assert_eq!(http(a, "POST", "/api/v1/reload", None).status, 200);
    let mut f = Vec::new();
    etherparse::PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
        .ipv4(HOST, REMOTE2, 64)
        .tcp(45_000, 80, 1, 64_240)
        .syn()
        .write(&mut f, &[])
        .unwrap();
    let (ip_len, now) = (f.len() - 14, keepstate_engine::Time::from_secs(1002));
    let mut out = keepstate_dataplane::router::Out::new();
    router.lock().unwrap().handle(now, LAN, &mut f, &mut out);

    let v = http(a, "GET", "/api/v1/rules", None).json();
    let zones = v["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 2);
    assert_eq!(zones[1]["name"], "wan");
    assert_eq!(zones[1]["input"], "drop");
    assert_eq!(zones[1]["interfaces"], serde_json::json!(["wan0"]));
    assert_eq!(zones[1]["networks"], serde_json::json!(["203.0.113.2/24"]));
    assert_eq!(zones[1]["masq"], false);
    let rule = &v["rules"][0];
    assert_eq!(rule["src"], "lan");
    assert_eq!(rule["dest"], "wan");
    assert_eq!(rule["proto"], "tcp");
    assert_eq!(rule["log"], true);
    assert_eq!(
        (rule["hits"].as_u64(), rule["packets"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(rule["bytes"].as_u64(), Some(ip_len as u64));
    assert_eq!(
        v["forwards"],
        serde_json::json!([{"src": "lan", "dest": "wan"}])
    );
    assert_eq!(v["port_forwards"], serde_json::json!([]));
    assert_eq!(v["notrack"], serde_json::json!([]));
    assert_eq!(http(a, "GET", "/api/v1/rules?x=1", None).status, 400);

    // The drop is in the drop log, newest first, named by the rule that decided.
    let r = http(a, "GET", "/api/v1/drops", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["count"], 1);
    let d = &v["items"][0];
    assert_eq!(d["reason"], "rule-reject");
    assert_eq!(d["rule"], "No-HTTP");
    assert_eq!(d["iface"], "lan0");
    assert_eq!(d["out"], "wan0");
    assert_eq!(d["proto"], "tcp");
    assert_eq!(d["src"], "192.168.1.23");
    assert_eq!(d["sport"], 45_000);
    assert_eq!(d["dst"], "198.51.100.20");
    assert_eq!(d["dport"], 80);
    assert!(d["time"].as_u64().unwrap() > 1_600_000_000, "{d}");
    // The rule asked for a log line, and the log limit let it through.
    let lines = router.lock().unwrap().take_log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(
            "IN=lan0 OUT=wan0 SRC=192.168.1.23 DST=198.51.100.20 PROTO=TCP SPT=45000 DPT=80"
        ),
        "{lines:?}"
    );
    assert!(
        lines[0].contains("RULE=\"No-HTTP\" REASON=rule-reject"),
        "{lines:?}"
    );

    // A reload keeps the log and what named its entries.
    std::fs::write(&path, policy(false)).unwrap();
    assert_eq!(http(a, "POST", "/api/v1/reload", None).status, 200);
    let v = http(a, "GET", "/api/v1/drops?limit=5", None).json();
    assert_eq!(v["items"][0]["rule"], "No-HTTP");
    assert_eq!(
        http(a, "GET", "/api/v1/drops?limit=0", None).json()["count"],
        0
    );
    for bad in ["limit=-1", "limit=5000", "limit=x", "since=1"] {
        let r = http(a, "GET", &format!("/api/v1/drops?{bad}"), None);
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    s.stop();
    let _ = std::fs::remove_file(&path);
}

// --- Events --------------------------------------------------------------------------------

#[test]
fn events_stream_new_and_destroy_as_conntrack_e_prints_them() {
    use keepstate_dataplane::router::Out;
    let mut rig = rig(false);
    rig.r.firewall_mut().engine_mut().set_events(1024);
    // Before the stream starts: not reported to it.
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
    let a = s.addr();
    let text =
        std::thread::spawn(move || http(a, "GET", "/api/v1/events?seconds=2&proto=udp", None));
    let json = std::thread::spawn(move || {
        http(
            a,
            "GET",
            "/api/v1/events?seconds=2&format=json&types=destroy",
            None,
        )
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while s.event_streams() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the streams never subscribed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(HOST_MAC, LAN_MAC)
            .ipv4(HOST, REMOTE, 64)
            .udp(40_002, 53)
            .write(&mut f, b"hi")
            .unwrap();
        let mut r = router.lock().unwrap();
        let mut out = Out::new();
        r.handle(now, LAN, &mut f, &mut out);
    }
    let d = http(
        a,
        "DELETE",
        "/api/v1/connections?proto=udp&sport=40002",
        None,
    );
    assert_eq!(d.status, 200, "{d:?}");
    let t = text.join().unwrap();
    assert_eq!(t.status, 200);
    assert_eq!(t.header("Content-Type"), Some("text/plain; charset=utf-8"));
    assert_eq!(
        t.body,
        "    [NEW] udp      17 30 src=192.168.1.23 dst=198.51.100.10 sport=40002 dport=53 \
         [UNREPLIED] src=198.51.100.10 dst=192.168.1.23 sport=53 dport=40002\n\
         [DESTROY] udp      17 30 src=192.168.1.23 dst=198.51.100.10 sport=40002 dport=53 \
         packets=1 bytes=30 [UNREPLIED] src=198.51.100.10 dst=192.168.1.23 sport=53 \
         dport=40002 packets=0 bytes=0\n"
    );
    let j = json.join().unwrap();
    assert_eq!(j.header("Content-Type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = j
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", j.body);
    assert_eq!(lines[0]["type"], "destroy");
    assert_eq!(lines[0]["connection"]["original"]["sport"], 40002);
    assert!(lines[0]["line"]
        .as_str()
        .unwrap()
        .starts_with("[DESTROY] udp      17 30 src="));
}

#[test]
fn events_requests_are_checked() {
    let s = server(None);
    let r = http(s.addr(), "GET", "/api/v1/events?types=new,bogus", None);
    assert_eq!(r.status, 400);
    assert!(error_of(&r).contains("types"), "{r:?}");
    let r = http(s.addr(), "GET", "/api/v1/events?seconds=999999", None);
    assert_eq!(r.status, 400);
    let r = http(s.addr(), "POST", "/api/v1/events", None);
    assert_eq!(r.status, 405);
    let t = server(Some("tok"));
    let r = http(t.addr(), "GET", "/api/v1/events?seconds=0", None);
    assert_eq!(r.status, 401);
    let r = http(t.addr(), "GET", "/api/v1/events?seconds=0", Some("tok"));
    assert_eq!((r.status, r.body.as_str()), (200, ""));
}
