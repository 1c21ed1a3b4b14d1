//! `keepstate lab`: a demo network in network namespaces, with keepstate (or, as a baseline,
//! the kernel with nftables) as the router between a LAN and a pretend internet.
//!
//! ```text
//!   <p>-lan1 eth0 ─┐
//!                  ├─ <p>-sw (bridge br0) ─ lan0 <p>-router wan0 ─ eth0 <p>-wan
//!   <p>-lan2 eth0 ─┘
//!      192.168.1.0/24, 2001:db8:1::/64          203.0.113.0/24, 2001:db8:fffe::/64
//! ```
//!
//! Everything lives in namespaces named after a prefix, so labs with different prefixes
//! (parallel tests) never collide, and `lab down` finds all of a lab from its prefix and
//! the state directory `/run/keepstate-lab/<prefix>/`.
//!
//! With `--router keepstate` the router is `<this program> run --config FILE`, or
//! `$KEEPSTATE_LAB_DAEMON run --config FILE` when that environment variable is set.

mod proc;
mod topo;

use std::fs;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use topo::RouterKind;

/// Where `lab up` records what it started, so `lab down` (another process) can stop it.
pub const STATE_ROOT: &str = "/run/keepstate-lab";
/// In the state directory: the daemon's connection table (`run --state-file`), and its
/// command line (NUL-separated) for `lab restart`.
const STATE_FILE: &str = "conntrack.state";
const ARGV_FILE: &str = "daemon.argv";

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<LabCmd>,
    #[command(flatten)]
    up: UpArgs,
}

#[derive(clap::Subcommand)]
enum LabCmd {
    /// Build the lab and return, leaving it (and the keepstate daemon) running.
    Up(UpArgs),
    /// Stop what `lab up` started and delete the lab's namespaces (fine if already gone).
    Down(DownArgs),
    /// Restart the keepstate daemon of a lab `lab up` built: SIGTERM (it saves its
    /// connection table), then the same command again (which restores it), then wait until
    /// it answers. Connections through the router survive.
    Restart(DownArgs),
}

#[derive(clap::Args, Clone)]
pub struct UpArgs {
    /// Prefix of every namespace name (`<prefix>-router`, `<prefix>-lan1`...).
    #[arg(long, default_value = "ks")]
    prefix: String,
    /// What routes: keepstate (`keepstate run` on lan0/wan0) or the kernel with nftables.
    #[arg(long, value_enum, default_value_t = RouterKind::Keepstate)]
    router: RouterKind,
    /// The policy `keepstate run` gets (keepstate router only).
    #[arg(
        long,
        value_name = "POLICY.toml",
        default_value = "examples/home-router.toml"
    )]
    config: PathBuf,
    /// MTU of the WAN link (both ends), to see path MTU discovery at work.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1280..=9000))]
    wan_mtu: Option<u32>,
    /// Where the daemon's output goes (default: the lab's state directory, which `lab down`
    /// deletes). The daemon prints its connection table there when it stops.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Worker threads for `keepstate run` (its default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// The I/O `keepstate run` uses: `packet` (its default) or `xdp`.
    #[arg(long, value_enum)]
    io: Option<crate::run::IoKind>,
}

#[derive(clap::Args)]
struct DownArgs {
    /// Prefix the lab was built with.
    #[arg(long, default_value = "ks")]
    prefix: String,
}

pub fn run(args: &Args) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("keepstate lab needs root (it creates network namespaces): run it with sudo");
        std::process::exit(2);
    }
    install_signal_handlers();
    match &args.cmd {
        Some(LabCmd::Up(up)) => {
            let lab = up_lab(up)?;
            print_intro(&lab, false);
            Ok(())
        }
        Some(LabCmd::Down(d)) => {
            check_prefix(&d.prefix)?;
            down(&d.prefix)
        }
        Some(LabCmd::Restart(d)) => {
            check_prefix(&d.prefix)?;
            restart(&d.prefix)
        }
        None => foreground(&args.up),
    }
}

/// A lab that is up.
pub struct Lab {
    prefix: String,
    router: RouterKind,
    log: Option<PathBuf>,
    /// The `keepstate run` process when this process started it and still holds it.
    daemon: Option<Child>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    // Only an atomic store: nothing else is async-signal-safe here.
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, handler as libc::sighandler_t);
        }
    }
}

/// Fails once Ctrl-C (or SIGTERM) arrived, so a build in progress stops and tears down.
fn check_interrupted() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn check_prefix(p: &str) -> Result<()> {
    let ok = !p.is_empty()
        && p.len() <= 32
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        bail!("--prefix {p:?}: use 1 to 32 letters, digits, '-' or '_'");
    }
    Ok(())
}

fn state_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(prefix)
}

/// Builds the lab; on any failure tears down what was built and returns the error.
pub fn up_lab(args: &UpArgs) -> Result<Lab> {
    check_prefix(&args.prefix)?;
    topo::check_tools(args.router)?;
    let existing = topo::existing_namespaces(&args.prefix);
    if !existing.is_empty() {
        bail!(
            "lab {p:?} is already up (namespaces {}); take it down first with `keepstate lab down --prefix {p}`",
            existing.join(", "),
            p = args.prefix
        );
    }
    let state = state_dir(&args.prefix);
    // Left over from a lab whose namespaces are gone: nothing in it is alive.
    let _ = fs::remove_dir_all(&state);
    fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
    match build(args, &state) {
        Ok(lab) => Ok(lab),
        Err(e) => {
            eprintln!(
                "keepstate lab: building {:?} failed; tearing down",
                args.prefix
            );
            if let Err(d) = down_quiet(&args.prefix) {
                eprintln!("keepstate lab: teardown: {d:#}");
            }
            Err(e)
        }
    }
}

fn build(args: &UpArgs, state: &Path) -> Result<Lab> {
    let p = args.prefix.as_str();
    let config = match args.router {
        RouterKind::Keepstate => Some(fs::canonicalize(&args.config).with_context(|| {
            format!(
                "policy file {} (run from the repository root, or give --config)",
                args.config.display()
            )
        })?),
        RouterKind::Kernel => None,
    };
    let macs = match &config {
        Some(c) => topo::router_macs(c)?,
        None => topo::RouterMacs::default(),
    };
    write_info(state, "router", args.router.name())?;
    topo::build(p, args.router, &macs, args.wan_mtu)?;
    check_interrupted()?;

    let script = state.join("servers.py");
    fs::write(&script, include_str!("lab/servers.py"))
        .with_context(|| format!("write {}", script.display()))?;
    let mut waits = Vec::new();
    for (role, label, echo) in [("lan1", "lan1", false), ("wan", "wan", true)] {
        let ready = state.join(format!("{label}.ready"));
        let log = state.join(format!("{label}-server.log"));
        let mut argv = vec![
            "python3".to_string(),
            script.display().to_string(),
            ready.display().to_string(),
            label.to_string(),
        ];
        if echo {
            argv.push("echo".into());
        }
        let child = proc::spawn_in(&topo::ns(p, role), &argv, &log)?;
        proc::record(state, &format!("server-{label}"), child.id())?;
        waits.push((child, ready, log, label));
    }
    for (mut child, ready, log, label) in waits {
        proc::wait_for_file(&mut child, &ready, Duration::from_secs(10))
            .with_context(|| format!("{label} web server: {}", proc::tail(&log, 20)))?;
    }
    check_interrupted()?;

    let mut lab = Lab {
        prefix: p.to_string(),
        router: args.router,
        log: None,
        daemon: None,
    };
    if let Some(config) = config {
        let log = match &args.log {
            Some(l) => l.clone(),
            None => state.join("daemon.log"),
        };
        // The daemon is this program's `run` unless KEEPSTATE_LAB_DAEMON names another
        // (a release build, or a stand-in when testing the lab itself).
        let exe = match std::env::var_os("KEEPSTATE_LAB_DAEMON") {
            Some(d) => PathBuf::from(d),
            None => std::env::current_exe().context("find this program")?,
        };
        let mut argv = vec![
            exe.display().to_string(),
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ];
        if let Some(n) = args.workers {
            argv.extend(["--workers".into(), n.to_string()]);
        }
        if let Some(io) = args.io {
            let io = match io {
                crate::run::IoKind::Packet => "packet",
                crate::run::IoKind::Xdp => "xdp",
            };
            argv.extend(["--io".into(), io.into()]);
        }
        // Kept across `lab restart`, and deleted with the lab.
        argv.extend([
            "--state-file".into(),
            state.join(STATE_FILE).display().to_string(),
        ]);
        fs::write(state.join(ARGV_FILE), argv.join("\0"))
            .with_context(|| format!("write {}", state.join(ARGV_FILE).display()))?;
        let child = proc::spawn_in(&topo::ns(p, "router"), &argv, &log)?;
        let pid = child.id();
        proc::record(state, "daemon", pid)?;
        write_info(state, "daemon_pid", &pid.to_string())?;
        write_info(state, "log", &log.display().to_string())?;
        lab.log = Some(log);
        lab.daemon = Some(child);
    }
    wait_answering(&mut lab)?;
    Ok(lab)
}

/// Waits until the router answers ping on both sides: then ARP/ND, routing and the policy's
/// input rules work, and the lab is usable.
fn wait_answering(lab: &mut Lab) -> Result<()> {
    let p = lab.prefix.clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    for (from, to) in [("lan1", "192.168.1.1"), ("wan", "203.0.113.2")] {
        loop {
            check_interrupted()?;
            if let Some(d) = lab.daemon.as_mut() {
                if let Some(status) = d.try_wait().context("wait for keepstate run")? {
                    bail!(
                        "`keepstate run` exited ({status}) before answering; its output:\n{}",
                        lab.log_tail()
                    );
                }
            }
            let ok = topo::ping_once(&topo::ns(&p, from), to)?;
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the router did not answer ping from {p}-{from} to {to} within 15 s{}",
                    match lab.router {
                        RouterKind::Keepstate =>
                            format!("; `keepstate run`'s output:\n{}", lab.log_tail()),
                        RouterKind::Kernel => String::new(),
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

impl Lab {
    fn log_tail(&self) -> String {
        match &self.log {
            Some(l) => proc::tail(l, 40),
            None => String::new(),
        }
    }
}

fn write_info(state: &Path, key: &str, value: &str) -> Result<()> {
    let path = state.join("info");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(f, "{key}={value}").with_context(|| format!("write {}", path.display()))
}

fn print_intro(lab: &Lab, foreground: bool) {
    let p = &lab.prefix;
    println!("keepstate lab {p:?} is up, router: {}", lab.router.name());
    if let (Some(d), Some(log)) = (&lab.daemon, &lab.log) {
        println!(
            "  daemon: `keepstate run` pid {} in {p}-router, output in {}",
            d.id(),
            log.display()
        );
    }
    println!(
        "
  {p}-lan1   192.168.1.10  2001:db8:1::10   web server :80
  {p}-lan2   192.168.1.11  2001:db8:1::11
  {p}-router lan0 192.168.1.1 2001:db8:1::1 | wan0 203.0.113.2 2001:db8:fffe::2
  {p}-wan    203.0.113.1 198.51.100.1 2001:db8:fffe::1   web server :80, echo tcp+udp :7
  {p}-sw     the LAN switch (bridge br0)

Try:
  ip netns exec {p}-lan1 curl http://203.0.113.1/                    LAN -> internet (NAT)
  ip netns exec {p}-lan1 curl -6 'http://[2001:db8:fffe::1]/'        IPv6, no NAT
  ip netns exec {p}-lan1 ping -c 3 198.51.100.1                      via the default route
  ip netns exec {p}-lan1 ping -c 3 -t 1 203.0.113.1                  time exceeded from 192.168.1.1
  ip netns exec {p}-wan curl http://203.0.113.2:8080/                port forward to {p}-lan1
  ip netns exec {p}-lan2 curl http://203.0.113.2:8080/               the same from the LAN (reflection)
  ip netns exec {p}-wan curl --max-time 2 http://192.168.1.10/       unsolicited: dropped"
    );
    match lab.router {
        RouterKind::Kernel => println!("  ip netns exec {p}-router conntrack -L                    the kernel's connection table"),
        RouterKind::Keepstate => {
            // The binary by its path: `ip netns exec` keeps PATH, which may not have it.
            let exe = std::env::current_exe()
                .map(|e| e.display().to_string())
                .unwrap_or_else(|_| "keepstate".into());
            println!(
                "  ip netns exec {p}-router {exe} conntrack -L
                                                                    keepstate's connection table
  ip netns exec {p}-router {exe} status
                                                                    its counters, top drops
  ip netns exec {p}-router curl -s 127.0.0.1:9180/metrics          Prometheus metrics
  ip netns exec {p}-router chromium --no-sandbox http://127.0.0.1:9180/
                                                                    the web interface"
            )
        }
    }
    if foreground {
        println!("\nCtrl-C stops the lab and deletes its namespaces.");
    } else {
        if lab.router == RouterKind::Keepstate {
            println!(
                "\n`keepstate lab restart --prefix {p}` restarts keepstate; connections through \
                 it survive."
            );
        }
        println!("\n`keepstate lab down --prefix {p}` stops it and deletes its namespaces.");
    }
}

/// `keepstate lab`: up, wait for Ctrl-C, down.
fn foreground(args: &UpArgs) -> Result<()> {
    let mut lab = up_lab(args)?;
    print_intro(&lab, true);
    let mut died = None;
    while !STOP.load(Ordering::SeqCst) {
        if let Some(d) = lab.daemon.as_mut() {
            if let Ok(Some(status)) = d.try_wait() {
                died = Some(status);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("\nkeepstate lab: stopping");
    // The daemon first, on its own, so its last words (the connection table) can be shown
    // before `down` deletes the state directory its log may be in.
    let mut problems = Vec::new();
    if let Some(d) = lab.daemon.as_mut() {
        if died.is_none() {
            if let Ok(pid) = i32::try_from(d.id()) {
                if let Err(e) = proc::stop(&[pid], Duration::from_secs(5)) {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        let _ = d.try_wait();
    }
    if let Some(log) = &lab.log {
        if died.is_some() {
            eprintln!(
                "keepstate lab: `keepstate run` exited on its own; its output:\n{}",
                lab.log_tail()
            );
        } else if args.log.is_none() {
            let text = fs::read_to_string(log).unwrap_or_default();
            println!("--- keepstate run's output ---\n{}", text.trim_end());
        } else {
            println!("keepstate run's output is in {}", log.display());
        }
    }
    if let Err(e) = down(&lab.prefix) {
        problems.push(format!("{e:#}"));
    }
    if let Some(status) = died {
        problems.insert(0, format!("`keepstate run` exited on its own ({status})"));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// `keepstate lab restart`: stops the daemon as `lab down` would (SIGTERM: it saves its
/// table), starts the command `lab up` recorded again, its output appended to the same log,
/// and waits until the router answers ping on both sides.
fn restart(prefix: &str) -> Result<()> {
    let state = state_dir(prefix);
    if topo::existing_namespaces(prefix).is_empty() {
        bail!("lab {prefix:?} is not up");
    }
    let argv_path = state.join(ARGV_FILE);
    let argv: Vec<String> = fs::read_to_string(&argv_path)
        .with_context(|| {
            format!(
                "read {} (is lab {prefix:?} routed by keepstate, and built by `lab up`?)",
                argv_path.display()
            )
        })?
        .split('\0')
        .map(String::from)
        .collect();
    if argv.first().is_none_or(String::is_empty) {
        bail!("{}: no command recorded", argv_path.display());
    }
    let info = fs::read_to_string(state.join("info")).unwrap_or_default();
    let log = info
        .lines()
        .filter_map(|l| l.strip_prefix("log="))
        .next_back()
        .map_or_else(|| state.join("daemon.log"), PathBuf::from);
    let old: Vec<i32> = proc::recorded(&state, "daemon")
        .into_iter()
        .filter(|&pid| proc::in_namespaces(pid, prefix))
        .collect();
    // As long as `lab down` gives it: time to print its table and save it.
    proc::stop(&old, Duration::from_secs(5))?;

    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("open {}", log.display()))?;
    let ns = topo::ns(prefix, "router");
    // As `proc::spawn_in`, but appending: the log keeps what the first daemon said.
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {} in {ns}", argv.join(" ")))?;
    let pid = child.id();
    let pid_file = state.join("daemon.pid");
    fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("write {}", pid_file.display()))?;
    write_info(&state, "daemon_pid", &pid.to_string())?;
    let mut lab = Lab {
        prefix: prefix.to_string(),
        router: RouterKind::Keepstate,
        log: Some(log),
        daemon: Some(child),
    };
    wait_answering(&mut lab)?;
    println!("keepstate lab {prefix:?}: daemon restarted (pid {pid})");
    Ok(())
}

/// `keepstate lab down`: stop the daemon (letting it print its table), the servers and
/// anything else left in the lab's namespaces, then delete the namespaces.
pub fn down(prefix: &str) -> Result<()> {
    let existing = topo::existing_namespaces(prefix);
    let state = state_dir(prefix);
    if existing.is_empty() && !state.exists() {
        println!("keepstate lab {prefix:?}: nothing to take down");
        return Ok(());
    }
    down_quiet(prefix)?;
    println!("keepstate lab {prefix:?}: down");
    Ok(())
}

fn down_quiet(prefix: &str) -> Result<()> {
    let state = state_dir(prefix);
    let mut problems = Vec::new();
    // The daemon first and alone, given time to print its connection table.
    for pid in proc::recorded(&state, "daemon") {
        if proc::in_namespaces(pid, prefix) {
            if let Err(e) = proc::stop(&[pid], Duration::from_secs(5)) {
                problems.push(format!("{e:#}"));
            }
        }
    }
    let mut rest = Vec::new();
    for ns in topo::existing_namespaces(prefix) {
        rest.extend(topo::pids_in(&ns));
    }
    if let Err(e) = proc::stop(&rest, Duration::from_secs(2)) {
        problems.push(format!("{e:#}"));
    }
    for ns in topo::existing_namespaces(prefix) {
        if let Err(e) = topo::delete_namespace(&ns) {
            problems.push(format!("{e:#}"));
        }
    }
    if let Err(e) = fs::remove_dir_all(&state) {
        if e.kind() != std::io::ErrorKind::NotFound {
            problems.push(format!("remove {}: {e}", state.display()));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}
