//! How counts and times read for people, in the command line's output and the daemon's
//! status alike: "1 file" and "2 files", and times in UTC that say so (a snapshot records
//! its time with an offset, and a bare "14:00" would be read as local time).

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `n` and the noun, in the singular for 1 and the plural otherwise: `count(1, "file")`
/// is "1 file", `count(2, "directory")` "2 directories", `count(0, "match")` "0 matches".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {}", plural(noun))
    }
}

/// The English plural of the nouns cairn counts: `-y` after a consonant becomes `-ies`,
/// a hissing ending (`-s`, `-x`, `-ch`, `-sh`) takes `-es`, everything else `-s`.
pub fn plural(noun: &str) -> String {
    let consonant_y = noun.strip_suffix('y').filter(|stem| {
        stem.chars()
            .last()
            .is_some_and(|c| !matches!(c, 'a' | 'e' | 'i' | 'o' | 'u'))
    });
    if let Some(stem) = consonant_y {
        format!("{stem}ies")
    } else if ["s", "x", "ch", "sh"].iter().any(|e| noun.ends_with(e)) {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

/// A moment as the tables show it, converted to UTC and saying so:
/// `2026-01-31 14:00:00 UTC`.
pub fn utc(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
        ))
        .unwrap_or_else(|_| format!("{} (unix time)", t.unix_timestamp()))
}

/// An RFC 3339 time (as snapshots record it) for people, in UTC (see [`utc`]); a string
/// that does not parse is shown as it is.
pub fn utc_rfc3339(t: &str) -> String {
    OffsetDateTime::parse(t, &Rfc3339)
        .map(utc)
        .unwrap_or_else(|_| t.to_string())
}

/// Unix seconds for people, in UTC (see [`utc`]).
pub fn utc_unix(secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(secs)
        .map(utc)
        .unwrap_or_else(|_| format!("{secs} (unix time)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_the_rest_plural() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(2, "snapshot"), "2 snapshots");
        assert_eq!(count(3, "directory"), "3 directories");
        assert_eq!(count(1, "directory"), "1 directory");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(2, "match"), "2 matches");
        assert_eq!(count(2, "key"), "2 keys");
        assert_eq!(count(2, "day"), "2 days");
    }

    #[test]
    fn times_are_shown_in_utc_and_say_so() {
        assert_eq!(
            utc_rfc3339("2026-01-31T14:00:00Z"),
            "2026-01-31 14:00:00 UTC"
        );
        // A time recorded with an offset is converted, not shown as its local clock.
        assert_eq!(
            utc_rfc3339("2026-01-31T16:00:00.5+02:00"),
            "2026-01-31 14:00:00 UTC"
        );
        assert_eq!(utc_unix(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_rfc3339("not a time"), "not a time");
    }
}
