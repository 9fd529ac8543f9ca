//! The pure decisions of a two-way execution: per key, what each side did
//! since the base (the version both last agreed on), and what to do about
//! it. No I/O here; [`super::two_way`] fetches what these functions need.
//!
//! The rules, per key:
//! - changed on one side only → copied to the other (metadata-only
//!   changes too: a side's fingerprint covers mode, owner and mtime);
//! - changed (or created) on both: equal content → the base is recorded
//!   and nothing copied; different → a conflict, settled by the policy;
//! - deleted on one side, unchanged on the other → deleted there;
//! - deleted on one side, changed on the other → the edit is copied back
//!   (reported as a conflict);
//! - no base entry → never deleted: the union of both sides.

use std::time::SystemTime;

use super::base::BaseRow;
use crate::location::meta::{system_time_to_ns, utc_fields};
use crate::location::{Entry, ObjectInfo};

/// One side of a two-way pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Side {
    A,
    B,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Side::A => 'a',
            Side::B => 'b',
        }
    }
}

/// What one side did to a key since the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideState {
    /// Not there, and not in the base either.
    Absent,
    /// There, no base entry.
    New,
    /// As in the base.
    Unchanged,
    /// There, different from the base.
    Changed,
    /// In the base, gone from this side.
    Deleted,
}

/// What to do with one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Nothing,
    /// Gone from both sides: drop the base entry.
    Forget,
    /// Copy from `from` to the other side. `conflict`: the other side had
    /// deleted it (an edit beats a delete; reported as a conflict).
    Copy {
        from: Side,
        reason: &'static str,
        conflict: bool,
    },
    Delete {
        on: Side,
        reason: &'static str,
    },
    /// Both sides changed it: equal content → record, else a conflict.
    Compare,
}

/// The decision from both sides' states.
pub fn decide(a: SideState, b: SideState) -> Decision {
    use SideState::*;
    let copy = |from, reason, conflict| Decision::Copy {
        from,
        reason,
        conflict,
    };
    match (a, b) {
        (Unchanged, Unchanged) | (Absent, Absent) => Decision::Nothing,
        (Deleted, Deleted) => Decision::Forget,
        (New, Absent) => copy(Side::A, "new-on-a", false),
        (Absent, New) => copy(Side::B, "new-on-b", false),
        (Changed, Unchanged) => copy(Side::A, "changed-on-a", false),
        (Unchanged, Changed) => copy(Side::B, "changed-on-b", false),
        (Changed, Deleted) => copy(Side::A, "changed-on-a-deleted-on-b", true),
        (Deleted, Changed) => copy(Side::B, "changed-on-b-deleted-on-a", true),
        (Deleted, Unchanged) => Decision::Delete {
            on: Side::B,
            reason: "deleted-on-a",
        },
        (Unchanged, Deleted) => Decision::Delete {
            on: Side::A,
            reason: "deleted-on-b",
        },
        (New | Changed, New | Changed) => Decision::Compare,
        // A base entry exists for one side and not the other: impossible
        // (both states come from the same base row); do nothing rather
        // than guess.
        _ => Decision::Nothing,
    }
}

/// A side's version as its listing shows it, for the base. Local files:
/// mtime, size, mode and owner (a chmod changes it). S3 objects: ETag,
/// size and LastModified to the second (a metadata-only change rewrites
/// the object in place, which keeps a single-part ETag but not its time);
/// servers that list no ETag: size and LastModified.
pub fn fingerprint(e: &Entry) -> Option<String> {
    let secs = |t: SystemTime| system_time_to_ns(t).div_euclid(1_000_000_000);
    if let Some(etag) = &e.etag {
        let t = e.modified.map(secs).unwrap_or(0);
        return Some(format!("etag:{etag}:{}:{t}", e.size));
    }
    if let Some(m) = e.meta.filter(|m| m.mtime_ns.is_some()) {
        return Some(format!(
            "file:{}:{}:{:o}:{}:{}",
            m.mtime_ns.unwrap_or(0),
            e.size,
            m.mode.unwrap_or(0),
            m.uid.unwrap_or(u32::MAX),
            m.gid.unwrap_or(u32::MAX)
        ));
    }
    Some(format!("modified:{}:{}", secs(e.modified?), e.size))
}

/// How a listed entry compares with the fingerprint recorded for its side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listed {
    /// The recorded version.
    Same,
    /// Another ETag: another upload, whatever its size and time say.
    Rewritten,
    /// Something moved; the stored metadata must tell.
    Moved,
}

/// An ETag fingerprint's parts: ETag, size, LastModified in seconds.
fn etag_parts(fp: &str) -> Option<(&str, &str, &str)> {
    let mut parts = fp.strip_prefix("etag:")?.rsplitn(3, ':');
    let (t, size, etag) = (parts.next()?, parts.next()?, parts.next()?);
    Some((etag, size, t))
}

fn compare_listed(recorded: &str, e: &Entry) -> Listed {
    if fingerprint(e).as_deref() == Some(recorded) {
        return Listed::Same;
    }
    let Some((etag, size, t)) = etag_parts(recorded) else {
        return Listed::Moved;
    };
    match (&e.etag, fingerprint(e)) {
        (Some(now), _) if now != etag => Listed::Rewritten,
        // Recorded from a HEAD (which has the ETag) on a server whose
        // listings carry none: the rest of it must still agree.
        (None, Some(listed)) if listed == format!("modified:{t}:{size}") => Listed::Same,
        _ => Listed::Moved,
    }
}

/// The side's state from its listing alone, when that is enough: `None`
/// means the fingerprint moved and the stored metadata must be compared
/// with the base ([`matches_base`]).
pub fn listed_state(
    entry: Option<&Entry>,
    base: Option<&BaseRow>,
    side: Side,
) -> Option<SideState> {
    let recorded = base.map(|b| match side {
        Side::A => &b.a_fp,
        Side::B => &b.b_fp,
    });
    Some(match (entry, recorded) {
        (None, None) => SideState::Absent,
        (Some(_), None) => SideState::New,
        (None, Some(_)) => SideState::Deleted,
        (Some(e), Some(fp)) => {
            let listed = fp
                .as_deref()
                .map_or(Listed::Moved, |fp| compare_listed(fp, e));
            match listed {
                Listed::Same => SideState::Unchanged,
                // A marker has no content: there, it is the agreed one.
                _ if e.is_dir_marker() => SideState::Unchanged,
                Listed::Rewritten => SideState::Changed,
                Listed::Moved => return None,
            }
        }
    })
}

/// Two mtimes closer than this are the same (DataSync stores milliseconds).
const MTIME_TOLERANCE_NS: i128 = 1_000_000;

/// The mtime a version is known by: the stored POSIX one, else the store's.
pub fn mtime_of(info: &ObjectInfo) -> Option<i128> {
    info.meta
        .mtime_ns
        .or(info.modified.map(crate::location::meta::store_time_ns))
}

/// Whether a side's stored version is still the base's (its fingerprint
/// moved for another reason: rewritten with the same content and metadata,
/// or written by us and not listed since).
pub fn matches_base(info: &ObjectInfo, base: &BaseRow) -> bool {
    let same_time = match (mtime_of(info), base.mtime_ns) {
        (Some(a), Some(b)) => (a - b).abs() < MTIME_TOLERANCE_NS,
        _ => false,
    };
    let same_mode = match (info.meta.mode, base.mode) {
        (Some(a), Some(b)) => a & 0o7777 == b & 0o7777,
        _ => true,
    };
    let known_equal = |a: Option<u32>, b: Option<u32>| a.zip(b).is_none_or(|(a, b)| a == b);
    let same_owner = known_equal(info.meta.uid, base.uid) && known_equal(info.meta.gid, base.gid);
    let same_crc = match (info.checksum, base.crc32c) {
        (Some(crate::location::Checksum::Crc32c(a)), Some(b)) => a == b,
        _ => true,
    };
    info.size == base.size && same_time && same_mode && same_owner && same_crc
}

/// How a conflict (different changes on both sides) is settled.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    /// The newer version (by mtime) keeps the name on both sides; the other
    /// is kept on both sides under a conflict name.
    #[default]
    KeepBoth,
    /// The newer version wins on both sides; the other is overwritten.
    Newer,
    /// Side A's version wins; B's is overwritten.
    AWins,
    /// Side B's version wins; A's is overwritten.
    BWins,
}

/// The side whose version keeps the name: the newer by mtime (A on a tie
/// or when a time is unknown) under `keep-both` and `newer`.
pub fn winner(policy: ConflictPolicy, a: &ObjectInfo, b: &ObjectInfo) -> Side {
    match policy {
        ConflictPolicy::AWins => Side::A,
        ConflictPolicy::BWins => Side::B,
        ConflictPolicy::KeepBoth | ConflictPolicy::Newer => match (mtime_of(a), mtime_of(b)) {
            (Some(ta), Some(tb)) if tb > ta => Side::B,
            _ => Side::A,
        },
    }
}

/// The options only a two-way execution has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwoWayOptions {
    pub conflict_policy: ConflictPolicy,
}

/// The name a conflict's losing version is kept under on both sides:
/// `NAME.conflict-<A|B>-<its mtime, UTC>` (`20261130T041530.123Z`). The
/// time is the losing version's own, so an interrupted resolution picks
/// the same name again when it is re-run.
pub fn conflict_name(key: &str, loser: Side, mtime_ns: Option<i128>) -> String {
    let side = match loser {
        Side::A => 'A',
        Side::B => 'B',
    };
    format!("{key}.conflict-{side}-{}", utc_stamp(mtime_ns.unwrap_or(0)))
}

/// The key whose conflict copy `name` is (the inverse of [`conflict_name`]),
/// when `name` has that form.
pub fn conflicted_key(name: &str) -> Option<&str> {
    let at = name.rfind(".conflict-")?;
    let rest = &name[at + ".conflict-".len()..];
    let stamp = rest
        .strip_prefix("A-")
        .or_else(|| rest.strip_prefix("B-"))?;
    let shape = stamp.len() == 20
        && stamp.bytes().enumerate().all(|(i, c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    (shape && at > 0).then(|| &name[..at])
}

/// `YYYYMMDDTHHMMSS.mmmZ` for nanoseconds since the epoch.
fn utc_stamp(ns: i128) -> String {
    let ms = ns.div_euclid(1_000_000);
    let (y, m, d, hh, mm, ss) = utc_fields(ms.div_euclid(1000) as i64);
    format!(
        "{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}.{:03}Z",
        ms.rem_euclid(1000)
    )
}

/// The most deletions one execution may make on a side before it is
/// refused: a count, or a percentage of the keys the side lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxDelete {
    Count(u64),
    Percent(u32),
}

impl Default for MaxDelete {
    /// Half a side: more than that is far likelier an unmounted disk, a
    /// wrong prefix or a listing gone wrong than a deliberate clean-up.
    fn default() -> Self {
        MaxDelete::Percent(50)
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for MaxDelete {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || format!("max_delete `{s}`: expected a count (`100`) or a percentage (`50%`)");
        match s.strip_suffix('%') {
            Some(p) => {
                let p: u32 = p.trim().parse().map_err(|_| bad())?;
                if p > 100 {
                    return Err(format!("max_delete `{s}`: a percentage is at most 100%"));
                }
                Ok(MaxDelete::Percent(p))
            }
            None => s.parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}

impl MaxDelete {
    /// Whether deleting `deletes` of the `listed` keys a side has is allowed.
    pub fn allows(self, deletes: u64, listed: u64) -> bool {
        match self {
            MaxDelete::Count(n) => deletes <= n,
            MaxDelete::Percent(p) => deletes * 100 <= u64::from(p) * listed.max(1),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::location::PosixMeta;
    use SideState::*;

    pub(crate) fn file(key: &str, mtime: i128, size: u64) -> Entry {
        Entry {
            key: key.into(),
            size,
            modified: None,
            etag: None,
            meta: Some(PosixMeta {
                mtime_ns: Some(mtime),
                mode: Some(0o100644),
                uid: Some(0),
                gid: Some(0),
                rdev: None,
                ctime_ns: None,
            }),
        }
    }

    fn base_of(key: &str, a: &Entry, b: &Entry) -> BaseRow {
        BaseRow {
            key: key.into(),
            a_fp: fingerprint(a),
            b_fp: fingerprint(b),
            size: a.size,
            mtime_ns: a.meta.and_then(|m| m.mtime_ns),
            mode: Some(0o100644),
            uid: Some(0),
            gid: Some(0),
            crc32c: None,
        }
    }

    #[test]
    fn every_pair_of_states_has_the_documented_decision() {
        let cases = [
            (Unchanged, Unchanged, Decision::Nothing),
            (Absent, Absent, Decision::Nothing),
            (Deleted, Deleted, Decision::Forget),
            (
                Changed,
                Unchanged,
                Decision::Copy {
                    from: Side::A,
                    reason: "changed-on-a",
                    conflict: false,
                },
            ),
            (
                Unchanged,
                Changed,
                Decision::Copy {
                    from: Side::B,
                    reason: "changed-on-b",
                    conflict: false,
                },
            ),
            (
                New,
                Absent,
                Decision::Copy {
                    from: Side::A,
                    reason: "new-on-a",
                    conflict: false,
                },
            ),
            (
                Absent,
                New,
                Decision::Copy {
                    from: Side::B,
                    reason: "new-on-b",
                    conflict: false,
                },
            ),
            (
                Deleted,
                Unchanged,
                Decision::Delete {
                    on: Side::B,
                    reason: "deleted-on-a",
                },
            ),
            (
                Unchanged,
                Deleted,
                Decision::Delete {
                    on: Side::A,
                    reason: "deleted-on-b",
                },
            ),
            (
                Deleted,
                Changed,
                Decision::Copy {
                    from: Side::B,
                    reason: "changed-on-b-deleted-on-a",
                    conflict: true,
                },
            ),
            (
                Changed,
                Deleted,
                Decision::Copy {
                    from: Side::A,
                    reason: "changed-on-a-deleted-on-b",
                    conflict: true,
                },
            ),
            (Changed, Changed, Decision::Compare),
            (New, New, Decision::Compare),
        ];
        for (a, b, want) in cases {
            assert_eq!(decide(a, b), want, "{a:?} {b:?}");
        }
    }

    #[test]
    fn nothing_without_a_base_entry_is_ever_deleted() {
        for a in [Absent, New] {
            for b in [Absent, New] {
                assert!(
                    !matches!(decide(a, b), Decision::Delete { .. }),
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn a_listing_settles_unchanged_new_and_deleted_alone() {
        let (a, b) = (file("k", 10, 3), file("k", 10, 3));
        let base = base_of("k", &a, &b);
        assert_eq!(
            listed_state(Some(&a), Some(&base), Side::A),
            Some(Unchanged)
        );
        assert_eq!(listed_state(None, Some(&base), Side::A), Some(Deleted));
        assert_eq!(listed_state(Some(&a), None, Side::A), Some(New));
        assert_eq!(listed_state(None, None, Side::B), Some(Absent));
        let touched = file("k", 11, 3);
        assert_eq!(listed_state(Some(&touched), Some(&base), Side::A), None);
        let mut chmod = a.clone();
        chmod.meta = chmod.meta.map(|m| PosixMeta {
            mode: Some(0o100600),
            ..m
        });
        assert_eq!(
            listed_state(Some(&chmod), Some(&base), Side::B),
            None,
            "a chmod moves the fingerprint"
        );
    }

    #[test]
    fn another_etag_is_a_change_and_a_missing_one_is_not() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let o = Entry {
            key: "k".into(),
            size: 8,
            modified: Some(t0),
            etag: Some("\"e1\"".into()),
            meta: None,
        };
        let base = BaseRow {
            key: "k".into(),
            a_fp: fingerprint(&o),
            b_fp: fingerprint(&o),
            size: 8,
            ..Default::default()
        };
        let rewritten = Entry {
            etag: Some("\"e2\"".into()),
            ..o.clone()
        };
        assert_eq!(
            listed_state(Some(&rewritten), Some(&base), Side::A),
            Some(Changed),
            "same size and second, another upload"
        );
        let unlisted = Entry {
            etag: None,
            ..o.clone()
        };
        assert_eq!(
            listed_state(Some(&unlisted), Some(&base), Side::A),
            Some(Unchanged),
            "a listing without ETags"
        );
        let later = Entry {
            etag: None,
            modified: Some(t0 + std::time::Duration::from_secs(1)),
            ..o
        };
        assert_eq!(
            listed_state(Some(&later), Some(&base), Side::A),
            None,
            "its time moved: look"
        );
    }

    #[test]
    fn an_object_rewritten_in_place_moves_its_fingerprint() {
        let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
        let mut o = Entry {
            key: "k".into(),
            size: 3,
            modified: Some(t0),
            etag: Some("\"e\"".into()),
            meta: None,
        };
        let before = fingerprint(&o);
        o.modified = Some(t0 + std::time::Duration::from_secs(2));
        assert_ne!(fingerprint(&o), before);
    }

    /// What a stat of [`file`] shows.
    pub(crate) fn file_info(size: u64, mtime: i128) -> ObjectInfo {
        ObjectInfo {
            size,
            meta: PosixMeta {
                mtime_ns: Some(mtime),
                mode: Some(0o100644),
                uid: Some(0),
                gid: Some(0),
                rdev: None,
                ctime_ns: None,
            },
            ..Default::default()
        }
    }

    #[test]
    fn stored_metadata_equal_to_the_base_is_unchanged() {
        let a = file("k", 5_000_000_000, 3);
        let base = base_of("k", &a, &a);
        let mut info = file_info(3, 5_000_000_000);
        assert!(matches_base(&info, &base));
        info.meta.mode = Some(0o100600);
        assert!(!matches_base(&info, &base), "mode changed");
        info.meta.mode = None;
        assert!(matches_base(&info, &base), "unknown mode is no evidence");
        info.meta.uid = Some(1000);
        assert!(!matches_base(&info, &base), "chown");
        info.meta.uid = None;
        assert!(matches_base(&info, &base), "unknown owner is no evidence");
        info.meta.mtime_ns = Some(6_000_000_000);
        assert!(!matches_base(&info, &base), "mtime changed");
    }

    #[test]
    fn the_newer_version_wins_unless_a_side_is_chosen() {
        let at = |ns| ObjectInfo {
            meta: PosixMeta {
                mtime_ns: Some(ns),
                ..Default::default()
            },
            ..Default::default()
        };
        let (old, new) = (at(1), at(2));
        assert_eq!(winner(ConflictPolicy::KeepBoth, &old, &new), Side::B);
        assert_eq!(winner(ConflictPolicy::Newer, &new, &old), Side::A);
        assert_eq!(winner(ConflictPolicy::KeepBoth, &old, &old), Side::A, "tie");
        assert_eq!(winner(ConflictPolicy::AWins, &old, &new), Side::A);
        assert_eq!(winner(ConflictPolicy::BWins, &new, &old), Side::B);
    }

    #[test]
    fn conflict_names_carry_the_side_and_the_losers_utc_time() {
        // 2026-11-30T04:15:29.123Z
        let ns = 1_796_012_129_123_000_000i128;
        assert_eq!(
            conflict_name("dir/doc.txt", Side::B, Some(ns)),
            "dir/doc.txt.conflict-B-20261130T041529.123Z"
        );
        assert_eq!(
            conflicted_key("dir/doc.txt.conflict-B-20261130T041529.123Z"),
            Some("dir/doc.txt")
        );
        for not in [
            "dir/doc.txt",
            ".conflict-A-20261130T041529.123Z",
            "doc.conflict-C-20261130T041529.123Z",
            "doc.conflict-A-20261130T041529.123",
            "doc.conflict-A-20261130X041529.123Z",
        ] {
            assert_eq!(conflicted_key(not), None, "{not}");
        }
        assert_eq!(utc_stamp(0), "19700101T000000.000Z");
        assert_eq!(utc_stamp(951_782_400_000_000_000), "20000229T000000.000Z");
    }

    #[test]
    fn max_delete_reads_counts_and_percentages() {
        assert_eq!("50%".parse(), Ok(MaxDelete::Percent(50)));
        assert_eq!("12".parse(), Ok(MaxDelete::Count(12)));
        assert!("150%"
            .parse::<MaxDelete>()
            .unwrap_err()
            .contains("at most 100%"));
        assert!("lots"
            .parse::<MaxDelete>()
            .unwrap_err()
            .contains("max_delete `lots`"));
        let half = MaxDelete::Percent(50);
        assert!(half.allows(5, 10));
        assert!(!half.allows(6, 10));
        assert!(MaxDelete::Count(3).allows(3, 1000));
        assert!(!MaxDelete::Count(3).allows(4, 1000));
    }
}
