//! Port-scan detection: the TCP flag combinations scanners send (nmap's `-sF`, `-sN`, `-sX`
//! and the SYN+FIN / SYN+RST tricks), and one source trying many ports of ours in a short
//! interval.
//!
//! Flag scans are packets the engine already finds invalid (`tcp-bad-flags`); here they are
//! named, counted and reported. Port sweeps are counted per source over the new connections
//! the policy refused (so a client opening many allowed connections is never a "scanner"):
//! when one source has tried `threshold` distinct destination ports within `window`, the
//! attempt that crosses the line is reported once for that window.
//!
//! Memory is fixed: an 8-way set-associative table of sources under a keyed hash (as the
//! per-source rate limits keep theirs). Each source remembers the distinct ports it has tried
//! this window, at most `threshold - 1` of them (the next new one makes the report), so the
//! count is exact: a source is reported after exactly `threshold` distinct ports, whatever
//! the key, and replaying a capture reports the same scans every time. The threshold is
//! capped at [`MAX_SCAN_PORTS`] to bound that memory.

use core::net::IpAddr;

use keepstate_engine::Time;

/// What kind of scan a packet belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scan {
    /// SYN and FIN together.
    SynFin,
    /// SYN and RST together.
    SynRst,
    /// FIN, PSH and URG ("Xmas tree").
    Xmas,
    /// FIN alone.
    Fin,
    /// No flags at all.
    Null,
    /// Many ports from one source in a short interval.
    Ports,
}

impl Scan {
    pub const ALL: [Scan; 6] = [
        Scan::SynFin,
        Scan::SynRst,
        Scan::Xmas,
        Scan::Fin,
        Scan::Null,
        Scan::Ports,
    ];

    /// The stable kebab-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Scan::SynFin => "syn-fin",
            Scan::SynRst => "syn-rst",
            Scan::Xmas => "xmas",
            Scan::Fin => "fin",
            Scan::Null => "null",
            Scan::Ports => "ports",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// The scan a TCP packet's flags betray, if any.
    pub fn of_flags(flags: u8) -> Option<Scan> {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const PSH: u8 = 0x08;
        const URG: u8 = 0x20;
        let f = flags & 0x3f;
        if f == 0 {
            Some(Scan::Null)
        } else if f & (FIN | PSH | URG) == FIN | PSH | URG {
            Some(Scan::Xmas)
        } else if f & (SYN | FIN) == SYN | FIN {
            Some(Scan::SynFin)
        } else if f & (SYN | RST) == SYN | RST {
            Some(Scan::SynRst)
        } else if f == FIN {
            Some(Scan::Fin)
        } else {
            None
        }
    }
}

const WAYS: usize = 8;

/// The largest `scan_ports` threshold: each tracked source keeps up to this many ports
/// (2 bytes each), so 4,096 sources need at most 2 MiB.
pub const MAX_SCAN_PORTS: u16 = 256;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    addr: u128,
    /// When this source's window began (nanoseconds of the caller's clock).
    start: u64,
    /// Distinct ports tried this window (the first `count` of this slot's port list).
    count: u16,
    used: bool,
    reported: bool,
}

/// Distinct refused ports per source.
#[derive(Clone, Debug)]
pub struct PortScans {
    slots: Vec<Slot>,
    /// `stride` ports per slot, slot by slot.
    ports: Vec<u16>,
    stride: usize,
    set_mask: u64,
    hasher: ahash::RandomState,
    threshold: u16,
    window: u64,
}

impl PortScans {
    /// A table of at least `capacity` sources; `threshold` distinct ports within `window`
    /// make a scan (a threshold of 0 turns detection off; one above [`MAX_SCAN_PORTS`] is
    /// lowered to it).
    pub fn new(threshold: u16, window: Time, capacity: usize, key: [u64; 4]) -> PortScans {
        let threshold = threshold.min(MAX_SCAN_PORTS);
        let (sets, stride) = if threshold == 0 {
            (0, 0)
        } else {
            let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
            (sets, usize::from(threshold - 1))
        };
        let slots = sets.saturating_mul(WAYS);
        PortScans {
            slots: vec![Slot::default(); slots],
            ports: vec![0; slots.saturating_mul(stride)],
            stride,
            set_mask: u64::try_from(sets.saturating_sub(1)).unwrap_or(0),
            hasher: ahash::RandomState::with_seeds(key[3], key[2], key[1], key[0]),
            threshold,
            window: window.as_nanos(),
        }
    }

    /// Records a refused new connection from `src` to `port`; `true` when it makes `src` a
    /// scanner (once per window).
    pub fn refused(&mut self, src: IpAddr, port: u16, now: Time) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let addr = match src {
            IpAddr::V4(v) => u128::from(v.to_ipv6_mapped()),
            IpAddr::V6(v) => u128::from(v),
        };
        let now = now.as_nanos();
        let set = self.hasher.hash_one(addr) & self.set_mask;
        let start = usize::try_from(set).unwrap_or(0).saturating_mul(WAYS);
        let window = self.window;
        let threshold = self.threshold;
        let Some(ways) = self.slots.get_mut(start..start.saturating_add(WAYS)) else {
            return false;
        };
        let stale = |s: &Slot| !s.used || now.saturating_sub(s.start) >= window;
        let fresh = Slot {
            addr,
            start: now,
            used: true,
            ..Slot::default()
        };
        let i = match ways.iter().position(|s| s.used && s.addr == addr) {
            Some(i) => i,
            None => {
                // A new source: an empty or stale slot, else the one whose window began
                // earliest.
                let i = ways.iter().position(stale).unwrap_or_else(|| {
                    ways.iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.start)
                        .map_or(0, |(i, _)| i)
                });
                if let Some(s) = ways.get_mut(i) {
                    *s = fresh;
                }
                i
            }
        };
        let Some(s) = ways.get_mut(i) else {
            return false;
        };
        if now.saturating_sub(s.start) >= window {
            *s = fresh;
        }
        if s.reported {
            return false;
        }
        let first = start.saturating_add(i).saturating_mul(self.stride);
        let Some(seen) = self.ports.get_mut(first..first.saturating_add(self.stride)) else {
            return false;
        };
        let count = usize::from(s.count);
        if seen.get(..count).is_some_and(|tried| tried.contains(&port)) {
            return false;
        }
        if s.count.saturating_add(1) >= threshold {
            s.reported = true;
            return true;
        }
        if let Some(slot) = seen.get_mut(count) {
            *slot = port;
            s.count = s.count.saturating_add(1);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(Scan::of_flags(0), Some(Scan::Null));
        assert_eq!(Scan::of_flags(0x29), Some(Scan::Xmas));
        assert_eq!(Scan::of_flags(0x3f), Some(Scan::Xmas));
        assert_eq!(Scan::of_flags(0x03), Some(Scan::SynFin));
        assert_eq!(Scan::of_flags(0x06), Some(Scan::SynRst));
        assert_eq!(Scan::of_flags(0x01), Some(Scan::Fin));
        assert_eq!(Scan::of_flags(0x02), None);
        assert_eq!(Scan::of_flags(0x12), None);
    }

    #[test]
    fn sweeps() {
        let mut p = PortScans::new(20, Time::from_secs(10), 64, [1, 2, 3, 4]);
        let src: IpAddr = [198, 51, 100, 7].into();
        let other: IpAddr = [198, 51, 100, 8].into();
        let t = Time::from_secs(100);
        // The same port again and again is not a sweep.
        for _ in 0..100 {
            assert!(!p.refused(src, 22, t));
        }
        let mut reported = 0;
        for port in 1..=200u16 {
            reported += usize::from(p.refused(src, port, t));
            assert!(!p.refused(other, 443, t));
        }
        assert_eq!(reported, 1, "once per window");
        // Ports spread over more than the window never add up.
        let slow: IpAddr = [203, 0, 113, 9].into();
        for port in 0..100u16 {
            let at = Time::from_secs(200 + 11 * u64::from(port));
            assert!(!p.refused(slow, port, at));
        }
        // A new window, a new report.
        let later = Time::from_secs(10_000);
        assert!((1..=200u16).any(|port| p.refused(src, port, later)));
    }

    #[test]
    fn the_count_is_exact_whatever_the_key() {
        let src: IpAddr = [198, 51, 100, 66].into();
        let t = Time::from_secs(1);
        for k in 0..200u64 {
            let key = [k, k.wrapping_mul(0x9e37_79b9_7f4a_7c15), !k, k << 7];
            for threshold in [1u16, 2, 20, MAX_SCAN_PORTS] {
                let mut p = PortScans::new(threshold, Time::from_secs(10), 64, key);
                // Repeats of ports already tried never count.
                for port in 1..threshold {
                    assert!(!p.refused(src, port, t));
                    assert!(!p.refused(src, 1, t));
                }
                assert!(
                    p.refused(src, threshold.saturating_add(1000), t),
                    "{k} {threshold}"
                );
                assert!(!p.refused(src, 60_000, t), "once per window");
            }
        }
        // Above the cap: the cap.
        let mut p = PortScans::new(u16::MAX, Time::from_secs(10), 64, [1; 4]);
        let hit = (1..=1000u16).position(|port| p.refused(src, port, t));
        assert_eq!(hit, Some(usize::from(MAX_SCAN_PORTS) - 1));
        // Off.
        let mut p = PortScans::new(0, Time::from_secs(10), 64, [1; 4]);
        assert!(!(1..=1000u16).any(|port| p.refused(src, port, t)));
    }
}
