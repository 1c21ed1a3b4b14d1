//! `keepstate bench`: load a capture into memory, then time only the engine over it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use keepstate_capture::Capture;
use keepstate_engine::{Config, Engine, Packet};

#[derive(clap::Args)]
pub struct Args {
    /// Capture file (pcap or pcapng).
    file: PathBuf,
    /// Connection table size limit (default: 4,194,304, enough for large synthetic traces).
    #[arg(long, value_name = "N", default_value_t = 4_194_304)]
    max_connections: u32,
    /// Packets per `process_batch` call (default: what the engine prefers).
    #[arg(long, value_name = "N", default_value_t = keepstate_engine::Engine::PREFERRED_BATCH)]
    batch: usize,
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

    let mut engine = Engine::new(Config {
        max_connections: args.max_connections,
        ..crate::host::config()
    });
    let mut out = Vec::with_capacity(args.batch);
    let start = Instant::now();
    for chunk in packets.chunks(args.batch) {
        engine.process_batch(chunk, &mut out);
    }
    let seconds = start.elapsed().as_secs_f64();

    let st = engine.stats();
    let n = packets.len();
    #[allow(clippy::cast_precision_loss)]
    let mpps = if seconds > 0.0 {
        n as f64 / seconds / 1e6
    } else {
        0.0
    };
    let per_conn = st.peak_memory.checked_div(st.peak).unwrap_or(0);
    println!(
        "packets={n} seconds={seconds:.6} mpps={mpps:.3} connections={} bytes_per_connection={per_conn}",
        st.peak
    );
    Ok(())
}
