//! Building Ethernet frames with valid checksums (etherparse), shared by the generators.

use std::net::IpAddr;

use anyhow::{bail, Result};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpOptionElement};

pub const TCP_SYN: u8 = 0x02;
pub const TCP_FIN: u8 = 0x01;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// The Ethernet and IP layers of a frame.
pub fn ip(
    smac: [u8; 6],
    dmac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
) -> Result<PacketBuilderStep<IpHeaders>> {
    let eth = PacketBuilder::ethernet2(smac, dmac);
    Ok(match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
        _ => bail!("address families differ: {src} -> {dst}"),
    })
}

/// Parameters of one TCP segment.
#[derive(Clone, Copy)]
pub struct Seg {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
    /// The timestamps option (RFC 7323): the sender's value and the one it echoes.
    pub ts: Option<(u32, u32)>,
}

/// Appends a whole TCP frame to `buf` (cleared first).
pub fn tcp(
    buf: &mut Vec<u8>,
    ip: PacketBuilderStep<IpHeaders>,
    s: Seg,
    payload: &[u8],
) -> Result<()> {
    let mut b = ip.tcp(s.sport, s.dport, s.seq, s.window);
    if s.flags & TCP_SYN != 0 {
        b = b.syn();
    }
    if s.flags & TCP_FIN != 0 {
        b = b.fin();
    }
    if s.flags & TCP_RST != 0 {
        b = b.rst();
    }
    if s.flags & TCP_PSH != 0 {
        b = b.psh();
    }
    if s.flags & TCP_ACK != 0 {
        b = b.ack(s.ack);
    }
    // A SYN's options in Linux's order; any other segment's timestamps after two NOPs, so
    // that they sit on a 4-byte boundary (RFC 7323, appendix A).
    let ts = s.ts.map(|(val, ecr)| TcpOptionElement::Timestamp(val, ecr));
    let options: Vec<TcpOptionElement> = match s.mss {
        Some(mss) => [
            Some(TcpOptionElement::MaximumSegmentSize(mss)),
            Some(TcpOptionElement::SelectiveAcknowledgementPermitted),
            ts,
        ]
        .into_iter()
        .flatten()
        .collect(),
        None => ts
            .map(|t| vec![TcpOptionElement::Noop, TcpOptionElement::Noop, t])
            .unwrap_or_default(),
    };
    if !options.is_empty() {
        b = b
            .options(&options)
            .map_err(|e| anyhow::anyhow!("tcp options: {e}"))?;
    }
    buf.clear();
    b.write(buf, payload)?;
    Ok(())
}
