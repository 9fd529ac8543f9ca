//! POSIX metadata (mtime, mode, uid, gid) and its encodings in S3 user metadata.
//!
//! Three families are in use: AWS's `file-*` keys (DataSync, File Gateway,
//! FSx), rclone's `mtime` (plus `mode`/`uid`/`gid` with `-M`) and s3fs's
//! `mode`/`uid`/`gid`/`mtime`. We write AWS's family plus rclone's `mtime` so
//! all three tools see the time, and never a bare `mode` (rclone writes it in
//! octal, s3fs in decimal: the two clash). We read all three, `file-*` first,
//! so data copied by those tools is recognised as unchanged.
//!
//! The file type travels in the mode's type bits (`S_IFMT`), as DataSync and
//! s3fs store it: a symbolic link is an object whose body is the link's
//! target with `S_IFLNK` in its mode; a FIFO, socket or device is an empty
//! object with its type in the mode and, for a device, its number in `rdev`
//! (s3fs's key, decimal `st_rdev`). [`FileKind`] names the types.

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
    /// Device number (`st_rdev`) of a character or block device.
    pub rdev: Option<u64>,
    /// When data or metadata last changed (`st_ctime`), in nanoseconds:
    /// kept by mounts (`file-ctime`), never compared or restored by `sync`
    /// (a local file's ctime cannot be set).
    pub ctime_ns: Option<i128>,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFIFO: u32 = 0o010000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;

/// Largest link target a store's object may hold to be a symbolic link
/// (Linux's PATH_MAX, terminating NUL excluded).
pub const MAX_LINK_TARGET: u64 = 4095;

/// What a key holds, from its mode's type bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    /// The content is the link's target.
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// The kind a mode says; a mode without (known) type bits is a file.
    pub fn of_mode(mode: u32) -> FileKind {
        match mode & S_IFMT {
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            S_IFCHR => FileKind::CharDevice,
            S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::File,
        }
    }

    /// FIFOs, sockets and devices: empty objects whose mode (and device
    /// number) is all there is to copy.
    pub fn is_special(self) -> bool {
        matches!(
            self,
            FileKind::Fifo | FileKind::Socket | FileKind::CharDevice | FileKind::BlockDevice
        )
    }

    /// The type bits of a mode of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            FileKind::File => S_IFREG,
            FileKind::Dir => S_IFDIR,
            FileKind::Symlink => S_IFLNK,
            FileKind::Fifo => S_IFIFO,
            FileKind::Socket => S_IFSOCK,
            FileKind::CharDevice => S_IFCHR,
            FileKind::BlockDevice => S_IFBLK,
        }
    }

    /// How a report or message names it.
    pub fn name(self) -> &'static str {
        match self {
            FileKind::File => "file",
            FileKind::Dir => "directory",
            FileKind::Symlink => "symbolic link",
            FileKind::Fifo => "FIFO",
            FileKind::Socket => "socket",
            FileKind::CharDevice => "character device",
            FileKind::BlockDevice => "block device",
        }
    }
}

impl PosixMeta {
    pub fn mtime(&self) -> Option<SystemTime> {
        self.mtime_ns.and_then(ns_to_system_time)
    }

    pub fn ctime(&self) -> Option<SystemTime> {
        self.ctime_ns.and_then(ns_to_system_time)
    }

    /// The data changed now: mtime and ctime move (write, truncate).
    pub fn touch_data(&mut self) {
        let now = system_time_to_ns(SystemTime::now());
        self.mtime_ns = Some(now);
        self.ctime_ns = Some(now);
    }

    /// What the mode says the key holds (a file when it says nothing).
    pub fn kind(&self) -> FileKind {
        self.mode.map_or(FileKind::File, FileKind::of_mode)
    }

    /// `self` where it says something, else `current`; a mode without type
    /// bits (a chmod) keeps the current type.
    pub fn merged_over(&self, current: &PosixMeta) -> PosixMeta {
        let mode = match (self.mode, current.mode) {
            (Some(m), Some(c)) if m & S_IFMT == 0 => Some(c & S_IFMT | m & 0o7777),
            (m, c) => m.or(c),
        };
        PosixMeta {
            mtime_ns: self.mtime_ns.or(current.mtime_ns),
            mode,
            uid: self.uid.or(current.uid),
            gid: self.gid.or(current.gid),
            rdev: self.rdev.or(current.rdev),
            ctime_ns: self.ctime_ns.or(current.ctime_ns),
        }
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
        if let Some(rdev) = self.rdev {
            m.insert("rdev".into(), rdev.to_string());
        }
        if let Some(ns) = self.ctime_ns {
            m.insert("file-ctime".into(), format!("{ns}ns"));
        }
        m
    }

    /// Reads any of the three families; keys are matched case-insensitively
    /// because some servers capitalise them. A value that does not parse or
    /// is out of range counts as absent, with a warning naming its key.
    pub fn from_user_metadata(meta: &HashMap<String, String>) -> PosixMeta {
        let lower: HashMap<String, &str> = meta
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
            .collect();
        let time = |key: &str, parse: fn(&str) -> Option<i128>| field(&lower, key, &parse);
        let id = |key: &str| field(&lower, key, &|v: &str| v.parse::<u32>().ok());
        PosixMeta {
            mtime_ns: time("file-mtime", parse_aws_time).or_else(|| time("mtime", parse_seconds)),
            mode: field(&lower, "file-permissions", &|v: &str| {
                u32::from_str_radix(v, 8).ok().filter(|m| *m <= MAX_MODE)
            })
            .or_else(|| field(&lower, "mode", &parse_bare_mode)),
            uid: id("file-owner").or_else(|| id("uid")),
            gid: id("file-group").or_else(|| id("gid")),
            rdev: field(&lower, "rdev", &|v: &str| v.parse::<u64>().ok()),
            // Ours (as file-mtime), else s3fs's decimal seconds.
            ctime_ns: time("file-ctime", parse_aws_time).or_else(|| time("ctime", parse_seconds)),
        }
    }
}

/// The value of `key` as `parse` reads it; a value it refuses is absent,
/// with a warning (a bucket's writer controls it: never a panic, never
/// silently wrong).
fn field<T>(
    lower: &HashMap<String, &str>,
    key: &str,
    parse: &dyn Fn(&str) -> Option<T>,
) -> Option<T> {
    let raw = lower.get(key)?;
    let parsed = parse(raw.trim());
    if parsed.is_none() {
        tracing::warn!(key, value = ?raw, "ignoring user metadata value: not a number in range");
    }
    parsed
}

/// A UTC time of day and date, from seconds since the epoch: (year,
/// month, day, hour, minute, second); what every timestamp we print is
/// made of.
pub fn utc_fields(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
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

/// Times further from the epoch than this (either way) are out of range:
/// signed 64-bit nanoseconds (years 1677 to 2262) is what every consumer
/// (a `timespec`, a `SystemTime`, the history, a conflict's name) holds
/// without overflow.
const MAX_TIME_NS: i128 = i64::MAX as i128;

/// Largest `st_mode`: type bits and permission bits, nothing above.
const MAX_MODE: u32 = 0o177777;

fn time_in_range(ns: i128) -> Option<i128> {
    (ns.unsigned_abs() <= MAX_TIME_NS.unsigned_abs()).then_some(ns)
}

/// AWS's `file-mtime`: nanoseconds with an `ns` suffix, else milliseconds.
fn parse_aws_time(v: &str) -> Option<i128> {
    let ns = match v.strip_suffix("ns") {
        Some(ns) => ns.parse().ok()?,
        None => v.parse::<i128>().ok()?.checked_mul(1_000_000)?,
    };
    time_in_range(ns)
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
    // A sign belongs in front of the whole number only ("--1", "-+1").
    if !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = whole.parse().ok()?;
    let frac_ns = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0i128, |acc, b| acc * 10 + i128::from(b - b'0'));
    let ns = secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)?;
    time_in_range(if neg { -ns } else { ns })
}

/// A bare `mode` is decimal (s3fs) when that reads as a valid `st_mode`
/// (a file type, and no bits above 0o177777), else octal (rclone): rclone's
/// `100664` read as decimal is over the limit, s3fs's `33188` is not.
fn parse_bare_mode(v: &str) -> Option<u32> {
    let valid = |m: u32| {
        m <= MAX_MODE
            && matches!(
                m & S_IFMT,
                S_IFREG | S_IFDIR | S_IFLNK | S_IFIFO | S_IFSOCK | S_IFCHR | S_IFBLK
            )
    };
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
            rdev: None,
            ctime_ns: None,
        };
        let um = m.to_user_metadata();
        assert_eq!(um["file-permissions"], "0100640");
        assert_eq!(um["file-mtime"], "1700000000123456789ns");
        let with_ctime = PosixMeta {
            ctime_ns: Some(1_700_000_001_000_000_002),
            ..m
        };
        let back = PosixMeta::from_user_metadata(&with_ctime.to_user_metadata());
        assert_eq!(back.ctime_ns, with_ctime.ctime_ns);
        let s3fs: HashMap<String, String> =
            [("ctime".to_string(), "1600000000".to_string())].into();
        assert_eq!(
            PosixMeta::from_user_metadata(&s3fs).ctime_ns,
            Some(1_600_000_000_000_000_000)
        );
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
    fn s3fs_symlink_and_device_modes_are_read() {
        // s3fs writes `mode` in decimal: 41471 = 0o120777, 8592 = 0o20620.
        let link = PosixMeta::from_user_metadata(&map(&[("mode", "41471")]));
        assert_eq!(link.kind(), FileKind::Symlink);
        let dev = PosixMeta::from_user_metadata(&map(&[("mode", "8592"), ("rdev", "1025")]));
        assert_eq!(dev.kind(), FileKind::CharDevice);
        assert_eq!(dev.rdev, Some(1025));
        let fifo = PosixMeta::from_user_metadata(&map(&[("file-permissions", "010644")]));
        assert_eq!(fifo.kind(), FileKind::Fifo);
    }

    #[test]
    fn a_device_number_round_trips_in_s3fs_key() {
        let m = PosixMeta {
            mode: Some(S_IFBLK | 0o660),
            rdev: Some(2049),
            ..Default::default()
        };
        let um = m.to_user_metadata();
        assert_eq!(um["rdev"], "2049");
        assert_eq!(um["file-permissions"], "060660");
        assert_eq!(PosixMeta::from_user_metadata(&um), m);
    }

    #[test]
    fn a_chmod_keeps_the_type_it_is_merged_over() {
        let link = PosixMeta {
            mode: Some(S_IFLNK | 0o777),
            uid: Some(1),
            ..Default::default()
        };
        let chown = PosixMeta {
            mode: Some(0o644),
            uid: Some(2),
            ..Default::default()
        };
        let m = chown.merged_over(&link);
        assert_eq!(m.mode, Some(S_IFLNK | 0o644));
        assert_eq!(m.uid, Some(2));
        assert_eq!(PosixMeta::default().kind(), FileKind::File);
    }

    #[test]
    fn times_before_1970_round_trip() {
        let ns = -1_500_000_000i128;
        assert_eq!(system_time_to_ns(ns_to_system_time(ns).unwrap()), ns);
        assert_eq!(parse_seconds(&rclone_mtime(ns)), Some(ns));
    }

    #[test]
    fn out_of_range_times_and_ids_are_absent() {
        let m = PosixMeta::from_user_metadata(&map(&[
            ("file-mtime", "99999999999999999999"),
            ("mtime", "1000000000000000000000000000000"),
            ("file-ctime", "170141183460469231731687303715884105727ns"),
            ("ctime", "1e30"),
            ("file-owner", "99999999999999999999"),
            ("file-group", "4294967296"),
            ("file-permissions", "7777777"),
            ("rdev", "18446744073709551616"),
        ]));
        assert_eq!(m, PosixMeta::default());
        // The edges of the range still read.
        let edge = PosixMeta::from_user_metadata(&map(&[("file-mtime", "9223372036854775807ns")]));
        assert_eq!(edge.mtime_ns, Some(i128::from(i64::MAX)));
        assert!(edge.mtime().is_some());
        assert_eq!(
            parse_seconds("-9223372036.854775807"),
            Some(-i128::from(i64::MAX))
        );
        assert_eq!(parse_seconds("9223372037"), None);
        assert_eq!(parse_seconds("--1"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_metadata_values_never_panic(key in "(?i)(file-)?(mtime|ctime|permissions|owner|group)|mode|uid|gid|rdev", value in ".{0,60}") {
            let m = PosixMeta::from_user_metadata(&map(&[(&key, &value)]));
            let _ = (m.mtime(), m.ctime(), m.kind());
            if let Some(ns) = m.mtime_ns.or(m.ctime_ns) {
                proptest::prop_assert!(ns.unsigned_abs() <= MAX_TIME_NS.unsigned_abs());
            }
        }

        #[test]
        fn numeric_metadata_values_never_panic(value in "-?[0-9]{0,45}(\\.[0-9]{0,12})?(ns)?") {
            for key in ["file-mtime", "mtime", "file-ctime", "ctime"] {
                let m = PosixMeta::from_user_metadata(&map(&[(key, &value)]));
                let _ = (m.mtime(), m.ctime());
            }
        }
    }
}
