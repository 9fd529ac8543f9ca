//! A local directory as a [`Location`].
//!
//! Listing is the byte-ordered walk of `walk.rs`. Writes go to a temp file in
//! the target directory, are fsynced and renamed into place: a reader never
//! sees a partial file. Chunks of a large source are fetched concurrently and
//! written at their offsets under a process-wide byte budget. Temp files
//! carry the writer's pid, so a later run can tell a dead writer's leftovers
//! from a live writer's work in progress. Nothing is ever written through a
//! symbolic link inside the root. Symbolic links and special files are keys
//! too (`special.rs`): listed with `lstat`, a link's content is its target.

use std::fs;
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};

use super::key::{self, UnsafeReason};
use super::local_files::{meta_of, temp_name, TEMP_PREFIX, TEMP_SUFFIX};
use super::meta::{FileKind, MAX_LINK_TARGET};
use super::special;
use super::{
    ByteSource, Checksum, Entry, Location, LocationError, ObjectInfo, PosixMeta, Result, WriteMode,
    WriteOutcome,
};

/// Chunk size for streaming a source into a file: large enough to keep a
/// ranged GET efficient, small enough that a few in flight stay cheap.
const WRITE_CHUNK: u64 = 8 * 1024 * 1024;
/// Chunks of one file in flight at once (8 x 8 MiB ranged GETs, as many
/// streams as the fastest peers use for one large object).
const WRITE_AHEAD: usize = 8;
/// Read size when verifying a written file.
const VERIFY_CHUNK: u64 = 8 * 1024 * 1024;
/// Bytes in flight into local files across every write of the process
/// (in KiB permits): bounds memory however many large files are copied.
const WRITE_BUDGET_KIB: usize = 256 * 1024;
static WRITE_BUDGET: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(WRITE_BUDGET_KIB);
/// Entries buffered between the walking thread and the consumer.
const LIST_CHANNEL: usize = 1024;

/// Modes used when the source has none (DataSync's defaults).
const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

#[derive(Debug)]
pub struct LocalLocation {
    root: PathBuf,
    /// Temp files of dead writers seen by the last listing.
    leftovers: Arc<Mutex<Vec<PathBuf>>>,
}

impl LocalLocation {
    /// A directory location; the directory is created when missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root: PathBuf = root.into();
        if let Ok(m) = fs::metadata(&root) {
            if !m.is_dir() {
                return Err(LocationError::Config {
                    location: root.display().to_string(),
                    message: "exists but is not a directory".into(),
                });
            }
        }
        Ok(LocalLocation {
            root,
            leftovers: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf> {
        key::key_to_relpath(key)
            .map(|rel| self.root.join(rel))
            .map_err(|reason| self.unsafe_key(key, reason))
    }

    fn unsafe_key(&self, key: &str, reason: UnsafeReason) -> LocationError {
        LocationError::UnsafeKey {
            location: self.describe(),
            key: key.to_string(),
            reason,
        }
    }

    fn io_err(&self, op: &'static str, key: &str, e: io::Error) -> LocationError {
        if e.kind() == io::ErrorKind::NotFound {
            return LocationError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            };
        }
        LocationError::Io {
            location: self.describe(),
            op,
            key: key.to_string(),
            message: e.to_string(),
            transient: matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
            ),
        }
    }

    /// Creates the parent directories of `path` one by one below the root.
    /// A file in the way is a clash; a symbolic link in the way is refused,
    /// since following it could write outside the destination root.
    fn make_parents(&self, key: &str, path: &Path) -> Result<()> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        // The destination root itself is the user's choice: made as given.
        fs::create_dir_all(&self.root)
            .map_err(|e| self.io_err("create destination directory for", key, e))?;
        let rel = parent.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut dir = self.root.clone();
        for comp in rel.components() {
            dir.push(comp);
            match fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => continue,
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(LocationError::Io {
                        location: self.describe(),
                        op: "write",
                        key: key.to_string(),
                        message: format!(
                            "`{}` is a symbolic link; refusing to write through it",
                            dir.display()
                        ),
                        transient: false,
                    })
                }
                Ok(_) => {
                    return Err(LocationError::FileDirClash {
                        location: self.describe(),
                        key: key.to_string(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&dir) {
                    Ok(()) => {}
                    // Another writer made it meanwhile: look again.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                    Err(e) => return Err(self.io_err("create directory for", key, e)),
                },
                Err(e) => return Err(self.io_err("create directory for", key, e)),
            }
        }
        Ok(())
    }
}

/// Applies mode, owner and mtime; ownership only as root (others may not chown),
/// and failures to chown are not fatal (a file system may not support it).
fn apply_meta(
    path: &Path,
    file: Option<&fs::File>,
    meta: &PosixMeta,
    is_dir: bool,
) -> io::Result<()> {
    let default = if is_dir {
        DEFAULT_DIR_MODE
    } else {
        DEFAULT_FILE_MODE
    };
    // Owner first: chown clears setuid/setgid bits, which the mode then sets.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && (meta.uid.is_some() || meta.gid.is_some()) {
        let _ = std::os::unix::fs::chown(path, meta.uid, meta.gid);
    }
    let perm = meta.mode.map(|m| m & 0o7777).unwrap_or(default);
    fs::set_permissions(path, fs::Permissions::from_mode(perm))?;
    if let Some(t) = meta.mtime() {
        match file {
            Some(f) => f.set_modified(t)?,
            None => fs::File::open(path)?.set_modified(t)?,
        }
    }
    Ok(())
}

/// Entries of one directory read per page: a directory of 100k files is
/// paged rather than answered at once.
const DIR_PAGE: usize = 1000;

/// One page of a local directory, in byte order of the keys (a directory
/// sorts as `name/`), resuming after the key `token`. Our temp files are left
/// out; symbolic links and special files are listed as the walk lists them.
fn list_dir_page(path: &Path, dir: &str, token: Option<String>) -> io::Result<super::DirPage> {
    let mut items = Vec::new();
    for ent in fs::read_dir(path)? {
        let ent = ent?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let ft = ent.file_type()?;
        let item = if ft.is_dir() {
            super::DirItem::Dir(format!("{dir}{name}/"))
        } else {
            // DirEntry::metadata is lstat's: a link is listed, not followed.
            let m = ent.metadata()?;
            super::DirItem::File(Entry {
                key: format!("{dir}{name}"),
                size: special::listed_size(&m),
                modified: m.modified().ok(),
                etag: None,
                meta: Some(meta_of(&m)),
            })
        };
        if token.as_deref().is_some_and(|t| item.key() <= t) {
            continue;
        }
        items.push(item);
    }
    items.sort_by(|a, b| a.key().cmp(b.key()));
    let next = (items.len() > DIR_PAGE).then(|| items[DIR_PAGE - 1].key().to_string());
    items.truncate(DIR_PAGE);
    Ok(super::DirPage {
        items,
        next,
        marker: false,
    })
}

/// Renames without replacing an existing file (for `WriteMode::CreateNew`).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    let f = CString::new(from.as_os_str().as_bytes())?;
    let t = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them as given.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[async_trait]
impl Location for LocalLocation {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn keys_are_paths(&self) -> bool {
        true
    }

    /// The directory's absolute path with symlinks resolved: `/x/a`, `/x/a/`
    /// and `../a` are one location (for the pair cache and two-way bases).
    fn identity(&self) -> String {
        self.place().to_string()
    }

    fn place(&self) -> super::Place {
        let abs = fs::canonicalize(&self.root)
            .or_else(|_| std::path::absolute(&self.root))
            .unwrap_or_else(|_| self.root.clone());
        super::Place::Local(abs)
    }

    fn list(&self) -> BoxStream<'_, Result<Entry>> {
        let (tx, rx) = tokio::sync::mpsc::channel(LIST_CHANNEL);
        let walker = super::walk::Walker {
            root: self.root.clone(),
            location: self.describe(),
            tx,
            leftovers: self.leftovers.clone(),
        };
        tokio::task::spawn_blocking(move || walker.run());
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed()
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path_of(key)?;
        let m = match tokio::fs::symlink_metadata(&path).await {
            Ok(m) => m,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(self.io_err("stat", key, e)),
        };
        if m.is_dir() != key.ends_with('/') {
            return Ok(None);
        }
        Ok(Some(ObjectInfo {
            size: special::listed_size(&m),
            modified: m.modified().ok(),
            etag: None,
            meta: meta_of(&m),
            ..Default::default()
        }))
    }

    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        _if_match: Option<&str>,
    ) -> Result<Bytes> {
        let path = self.path_of(key)?;
        let len = (range.end - range.start) as usize;
        let res = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let m = fs::symlink_metadata(&path)?;
            let kind = special::kind_of(&m);
            if kind != FileKind::File {
                // A link's target or a special file's nothing: never opened.
                let body = special::content(&path, kind)?;
                let end = (range.end as usize).min(body.len());
                let start = (range.start as usize).min(end);
                if end - start != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the link changed while it was read",
                    ));
                }
                return Ok(body[start..end].to_vec());
            }
            // A link put in its place since is not followed.
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, range.start)?;
            Ok(buf)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r);
        res.map(Bytes::from)
            .map_err(|e| self.io_err("read", key, e))
    }

    async fn write(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let path = self.path_of(key)?;
        self.make_parents(key, &path)?;
        if tokio::fs::symlink_metadata(&path)
            .await
            .is_ok_and(|m| m.is_dir())
        {
            return Err(LocationError::FileDirClash {
                location: self.describe(),
                key: key.to_string(),
            });
        }
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = dir.join(temp_name());
        let result = match meta.kind() {
            FileKind::File | FileKind::Dir => self.write_temp(key, &tmp, source, meta).await,
            kind => self.write_special(key, &tmp, kind, source, meta).await,
        };
        let result = match result {
            Ok(out) => {
                let renamed = match mode {
                    WriteMode::Replace => tokio::fs::rename(&tmp, &path).await,
                    WriteMode::CreateNew => {
                        let (t, p) = (tmp.clone(), path.clone());
                        tokio::task::spawn_blocking(move || rename_noreplace(&t, &p))
                            .await
                            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
                    }
                };
                renamed
                    .map(|()| out)
                    .map_err(|e| self.io_err("rename into", key, e))
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn list_dir(&self, dir: &str, token: Option<String>) -> Result<super::DirPage> {
        let path = if dir.is_empty() {
            self.root.clone()
        } else {
            self.path_of(dir)?
        };
        let dir_key = dir.to_string();
        let describe = self.describe();
        let res = tokio::task::spawn_blocking(move || list_dir_page(&path, &dir_key, token))
            .await
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|r| r);
        match res {
            Ok(page) => Ok(page),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(super::DirPage::default()),
            Err(e) => Err(LocationError::Io {
                location: describe,
                op: "list directory",
                key: dir.to_string(),
                message: e.to_string(),
                transient: false,
            }),
        }
    }

    async fn set_meta(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        let path = self.path_of(key)?;
        let is_dir = key.ends_with('/');
        let current = fs::symlink_metadata(&path).map_err(|e| self.io_err("stat", key, e))?;
        let merged = PosixMeta {
            mtime_ns: meta.mtime_ns,
            mode: meta.mode.or(Some(current.mode())),
            uid: meta.uid,
            gid: meta.gid,
            rdev: None,
            ctime_ns: None,
        };
        let res = match special::kind_of(&current) {
            FileKind::File | FileKind::Dir => apply_meta(&path, None, &merged, is_dir),
            kind => special::apply_meta(&path, kind, &merged),
        };
        res.map_err(|e| self.io_err("set metadata of", key, e))
    }

    async fn rename_native(&self, from: &str, to: &str) -> Result<bool> {
        let (f, t) = (self.path_of(from)?, self.path_of(to)?);
        self.make_parents(to, &t)?;
        tokio::fs::rename(&f, &t)
            .await
            .map_err(|e| self.io_err("rename", from, e))?;
        Ok(true)
    }

    async fn delete_only(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let res = if key.ends_with('/') {
            tokio::fs::remove_dir(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        match res {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io_err("delete", key, e)),
            _ => Ok(()),
        }
    }

    async fn make_dir(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        let path = self.path_of(key)?;
        self.make_parents(key, &path)?;
        match tokio::fs::create_dir(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // lstat: a symlink to a directory is not ours to chmod.
                if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    return Err(LocationError::FileDirClash {
                        location: self.describe(),
                        key: key.to_string(),
                    });
                }
            }
            Err(e) => return Err(self.io_err("create directory", key, e)),
        }
        apply_meta(&path, None, meta, true).map_err(|e| self.io_err("set metadata of", key, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        let res = if key.ends_with('/') {
            match tokio::fs::remove_dir(&path).await {
                // A marker for a directory that still has content: the
                // directory stays, as it would in a bucket.
                Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
                r => r,
            }
        } else {
            tokio::fs::remove_file(&path).await
        };
        match res {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io_err("delete", key, e)),
        }
        // A bucket has no empty directories once their last key is gone.
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn stored_checksum(&self, key: &str) -> Result<Option<Checksum>> {
        self.crc32c_of(key).await.map(|c| Some(Checksum::Crc32c(c)))
    }

    async fn clean_leftovers(&self) -> Result<u64> {
        let found: Vec<PathBuf> = std::mem::take(&mut *crate::lock(&self.leftovers));
        let mut n = 0;
        for p in found {
            if tokio::fs::remove_file(&p).await.is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl LocalLocation {
    async fn write_temp(
        &self,
        key: &str,
        tmp: &Path,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
    ) -> Result<WriteOutcome> {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .map_err(|e| self.io_err("create temp file for", key, e))?;
        let file = Arc::new(file);
        let len = source.len();
        // Chunks arrive in any order and are written at their offsets; their
        // CRCs are combined in order at the end.
        let mut crcs: Vec<(u64, u32, u64)> =
            futures::stream::iter(super::part_ranges(len, WRITE_CHUNK))
                .map(|r| self.write_chunk(key, source.clone(), file.clone(), r))
                .buffer_unordered(WRITE_AHEAD)
                .try_collect()
                .await?;
        crcs.sort_by_key(|(start, _, _)| *start);
        let crc = crcs.iter().fold(0u32, |acc, (_, c, l)| {
            crc32c::crc32c_combine(acc, *c, *l as usize)
        });
        let written: u64 = crcs.iter().map(|(_, _, l)| l).sum();
        if written != len {
            return Err(LocationError::Io {
                location: self.describe(),
                op: "write",
                key: key.to_string(),
                message: format!("source gave {written} bytes, expected {len}"),
                transient: true,
            });
        }
        if let Some(expected) = source.known_crc32c() {
            if expected != crc {
                return Err(LocationError::ChecksumMismatch {
                    location: self.describe(),
                    key: key.to_string(),
                    expected: Checksum::Crc32c(expected).to_string(),
                    actual: Checksum::Crc32c(crc).to_string(),
                });
            }
        }
        let tmp_owned = tmp.to_path_buf();
        let meta = *meta;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            apply_meta(&tmp_owned, Some(&file), &meta, false)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(|e| self.io_err("sync", key, e))?;
        Ok(WriteOutcome {
            bytes: written,
            crc32c: Some(crc),
            stored: Some(Checksum::Crc32c(crc)),
            reported: None,
            etag: None,
            mtime_ns: meta.mtime_ns,
            // As `apply_meta` set it.
            mode: Some(0o100000 | meta.mode.map_or(DEFAULT_FILE_MODE, |m| m & 0o7777)),
        })
    }
}

impl LocalLocation {
    /// Makes a symbolic link (its target read whole from `source`) or a
    /// special file at `tmp`, with its metadata; the caller renames it into
    /// place. Making a device as non-root is `Unsupported` (reported and
    /// skipped, not failed).
    async fn write_special(
        &self,
        key: &str,
        tmp: &Path,
        kind: FileKind,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
    ) -> Result<WriteOutcome> {
        let len = source.len();
        let max = if kind == FileKind::Symlink {
            MAX_LINK_TARGET
        } else {
            0
        };
        if len > max {
            return Err(LocationError::Io {
                location: self.describe(),
                op: "write",
                key: key.to_string(),
                message: format!(
                    "a {} of {len} bytes cannot be made (at most {max})",
                    kind.name()
                ),
                transient: false,
            });
        }
        let body = source.read_range(0..len).await?;
        let crc = crc32c::crc32c(&body);
        let (tmp_owned, meta_owned) = (tmp.to_path_buf(), *meta);
        let made = tokio::task::spawn_blocking(move || {
            special::make(&tmp_owned, kind, &body, &meta_owned)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string()).into()));
        match made {
            Ok(()) => {}
            Err(special::MakeError::NotPermitted(message)) => {
                return Err(LocationError::Unsupported {
                    location: self.describe(),
                    key: key.to_string(),
                    message,
                })
            }
            Err(special::MakeError::Io(e)) => return Err(self.io_err("create", key, e)),
        }
        Ok(WriteOutcome {
            bytes: len,
            crc32c: Some(crc),
            stored: Some(Checksum::Crc32c(crc)),
            reported: None,
            etag: None,
            mtime_ns: meta.mtime_ns,
            // Links are always 0777 on Linux.
            mode: Some(match kind {
                FileKind::Symlink => kind.type_bits() | 0o777,
                _ => kind.type_bits() | meta.mode.map_or(0o644, |m| m & 0o7777),
            }),
        })
    }

    /// Reads one range of the source and writes it at its offset; returns
    /// (offset, CRC32C, length). Holds its bytes of the write budget meanwhile.
    async fn write_chunk(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        file: Arc<fs::File>,
        range: Range<u64>,
    ) -> Result<(u64, u32, u64)> {
        let kib = range
            .end
            .saturating_sub(range.start)
            .div_ceil(1024)
            .clamp(1, WRITE_BUDGET_KIB as u64) as u32;
        // Never closed, so acquiring cannot fail.
        let _permit = WRITE_BUDGET
            .acquire_many(kib)
            .await
            .expect("write budget is never closed");
        let data = source.read_range(range.clone()).await?;
        let start = range.start;
        tokio::task::spawn_blocking(move || -> io::Result<(u64, u32, u64)> {
            file.write_all_at(&data, start)?;
            Ok((start, crc32c::crc32c(&data), data.len() as u64))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(|e| self.io_err("write", key, e))
    }
}

/// Reads a local file and returns its CRC32C (verification of local
/// destinations). Ranges are read and summed on both cores, then combined in
/// order: a large file costs half the wall time of one sequential pass.
pub fn file_crc32c(path: &Path) -> io::Result<u32> {
    let f = fs::File::open(path)?;
    let len = f.metadata()?.len();
    let ranges = super::part_ranges(len, VERIFY_CHUNK);
    // One buffer per thread, reused: a fresh one per chunk would fault in
    // as much new memory as the file is large. Sized to the largest chunk
    // of its share: an 8 MiB buffer for a 4 KiB file, on every blocking
    // thread, kept hundreds of MiB resident in a run of small files.
    let crcs_of = |part: &[Range<u64>]| -> io::Result<Vec<(u32, u64)>> {
        let largest = part.iter().map(|r| r.end - r.start).max().unwrap_or(0);
        let mut buf = vec![0u8; largest as usize];
        part.iter()
            .map(|r| {
                let chunk = &mut buf[..(r.end - r.start) as usize];
                f.read_exact_at(chunk, r.start)?;
                Ok((crc32c::crc32c(chunk), chunk.len() as u64))
            })
            .collect()
    };
    let (first, second) = ranges.split_at(ranges.len() / 2);
    let (a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| crcs_of(second));
        let a = crcs_of(first);
        (
            a,
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("checksum thread panicked"))),
        )
    });
    Ok(a?.into_iter().chain(b?).fold(0u32, |acc, (c, l)| {
        crc32c::crc32c_combine(acc, c, l as usize)
    }))
}

impl LocalLocation {
    /// CRC32C of a stored file (used by verification).
    pub async fn crc32c_of(&self, key: &str) -> Result<u32> {
        let path = self.path_of(key)?;
        tokio::task::spawn_blocking(move || {
            let kind = special::kind_of(&fs::symlink_metadata(&path)?);
            match kind {
                FileKind::File => file_crc32c(&path),
                _ => special::content(&path, kind).map(|b| crc32c::crc32c(&b)),
            }
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(|e| self.io_err("read", key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect_keys(loc: &dyn Location) -> Result<Vec<String>> {
        loc.list().map_ok(|e| e.key).try_collect().await
    }
    use crate::location::meta::system_time_to_ns;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, rel.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn listing_is_in_s3_byte_order_with_directories_as_name_slash() {
        let d = tempfile::tempdir().unwrap();
        for f in ["a-b", "a/b", "a.b", "a0", "b c", "é", "a/a/x", "z"] {
            touch(d.path(), f);
        }
        fs::create_dir(d.path().join("empty")).unwrap();
        let loc = LocalLocation::new(d.path()).unwrap();
        let keys = collect_keys(&loc).await.unwrap();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(
            keys,
            vec!["a-b", "a.b", "a/a/x", "a/b", "a0", "b c", "empty/", "z", "é"]
        );
    }

    #[tokio::test]
    async fn write_is_atomic_and_keeps_metadata() {
        let d = tempfile::tempdir().unwrap();
        let loc = LocalLocation::new(d.path()).unwrap();
        let meta = PosixMeta {
            mtime_ns: Some(1_600_000_000_000_000_000),
            mode: Some(0o100600),
            uid: None,
            gid: None,
            rdev: None,
            ctime_ns: None,
        };
        let body = Bytes::from(vec![7u8; 20 * 1024 * 1024 + 3]);
        let out = loc
            .write(
                "x/y.bin",
                Arc::new(super::super::MemorySource(body.clone())),
                &meta,
                WriteMode::Replace,
            )
            .await
            .unwrap();
        assert_eq!(out.crc32c, Some(crc32c::crc32c(&body)));
        let m = fs::metadata(d.path().join("x/y.bin")).unwrap();
        assert_eq!(m.len(), body.len() as u64);
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!(
            system_time_to_ns(m.modified().unwrap()),
            1_600_000_000_000_000_000
        );
        assert_eq!(collect_keys(&loc).await.unwrap(), vec!["x/y.bin"]);
    }

    #[tokio::test]
    async fn a_source_with_a_wrong_checksum_leaves_nothing() {
        struct Lying;
        #[async_trait]
        impl ByteSource for Lying {
            fn len(&self) -> u64 {
                3
            }
            async fn read_range(&self, _r: Range<u64>) -> Result<Bytes> {
                Ok(Bytes::from_static(b"abc"))
            }
            fn known_crc32c(&self) -> Option<u32> {
                Some(1)
            }
        }
        let d = tempfile::tempdir().unwrap();
        let loc = LocalLocation::new(d.path()).unwrap();
        let err = loc
            .write(
                "f",
                Arc::new(Lying),
                &PosixMeta::default(),
                WriteMode::Replace,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, LocationError::ChecksumMismatch { .. }),
            "{err}"
        );
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn dead_writers_temp_files_are_found_and_removed() {
        let d = tempfile::tempdir().unwrap();
        // pid 0 is never a live writer.
        fs::write(d.path().join(".syncmount-999999999-00.tmp"), b"partial").unwrap();
        touch(d.path(), "keep");
        let loc = LocalLocation::new(d.path()).unwrap();
        assert_eq!(collect_keys(&loc).await.unwrap(), vec!["keep"]);
        assert_eq!(loc.clean_leftovers().await.unwrap(), 1);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn a_symlinked_directory_in_the_destination_is_never_written_through() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
        let loc = LocalLocation::new(d.path()).unwrap();
        let src = Arc::new(super::super::MemorySource(Bytes::from_static(b"x")));
        let err = loc
            .write("link/f", src, &PosixMeta::default(), WriteMode::Replace)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn create_new_refuses_to_replace() {
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "f");
        let loc = LocalLocation::new(d.path()).unwrap();
        let src = Arc::new(super::super::MemorySource(Bytes::from_static(b"new")));
        assert!(loc
            .write("f", src, &PosixMeta::default(), WriteMode::CreateNew)
            .await
            .is_err());
        assert_eq!(fs::read(d.path().join("f")).unwrap(), b"f");
    }
}
