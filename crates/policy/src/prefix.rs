//! Longest-prefix and any-prefix lookup over many IPv4 and IPv6 prefixes.
//!
//! [`PrefixMap`] flattens a list of prefixes, each carrying a value, into sorted disjoint
//! intervals: the addresses from one boundary up to the next share one answer, the value of
//! the longest prefix covering them (or none). A lookup finds the last boundary at or below
//! the address. A direct index on the address's top bits (up to 16 of them, fewer for small
//! maps) narrows the search to the boundaries that share those bits, and a binary search
//! over that short run finishes it: O(log n) in the worst case and a few comparisons for
//! prefixes spread over the address space. Lookups allocate nothing and cannot panic.
//!
//! Building sorts the prefixes once (O(n log n)) and sweeps them with a stack of the
//! prefixes still open: two prefixes are either nested or disjoint, so the stack is the
//! chain of prefixes covering the current position. Adjacent intervals with equal answers are
//! merged, so a set of prefixes used only for membership (`PrefixMap<()>`) shrinks to the
//! boundaries of its union.
//!
//! Memory: 4 bytes per IPv4 boundary and 16 per IPv6 boundary plus the value, plus an index
//! of 4 bytes per top-bit bucket (at most 2^16 + 1 per family). A set of 100,000 prefixes has
//! at most 200,001 boundaries.

use crate::model::{addr_bits, prefix_mask, IpNet};
use core::net::IpAddr;

/// The most top bits a lookup index uses (2^16 + 1 entries of 4 bytes per family).
const MAX_INDEX_BITS: u32 = 16;

/// An address as an integer of the family's width.
trait Key: Copy + Ord {
    const WIDTH: u32;
    /// `v` is below 2^WIDTH by construction.
    fn from_bits(v: u128) -> Self;
    /// The top `bits` bits (`bits <= MAX_INDEX_BITS`).
    fn top(self, bits: u32) -> usize;
}

impl Key for u32 {
    const WIDTH: u32 = 32;

    fn from_bits(v: u128) -> u32 {
        u32::try_from(v).unwrap_or(u32::MAX)
    }

    fn top(self, bits: u32) -> usize {
        match bits {
            0 => 0,
            b => usize::try_from(self >> (32 - b.min(32))).unwrap_or(0),
        }
    }
}

impl Key for u128 {
    const WIDTH: u32 = 128;

    fn from_bits(v: u128) -> u128 {
        v
    }

    fn top(self, bits: u32) -> usize {
        match bits {
            0 => 0,
            b => usize::try_from(self >> (128 - b.min(128))).unwrap_or(0),
        }
    }
}

/// One family's intervals.
#[derive(Clone, Debug)]
struct Table<K, V> {
    /// Interval starts, ascending; the first is always 0.
    starts: Vec<K>,
    /// The answer for the interval beginning at the same position of `starts`; empty when
    /// `alternating` gives it.
    values: Vec<Option<V>>,
    /// When the answers alternate between none and one value (every prefix set does): whether
    /// the first interval has it, and the value. Saves reading `values` (a cache miss).
    alternating: Option<(bool, V)>,
    /// `index[t]` is the position of the first start whose top `bits` bits are `t` or more.
    index: Vec<u32>,
    bits: u32,
    /// How many distinct prefixes went in.
    prefixes: usize,
}

/// A prefix being built: network bits, last address, length and value.
struct Entry<V> {
    start: u128,
    end: u128,
    len: u8,
    value: V,
}

impl<K: Key, V: Copy + Eq> Table<K, V> {
    fn build(mut entries: Vec<Entry<V>>) -> Table<K, V> {
        // Stable: of identical prefixes the first given stays first and wins.
        entries.sort_by_key(|e| (e.start, e.len));
        entries.dedup_by_key(|e| (e.start, e.len));
        let prefixes = entries.len();

        let full = if K::WIDTH >= 128 {
            u128::MAX
        } else {
            (1u128 << K::WIDTH) - 1
        };
        let mut out: Vec<(u128, Option<V>)> = vec![(0, None)];
        // The prefixes covering the current position, outermost first: (last address, value).
        let mut stack: Vec<(u128, V)> = Vec::new();
        for e in &entries {
            while let Some(&(top_end, _)) = stack.last() {
                if top_end >= e.start {
                    break;
                }
                stack.pop();
                // top_end < e.start <= full, so the successor exists.
                emit(&mut out, top_end + 1, stack.last().map(|&(_, v)| v));
            }
            emit(&mut out, e.start, Some(e.value));
            stack.push((e.end, e.value));
        }
        while let Some((top_end, _)) = stack.pop() {
            if top_end >= full {
                // Everything still open ends at the top of the address space too.
                break;
            }
            emit(&mut out, top_end + 1, stack.last().map(|&(_, v)| v));
        }

        let starts: Vec<K> = out.iter().map(|&(s, _)| K::from_bits(s)).collect();
        let mut values: Vec<Option<V>> = out.iter().map(|&(_, v)| v).collect();
        let first_some = values.first().copied().flatten().is_some();
        let one = values.iter().flatten().next().copied();
        let alternating = one.filter(|&x| {
            values.iter().enumerate().all(|(i, v)| {
                if (i % 2 == 0) == first_some {
                    *v == Some(x)
                } else {
                    v.is_none()
                }
            })
        });
        let alternating = alternating.map(|x| (first_some, x));
        if alternating.is_some() {
            values = Vec::new();
        }
        let n = starts.len();
        // About one boundary per bucket, at most 2^16 buckets.
        let bits = if n <= 1 {
            0
        } else {
            (usize::BITS - 1 - n.leading_zeros()).min(MAX_INDEX_BITS)
        };
        let size = 1usize << bits;
        let mut index = Vec::with_capacity(size + 1);
        let mut i = 0;
        for t in 0..=size {
            while starts.get(i).is_some_and(|s| s.top(bits) < t) {
                i += 1;
            }
            index.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        Table {
            starts,
            values,
            alternating,
            index,
            bits,
            prefixes,
        }
    }

    /// Position of the interval containing `key`.
    #[inline]
    fn position(&self, key: K) -> Option<usize> {
        let t = key.top(self.bits);
        let lo = usize::try_from(*self.index.get(t)?).ok()?;
        let hi = usize::try_from(*self.index.get(t + 1)?).ok()?;
        // The boundary just before the bucket covers the bucket's first addresses; the first
        // boundary is 0, so the run below always holds a start <= key.
        let base = lo.saturating_sub(1);
        let run = self.starts.get(base..hi)?;
        let p = run.partition_point(|&s| s <= key);
        (base + p).checked_sub(1)
    }

    #[inline]
    fn get_ref(&self, key: K) -> Option<&V> {
        let i = self.position(key)?;
        if let Some((first, x)) = &self.alternating {
            return ((i % 2 == 0) == *first).then_some(x);
        }
        self.values.get(i)?.as_ref()
    }
}

/// Appends the interval starting at `s` (never below the last start), merging equal answers.
fn emit<V: Copy + Eq>(out: &mut Vec<(u128, Option<V>)>, s: u128, v: Option<V>) {
    let n = out.len();
    if let Some(last) = out.last_mut() {
        if last.0 == s {
            last.1 = v;
            if n >= 2 && out.get(n - 2).is_some_and(|p| p.1 == v) {
                out.pop();
            }
            return;
        }
        if last.1 == v {
            return;
        }
    }
    out.push((s, v));
}

/// Longest-prefix match over IPv4 and IPv6 prefixes, each with a value.
///
/// For identical prefixes the first one given keeps its value. `PrefixMap<()>` is a plain
/// prefix set ([`PrefixMap::contains`]).
#[derive(Clone, Debug)]
pub struct PrefixMap<V> {
    v4: Table<u32, V>,
    v6: Table<u128, V>,
}

impl<V: Copy + Eq> PrefixMap<V> {
    pub fn new(prefixes: impl IntoIterator<Item = (IpNet, V)>) -> PrefixMap<V> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (net, value) in prefixes {
            let (_, width) = addr_bits(net.addr);
            let len = net.len.min(width);
            let mask = prefix_mask(width, len);
            let start = net.network_bits();
            let end = start | (!mask & prefix_mask(width, width));
            let e = Entry {
                start,
                end,
                len,
                value,
            };
            match net.addr {
                IpAddr::V4(_) => v4.push(e),
                IpAddr::V6(_) => v6.push(e),
            }
        }
        PrefixMap {
            v4: Table::build(v4),
            v6: Table::build(v6),
        }
    }

    /// The value of the longest prefix containing `a`.
    #[inline]
    pub fn get(&self, a: IpAddr) -> Option<V> {
        self.get_ref(a).copied()
    }

    /// As [`PrefixMap::get`], by reference.
    #[inline]
    pub fn get_ref(&self, a: IpAddr) -> Option<&V> {
        match a {
            IpAddr::V4(v) => self.v4.get_ref(u32::from(v)),
            IpAddr::V6(v) => self.v6.get_ref(u128::from(v)),
        }
    }

    /// Whether any prefix contains `a`.
    #[inline]
    pub fn contains(&self, a: IpAddr) -> bool {
        self.get(a).is_some()
    }

    /// Distinct IPv4 prefixes given.
    pub fn v4_prefixes(&self) -> usize {
        self.v4.prefixes
    }

    /// Distinct IPv6 prefixes given.
    pub fn v6_prefixes(&self) -> usize {
        self.v6.prefixes
    }

    pub fn is_empty(&self) -> bool {
        self.v4.prefixes == 0 && self.v6.prefixes == 0
    }

    /// Interval boundaries stored (both families), a measure of its size.
    pub fn boundaries(&self) -> usize {
        self.v4.starts.len() + self.v6.starts.len()
    }
}

impl<V: Copy + Eq> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap::new(core::iter::empty())
    }
}

/// For each prefix, the position of the longest *other* prefix in `nets` that contains it
/// (for identical prefixes, the earlier one contains the later ones).
pub fn parents(nets: &[IpNet]) -> Vec<Option<usize>> {
    let key = |n: &IpNet| {
        let (_, width) = addr_bits(n.addr);
        let len = n.len.min(width);
        let start = n.network_bits();
        let end = start | (!prefix_mask(width, len) & prefix_mask(width, width));
        (width, start, len, end)
    };
    let mut order: Vec<(u8, u128, u8, u128, usize)> = nets
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (w, s, l, e) = key(n);
            (w, s, l, e, i)
        })
        .collect();
    order.sort_unstable_by_key(|&(w, s, l, _, i)| (w, s, l, i));
    let mut out = vec![None; nets.len()];
    let mut stack: Vec<(u8, u128, usize)> = Vec::new();
    for &(w, s, _, e, i) in &order {
        while let Some(&(tw, tend, _)) = stack.last() {
            if tw == w && tend >= s {
                break;
            }
            stack.pop();
        }
        if let Some(slot) = out.get_mut(i) {
            *slot = stack.last().map(|&(_, _, p)| p);
        }
        stack.push((w, e, i));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().unwrap();
        let len = if l.is_empty() {
            IpNet::host(addr).len
        } else {
            l.parse().unwrap()
        };
        IpNet::new(addr, len).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_map() {
        let m: PrefixMap<()> = PrefixMap::default();
        assert!(m.is_empty());
        assert!(!m.contains(ip("0.0.0.0")));
        assert!(!m.contains(ip("255.255.255.255")));
        assert!(!m.contains(ip("::")));
        assert!(!m.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn default_routes_slash_zero() {
        let m = PrefixMap::new([(net("0.0.0.0/0"), 1u8), (net("::/0"), 2)]);
        assert_eq!(m.get(ip("0.0.0.0")), Some(1));
        assert_eq!(m.get(ip("255.255.255.255")), Some(1));
        assert_eq!(m.get(ip("::")), Some(2));
        assert_eq!(
            m.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(2)
        );
        // Host bits of a /0 are ignored.
        let m = PrefixMap::new([(net("10.1.2.3/0"), ())]);
        assert!(m.contains(ip("200.1.1.1")));
        assert!(!m.contains(ip("::1")));
    }

    #[test]
    fn host_prefixes() {
        let m = PrefixMap::new([
            (net("192.0.2.1/32"), 1u8),
            (net("255.255.255.255/32"), 2),
            (net("0.0.0.0/32"), 3),
            (net("2001:db8::1/128"), 4),
            (net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 5),
        ]);
        assert_eq!(m.get(ip("192.0.2.1")), Some(1));
        assert_eq!(m.get(ip("192.0.2.0")), None);
        assert_eq!(m.get(ip("192.0.2.2")), None);
        assert_eq!(m.get(ip("255.255.255.255")), Some(2));
        assert_eq!(m.get(ip("255.255.255.254")), None);
        assert_eq!(m.get(ip("0.0.0.0")), Some(3));
        assert_eq!(m.get(ip("0.0.0.1")), None);
        assert_eq!(m.get(ip("2001:db8::1")), Some(4));
        assert_eq!(m.get(ip("2001:db8::2")), None);
        assert_eq!(m.get(ip("2001:db8::")), None);
        assert_eq!(
            m.get(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
            Some(5)
        );
        assert_eq!(m.v4_prefixes(), 3);
        assert_eq!(m.v6_prefixes(), 2);
    }

    #[test]
    fn longest_prefix_wins_and_nesting_unwinds() {
        let m = PrefixMap::new([
            (net("10.0.0.0/8"), 8u8),
            (net("10.1.0.0/16"), 16),
            (net("10.1.2.0/24"), 24),
            (net("10.1.2.128/25"), 25),
            (net("10.200.0.0/16"), 17),
            (net("0.0.0.0/0"), 0),
        ]);
        assert_eq!(m.get(ip("9.255.255.255")), Some(0));
        assert_eq!(m.get(ip("10.0.0.0")), Some(8));
        assert_eq!(m.get(ip("10.1.0.0")), Some(16));
        assert_eq!(m.get(ip("10.1.2.0")), Some(24));
        assert_eq!(m.get(ip("10.1.2.127")), Some(24));
        assert_eq!(m.get(ip("10.1.2.128")), Some(25));
        assert_eq!(m.get(ip("10.1.2.255")), Some(25));
        assert_eq!(m.get(ip("10.1.3.0")), Some(16));
        assert_eq!(m.get(ip("10.2.0.0")), Some(8));
        assert_eq!(m.get(ip("10.200.5.5")), Some(17));
        assert_eq!(m.get(ip("10.201.0.0")), Some(8));
        assert_eq!(m.get(ip("11.0.0.0")), Some(0));
        assert_eq!(m.get(ip("::")), None);
    }

    #[test]
    fn first_of_identical_prefixes_wins_and_order_does_not_matter() {
        let m = PrefixMap::new([
            (net("10.1.2.0/24"), 2u8),
            (net("10.0.0.0/8"), 1),
            (net("10.1.2.9/24"), 3),
        ]);
        assert_eq!(m.get(ip("10.1.2.1")), Some(2));
        assert_eq!(m.get(ip("10.9.9.9")), Some(1));
        assert_eq!(m.v4_prefixes(), 2);
    }

    #[test]
    fn overlapping_set_members_merge() {
        let m = PrefixMap::new([
            (net("10.0.0.0/8"), ()),
            (net("10.1.0.0/16"), ()),
            (net("11.0.0.0/8"), ()),
            (net("2001:db8::/32"), ()),
            (net("2001:db8:1::/48"), ()),
        ]);
        // 0, 10/8 + 11/8 merged, end; IPv6: 0, start, end.
        assert_eq!(m.boundaries(), 3 + 3);
        assert!(m.contains(ip("10.255.255.255")));
        assert!(m.contains(ip("11.0.0.0")));
        assert!(m.contains(ip("11.255.255.255")));
        assert!(!m.contains(ip("12.0.0.0")));
        assert!(!m.contains(ip("9.255.255.255")));
        assert!(m.contains(ip("2001:db8:ffff::1")));
        assert!(!m.contains(ip("2001:db9::")));
    }

    #[test]
    fn families_are_separate() {
        let m = PrefixMap::new([(net("::/96"), ())]);
        assert!(m.contains(ip("::10.0.0.1")));
        assert!(!m.contains(ip("10.0.0.1")));
    }

    /// A tiny deterministic generator for the property tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    fn random_net(r: &mut XorShift) -> IpNet {
        let base = r.next();
        if r.next() % 3 < 1 {
            let hi = u128::from(r.next());
            let a = (hi << 64) | u128::from(base);
            // Cluster under a few top bits so that nesting happens.
            let a = a & !(0xfffu128 << 116) | (u128::from(r.next() % 4) << 116);
            let len = u8::try_from(r.next() % 129).unwrap();
            IpNet::new(IpAddr::V6(a.into()), len).unwrap()
        } else {
            // Within 0.0.0.0/4 so that nesting happens.
            let a = u32::try_from(base & 0x0fff_ffff).unwrap();
            let len = u8::try_from(r.next() % 33).unwrap();
            IpNet::new(IpAddr::V4(a.into()), len).unwrap()
        }
    }

    fn oracle(nets: &[(IpNet, u32)], a: IpAddr) -> Option<u32> {
        let mut best: Option<(u8, u32)> = None;
        for &(n, v) in nets {
            if n.contains(a) && best.is_none_or(|(l, _)| n.len > l) {
                best = Some((n.len, v));
            }
        }
        best.map(|(_, v)| v)
    }

    #[test]
    fn matches_a_linear_oracle() {
        let mut r = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let n = 1 + (round * 7) % 200;
            let nets: Vec<(IpNet, u32)> = (0..n)
                .map(|i| (random_net(&mut r), u32::try_from(i).unwrap()))
                .collect();
            let m = PrefixMap::new(nets.iter().copied());
            for _ in 0..500 {
                // Probe near prefixes (their first, last and a random address) and at random.
                let pick = nets[usize::try_from(r.next()).unwrap() % n].0;
                let (bits, width) = addr_bits(pick.addr);
                let mask = prefix_mask(width, pick.len);
                let all = prefix_mask(width, width);
                let host = u128::from(r.next()) | (u128::from(r.next()) << 64);
                let probes = [
                    bits & mask,
                    (bits & mask) | (!mask & all),
                    ((bits & mask) | (host & !mask)) & all,
                    (bits & mask).wrapping_sub(1) & all,
                    ((bits & mask) | (!mask & all)).wrapping_add(1) & all,
                ];
                for p in probes {
                    let a = if width == 32 {
                        IpAddr::V4(u32::try_from(p).unwrap().into())
                    } else {
                        IpAddr::V6(p.into())
                    };
                    assert_eq!(m.get(a), oracle(&nets, a), "{a} in round {round}");
                }
            }
        }
    }

    #[test]
    fn parents_of_nested_prefixes() {
        let nets = [
            net("10.1.2.0/24"),
            net("10.0.0.0/8"),
            net("10.1.0.0/16"),
            net("11.0.0.0/8"),
            net("::/0"),
            net("2001:db8::/32"),
            net("10.1.0.0/16"),
        ];
        let p = parents(&nets);
        assert_eq!(
            p,
            vec![Some(6), None, Some(1), None, None, Some(4), Some(2)]
        );
    }
}
