//! `keepstate bench`: load a capture into memory, then time only the engine over it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use keepstate_capture::Capture;
use keepstate_engine::{Config, Engine, Packet};
use keepstate_policy::config;
use keepstate_policy::firewall::{Decision, Firewall, Frame, Ingress};
use keepstate_policy::model::IpNet;
use keepstate_policy::ruleset::Verdict;

fn flood_line(net: Option<&IpNet>, f: &FloodCount, st: &keepstate_engine::Stats) -> String {
    match net {
        Some(_) => format!(
            " flood={} legit_dropped={} evicted={} refused={}",
            f.flood, f.legit_dropped, st.evicted, st.refused
        ),
        None => String::new(),
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Capture file (pcap or pcapng).
    file: PathBuf,
    /// Connection table size limit (default: 4,194,304, enough for large synthetic traces).
    #[arg(long, value_name = "N", default_value_t = 4_194_304)]
    max_connections: u32,
    /// Set aside room for N connections before the clock starts (`Engine::reserve`; with
    /// `--config`, the policy's `[tracking] reserve_connections`), as a router that knows
    /// its load does when it starts. Without it the table grows from empty while it is timed:
    /// the index is rebuilt larger as it fills and every new page of memory is a page fault.
    #[arg(long, value_name = "N")]
    reserve: Option<u32>,
    /// Packets per `process_batch` call (default: what the engine prefers); with
    /// `--config`, per `Firewall::process_batch_in_place` call (1: `process_in_place` on
    /// each packet, no look-ahead).
    #[arg(long, value_name = "N", default_value_t = keepstate_engine::Engine::PREFERRED_BATCH)]
    batch: usize,
    /// Time the whole firewall (this policy: notrack, tracking, rules, NAT) instead of the
    /// engine alone, translating frames in place as a dataplane does;
    /// each packet's ingress is the interface its source address routes to.
    #[arg(long, value_name = "POLICY.toml")]
    config: Option<PathBuf>,
    /// A baseline to compare with, as `POLICY.toml:CAPTURE` (with `--config`): both are
    /// loaded, then run in alternating slices of their traces (32 each), so that both see
    /// the same conditions on a shared machine; prints both rates and `ratio=` (this
    /// run's packets per second over the baseline's).
    #[arg(long, value_name = "POLICY.toml:CAPTURE", requires = "config")]
    against: Option<String>,
    /// Packets from this prefix are a flood (`gen synth --syn-flood` uses 100.64.0.0/10):
    /// also report how many of the other packets were dropped or found invalid
    /// (`legit_dropped=`, the target under a flood is zero) and the flood's share.
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    flood_from: Option<IpNet>,
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let addr: std::net::IpAddr = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let len = if l.is_empty() {
        IpNet::host(addr).len
    } else {
        l.parse().map_err(|e| format!("{l}: {e}"))?
    };
    IpNet::new(addr, len).ok_or_else(|| format!("{s}: prefix length too long"))
}

/// Counts legitimate packets that did not get through, and flood packets.
#[derive(Default)]
struct FloodCount {
    legit_dropped: u64,
    flood: u64,
}

impl FloodCount {
    fn add(&mut self, net: Option<&IpNet>, o: &keepstate_engine::Outcome) {
        let Some(net) = net else {
            return;
        };
        if o.meta.src.is_some_and(|a| net.contains(a)) {
            self.flood += 1;
        } else if o.verdict != keepstate_engine::Verdict::Accept
            || o.state == keepstate_engine::CtState::Invalid
        {
            self.legit_dropped += 1;
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if let (Some(against), Some(config)) = (&args.against, &args.config) {
        return compare(args, config, against);
    }
    let cap = Capture::open(&args.file)?;
    let packets = load(&cap, &args.file)?;

    let base = Config {
        max_connections: args.max_connections,
        ..crate::host::config()
    };
    let (seconds, st, extra) = match &args.config {
        None => {
            let mut engine = Engine::new(base);
            if let Some(n) = args.reserve {
                engine.reserve(n, false);
            }
            let mut out = Vec::with_capacity(args.batch);
            let mut flood = FloodCount::default();
            let start = Instant::now();
            for chunk in packets.chunks(args.batch) {
                engine.process_batch(chunk, &mut out);
                if args.flood_from.is_some() {
                    for o in &out {
                        flood.add(args.flood_from.as_ref(), o);
                    }
                }
            }
            (
                start.elapsed().as_secs_f64(),
                engine.stats().clone(),
                flood_line(args.flood_from.as_ref(), &flood, engine.stats()),
            )
        }
        Some(path) => {
            let mut fw = firewall(path, args, base)?;
            // A dataplane owns its frames and NAT rewrites them where they lie: give the
            // firewall writable copies, made before the clock starts.
            let mut arena = writable(&packets);
            let mut frames = frames(&packets, &mut arena);
            let start = Instant::now();
            let mut accepted = 0u64;
            let mut flood = FloodCount::default();
            let mut count = |d: &Decision| {
                accepted += u64::from(d.outcome.verdict == keepstate_engine::Verdict::Accept);
                flood.add(args.flood_from.as_ref(), &d.outcome);
            };
            if args.batch <= 1 {
                for f in &mut frames {
                    count(&fw.process_in_place(f.now, f.link, f.data, f.wire_len, f.ingress));
                }
            } else {
                for chunk in frames.chunks_mut(args.batch) {
                    fw.process_batch_in_place(chunk, |_, _, d| count(&d));
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            let extra = format!(
                " accepted={accepted}{}",
                flood_line(args.flood_from.as_ref(), &flood, fw.engine().stats())
            );
            (seconds, fw.engine().stats().clone(), extra)
        }
    };

    let n = packets.len();
    #[allow(clippy::cast_precision_loss)]
    let mpps = if seconds > 0.0 {
        n as f64 / seconds / 1e6
    } else {
        0.0
    };
    let per_conn = st.peak_memory.checked_div(st.peak).unwrap_or(0);
    let reserved = args
        .reserve
        .map_or(String::new(), |r| format!(" reserved={r}"));
    println!(
        "packets={n} seconds={seconds:.6} mpps={mpps:.3} connections={} bytes_per_connection={per_conn}{reserved}{extra}",
        st.peak
    );
    Ok(())
}

fn load<'c>(cap: &'c Capture, file: &std::path::Path) -> Result<Vec<Packet<'c>>> {
    let mut packets = Vec::new();
    let mut records = cap.records();
    for rec in records.by_ref() {
        let rec = rec?;
        packets.push(Packet {
            now: rec.ts,
            link: rec.link,
            data: rec.data,
            wire_len: rec.wire_len,
        });
    }
    if let Some(t) = records.truncated_tail() {
        eprintln!("keepstate: warning: {}: {t}", file.display());
    }
    Ok(packets)
}

fn firewall(path: &std::path::Path, args: &Args, base: Config) -> Result<Firewall> {
    let loaded = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut policy = loaded.policy;
    policy.tracking.max_connections = Some(args.max_connections);
    if args.reserve.is_some() {
        policy.tracking.reserve_connections = args.reserve;
    }
    Ok(Firewall::new(policy, base))
}

/// Every packet's bytes, one after another, to be rewritten in place.
fn writable(packets: &[Packet<'_>]) -> Vec<u8> {
    packets
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .collect()
}

/// The frames `packets` become in `arena` (from [`writable`]).
fn frames<'a>(packets: &[Packet<'_>], arena: &'a mut [u8]) -> Vec<Frame<'a>> {
    let mut out = Vec::with_capacity(packets.len());
    let mut rest = arena;
    for p in packets {
        let Some((data, tail)) = rest.split_at_mut_checked(p.data.len()) else {
            break;
        };
        out.push(Frame {
            now: p.now,
            link: p.link,
            data,
            wire_len: p.wire_len,
            ingress: Ingress::Unknown,
        });
        rest = tail;
    }
    out
}

/// One side of a comparison: a firewall, its frames and how far it has got.
struct Side<'a> {
    name: String,
    fw: Firewall,
    frames: Vec<Frame<'a>>,
    done: usize,
    seconds: f64,
    accepted: u64,
}

impl Side<'_> {
    /// Runs the frames up to `end`, timed.
    fn run_to(&mut self, end: usize, batch: usize) {
        let end = end.min(self.frames.len());
        let Some(slice) = self.frames.get_mut(self.done..end) else {
            return;
        };
        let mut accepted = 0u64;
        let start = Instant::now();
        for chunk in slice.chunks_mut(batch) {
            self.fw.process_batch_in_place(chunk, |_, _, d| {
                accepted += u64::from(d.verdict == Verdict::Accept);
            });
        }
        self.seconds += start.elapsed().as_secs_f64();
        self.accepted += accepted;
        self.done = end;
    }

    #[allow(clippy::cast_precision_loss)]
    fn mpps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.done as f64 / self.seconds / 1e6
        } else {
            0.0
        }
    }

    fn line(&self) -> String {
        let st = self.fw.engine().stats();
        format!(
            "{}: packets={} seconds={:.6} mpps={:.3} connections={} accepted={}",
            self.name,
            self.done,
            self.seconds,
            self.mpps(),
            st.peak,
            self.accepted
        )
    }
}

/// `--against`: this run and the baseline in alternating slices, each slice timed on its
/// own, so that both meet the same noise on a shared machine.
fn compare(args: &Args, config: &std::path::Path, against: &str) -> Result<()> {
    const SLICES: usize = 32;
    let Some((bconfig, bfile)) = against.split_once(':') else {
        bail!("--against {against}: expected POLICY.toml:CAPTURE");
    };
    let (bconfig, bfile) = (PathBuf::from(bconfig), PathBuf::from(bfile));
    let cap = Capture::open(&args.file)?;
    let packets = load(&cap, &args.file)?;
    let bcap = Capture::open(&bfile)?;
    let bpackets = load(&bcap, &bfile)?;
    let base = Config {
        max_connections: args.max_connections,
        ..crate::host::config()
    };
    let mut arena = writable(&packets);
    let mut barena = writable(&bpackets);
    let mut this = Side {
        name: format!("{}:{}", config.display(), args.file.display()),
        fw: firewall(config, args, base.clone())?,
        frames: frames(&packets, &mut arena),
        done: 0,
        seconds: 0.0,
        accepted: 0,
    };
    let mut baseline = Side {
        name: format!("{}:{}", bconfig.display(), bfile.display()),
        fw: firewall(&bconfig, args, base)?,
        frames: frames(&bpackets, &mut barena),
        done: 0,
        seconds: 0.0,
        accepted: 0,
    };
    for i in 1..=SLICES {
        let a = this.frames.len() * i / SLICES;
        let b = baseline.frames.len() * i / SLICES;
        // Who goes first alternates, so neither always finds the caches as the other left
        // them.
        if i % 2 == 0 {
            this.run_to(a, args.batch);
            baseline.run_to(b, args.batch);
        } else {
            baseline.run_to(b, args.batch);
            this.run_to(a, args.batch);
        }
    }
    let ratio = if baseline.mpps() > 0.0 {
        this.mpps() / baseline.mpps()
    } else {
        0.0
    };
    println!("baseline {}", baseline.line());
    println!("this {}", this.line());
    println!("ratio={ratio:.3}");
    Ok(())
}
