//! A SYN proxy for port forwards (`synproxy = true`, nftables' `synproxy`): the firewall
//! answers a client's SYN itself with a SYN cookie, keeps no state, and only when the
//! client's ACK proves the cookie opens the connection to the server, completing that
//! handshake itself too. From then on the two sides' views of the server's sequence numbers
//! differ by a fixed offset, which the engine keeps with the connection's translation.
//!
//! The cookie (the SYN/ACK's sequence number) is a keyed hash of the connection's tuple, the
//! client's initial sequence number and a counter that moves every 64 seconds, with the
//! counter's low three bits and an index into four MSS values in its low five bits; a
//! cookie is good for the counter it names if that is the current one or the one before
//! (64 to 128 seconds). Like Linux's cookies without timestamps it carries no window scale
//! or SACK permission, so proxied connections run without them.

use core::net::IpAddr;

use keepstate_engine::wire::{checksum, PROTO_TCP};
use keepstate_engine::Time;

/// The MSS values a cookie can carry (Linux's `msstab` for IPv4, minus the smallest).
const MSS: [u16; 4] = [536, 1220, 1440, 1460];
/// The window the proxy offers in its SYN/ACK (no scaling is negotiated).
pub(crate) const WINDOW: u16 = 65_535;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_ACK: u8 = 0x10;

/// The fields of a TCP segment the proxy reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seg {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub mss: Option<u16>,
}

impl Seg {
    /// Reads a TCP segment from an IP packet (IPv4 with or without options, IPv6 without
    /// extension headers, not a fragment).
    pub(crate) fn read(ip: &[u8]) -> Option<Seg> {
        let v = ip.first()? >> 4;
        let (src, dst, l4) = match v {
            4 => {
                let hlen = usize::from(ip.first()? & 0x0f) * 4;
                let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff;
                if *ip.get(9)? != PROTO_TCP || frag != 0 || hlen < 20 {
                    return None;
                }
                let a = |i: usize| -> Option<IpAddr> {
                    let b: [u8; 4] = ip.get(i..i + 4)?.try_into().ok()?;
                    Some(IpAddr::from(b))
                };
                (a(12)?, a(16)?, ip.get(hlen..)?)
            }
            6 => {
                if *ip.get(6)? != PROTO_TCP {
                    return None;
                }
                let a = |i: usize| -> Option<IpAddr> {
                    let b: [u8; 16] = ip.get(i..i + 16)?.try_into().ok()?;
                    Some(IpAddr::from(b))
                };
                (a(8)?, a(24)?, ip.get(40..)?)
            }
            _ => return None,
        };
        let u16_at = |i: usize| Some(u16::from_be_bytes([*l4.get(i)?, *l4.get(i + 1)?]));
        let u32_at = |i: usize| {
            let b: [u8; 4] = l4.get(i..i + 4)?.try_into().ok()?;
            Some(u32::from_be_bytes(b))
        };
        let doff = usize::from(l4.get(12)? >> 4) * 4;
        let options = l4.get(20..doff.max(20))?;
        Some(Seg {
            src,
            dst,
            sport: u16_at(0)?,
            dport: u16_at(2)?,
            seq: u32_at(4)?,
            ack: u32_at(8)?,
            flags: *l4.get(13)?,
            window: u16_at(14)?,
            mss: mss_option(options),
        })
    }

    /// The segment as an IP packet (no IPv4 options, no IPv6 extension headers), checksums
    /// filled in, appended to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) -> bool {
        let mut tcp = Vec::with_capacity(24);
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        let doff: u8 = if self.mss.is_some() { 6 } else { 5 };
        tcp.push(doff << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&self.window.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        if let Some(m) = self.mss {
            tcp.extend_from_slice(&[2, 4]);
            tcp.extend_from_slice(&m.to_be_bytes());
        }
        let len = u16::try_from(tcp.len()).unwrap_or(u16::MAX);
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = 20 + len;
                let mut h = [0u8; 20];
                h[0] = 0x45;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[6] = 0x40; // Don't Fragment
                h[8] = 64;
                h[9] = PROTO_TCP;
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let c = !checksum::fold(checksum::add(0, &h));
                h[10..12].copy_from_slice(&c.to_be_bytes());
                out.extend_from_slice(&h);
                checksum::pseudo_header(&s.octets(), &d.octets(), PROTO_TCP, u32::from(len))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                out.extend_from_slice(&[0x60, 0, 0, 0]);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&[PROTO_TCP, 64]);
                out.extend_from_slice(&s.octets());
                out.extend_from_slice(&d.octets());
                checksum::pseudo_header(&s.octets(), &d.octets(), PROTO_TCP, u32::from(len))
            }
            _ => return false,
        };
        let c = !checksum::fold(checksum::add(pseudo, &tcp));
        if let Some(f) = tcp.get_mut(16..18) {
            f.copy_from_slice(&c.to_be_bytes());
        }
        out.extend_from_slice(&tcp);
        true
    }

    pub(crate) fn is_syn_ack(&self) -> bool {
        self.flags & (TCP_SYN | TCP_ACK | TCP_FIN | 0x04) == TCP_SYN | TCP_ACK
    }
}

/// The MSS option's value, if the options carry one.
fn mss_option(mut o: &[u8]) -> Option<u16> {
    while let Some(&kind) = o.first() {
        match kind {
            0 => return None,
            1 => o = o.get(1..)?,
            _ => {
                let len = usize::from(*o.get(1)?);
                if len < 2 {
                    return None;
                }
                if kind == 2 && len == 4 {
                    return Some(u16::from_be_bytes([*o.get(2)?, *o.get(3)?]));
                }
                o = o.get(len..)?;
            }
        }
    }
    None
}

/// Makes and checks SYN cookies.
pub(crate) struct Cookies {
    hasher: ahash::RandomState,
}

fn counter(now: Time) -> u64 {
    now.as_secs() / 64
}

impl Cookies {
    pub(crate) fn new(key: [u64; 4]) -> Cookies {
        Cookies {
            hasher: ahash::RandomState::with_seeds(key[1], key[0], key[3], key[2] ^ 0x5359_4e43),
        }
    }

    fn hash(&self, s: &Seg, client_isn: u32, c: u64) -> u32 {
        let h = self
            .hasher
            .hash_one((s.src, s.dst, s.sport, s.dport, client_isn, c));
        #[allow(clippy::cast_possible_truncation)]
        let h = h as u32;
        h & !0x1f
    }

    /// The cookie answering `syn` (a client's SYN): the proxy's initial sequence number.
    pub(crate) fn make(&self, syn: &Seg, now: Time) -> u32 {
        let want = syn.mss.unwrap_or(536);
        let idx = MSS.iter().rposition(|&m| m <= want).unwrap_or(0);
        let c = counter(now);
        #[allow(clippy::cast_possible_truncation)]
        let bits = ((c & 7) as u32) << 2 | idx as u32;
        self.hash(syn, syn.seq, c) | bits
    }

    /// The MSS a cookie carries.
    pub(crate) fn mss_of(&self, cookie: u32) -> u16 {
        MSS.get(usize::try_from(cookie & 3).unwrap_or(0))
            .copied()
            .unwrap_or(536)
    }

    /// For a client's ACK (`ack`, from the same client to the same address and port as the
    /// SYN): the MSS its cookie carries, if the cookie is good.
    pub(crate) fn check(&self, ack: &Seg, now: Time) -> Option<u16> {
        let cookie = ack.ack.wrapping_sub(1);
        let client_isn = ack.seq.wrapping_sub(1);
        let bits = u64::from((cookie >> 2) & 7);
        let now_c = counter(now);
        [now_c, now_c.wrapping_sub(1)]
            .into_iter()
            .find(|c| c & 7 == bits && self.hash(ack, client_isn, *c) == cookie & !0x1f)?;
        MSS.get(usize::try_from(cookie & 3).ok()?).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn() -> Seg {
        Seg {
            src: IpAddr::from([198, 51, 100, 7]),
            dst: IpAddr::from([203, 0, 113, 2]),
            sport: 40_000,
            dport: 8080,
            seq: 1_000,
            ack: 0,
            flags: TCP_SYN,
            window: 64_240,
            mss: Some(1460),
        }
    }

    #[test]
    fn cookies_round_trip_and_expire() {
        let c = Cookies::new([1, 2, 3, 4]);
        let t = Time::from_secs(10_000);
        let s = syn();
        let cookie = c.make(&s, t);
        let ack = Seg {
            seq: s.seq.wrapping_add(1),
            ack: cookie.wrapping_add(1),
            flags: TCP_ACK,
            mss: None,
            ..s
        };
        assert_eq!(c.check(&ack, t), Some(1460));
        assert_eq!(c.check(&ack, Time::from_secs(10_000 + 64)), Some(1460));
        assert_eq!(c.check(&ack, Time::from_secs(10_000 + 200)), None);
        // Another client, port or sequence number does not fit the cookie.
        assert_eq!(
            c.check(
                &Seg {
                    sport: 40_001,
                    ..ack
                },
                t
            ),
            None
        );
        assert_eq!(c.check(&Seg { seq: 5, ..ack }, t), None);
        assert_eq!(
            c.check(
                &Seg {
                    ack: ack.ack ^ 0x100,
                    ..ack
                },
                t
            ),
            None
        );
        // A small MSS maps to the largest table value below it.
        let small = c.make(
            &Seg {
                mss: Some(1300),
                ..s
            },
            t,
        );
        let a2 = Seg {
            ack: small.wrapping_add(1),
            ..ack
        };
        assert_eq!(c.check(&a2, t), Some(1220));
    }

    #[test]
    fn segments_round_trip() {
        let mut out = Vec::new();
        let s = syn();
        assert!(s.write(&mut out));
        assert_eq!(Seg::read(&out), Some(s));
        let v6 = Seg {
            src: "2001:db8::7".parse().unwrap_or(IpAddr::from([0u8; 16])),
            dst: "2001:db8::2".parse().unwrap_or(IpAddr::from([0u8; 16])),
            mss: None,
            ..s
        };
        out.clear();
        assert!(v6.write(&mut out));
        assert_eq!(Seg::read(&out), Some(v6));
        assert_eq!(Seg::read(&out[..30]), None);
    }
}
