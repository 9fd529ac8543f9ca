//! The storage abstraction every layer above uses: a [`Location`] is a tree of
//! keys (an S3 bucket + prefix, or a local directory) that can be listed as one
//! stream sorted in S3's byte order, read by byte range, written atomically and
//! deleted. Keys are relative to the location's root and use `/` as separator;
//! a key ending in `/` is a directory marker (an empty directory).
//!
//! Nothing here knows about tasks, the engine or FUSE. The engine and the mount
//! both go through the same `write`, so atomicity, multipart and checksums live
//! in the store, once.

pub mod dirfd;
pub mod key;
pub mod known_meta;
pub mod local;
mod local_files;
mod local_write;
pub mod memory;
pub mod meta;
pub mod privilege;
pub mod s3;
mod s3_list;
pub mod s3_settings;
mod s3_write;
pub mod special;
mod walk;

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub use meta::{FileKind, PosixMeta};

/// Where a location's keys live, to tell whether two locations overlap.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Place {
    /// `endpoint` is the custom endpoint URL, or `aws`.
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    /// An absolute path (symlinks resolved where it exists).
    Local(std::path::PathBuf),
}

impl Place {
    /// One place contains the other (or they are the same).
    pub fn overlaps(&self, other: &Place) -> bool {
        match (self, other) {
            (
                Place::S3 {
                    endpoint: e1,
                    bucket: b1,
                    prefix: p1,
                },
                Place::S3 {
                    endpoint: e2,
                    bucket: b2,
                    prefix: p2,
                },
            ) => {
                e1 == e2 && b1 == b2 && (p1.starts_with(p2.as_str()) || p2.starts_with(p1.as_str()))
            }
            (Place::Local(a), Place::Local(b)) => a.starts_with(b) || b.starts_with(a),
            _ => false,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::S3 {
                endpoint,
                bucket,
                prefix,
            } if endpoint == "aws" => write!(f, "s3://{bucket}/{prefix}"),
            Place::S3 {
                endpoint,
                bucket,
                prefix,
            } => write!(f, "s3://{bucket}/{prefix} at {endpoint}"),
            Place::Local(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One listed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative key; ends with `/` for a directory marker.
    pub key: String,
    pub size: u64,
    /// Local: the file's mtime. S3: LastModified (the stored POSIX mtime needs a `stat`).
    pub modified: Option<SystemTime>,
    /// S3 ETag (quoted as S3 sends it); None for local files.
    pub etag: Option<String>,
    /// POSIX metadata when the listing already carries it (local walks do, S3 listings do not).
    pub meta: Option<PosixMeta>,
}

impl Entry {
    pub fn is_dir_marker(&self) -> bool {
        self.key.ends_with('/')
    }
}

/// One page of a directory's listing (one level, no recursion).
#[derive(Clone, Debug, Default)]
pub struct DirPage {
    /// Files of the directory (full relative keys) and its sub-directories
    /// (full relative keys ending in `/`), in byte order. The directory's own
    /// marker is left out.
    pub items: Vec<DirItem>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
    /// The directory's own marker object (`dir` itself, S3) was in this
    /// page: it exists. Always false where directories are real (local).
    pub marker: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirItem {
    File(Entry),
    Dir(String),
}

impl DirItem {
    pub fn key(&self) -> &str {
        match self {
            DirItem::File(e) => &e.key,
            DirItem::Dir(k) => k,
        }
    }
}

/// What `stat` knows about one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub etag: Option<String>,
    pub meta: PosixMeta,
    /// The store's own checksum, when it keeps one.
    pub checksum: Option<Checksum>,
    /// An S3 object's system and user metadata (empty for local files).
    pub attrs: ObjectAttrs,
}

/// What an S3 object carries besides its bytes and POSIX metadata: the
/// headers S3 serves it with and every user metadata key (other tools'
/// too). Copies from S3 to S3 keep them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectAttrs {
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    /// `Expires`, as the server sent it (an HTTP date).
    pub expires: Option<String>,
    /// `x-amz-meta-*` keys (lower-case, without the prefix).
    pub user: std::collections::BTreeMap<String, String>,
    /// How many tags the object has (the tags themselves are asked for
    /// only when a copy needs them: [`ByteSource::tags`]).
    pub tag_count: u32,
}

/// A CRC32C checksum, either of the whole object or S3's composite form
/// (CRC32C of the parts' CRC32Cs, with the part count) for multipart uploads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Checksum {
    Crc32c(u32),
    Crc32cComposite { value: u32, parts: u32 },
}

impl Checksum {
    /// S3's header form: base64 of the big-endian value, `-N` for composites.
    pub fn to_header(self) -> String {
        use base64::Engine as _;
        let (v, parts) = match self {
            Checksum::Crc32c(v) => (v, None),
            Checksum::Crc32cComposite { value, parts } => (value, Some(parts)),
        };
        let b = base64::engine::general_purpose::STANDARD.encode(v.to_be_bytes());
        match parts {
            Some(n) => format!("{b}-{n}"),
            None => b,
        }
    }

    pub fn from_header(s: &str) -> Option<Checksum> {
        use base64::Engine as _;
        let (b, parts) = match s.split_once('-') {
            Some((b, n)) => (b, Some(n.parse::<u32>().ok()?)),
            None => (s, None),
        };
        let raw = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
        let v = u32::from_be_bytes(raw.try_into().ok()?);
        Some(match parts {
            Some(parts) => Checksum::Crc32cComposite { value: v, parts },
            None => Checksum::Crc32c(v),
        })
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "crc32c:{}", self.to_header())
    }
}

/// What a write produced: the checksums of the bytes that reached the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub bytes: u64,
    /// CRC32C of the whole content, computed while streaming (unknown for a
    /// server-side copy whose store reports only a composite).
    pub crc32c: Option<u32>,
    /// The checksum the new object should have in the store's own form
    /// (full CRC32C for a single PUT, composite for multipart).
    pub stored: Option<Checksum>,
    /// The checksum the store reported for what it stored, in its answer to
    /// the write itself (S3 returns it from PutObject and
    /// CompleteMultipartUpload); `None` when it said nothing.
    pub reported: Option<Checksum>,
    /// How a listing will show the new object: its ETag (S3) ...
    pub etag: Option<String>,
    /// ... or its mtime (local files), when known ...
    pub mtime_ns: Option<i128>,
    /// ... with its permission bits (local files).
    pub mode: Option<u32>,
}

impl WriteOutcome {
    /// The written object as its store will list it, for the pair cache.
    pub fn as_listed(&self, key: &str) -> Entry {
        Entry {
            key: key.to_string(),
            size: self.bytes,
            modified: None,
            etag: self.etag.clone(),
            meta: self.mtime_ns.map(|ns| PosixMeta {
                mtime_ns: Some(ns),
                mode: self.mode,
                ..Default::default()
            }),
        }
    }
}

/// Errors of the storage layer. `Transient` ones are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error("{location}: key `{key}` not found")]
    NotFound { location: String, key: String },
    #[error("{location}: key `{key}` cannot be a local path: {reason}")]
    UnsafeKey {
        location: String,
        key: String,
        reason: key::UnsafeReason,
    },
    #[error("{location}: key `{key}` is both a file and a directory")]
    FileDirClash { location: String, key: String },
    #[error("{location}: key `{key}` changed while it was read (expected ETag {expected})")]
    Changed {
        location: String,
        key: String,
        expected: String,
    },
    #[error("{location}: {op}{}: {message}", if key.is_empty() { String::new() } else { format!(" `{key}`") })]
    Io {
        location: String,
        op: &'static str,
        key: String,
        message: String,
        transient: bool,
    },
    #[error("{location}: checksum mismatch for `{key}`: expected {expected}, got {actual}")]
    ChecksumMismatch {
        location: String,
        key: String,
        expected: String,
        actual: String,
    },
    #[error("{location}: {message}")]
    Config { location: String, message: String },
    /// This key cannot be written here by this user (a device as non-root):
    /// reported and skipped, not an error of the execution.
    #[error("{location}: `{key}`: {message}")]
    Unsupported {
        location: String,
        key: String,
        message: String,
    },
}

impl LocationError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LocationError::Io {
                transient: true,
                ..
            }
        )
    }
}

pub type Result<T, E = LocationError> = std::result::Result<T, E>;

/// A byte source of known length that can be read by ranges, concurrently.
/// Writes pull from it, so a multipart upload reads its parts in parallel
/// whether they come from a local file, a staged mount file or another bucket.
#[async_trait]
pub trait ByteSource: Send + Sync {
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads exactly `range` (callers keep ranges to a part size).
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes>;
    /// The source's stored checksum of the whole content, if it has one.
    fn known_crc32c(&self) -> Option<u32> {
        None
    }
    /// The attributes of the object it reads, to write them along (S3 → S3).
    fn attrs(&self) -> Option<&ObjectAttrs> {
        None
    }
    /// The tags of the object it reads (asked for when `attrs` counts some).
    async fn tags(&self) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}

/// A source that carries the attributes of the object it reads.
pub struct WithAttrs {
    pub inner: Arc<dyn ByteSource>,
    pub attrs: ObjectAttrs,
    /// Where the object is, to ask for its tags.
    pub origin: Option<(Arc<dyn Location>, String)>,
}

#[async_trait]
impl ByteSource for WithAttrs {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        self.inner.read_range(range).await
    }
    fn known_crc32c(&self) -> Option<u32> {
        self.inner.known_crc32c()
    }
    fn attrs(&self) -> Option<&ObjectAttrs> {
        Some(&self.attrs)
    }
    async fn tags(&self) -> Result<Vec<(String, String)>> {
        match &self.origin {
            Some((loc, key)) => loc.tags(key).await,
            None => Ok(Vec::new()),
        }
    }
}

/// How a write should treat an existing key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    Replace,
    /// Fail instead of replacing an existing key (S3 `If-None-Match: *`).
    CreateNew,
}

#[async_trait]
pub trait Location: Send + Sync + std::fmt::Debug {
    /// How the location is named in messages (`s3://bucket/prefix`, `/path`).
    fn describe(&self) -> String;

    /// Where its keys live (for the guards' overlap checks).
    fn place(&self) -> Place;

    /// What tells this location apart from every other (the endpoint too,
    /// for S3): keys state such as the pair cache.
    fn identity(&self) -> String {
        self.describe()
    }

    /// True when keys must map to local paths (a file and a directory of the
    /// same name cannot coexist).
    fn keys_are_paths(&self) -> bool;

    /// Every key under the root, sorted in byte order, as a stream.
    fn list(&self) -> BoxStream<'_, Result<Entry>>;

    /// Metadata of one key; `Ok(None)` when it does not exist.
    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Reads a byte range of a key. With `if_match`, fails with `Changed` when
    /// the key's ETag is no longer the given one.
    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes>;

    /// A whole (small) object with what `stat` would say of it. Stores that
    /// answer both in one request (S3's GetObject) override this.
    async fn read_whole(&self, key: &str, if_match: Option<&str>) -> Result<(ObjectInfo, Bytes)> {
        let info = self
            .stat(key)
            .await?
            .ok_or_else(|| LocationError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            })?;
        let body = self.read_range(key, 0..info.size, if_match).await?;
        Ok((info, body))
    }

    /// Writes `source` to `key` atomically: nothing partial is ever visible.
    async fn write(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome>;

    /// One page of the directory `dir` (`""` for the root, else a key ending
    /// in `/`), starting at `token` (from the previous page).
    async fn list_dir(&self, dir: &str, token: Option<String>) -> Result<DirPage>;

    /// Whether the directory `dir` (a key ending in `/`) exists, with its
    /// marker's metadata when it has one. On S3 a directory exists when any
    /// key starts with it.
    async fn stat_dir(&self, dir: &str) -> Result<Option<ObjectInfo>> {
        self.stat(dir).await
    }

    /// Replaces the POSIX metadata (mode, owner, mtime) of `key` (a file, or
    /// a directory key ending in `/`), keeping its content.
    async fn set_meta(&self, key: &str, meta: &PosixMeta) -> Result<()>;

    /// Moves `from` to `to` in one step when the store can (a local rename,
    /// which moves a whole directory when the keys end in `/`): `Ok(false)`
    /// when it cannot; [`move_key`] then copies and deletes.
    async fn rename_native(&self, _from: &str, _to: &str) -> Result<bool> {
        Ok(false)
    }

    /// Deletes one key and nothing else (unlike `delete`, a local directory
    /// left empty stays).
    async fn delete_only(&self, key: &str) -> Result<()> {
        self.delete(key).await
    }

    /// Creates a directory marker (`key` ends with `/`).
    async fn make_dir(&self, key: &str, meta: &PosixMeta) -> Result<()>;

    /// Server-side copy from `src` when both ends allow it. `Ok(None)` means
    /// "not possible here, stream it instead".
    async fn copy_from(
        &self,
        _src: &dyn Location,
        _src_key: &str,
        _info: &ObjectInfo,
        _key: &str,
    ) -> Result<Option<WriteOutcome>> {
        Ok(None)
    }

    async fn delete(&self, key: &str) -> Result<()>;

    /// The tags of `key` (S3 object tagging; none elsewhere).
    async fn tags(&self, _key: &str) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// The checksum of what is stored at `key` now, as the store keeps it
    /// (S3: its own CRC32C, composite for multipart; local: computed by
    /// reading the file). Used to verify a transfer.
    async fn stored_checksum(&self, key: &str) -> Result<Option<Checksum>>;

    /// Removes leftovers of interrupted writes of ours (temp files, multipart uploads).
    /// Returns how many were removed.
    async fn clean_leftovers(&self) -> Result<u64>;

    /// More to say about an error of this location, for the user: who we
    /// are and what command shows the fix, for permission errors.
    async fn explain(&self, _err: &LocationError) -> Option<String> {
        None
    }

    /// The storage class written objects get when they cannot be read
    /// back without a restore (S3 `GLACIER`, `DEEP_ARCHIVE`).
    fn archive_class(&self) -> Option<String> {
        None
    }

    /// For downcasting in server-side copy.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A [`ByteSource`] reading a key of a location, pinned to the ETag seen when
/// it was listed, so a changing object is never mixed.
pub struct LocationSource {
    pub location: Arc<dyn Location>,
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    pub crc32c: Option<u32>,
}

#[async_trait]
impl ByteSource for LocationSource {
    fn len(&self) -> u64 {
        self.size
    }
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        self.location
            .read_range(&self.key, range, self.etag.as_deref())
            .await
    }
    fn known_crc32c(&self) -> Option<u32> {
        self.crc32c
    }
}

/// An in-memory [`ByteSource`] (small bodies, tests).
pub struct MemorySource(pub Bytes);

#[async_trait]
impl ByteSource for MemorySource {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        Ok(self.0.slice(range.start as usize..range.end as usize))
    }
}

/// Moves one file key within a location: a native rename where the store has
/// one, else a copy (server-side where possible, streamed otherwise) and a
/// delete of the original once the copy is complete.
pub async fn move_key(loc: &Arc<dyn Location>, from: &str, to: &str) -> Result<()> {
    if loc.rename_native(from, to).await? {
        return Ok(());
    }
    let info = loc
        .stat(from)
        .await?
        .ok_or_else(|| LocationError::NotFound {
            location: loc.describe(),
            key: from.to_string(),
        })?;
    if loc
        .copy_from(loc.as_ref(), from, &info, to)
        .await?
        .is_none()
    {
        let source = Arc::new(LocationSource {
            location: loc.clone(),
            key: from.to_string(),
            size: info.size,
            etag: info.etag.clone(),
            crc32c: None,
        });
        loc.write(to, source, &info.meta, WriteMode::Replace)
            .await?;
    }
    loc.delete_only(from).await
}

/// CRC32C over S3 parts: the composite checksum S3 reports for a multipart upload.
pub fn composite_crc32c(part_crcs: &[u32]) -> Checksum {
    let mut buf = Vec::with_capacity(part_crcs.len() * 4);
    for c in part_crcs {
        buf.extend_from_slice(&c.to_be_bytes());
    }
    Checksum::Crc32cComposite {
        value: crc32c::crc32c(&buf),
        parts: part_crcs.len() as u32,
    }
}

/// Splits `len` bytes into ranges of at most `part` bytes (at least one range, even when empty).
pub fn part_ranges(len: u64, part: u64) -> Vec<Range<u64>> {
    if len == 0 {
        // One empty range, so an empty object is still written once.
        return std::iter::once(0..0).collect();
    }
    let part = part.max(1);
    (0..len.div_ceil(part))
        .map(|i| i * part..((i + 1) * part).min(len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_header_round_trips() {
        for c in [
            Checksum::Crc32c(0xdead_beef),
            Checksum::Crc32cComposite {
                value: 7,
                parts: 12,
            },
        ] {
            assert_eq!(Checksum::from_header(&c.to_header()), Some(c));
        }
        assert_eq!(Checksum::from_header("not base64!"), None);
    }

    #[test]
    fn part_ranges_cover_everything_once() {
        assert_eq!(part_ranges(0, 8), vec![0..0]);
        assert_eq!(part_ranges(8, 8), vec![0..8]);
        assert_eq!(part_ranges(17, 8), vec![0..8, 8..16, 16..17]);
    }
}
