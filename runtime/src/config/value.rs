//! Parsing and printing of durations and memory sizes, in Flink's syntax.
//!
//! Both follow Flink (`TimeUtils.parseDuration`, `MemorySize.parse`): a non-negative whole number,
//! optional whitespace, then an optional unit, case-insensitive. No fractions, no signs.

use std::time::Duration;

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Time units from the largest down; the first label is the one [`format_duration`] prints.
const TIME_UNITS: &[(u128, &[&str])] = &[
    (86_400 * NANOS_PER_SEC, &["d", "day", "days"]),
    (3_600 * NANOS_PER_SEC, &["h", "hour", "hours"]),
    (60 * NANOS_PER_SEC, &["min", "m", "minute", "minutes"]),
    (NANOS_PER_SEC, &["s", "sec", "secs", "second", "seconds"]),
    (
        NANOS_PER_MILLI,
        &["ms", "milli", "millis", "millisecond", "milliseconds"],
    ),
    (
        NANOS_PER_MICRO,
        &["µs", "us", "micro", "micros", "microsecond", "microseconds"],
    ),
    (1, &["ns", "nano", "nanos", "nanosecond", "nanoseconds"]),
];

/// Size units from the largest down, 1024-based; the label at index 1 is the one
/// [`format_size`] prints (Flink's `MemorySize.toString`).
const SIZE_UNITS: &[(u64, &[&str])] = &[
    (1 << 40, &["t", "tb", "tib", "tebibytes"]),
    (1 << 30, &["g", "gb", "gib", "gibibytes"]),
    (1 << 20, &["m", "mb", "mib", "mebibytes"]),
    (1 << 10, &["k", "kb", "kib", "kibibytes"]),
    (1, &["b", "bytes"]),
];

/// Splits `"10 s"` into `(10, "s")`, with the unit lowercased.
fn split_number(text: &str) -> Result<(u128, String), String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty value".into());
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err("does not start with a whole number".into());
    }
    let number = text[..digits_end]
        .parse::<u128>()
        .map_err(|_| "number too large".to_string())?;
    Ok((number, text[digits_end..].trim().to_lowercase()))
}

/// Parses a duration such as `10 s`, `500ms`, `5 min`, `2 h` or `1d`.
///
/// A bare number is in `bare_unit` (milliseconds for most keys, as in Flink). Units: `d`, `h`,
/// `min`/`m`, `s`, `ms`, `µs`/`us`, `ns` and their long forms (`minutes`, `seconds`, ...).
pub fn parse_duration_with(text: &str, bare_unit: Duration) -> Result<Duration, String> {
    let (number, unit) = split_number(text)?;
    let unit_nanos = if unit.is_empty() {
        bare_unit.as_nanos()
    } else {
        TIME_UNITS
            .iter()
            .find(|(_, labels)| labels.contains(&unit.as_str()))
            .map(|(nanos, _)| *nanos)
            .ok_or_else(|| format!("unknown time unit {unit:?} (use d, h, min, s, ms, us or ns)"))?
    };
    let total = number
        .checked_mul(unit_nanos)
        .ok_or_else(|| "duration too large".to_string())?;
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| "duration too large")?;
    // The remainder is below 10^9 and fits.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Parses a duration where a bare number is milliseconds (Flink's rule).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_duration_with(text, Duration::from_millis(1))
}

/// Prints a duration in the largest unit that represents it exactly: `10 s`, `5 min`, `1 h`,
/// `1500 ms`. Zero prints as `0 ms`. [`parse_duration`] reads every output back.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0 ms".into();
    }
    let (unit, labels) = TIME_UNITS
        .iter()
        .find(|(unit, _)| nanos.is_multiple_of(*unit))
        .expect("every duration is a whole number of nanoseconds");
    format!("{} {}", nanos / unit, labels[0])
}

/// Parses a memory size such as `64 kb`, `10mb`, `1 GB` or `10485760b`, 1024-based like Flink's
/// `MemorySize`. A bare number is bytes. Units: `b`, `k`/`kb`/`kib`, `m`/`mb`/`mib`,
/// `g`/`gb`/`gib`, `t`/`tb`/`tib` and Flink's long forms (`bytes`, `mebibytes`, ...).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = split_number(text)?;
    let multiplier = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS
            .iter()
            .find(|(_, labels)| labels.contains(&unit.as_str()))
            .map(|(m, _)| *m)
            .ok_or_else(|| format!("unknown size unit {unit:?} (use b, kb, mb, gb or tb)"))?
    };
    u64::try_from(number)
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| "size too large".into())
}

/// Prints a size in the largest unit that represents it exactly, as Flink's
/// `MemorySize.toString` does: `10 mb`, `64 kb`, `1000 bytes`.
pub fn format_size(bytes: u64) -> String {
    if bytes == 0 {
        return "0 bytes".into();
    }
    let (unit, labels) = SIZE_UNITS
        .iter()
        .find(|(unit, _)| bytes.is_multiple_of(*unit))
        .expect("the byte unit divides everything");
    format!("{} {}", bytes / unit, labels[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_flink_syntax() {
        let cases = [
            ("10 s", Duration::from_secs(10)),
            ("10s", Duration::from_secs(10)),
            ("500 ms", Duration::from_millis(500)),
            ("500ms", Duration::from_millis(500)),
            ("1 min", Duration::from_secs(60)),
            ("5min", Duration::from_secs(300)),
            ("5 m", Duration::from_secs(300)),
            ("2 h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("3 Seconds", Duration::from_secs(3)),
            ("  7 MS ", Duration::from_millis(7)),
            ("250 us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("9 ns", Duration::from_nanos(9)),
            ("1500", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bare_number_unit_is_configurable() {
        assert_eq!(
            parse_duration_with("3600", Duration::from_secs(1)),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_duration_with("5 ms", Duration::from_secs(1)),
            Ok(Duration::from_millis(5))
        );
    }

    #[test]
    fn bad_durations() {
        for text in [
            "",
            " ",
            "s",
            "-1 s",
            "1.5 s",
            "10 sec s",
            "10 fortnights",
            "ten",
            "99999999999999999999999999 d",
        ] {
            assert!(parse_duration(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0 ms"),
            (Duration::from_millis(100), "100 ms"),
            (Duration::from_millis(1500), "1500 ms"),
            (Duration::from_secs(10), "10 s"),
            (Duration::from_secs(300), "5 min"),
            (Duration::from_secs(3600), "1 h"),
            (Duration::from_secs(86_400 * 2), "2 d"),
            (Duration::from_micros(3), "3 µs"),
            (Duration::from_nanos(1_000_001), "1000001 ns"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Ok(duration), "round trip of {text}");
        }
    }

    #[test]
    fn sizes_in_flink_syntax() {
        let cases = [
            ("10485760b", 10 << 20),
            ("10485760", 10 << 20),
            ("10 mb", 10 << 20),
            ("10 MB", 10 << 20),
            ("10m", 10 << 20),
            ("64kb", 64 << 10),
            ("64 k", 64 << 10),
            ("32 kib", 32 << 10),
            ("1gb", 1 << 30),
            ("1 g", 1 << 30),
            ("2 tb", 2 << 40),
            ("7 bytes", 7),
            ("3 mebibytes", 3 << 20),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_sizes() {
        for text in [
            "",
            "mb",
            "-1 mb",
            "1.5 mb",
            "10 xb",
            "20000000 tb",
            "999999999999999999999999",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} should be rejected");
        }
    }

    #[test]
    fn sizes_print_like_flink() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (1000, "1000 bytes"),
            (1024, "1 kb"),
            (10 << 20, "10 mb"),
            (3 << 30, "3 gb"),
            (1 << 40, "1 tb"),
        ] {
            assert_eq!(format_size(bytes), text);
            assert_eq!(parse_size(text), Ok(bytes));
        }
    }
}
