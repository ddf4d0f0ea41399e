//! Checksums: the Internet checksum (RFC 1071) for IPv4/TCP/UDP/ICMP and CRC32c (RFC 9260
//! appendix A) for SCTP.
//!
//! The parser verifies only the IPv4 header checksum (see the crate documentation for why); the
//! rest is here for the frame builder, which must emit frames a real stack accepts.

use core::net::{Ipv4Addr, Ipv6Addr};

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded with zero),
/// not yet folded. A u64 accumulator cannot overflow for any buffer this crate handles.
///
/// Adds 32-bit words: since 2^16 ≡ 1 (mod 2^16 - 1), a 32-bit word contributes the same as its
/// two halves, and the folded result is identical (RFC 1071 §2(C)); half the additions.
#[inline]
pub fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    match *words.remainder() {
        [a, b, c] => acc += u64::from(u16::from_be_bytes([a, b])) + u64::from(u16::from_be_bytes([c, 0])),
        [a, b] => acc += u64::from(u16::from_be_bytes([a, b])),
        [a] => acc += u64::from(u16::from_be_bytes([a, 0])),
        _ => {}
    }
    acc
}

/// Fold a one's-complement accumulator to 16 bits (without complementing).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff, so the conversion cannot fail.
    u16::try_from(acc).unwrap_or(u16::MAX)
}

/// The Internet checksum of `data`: the complement of the folded sum.
pub fn internet(data: &[u8]) -> u16 {
    !fold(sum(data))
}

/// Sum of the IPv4 pseudo-header used by TCP and UDP (RFC 793 §3.1, RFC 768).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(protocol) + u64::from(length)
}

/// Sum of the IPv6 pseudo-header used by TCP, UDP and ICMPv6 (RFC 8200 §8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, length: u32) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + sum(&length.to_be_bytes()) + u64::from(next_header)
}

/// CRC32c lookup table, computed at compile time (Castagnoli polynomial, reflected 0x82F63B78).
static CRC32C_TABLE: [u32; 256] = crc32c_table();

// Evaluated by the compiler: an out-of-range index here is a compile error, never a run-time panic,
// which is why indexing is allowed in this one const fn.
#[allow(clippy::indexing_slicing)]
const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut c = i;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            k += 1;
        }
        table[i as usize] = c;
        i += 1;
    }
    table
}

/// CRC32c (with the standard initial value and final complement): `crc32c(b"123456789") == 0xE3069283`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        let idx = usize::from(crc.to_le_bytes()[0] ^ b);
        crc = CRC32C_TABLE.get(idx).copied().unwrap_or(0) ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn internet_checksum_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(internet(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12]), 0x1200);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn fold_carries_repeatedly() {
        // 0x1_ffff -> 0xffff + 1 = 0x1_0000 -> 0x0000 + 1.
        assert_eq!(fold(0x1_ffff), 1);
        assert_eq!(fold(0xffff_ffff_ffff), 0xffff);
    }

    #[test]
    fn word_size_does_not_change_the_folded_sum() {
        // Reference: 16-bit words, every length 0..64 and a pattern that produces carries.
        let data: std::vec::Vec<u8> = (0..64u32).map(|i| (i * 37 + 200) as u8).collect();
        for n in 0..data.len() {
            let mut reference: u64 = 0;
            for pair in data[..n].chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                reference += hi + pair.get(1).map_or(0, |&b| u64::from(b));
            }
            assert_eq!(fold(sum(&data[..n])), fold(reference), "length {n}");
        }
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }
}
