//! `keepstate blast`: small-UDP load for the live benchmark. `send` pushes datagrams from
//! many source ports (so a firewall sees many flows) as fast as `sendmmsg` goes, for a set
//! time; `sink` counts what arrives with `recvmmsg`. Both print one `key=value` line.
//!
//! Traffic goes only to the address given: the benchmark points it at namespace addresses.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Datagrams per `sendmmsg`/`recvmmsg` call.
const BATCH: usize = 64;
/// The same, as the system calls take it.
const BATCH_C: libc::c_uint = 64;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Send UDP datagrams to one address from many source ports.
    Send(SendArgs),
    /// Count UDP datagrams arriving on a port.
    Sink(SinkArgs),
}

#[derive(clap::Args)]
pub struct SendArgs {
    /// Where to send (address:port).
    #[arg(long)]
    dst: SocketAddr,
    /// Distinct source ports (one connected socket each), sent to in turn.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..=50000))]
    flows: u16,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=1472))]
    size: u16,
    /// How long to send.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[derive(clap::Args)]
pub struct SinkArgs {
    /// UDP port to count on.
    #[arg(long)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// How long to listen, from start.
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
}

pub fn run(cmd: &Cmd) -> Result<()> {
    match cmd {
        Cmd::Send(a) => send(a),
        Cmd::Sink(a) => sink(a),
    }
}

fn duration(seconds: f64) -> Result<Duration> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= 3600.0) {
        bail!("--seconds {seconds}: give a time between 0 and 3600");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// One socket per flow needs more descriptors than the usual soft limit of 1024.
fn raise_fd_limit(need: u64) -> Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit");
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    if lim.rlim_max < need {
        bail!(
            "{need} open files needed, the hard limit is {}: use fewer --flows",
            lim.rlim_max
        );
    }
    lim.rlim_cur = need;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}

fn send(a: &SendArgs) -> Result<()> {
    let limit = duration(a.seconds)?;
    raise_fd_limit(u64::from(a.flows) + 64)?;
    let any: SocketAddr = match a.dst {
        SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
        SocketAddr::V6(_) => "[::]:0".parse()?,
    };
    let mut socks = Vec::with_capacity(usize::from(a.flows));
    for _ in 0..a.flows {
        // Bound before connecting, all at once: the kernel gives each its own port.
        let s = UdpSocket::bind(any).context("bind a UDP socket")?;
        s.connect(a.dst)
            .with_context(|| format!("connect to {}", a.dst))?;
        socks.push(s);
    }
    let mut payload = vec![0u8; usize::from(a.size)];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = b"keepstate blast ".get(i % 16).copied().unwrap_or(b'.');
    }
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        // Connected sockets: no msg_name. Every message sends the same payload.
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut full: u64 = 0;
    'outer: loop {
        for s in &socks {
            if start.elapsed() >= limit {
                break 'outer;
            }
            // SAFETY: msgs holds BATCH initialised headers whose iovec points at `payload`,
            // and both outlive the call.
            let n = unsafe {
                libc::sendmmsg(
                    s.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    BATCH_C,
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    // A full socket or device queue: try the next flow.
                    Some(libc::EAGAIN | libc::ENOBUFS) => full += 1,
                    // An ICMP error (port unreachable) reported on this flow's socket.
                    Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => {}
                    _ => return Err(e).context("sendmmsg"),
                }
            } else {
                sent += u64::try_from(n).unwrap_or(0);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let pps = sent as f64 / secs;
    println!(
        "sent={sent} seconds={secs:.3} pps={pps:.0} flows={} size={} queue_full={full}",
        a.flows, a.size
    );
    Ok(())
}

fn sink(a: &SinkArgs) -> Result<()> {
    let limit = duration(a.seconds)?;
    let sock = UdpSocket::bind(SocketAddr::new(a.bind, a.port))
        .with_context(|| format!("bind {}:{}", a.bind, a.port))?;
    let fd = sock.as_raw_fd();
    // A large receive buffer absorbs bursts so the count reflects what was delivered, not
    // the sink's scheduling; FORCE (root) goes past rmem_max, plain is the fallback.
    let size: libc::c_int = 32 << 20;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())?;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: passes a pointer to a c_int we own, with its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                std::ptr::from_ref(&size).cast(),
                len,
            )
        };
        if r == 0 {
            break;
        }
    }
    // Bounds each wait so the loop notices the deadline while nothing arrives.
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;

    const SLOT: usize = 2048;
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_mut(SLOT)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a valid (empty) value.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let mut received: u64 = 0;
    let mut bytes: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut last = start;
    while start.elapsed() < limit {
        // SAFETY: msgs holds BATCH headers, each pointing at its own SLOT bytes of `bufs`,
        // all of which outlive the call; no timeout pointer.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH_C,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                _ => return Err(e).context("recvmmsg"),
            }
        }
        let n = usize::try_from(n).unwrap_or(0);
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        received += n as u64;
        bytes += msgs
            .iter()
            .take(n)
            .map(|m| u64::from(m.msg_len))
            .sum::<u64>();
    }
    let span = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    #[allow(clippy::cast_precision_loss)]
    let pps = if span > 0.0 {
        received as f64 / span
    } else {
        0.0
    };
    println!("received={received} seconds={span:.3} pps={pps:.0} bytes={bytes}");
    Ok(())
}
