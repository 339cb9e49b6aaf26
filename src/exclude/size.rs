//! Sizes for `--exclude-larger-than` (and the daemon's `exclude_larger_than`): restic's
//! form, a whole number with an optional suffix `b`, `k`, `m`, `g` or `t` (either case,
//! multiples of 1024), and cairn's own `KiB`, `MiB`, `GiB`, `TiB`; a fraction is allowed
//! with a unit (`1.5GiB`). `KB` and `MB` are refused rather than guessed at: they mean
//! 1000-multiples to some and 1024 to others.

/// Bytes in a size such as `500M`, `2g`, `1.5GiB` or `2048`; the error says how to write
/// one.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size: write a number of bytes with an optional unit, 1024-based: 2048, 500k, 100M, 2G, 1T or 1.5GiB"
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim_start());
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => return Err(bad()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let no_digits = whole.is_empty() && fraction.is_empty();
    let bad_fraction =
        number.contains('.') && (shift == 0 || fraction.is_empty() || fraction.len() > 9);
    if no_digits || bad_fraction {
        return Err(bad());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let mut bytes = whole.checked_shl(shift).ok_or_else(bad)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().map_err(|_| bad())?;
        // At most nine digits: `digits << 40` stays far inside u128.
        bytes += (digits << shift) / 10u128.pow(fraction.len() as u32);
    }
    u64::try_from(bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restics_suffixes_and_cairns_units() {
        assert_eq!(parse_size("2048"), Ok(2048));
        assert_eq!(parse_size("10b"), Ok(10));
        assert_eq!(parse_size("500k"), Ok(500 * 1024));
        assert_eq!(parse_size("500K"), Ok(500 * 1024));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size(" 1.5GiB "), Ok(3 << 29));
        assert_eq!(parse_size("1.5 G"), Ok(3 << 29));
        assert_eq!(parse_size("0.5k"), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn unclear_sizes_are_refused_with_the_forms_to_write() {
        for bad in [
            "",
            "M",
            "1.5",
            "1.",
            "1MB",
            "1 KB",
            "-1",
            "1e3",
            "big",
            "1.2.3G",
            "99999999T",
        ] {
            let e = parse_size(bad).expect_err(bad);
            assert!(e.contains("500k") && e.contains("1.5GiB"), "{bad}: {e}");
        }
    }
}
