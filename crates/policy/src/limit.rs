//! Token-bucket rate limits (nftables' `limit rate N/period burst B packets`), per rule or per
//! source address, in integer nanoseconds under the caller's clock.
//!
//! A bucket holds up to `burst` packets' worth of tokens and starts full. Time refills it at
//! `count` packets per `per`; a packet passes when a whole packet's worth is there. Tokens are
//! kept in units of `1 / count` nanosecond-packets (one packet costs `per` units, one
//! nanosecond adds `count` units), so the arithmetic is exact integers with no rounding drift.
//! A `burst` of 0 behaves as 1 (otherwise nothing could ever pass). A `per` of 0 means no
//! limit. A clock that steps backwards refills nothing until it passes its latest reading
//! again.
//!
//! # Per-source limits and bounded memory
//!
//! [`PerSource`] keeps one bucket per source address in a fixed-size, 8-way set-associative
//! table: a keyed hash of the address picks a set of 8 slots and the address is stored in
//! full, so two sources never share a bucket by accident. Memory is fixed when the table is
//! built (40 bytes a slot); a source that is not in its set takes a slot:
//!
//! 1. an empty slot, else
//! 2. a slot whose bucket has refilled to full while idle: it holds no information that a
//!    fresh bucket would not, so recycling it changes nothing for anyone, else
//! 3. the least recently used slot of the set. The newcomer **inherits that bucket's tokens**
//!    (refilled to now) instead of a fresh burst.
//!
//! Rule 3 is the trade-off. Without it, an attacker cycling through more sources than a set
//! holds would get a fresh burst for every packet and the limit would vanish. With it, the
//! sources sharing a set can never together get more than the set's 8 buckets refill, so
//! across the table the limit is at worst `capacity` times the per-source rate (and bursts),
//! exactly what `capacity` distinct well-behaved sources could use. The cost falls on a
//! legitimate new source arriving while its set is full of busy sources: it starts with
//! whatever the evicted bucket had left, possibly nothing, and passes once time refills it,
//! as an over-limit source would. A source that is evicted and returns gets no more than a
//! slot that was idle long enough to refill, which the bound above already counts.
//!
//! The hash is keyed ([`PerSource::with_key`]); [`PerSource::new`] uses a fixed key
//! ([`DEFAULT_KEY`]). With a known key an attacker can aim sources at one set and, by rule 3,
//! starve the legitimate sources of that set (not others, and not beyond the limit); pass a
//! secret key (the binary takes one from the OS random source) where that matters.

use crate::model::Limit;
use core::net::IpAddr;
use keepstate_engine::Time;

/// Slots in a set of a [`PerSource`] table.
pub const WAYS: usize = 8;

/// Per-source buckets a rule's [`Limiter`] keeps (about 160 KiB).
pub const DEFAULT_PER_SOURCE_CAPACITY: usize = 4096;

/// The hash key [`PerSource::new`] and [`Limiter::new`] use. Not secret: see the module
/// documentation.
pub const DEFAULT_KEY: [u64; 4] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
];

/// The parameters of a bucket, shared by every bucket of a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rate {
    /// Units one packet costs (the period in nanoseconds).
    cost: u64,
    /// Units one nanosecond adds (packets per period).
    refill: u64,
    /// Most units a bucket holds (`burst` packets, at least 1).
    cap: u64,
}

impl Rate {
    fn new(l: &Limit) -> Rate {
        let cost = l.per.as_nanos();
        Rate {
            cost,
            refill: u64::from(l.count),
            cap: cost.saturating_mul(u64::from(l.burst.max(1))),
        }
    }

    /// `tokens` after time went from `last` to `now`.
    #[inline]
    fn refilled(self, tokens: u64, last: u64, now: u64) -> u64 {
        let dt = now.saturating_sub(last);
        let add = u128::from(dt) * u128::from(self.refill);
        let t = u128::from(tokens)
            .saturating_add(add)
            .min(u128::from(self.cap));
        u64::try_from(t).unwrap_or(self.cap)
    }

    /// Refills to `now`, then takes one packet's worth if there is one.
    #[inline]
    fn take(self, tokens: &mut u64, last: &mut u64, now: u64) -> bool {
        *tokens = self.refilled(*tokens, *last, now);
        *last = (*last).max(now);
        if *tokens >= self.cost {
            *tokens -= self.cost;
            true
        } else {
            false
        }
    }
}

/// One token bucket.
#[derive(Clone, Copy, Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: u64,
    last: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(l: &Limit) -> Bucket {
        let rate = Rate::new(l);
        Bucket {
            rate,
            tokens: rate.cap,
            last: 0,
        }
    }

    /// Whether a packet at `now` is within the limit (and if so, spends its token).
    #[inline]
    pub fn allow(&mut self, now: Time) -> bool {
        self.rate
            .take(&mut self.tokens, &mut self.last, now.as_nanos())
    }
}

/// A slot of a [`PerSource`] table.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The source: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
    addr: [u64; 2],
    tokens: u64,
    last: u64,
    used: bool,
}

/// One bucket per source address in a fixed-size table (see the module documentation).
#[derive(Clone, Debug)]
pub struct PerSource {
    rate: Rate,
    slots: Vec<Slot>,
    /// Sets minus one (a power of two).
    set_mask: u64,
    hasher: ahash::RandomState,
}

impl PerSource {
    /// A table of at least `capacity` buckets (rounded up to a power of two, at least one
    /// set of [`WAYS`]), hashed with [`DEFAULT_KEY`].
    pub fn new(l: &Limit, capacity: usize) -> PerSource {
        PerSource::with_key(l, capacity, DEFAULT_KEY)
    }

    /// As [`PerSource::new`] with a secret hash key.
    pub fn with_key(l: &Limit, capacity: usize, key: [u64; 4]) -> PerSource {
        let sets = capacity.div_ceil(WAYS).max(1).next_power_of_two();
        PerSource {
            rate: Rate::new(l),
            slots: vec![Slot::default(); sets.saturating_mul(WAYS)],
            set_mask: u64::try_from(sets - 1).unwrap_or(0),
            hasher: ahash::RandomState::with_seeds(key[0], key[1], key[2], key[3]),
        }
    }

    /// Buckets the table holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Sources that currently have a bucket.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a packet from `src` at `now` is within its source's limit.
    pub fn allow(&mut self, src: IpAddr, now: Time) -> bool {
        let addr = match src {
            IpAddr::V4(v) => v.to_ipv6_mapped(),
            IpAddr::V6(v) => v,
        };
        let bits = u128::from(addr);
        let key = [
            u64::try_from(bits >> 64).unwrap_or(0),
            u64::try_from(bits & u128::from(u64::MAX)).unwrap_or(0),
        ];
        let set = self.hasher.hash_one(key) & self.set_mask;
        let start = usize::try_from(set).unwrap_or(0).saturating_mul(WAYS);
        let rate = self.rate;
        let now = now.as_nanos();
        let Some(ways) = self.slots.get_mut(start..start.saturating_add(WAYS)) else {
            return true;
        };

        if let Some(s) = ways.iter_mut().find(|s| s.used && s.addr == key) {
            return rate.take(&mut s.tokens, &mut s.last, now);
        }

        // A new source: an empty slot, else an idle full one, else the least recently used,
        // whose tokens it inherits.
        let mut victim = 0;
        let mut inherit = None;
        let mut oldest = u64::MAX;
        for (i, s) in ways.iter().enumerate() {
            if !s.used {
                victim = i;
                inherit = None;
                break;
            }
            let t = rate.refilled(s.tokens, s.last, now);
            if t >= rate.cap {
                victim = i;
                inherit = None;
                break;
            }
            if s.last < oldest {
                oldest = s.last;
                victim = i;
                inherit = Some(t);
            }
        }
        let Some(s) = ways.get_mut(victim) else {
            return true;
        };
        *s = Slot {
            addr: key,
            tokens: inherit.unwrap_or(rate.cap),
            last: now.max(s.last),
            used: true,
        };
        rate.take(&mut s.tokens, &mut s.last, now)
    }
}

#[derive(Clone, Debug)]
enum Inner {
    Rule(Bucket),
    PerSource(Box<PerSource>),
}

/// A rule's limit: one bucket, or one per source address when [`Limit::per_source`] is set.
#[derive(Clone, Debug)]
pub struct Limiter(Inner);

impl Limiter {
    /// Per-source limits get [`DEFAULT_PER_SOURCE_CAPACITY`] buckets and [`DEFAULT_KEY`].
    pub fn new(l: &Limit) -> Limiter {
        Limiter::with_table(l, DEFAULT_PER_SOURCE_CAPACITY, DEFAULT_KEY)
    }

    /// Per-source limits get a table of `capacity` buckets hashed with `key`.
    pub fn with_table(l: &Limit, capacity: usize, key: [u64; 4]) -> Limiter {
        if l.per_source {
            Limiter(Inner::PerSource(Box::new(PerSource::with_key(
                l, capacity, key,
            ))))
        } else {
            Limiter(Inner::Rule(Bucket::new(l)))
        }
    }

    #[inline]
    pub fn allow(&mut self, src: IpAddr, now: Time) -> bool {
        match &mut self.0 {
            Inner::Rule(b) => b.allow(now),
            Inner::PerSource(t) => t.allow(src, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(count: u32, per_ms: u64, burst: u32, per_source: bool) -> Limit {
        Limit {
            count,
            per: Time::from_millis(per_ms),
            burst,
            per_source,
        }
    }

    #[test]
    fn burst_then_rate() {
        // 10 per second, burst 3.
        let mut b = Bucket::new(&limit(10, 1000, 3, false));
        let t0 = Time::from_secs(100);
        assert!(b.allow(t0));
        assert!(b.allow(t0));
        assert!(b.allow(t0));
        assert!(!b.allow(t0));
        // One token every 100 ms.
        assert!(!b.allow(Time::from_nanos(t0.as_nanos() + 99_999_999)));
        assert!(b.allow(Time::from_nanos(t0.as_nanos() + 100_000_000)));
        assert!(!b.allow(Time::from_nanos(t0.as_nanos() + 100_000_001)));
        // Long idle refills to the burst, not beyond.
        let t1 = Time::from_secs(1000);
        for _ in 0..3 {
            assert!(b.allow(t1));
        }
        assert!(!b.allow(t1));
    }

    #[test]
    fn fractional_rates_do_not_drift() {
        // 3 per second: a token every 333,333,333.3 ns.
        let mut b = Bucket::new(&limit(3, 1000, 1, false));
        let mut passed = 0;
        for ms in 0..10_000u64 {
            if b.allow(Time::from_millis(ms)) {
                passed += 1;
            }
        }
        // The first from the burst, then 3 per second over 9.999 s.
        assert_eq!(passed, 1 + 29);
    }

    #[test]
    fn zero_burst_and_zero_period() {
        let mut b = Bucket::new(&limit(1, 1000, 0, false));
        assert!(b.allow(Time::ZERO));
        assert!(!b.allow(Time::ZERO));
        let mut free = Bucket::new(&limit(1, 0, 1, false));
        for _ in 0..100 {
            assert!(free.allow(Time::ZERO));
        }
    }

    #[test]
    fn clock_going_back_refills_nothing() {
        let mut b = Bucket::new(&limit(1, 1000, 1, false));
        assert!(b.allow(Time::from_secs(10)));
        assert!(!b.allow(Time::from_secs(5)));
        assert!(!b.allow(Time::from_millis(10_500)));
        assert!(b.allow(Time::from_secs(11)));
    }

    #[test]
    fn per_source_table_is_bounded_and_never_refreshes_busy_sources() {
        let l = limit(1, 1000, 2, true);
        let mut t = PerSource::new(&l, 16);
        assert_eq!(t.capacity(), 16);
        let now = Time::from_secs(1);
        // 10,000 distinct sources, each sending 3 packets at the same instant.
        let mut passed = 0;
        for i in 0..10_000u32 {
            let src = IpAddr::V4((0x0a00_0000 + i).into());
            for _ in 0..3 {
                if t.allow(src, now) {
                    passed += 1;
                }
            }
        }
        assert_eq!(t.len(), 16);
        // At most the table's buckets' bursts: 16 slots of 2 packets.
        assert!(passed <= 16 * 2, "{passed}");
        assert!(passed >= 2);
    }
}
