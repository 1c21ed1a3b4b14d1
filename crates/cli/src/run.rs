//! `keepstate run`: the live router. Takes over the interfaces the policy names and routes
//! between them in userspace.
//!
//! Design, in short (the README's "Live router" section has the long form):
//! - One packet socket per interface per worker, each with a TPACKET_V3 receive ring. With
//!   more than one worker the sockets of an interface join one fanout group hashed on the
//!   kernel's flow hash, so the I/O (ring reads, copies, `sendmmsg`) runs on every core.
//! - With `--io xdp`, AF_XDP sockets instead (an XDP program on each interface redirects
//!   its frames to them): one per receive queue per interface, and a worker per queue.
//! - One state: a single [`Router`] (firewall, connection table, NAT, neighbour cache)
//!   behind a lock that a worker takes once per batch of frames. Both directions of every
//!   connection, translated or not, therefore see the same entry whatever worker reads them;
//!   no handoff between workers is needed. The cost is that the tracking itself does not
//!   scale with cores; the README has the measurement.
//! - The kernel must not answer ARP, forward or reply on these interfaces behind our back:
//!   unless `--no-isolate`, each interface gets an nftables netdev ingress chain that drops
//!   every frame after the packet sockets have seen it, IPv6 off (no link-local address, no
//!   kernel neighbour discovery), ARP answers off and forwarding off. All is undone on exit.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use keepstate_dataplane::gso::Offload;
use keepstate_dataplane::linux::{
    if_info, rx_queues, set_up, IfInfo, IoError, Ring, RingConfig, XdpConfig, XdpProgram, XdpSocket,
};
use keepstate_dataplane::router::{Out, Port, Router, RouterConfig};
use keepstate_engine::{listing, DropReason, Time};
use keepstate_policy::config;
use keepstate_policy::firewall::Firewall;
use keepstate_policy::model::IfaceId;

#[derive(clap::Args)]
pub struct Args {
    /// Policy file; its `[[interface]]` sections name the interfaces to take over.
    #[arg(short, long)]
    pub config: PathBuf,
    /// Worker threads (each reads every interface through a fanout group). Default: one per
    /// core, at most 8.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Leave the kernel alone: no ingress drop, sysctls left as they are. Only for interfaces
    /// the kernel already ignores (no addresses, no IPv6); otherwise it answers ARP and
    /// neighbour solicitations and sends RSTs for connections it does not know.
    #[arg(long)]
    pub no_isolate: bool,
    /// Do not print the connection table (conntrack -L format) on exit.
    #[arg(long)]
    pub quiet_exit: bool,
    /// Where the control API listens (HTTP/JSON: connections, statistics, /metrics; what
    /// `keepstate conntrack` and `keepstate status` talk to), or `none`. Any address but
    /// loopback needs a token.
    #[arg(long, value_name = "ADDR:PORT", default_value = keepstate_control::DEFAULT_BIND)]
    pub control: String,
    /// The bearer token the control API requires (default: $KEEPSTATE_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    pub control_token: Option<String>,
    /// How frames are read and sent: `packet` (AF_PACKET with TPACKET_V3 rings, keeps GRO
    /// and TSO) or `xdp` (AF_XDP sockets fed by an XDP program; one worker per receive
    /// queue, so at most as many workers as the interface with the fewest queues has).
    #[arg(long, value_enum, default_value_t = IoKind::Packet)]
    pub io: IoKind,
    /// Keep the connection table in this file across restarts (suggested:
    /// /var/lib/keepstate/conntrack.state): restored at start, before any packet, saved on
    /// a clean stop and every --state-interval seconds, so established connections survive
    /// a restart or an upgrade. A file that cannot be read is moved aside to PATH.bad.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Seconds between saves of the connection table while running (0: only on stop).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub state_interval: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoKind {
    Packet,
    Xdp,
}

/// A worker's socket on one interface: either backend, with the same three operations.
// A few of these per worker, made once: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Sock {
    Packet(Ring),
    Xdp(XdpSocket),
}

impl Sock {
    fn fd(&self) -> libc::c_int {
        match self {
            Sock::Packet(r) => r.fd(),
            Sock::Xdp(x) => x.fd(),
        }
    }

    fn recv(
        &mut self,
        timeout_ms: i32,
        f: impl FnMut(&mut [u8], Offload),
    ) -> Result<usize, IoError> {
        match self {
            Sock::Packet(r) => r.recv(timeout_ms, f),
            Sock::Xdp(x) => x.recv(timeout_ms, f),
        }
    }

    fn send_offloaded<'a>(
        &mut self,
        frames: impl Iterator<Item = (&'a mut [u8], Offload)>,
    ) -> Result<usize, IoError> {
        match self {
            Sock::Packet(r) => r.send_offloaded(frames),
            Sock::Xdp(x) => x.send_offloaded(frames),
        }
    }
}

/// Set from the signal handlers; read by the workers between batches.
static STOP: AtomicBool = AtomicBool::new(false);
static DUMP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_stop(sig: libc::c_int) {
    // Only atomic stores: all that is async-signal-safe here.
    SIGNAL.store(u32::try_from(sig).unwrap_or(0), Ordering::Relaxed);
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_dump(_: libc::c_int) {
    DUMP.store(true, Ordering::Relaxed);
}

extern "C" fn on_reload(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

fn install_signals() {
    let stop = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let dump = on_dump as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let reload = on_reload as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handlers only store to atomics, which is async-signal-safe; `signal` is
    // called before any worker thread exists.
    unsafe {
        libc::signal(libc::SIGINT, stop);
        libc::signal(libc::SIGTERM, stop);
        libc::signal(libc::SIGUSR1, dump);
        libc::signal(libc::SIGHUP, reload);
    }
}

/// The monotonic clock as the engine's `Time`. Starts well above zero so that "a while ago"
/// arithmetic on fresh state never underflows.
struct Clock(Instant);

impl Clock {
    fn now(&self) -> Time {
        let ns = u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Time::from_nanos(ns.saturating_add(1_000_000_000_000))
    }
}

/// What `run` changed in the kernel, undone on drop (also on error paths).
struct Isolation {
    /// Sysctls we set, with the values to restore.
    sysctls: Vec<(String, String)>,
    /// Our nftables table exists.
    nft: bool,
}

/// The nftables table holding our ingress drops (netdev family: one base chain per
/// interface, run after the packet sockets have seen the frame).
const NFT_TABLE: &str = "keepstate_isolate";

impl Isolation {
    fn none() -> Isolation {
        Isolation {
            sysctls: Vec::new(),
            nft: false,
        }
    }

    fn apply(names: &[String]) -> Result<Isolation> {
        let mut iso = Isolation::none();
        for name in names {
            // No IPv6 in the kernel there: no link-local address, no neighbour discovery,
            // no router solicitations of its own. arp_ignore 8: never answer ARP there.
            // forwarding 0: the kernel routes nothing that arrives there.
            for (path, value) in [
                (format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1"),
                (format!("/proc/sys/net/ipv4/conf/{name}/arp_ignore"), "8"),
                (format!("/proc/sys/net/ipv4/conf/{name}/forwarding"), "0"),
            ] {
                let Ok(old) = std::fs::read_to_string(&path) else {
                    continue;
                };
                std::fs::write(&path, value)
                    .with_context(|| format!("interface {name}: cannot set {path} to {value}"))?;
                iso.sysctls.push((path, old.trim().to_string()));
            }
        }
        // The ingress drop: with it the kernel's stack never sees what arrives, whatever
        // addresses or sockets it has. Without nft, the sysctls above still keep it quiet
        // on interfaces without kernel addresses.
        let mut script = format!("table netdev {NFT_TABLE} {{\n");
        for (i, name) in names.iter().enumerate() {
            script.push_str(&format!(
                "  chain in{i} {{ type filter hook ingress device \"{name}\" priority -500; \
                 policy drop; }}\n"
            ));
        }
        script.push_str("}\n");
        match nft(&script) {
            Ok(()) => iso.nft = true,
            Err(e) => eprintln!(
                "keepstate: notice: no nftables ingress drop ({e:#}); relying on the \
                 interfaces having no kernel addresses, IPv6 off, arp_ignore and forwarding \
                 off"
            ),
        }
        Ok(iso)
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        if self.nft {
            if let Err(e) = nft(&format!("delete table netdev {NFT_TABLE}\n")) {
                eprintln!("keepstate: warning: removing the nftables ingress drop: {e:#}");
            }
        }
        for (path, old) in self.sysctls.iter().rev() {
            match std::fs::write(path, old) {
                // The interface went away while we ran: nothing left to restore.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("keepstate: warning: {path}: restoring {old}: {e}"),
                Ok(()) => {}
            }
        }
    }
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run `nft` (install nftables)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("writing to nft")?;
    }
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn lock(r: &Mutex<Router>) -> MutexGuard<'_, Router> {
    // A worker that panicked mid-batch leaves the router as it was between two frames of
    // that batch: still consistent, so carry on rather than take the router down.
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// One worker: a ring on every interface, read in turn, the router locked once per batch.
struct Worker {
    /// Its number, for its counters in the router (metrics per worker).
    n: usize,
    rings: Vec<(IfaceId, Sock)>,
}

impl Worker {
    fn run(mut self, router: &Mutex<Router>, clock: &Clock, last_tick: &Mutex<Time>) {
        let mut out = Out::new();
        let mut fds: Vec<libc::pollfd> = self
            .rings
            .iter()
            .map(|(_, r)| libc::pollfd {
                fd: r.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
        while !STOP.load(Ordering::Relaxed) {
            // SAFETY: `fds` is a live, correctly sized array of pollfd for the whole call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, 100) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    eprintln!("keepstate: poll: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            for i in 0..self.rings.len() {
                let ready = fds.get(i).is_some_and(|p| p.revents != 0);
                let Some((port, ring)) = self.rings.get_mut(i).filter(|_| ready) else {
                    continue;
                };
                let port = *port;
                let asked = Instant::now();
                let mut r = lock(router);
                let waited = u64::try_from(asked.elapsed().as_nanos()).unwrap_or(u64::MAX);
                let now = clock.now();
                let mut frames = 0u64;
                let got = ring.recv(0, |frame, offload| {
                    frames += 1;
                    r.handle_offloaded(now, port, frame, offload, &mut out);
                });
                let ws = r.worker_stats_mut(self.n);
                ws.batches += 1;
                ws.frames += frames;
                ws.lock_wait_ns += waited;
                drop(r);
                if let Err(e) = got {
                    eprintln!("keepstate: receive: {e}");
                }
                self.flush(&mut out);
            }
            // Timers (neighbour retries, expiry) run on whichever worker gets there first.
            let now = clock.now();
            let due = {
                let mut t = last_tick.lock().unwrap_or_else(|p| p.into_inner());
                if now.saturating_sub(*t) >= 100_000_000 {
                    *t = now;
                    true
                } else {
                    false
                }
            };
            if due {
                lock(router).tick(now, &mut out);
                self.flush(&mut out);
            }
        }
    }

    /// Sends what the router produced, one batch per egress interface.
    fn flush(&mut self, out: &mut Out) {
        if out.is_empty() {
            return;
        }
        let mut done: Vec<IfaceId> = Vec::new();
        for (port, ring) in &mut self.rings {
            let port = *port;
            // A worker may read several queues of one interface; it sends through one.
            if done.contains(&port) {
                continue;
            }
            done.push(port);
            let frames = out
                .iter_mut()
                .filter(|(p, _, _)| *p == port)
                .map(|(_, f, o)| (f, o));
            if let Err(e) = ring.send_offloaded(frames) {
                eprintln!("keepstate: send: {e}");
            }
        }
        out.clear();
    }
}

pub fn run(args: &Args) -> Result<()> {
    // The control API's address is checked before anything is taken over.
    let control_at = keepstate_control::parse_bind(&args.control).map_err(|e| anyhow!(e))?;
    let token = args
        .control_token
        .clone()
        .or_else(|| std::env::var("KEEPSTATE_TOKEN").ok());
    if let Some(at) = control_at {
        keepstate_control::check_bind(at, token.as_deref())?;
    }
    let loaded = config::load(&args.config).map_err(|errs| {
        for e in &errs.0 {
            eprintln!("{e}");
        }
        anyhow!("{}: the policy has errors", args.config.display())
    })?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let policy = loaded.policy;
    if policy.interfaces.is_empty() {
        bail!(
            "{}: no [[interface]] sections: nothing to take over",
            args.config.display()
        );
    }

    // Everything about the interfaces is checked before anything is changed.
    let mut infos: Vec<IfInfo> = Vec::new();
    for f in &policy.interfaces {
        let info = if_info(&f.name).map_err(|e| anyhow!("{e}"))?;
        if let Some(n) = f.addrs.iter().find(|n| info.kernel_addrs.contains(&n.addr)) {
            bail!(
                "address conflict: {a} is keepstate's address on {name} (in {cfg}) and the \
                 kernel's too; remove it from the kernel (`ip addr del {a}/{len} dev {name}`) \
                 so only keepstate answers for it",
                a = n.addr,
                len = n.len,
                name = f.name,
                cfg = args.config.display()
            );
        }
        if let Some(a) = info
            .kernel_addrs
            .iter()
            .find(|a| !matches!(a, IpAddr::V6(v) if v.is_unicast_link_local()))
        {
            eprintln!(
                "keepstate: warning: interface {}: the kernel has address {a} there; \
                 the ingress drop hides received traffic from it, but it may still send",
                f.name
            );
        }
        if let Some(m) = f.mac {
            if m != info.mac {
                eprintln!(
                    "keepstate: warning: interface {}: the policy says MAC {} but the \
                     interface has {}; using the interface's",
                    f.name,
                    mac_str(m),
                    mac_str(info.mac)
                );
            }
        }
        infos.push(info);
    }

    let mut workers = args
        .workers
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(8)
        })
        .max(1);

    // Rings are opened before the kernel is touched: a missing privilege fails here with
    // nothing to undo.
    if args.io == IoKind::Xdp {
        // One socket per receive queue, dealt round to the workers: a queue without a socket
        // would hand its frames to the kernel (which the isolation drops). Every worker
        // needs a socket on every interface to send there, hence no more workers than the
        // interface with the fewest queues has.
        let queues = infos.iter().map(rx_queues).min().unwrap_or(1);
        if workers > queues as usize {
            eprintln!(
                "keepstate: notice: --io xdp runs one worker per receive queue; the \
                 interfaces have {queues}, so {queues} worker{}",
                if queues == 1 { "" } else { "s" }
            );
            workers = queues as usize;
        }
    }
    let mut all: Vec<Worker> = (0..workers)
        .map(|n| Worker {
            n,
            rings: Vec::new(),
        })
        .collect();
    for (i, info) in infos.iter().enumerate() {
        if args.io == IoKind::Xdp {
            let iface = IfaceId::try_from(i).map_err(|_| anyhow!("too many interfaces"))?;
            let cfg = XdpConfig::default();
            let prog = XdpProgram::attach(info, &cfg).map_err(|e| anyhow!("{e}"))?;
            let mut zero_copy = false;
            for q in 0..prog.queues() {
                let sock = XdpSocket::open_on(&prog, info, q, &cfg).map_err(|e| anyhow!("{e}"))?;
                zero_copy = sock.zero_copy();
                if let Some(w) = all.get_mut(q as usize % workers) {
                    w.rings.push((iface, Sock::Xdp(sock)));
                }
            }
            eprintln!(
                "keepstate: interface {}: AF_XDP, {} XDP, {}",
                info.name,
                prog.mode(),
                if zero_copy { "zero-copy" } else { "copy mode" }
            );
            continue;
        }
        let iface = IfaceId::try_from(i).map_err(|_| anyhow!("too many interfaces"))?;
        let group =
            u16::try_from((std::process::id().wrapping_add(info.ifindex)) & 0xffff).unwrap_or(0);
        let cfg = RingConfig {
            fanout_group: (workers > 1).then_some(group),
            promiscuous: true,
            ..RingConfig::default()
        };
        for w in &mut all {
            let ring = Ring::open(info, &cfg).map_err(|e| anyhow!("{e}"))?;
            w.rings.push((iface, Sock::Packet(ring)));
        }
    }

    let names: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
    let isolation = if args.no_isolate {
        Isolation::none()
    } else {
        Isolation::apply(&names)?
    };
    for info in &infos {
        if !info.up {
            set_up(&info.name).map_err(|e| anyhow!("{e}"))?;
        }
    }

    let ports: Vec<Port> = infos
        .iter()
        .enumerate()
        .filter_map(|(i, info)| {
            Some(Port {
                iface: IfaceId::try_from(i).ok()?,
                name: info.name.clone(),
                mac: info.mac,
                mtu: u16::try_from(info.mtu).unwrap_or(u16::MAX),
            })
        })
        .collect();
    let reserve = policy.tracking.reserve_connections;
    let fw = Firewall::new(policy, crate::host::config());
    if let Some(n) = reserve {
        eprintln!(
            "keepstate: room reserved for {n} connections: the table holds {} MiB",
            fw.engine().memory_bytes() >> 20
        );
    }
    let router = Arc::new(Mutex::new(Router::new(fw, RouterConfig::new(ports))));
    let clock = Arc::new(Clock(Instant::now()));
    let last_tick = Arc::new(Mutex::new(clock.now()));
    let saver = match &args.state_file {
        Some(path) => {
            state_file::restore(&router, path, clock.now());
            Some(state_file::saver(
                router.clone(),
                clock.clone(),
                path.clone(),
                args.state_interval,
            )?)
        }
        None => None,
    };
    let control = match control_at {
        Some(at) => {
            // For `GET /api/v1/events` (keepstate conntrack -E).
            lock(&router)
                .firewall_mut()
                .engine_mut()
                .set_events(keepstate_control::events::ENGINE_CAPACITY);
            let c = clock.clone();
            let server = keepstate_control::serve_with(
                at,
                token,
                router.clone(),
                move || c.now(),
                Some(args.config.clone()),
            )?;
            eprintln!("keepstate: control API on http://{}", server.addr());
            Some(server)
        }
        None => None,
    };

    install_signals();
    eprintln!(
        "keepstate: routing between {} with {workers} worker{} (SIGINT/SIGTERM stops, SIGUSR1 \
         prints the connection table, SIGHUP reloads the policy)",
        names.join(", "),
        if workers == 1 { "" } else { "s" }
    );

    let mut handles = Vec::new();
    for (n, w) in all.into_iter().enumerate() {
        let (router, clock, last_tick) = (router.clone(), clock.clone(), last_tick.clone());
        let h = std::thread::Builder::new()
            .name(format!("keepstate-w{n}"))
            .spawn(move || w.run(&router, &clock, &last_tick))
            .context("cannot start a worker thread")?;
        handles.push(h);
    }

    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if DUMP.swap(false, Ordering::Relaxed) {
            print_table(&mut lock(&router), clock.now());
        }
        if RELOAD.swap(false, Ordering::Relaxed) {
            reload(&router, &clock, &args.config);
        }
        // Drop log lines rules asked for, written without holding the router.
        let lines = lock(&router).take_log_lines();
        for l in lines {
            eprintln!("keepstate: {l}");
        }
    }
    for h in handles {
        if h.join().is_err() {
            eprintln!("keepstate: a worker thread panicked");
        }
    }
    if let (Some(path), Some(saver)) = (&args.state_file, saver) {
        state_file::finish(saver, &router, path, clock.now());
    }
    drop(control);
    drop(isolation);

    let mut r = lock(&router);
    if !args.quiet_exit {
        print_table(&mut r, clock.now());
    }
    print_summary(&r);
    let sig = SIGNAL.load(Ordering::Relaxed);
    eprintln!("keepstate: stopped (signal {sig}), interfaces given back to the kernel");
    Ok(())
}

/// SIGHUP: the policy file read again and put in force, the connection table kept (see
/// `keepstate_control::reload_file`); the outcome goes to standard error.
fn reload(router: &Mutex<Router>, clock: &Clock, path: &std::path::Path) {
    match keepstate_control::reload_file(router, &|| clock.now(), path, false) {
        Ok(done) => {
            for w in &done.warnings {
                eprintln!("{w}");
            }
            let r = &done.report;
            eprintln!(
                "keepstate: reloaded {}: {} connections checked, {} no longer allowed and \
                 removed, {} in the table",
                path.display(),
                r.checked,
                r.removed,
                r.kept
            );
            for c in r.listed.iter().take(keepstate_control::RELOAD_REPORT) {
                eprintln!("keepstate: removed: {}", listing::conntrack_line(c));
            }
            for n in &r.notes {
                eprintln!("keepstate: note: {n}");
            }
        }
        Err(e) => {
            for d in &e.diagnostics {
                eprintln!("{d}");
            }
            eprintln!(
                "keepstate: reload of {} refused: {}; the running policy stays in force",
                path.display(),
                e.message
            );
        }
    }
}

/// The table as `conntrack -L` prints it, at `now`: expiry is lazy (an entry goes when its
/// slot is next looked at), so entries past their time are swept first, or an idle router
/// would list them with the time they had at its last packet.
fn print_table(r: &mut Router, now: Time) {
    r.firewall_mut().engine_mut().expire(now);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let conns = r.firewall().connections();
    for c in &conns {
        let _ = writeln!(out, "{}", listing::conntrack_line(c));
    }
    let _ = out.flush();
    eprintln!(
        "conntrack v1.4 (keepstate): {} flow entries have been shown.",
        conns.len()
    );
}

fn print_summary(r: &Router) {
    let s = r.stats();
    eprintln!(
        "keepstate: forwarded {} packets ({} of them TCP/UDP super-frames passed on whole, {} \
         cut into segments here), {} for the router itself",
        s.forwarded, s.gso_forwarded, s.gso_segmented, s.local
    );
    for reason in DropReason::ALL {
        let n = s.dropped.get(reason.index()).copied().unwrap_or(0);
        if n > 0 {
            eprintln!("keepstate: dropped {n} {}", reason.name());
        }
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `--state-file`: the connection table kept in a file across restarts.
mod state_file {
    use std::fs;
    use std::io::{BufReader, Write as _};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use anyhow::{Context, Result};
    use keepstate_dataplane::router::Router;
    use keepstate_engine::Time;

    use super::{lock, Clock, STOP};

    fn wall_clock() -> Option<u64> {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs())
    }

    fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// Restores the table before any packet is handled. A missing file is a first start;
    /// a file that cannot be restored is moved aside (for a look later) and the router
    /// starts empty rather than not at all.
    pub(super) fn restore(router: &Mutex<Router>, path: &Path, now: Time) {
        let file = match fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "keepstate: no saved connection table at {}: starting empty",
                    path.display()
                );
                return;
            }
            Err(e) => {
                eprintln!(
                    "keepstate: warning: cannot read the saved connection table {}: {e}; \
                     starting empty",
                    path.display()
                );
                return;
            }
        };
        let mut r = lock(router);
        let got = r
            .firewall_mut()
            .restore_state(now, wall_clock(), &mut BufReader::new(file));
        drop(r);
        match got {
            Ok(rep) => {
                let age = match (rep.saved_at, wall_clock()) {
                    (Some(s), Some(w)) => format!(", saved {} s ago", w.saturating_sub(s)),
                    _ => String::new(),
                };
                eprintln!(
                    "keepstate: restored {} connections from {}{age}; skipped {} ({} expired, \
                     {} over the table limit, {} already present)",
                    rep.restored,
                    path.display(),
                    rep.skipped(),
                    rep.expired,
                    rep.full,
                    rep.conflicts
                );
            }
            Err(e) => {
                let bad = with_suffix(path, ".bad");
                let kept = match fs::rename(path, &bad) {
                    Ok(()) => format!("moved to {}", bad.display()),
                    Err(m) => format!("could not be moved to {}: {m}", bad.display()),
                };
                eprintln!(
                    "keepstate: warning: the saved connection table {} is unusable ({e}); \
                     starting empty (the file {kept})",
                    path.display()
                );
            }
        }
    }

    /// Saves the table: written to memory under the router lock (one quick pass), then to
    /// a temporary file that is synced and renamed over the old one, so a crash at any
    /// moment leaves the previous table or the new one, never half of one.
    pub(super) fn save(router: &Mutex<Router>, path: &Path, now: Time) -> Result<usize> {
        let mut buf = Vec::new();
        let n = lock(router)
            .firewall()
            .save_state(now, wall_clock(), &mut buf)
            .context("serialise the connection table")?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let tmp = with_suffix(path, ".tmp");
        let mut f = fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        f.write_all(&buf)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("write {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, path)
            .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
        // The rename itself is durable once the directory is synced.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(n)
    }

    /// A thread that saves every `interval` seconds until the router stops.
    pub(super) fn saver(
        router: Arc<Mutex<Router>>,
        clock: Arc<Clock>,
        path: PathBuf,
        interval: u64,
    ) -> Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("keepstate-save".into())
            .spawn(move || {
                let every = Duration::from_secs(interval);
                let mut last = Instant::now();
                while !STOP.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if interval == 0 || last.elapsed() < every {
                        continue;
                    }
                    last = Instant::now();
                    if let Err(e) = save(&router, &path, clock.now()) {
                        eprintln!("keepstate: warning: saving the connection table: {e:#}");
                    }
                }
            })
            .context("cannot start the state saving thread")
    }

    /// The last save, once the workers have stopped.
    pub(super) fn finish(saver: JoinHandle<()>, router: &Mutex<Router>, path: &Path, now: Time) {
        if saver.join().is_err() {
            eprintln!("keepstate: the state saving thread panicked");
        }
        match save(router, path, now) {
            Ok(n) => eprintln!("keepstate: saved {n} connections to {}", path.display()),
            Err(e) => eprintln!("keepstate: warning: saving the connection table: {e:#}"),
        }
    }
}
