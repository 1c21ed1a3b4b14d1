//! The engine's only notion of time: a value the caller passes in.
//!
//! The engine never reads a clock. Replay passes capture timestamps, tests pass a simulated
//! clock, and the live dataplane passes a monotonic reading. Any epoch works as long as it does
//! not go backwards by much; entries store expiry in whole seconds of this clock.

use core::fmt;

/// A point in time, in nanoseconds since an epoch the caller chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    pub const fn from_secs(secs: u64) -> Time {
        Time(secs.saturating_mul(1_000_000_000))
    }

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1_000_000))
    }

    /// Seconds and a sub-second part in nanoseconds, as capture files store them.
    pub const fn from_secs_nanos(secs: u64, nanos: u32) -> Time {
        Time(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(nanos as u64),
        )
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    pub fn as_secs_f64(self) -> f64 {
        // Precision loss is fine: this is for display and traces only.
        #[allow(clippy::cast_precision_loss)]
        let s = self.0 as f64 / 1e9;
        s
    }

    /// Whole seconds, clamped to the range entries store.
    pub(crate) fn secs_u32(self) -> u32 {
        u32::try_from(self.as_secs()).unwrap_or(u32::MAX)
    }

    pub const fn saturating_add_secs(self, secs: u64) -> Time {
        Time(self.0.saturating_add(secs.saturating_mul(1_000_000_000)))
    }

    pub const fn saturating_sub(self, other: Time) -> u64 {
        self.0.saturating_sub(other.0)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}
