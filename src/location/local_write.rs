//! Writing, deleting and checksumming the files of a [`LocalLocation`]: a key's
//! content goes to a temp file created in the key's directory (relative to
//! that directory's descriptor, `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600),
//! chunks of a large source fetched concurrently and written at their
//! offsets under a process-wide byte budget, then fsynced, given its mode,
//! owner and mtime on the open descriptor; the caller renames it into place.
//! Links and special files are made under the temp name the same way.
//! Deletes unlink relative to the key's directory descriptor.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::stream::{StreamExt, TryStreamExt};

use super::dirfd;
use super::dirfd::Root;
use super::local::{absent, perm_of, LocalLocation, DEFAULT_FILE_MODE};
use super::meta::{FileKind, MAX_LINK_TARGET};
use super::special;
use super::{ByteSource, Checksum, Location, LocationError, PosixMeta, Result, WriteOutcome};

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

impl LocalLocation {
    /// Writes `source` to temp file `tmp` in `dir`, with its metadata.
    pub(super) async fn write_temp(
        &self,
        key: &str,
        dir: Arc<OwnedFd>,
        tmp: &OsStr,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
    ) -> Result<WriteOutcome> {
        let file = dirfd::create_temp(dir.as_fd(), tmp)
            .map_err(|e| self.io_err("create temp file for", key, e))?;
        let file = Arc::new(file);
        let len = source.len();
        // Chunks arrive in any order and are written at their offsets; their
        // CRCs are combined in order at the end. The one descriptor serves
        // every chunk: the path is resolved once per file.
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
        let meta = *meta;
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            file.sync_all()?;
            dirfd::apply_meta_fd(file.as_fd(), perm_of(&meta, false), &meta)
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
            // As `apply_meta_fd` set it.
            mode: Some(0o100000 | meta.mode.map_or(DEFAULT_FILE_MODE, |m| m & 0o7777)),
        })
    }

    /// Makes a symbolic link (its target read whole from `source`) or a
    /// special file as `tmp` in `dir`, with its metadata; the caller renames
    /// it into place. Making a device as non-root is `Unsupported`
    /// (reported and skipped, not failed).
    pub(super) async fn write_special(
        &self,
        key: &str,
        dir: Arc<OwnedFd>,
        tmp: &OsStr,
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
        let (tmp_owned, meta_owned) = (tmp.to_os_string(), *meta);
        let made = tokio::task::spawn_blocking(move || {
            special::make(dir.as_fd(), &tmp_owned, kind, &body, &meta_owned)
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
pub fn file_crc32c(f: &fs::File) -> io::Result<u32> {
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
    /// CRC32C of a stored file (used by verification), read through one
    /// descriptor opened without following a link.
    pub async fn crc32c_of(&self, key: &str) -> Result<u32> {
        let (root, at) = self.read_target(key)?;
        self.blocking("read", key, move || {
            let dir = root.dir(&at.parent)?;
            match dirfd::stat_at(dir.as_fd(), &at.name)?.kind() {
                FileKind::File => file_crc32c(&dirfd::open_regular(dir.as_fd(), &at.name)?),
                kind => special::content(dir.as_fd(), &at.name, kind).map(|b| crc32c::crc32c(&b)),
            }
        })
        .await
    }
}

impl LocalLocation {
    /// Deletes `key` (a directory key: its directory, when empty); with
    /// `prune`, the directories it leaves empty too, as a bucket has no
    /// empty directories once their last key is gone.
    pub(super) async fn remove(&self, key: &str, prune: bool) -> Result<()> {
        let at = self.key_path(key)?;
        let is_dir = key.ends_with('/');
        let root = match self.opened_root() {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => return Err(self.io_err("delete", key, e)),
        };
        self.blocking("delete", key, move || {
            let dir = match root.dir(&at.parent) {
                Err(e) if absent(&e) => return Ok(()),
                r => r?,
            };
            match dirfd::unlink_in(dir.as_fd(), &at.name, is_dir) {
                // A marker for a directory that still has content: the
                // directory stays, as it would in a bucket.
                Err(e) if prune && is_dir && e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                r => r?,
            }
            if prune {
                prune_empty(&root, &at.parent);
            }
            Ok(())
        })
        .await
    }
}

/// Removes the directories of `rel` that are left empty, deepest first,
/// each relative to its parent's descriptor; stops at the first that is not.
fn prune_empty(root: &Root, rel: &Path) {
    let mut dir = rel.to_path_buf();
    while let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
        let removed = root
            .dir(parent)
            .and_then(|fd| dirfd::unlink_in(fd.as_fd(), name, true));
        if removed.is_err() {
            break;
        }
        dir = parent.to_path_buf();
    }
}
