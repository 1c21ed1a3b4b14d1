//! The Internet checksum (RFC 1071): a one's-complement sum, accumulated 32 bits at a time in
//! a 64-bit register so carries are folded once at the end.

/// Adds `data` to a running sum. Odd-length data is padded with a zero byte, so only the last
/// chunk passed to a sum may be odd.
#[inline]
pub fn add(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    // At most three bytes remain: handle them without a variable-length copy.
    match *chunks.remainder() {
        [a] => sum += u64::from(a) << 8,
        [a, b] => sum += u64::from(u16::from_be_bytes([a, b])),
        [a, b, c] => sum += u64::from(u16::from_be_bytes([a, b])) + (u64::from(c) << 8),
        _ => {}
    }
    sum
}

/// [`add`] for the engine's per-packet checks, over `data` as it lies in memory: sixteen
/// bytes at a time into two sums with end-around carries, with no byte swaps. Summed in the
/// machine's byte order, the result is [`add`]'s byte-swapped on a little-endian machine (RFC
/// 1071, 2(B)), which a check against all ones cannot tell apart; a term added to it must be
/// given the same way ([`word`]). It is congruent modulo 0xffff to the sum of `data`'s 16-bit
/// words as they lie, is zero exactly when `data` is all zeros and stays below 2^33, so
/// [`verifies_fast`] gives [`verifies`]'s answer for it and small terms can be added to it
/// without overflow.
#[inline(always)]
pub(crate) fn sum(data: &[u8]) -> u64 {
    // 2^64 is 1 modulo 0xffff, so a carry out of the top goes back in at the bottom.
    #[inline(always)]
    fn add64(acc: u64, w: u64) -> u64 {
        let (s, carry) = acc.overflowing_add(w);
        // `s` is at most 2^64 - 2 after a carry, so this cannot overflow.
        s + u64::from(carry)
    }
    let (mut a, mut b) = (0u64, 0u64);
    let mut r = data;
    while let Some((w, rest)) = r.split_first_chunk::<16>() {
        // Both halves of a 16-byte array: always there, so no test is left after compiling.
        if let (Some(x), Some(y)) = (w.first_chunk::<8>(), w.last_chunk::<8>()) {
            a = add64(a, u64::from_ne_bytes(*x));
            b = add64(b, u64::from_ne_bytes(*y));
        }
        r = rest;
    }
    // 2^16 is 1 modulo 0xffff, so what is left is added in aligned pieces unshifted.
    if let Some((w, rest)) = r.split_first_chunk::<8>() {
        b = add64(b, u64::from_ne_bytes(*w));
        r = rest;
    }
    // Fewer than eight bytes are left. With eight or more in all, they are the end of
    // the last eight, read in one load and shifted so that only they remain, where they
    // lie in their 8-byte group (which starts 8-aligned in `data`): no test per size. An
    // odd last byte is then followed by a zero, the padding it needs.
    if let Some(last) = data.last_chunk::<8>() {
        let x = u64::from_ne_bytes(*last);
        // `r.len()` is below 8, so `drop` is 8 to 64 bits; 64 (nothing left) gives 0.
        #[allow(clippy::cast_possible_truncation)]
        let drop = (8 * (8 - r.len())) as u32;
        let tail = if cfg!(target_endian = "little") {
            x.checked_shr(drop)
        } else {
            x.checked_shl(drop)
        }
        .unwrap_or(0);
        let acc = add64(add64(a, b), tail);
        return (acc & 0xffff_ffff) + (acc >> 32);
    }
    let mut tail = 0u64;
    if let Some((w, rest)) = r.split_first_chunk::<4>() {
        tail += u64::from(u32::from_ne_bytes(*w));
        r = rest;
    }
    if let Some((w, rest)) = r.split_first_chunk::<2>() {
        tail += u64::from(u16::from_ne_bytes(*w));
        r = rest;
    }
    // An odd last byte is the first byte of its word, padded with a zero.
    if let [last] = r {
        tail += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    let acc = add64(add64(a, b), tail);
    (acc & 0xffff_ffff) + (acc >> 32)
}

/// For a plain IPv4 header `h` (20 bytes, no options) and the transport bytes `l4` its
/// packet's transport checksum covers: whether the header's checksum verifies, and, as
/// [`sum`] gives sums, the sum of `l4` and of the pseudo-header's addresses (not its
/// protocol and length). The addresses are both the header's last eight bytes and the
/// pseudo-header's first: summed once for both.
#[inline(always)]
pub(crate) fn sums_v4(h: &[u8; 20], l4: &[u8]) -> (bool, u64) {
    let word = |i: usize| {
        h.get(i..i + 4)
            .and_then(|w| w.try_into().ok())
            .map_or(0, |w: [u8; 4]| u64::from(u32::from_ne_bytes(w)))
    };
    // 2^16 is 1 modulo 0xffff: 32-bit words sum as their 16-bit halves would.
    let addrs = word(12) + word(16);
    let rest = word(0) + word(4) + word(8);
    (verifies_fast(rest + addrs), addrs + sum(l4))
}

/// The 16-bit big-endian word `v` as [`sum`] reads it from memory.
#[inline(always)]
pub(crate) fn word(v: u16) -> u64 {
    u64::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// A checksum after adding a folded `~m + m'` sum to it (RFC 1624, equation 3). For a UDP
/// checksum (`udp`), zero (none sent) stays zero and a computed zero is sent as all ones.
#[inline(always)]
pub fn add_folded(old: u16, sum: u16, udp: bool) -> u16 {
    if udp && old == 0 {
        return old;
    }
    // `~old + sum` with its one possible carry folded back in. A zero `sum` gives `old`
    // back unchanged, so it needs no test of its own.
    let (t, carry) = (!old).overflowing_add(sum);
    let new = !t.wrapping_add(u16::from(carry));
    if udp && new == 0 {
        0xffff
    } else {
        new
    }
}

/// [`add_folded`] applied to the big-endian checksum at `at` of `buf`; nothing happens if
/// `buf` is too short to hold it.
#[inline(always)]
pub fn add_folded_at(buf: &mut [u8], at: usize, sum: u16, udp: bool) {
    if let Some(field) = buf.get_mut(at..at + 2) {
        let old = u16::from_be_bytes([field[0], field[1]]);
        field.copy_from_slice(&add_folded(old, sum, udp).to_be_bytes());
    }
}

/// [`add_folded_at`] with the sum given as it would lie in a packet (big-endian). A
/// one's-complement sum comes out the same in either byte order, byte-swapped (RFC 1071,
/// 2(B)), so the field and the sum are added as they lie, without swapping either; the two
/// values a UDP checksum treats specially, 0 and 0xffff, read the same both ways round.
#[inline(always)]
pub fn add_folded_wire_at(buf: &mut [u8], at: usize, sum: [u8; 2], udp: bool) {
    if let Some(field) = buf.get_mut(at..at + 2) {
        let old = u16::from_ne_bytes([field[0], field[1]]);
        let new = add_folded(old, u16::from_ne_bytes(sum), udp);
        field.copy_from_slice(&new.to_ne_bytes());
    }
}

/// Folds a running sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let s = sum as u16;
    s
}

/// The pseudo-header sum for a transport checksum. `addr_len` is 4 for IPv4, 16 for IPv6.
#[inline]
pub fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, l4_len: u32) -> u64 {
    let s = add(add(0, src), dst);
    s + u64::from(proto) + u64::from(l4_len)
}

/// [`verifies`] for a sum from [`sum`] (below 2^34): three folds always suffice.
#[inline(always)]
pub(crate) fn verifies_fast(sum: u64) -> bool {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s == 0xffff
}

/// True when data (with its checksum field in place) sums to all ones.
#[inline]
pub fn verifies(sum: u64) -> bool {
    fold(sum) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(add(0, &data)), 0xddf2);
    }

    #[test]
    fn fast_sum_agrees() {
        let mut x = 0x1234_5678_9abc_def1_u64;
        for len in 0..200usize {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x.to_le_bytes()[0]
                })
                .collect();
            // `sum` reads the words as they lie: its fold is `add`'s as the bytes lie.
            let as_lies = |v: u16| u16::from_ne_bytes(v.to_be_bytes());
            assert_eq!(fold(sum(&data)), as_lies(fold(add(0, &data))), "len {len}");
            assert_eq!(verifies_fast(sum(&data)), verifies(add(0, &data)));
            let big = sum(&data) + (0xffff_fffe_u64 << 1) + 0xffff;
            assert_eq!(fold(big) == 0xffff, verifies_fast(big));
            let ones = vec![0xffu8; len];
            assert_eq!(fold(sum(&ones)), as_lies(fold(add(0, &ones))), "ones {len}");
            assert_eq!(verifies_fast(sum(&ones)), verifies(add(0, &ones)));
            let zeros = vec![0u8; len];
            assert_eq!(sum(&zeros), 0);
        }
    }

    /// Adding a sum to a field as they lie (byte-swapped, on a little-endian machine) gives
    /// the bytes that adding them as big-endian numbers gives, for every field value, the
    /// two special UDP values included, and a spread of sums.
    #[test]
    fn adding_as_the_bytes_lie_agrees_with_big_endian() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut sums = vec![0u16, 1, 0xfffe, 0xffff, 0x8000, 0x00ff, 0xff00];
        for _ in 0..64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sums.push((x >> 48) as u16);
        }
        for old in 0..=u16::MAX {
            for &sum in &sums {
                for udp in [false, true] {
                    let mut a = old.to_be_bytes();
                    let mut b = a;
                    add_folded_at(&mut a, 0, sum, udp);
                    add_folded_wire_at(&mut b, 0, sum.to_be_bytes(), udp);
                    assert_eq!(a, b, "old {old:#06x} sum {sum:#06x} udp {udp}");
                }
            }
        }
    }

    /// `sums_v4` against `add` over the same bytes: the header's verdict, and the
    /// transport's sum with the addresses, for headers that verify and ones that do not
    /// and transports of every length up to 100 bytes (odd ones included).
    #[test]
    fn ipv4_sums_agree() {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        };
        let as_lies = |v: u16| u16::from_ne_bytes(v.to_be_bytes());
        for len in 0..100usize {
            for good in [false, true] {
                let mut h = [0u8; 20];
                h.iter_mut().for_each(|b| *b = next());
                if good {
                    h[10..12].fill(0);
                    let c = !fold(add(0, &h));
                    h[10..12].copy_from_slice(&c.to_be_bytes());
                }
                let l4: Vec<u8> = (0..len).map(|_| next()).collect();
                let (ok, s) = sums_v4(&h, &l4);
                assert_eq!(ok, verifies(add(0, &h)), "len {len}");
                assert!(!good || ok);
                let want = fold(add(add(0, &h[12..]), &l4));
                assert_eq!(fold(s), as_lies(want), "len {len}");
            }
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }
}
