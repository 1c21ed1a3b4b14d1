//! The web interface end to end: headless Chromium against a live `keepstate run` in the demo
//! network of `keepstate lab` (namespaces this test creates and removes, also on failure).
//!
//! A LAN host holds a TCP connection to the internet host's echo service; in the browser
//! the connection is on the Connections page (translated to the router's address), the
//! Kill button removes it (from the page and from the API), and the dashboard's charts draw.
//! Screenshots of every page go to `$KEEPSTATE_WEBUI_SCREENSHOTS` (default: a directory
//! under the target's tmp); `KEEPSTATE_WEBUI_DWELL_S=N` keeps the dashboard open N more
//! seconds first, so its charts have a history (that is how the README's were taken).
//!
//! Chromium and the driver (tests/webui/webui.mjs, Node 20+) run inside the router's
//! namespace, where the API is on 127.0.0.1:9180. Needs root, `ip`, `python3`, `curl`,
//! `timeout`, `node` and `chromium`; without them the test prints `SKIPPED webui: <why>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

/// Where Chromium's DevTools listen, inside the router's namespace (which has nothing else
/// on it but the API).
const DEVTOOLS_PORT: &str = "9222";

fn keepstate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keepstate"))
}

fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Node's arguments for a global `WebSocket` (Node 22 has it; 20.10+ behind a flag), or
/// why there is none.
fn node_flags() -> Result<Vec<&'static str>, String> {
    for flags in [&[][..], &["--experimental-websocket"][..]] {
        let ok = Command::new("node")
            .args(flags)
            .args(["-e", "typeof WebSocket === 'function' || process.exit(1)"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(flags.to_vec());
        }
    }
    Err("needs Node.js 20.10 or later (a WebSocket client)".into())
}

/// Node's flags, or why this test cannot run here.
fn prerequisites() -> Result<Vec<&'static str>, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces)".into());
    }
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("python3", "python3"),
        ("curl", "curl"),
        ("timeout", "coreutils"),
        ("node", "nodejs"),
        ("chromium", "chromium"),
    ] {
        if !on_path(tool) {
            return Err(format!("needs `{tool}` (apt install {pkg})"));
        }
    }
    node_flags()
}

/// The LAN host's traffic: a TCP connection to the echo service, reported as
/// `tcp SPORT ECHO` once it is up and then held open, and a varying stream of UDP echo
/// packets (a new flow every hundred) so the dashboard's charts have something to show.
/// Runs for SECONDS. args: SECONDS
const CLIENT: &str = r#"
import math, socket, sys, time
secs = float(sys.argv[1])
t = socket.create_connection(("203.0.113.1", 7), timeout=3)
t.sendall(b"keepstate-webui\n")
print("tcp", t.getsockname()[1], t.recv(100).decode().strip(), flush=True)
start = time.time()
u = None
n = 0
while time.time() - start < secs:
    if n % 100 == 0:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.setblocking(False)
    u.sendto(b"x" * 200, ("203.0.113.1", 7))
    try:
        while True:
            u.recv(2048)
    except BlockingIOError:
        pass
    n += 1
    time.sleep(1 / (30 + 25 * math.sin((time.time() - start) / 4)))
"#;

/// The lab and what this test started in it; dropping it stops them all and takes the lab
/// down (processes first: a namespace being deleted does not stop what runs in it).
struct Run {
    prefix: String,
    log: PathBuf,
    profile: PathBuf,
    children: Vec<Child>,
}

impl Run {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// `args` in the `role` namespace, killed after `secs`, in a process group of its own
    /// so that the guard can stop all of it.
    fn command(&self, role: &str, secs: u64, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(role), "timeout", "-k", "2"])
            .arg(secs.to_string())
            .args(args)
            .stdin(Stdio::null())
            .process_group(0);
        c
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for c in &mut self.children {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill has no memory preconditions; the group is one this test
                // created (process_group(0)) and has not yet reaped.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = c.wait();
        }
        let _ = keepstate()
            .args(["lab", "down", "--prefix", &self.prefix])
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Width and height of a PNG file, from its header.
fn png_size(path: &Path) -> Option<(u32, u32)> {
    let b = std::fs::read(path).ok()?;
    if b.get(..8)? != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

#[test]
fn webui() {
    let node = match prerequisites() {
        Ok(flags) => flags,
        Err(why) => {
            eprintln!("SKIPPED webui: {why}");
            return;
        }
    };
    let dwell: u64 = std::env::var("KEEPSTATE_WEBUI_DWELL_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
        .min(240);
    let shots = std::env::var_os("KEEPSTATE_WEBUI_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("webui-screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&shots).unwrap();
    let started = Instant::now();

    let prefix = format!("ksw{}", std::process::id());
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // The guard exists before `lab up` runs, so even a half-built lab is taken down.
    let mut run = Run {
        log: tmp.join(format!("{prefix}-daemon.log")),
        profile: std::env::temp_dir().join(format!("{prefix}-chromium")),
        prefix,
        children: Vec::new(),
    };
    let out = keepstate()
        .args([
            "lab",
            "up",
            "--router",
            "keepstate",
            "--prefix",
            &run.prefix,
        ])
        .arg("--log")
        .arg(&run.log)
        .arg("--config")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml"))
        .stdin(Stdio::null())
        .output()
        .expect("run keepstate lab up");
    assert!(
        out.status.success(),
        "keepstate lab up failed:\n{}",
        text(&out)
    );

    // Chromium first: it takes the longest to start, and the driver waits for it.
    let chrome_log = tmp.join(format!("{}-chromium.log", run.prefix));
    let profile = format!("--user-data-dir={}", run.profile.display());
    let devtools = format!("--remote-debugging-port={DEVTOOLS_PORT}");
    let life = 60 + dwell;
    let log = std::fs::File::create(&chrome_log).unwrap();
    let chrome = run
        .command(
            "router",
            life,
            &[
                "chromium",
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,800",
                &profile,
                &devtools,
                "about:blank",
            ],
        )
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start chromium");
    run.children.push(chrome);

    // The LAN host's connection, up before the browser looks.
    let secs = (life - 5).to_string();
    let mut client = run
        .command("lan1", life, &["python3", "-c", CLIENT, &secs])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the LAN client");
    let stdout = client.stdout.take().unwrap();
    run.children.push(client);
    // Bounded: the client's connect and read time out after 3 s, and it exits.
    let mut first = String::new();
    let _ = BufReader::new(stdout).read_line(&mut first);
    let sport = match first.split_whitespace().collect::<Vec<_>>()[..] {
        ["tcp", port, "keepstate-webui"] => port.to_string(),
        _ => panic!("the LAN client did not connect to the echo service: {first:?}"),
    };

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webui/webui.mjs");
    let shots_arg = shots.display().to_string();
    let dwell_arg = dwell.to_string();
    let mut argv = vec!["node"];
    argv.extend_from_slice(&node);
    argv.extend([
        script.to_str().unwrap(),
        "--port",
        DEVTOOLS_PORT,
        "--base",
        "http://127.0.0.1:9180",
        "--out",
        &shots_arg,
        "--sport",
        &sport,
        "--dwell",
        &dwell_arg,
    ]);
    let out = run
        .command("router", 45 + dwell, &argv)
        .output()
        .expect("run the driver");
    let driver = text(&out);
    eprintln!("{driver}");
    assert!(
        out.status.success() && driver.lines().any(|l| l == "PASS"),
        "the browser test failed:\n{driver}\nChromium said (its D-Bus complaints left out):\n{}",
        std::fs::read_to_string(&chrome_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("dbus"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Independently of the browser: the router forgot the connection.
    let q = format!("http://127.0.0.1:9180/api/v1/connections?proto=tcp&dport=7&sport={sport}");
    let out = Command::new("ip")
        .args(["netns", "exec", &run.ns("router")])
        .args([
            "timeout",
            "5",
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "3",
            &q,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("GET {q}: {e}: {}", text(&out)));
    assert_eq!(
        body["items"].as_array().map(Vec::len),
        Some(0),
        "the killed connection is still in the table: {body}"
    );

    for (name, size) in [
        ("dashboard.png", (1280, 800)),
        ("dashboard-dark.png", (1280, 800)),
        ("connections.png", (1280, 800)),
        ("connections-phone.png", (375, 800)),
        ("firewall.png", (1280, 800)),
        ("logs.png", (1280, 800)),
    ] {
        assert_eq!(png_size(&shots.join(name)), Some(size), "{name}");
    }
    let _ = std::fs::remove_file(&chrome_log);
    eprintln!(
        "webui: passed in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
    drop(run);
}
