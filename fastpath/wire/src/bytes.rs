//! Panic-free byte access: every read and slice of a packet buffer in this crate goes through these
//! helpers, which is what allows `clippy::indexing_slicing` to be denied crate-wide.
//!
//! A read outside the buffer yields zero (or an empty slice) instead of panicking. That only happens
//! on a view built with `new_unchecked` over a short buffer: after `new_checked` every field lies
//! inside the buffer, so the fallback is dead code, or at worst a well-predicted branch where the
//! optimiser cannot prove it dead (the same branch a bounds check would cost).

use core::ops::Range;

/// A byte range of a header field, relative to the start of that header.
pub type Field = Range<usize>;

/// The byte at `at`, or 0 when `at` is past the end.
#[inline(always)]
pub(crate) fn u8_at(data: &[u8], at: usize) -> u8 {
    data.get(at).copied().unwrap_or(0)
}

/// The bytes of `field` as an array, or zeros when the field is not (entirely) inside `data`.
#[inline(always)]
pub(crate) fn array<const N: usize>(data: &[u8], field: Field) -> [u8; N] {
    match data.get(field).and_then(|s| <&[u8; N]>::try_from(s).ok()) {
        Some(a) => *a,
        None => [0; N],
    }
}

/// Big-endian u16 at `field` (network byte order), 0 when out of range.
#[inline(always)]
pub(crate) fn u16_at(data: &[u8], field: Field) -> u16 {
    u16::from_be_bytes(array(data, field))
}

/// Big-endian u32 at `field`, 0 when out of range.
#[inline(always)]
pub(crate) fn u32_at(data: &[u8], field: Field) -> u32 {
    u32::from_be_bytes(array(data, field))
}

/// `data[from..]`, or empty when `from` is past the end.
#[inline(always)]
pub(crate) fn rest(data: &[u8], from: usize) -> &[u8] {
    data.get(from..).unwrap_or(&[])
}

/// `data[from..to]` clamped to the buffer: never panics, even when `from > to`.
#[inline(always)]
pub(crate) fn span(data: &[u8], from: usize, to: usize) -> &[u8] {
    let to = to.min(data.len());
    data.get(from..to).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inside_and_outside() {
        let d = [1u8, 2, 3, 4, 5];
        assert_eq!(u8_at(&d, 4), 5);
        assert_eq!(u8_at(&d, 5), 0);
        assert_eq!(u16_at(&d, 0..2), 0x0102);
        assert_eq!(u16_at(&d, 4..6), 0);
        assert_eq!(u32_at(&d, 1..5), 0x0203_0405);
        assert_eq!(u32_at(&d, usize::MAX - 1..usize::MAX), 0);
        assert_eq!(rest(&d, 3), &[4, 5]);
        assert_eq!(rest(&d, 9), &[] as &[u8]);
        assert_eq!(span(&d, 1, 3), &[2, 3]);
        assert_eq!(span(&d, 3, 100), &[4, 5]);
        assert_eq!(span(&d, 4, 2), &[] as &[u8]);
    }
}
