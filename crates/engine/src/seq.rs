//! TCP sequence-number arithmetic modulo 2^32 (RFC 793 section 3.3). Window checks never
//! compare raw `u32`s; they go through these.

/// `a` comes strictly before `b` in sequence space.
#[inline(always)]
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes strictly after `b` in sequence space.
#[inline(always)]
pub(crate) fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        assert!(before(0xffff_fff0, 0x10));
        assert!(after(0x10, 0xffff_fff0));
        assert!(!before(5, 5));
        assert!(!after(5, 5));
    }
}
