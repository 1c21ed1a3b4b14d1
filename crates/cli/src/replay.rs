//! `keepstate replay`: every packet of a capture through the engine, in file order.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use keepstate_capture::Capture;
use keepstate_engine::{
    listing, proto_name, Config, CtState, DropReason, Engine, Outcome, Time, Verdict,
};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Capture file (pcap or pcapng).
    file: PathBuf,
    /// Write one JSON object per packet to this file ("-" for stdout; the summary then goes
    /// to stderr).
    #[arg(long, value_name = "OUT.jsonl")]
    trace: Option<PathBuf>,
    /// After the summary, list the connection table like `conntrack -L`.
    #[arg(long)]
    list: bool,
    /// Do not verify IP/TCP/UDP/ICMP checksums (captures taken with checksum offload).
    #[arg(long)]
    no_checksum: bool,
    /// Connection table size limit.
    #[arg(long, value_name = "N")]
    max_connections: Option<u32>,
}

/// One line of `--trace`.
#[derive(Serialize)]
struct TraceLine<'a> {
    n: u64,
    ts: f64,
    iface: Option<&'a str>,
    verdict: &'static str,
    ct_state: &'static str,
    dir: Option<&'static str>,
    reason: Option<&'static str>,
    proto: Option<&'static str>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
}

fn trace_line<'a>(n: u64, ts: Time, iface: Option<&'a str>, o: &Outcome) -> TraceLine<'a> {
    let m = &o.meta;
    let icmp = matches!(m.proto, Some(1 | 58));
    TraceLine {
        n,
        // Whole microseconds divided once give the double nearest the decimal value, so the
        // trace prints `…419.617` rather than `…419.6169999`.
        #[allow(clippy::cast_precision_loss)]
        ts: (ts.as_nanos() / 1_000) as f64 / 1e6,
        iface,
        verdict: o.verdict.name(),
        ct_state: o.state.name(),
        dir: o.dir.map(|d| d.name()),
        reason: o.reason.map(|r| r.name()),
        proto: m.proto.map(proto_name),
        src: m.src,
        dst: m.dst,
        sport: if icmp { None } else { m.sport },
        dport: if icmp { None } else { m.dport },
        icmp_type: if icmp { m.icmp_type } else { None },
        icmp_code: if icmp { m.icmp_code } else { None },
    }
}

pub fn run(args: &Args) -> Result<()> {
    let path_s = args.file.display().to_string();
    let cap = Capture::open(&args.file)?;

    let defaults = crate::host::config();
    let mut engine = Engine::new(Config {
        verify_checksums: !args.no_checksum,
        max_connections: args.max_connections.unwrap_or(defaults.max_connections),
        ..defaults
    });

    let trace_to_stdout = args.trace.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let mut trace: Option<Box<dyn Write>> = match &args.trace {
        None => None,
        Some(_) if trace_to_stdout => Some(Box::new(BufWriter::new(io::stdout().lock()))),
        Some(p) => {
            let f = File::create(p)
                .with_context(|| format!("{}: cannot create trace file", p.display()))?;
            Some(Box::new(BufWriter::new(f)))
        }
    };

    let bar = if io::stderr().is_terminal() {
        let b = ProgressBar::new(cap.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
        {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };

    let mut by_state = [0u64; 5];
    let mut by_reason = vec![0u64; DropReason::COUNT];
    let mut drops = 0u64;
    let mut packets = 0u64;
    let mut bytes = 0u64;
    let mut last_ts = Time::ZERO;

    let start = Instant::now();
    let mut records = cap.records();
    for rec in records.by_ref() {
        let rec = rec?;
        let o = engine.process_captured(rec.ts, rec.link, rec.data, rec.wire_len);
        packets += 1;
        bytes += rec.wire_len as u64;
        last_ts = last_ts.max(rec.ts);
        if let Some(c) = by_state.get_mut(o.state as usize) {
            *c += 1;
        }
        if let Some(r) = o.reason {
            if let Some(c) = by_reason.get_mut(r.index()) {
                *c += 1;
            }
        }
        if o.verdict == Verdict::Drop {
            drops += 1;
        }
        if let Some(w) = trace.as_mut() {
            serde_json::to_writer(&mut *w, &trace_line(packets, rec.ts, rec.iface, &o))
                .context("writing trace")?;
            w.write_all(b"\n").context("writing trace")?;
        }
        if packets & 8191 == 0 {
            bar.set_position(rec.offset);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let tail = records.truncated_tail().cloned();
    if let Some(mut w) = trace.take() {
        w.flush().context("writing trace")?;
    }

    engine.expire(last_ts);

    let mut out: Box<dyn Write> = if trace_to_stdout {
        Box::new(io::stderr().lock())
    } else {
        Box::new(io::stdout().lock())
    };
    if let Some(t) = &tail {
        eprintln!("keepstate: warning: {path_s}: {t}");
    }
    let st = engine.stats();
    writeln!(out, "file: {path_s}")?;
    writeln!(out, "packets: {packets}")?;
    writeln!(out, "bytes: {bytes}")?;
    writeln!(out, "ct states:")?;
    for s in CtState::ALL {
        let n = by_state.get(s as usize).copied().unwrap_or(0);
        writeln!(out, "  {:<12} {n}", s.name())?;
    }
    writeln!(out, "dropped: {drops}")?;
    let nonzero: Vec<_> = DropReason::ALL
        .iter()
        .filter_map(|r| {
            let n = by_reason.get(r.index()).copied().unwrap_or(0);
            (n > 0).then_some((r.name(), n))
        })
        .collect();
    if !nonzero.is_empty() {
        writeln!(out, "invalid/drop reasons:")?;
        for (name, n) in &nonzero {
            writeln!(out, "  {name:<28} {n}")?;
        }
    }
    writeln!(out, "connections at end: {}", engine.len())?;
    writeln!(
        out,
        "created: {}  expired: {}  evicted: {}  refused: {}  peak: {}",
        st.created, st.expired, st.evicted, st.refused, st.peak
    )?;
    #[allow(clippy::cast_precision_loss)]
    let pps = if elapsed > 0.0 {
        packets as f64 / elapsed
    } else {
        0.0
    };
    writeln!(out, "elapsed: {elapsed:.3} s ({pps:.0} packets/s)")?;
    if nonzero.iter().any(|(name, _)| name.contains("checksum")) && !args.no_checksum {
        writeln!(
            out,
            "hint: packets with bad checksums were seen; captures taken on the sending host \
             with checksum offload carry unfinished checksums, replay them with --no-checksum"
        )?;
    }
    if args.list {
        let mut shown = 0u64;
        for c in engine.connections() {
            writeln!(out, "{}", listing::conntrack_line(&c))?;
            shown += 1;
        }
        out.flush()?;
        eprintln!("conntrack v1.4 (keepstate): {shown} flow entries have been shown.");
    }
    out.flush()?;
    Ok(())
}
