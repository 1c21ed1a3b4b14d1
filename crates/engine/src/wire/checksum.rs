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
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(add(0, &[0x12, 0x34, 0x56])), 0x1234 + 0x5600);
    }
}
