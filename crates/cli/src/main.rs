//! `keepstate`: replay captures through the connection tracker, benchmark it, and generate
//! synthetic and sample captures.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

mod bench;
mod blast;
mod check;
mod conntrack;
mod frames;
mod host;
mod lab;
mod replay;
#[cfg(target_os = "linux")]
mod run;
mod sample;
mod synth;

#[derive(Parser)]
#[command(
    name = "keepstate",
    version,
    about = "Stateful connection tracking over captures"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every packet of a pcap/pcapng file through the engine and print a summary.
    Replay(replay::Args),
    /// Time the engine alone over a capture loaded into memory.
    Bench(bench::Args),
    /// Check a policy file: report every error and warning, then summarise the policy.
    Check(check::Args),
    /// Route between the policy's interfaces in userspace: the live firewall (Linux, root).
    #[cfg(target_os = "linux")]
    Run(run::Args),
    /// Generate captures.
    #[command(subcommand)]
    Gen(Gen),
    /// A demo network in namespaces with keepstate (or the kernel) as its router.
    Lab(lab::Args),
    /// Small-UDP load for the live benchmark (send from many flows, or count arrivals).
    #[command(subcommand)]
    Blast(blast::Cmd),
    /// A running router's connection table, with conntrack-tools' options and output.
    Conntrack(conntrack::Args),
    /// A running router's summary: uptime, connections, packets, drops.
    Status(conntrack::StatusArgs),
    /// Make a running router read its policy file again, keeping its connections.
    Reload(conntrack::ReloadArgs),
    /// A running router's policy with each rule's counters.
    Rules(conntrack::RulesArgs),
}

#[derive(Subcommand)]
enum Gen {
    /// Many concurrent TCP connections (Ethernet pcap, valid checksums).
    Synth(synth::Args),
    /// The small, realistic home-router sample capture (pcapng).
    Sample {
        /// Output file.
        #[arg(short, long, default_value = "samples/home-router.pcapng")]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r: Result<()> = match cli.cmd {
        Cmd::Replay(a) => replay::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Check(a) => check::run(&a),
        #[cfg(target_os = "linux")]
        Cmd::Run(a) => run::run(&a),
        Cmd::Gen(Gen::Synth(a)) => synth::run(&a),
        Cmd::Gen(Gen::Sample { output }) => sample::run(&output),
        Cmd::Lab(a) => lab::run(&a),
        Cmd::Blast(c) => blast::run(&c),
        Cmd::Conntrack(a) => conntrack::run(&a),
        Cmd::Status(a) => conntrack::status(&a),
        Cmd::Reload(a) => conntrack::reload(&a),
        Cmd::Rules(a) => conntrack::rules(&a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keepstate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
