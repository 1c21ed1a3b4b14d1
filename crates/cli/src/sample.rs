//! `keepstate gen sample`: the home-router sample capture (pcapng, interfaces `lan0` and
//! `wan0`, each frame recorded on the port it enters the router by).
//!
//! No NAT: the LAN hosts 192.168.1.23 / 192.168.1.42 / 2001:db8:1::23 talk
//! to internet hosts in 203.0.113.0/24, 198.51.100.0/24 and 2001:db8:ffff::/64. See
//! samples/README.md for the content.

use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use etherparse::{
    icmpv4::{DestUnreachableHeader, TimeExceededCode},
    Icmpv4Type, IpHeaders, PacketBuilder, PacketBuilderStep,
};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use crate::frames::{self, Seg, TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN};

/// 2026-11-01T12:00:00Z.
const START_SECS: u64 = 1_793_534_400;
const WAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const ISP_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
/// The router's LAN port.
const LAN_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x01, 0x01];

/// The router's WAN address: IPv4 LAN hosts are masqueraded behind it.
const WAN_ADDR: [u8; 4] = [203, 0, 113, 2];

/// Where the internet sends what a LAN host sent: IPv4 LAN addresses are masqueraded to the
/// WAN address (ports and identifiers kept, as they do not collide here); IPv6 is routed.
fn outside(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v) if v.octets()[..3] == [192, 168, 1] => IpAddr::from(WAN_ADDR),
        other => other,
    }
}

/// A LAN host's MAC, numbered after the last byte of its address.
fn host_mac(a: IpAddr) -> [u8; 6] {
    let last = match a {
        IpAddr::V4(v) => v.octets()[3],
        IpAddr::V6(v) => v.octets()[15],
    };
    [0x02, 0x00, 0x00, 0x00, 0x02, last]
}

fn ip(s: &str) -> Result<IpAddr> {
    s.parse().with_context(|| format!("bad address {s}"))
}

/// Frames with their time (nanoseconds after the start), sorted before writing.
struct Gen {
    frames: Vec<(u64, Vec<u8>)>,
}

/// `outbound`: from the LAN towards the internet, captured as it reaches the router's LAN
/// port; otherwise from the internet, captured as it reaches the WAN port.
fn step(outbound: bool, src: IpAddr, dst: IpAddr) -> Result<PacketBuilderStep<IpHeaders>> {
    if outbound {
        frames::ip(host_mac(src), LAN_MAC, src, dst, 64)
    } else {
        frames::ip(ISP_MAC, WAN_MAC, src, outside(dst), 52)
    }
}

fn at(t: f64) -> u64 {
    // Times here are small, positive, and set in this file.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ns = (t * 1e9).round() as u64;
    ns
}

impl Gen {
    fn push(&mut self, t: f64, frame: Vec<u8>) {
        self.frames.push((at(t), frame));
    }

    fn udp(
        &mut self,
        t: f64,
        out: bool,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        payload: &[u8],
    ) -> Result<()> {
        let mut buf = Vec::new();
        step(out, src.0, dst.0)?
            .udp(src.1, dst.1)
            .write(&mut buf, payload)?;
        self.push(t, buf);
        Ok(())
    }

    /// A DNS query from the LAN and its answer `rtt` later.
    #[allow(clippy::too_many_arguments)]
    fn dns(
        &mut self,
        t: f64,
        rtt: f64,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        id: u16,
        name: &str,
        answer: IpAddr,
    ) -> Result<()> {
        let (q, a) = dns_messages(id, name, answer);
        self.udp(t, true, (client, cport), (server, 53), &q)?;
        self.udp(t + rtt, false, (server, 53), (client, cport), &a)
    }

    fn ping(
        &mut self,
        t: f64,
        rtt: f64,
        host: IpAddr,
        peer: IpAddr,
        id: u16,
        seq: u16,
    ) -> Result<()> {
        let payload: Vec<u8> = (0u8..56).collect();
        let mut buf = Vec::new();
        let s = step(true, host, peer)?;
        if host.is_ipv4() {
            s.icmpv4_echo_request(id, seq).write(&mut buf, &payload)?;
        } else {
            s.icmpv6_echo_request(id, seq).write(&mut buf, &payload)?;
        }
        self.push(t, buf);
        {
            let mut buf = Vec::new();
            let s = step(false, peer, host)?;
            if host.is_ipv4() {
                s.icmpv4_echo_reply(id, seq).write(&mut buf, &payload)?;
            } else {
                s.icmpv6_echo_reply(id, seq).write(&mut buf, &payload)?;
            }
            self.push(t + rtt, buf);
        }
        Ok(())
    }

    fn seg(
        &mut self,
        t: f64,
        out: bool,
        src: IpAddr,
        dst: IpAddr,
        s: Seg,
        payload: &[u8],
    ) -> Result<()> {
        let mut buf = Vec::new();
        frames::tcp(&mut buf, step(out, src, dst)?, s, payload)?;
        self.push(t, buf);
        Ok(())
    }

    /// A whole HTTPS connection from a LAN client: handshake, `exchanges` (true: client
    /// sends; each acknowledged by the peer), FIN close.
    #[allow(clippy::too_many_arguments)]
    fn https(
        &mut self,
        t0: f64,
        rtt: f64,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        isn_c: u32,
        isn_s: u32,
        exchanges: &[(bool, usize)],
    ) -> Result<f64> {
        let seg = |from_client: bool, seq: u32, ack: u32, flags: u8, mss: Option<u16>| Seg {
            sport: if from_client { cport } else { 443 },
            dport: if from_client { 443 } else { cport },
            seq,
            ack,
            flags,
            window: 64_240,
            mss,
            ts: None,
        };
        let (mut cs, mut ss) = (isn_c, isn_s);
        let mut t = t0;
        self.seg(
            t,
            true,
            client,
            server,
            seg(true, cs, 0, TCP_SYN, Some(1460)),
            &[],
        )?;
        cs = cs.wrapping_add(1);
        t += rtt;
        self.seg(
            t,
            false,
            server,
            client,
            seg(false, ss, cs, TCP_SYN | TCP_ACK, Some(1400)),
            &[],
        )?;
        ss = ss.wrapping_add(1);
        t += 0.0002;
        self.seg(
            t,
            true,
            client,
            server,
            seg(true, cs, ss, TCP_ACK, None),
            &[],
        )?;
        for (k, &(from_client, len)) in exchanges.iter().enumerate() {
            let payload: Vec<u8> = std::iter::once(0x17u8)
                .chain([0x03, 0x03])
                .chain((0..len.saturating_sub(3)).map(|j| {
                    // Deterministic filler that looks like ciphertext.
                    let x = (j as u64 + k as u64 * 7919).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    x.to_be_bytes()[0]
                }))
                .collect();
            let n = u32::try_from(payload.len())?;
            t += 0.001 + rtt / 4.0;
            if from_client {
                self.seg(
                    t,
                    true,
                    client,
                    server,
                    seg(true, cs, ss, TCP_ACK | TCP_PSH, None),
                    &payload,
                )?;
                cs = cs.wrapping_add(n);
                self.seg(
                    t + rtt,
                    false,
                    server,
                    client,
                    seg(false, ss, cs, TCP_ACK, None),
                    &[],
                )?;
            } else {
                self.seg(
                    t,
                    false,
                    server,
                    client,
                    seg(false, ss, cs, TCP_ACK | TCP_PSH, None),
                    &payload,
                )?;
                ss = ss.wrapping_add(n);
                self.seg(
                    t + 0.0003,
                    true,
                    client,
                    server,
                    seg(true, cs, ss, TCP_ACK, None),
                    &[],
                )?;
            }
            t += rtt;
        }
        t += 0.4;
        self.seg(
            t,
            true,
            client,
            server,
            seg(true, cs, ss, TCP_FIN | TCP_ACK, None),
            &[],
        )?;
        cs = cs.wrapping_add(1);
        t += rtt;
        self.seg(
            t,
            false,
            server,
            client,
            seg(false, ss, cs, TCP_FIN | TCP_ACK, None),
            &[],
        )?;
        ss = ss.wrapping_add(1);
        t += 0.0002;
        self.seg(
            t,
            true,
            client,
            server,
            seg(true, cs, ss, TCP_ACK, None),
            &[],
        )?;
        Ok(t)
    }
}

/// A DNS query for `name` and an answer with one A or AAAA record.
fn dns_messages(id: u16, name: &str, answer: IpAddr) -> (Vec<u8>, Vec<u8>) {
    let qtype: u16 = if answer.is_ipv4() { 1 } else { 28 };
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).unwrap_or(63).min(63));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);

    let mut a = q.clone();
    // Flags: response, recursion desired and available; one answer.
    a[2..8].copy_from_slice(&[0x81, 0x80, 0, 1, 0, 1]);
    a.extend_from_slice(&[0xc0, 0x0c]);
    a.extend_from_slice(&qtype.to_be_bytes());
    a.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
    let rdata = match answer {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    };
    a.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(0).to_be_bytes());
    a.extend_from_slice(&rdata);
    (q, a)
}

fn build() -> Result<Vec<(u64, Vec<u8>)>> {
    let mut g = Gen { frames: Vec::new() };
    let h23 = ip("192.168.1.23")?;
    let h42 = ip("192.168.1.42")?;
    let h23v6 = ip("2001:db8:1::23")?;
    let dns4 = ip("198.51.100.53")?;
    let dns6 = ip("2001:db8:ffff::53")?;
    let web1 = ip("203.0.113.10")?;
    let web2 = ip("203.0.113.20")?;
    let web6 = ip("2001:db8:ffff::10")?;

    // Name lookups, then HTTPS to the answers.
    g.dns(
        0.000,
        0.018,
        h23,
        51512,
        dns4,
        0x3a1f,
        "www.example.com",
        web1,
    )?;
    g.dns(
        0.002,
        0.021,
        h23v6,
        51513,
        dns6,
        0x3a20,
        "www.example.com",
        web6,
    )?;
    g.https(
        0.060,
        0.024,
        h23,
        50432,
        web1,
        0x1f2e_3d4c,
        0x9a8b_7c6d,
        &[
            (true, 517),
            (false, 1400),
            (false, 1180),
            (true, 126),
            (true, 380),
            (false, 1400),
            (false, 620),
        ],
    )?;
    g.dns(
        1.500,
        0.015,
        h42,
        40123,
        dns4,
        0x77e1,
        "api.example.net",
        web2,
    )?;
    g.https(
        1.530,
        0.031,
        h42,
        41822,
        web2,
        0x0102_0304,
        0xfedc_ba98,
        &[
            (true, 517),
            (false, 1400),
            (false, 900),
            (true, 80),
            (true, 240),
            (false, 360),
        ],
    )?;
    g.https(
        2.100,
        0.028,
        h23v6,
        50440,
        web6,
        0xdead_0001,
        0x5eed_0002,
        &[
            (true, 517),
            (false, 1400),
            (false, 700),
            (true, 64),
            (false, 280),
        ],
    )?;

    // Ping, v4 and v6.
    let gw_far = ip("203.0.113.1")?;
    for seq in 1..=3u16 {
        g.ping(4.0 + f64::from(seq - 1), 0.012, h23, gw_far, 0x1a2b, seq)?;
    }
    let far6 = ip("2001:db8:ffff::1")?;
    for seq in 1..=2u16 {
        g.ping(5.2 + f64::from(seq - 1), 0.014, h23v6, far6, 0x1a2c, seq)?;
    }

    // UDP traceroute to 203.0.113.99. Our router already decremented the TTL, so probe k
    // leaves wan0 with TTL k and arrives at hop k with TTL 1, which is what the errors quote.
    let target = ip("203.0.113.99")?;
    let hops = [
        ip("198.51.100.1")?,
        ip("198.51.100.2")?,
        ip("198.51.100.3")?,
        target,
    ];
    let probe_payload = [0x40u8; 32];
    // The probes leave masqueraded, so that is what the ICMP errors quote.
    let (IpAddr::V4(src4), IpAddr::V4(dst4)) = (outside(h23), target) else {
        anyhow::bail!("traceroute addresses must be IPv4");
    };
    for (k, &hop) in hops.iter().enumerate() {
        let ttl = u8::try_from(k + 1)?;
        let dport = 33434 + u16::try_from(k)?;
        let t = 8.0 + 0.05 * f64::from(ttl);
        let mut buf = Vec::new();
        frames::ip(host_mac(h23), LAN_MAC, h23, target, ttl)?
            .udp(43100, dport)
            .write(&mut buf, &probe_payload)?;
        g.push(t, buf);
        // The probe as hop k received it.
        let mut quoted = Vec::new();
        PacketBuilder::ipv4(src4.octets(), dst4.octets(), 1)
            .udp(43100, dport)
            .write(&mut quoted, &probe_payload)?;
        let icmp = if hop == target {
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
        } else {
            Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
        };
        let mut buf = Vec::new();
        frames::ip(ISP_MAC, WAN_MAC, hop, outside(h23), 60 - ttl)?
            .icmpv4(icmp)
            .write(&mut buf, &quoted)?;
        g.push(t + 0.004 + 0.003 * f64::from(ttl), buf);
    }

    // Unsolicited SYN scan from 198.51.100.66 against the LAN host's outside address (the
    // router's WAN address: the LAN is behind NAT): no replies.
    let scanner = ip("198.51.100.66")?;
    for (k, port) in [22u16, 23, 80, 443, 445, 3389, 8080]
        .into_iter()
        .enumerate()
    {
        let s = Seg {
            sport: 54321,
            dport: port,
            seq: 0x6a3c_0000 ^ u32::from(port),
            ack: 0,
            flags: TCP_SYN,
            window: 1024,
            mss: Some(1460),
            ts: None,
        };
        #[allow(clippy::cast_precision_loss)]
        let t = 12.0 + 0.03 * k as f64;
        g.seg(t, false, scanner, h23, s, &[])?;
    }

    // Someone on the internet pings the router's WAN address 16 times in 0.3 s, faster than
    // a home router answers, then tries its SSH port.
    let wan_addr = ip("203.0.113.2")?;
    let pinger = ip("198.51.100.77")?;
    let payload: Vec<u8> = (0u8..56).collect();
    for k in 0..16u16 {
        let mut buf = Vec::new();
        step(false, pinger, wan_addr)?
            .icmpv4_echo_request(0x5151, k)
            .write(&mut buf, &payload)?;
        g.push(13.0 + 0.02 * f64::from(k), buf);
    }
    let s = Seg {
        sport: 40404,
        dport: 22,
        seq: 0x2222_0000,
        ack: 0,
        flags: TCP_SYN,
        window: 64_240,
        mss: Some(1460),
        ts: None,
    };
    g.seg(13.5, false, pinger, wan_addr, s, &[])?;

    // IPv6 is routed, so the LAN host itself is reachable: an unsolicited SYN to its SSH port.
    let s = Seg {
        sport: 54322,
        dport: 22,
        seq: 0x6a3c_1111,
        ack: 0,
        flags: TCP_SYN,
        window: 1024,
        mss: Some(1440),
        ts: None,
    };
    g.seg(12.5, false, ip("2001:db8:bad::66")?, h23v6, s, &[])?;

    // An echo reply nobody asked for: invalid.
    let mut buf = Vec::new();
    step(false, ip("203.0.113.77")?, h23)?
        .icmpv4_echo_reply(0x4242, 7)
        .write(&mut buf, &(0u8..56).collect::<Vec<u8>>())?;
    g.push(15.0, buf);

    // A stray SYN/ACK for a connection that does not exist: invalid.
    let s = Seg {
        sport: 443,
        dport: 50999,
        seq: 0x0bad_5eed,
        ack: 0x1234_5679,
        flags: TCP_SYN | TCP_ACK,
        window: 64_240,
        mss: Some(1460),
        ts: None,
    };
    g.seg(17.0, false, ip("203.0.113.88")?, h23, s, &[])?;

    // One more lookup near the end.
    g.dns(
        19.6,
        0.017,
        h42,
        40200,
        dns4,
        0x77e2,
        "time.example.org",
        ip("203.0.113.123")?,
    )?;

    let mut frames = g.frames;
    frames.sort_by_key(|(t, _)| *t);
    Ok(frames)
}

pub fn run(output: &Path) -> Result<()> {
    let frames = build()?;
    let mut w = PcapNgWriter::new(Vec::new()).context("pcapng writer")?;
    for (name, what) in [
        ("lan0", "home router LAN port (keepstate sample)"),
        ("wan0", "home router WAN port (keepstate sample)"),
    ] {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 262_144,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed(name)),
                InterfaceDescriptionOption::IfDescription(Cow::Borrowed(what)),
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        })
        .context("pcapng writer")?;
    }
    for (t, data) in &frames {
        let len = u32::try_from(data.len())?;
        // Each frame is recorded where it enters the router: frames addressed to the LAN
        // port on lan0 (interface 0), the rest on wan0 (interface 1).
        let interface_id = u32::from(data.get(..6) != Some(&LAN_MAC[..]));
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id,
            // pcap-file writes this value in the interface's units: nanoseconds (if_tsresol 9).
            timestamp: Duration::from_secs(START_SECS) + Duration::from_nanos(*t),
            original_len: len,
            data: Cow::Borrowed(data),
            // epb_flags: inbound.
            options: vec![EnhancedPacketOption::Flags(1)],
        })
        .context("pcapng writer")?;
    }
    let bytes = w.into_inner();
    std::fs::write(output, &bytes)
        .with_context(|| format!("{}: cannot write", output.display()))?;
    eprintln!(
        "wrote {} packets ({} bytes) to {}",
        frames.len(),
        bytes.len(),
        output.display()
    );
    Ok(())
}
