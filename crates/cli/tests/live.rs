//! Live tests: real traffic through the demo network of `keepstate lab`, between network
//! namespaces this test creates (`lab up --prefix kst<pid><n>`) and removes (`lab down`, also
//! on failure, from a drop guard). Every test runs against both routers: the kernel with
//! nftables (which validates the tests themselves) and `keepstate run`.
//!
//! Needs root and `ip`, `python3`, `curl`, `nft`, `ping`; without them each test prints
//! `SKIPPED <test>: <why>` and passes. Every command is bounded by `timeout`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Router {
    Kernel,
    Keepstate,
}

impl Router {
    fn name(self) -> &'static str {
        match self {
            Router::Kernel => "kernel",
            Router::Keepstate => "keepstate",
        }
    }
}

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

/// Why this test cannot run here, if it cannot.
fn skip_reason(router: Router) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces)".into());
    }
    for (tool, pkg) in [
        ("ip", "iproute2"),
        ("python3", "python3"),
        ("curl", "curl"),
        ("nft", "nftables"),
        ("ping", "iputils-ping"),
        ("timeout", "coreutils"),
    ] {
        if !on_path(tool) {
            return Some(format!("needs `{tool}` (apt install {pkg})"));
        }
    }
    if router == Router::Keepstate && std::env::var_os("KEEPSTATE_LAB_DAEMON").is_none() {
        let has_run = keepstate()
            .args(["run", "--help"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_run {
            return Some("this keepstate has no `run` subcommand (the live daemon) yet".into());
        }
    }
    None
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A lab that is up; dropping it takes it down.
struct Lab {
    prefix: String,
    router: Router,
    log: PathBuf,
    up: bool,
}

impl Lab {
    /// `None` (after printing why) when the test cannot run here.
    fn start(test: &str, router: Router, extra: &[&str]) -> Option<Lab> {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml");
        Lab::start_with(test, router, &example, extra)
    }

    /// [`Lab::start`] with the router's policy file `config`.
    fn start_with(test: &str, router: Router, config: &Path, extra: &[&str]) -> Option<Lab> {
        if let Some(why) = skip_reason(router) {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
        let prefix = format!(
            "kst{}{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{prefix}-daemon.log"));
        // The guard exists before `lab up` runs, so even a half-built lab is taken down.
        let lab = Lab {
            prefix,
            router,
            log,
            up: true,
        };
        let out = keepstate()
            .args([
                "lab",
                "up",
                "--router",
                router.name(),
                "--prefix",
                &lab.prefix,
            ])
            .arg("--log")
            .arg(&lab.log)
            .arg("--config")
            .arg(config)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run keepstate lab up");
        assert!(
            out.status.success(),
            "{test}: keepstate lab up failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(lab)
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Runs `args` inside the `role` namespace, killed after `secs` if still running.
    fn exec(&self, role: &str, secs: u32, args: &[&str]) -> Output {
        self.command(role, secs, args)
            .output()
            .expect("run ip netns exec")
    }

    fn command(&self, role: &str, secs: u32, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(role), "timeout", "-k", "1"])
            .arg(secs.to_string())
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn curl(&self, role: &str, url: &str, extra: &[&str]) -> Output {
        let mut args = vec!["curl", "-sS", "--max-time", "3"];
        args.extend_from_slice(extra);
        args.push(url);
        self.exec(role, 6, &args)
    }

    fn python(&self, role: &str, script: &str, args: &[&str]) -> Output {
        let mut argv = vec!["python3", "-c", script];
        argv.extend_from_slice(args);
        self.exec(role, 10, &argv)
    }

    /// `lab down`, then what the daemon wrote (its connection table among it).
    fn down(&mut self) -> String {
        self.up = false;
        let out = keepstate()
            .args(["lab", "down", "--prefix", &self.prefix])
            .stdin(Stdio::null())
            .output()
            .expect("run keepstate lab down");
        assert!(
            out.status.success(),
            "keepstate lab down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text
    }

    /// The router's connection table as `conntrack -L` prints it, while it runs.
    fn connections(&mut self) -> String {
        match self.router {
            Router::Kernel => {
                if on_path("conntrack") {
                    text(&self.exec("router", 5, &["conntrack", "-L"]))
                } else {
                    // The kernel's own listing writes IPv6 addresses in full; conntrack-tools
                    // (and keepstate) write them compressed, as the checks expect.
                    let out = self.exec("router", 5, &["cat", "/proc/net/nf_conntrack"]);
                    compress_v6(&text(&out))
                }
            }
            // The running daemon's table through its control API (on the router
            // namespace's loopback), as conntrack-tools would print it.
            Router::Keepstate => {
                let out = self.exec(
                    "router",
                    5,
                    &[env!("CARGO_BIN_EXE_keepstate"), "conntrack", "-L"],
                );
                let listing = text(&out);
                assert!(out.status.success(), "keepstate conntrack -L: {listing}");
                assert!(
                    listing.contains("flow entries have been shown."),
                    "keepstate conntrack -L: {listing}"
                );
                listing
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.up {
            let _ = keepstate()
                .args(["lab", "down", "--prefix", &self.prefix])
                .stdin(Stdio::null())
                .output();
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A UDP probe with a given TTL (hop limit), reporting the ICMP error that comes back, as
/// traceroute does: `icmp type=T code=C from=ADDR info=N`, `reply`, or `timeout`.
/// args: DST PORT TTL
const PROBE: &str = r#"
import select, socket, struct, sys
dst, port, ttl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, 25, 1)  # IPV6_RECVERR
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
else:
    s.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
    s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
s.connect((dst, port))
s.setblocking(False)
for attempt in range(3):
    s.send(b"keepstate-probe")
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLERR)
    if not p.poll(1000):
        continue
    try:
        _, anc, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except BlockingIOError:
        print("reply")
        sys.exit(0)
    for _, _, d in anc:
        errno_, origin, typ, code, _, info, _ = struct.unpack("=IBBBBII", d[:16])
        off = d[16:]
        if origin == 3:  # SO_EE_ORIGIN_ICMP6
            frm = socket.inet_ntop(socket.AF_INET6, off[8:24])
        elif origin == 2:  # SO_EE_ORIGIN_ICMP
            frm = socket.inet_ntop(socket.AF_INET, off[4:8])
        else:
            frm = "local"
        print("icmp type=%d code=%d from=%s info=%d" % (typ, code, frm, info))
        sys.exit(0)
print("timeout")
"#;

/// Parallel TCP connects, each reported `HOST:PORT open|refused|timeout|error<N>` after at
/// most 1.5 s. args: HOST:PORT... (IPv6 as [ADDR]:PORT)
const SCAN: &str = r#"
import errno, select, socket, sys, time
pending = {}
for t in sys.argv[1:]:
    host, port = t.rsplit(":", 1)
    host = host.strip("[]")
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, int(port)))
    pending[s] = t
result = {}
deadline = time.time() + 1.5
while pending and time.time() < deadline:
    _, w, _ = select.select([], list(pending), [], max(0.0, deadline - time.time()))
    for s in w:
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        result[pending.pop(s)] = "open" if err == 0 else "refused" if err == errno.ECONNREFUSED else "error%d" % err
for t in pending.values():
    result[t] = "timeout"
for t in sys.argv[1:]:
    print(t, result[t])
"#;

/// Sends `keepstate-echo` to an echo service over udp or tcp and prints what came back:
/// `echo <data>` or `timeout`. args: udp|tcp HOST PORT
const ECHO: &str = r#"
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
if proto == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(1)
    for _ in range(3):
        s.sendto(b"keepstate-echo", (host, port))
        try:
            data, _ = s.recvfrom(100)
            print("echo", data.decode())
            sys.exit(0)
        except socket.timeout:
            pass
    print("timeout")
else:
    s = socket.create_connection((host, port), timeout=3)
    s.sendall(b"keepstate-echo")
    print("echo", s.recv(100).decode())
"#;

/// A line of a `conntrack -L` listing holding every one of `parts`.
/// `listing` with every `src=` and `dst=` IPv6 address written in its compressed form.
fn compress_v6(listing: &str) -> String {
    let word = |w: &str| {
        for key in ["src=", "dst="] {
            if let Some(a) = w.strip_prefix(key) {
                if let Ok(a) = a.parse::<std::net::Ipv6Addr>() {
                    return format!("{key}{a}");
                }
            }
        }
        w.to_string()
    };
    listing
        .lines()
        .map(|l| l.split(' ').map(word).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_kernel_listing_is_compared_with_compressed_addresses() {
    let l = "ipv6     10 tcp      6 119 TIME_WAIT src=2001:0db8:0001:0000:0000:0000:0000:0010 \
             dst=2001:0db8:fffe:0000:0000:0000:0000:0001 sport=48918 dport=80";
    let c = compress_v6(l);
    assert!(has_entry(
        &c,
        &["src=2001:db8:1::10 ", "dst=2001:db8:fffe::1 ", "dport=80"]
    ));
    assert_eq!(compress_v6("src=10.0.0.1 x"), "src=10.0.0.1 x");
}

fn has_entry(listing: &str, parts: &[&str]) -> bool {
    listing.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

fn lan_to_wan(test: &str, router: Router) {
    lan_to_wan_with(test, router, &[]);
}

fn lan_to_wan_with(test: &str, router: Router, extra: &[&str]) {
    let Some(mut lab) = Lab::start(test, router, extra) else {
        return;
    };
    // HTTP through NAT: the internet sees the router's WAN address.
    let o = lab.curl("lan1", "http://203.0.113.1/", &[]);
    let t = text(&o);
    assert!(o.status.success(), "{test}: LAN -> WAN HTTP: {t}");
    assert!(t.contains("server=wan client=203.0.113.2 "), "{test}: {t}");

    // IPv6 is routed, not translated: the server sees the LAN host itself.
    let o = lab.curl("lan1", "http://[2001:db8:fffe::1]/", &["-6", "-g"]);
    let t = text(&o);
    assert!(o.status.success(), "{test}: LAN -> WAN HTTP over IPv6: {t}");
    assert!(
        t.contains("server=wan client=2001:db8:1::10 "),
        "{test}: {t}"
    );

    // Ping out, and the replies come back; also past the gateway, via the default route.
    for dst in ["203.0.113.1", "198.51.100.1", "2001:db8:fffe::1"] {
        let o = lab.exec("lan1", 8, &["ping", "-c", "2", "-i", "0.2", "-W", "2", dst]);
        assert!(o.status.success(), "{test}: ping {dst}: {}", text(&o));
    }

    // UDP and TCP echo through NAT.
    for proto in ["udp", "tcp"] {
        let o = lab.python("lan1", ECHO, &[proto, "203.0.113.1", "7"]);
        let t = text(&o);
        assert!(
            t.contains("echo keepstate-echo"),
            "{test}: {proto} echo: {t}"
        );
    }

    let listing = lab.connections();
    assert!(
        has_entry(
            &listing,
            &["src=192.168.1.10 ", "dst=203.0.113.1 ", "dport=80 "]
        ),
        "{test}: no entry for the HTTP connection in the connection table:\n{listing}"
    );
    assert!(
        has_entry(
            &listing,
            &["src=2001:db8:1::10 ", "dst=2001:db8:fffe::1 ", "dport=80 "]
        ),
        "{test}: no entry for the IPv6 HTTP connection in the connection table:\n{listing}"
    );
    // The daemon also prints its table on the way out.
    if router == Router::Keepstate {
        let exit = lab.down();
        assert!(
            has_entry(
                &exit,
                &["src=192.168.1.10 ", "dst=203.0.113.1 ", "dport=80 "]
            ),
            "{test}: no entry for the HTTP connection in the exit listing:\n{exit}"
        );
    }
}

fn inbound_dropped(test: &str, router: Router) {
    let Some(lab) = Lab::start(test, router, &[]) else {
        return;
    };
    // The control: the WAN host does reach the router (the policy's Allow-Ping), so the
    // silence below is the firewall's doing and not a broken lab.
    let o = lab.exec("wan", 6, &["ping", "-c", "1", "-W", "2", "203.0.113.2"]);
    assert!(
        o.status.success(),
        "{test}: wan -> router ping: {}",
        text(&o)
    );

    // All at once, so the waits overlap.
    let curl4 = lab
        .command(
            "wan",
            6,
            &["curl", "-sS", "--max-time", "2", "http://192.168.1.10/"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let curl6 = lab
        .command(
            "wan",
            6,
            &[
                "curl",
                "-sS",
                "-g",
                "--max-time",
                "2",
                "http://[2001:db8:1::10]/",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let targets = [
        "203.0.113.2:22",
        "203.0.113.2:23",
        "203.0.113.2:53",
        "203.0.113.2:80",
        "203.0.113.2:443",
        "203.0.113.2:8081",
        "192.168.1.10:22",
        "192.168.1.10:80",
        "[2001:db8:fffe::2]:22",
        "[2001:db8:fffe::2]:80",
        "[2001:db8:1::10]:80",
        "[2001:db8:1::10]:443",
    ];
    let scan = lab.python("wan", SCAN, &targets);
    let scan = text(&scan);
    for t in targets {
        assert!(
            scan.lines().any(|l| l == format!("{t} timeout")),
            "{test}: port scan from wan got an answer (or none at all) from {t}:\n{scan}"
        );
    }
    for (what, child) in [("IPv4", curl4), ("IPv6", curl6)] {
        let o = child.wait_with_output().unwrap();
        // 28: curl's timeout. A refusal (7) would mean something answered.
        assert_eq!(
            o.status.code(),
            Some(28),
            "{test}: unsolicited {what} connect from wan to lan1 was not silently dropped: {}",
            text(&o)
        );
    }
}

fn icmp_errors(test: &str, router: Router) {
    let Some(lab) = Lab::start(test, router, &["--wan-mtu", "1400"]) else {
        return;
    };
    let probe = |dst: &str, port: &str, ttl: &str| {
        let o = lab.python("lan1", PROBE, &[dst, port, ttl]);
        text(&o)
    };
    // Traceroute's first hop: time exceeded (11/0, ICMPv6 3/0) from the router's LAN
    // address.
    let t = probe("203.0.113.1", "33434", "1");
    assert!(
        t.contains("icmp type=11 code=0 from=192.168.1.1 "),
        "{test}: TTL 1: {t}"
    );
    let t = probe("2001:db8:fffe::1", "33434", "1");
    assert!(
        t.contains("icmp type=3 code=0 from=2001:db8:1::1 "),
        "{test}: hop limit 1: {t}"
    );
    // A closed port on the internet: port unreachable comes back through NAT, translated
    // to the LAN host's socket.
    let t = probe("203.0.113.1", "33435", "64");
    assert!(
        t.contains("icmp type=3 code=3 from=203.0.113.1 "),
        "{test}: closed port: {t}"
    );
    let t = probe("2001:db8:fffe::1", "33435", "64");
    assert!(
        t.contains("icmp type=1 code=4 from=2001:db8:fffe::1 "),
        "{test}: closed port over IPv6: {t}"
    );

    // Path MTU: what fits the 1400-byte WAN link passes with DF; a full 1500-byte packet
    // gets "fragmentation needed" (IPv6: "packet too big") saying 1400.
    for (dst, fits, too_big) in [
        ("203.0.113.1", "1372", "1472"),
        ("2001:db8:fffe::1", "1352", "1452"),
    ] {
        let o = lab.exec(
            "lan1",
            6,
            &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", fits, dst],
        );
        assert!(
            o.status.success(),
            "{test}: {fits}-byte ping to {dst}: {}",
            text(&o)
        );
        let o = lab.exec(
            "lan1",
            6,
            &[
                "ping", "-c", "3", "-i", "0.3", "-W", "1", "-M", "do", "-s", too_big, dst,
            ],
        );
        let t = text(&o).replace("mtu = ", "mtu=");
        assert!(
            t.contains("mtu=1400"),
            "{test}: {too_big}-byte ping to {dst} with DF: no MTU 1400 report:\n{t}"
        );
    }
}

fn port_forward(test: &str, router: Router) {
    let Some(lab) = Lab::start(test, router, &[]) else {
        return;
    };
    // From the internet: reaches lan1's server, which sees the real client.
    let o = lab.curl("wan", "http://203.0.113.2:8080/", &[]);
    let t = text(&o);
    assert!(o.status.success(), "{test}: port forward from wan: {t}");
    assert!(t.contains("server=lan1 client=203.0.113.1 "), "{test}: {t}");
    // The forward is only for 203.0.113.1 (its `src_ip`): from the internet host's other
    // address it is as closed as any other port.
    let o = lab.exec(
        "wan",
        6,
        &[
            "curl",
            "-sS",
            "--max-time",
            "2",
            "--interface",
            "198.51.100.1",
            "http://203.0.113.2:8080/",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(28),
        "{test}: port forward used from outside its src_ip: {}",
        text(&o)
    );
    // From the LAN to the WAN address (reflection): reaches lan1 too, from the router's
    // LAN address, so lan1's answers go back through the router and not straight to lan2.
    let o = lab.curl("lan2", "http://203.0.113.2:8080/", &[]);
    let t = text(&o);
    assert!(o.status.success(), "{test}: hairpin from lan2: {t}");
    assert!(t.contains("server=lan1 client=192.168.1.1 "), "{test}: {t}");
}

/// A TCP echo exchange to 203.0.113.1:7: a numbered line every 50 ms for `secs` seconds,
/// each answer timed; prints `sent N received N missing N late N worst S` (late: answered
/// after more than a second). args: SECS
const STEADY_ECHO: &str = r#"
import socket, sys, time
secs = float(sys.argv[1])
s = socket.create_connection(("203.0.113.1", 7), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(0.01)
print("connected", flush=True)
sent, buf, got, late, worst, i = {}, b"", 0, 0, 0.0, 0
start = time.time()
end = start + secs
due = start
while time.time() < end or (sent and time.time() < end + 1.5):
    now = time.time()
    if now < end and now >= due:
        s.sendall(b"%d\n" % i)
        sent[i] = now
        i += 1
        due += 0.05
    try:
        data = s.recv(4096)
        if not data:
            print("closed by the peer")
            break
        buf += data
    except socket.timeout:
        pass
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        t = time.time() - sent.pop(int(line))
        got += 1
        worst = max(worst, t)
        if t > 1.0:
            late += 1
print("sent %d received %d missing %d late %d worst %.3f" % (i, got, len(sent), late, worst))
"#;

/// One TCP connection to 203.0.113.1:7: an echo, then a pause of `secs` seconds (while the
/// test reloads), then another line: prints `first ok`, then `second echo`, `second reset`
/// or `second timeout`. args: SECS
const PAUSED_ECHO: &str = r#"
import socket, sys, time
s = socket.create_connection(("203.0.113.1", 7), timeout=3)
s.sendall(b"one\n")
print("first", "ok" if s.recv(100) == b"one\n" else "bad", flush=True)
time.sleep(float(sys.argv[1]))
s.settimeout(2)
try:
    s.sendall(b"two\n")
    print("second", "echo" if s.recv(100) == b"two\n" else "closed")
except socket.timeout:
    print("second timeout")
except OSError as e:
    print("second reset", e)
"#;

/// `keepstate reload` in the router's namespace (where the control API listens).
fn reload_router(lab: &Lab) -> Output {
    lab.exec("router", 15, &[env!("CARGO_BIN_EXE_keepstate"), "reload"])
}

/// Reloads keep established connections: a steady echo exchange loses no line and none is
/// late while the policy is reloaded three times; then a policy forbidding LAN -> WAN port 7
/// removes the open connection to it, and its next packet is refused.
#[test]
fn keepstate_reload_keeps_connections() {
    let test = "keepstate_reload_keeps_connections";
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/home-router.toml");
    let config = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "reload-{}-{}.toml",
        std::process::id(),
        SEQ.load(Ordering::SeqCst)
    ));
    let original = std::fs::read_to_string(&example).unwrap();
    std::fs::write(&config, &original).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(config.clone());
    let Some(mut lab) = Lab::start_with(test, Router::Keepstate, &config, &[]) else {
        return;
    };

    let client = lab
        .command("lan1", 15, &["python3", "-c", STEADY_ECHO, "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    for n in 0..3 {
        let o = reload_router(&lab);
        let t = text(&o);
        assert!(o.status.success(), "{test}: reload {n}: {t}");
        assert!(t.contains("policy reloaded"), "{test}: reload {n}: {t}");
        assert!(t.contains("0 no longer allowed"), "{test}: reload {n}: {t}");
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    let o = client.wait_with_output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{test}: echo client: {t}");
    let counts: Vec<u64> = t
        .lines()
        .find(|l| l.starts_with("sent "))
        .unwrap_or_else(|| panic!("{test}: echo client: {t}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // sent, received, missing, late
    assert!(counts[0] >= 60, "{test}: too few lines sent: {t}");
    assert_eq!(
        counts[1], counts[0],
        "{test}: lines lost across reloads: {t}"
    );
    assert_eq!((counts[2], counts[3]), (0, 0), "{test}: {t}");

    // A connection open while a policy forbidding it comes in goes.
    let mut client = lab
        .command("lan1", 15, &["python3", "-c", PAUSED_ECHO, "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead as _;
        let out = client.stdout.as_mut().unwrap();
        std::io::BufReader::new(out).read_line(&mut first).unwrap();
    }
    assert_eq!(first.trim(), "first ok", "{test}");
    let forbid = format!(
        "{original}\n[[rule]]\nname = \"No-Echo\"\nsrc = \"lan\"\ndest = \"wan\"\n\
         proto = \"tcp\"\ndest_port = 7\naction = \"reject\"\n"
    );
    std::fs::write(&config, forbid).unwrap();
    let o = reload_router(&lab);
    let t = text(&o);
    assert!(o.status.success(), "{test}: reload: {t}");
    assert!(
        has_entry(
            &t,
            &[
                "ESTABLISHED ",
                "src=192.168.1.10 ",
                "dst=203.0.113.1 ",
                "dport=7 "
            ]
        ),
        "{test}: the reload does not list the echo connection as removed: {t}"
    );
    // The first exchange's connection, closing (TIME_WAIT), goes too.
    assert!(t.contains("2 no longer allowed (2 removed)"), "{test}: {t}");
    let listing = lab.connections();
    assert!(
        !has_entry(&listing, &["dst=203.0.113.1 ", "dport=7 "]),
        "{test}: the echo connection is still in the table:\n{listing}"
    );
    let o = client.wait_with_output().unwrap();
    let t = format!("{first}{}", text(&o));
    assert!(t.contains("second "), "{test}: {t}");
    assert!(
        !t.contains("second echo"),
        "{test}: the connection still works: {t}"
    );

    // A file with errors is refused with its diagnostics; the policy in force stays.
    std::fs::write(
        &config,
        format!("{original}\n[[rule]]\nsrc = \"nowhere\"\n"),
    )
    .unwrap();
    let o = reload_router(&lab);
    let t = text(&o);
    assert!(!o.status.success(), "{test}: a bad file was accepted: {t}");
    let file = config.display().to_string();
    assert!(
        t.contains(&format!("{file}:")),
        "{test}: no file:line:col diagnostics: {t}"
    );
    assert!(t.contains("nowhere"), "{test}: {t}");
    let o = lab.python("lan1", ECHO, &["tcp", "203.0.113.1", "7"]);
    assert!(
        !text(&o).contains("echo keepstate-echo"),
        "{test}: the forbidding policy is no longer in force: {}",
        text(&o)
    );
}

#[test]
fn kernel_lan_to_wan() {
    lan_to_wan("kernel_lan_to_wan", Router::Kernel);
}

#[test]
fn kernel_inbound_dropped() {
    inbound_dropped("kernel_inbound_dropped", Router::Kernel);
}

#[test]
fn kernel_icmp_errors() {
    icmp_errors("kernel_icmp_errors", Router::Kernel);
}

#[test]
fn kernel_port_forward() {
    port_forward("kernel_port_forward", Router::Kernel);
}

#[test]
fn keepstate_lan_to_wan() {
    lan_to_wan("keepstate_lan_to_wan", Router::Keepstate);
}

/// The same through AF_XDP sockets (`keepstate run --io xdp`), native XDP on the veths.
#[test]
fn keepstate_lan_to_wan_xdp() {
    lan_to_wan_with(
        "keepstate_lan_to_wan_xdp",
        Router::Keepstate,
        &["--io", "xdp"],
    );
}

#[test]
fn keepstate_inbound_dropped() {
    inbound_dropped("keepstate_inbound_dropped", Router::Keepstate);
}

#[test]
fn keepstate_icmp_errors() {
    icmp_errors("keepstate_icmp_errors", Router::Keepstate);
}

#[test]
fn keepstate_port_forward() {
    port_forward("keepstate_port_forward", Router::Keepstate);
}

/// One TCP connection through NAT that lives across a restart of the router: a line echoed
/// before, then (after a line on stdin) another line echoed on the same socket, with the
/// seconds it took; after another line on stdin a third one (the test stops the router
/// first, so this one waits for TCP's retransmissions); closes after a fourth. Prints
/// `echo1 <line> <local port>`, `echo2 <line> <seconds>`, `echo3 <line> <seconds>`.
const LONG_LIVED: &str = r#"
import socket, sys, time
s = socket.create_connection(("203.0.113.1", 7), timeout=5)
def line(text):
    s.sendall(text.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        d = s.recv(100)
        if not d:
            break
        data += d
    return data.decode().strip()
print("echo1", line("before the restart"), s.getsockname()[1], flush=True)
sys.stdin.readline()
t = time.time()
s.settimeout(25)
print("echo2", line("after the restart"), "%.1f" % (time.time() - t), flush=True)
sys.stdin.readline()
t = time.time()
print("echo3", line("sent while the router is down"), "%.1f" % (time.time() - t), flush=True)
sys.stdin.readline()
"#;

/// The `conntrack -L` line of the echo connection from `port`, and its original
/// direction's packet count.
fn echo_entry(listing: &str, port: &str) -> Option<(String, u64)> {
    let sport = format!("sport={port} ");
    let line = listing.lines().find(|l| {
        l.contains("src=192.168.1.10 ") && l.contains("dport=7 ") && l.contains(&sport)
    })?;
    let packets = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("packets="))?
        .parse()
        .ok()?;
    Some((line.to_string(), packets))
}

/// `keepstate lab restart`: the daemon saves its table on SIGTERM and the new one restores
/// it, so an established, translated TCP connection carries on (TCP retransmits over the
/// gap) with its entry, state and counters as they were.
#[test]
fn keepstate_restart_keeps_connections() {
    use std::io::{BufRead as _, Write as _};
    let test = "keepstate_restart_keeps_connections";
    let Some(mut lab) = Lab::start(test, Router::Keepstate, &[]) else {
        return;
    };
    let mut client = lab
        .command("lan1", 60, &["python3", "-c", LONG_LIVED])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let port = first
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        first.starts_with("echo1 before the restart "),
        "{test}: first exchange: {first:?}"
    );
    let listing = lab.connections();
    let (entry, before) = echo_entry(&listing, &port)
        .unwrap_or_else(|| panic!("{test}: no entry for the echo connection:\n{listing}"));
    assert!(
        entry.contains("ESTABLISHED") && entry.contains("[ASSURED]"),
        "{entry}"
    );

    let out = Command::new("timeout")
        .args(["-k", "1", "60"])
        .arg(env!("CARGO_BIN_EXE_keepstate"))
        .args(["lab", "restart", "--prefix", &lab.prefix])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{test}: keepstate lab restart failed: {}\ndaemon log:\n{}",
        text(&out),
        std::fs::read_to_string(&lab.log).unwrap_or_default()
    );

    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let second = lines.next().and_then(Result::ok).unwrap_or_default();
    let log = std::fs::read_to_string(&lab.log).unwrap_or_default();
    assert!(
        second.starts_with("echo2 after the restart "),
        "{test}: the connection did not survive the restart: {second:?}\ndaemon log:\n{log}"
    );
    let secs: f64 = second.split_whitespace().last().unwrap().parse().unwrap();
    assert!(secs < 20.0, "{test}: the second exchange took {secs} s");

    // The same entry, restored and not picked up afresh (the policy's tcp_loose would do
    // that): its counters went on from where they were, with the line and its
    // acknowledgment (at least) added.
    let listing = lab.connections();
    let (entry, after) = echo_entry(&listing, &port)
        .unwrap_or_else(|| panic!("{test}: the entry is gone after the restart:\n{listing}"));
    assert!(
        entry.contains("ESTABLISHED") && entry.contains("[ASSURED]"),
        "{entry}"
    );
    assert!(
        after >= before + 2,
        "{test}: packets {before} before, {after} after: {entry}"
    );

    // Again, but with a line sent while no router runs: stop the daemon (it saves), send,
    // let a retransmission or two be lost, then start it (`lab restart` finds nothing to
    // stop). The line gets through on a retransmission.
    let state = Path::new("/run/keepstate-lab").join(&lab.prefix);
    let pid: i32 = std::fs::read_to_string(state.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill has no memory-safety preconditions; the pid is the lab's daemon.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let saves = |log: &str| log.matches("keepstate: saved ").count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while saves(&std::fs::read_to_string(&lab.log).unwrap_or_default()) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "{test}: the daemon did not stop and save"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out = Command::new("timeout")
        .args(["-k", "1", "60"])
        .arg(env!("CARGO_BIN_EXE_keepstate"))
        .args(["lab", "restart", "--prefix", &lab.prefix])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{test}: lab restart: {}", text(&out));
    let third = lines.next().and_then(Result::ok).unwrap_or_default();
    let log = std::fs::read_to_string(&lab.log).unwrap_or_default();
    assert!(
        third.starts_with("echo3 sent while the router is down "),
        "{test}: the line sent while the router was down never arrived: {third:?}\ndaemon \
         log:\n{log}"
    );
    let gap: f64 = third.split_whitespace().last().unwrap().parse().unwrap();
    assert!(
        (1.5..25.0).contains(&gap),
        "{test}: the third exchange took {gap} s"
    );
    stdin.write_all(b"done\n").unwrap();
    drop(stdin);
    let status = client.wait().unwrap();
    assert!(status.success(), "{test}: the client failed: {status}");
    assert!(
        log.contains("keepstate: saved "),
        "{test}: no save in the log:\n{log}"
    );
    let restored = log
        .lines()
        .find_map(|l| l.strip_prefix("keepstate: restored "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(restored >= 1, "{test}: nothing restored:\n{log}");
    eprintln!(
        "{test}: the second line took {secs} s, the third (sent with the router down) {gap} \
         s; {restored} connections restored"
    );
    lab.down();
}
