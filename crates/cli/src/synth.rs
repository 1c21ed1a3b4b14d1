//! `keepstate gen synth`: N concurrent TCP connections, streamed to an Ethernet pcap.
//!
//! Per-connection values (addresses, ports, initial sequence numbers) are computed from the
//! connection index, so memory stays at one shuffled index vector however large N is.

use std::fs::File;
use std::io::BufWriter;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pcap_file::pcap::{PcapPacket, PcapWriter};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::frames::{self, Seg, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent TCP connections.
    #[arg(long)]
    connections: u32,
    /// Data rounds per connection (one segment each way per round).
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// Seed for the interleaving order.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fraction of connections over IPv6 (0.0..=1.0).
    #[arg(long, default_value_t = 0.0)]
    ipv6_share: f64,
    /// Write the trace as a masquerading router sees it: the servers answer this (IPv4) WAN
    /// address, and client ports are chosen so that keeping each source port is collision-free
    /// (so the answers reach the port masquerade keeps).
    #[arg(long, value_name = "ADDR")]
    masquerade: Option<Ipv4Addr>,
    /// Also write this many SYNs from random spoofed sources in 100.64.0.0/10 (each a new
    /// source port) to the clients, spread evenly through the data rounds: a SYN flood
    /// while the connections exchange data. `keepstate bench --flood-from 100.64.0.0/10`
    /// tells the two apart.
    #[arg(long, value_name = "N", default_value_t = 0)]
    syn_flood: u64,
    /// Every segment carries the timestamps option, as Linux sends it once both ends agree
    /// (RFC 7323): after MSS and SACK-permitted on the SYNs, after two NOPs on the rest.
    #[arg(long)]
    timestamps: bool,
    /// Output pcap file.
    #[arg(short, long)]
    output: PathBuf,
}

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PORTS_PER_CLIENT: u32 = 50_000;
const SERVERS: u32 = 100_000;
const DATA_LEN: u32 = 32;
const PAYLOAD: [u8; 32] = *b"keepstate synthetic payload 0123";
const WINDOW: u16 = 64_240;
/// 2023-11-14T22:13:20Z.
const START_SECS: u64 = 1_700_000_000;

struct Conn {
    client: IpAddr,
    /// Where the server's segments are addressed: the client, or the masquerading address.
    reply_to: IpAddr,
    server: IpAddr,
    cport: u16,
    isn_c: u32,
    isn_s: u32,
}

fn conn(i: u32, ipv6_share: f64, masquerade: Option<Ipv4Addr>) -> Result<Conn> {
    let host = i / PORTS_PER_CLIENT + 1;
    // Behind masquerade, (client port, server) must be unique across all clients, since
    // every client shares one address: connection i's server is i % SERVERS, so the port
    // counts the times the servers have come round.
    let cport = match masquerade {
        None => u16::try_from(10_000 + i % PORTS_PER_CLIENT)?,
        Some(_) => u16::try_from(10_000 + (i / SERVERS) % PORTS_PER_CLIENT)?,
    };
    let srv = i % SERVERS + 1;
    let v6 = {
        let a = (f64::from(i) * ipv6_share).floor();
        let b = (f64::from(i + 1) * ipv6_share).floor();
        b > a
    };
    let (client, server) = if v6 {
        (
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0) | host_v6(host)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0x2, 0, 0, 0, 0, 0, 0) | host_v6(srv)),
        )
    } else {
        (
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | host)),
            IpAddr::V4(Ipv4Addr::from(0xc612_0000 | srv)),
        )
    };
    let isn_c = i.wrapping_mul(2_654_435_761).rotate_left(7) ^ 0x1234_5678;
    let isn_s = isn_c.wrapping_mul(0x9e37_79b9) ^ 0x8765_4321;
    Ok(Conn {
        client,
        reply_to: masquerade.map_or(client, IpAddr::V4),
        server,
        cport,
        isn_c,
        isn_s,
    })
}

fn host_v6(n: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(n))
}

struct Out {
    w: PcapWriter<BufWriter<File>>,
    buf: Vec<u8>,
    n: u64,
    timestamps: bool,
}

impl Out {
    fn seg(&mut self, c: &Conn, from_client: bool, mut s: Seg, payload: &[u8]) -> Result<()> {
        if self.timestamps {
            // A millisecond clock per end (packets are a microsecond apart), each end echoing
            // the other's; a SYN has nothing to echo yet.
            let ms = u32::try_from(self.n / 1000).unwrap_or(u32::MAX);
            let (own, peer) = if from_client {
                (c.isn_c, c.isn_s)
            } else {
                (c.isn_s, c.isn_c)
            };
            let echo = if s.flags & TCP_ACK != 0 {
                peer.wrapping_add(ms)
            } else {
                0
            };
            s.ts = Some((own.wrapping_add(ms), echo));
        }
        let ip = if from_client {
            frames::ip(CLIENT_MAC, SERVER_MAC, c.client, c.server, 64)?
        } else {
            frames::ip(SERVER_MAC, CLIENT_MAC, c.server, c.reply_to, 64)?
        };
        frames::tcp(&mut self.buf, ip, s, payload)?;
        let ts = Duration::from_secs(START_SECS) + Duration::from_micros(self.n);
        let len = u32::try_from(self.buf.len())?;
        self.w
            .write_packet(&PcapPacket::new(ts, len, &self.buf))
            .context("writing pcap")?;
        self.n += 1;
        Ok(())
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !(0.0..=1.0).contains(&args.ipv6_share) {
        bail!("--ipv6-share must be between 0 and 1");
    }
    if args.masquerade.is_some() && args.ipv6_share > 0.0 {
        bail!("--masquerade is IPv4 only; leave out --ipv6-share");
    }
    if args.connections > 200_000_000 {
        bail!("--connections above 200,000,000 is not supported");
    }
    let file = File::create(&args.output)
        .with_context(|| format!("{}: cannot create", args.output.display()))?;
    let w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file)).context("writing pcap")?;
    let mut out = Out {
        w,
        buf: Vec::with_capacity(128),
        n: 0,
        timestamps: args.timestamps,
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut order: Vec<u32> = (0..args.connections).collect();
    let share = args.ipv6_share;
    let mss = Some(1460);
    let syn = |c: &Conn| Seg {
        sport: c.cport,
        dport: 443,
        seq: c.isn_c,
        ack: 0,
        flags: TCP_SYN,
        window: WINDOW,
        mss,
        ts: None,
    };

    // Opens: SYN, SYN/ACK, ACK per connection, connections in random order.
    order.shuffle(&mut rng);
    for &i in &order {
        let c = conn(i, share, args.masquerade)?;
        out.seg(&c, true, syn(&c), &[])?;
        let synack = Seg {
            sport: 443,
            dport: c.cport,
            seq: c.isn_s,
            ack: c.isn_c.wrapping_add(1),
            flags: TCP_SYN | TCP_ACK,
            window: WINDOW,
            mss,
            ts: None,
        };
        out.seg(&c, false, synack, &[])?;
        out.seg(&c, true, client_seg(&c, 0, TCP_ACK), &[])?;
    }

    // Data rounds: one segment each way per connection, connections in random order, with
    // the flood's SYNs spread evenly between them.
    let pairs = u64::from(args.connections) * u64::from(args.rounds);
    let mut flood = Flood {
        left: args.syn_flood,
        per_pair: args.syn_flood.checked_div(pairs).unwrap_or(0),
        extra: args.syn_flood.checked_rem(pairs).unwrap_or(0),
        rng: StdRng::seed_from_u64(args.seed ^ 0x5a5a_5a5a),
        clients: args.connections / PORTS_PER_CLIENT + 1,
    };
    let mut pair = 0u64;
    for r in 0..args.rounds {
        order.shuffle(&mut rng);
        for &i in &order {
            let c = conn(i, share, args.masquerade)?;
            out.seg(&c, true, client_seg(&c, r, TCP_ACK | TCP_PSH), &PAYLOAD)?;
            out.seg(
                &c,
                false,
                server_seg(&c, r, r + 1, TCP_ACK | TCP_PSH),
                &PAYLOAD,
            )?;
            let n = flood.per_pair + u64::from(pair < flood.extra);
            for _ in 0..n {
                flood.syn(&mut out)?;
            }
            pair += 1;
        }
    }
    if pairs == 0 {
        while flood.left > 0 {
            flood.syn(&mut out)?;
        }
    }

    // Close: FIN/ACK each way, then the last ACK.
    let r = args.rounds;
    order.shuffle(&mut rng);
    for &i in &order {
        let c = conn(i, share, args.masquerade)?;
        out.seg(&c, true, client_seg(&c, r, TCP_FIN | TCP_ACK), &[])?;
        let mut fin = server_seg(&c, r, r, TCP_FIN | TCP_ACK);
        fin.ack = fin.ack.wrapping_add(1);
        out.seg(&c, false, fin, &[])?;
        let mut last = client_seg(&c, r, TCP_ACK);
        last.seq = last.seq.wrapping_add(1);
        last.ack = last.ack.wrapping_add(1);
        out.seg(&c, true, last, &[])?;
    }
    let n = out.n;
    let mut inner = out.w.into_writer();
    std::io::Write::flush(&mut inner).context("writing pcap")?;
    eprintln!(
        "wrote {n} packets, {} connections, to {}",
        args.connections,
        args.output.display()
    );
    Ok(())
}

/// The SYN flood's state: how many are left to write, and where they go.
struct Flood {
    left: u64,
    per_pair: u64,
    extra: u64,
    rng: StdRng,
    clients: u32,
}

impl Flood {
    fn syn(&mut self, out: &mut Out) -> Result<()> {
        use rand::RngExt;
        if self.left == 0 {
            return Ok(());
        }
        self.left -= 1;
        let src = Ipv4Addr::from(0x6440_0000 | (self.rng.random::<u32>() & 0x003f_ffff));
        let dst = Ipv4Addr::from(0x0a00_0000 | self.rng.random_range(1..=self.clients));
        let s = Seg {
            sport: self.rng.random_range(1024..=65535),
            dport: self.rng.random_range(1..=1024),
            seq: self.rng.random(),
            ack: 0,
            flags: TCP_SYN,
            window: WINDOW,
            mss: Some(1460),
            ts: None,
        };
        let ip = frames::ip(SERVER_MAC, CLIENT_MAC, src.into(), dst.into(), 64)?;
        frames::tcp(&mut out.buf, ip, s, &[])?;
        let ts = Duration::from_secs(START_SECS) + Duration::from_micros(out.n);
        let len = u32::try_from(out.buf.len())?;
        out.w
            .write_packet(&PcapPacket::new(ts, len, &out.buf))
            .context("writing pcap")?;
        out.n += 1;
        Ok(())
    }
}

fn data_len() -> u32 {
    DATA_LEN
}

/// Client segment after `r` rounds of data each way.
fn client_seg(c: &Conn, r: u32, flags: u8) -> Seg {
    let d = data_len().wrapping_mul(r);
    Seg {
        sport: c.cport,
        dport: 443,
        seq: c.isn_c.wrapping_add(1).wrapping_add(d),
        ack: c.isn_s.wrapping_add(1).wrapping_add(d),
        flags,
        window: WINDOW,
        mss: None,
        ts: None,
    }
}

/// Server segment after `r` rounds sent by the server and `acked` rounds received.
fn server_seg(c: &Conn, r: u32, acked: u32, flags: u8) -> Seg {
    Seg {
        sport: 443,
        dport: c.cport,
        seq: c
            .isn_s
            .wrapping_add(1)
            .wrapping_add(data_len().wrapping_mul(r)),
        ack: c
            .isn_c
            .wrapping_add(1)
            .wrapping_add(data_len().wrapping_mul(acked)),
        flags,
        window: WINDOW,
        mss: None,
        ts: None,
    }
}
