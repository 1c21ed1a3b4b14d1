//! `keepstate replay`: every packet of a capture through the engine, in file order.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use keepstate_capture::{Capture, PacketDirection, Record};
use keepstate_engine::{
    listing, proto_name, Config, CtState, DropReason, Engine, LinkType, Outcome, Time, Verdict,
};
use keepstate_policy::config;
use keepstate_policy::firewall::{Decision, Firewall, Ingress};
use keepstate_policy::model::IfaceId;
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
    /// Apply this firewall policy (TOML; see examples/home-router.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// With --config: write every accepted packet as it would leave (NAT applied) to this
    /// pcapng file, on the interface it leaves by.
    #[arg(long, value_name = "OUT.pcapng", requires = "config")]
    write_accepted: Option<PathBuf>,
    /// Name the ingress interface of plain Ethernet frames by their destination MAC
    /// (repeatable): `--iface-mac 02:00:00:00:01:01=lan0`.
    #[arg(long, value_name = "MAC=NAME", value_parser = parse_iface_mac)]
    iface_mac: Vec<([u8; 6], String)>,
}

fn parse_iface_mac(s: &str) -> Result<([u8; 6], String), String> {
    let (mac, name) = s
        .split_once('=')
        .ok_or_else(|| format!("expected MAC=NAME, got {s:?}"))?;
    let mut out = [0u8; 6];
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "{mac:?} is not a MAC address (expected six hex bytes a:b:c:d:e:f)"
        ));
    }
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{mac:?} is not a MAC address (bad byte {p:?})"))?;
    }
    if name.is_empty() {
        return Err("the interface name after '=' is empty".into());
    }
    Ok((out, name.to_string()))
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
    /// What decided (with `--config`): a rule's name, `rule #N`, a default or a zone policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
    /// The addresses and ports as the packet leaves, when NAT rewrote them.
    #[serde(skip_serializing_if = "Option::is_none")]
    nat: Option<NatLine>,
    /// A scan this packet showed (`syn-fin`, `syn-rst`, `xmas`, `fin`, `null`, `ports`).
    #[serde(skip_serializing_if = "Option::is_none")]
    scan: Option<&'static str>,
}

#[derive(Serialize)]
struct NatLine {
    src: IpAddr,
    dst: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_id: Option<u16>,
}

fn nat_line(t: &keepstate_policy::nat::Tuple5, icmp_type: Option<u8>) -> NatLine {
    // Only queries (echo and the like) carry an identifier; errors do not.
    let icmp = matches!(
        (t.proto, icmp_type),
        (1, Some(0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)) | (58, Some(128 | 129))
    );
    let ports = matches!(t.proto, 6 | 17 | 33 | 132 | 136);
    NatLine {
        src: t.src,
        dst: t.dst,
        sport: ports.then_some(t.sport),
        dport: ports.then_some(t.dport),
        icmp_id: icmp.then_some(t.sport),
    }
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
        rule: None,
        nat: None,
        scan: None,
    }
}

/// Whether a frame is a copy of one the capturing host sent itself (`tcpdump -i any` on the
/// router records forwarded packets twice: in and out).
fn is_outgoing_copy(rec: &Record<'_>) -> bool {
    const PACKET_OUTGOING: u16 = 4;
    if rec.direction == PacketDirection::Outbound {
        return true;
    }
    match rec.link {
        LinkType::LinuxSll => rec
            .data
            .get(..2)
            .is_some_and(|b| u16::from_be_bytes([b[0], b[1]]) == PACKET_OUTGOING),
        LinkType::LinuxSll2 => rec
            .data
            .get(10)
            .is_some_and(|&b| u16::from(b) == PACKET_OUTGOING),
        _ => false,
    }
}

/// Finds each packet's ingress interface in the policy: by pcapng interface name, by the
/// ifindex of a cooked (SLL2) capture, or by destination MAC for plain Ethernet.
struct IfaceResolver {
    by_mac: Vec<([u8; 6], IfaceId)>,
    warned: std::collections::HashSet<String>,
}

impl IfaceResolver {
    fn new(fw: &Firewall, macs: &[([u8; 6], String)]) -> Result<IfaceResolver> {
        let mut by_mac = Vec::new();
        for (mac, name) in macs {
            let id = fw.policy().iface_by_name(name).with_context(|| {
                format!("--iface-mac: interface {name:?} is not defined in the policy")
            })?;
            by_mac.push((*mac, id));
        }
        Ok(IfaceResolver {
            by_mac,
            warned: Default::default(),
        })
    }

    fn resolve(&mut self, fw: &Firewall, rec: &Record<'_>) -> Ingress {
        if let Some(name) = rec.iface {
            if let Some(id) = fw.policy().iface_by_name(name) {
                return if rec.direction == PacketDirection::Inbound {
                    Ingress::Arrived(id)
                } else {
                    Ingress::Seen(id)
                };
            }
            if self.warned.insert(name.to_string()) {
                eprintln!(
                    "keepstate: warning: capture interface {name:?} is not in the policy; \
                     its packets are placed by the route to their source address"
                );
            }
        }
        let found = match rec.link {
            // Outgoing copies were skipped before: what is left arrived there.
            LinkType::LinuxSll2 => rec.data.get(4..8).and_then(|b| {
                fw.topology()
                    .iface_by_ifindex(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }),
            // A frame addressed to one of the router's ports arrived on that port.
            LinkType::Ethernet => rec.data.get(..6).and_then(|b| {
                let mac = [b[0], b[1], b[2], b[3], b[4], b[5]];
                self.by_mac
                    .iter()
                    .find(|(m, _)| *m == mac)
                    .map(|(_, id)| *id)
                    .or_else(|| fw.topology().iface_by_mac(mac))
            }),
            _ => None,
        };
        found.map_or(Ingress::Unknown, Ingress::Arrived)
    }
}

pub fn run(args: &Args) -> Result<()> {
    let path_s = args.file.display().to_string();
    let cap = Capture::open(&args.file)?;

    let defaults = crate::host::config();
    let mut fw = match &args.config {
        None => None,
        Some(path) => {
            let loaded = config::load(path).map_err(|errs| {
                for e in &errs.0 {
                    eprintln!("{e}");
                }
                anyhow::anyhow!("{}: the policy has errors", path.display())
            })?;
            for w in &loaded.warnings {
                eprintln!("{w}");
            }
            let mut policy = loaded.policy;
            // Options given on the command line win over the file.
            if args.no_checksum {
                policy.tracking.verify_checksums = Some(false);
            }
            if let Some(n) = args.max_connections {
                policy.tracking.max_connections = Some(n);
            }
            Some(Firewall::new(policy, defaults.clone()))
        }
    };
    let mut accepted_out = match &args.write_accepted {
        Some(p) => Some(AcceptedWriter::create(p)?),
        None => None,
    };
    let mut resolver = match &fw {
        Some(f) => Some(IfaceResolver::new(f, &args.iface_mac)?),
        None => None,
    };
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
    let mut skipped = 0u64;
    let mut deciders: std::collections::BTreeMap<String, u64> = Default::default();
    // Scan lines share the policy's log limit, so a flag-scan flood cannot flood stderr.
    let mut scan_log = fw
        .as_ref()
        .map(|f| keepstate_policy::limit::Bucket::new(&f.policy().defaults.log_limit));

    let start = Instant::now();
    let mut records = cap.records();
    for rec in records.by_ref() {
        let rec = rec?;
        let mut decision: Option<Decision> = None;
        let mut ingress = None;
        let o = match (&mut fw, &mut resolver) {
            (Some(f), Some(r)) => {
                if is_outgoing_copy(&rec) {
                    skipped += 1;
                    continue;
                }
                let iface = r.resolve(f, &rec);
                if let Ingress::Arrived(i) | Ingress::Seen(i) = iface {
                    ingress = Some(i);
                }
                let d = f.process(rec.ts, rec.link, rec.data, rec.wire_len, iface);
                decision = Some(d);
                if let Some(w) = accepted_out.as_mut() {
                    w.write(f, &d, &rec)?;
                }
                d.outcome
            }
            _ => engine.process_captured(rec.ts, rec.link, rec.data, rec.wire_len),
        };
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
        let rule = match (&fw, decision.and_then(|d| d.by)) {
            (Some(f), Some(by)) => {
                let name = f.describe(by);
                *deciders.entry(name.clone()).or_default() += 1;
                Some(name)
            }
            _ => None,
        };
        if let (Some(f), Some(d)) = (&fw, decision) {
            if let Some(r) = d.log {
                log_line(f, r, rec.ts, &d, rule.as_deref());
            }
            if let (Some(s), Some(b)) = (d.scan, scan_log.as_mut()) {
                if b.allow(rec.ts) {
                    scan_line(f, s, rec.ts, &d);
                }
            }
        }
        if let Some(w) = trace.as_mut() {
            // With a policy, the interface the packet was matched against.
            let name = match (&fw, ingress) {
                (Some(f), Some(i)) => f
                    .policy()
                    .interfaces
                    .get(usize::from(i))
                    .map(|x| x.name.as_str()),
                _ => rec.iface,
            };
            let mut line = trace_line(packets, rec.ts, name, &o);
            line.rule = rule;
            line.scan = decision.and_then(|d| d.scan).map(|s| s.name());
            if let (Some(d), Some(f)) = (decision, &fw) {
                // NAT changed the packet: show it as it arrived, and how it leaves.
                if let (true, Some((a, l))) = (d.translated, f.translated()) {
                    line.src = Some(a.src);
                    line.dst = Some(a.dst);
                    if line.sport.is_some() {
                        line.sport = Some(a.sport);
                        line.dport = Some(a.dport);
                    }
                    line.nat = Some(nat_line(&l, o.meta.icmp_type));
                }
            }

            serde_json::to_writer(&mut *w, &line).context("writing trace")?;
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
    if let Some(w) = accepted_out.take() {
        w.finish()?;
    }

    match &mut fw {
        Some(f) => f.engine_mut().expire(last_ts),
        None => engine.expire(last_ts),
    }
    let engine = match &fw {
        Some(f) => f.engine(),
        None => &engine,
    };

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
    if skipped > 0 {
        writeln!(out, "skipped outgoing copies: {skipped}")?;
    }
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
    if let Some(f) = &fw {
        policy_summary(&mut out, f, &deciders)?;
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
        // With a policy, NAT shows in the tuples as netfilter lists them.
        let conns: Vec<_> = match &fw {
            Some(f) => f.connections(),
            None => engine.connections().collect(),
        };
        for c in conns {
            writeln!(out, "{}", listing::conntrack_line(&c))?;
            shown += 1;
        }
        out.flush()?;
        eprintln!("conntrack v1.4 (keepstate): {shown} flow entries have been shown.");
    }
    out.flush()?;
    Ok(())
}

/// A rule asked to log this packet: one line on stderr, like the kernel's nf_log lines.
fn log_line(fw: &Firewall, rule: u32, ts: Time, d: &Decision, decided_by: Option<&str>) {
    let m = &d.outcome.meta;
    let name = |i: Option<IfaceId>| {
        i.and_then(|i| fw.policy().interfaces.get(usize::from(i)))
            .map_or("-", |x| x.name.as_str())
    };
    let ports = match (m.sport, m.dport) {
        (Some(s), Some(dp)) if !matches!(m.proto, Some(1 | 58)) => format!(" sport={s} dport={dp}"),
        _ => String::new(),
    };
    eprintln!(
        "keepstate: log: ts={:.6} rule={:?} verdict={} decided-by={:?} reason={} in={} out={} \
         proto={} src={} dst={}{ports} ct={}",
        ts.as_secs_f64(),
        fw.policy().rule_label(rule as usize),
        d.verdict.name(),
        decided_by.unwrap_or("-"),
        d.outcome.reason.map_or("-", |r| r.name()),
        name(d.in_iface),
        name(d.out_iface),
        m.proto.map_or("-", proto_name),
        m.src.map_or_else(|| "-".to_string(), |a| a.to_string()),
        m.dst.map_or_else(|| "-".to_string(), |a| a.to_string()),
        d.outcome.state.name(),
    );
}

/// A packet showed a scan: one line on stderr.
fn scan_line(fw: &Firewall, scan: keepstate_policy::scan::Scan, ts: Time, d: &Decision) {
    let m = &d.outcome.meta;
    let iface = d
        .in_iface
        .and_then(|i| fw.policy().interfaces.get(usize::from(i)))
        .map_or("-", |x| x.name.as_str());
    eprintln!(
        "keepstate: scan: ts={:.6} kind={} in={iface} src={} dst={} dport={} verdict={} reason={}",
        ts.as_secs_f64(),
        scan.name(),
        m.src.map_or_else(|| "-".to_string(), |a| a.to_string()),
        m.dst.map_or_else(|| "-".to_string(), |a| a.to_string()),
        m.dport.map_or_else(|| "-".to_string(), |p| p.to_string()),
        d.verdict.name(),
        d.outcome.reason.map_or("-", |r| r.name()),
    );
}

/// Hits per rule (with packet and byte counters) and per default decision.
fn policy_summary(
    out: &mut dyn Write,
    fw: &Firewall,
    deciders: &std::collections::BTreeMap<String, u64>,
) -> Result<()> {
    let st = fw.stats();
    writeln!(
        out,
        "policy: accepted {}  dropped {}  rejected {} (answers sent {})  notrack {}  logged {}",
        st.accepted, st.dropped, st.rejected, st.replies, st.notracked, st.logged
    )?;
    if st.scans.iter().any(|&n| n > 0) {
        write!(out, "scans:")?;
        for s in keepstate_policy::scan::Scan::ALL {
            let n = st.scans.get(s.index()).copied().unwrap_or(0);
            if n > 0 {
                write!(out, "  {} {n}", s.name())?;
            }
        }
        writeln!(out)?;
    }
    writeln!(out, "rule hits:")?;
    writeln!(out, "  {:<32} {:>10} {:>12}", "rule", "packets", "bytes")?;
    for (i, c) in fw.ruleset().counters().iter().enumerate() {
        writeln!(
            out,
            "  {:<32} {:>10} {:>12}",
            fw.policy().rule_label(i),
            c.packets,
            c.bytes
        )?;
    }
    for (i, c) in fw.ruleset().notrack_counters().iter().enumerate() {
        let label = fw
            .policy()
            .notrack
            .get(i)
            .and_then(|r| r.name.clone())
            .unwrap_or_else(|| format!("notrack #{}", i + 1));
        writeln!(out, "  {:<32} {:>10} {:>12}", label, c.packets, c.bytes)?;
    }
    writeln!(out, "decided by:")?;
    for (name, n) in deciders {
        writeln!(out, "  {name:<32} {n:>10}")?;
    }
    Ok(())
}

/// `--write-accepted`: accepted packets as they leave, in a pcapng with one interface per
/// egress interface and link type.
struct AcceptedWriter {
    path: PathBuf,
    w: pcap_file::pcapng::PcapNgWriter<BufWriter<File>>,
    ids: Vec<(Option<IfaceId>, LinkType)>,
    written: u64,
}

impl AcceptedWriter {
    fn create(path: &std::path::Path) -> Result<AcceptedWriter> {
        let f = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        let w = pcap_file::pcapng::PcapNgWriter::new(BufWriter::new(f))
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(AcceptedWriter {
            path: path.to_path_buf(),
            w,
            ids: Vec::new(),
            written: 0,
        })
    }

    fn write(&mut self, fw: &Firewall, d: &Decision, rec: &Record<'_>) -> Result<()> {
        use pcap_file::pcapng::blocks::enhanced_packet::{
            EnhancedPacketBlock, EnhancedPacketOption,
        };
        use pcap_file::pcapng::blocks::interface_description::{
            InterfaceDescriptionBlock, InterfaceDescriptionOption,
        };
        if d.outcome.verdict != Verdict::Accept {
            return Ok(());
        }
        let leaves = fw.translated().filter(|_| d.translated).map(|(_, l)| l.dst);
        let dst = leaves.or(d.outcome.meta.dst);
        // Packets for the firewall itself are delivered, not sent on.
        let out = match dst {
            Some(a) if fw.topology().is_local(a) => return Ok(()),
            Some(a) => fw.topology().route(a),
            None => None,
        };
        let data = if d.translated { fw.frame() } else { rec.data };
        let key = (out, rec.link);
        let id = match self.ids.iter().position(|k| *k == key) {
            Some(i) => i,
            None => {
                let name = out
                    .and_then(|i| fw.policy().interfaces.get(usize::from(i)))
                    .map_or_else(|| "unknown".to_string(), |x| x.name.clone());
                self.w
                    .write_pcapng_block(InterfaceDescriptionBlock {
                        linktype: datalink(rec.link),
                        snaplen: 262_144,
                        options: vec![
                            InterfaceDescriptionOption::IfName(name.into()),
                            InterfaceDescriptionOption::IfTsResol(9),
                        ],
                    })
                    .with_context(|| format!("{}: cannot write", self.path.display()))?;
                self.ids.push(key);
                self.ids.len() - 1
            }
        };
        let extra = rec.wire_len.saturating_sub(rec.data.len());
        self.w
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: u32::try_from(id)?,
                timestamp: std::time::Duration::from_nanos(rec.ts.as_nanos()),
                original_len: u32::try_from(data.len() + extra)?,
                data: std::borrow::Cow::Borrowed(data),
                // epb_flags: outbound.
                options: vec![EnhancedPacketOption::Flags(2)],
            })
            .with_context(|| format!("{}: cannot write", self.path.display()))?;
        self.written += 1;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let mut inner = self.w.into_inner();
        inner
            .flush()
            .with_context(|| format!("{}: cannot write", self.path.display()))?;
        eprintln!(
            "keepstate: wrote {} accepted packets to {}",
            self.written,
            self.path.display()
        );
        Ok(())
    }
}

fn datalink(link: LinkType) -> pcap_file::DataLink {
    use pcap_file::DataLink;
    match link {
        LinkType::Ethernet => DataLink::ETHERNET,
        LinkType::Raw => DataLink::RAW,
        LinkType::Ipv4 => DataLink::IPV4,
        LinkType::Ipv6 => DataLink::IPV6,
        LinkType::LinuxSll => DataLink::LINUX_SLL,
        LinkType::LinuxSll2 => DataLink::LINUX_SLL2,
        LinkType::Null => DataLink::NULL,
    }
}
