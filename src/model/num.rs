//! Number conversions that say what happens at the edges. A plain `as` between integer widths
//! wraps or truncates silently; these saturate (or clamp at zero) instead, so a huge duration
//! or a negative database integer cannot turn into a small wrong number. The crate warns on
//! lossy `as` casts; use these.

use std::time::Duration;

/// A duration in whole milliseconds, saturating at `u64::MAX` (584 million years).
#[inline]
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A duration in whole microseconds, saturating at `u64::MAX`.
#[inline]
pub fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// An unsigned count as a signed one (databases store `i64`), saturating at `i64::MAX`.
#[inline]
pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A signed value as an unsigned one: negatives become 0.
#[inline]
pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A length as a `u64` (lossless on every supported target; saturating elsewhere).
#[inline]
pub fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A `u64` as an index or length, saturating at `usize::MAX`.
#[inline]
pub fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A length as a `u16` (terminal cells), saturating at `u16::MAX`.
#[inline]
pub fn to_u16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// A length as a `u32`, saturating at `u32::MAX`.
#[inline]
pub fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A float as a `u64`: rounded toward zero, negatives and NaN become 0, too large becomes
/// `u64::MAX` — the semantics of `as` since Rust 1.45, which is what every caller wants.
#[inline]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn f64_to_u64(v: f64) -> u64 {
    v as u64
}

/// `n` with its digits in groups of three: `grouped(1234567, ',')` is `1,234,567`.
pub fn grouped(n: u64, separator: char) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(separator);
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ms(Duration::MAX), u64::MAX);
        assert_eq!(to_i64(u64::MAX), i64::MAX);
        assert_eq!(to_u64(-5), 0);
        assert_eq!(to_u16(70_000), u16::MAX);
        assert_eq!(f64_to_u64(-1.0), 0);
        assert_eq!(f64_to_u64(f64::NAN), 0);
        assert_eq!(f64_to_u64(2.9), 2);
        assert_eq!(grouped(1_234_567, ','), "1,234,567");
        assert_eq!(grouped(999, ' '), "999");
    }
}
