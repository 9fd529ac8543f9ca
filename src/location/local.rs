//! A local directory as a [`Location`].
//!
//! Listing is the byte-ordered walk of `walk.rs`. Writes go to a temp file in
//! the target directory, are fsynced and renamed into place: a reader never
//! sees a partial file (`local_write.rs`). Temp files carry the writer's
//! pid, so a later run can tell a dead writer's leftovers from a live
//! writer's work in progress. Symbolic links and special files are keys too
//! (`special.rs`): listed with `lstat`, a link's content is its target.
//!
//! Every access below the root goes through the root's descriptor
//! (`dirfd.rs`): the root is named once, each key's directory is resolved
//! beneath it refusing any symbolic link, and the key's own name is then
//! created, opened, renamed or removed relative to that directory's
//! descriptor without following a link. Another user who can write below
//! the root cannot make us read, write, chown or delete anything outside it.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use super::dirfd::{self, Found, Resolver, Root};
use super::key::{self, UnsafeReason};
use super::local_files::meta_of;
use super::meta::FileKind;
use super::special;
use super::walk::Leftover;
use super::{
    ByteSource, Checksum, Entry, Location, LocationError, ObjectInfo, PosixMeta, Result, WriteMode,
    WriteOutcome,
};

/// Entries buffered between the walking thread and the consumer.
const LIST_CHANNEL: usize = 1024;

/// Modes used when the source has none (DataSync's defaults).
pub(super) const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

#[derive(Debug)]
pub struct LocalLocation {
    root_path: PathBuf,
    /// The root, opened once (when it exists: a missing destination is
    /// created by the first write).
    root: OnceLock<Arc<Root>>,
    resolver: Resolver,
    /// Temp files of dead writers seen by the last listing.
    leftovers: Arc<Mutex<Vec<Leftover>>>,
}

/// A key's place: its directory below the root and its own name.
pub(super) struct KeyPath {
    pub(super) parent: PathBuf,
    pub(super) name: OsString,
}

impl LocalLocation {
    /// A directory location; the directory is created when missing.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Self::with_resolver(root, Resolver::Openat2)
    }

    /// As [`new`](Self::new), resolving with `resolver` (tests pick the
    /// component walk that kernels without `openat2` get).
    pub fn with_resolver(root: impl Into<PathBuf>, resolver: Resolver) -> Result<Self> {
        let loc = LocalLocation {
            root_path: root.into(),
            root: OnceLock::new(),
            resolver,
            leftovers: Arc::default(),
        };
        match loc.opened_root() {
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(LocationError::Config {
                location: loc.describe(),
                message: "exists but is not a directory".into(),
            }),
            // Missing or unreadable now: tried again, and reported, at use.
            _ => Ok(loc),
        }
    }

    /// The open root; `None` while the directory does not exist.
    pub(super) fn opened_root(&self) -> io::Result<Option<Arc<Root>>> {
        if let Some(r) = self.root.get() {
            return Ok(Some(r.clone()));
        }
        match Root::open(&self.root_path, self.resolver) {
            Ok(r) => Ok(Some(self.root.get_or_init(|| Arc::new(r)).clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The open root, for reading: a missing root is NotFound.
    fn existing_root(&self) -> io::Result<Arc<Root>> {
        self.opened_root()?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }

    /// The open root, created first when missing: the destination root
    /// itself is the user's choice, made as given (by name, once).
    fn root_for_writing(&self, key: &str) -> Result<Arc<Root>> {
        let made = match self.opened_root() {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => fs::create_dir_all(&self.root_path).and_then(|()| self.existing_root()),
            Err(e) => Err(e),
        };
        made.map_err(|e| self.io_err("create destination directory for", key, e))
    }

    /// The open root and the place of `key`, to read it.
    pub(super) fn read_target(&self, key: &str) -> Result<(Arc<Root>, KeyPath)> {
        let at = self.key_path(key)?;
        let root = self
            .existing_root()
            .map_err(|e| self.io_err("read", key, e))?;
        Ok((root, at))
    }

    pub(super) fn key_path(&self, key: &str) -> Result<KeyPath> {
        let rel = key::key_to_relpath(key).map_err(|reason| self.unsafe_key(key, reason))?;
        let name = rel
            .file_name()
            .ok_or_else(|| self.unsafe_key(key, UnsafeReason::Empty))?
            .to_os_string();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        Ok(KeyPath { parent, name })
    }

    /// The directory of `key`, created as needed, for a write: a file in
    /// the way is a clash; a symbolic link in the way is refused, since
    /// following it could write outside the destination root.
    fn parent_for_writing(&self, key: &str, at: &KeyPath) -> Result<(Arc<Root>, OwnedFd)> {
        let root = self.root_for_writing(key)?;
        match root.make_dirs(&at.parent) {
            Ok(fd) => Ok((root, fd)),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(LocationError::FileDirClash {
                location: self.describe(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.io_err("create directory for", key, e)),
        }
    }

    fn unsafe_key(&self, key: &str, reason: UnsafeReason) -> LocationError {
        LocationError::UnsafeKey {
            location: self.describe(),
            key: key.to_string(),
            reason,
        }
    }

    pub(super) fn io_err(&self, op: &'static str, key: &str, e: io::Error) -> LocationError {
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

    /// Runs blocking file system work on the blocking pool.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &str,
        work: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
            .map_err(|e| self.io_err(op, key, e))
    }
}

/// A missing directory on the way (or a file where one was expected) means
/// the key is absent.
pub(super) fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Applies mode (the default of its kind when `meta` has none), owner (as
/// root) and mtime to file or directory `name` in `dir`, never through a link.
pub(super) fn apply_meta(
    dir: &OwnedFd,
    name: &std::ffi::OsStr,
    meta: &PosixMeta,
    is_dir: bool,
) -> io::Result<()> {
    dirfd::apply_meta_at(dir.as_fd(), name, Some(perm_of(meta, is_dir)), meta)
}

/// The permission bits `meta` asks for, or the default of its kind.
pub(super) fn perm_of(meta: &PosixMeta, is_dir: bool) -> u32 {
    let default = if is_dir {
        DEFAULT_DIR_MODE
    } else {
        DEFAULT_FILE_MODE
    };
    meta.mode.map(|m| m & 0o7777).unwrap_or(default)
}

fn info_of(m: &Found) -> ObjectInfo {
    ObjectInfo {
        size: special::listed_size(m),
        modified: m.modified(),
        etag: None,
        meta: meta_of(m),
        ..Default::default()
    }
}

#[async_trait]
impl Location for LocalLocation {
    fn describe(&self) -> String {
        self.root_path.display().to_string()
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
        let abs = fs::canonicalize(&self.root_path)
            .or_else(|_| std::path::absolute(&self.root_path))
            .unwrap_or_else(|_| self.root_path.clone());
        super::Place::Local(abs)
    }

    fn list(&self) -> BoxStream<'_, Result<Entry>> {
        let (tx, rx) = tokio::sync::mpsc::channel(LIST_CHANNEL);
        match self.opened_root() {
            Ok(Some(root)) => {
                let walker = super::walk::Walker {
                    root,
                    location: self.describe(),
                    tx,
                    leftovers: self.leftovers.clone(),
                };
                tokio::task::spawn_blocking(move || walker.run());
            }
            // A missing directory lists nothing.
            Ok(None) => {}
            Err(e) => {
                let _ = tx.try_send(Err(self.io_err("list", "", e)));
            }
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
            .boxed()
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let at = self.key_path(key)?;
        let root = match self.opened_root() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.io_err("stat", key, e)),
        };
        // A link where a directory is expected: the key is not there (the
        // listing never goes through it either); writing it is refused.
        let found = self
            .blocking("stat", key, move || {
                let dir = match root.dir(&at.parent) {
                    Err(e) if absent(&e) || dirfd::is_symlink_in_path(&e) => return Ok(None),
                    r => r?,
                };
                match dirfd::stat_at(dir.as_fd(), &at.name) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    r => r.map(Some),
                }
            })
            .await?;
        let Some(m) = found else {
            return Ok(None);
        };
        if m.is_dir() != key.ends_with('/') {
            return Ok(None);
        }
        Ok(Some(info_of(&m)))
    }

    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        _if_match: Option<&str>,
    ) -> Result<Bytes> {
        let (root, at) = self.read_target(key)?;
        let len = usize::try_from(range.end.saturating_sub(range.start))
            .map_err(|e| self.io_err("read", key, io::Error::other(e)))?;
        self.blocking("read", key, move || {
            let dir = root.dir(&at.parent)?;
            let kind = dirfd::stat_at(dir.as_fd(), &at.name)?.kind();
            if kind != FileKind::File {
                // A link's target or a special file's nothing: never opened.
                let body = special::content(dir.as_fd(), &at.name, kind)?;
                let end = usize::try_from(range.end).map_or(body.len(), |e| e.min(body.len()));
                let start = usize::try_from(range.start).map_or(end, |s| s.min(end));
                if end - start != len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the link changed while it was read",
                    ));
                }
                return Ok(Bytes::copy_from_slice(&body[start..end]));
            }
            // A link or special file put in its place since is refused.
            let f = dirfd::open_regular(dir.as_fd(), &at.name)?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, range.start)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn write(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let at = self.key_path(key)?;
        let (_root, dir) = self.parent_for_writing(key, &at)?;
        if dirfd::stat_at(dir.as_fd(), &at.name).is_ok_and(|m| m.is_dir()) {
            return Err(LocationError::FileDirClash {
                location: self.describe(),
                key: key.to_string(),
            });
        }
        let dir = Arc::new(dir);
        let tmp = super::local_files::temp_name();
        let result = match meta.kind() {
            FileKind::File | FileKind::Dir => {
                self.write_temp(key, dir.clone(), &tmp, source, meta).await
            }
            kind => {
                self.write_special(key, dir.clone(), &tmp, kind, source, meta)
                    .await
            }
        };
        let result = match result {
            Ok(out) => {
                let (d, t, n) = (dir.clone(), tmp.clone(), at.name.clone());
                let no_replace = mode == WriteMode::CreateNew;
                self.blocking("rename into", key, move || {
                    dirfd::rename_in(d.as_fd(), &t, d.as_fd(), &n, no_replace)
                })
                .await
                .map(|()| out)
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = dirfd::unlink_in(dir.as_fd(), &tmp, false);
        }
        result
    }

    async fn list_dir(&self, dir: &str, token: Option<String>) -> Result<super::DirPage> {
        let rel = if dir.is_empty() {
            PathBuf::new()
        } else {
            key::key_to_relpath(dir).map_err(|reason| self.unsafe_key(dir, reason))?
        };
        let root = match self.opened_root() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(super::DirPage::default()),
            Err(e) => return Err(self.io_err("list directory", dir, e)),
        };
        let dir_key = dir.to_string();
        let page = self
            .blocking("list directory", dir, move || {
                super::walk::list_dir_page(root.dir(&rel)?, &dir_key, token)
            })
            .await;
        match page {
            Err(LocationError::NotFound { .. }) => Ok(super::DirPage::default()),
            r => r,
        }
    }

    async fn set_meta(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        let (root, at) = self.read_target(key)?;
        let is_dir = key.ends_with('/');
        let meta = *meta;
        self.blocking("set metadata of", key, move || {
            let dir = root.dir(&at.parent)?;
            let current = dirfd::stat_at(dir.as_fd(), &at.name)?;
            let merged = PosixMeta {
                mtime_ns: meta.mtime_ns,
                mode: meta.mode.or(Some(current.mode)),
                uid: meta.uid,
                gid: meta.gid,
                rdev: None,
                ctime_ns: None,
            };
            match current.kind() {
                FileKind::File | FileKind::Dir => apply_meta(&dir, &at.name, &merged, is_dir),
                kind => special::apply_meta(dir.as_fd(), &at.name, kind, &merged),
            }
        })
        .await
    }

    async fn rename_native(&self, from: &str, to: &str) -> Result<bool> {
        let (f, t) = (self.key_path(from)?, self.key_path(to)?);
        let (root, to_dir) = self.parent_for_writing(to, &t)?;
        self.blocking("rename", from, move || {
            let from_dir = root.dir(&f.parent)?;
            dirfd::rename_in(from_dir.as_fd(), &f.name, to_dir.as_fd(), &t.name, false)
        })
        .await?;
        Ok(true)
    }

    async fn delete_only(&self, key: &str) -> Result<()> {
        self.remove(key, false).await
    }

    async fn make_dir(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        let at = self.key_path(key)?;
        let (_root, dir) = self.parent_for_writing(key, &at)?;
        // Private until its mode is set: nobody slips a file in meanwhile.
        let initial = perm_of(meta, true) & 0o700;
        match rustix::fs::mkdirat(&dir, &at.name, rustix::fs::Mode::from_raw_mode(initial)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                // lstat: a symlink to a directory is not ours to chmod.
                if !dirfd::stat_at(dir.as_fd(), &at.name).is_ok_and(|m| m.is_dir()) {
                    return Err(LocationError::FileDirClash {
                        location: self.describe(),
                        key: key.to_string(),
                    });
                }
            }
            Err(e) => return Err(self.io_err("create directory", key, e.into())),
        }
        apply_meta(&dir, &at.name, meta, true).map_err(|e| self.io_err("set metadata of", key, e))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.remove(key, true).await
    }

    async fn stored_checksum(&self, key: &str) -> Result<Option<Checksum>> {
        self.crc32c_of(key).await.map(|c| Some(Checksum::Crc32c(c)))
    }

    async fn clean_leftovers(&self) -> Result<u64> {
        let found: Vec<Leftover> = std::mem::take(&mut *crate::lock(&self.leftovers));
        let Ok(Some(root)) = self.opened_root() else {
            return Ok(0);
        };
        self.blocking("remove leftovers in", "", move || {
            let removed = found.iter().filter(|(rel, name)| {
                root.dir(rel)
                    .and_then(|d| dirfd::unlink_in(d.as_fd(), name, false))
                    .is_ok()
            });
            Ok(removed.count() as u64)
        })
        .await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
