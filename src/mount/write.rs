//! Files being written through the mount.
//!
//! A file opened for writing is staged in a local file (unlinked at once, so
//! nothing is left behind by a crash): writes land at their offsets, so
//! random writes, rewrites, truncation and appends all work. On flush (every
//! `close`) and fsync the staged bytes are uploaded through the location's
//! atomic, checksummed `write` — the same one the sync engine uses — and an
//! upload failure is returned to the caller of close/fsync as EIO. Until the
//! upload, only this mount sees the new content; a failed upload leaves the
//! previous object (or nothing) in the store.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::location::{ByteSource, Location, LocationError, PosixMeta, Result, WriteMode};

use super::permission::Caller;

/// Bytes read from the store per request when staging an existing object.
const STAGE_CHUNK: u64 = 8 * 1024 * 1024;

#[derive(Debug)]
struct State {
    key: String,
    size: u64,
    /// Content or metadata not yet uploaded.
    dirty: bool,
    /// The last upload failed and nothing changed since: its caller (a
    /// close or fsync) was told, and the last close need not try again.
    failed: bool,
    meta: PosixMeta,
    /// Unlinked while open: never uploaded.
    unlinked: bool,
    handles: u32,
    /// Made by this caller under a name the mount saw free: uploaded only
    /// while the name is still free (`WriteMode::CreateNew`), so an object
    /// another client made meanwhile is not replaced unchecked
    /// (`Core::commit`).
    created_by: Option<Caller>,
}

/// One staged file, shared by every handle open on it.
#[derive(Debug)]
pub struct Staged {
    file: Arc<File>,
    state: Mutex<State>,
    /// Writes hold it shared; an upload holds it alone, so what is uploaded
    /// is one consistent content.
    gate: tokio::sync::RwLock<()>,
}

impl Staged {
    /// A new empty staged file for `key` in `dir`.
    pub fn create(dir: &Path, key: &str, meta: PosixMeta) -> io::Result<Staged> {
        crate::shared::private::own_dir(dir)?;
        let name = format!(
            ".stage-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = dir.join(name);
        let file = crate::shared::private::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        std::fs::remove_file(&path)?;
        Ok(Staged {
            file: Arc::new(file),
            state: Mutex::new(State {
                key: key.to_string(),
                size: 0,
                dirty: true,
                failed: false,
                meta,
                unlinked: false,
                handles: 1,
                created_by: None,
            }),
            gate: tokio::sync::RwLock::new(()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Copies the current content of `key` (`size` bytes, pinned to `etag`)
    /// into the staged file, for an open without O_TRUNC. Clean afterwards.
    pub async fn fill_from(
        &self,
        loc: &Arc<dyn Location>,
        key: &str,
        size: u64,
        etag: Option<&str>,
    ) -> Result<()> {
        let mut off = 0;
        while off < size {
            let end = (off + STAGE_CHUNK).min(size);
            let bytes = loc.read_range(key, off..end, etag).await?;
            self.file
                .write_all_at(&bytes, off)
                .map_err(|e| stage_error(key, e))?;
            off = end;
        }
        let mut s = self.state();
        s.size = size;
        s.dirty = false;
        Ok(())
    }

    pub fn key(&self) -> String {
        self.state().key.clone()
    }

    pub fn size(&self) -> u64 {
        self.state().size
    }

    pub fn meta(&self) -> PosixMeta {
        self.state().meta
    }

    pub fn is_dirty(&self) -> bool {
        self.state().dirty
    }

    /// Whether the last upload failed and nothing changed since.
    pub fn upload_failed(&self) -> bool {
        self.state().failed
    }

    /// One more handle on this staged file; false when its last handle
    /// already closed (its release is under way and will drop it from the
    /// mount's table): the opener must stage the key anew, or a write through
    /// it would escape an unlink that no longer finds it in the table.
    pub fn add_handle(&self) -> bool {
        let mut s = self.state();
        if s.handles == 0 {
            return false;
        }
        s.handles += 1;
        true
    }

    /// One handle closed; true when it was the last.
    pub fn drop_handle(&self) -> bool {
        let mut s = self.state();
        s.handles = s.handles.saturating_sub(1);
        s.handles == 0
    }

    /// Renamed: the kernel checked the rename, which replaces its target.
    pub fn set_key(&self, key: &str) {
        let mut s = self.state();
        s.key = key.to_string();
        s.created_by = None;
    }

    /// A new name made by `caller` (see `State::created_by`); `None` once
    /// replacing what is there is allowed.
    pub fn set_created_by(&self, caller: Option<Caller>) {
        self.state().created_by = caller;
    }

    pub fn created_by(&self) -> Option<Caller> {
        self.state().created_by
    }

    pub fn mark_unlinked(&self) {
        self.state().unlinked = true;
    }

    /// New metadata, uploaded with the content.
    pub fn set_meta(&self, meta: PosixMeta) {
        let mut s = self.state();
        s.meta = meta;
        s.dirty = true;
        s.failed = false;
    }

    /// Metadata already stored with the uploaded content (changed in the
    /// store directly): nothing more to upload for it.
    pub fn set_saved_meta(&self, meta: PosixMeta) {
        self.state().meta = meta;
    }

    /// Writes at `offset` (from a FUSE thread, outside the runtime).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let _shared = self.gate.blocking_read();
        self.file.write_all_at(data, offset)?;
        let mut s = self.state();
        s.size = s.size.max(offset + data.len() as u64);
        s.meta.touch_data();
        s.dirty = true;
        s.failed = false;
        Ok(())
    }

    pub fn read_at(&self, offset: u64, len: u32) -> io::Result<Vec<u8>> {
        let size = self.size();
        let end = offset.saturating_add(u64::from(len)).min(size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    pub fn truncate(&self, size: u64) -> io::Result<()> {
        let _shared = self.gate.blocking_read();
        self.file.set_len(size)?;
        let mut s = self.state();
        s.size = size;
        s.meta.touch_data();
        s.dirty = true;
        s.failed = false;
        Ok(())
    }

    /// Uploads the staged content when it changed since the last upload.
    pub async fn upload(&self, loc: &Arc<dyn Location>) -> Result<()> {
        let _alone = self.gate.write().await;
        let (key, size, meta, mode) = {
            let s = self.state();
            if !s.dirty || s.unlinked {
                return Ok(());
            }
            let mode = match s.created_by {
                Some(_) => WriteMode::CreateNew,
                None => WriteMode::Replace,
            };
            (s.key.clone(), s.size, s.meta, mode)
        };
        let source = Arc::new(StagedSource {
            file: self.file.clone(),
            len: size,
        });
        if let Err(e) = loc.write(&key, source, &meta, mode).await {
            self.state().failed = true;
            return Err(e);
        }
        let mut s = self.state();
        s.failed = false;
        // Stored: later uploads replace what this one wrote.
        s.created_by = None;
        // A rename while uploading moved the key: upload again under the new one.
        if s.key == key {
            s.dirty = false;
        }
        Ok(())
    }
}

fn stage_error(key: &str, e: io::Error) -> LocationError {
    LocationError::Io {
        location: "staging".into(),
        op: "stage",
        key: key.to_string(),
        message: e.to_string(),
        transient: false,
    }
}

/// A staged file as a source for `Location::write`.
struct StagedSource {
    file: Arc<File>,
    len: u64,
}

#[async_trait]
impl ByteSource for StagedSource {
    fn len(&self) -> u64 {
        self.len
    }

    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        let file = self.file.clone();
        let res = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start)?;
            Ok(buf)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|r| r);
        res.map(Bytes::from).map_err(|e| stage_error("", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::local::LocalLocation;

    #[tokio::test(flavor = "multi_thread")]
    async fn staged_writes_upload_once_and_a_clean_file_is_not_uploaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let loc: Arc<dyn Location> = Arc::new(LocalLocation::new(&store).unwrap());
        let staged = Arc::new(
            Staged::create(&dir.path().join("stage"), "a/f", PosixMeta::default()).unwrap(),
        );
        let s = staged.clone();
        tokio::task::spawn_blocking(move || {
            s.write_at(5, b"world").unwrap();
            s.write_at(0, b"hello").unwrap();
        })
        .await
        .unwrap();
        staged.upload(&loc).await.unwrap();
        assert_eq!(std::fs::read(store.join("a/f")).unwrap(), b"helloworld");
        assert!(!staged.is_dirty());
        std::fs::remove_file(store.join("a/f")).unwrap();
        staged.upload(&loc).await.unwrap();
        assert!(
            !store.join("a/f").exists(),
            "a clean file is not uploaded again"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("stage")).unwrap().count(),
            0,
            "the staged file is never visible by name"
        );
    }
}
