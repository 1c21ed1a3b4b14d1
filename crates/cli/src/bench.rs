//! `keepstate bench`: load a capture into memory, then time only the engine over it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use keepstate_capture::Capture;
use keepstate_engine::{Config, Engine, Packet};
use keepstate_policy::config;
use keepstate_policy::firewall::{Decision, Firewall, Frame, Ingress};
use keepstate_policy::model::IpNet;

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
    let cap = Capture::open(&args.file)?;
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
        eprintln!("keepstate: warning: {}: {t}", args.file.display());
    }

    let base = Config {
        max_connections: args.max_connections,
        ..crate::host::config()
    };
    let (seconds, st, extra) = match &args.config {
        None => {
            let mut engine = Engine::new(base);
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
            let loaded = config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut policy = loaded.policy;
            policy.tracking.max_connections = Some(args.max_connections);
            let mut fw = Firewall::new(policy, base);
            // A dataplane owns its frames and NAT rewrites them where they lie: give the
            // firewall writable copies, made before the clock starts.
            let mut arena: Vec<u8> = packets
                .iter()
                .flat_map(|p| p.data.iter().copied())
                .collect();
            let mut frames: Vec<&mut [u8]> = Vec::with_capacity(packets.len());
            let mut rest = arena.as_mut_slice();
            for p in &packets {
                let (frame, tail) = rest.split_at_mut(p.data.len());
                frames.push(frame);
                rest = tail;
            }
            let mut frames: Vec<Frame<'_>> = packets
                .iter()
                .zip(frames)
                .map(|(p, data)| Frame {
                    now: p.now,
                    link: p.link,
                    data,
                    wire_len: p.wire_len,
                    ingress: Ingress::Unknown,
                })
                .collect();
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
    println!(
        "packets={n} seconds={seconds:.6} mpps={mpps:.3} connections={} bytes_per_connection={per_conn}{extra}",
        st.peak
    );
    Ok(())
}
