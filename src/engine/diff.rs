//! The diff: a merge-join of two listings sorted in byte order into actions.
//!
//! Both listings are consumed one entry at a time, so memory does not grow
//! with the number of keys. The decision for one key is a pure function
//! ([`decide`]) of the two entries and the task options; when the listings
//! alone cannot settle "changed or not" (an S3 listing carries no POSIX
//! mtime), the action is [`Action::Check`] and a transfer worker fetches the
//! metadata and calls [`decide_with_info`].

use std::cmp::Ordering;
use std::time::SystemTime;

use futures::stream::{BoxStream, Peekable, StreamExt};

use super::clash::ClashFilter;
use super::filter::Filter;
use crate::location::privilege::{self, Privileges};
use crate::location::{key, Checksum, Entry, LocationError, ObjectInfo, PosixMeta};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferMode {
    /// Copy only what differs (size, mtime or checksum).
    Changed,
    /// Copy everything, without comparing.
    All,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Overwrite {
    Always,
    Never,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PreserveDeleted {
    /// Keep destination keys the source no longer has.
    Preserve,
    /// Delete them.
    Remove,
}

#[derive(Clone, Debug)]
pub struct DiffOptions {
    pub transfer_mode: TransferMode,
    pub overwrite: Overwrite,
    pub preserve_deleted: PreserveDeleted,
    pub filter: Filter,
    /// The destination maps keys to local paths: unsafe keys and
    /// file/directory clashes are skipped.
    pub dst_keys_are_paths: bool,
    /// What of the source's privileged metadata such a destination gets:
    /// a setuid bit it does not keep is no difference.
    pub privileges: Privileges,
}

/// Why a key is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyReason {
    New,
    SizeDiffers,
    MtimeDiffers,
    ChecksumDiffers,
    TransferModeAll,
    /// Same content; the mode (or, as root, the owner) differs: only the
    /// metadata is rewritten.
    MetadataDiffers,
    /// One side is a symbolic link, special file or device number the
    /// other is not: copied whole (a metadata rewrite cannot change it).
    TypeDiffers,
}

/// Why a key is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    Unchanged,
    OverwriteNever,
    /// The key cannot be transferred (unsafe path, DataSync-refused form,
    /// symlink, file/directory clash); the text says why.
    Refused(String),
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Unchanged => f.write_str("unchanged"),
            SkipReason::OverwriteNever => {
                f.write_str("exists at destination and overwrite is NEVER")
            }
            SkipReason::Refused(why) => f.write_str(why),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Copy {
        src: Entry,
        dst: Option<Entry>,
        reason: CopyReason,
    },
    /// Sizes agree; stored metadata decides.
    Check {
        src: Entry,
        dst: Entry,
    },
    Delete {
        dst: Entry,
    },
    Skip {
        key: String,
        reason: SkipReason,
    },
}

impl Action {
    pub fn key(&self) -> &str {
        match self {
            Action::Copy { src, .. } | Action::Check { src, .. } => &src.key,
            Action::Delete { dst } => &dst.key,
            Action::Skip { key, .. } => key,
        }
    }
}

/// Two mtimes closer than this are the same: DataSync stores milliseconds,
/// so a nanosecond clock read back through it differs below 1 ms.
const MTIME_TOLERANCE_NS: i128 = 1_000_000;

/// S3 listings truncate LastModified to the second.
const LISTED_TIME_GRANULARITY_NS: i128 = 1_000_000_000;

fn same_mtime(a: Option<i128>, b: Option<i128>) -> Option<bool> {
    Some((a? - b?).abs() < MTIME_TOLERANCE_NS)
}

fn to_ns(t: SystemTime) -> i128 {
    crate::location::meta::system_time_to_ns(t)
}

/// DataSync refuses keys starting with `/` or containing `//`, `/./`, `/../`
/// even between buckets; local destinations refuse every unsafe path.
pub(super) fn refusal(key: &str, keys_are_paths: bool) -> Option<String> {
    if keys_are_paths {
        return key::check_key(key)
            .err()
            .map(|r| format!("not a safe local path: {r}"));
    }
    let padded = format!("/{key}");
    let bad = key.starts_with('/')
        || ["//", "/./", "/../"].iter().any(|p| padded.contains(p))
        || padded.ends_with("/..")
        || padded.ends_with("/.");
    bad.then(|| {
        "DataSync refuses keys that start with `/` or contain `//`, `/./` or `/../`".to_string()
    })
}

/// The decision for one key from the two listings alone.
pub fn decide(src: Option<&Entry>, dst: Option<&Entry>, opts: &DiffOptions) -> Option<Action> {
    match (src, dst) {
        (None, None) => None,
        (None, Some(d)) => (opts.preserve_deleted == PreserveDeleted::Remove)
            .then(|| Action::Delete { dst: d.clone() }),
        (Some(s), None) => Some(copy(s, None, CopyReason::New)),
        (Some(s), Some(d)) => Some(compare(s, d, opts)),
    }
}

fn copy(src: &Entry, dst: Option<&Entry>, reason: CopyReason) -> Action {
    Action::Copy {
        src: src.clone(),
        dst: dst.cloned(),
        reason,
    }
}

fn skip(key: &str, reason: SkipReason) -> Action {
    Action::Skip {
        key: key.to_string(),
        reason,
    }
}

fn compare(s: &Entry, d: &Entry, opts: &DiffOptions) -> Action {
    if opts.overwrite == Overwrite::Never {
        return skip(&s.key, SkipReason::OverwriteNever);
    }
    if opts.transfer_mode == TransferMode::All {
        return copy(s, Some(d), CopyReason::TransferModeAll);
    }
    if s.is_dir_marker() {
        return skip(&s.key, SkipReason::Unchanged);
    }
    if s.size != d.size {
        return copy(s, Some(d), CopyReason::SizeDiffers);
    }
    if let (Some(a), Some(b)) = (&s.meta, &d.meta) {
        if type_differs(a, b) {
            return copy(s, Some(d), CopyReason::TypeDiffers);
        }
    }
    if let (Some(a), Some(b)) = (&s.etag, &d.etag) {
        if a == b {
            return skip(&s.key, SkipReason::Unchanged);
        }
    }
    let src_mtime = s.meta.and_then(|m| m.mtime_ns);
    let dst_mtime = d.meta.and_then(|m| m.mtime_ns);
    match same_mtime(src_mtime, dst_mtime) {
        Some(true) => match (s.meta, d.meta) {
            (Some(a), Some(b)) if meta_differs(&as_written(&a, opts), &b) => {
                copy(s, Some(d), CopyReason::MetadataDiffers)
            }
            _ => skip(&s.key, SkipReason::Unchanged),
        },
        Some(false) => copy(s, Some(d), CopyReason::MtimeDiffers),
        // An object uploaded before the file was last modified is stale
        // whatever its stored metadata says: no need to look. Listings give
        // LastModified in whole seconds, so the upload may have happened up
        // to a second after the time shown.
        None if src_mtime
            .zip(d.modified.map(to_ns))
            .is_some_and(|(sm, dm)| dm + LISTED_TIME_GRANULARITY_NS <= sm) =>
        {
            copy(s, Some(d), CopyReason::MtimeDiffers)
        }
        None => Action::Check {
            src: s.clone(),
            dst: d.clone(),
        },
    }
}

/// The source's metadata `m` as a copy to the destination writes it.
fn as_written(m: &PosixMeta, opts: &DiffOptions) -> PosixMeta {
    if opts.dst_keys_are_paths {
        privilege::as_written(m, opts.privileges)
    } else {
        *m
    }
}

/// Whether stored metadata other than the mtime differs where both sides
/// know it: the permission bits, and (when running as root, who alone may
/// give a file away) the owner and group.
pub fn meta_differs(a: &PosixMeta, b: &PosixMeta) -> bool {
    let differ = |x: Option<u32>, y: Option<u32>| matches!((x, y), (Some(x), Some(y)) if x != y);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    differ(a.mode.map(|m| m & 0o7777), b.mode.map(|m| m & 0o7777))
        || (root && (differ(a.uid, b.uid) || differ(a.gid, b.gid)))
}

/// Whether both sides' modes are known and say different file types (a
/// link and a file of the same size and time), or two devices have other
/// numbers.
pub fn type_differs(a: &PosixMeta, b: &PosixMeta) -> bool {
    match (a.mode, b.mode) {
        (Some(_), Some(_)) => a.kind() != b.kind() || (a.kind().is_special() && a.rdev != b.rdev),
        _ => false,
    }
}

/// Settles a [`Action::Check`] once both sides' stored metadata is known.
/// Returns the copy reason, or `None` when unchanged.
pub fn decide_with_info(src: &ObjectInfo, dst: &ObjectInfo) -> Option<CopyReason> {
    if src.size != dst.size {
        return Some(CopyReason::SizeDiffers);
    }
    if type_differs(&src.meta, &dst.meta) {
        return Some(CopyReason::TypeDiffers);
    }
    let same_content = match (src.checksum, dst.checksum) {
        (Some(a @ Checksum::Crc32c(_)), Some(b @ Checksum::Crc32c(_))) => {
            if a != b {
                return Some(CopyReason::ChecksumDiffers);
            }
            true
        }
        // Composites depend on the part size: equal ones prove equal
        // content, different ones prove nothing; the mtime decides.
        (Some(a), Some(b)) if a == b => true,
        _ => false,
    };
    let mtime = |i: &ObjectInfo| i.meta.mtime_ns.or(i.modified.map(to_ns));
    if !same_content && same_mtime(mtime(src), mtime(dst)) != Some(true) {
        return Some(CopyReason::MtimeDiffers);
    }
    meta_differs(&src.meta, &dst.meta).then_some(CopyReason::MetadataDiffers)
}

/// POSIX metadata to write with a copy: the source's, as far as known.
pub fn meta_to_write(src: &Entry, info: Option<&ObjectInfo>) -> PosixMeta {
    let mut m = info.map(|i| i.meta).or(src.meta).unwrap_or_default();
    // ctime is the source's own (a local file's cannot be set; a copy is a
    // new change at the destination): never copied.
    m.ctime_ns = None;
    if m.mtime_ns.is_none() {
        m.mtime_ns = info
            .and_then(|i| i.modified)
            .or(src.modified)
            .map(crate::location::meta::store_time_ns);
    }
    m
}

pub(super) type Listing<'a> = Peekable<BoxStream<'a, Result<Entry, LocationError>>>;

/// An item of a listing that is skipped rather than fatal: reported per key.
pub(super) fn per_key_error(e: &LocationError) -> Option<(String, String)> {
    match e {
        LocationError::UnsafeKey { key, reason, .. } => {
            Some((key.clone(), format!("not a safe key: {reason}")))
        }
        LocationError::FileDirClash { key, .. } => Some((key.clone(), e.to_string())),
        LocationError::Io {
            op: "skip",
            key,
            message,
            ..
        } => Some((key.clone(), message.clone())),
        _ => None,
    }
}

/// Streams the actions for two sorted listings. A fatal listing error ends
/// the stream with that error.
pub fn diff<'a>(
    src: BoxStream<'a, Result<Entry, LocationError>>,
    dst: BoxStream<'a, Result<Entry, LocationError>>,
    opts: DiffOptions,
) -> BoxStream<'a, Result<Action, LocationError>> {
    let src = if opts.dst_keys_are_paths {
        ClashFilter::wrap(src)
    } else {
        src
    };
    let state = (src.peekable(), dst.peekable(), opts, false);
    futures::stream::unfold(state, |(mut s, mut d, opts, done)| async move {
        if done {
            return None;
        }
        loop {
            match next_action(&mut s, &mut d, &opts).await {
                Step::Emit(a) => return Some((Ok(*a), (s, d, opts, false))),
                Step::Fatal(e) => return Some((Err(e), (s, d, opts, true))),
                Step::Nothing => continue,
                Step::End => return None,
            }
        }
    })
    .boxed()
}

enum Step {
    /// Boxed: an action holds two entries, the other steps nothing.
    Emit(Box<Action>),
    Fatal(LocationError),
    Nothing,
    End,
}

/// The head of a listing: an entry's key, a per-key error's key, a fatal
/// error, or the end.
pub(super) enum Head {
    Key(String),
    Fatal,
    End,
}

pub(super) async fn head(l: &mut Listing<'_>) -> Head {
    match std::pin::Pin::new(l).peek().await {
        None => Head::End,
        Some(Ok(e)) => Head::Key(e.key.clone()),
        Some(Err(e)) => match per_key_error(e) {
            Some((key, _)) => Head::Key(key),
            None => Head::Fatal,
        },
    }
}

/// Merges per-key errors in key order like entries: a key refused on either
/// side is skipped whole (neither copied nor deleted).
async fn next_action<'a>(s: &mut Listing<'a>, d: &mut Listing<'a>, opts: &DiffOptions) -> Step {
    let (hs, hd) = (head(s).await, head(d).await);
    for (h, side) in [(&hs, &mut *s), (&hd, &mut *d)] {
        if let Head::Fatal = h {
            return match side.next().await {
                Some(Err(e)) => Step::Fatal(e),
                _ => Step::Nothing,
            };
        }
    }
    let order = match (&hs, &hd) {
        (Head::Key(a), Head::Key(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Head::Key(_), _) => Ordering::Less,
        (_, Head::Key(_)) => Ordering::Greater,
        _ => return Step::End,
    };
    let (si, di) = match order {
        Ordering::Less => (s.next().await, None),
        Ordering::Greater => (None, d.next().await),
        Ordering::Equal => (s.next().await, d.next().await),
    };
    let key = match if order == Ordering::Greater { hd } else { hs } {
        Head::Key(k) => k,
        _ => return Step::Nothing,
    };
    if !opts.filter.selects(&key) {
        return Step::Nothing;
    }
    let refused = [&si, &di].into_iter().find_map(|i| {
        i.as_ref()
            .and_then(|r| r.as_ref().err())
            .and_then(per_key_error)
    });
    if let Some((_, why)) = refused {
        return Step::Emit(Box::new(skip(&key, SkipReason::Refused(why))));
    }
    let (se, de) = (si.and_then(Result::ok), di.and_then(Result::ok));
    if se.is_some() {
        if let Some(why) = refusal(&key, opts.dst_keys_are_paths) {
            return Step::Emit(Box::new(skip(&key, SkipReason::Refused(why))));
        }
    }
    match decide(se.as_ref(), de.as_ref(), opts) {
        Some(a) => Step::Emit(Box::new(a)),
        None => Step::Nothing,
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
