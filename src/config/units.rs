//! The text forms of sizes, durations and modes, shared by the config file
//! and the command line so that both accept exactly the same spellings.

use std::time::Duration;

/// "512MiB", "2 GiB", "100MB" (decimal), "4096" (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a size (bytes, or e.g. \"512MiB\", \"2GiB\", \"100MB\")");
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// The longest duration anything accepts (a TTL, a grace period, a
/// schedule's rate, a lease): ten years. Deadlines are computed as now plus
/// a duration; a bound keeps that sum far from any overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// `secs` (given as `given`) as a duration, if it is one from 0 to
/// [`MAX_DURATION`].
pub fn duration_from_secs(secs: f64, given: &str) -> Result<Duration, String> {
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!(
            "`{given}` is not a duration (seconds, or e.g. \"500ms\", \"2s\", \"1m\")"
        ));
    }
    if secs > MAX_DURATION.as_secs_f64() {
        return Err(format!(
            "`{given}` is too long: at most {} seconds (10 years)",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A whole number of seconds from 0 to [`MAX_DURATION`] (`--grace-seconds`).
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of seconds"))?;
    duration_from_secs(n as f64, s).map(|d| d.as_secs())
}

/// S3's largest part (UploadPart and UploadPartCopy).
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// Why `part_size` (as given: `given`) cannot be used, if it cannot.
pub fn part_size_problem(part_size: u64, given: &str) -> Option<String> {
    (part_size > MAX_PART_SIZE)
        .then(|| format!("part size `{given}` is over S3's limit of 5 GiB ({MAX_PART_SIZE} bytes)"))
}

/// `--part-size`: a size ([`parse_size`]) of at most 5 GiB.
pub fn parse_part_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    part_size_problem(n, s).map_or(Ok(n), Err)
}

/// Seconds ("1.5"), or "500ms", "2s", "1m", "1h", at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let secs = num.trim().parse::<f64>().map_or(f64::NAN, |n| n * scale);
    duration_from_secs(secs, s)
}

/// Octal permission bits: "0644", "644", "0o2775".
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim().trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode `{s}`: a mode is octal, 0 to 7777 (e.g. \"0644\")"))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics_a_unit_parser(s in "\\PC{0,40}") {
            let _ = (parse_size(&s), parse_duration(&s), parse_seconds(&s), parse_mode(&s), parse_part_size(&s));
        }

        #[test]
        fn numeric_durations_are_bounded(n in proptest::num::f64::ANY, unit in "(ms|s|m|h)?") {
            if let Ok(d) = parse_duration(&format!("{n}{unit}")) {
                proptest::prop_assert!(d <= MAX_DURATION);
            }
        }
    }

    #[test]
    fn sizes_durations_and_modes_parse_with_their_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").unwrap_err().contains("5 parsecs"));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("1e30")
            .unwrap_err()
            .contains("`1e30` is too long"));
        assert!(parse_duration("1e11").unwrap_err().contains("too long"));
        assert!(parse_duration("inf").is_err());
        assert_eq!(
            parse_duration("3650 h"),
            Ok(Duration::from_secs(3650 * 3600))
        );
        assert_eq!(parse_seconds("30"), Ok(30));
        assert_eq!(parse_part_size("5GiB"), Ok(5 << 30));
        let over = parse_part_size("18446744073709551615").unwrap_err();
        assert!(over.contains("`18446744073709551615`"), "{over}");
        let huge = parse_seconds("18446744073709551615").unwrap_err();
        assert!(huge.contains("18446744073709551615"), "{huge}");
        assert!(parse_seconds("-1").is_err());
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0o2775"), Ok(0o2775));
        assert!(parse_mode("999").is_err());
    }
}
