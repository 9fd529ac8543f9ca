//! POSIX metadata (mtime, mode, uid, gid) and its encodings in S3 user metadata.
//!
//! Three families are in use: AWS's `file-*` keys (DataSync, File Gateway,
//! FSx), rclone's `mtime` (plus `mode`/`uid`/`gid` with `-M`) and s3fs's
//! `mode`/`uid`/`gid`/`mtime`. We write AWS's family plus rclone's `mtime` so
//! all three tools see the time, and never a bare `mode` (rclone writes it in
//! octal, s3fs in decimal: the two clash). We read all three, `file-*` first,
//! so data copied by those tools is recognised as unchanged.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// POSIX attributes of a file; `None` where unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PosixMeta {
    /// Nanoseconds since the Unix epoch.
    pub mtime_ns: Option<i128>,
    /// File type and permission bits, as `st_mode` (e.g. 0o100644).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

impl PosixMeta {
    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime_ns.and_then(ns_to_system_time)
    }

    /// The user-metadata map written with an object (keys without the `x-amz-meta-` prefix).
    pub fn to_user_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        if let Some(ns) = self.mtime_ns {
            m.insert("file-mtime".into(), format!("{ns}ns"));
            m.insert("mtime".into(), rclone_mtime(ns));
        }
        if let Some(mode) = self.mode {
            m.insert("file-permissions".into(), format!("0{mode:o}"));
        }
        if let Some(uid) = self.uid {
            m.insert("file-owner".into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            m.insert("file-group".into(), gid.to_string());
        }
        m
    }

    /// Reads any of the three families; keys are matched case-insensitively
    /// because some servers capitalise them.
    pub fn from_user_metadata(meta: &HashMap<String, String>) -> PosixMeta {
        let lower: HashMap<String, &str> = meta
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let get = |k: &str| lower.get(k).map(|v| v.trim());
        PosixMeta {
            mtime_ns: get("file-mtime")
                .and_then(parse_aws_time)
                .or_else(|| get("mtime").and_then(parse_seconds)),
            mode: get("file-permissions")
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .or_else(|| get("mode").and_then(parse_bare_mode)),
            uid: get("file-owner")
                .or_else(|| get("uid"))
                .and_then(|v| v.parse().ok()),
            gid: get("file-group")
                .or_else(|| get("gid"))
                .and_then(|v| v.parse().ok()),
        }
    }
}

/// (year, month 1-12, day 1-31): the proleptic Gregorian date of a day count since 1970-01-01
/// (Howard Hinnant's published algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A store's Last-Modified as an mtime, in whole seconds: HTTP headers
/// (GET, HEAD) carry seconds while some listings show milliseconds, and a
/// time taken from either must compare equal with the other.
pub fn store_time_ns(t: SystemTime) -> i128 {
    system_time_to_ns(t).div_euclid(1_000_000_000) * 1_000_000_000
}

pub fn system_time_to_ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

pub fn ns_to_system_time(ns: i128) -> Option<SystemTime> {
    let abs = Duration::from_nanos(u64::try_from(ns.unsigned_abs()).ok()?);
    if ns >= 0 {
        UNIX_EPOCH.checked_add(abs)
    } else {
        UNIX_EPOCH.checked_sub(abs)
    }
}

/// rclone's form: seconds as a decimal with nanosecond precision.
fn rclone_mtime(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let a = ns.unsigned_abs();
    format!("{sign}{}.{:09}", a / 1_000_000_000, a % 1_000_000_000)
}

/// AWS's `file-mtime`: nanoseconds with an `ns` suffix, else milliseconds.
fn parse_aws_time(v: &str) -> Option<i128> {
    match v.strip_suffix("ns") {
        Some(ns) => ns.parse().ok(),
        None => v.parse::<i128>().ok().map(|ms| ms * 1_000_000),
    }
}

/// rclone's and s3fs's `mtime`: decimal seconds, possibly fractional.
fn parse_seconds(v: &str) -> Option<i128> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
    // Digits beyond nanoseconds are dropped; anything else is not a time.
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = whole.parse().ok()?;
    let mut frac_ns = 0i128;
    for (i, b) in frac.bytes().take(9).enumerate() {
        frac_ns += i128::from(b - b'0') * 10i128.pow(8 - i as u32);
    }
    let ns = secs * 1_000_000_000 + frac_ns;
    Some(if neg { -ns } else { ns })
}

/// A bare `mode` is decimal (s3fs) when that reads as a valid `st_mode`
/// (a file type, and no bits above 0o177777), else octal (rclone): rclone's
/// `100664` read as decimal is over the limit, s3fs's `33188` is not.
fn parse_bare_mode(v: &str) -> Option<u32> {
    const MAX_MODE: u32 = 0o177777;
    let valid = |m: u32| m <= MAX_MODE && matches!(m & S_IFMT, S_IFREG | S_IFDIR | S_IFLNK);
    if let Ok(d) = v.parse::<u32>() {
        if valid(d) {
            return Some(d);
        }
    }
    u32::from_str_radix(v, 8).ok().filter(|m| valid(*m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn written_metadata_reads_back_the_same() {
        let m = PosixMeta {
            mtime_ns: Some(1_700_000_000_123_456_789),
            mode: Some(0o100640),
            uid: Some(1000),
            gid: Some(100),
        };
        let um = m.to_user_metadata();
        assert_eq!(um["file-permissions"], "0100640");
        assert_eq!(um["file-mtime"], "1700000000123456789ns");
        assert_eq!(um["mtime"], "1700000000.123456789");
        assert!(!um.contains_key("mode"), "never write a bare mode");
        assert_eq!(PosixMeta::from_user_metadata(&um), m);
    }

    #[test]
    fn datasync_metadata_is_read() {
        let m = PosixMeta::from_user_metadata(&map(&[
            ("file-permissions", "100755"),
            ("file-owner", "0"),
            ("file-group", "0"),
            ("file-mtime", "1600000000000"),
        ]));
        assert_eq!(m.mode, Some(0o100755));
        assert_eq!(m.uid, Some(0));
        assert_eq!(m.mtime_ns, Some(1_600_000_000_000 * 1_000_000));
    }

    #[test]
    fn rclone_metadata_is_read_with_octal_mode() {
        let m = PosixMeta::from_user_metadata(&map(&[
            ("Mtime", "1700000000.5"),
            ("mode", "100664"),
            ("uid", "7"),
            ("gid", "8"),
        ]));
        assert_eq!(m.mtime_ns, Some(1_700_000_000_500_000_000));
        assert_eq!(m.mode, Some(0o100664));
        assert_eq!((m.uid, m.gid), (Some(7), Some(8)));
    }

    #[test]
    fn s3fs_decimal_mode_is_read_as_decimal() {
        let m = PosixMeta::from_user_metadata(&map(&[("mode", "33188"), ("mtime", "1700000000")]));
        assert_eq!(m.mode, Some(0o100644));
        assert_eq!(m.mtime_ns, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn file_family_wins_over_bare_keys() {
        let m = PosixMeta::from_user_metadata(&map(&[
            ("file-permissions", "0100600"),
            ("mode", "33188"),
            ("file-mtime", "5ns"),
            ("mtime", "9"),
        ]));
        assert_eq!(m.mode, Some(0o100600));
        assert_eq!(m.mtime_ns, Some(5));
    }

    #[test]
    fn garbage_values_are_ignored() {
        let m = PosixMeta::from_user_metadata(&map(&[
            ("file-mtime", "yesterday"),
            ("mode", "hello"),
            ("uid", "-1"),
        ]));
        assert_eq!(m, PosixMeta::default());
    }

    #[test]
    fn times_before_1970_round_trip() {
        let ns = -1_500_000_000i128;
        assert_eq!(system_time_to_ns(ns_to_system_time(ns).unwrap()), ns);
        assert_eq!(parse_seconds(&rclone_mtime(ns)), Some(ns));
    }
}
