//! Symbolic links and special files in the mount: `symlink` and `mknod`
//! store them through the same `Location::write` as files (a link is an
//! object whose body is its target, a FIFO, socket or device an empty
//! object, the type in the stored mode: `location/meta.rs`), `readlink`
//! reads a link's body. The kernel handles FIFOs, sockets and devices once
//! it knows their type: their I/O never reaches the mount.

use std::sync::Arc;

use bytes::Bytes;

use crate::location::meta::MAX_LINK_TARGET;
use crate::location::privilege::{unprivileged, Privileges, Unprivileged};
use crate::location::{FileKind, LocationError, MemorySource, PosixMeta, WriteMode};

use super::cache::Attr;
use super::core::Core;
use super::error::{FsError, FsResult};
use super::permission::Caller;

impl Core {
    /// Makes `key` a symbolic link to `target`.
    pub async fn symlink(&self, key: &str, target: &[u8], meta: PosixMeta) -> FsResult<Attr> {
        if target.is_empty() || target.len() as u64 > MAX_LINK_TARGET {
            return Err(FsError::NameTooLong);
        }
        self.make_node(key, meta, Bytes::copy_from_slice(target))
            .await
    }

    /// Makes `key` a FIFO, socket or device (or an empty file), as `meta`'s
    /// mode says.
    pub async fn mknod(&self, key: &str, meta: PosixMeta) -> FsResult<Attr> {
        if matches!(meta.kind(), FileKind::Dir | FileKind::Symlink) {
            return Err(FsError::Invalid(format!(
                "mknod of a {} is not possible",
                meta.kind().name()
            )));
        }
        self.make_node(key, meta, Bytes::new()).await
    }

    async fn make_node(&self, key: &str, meta: PosixMeta, body: Bytes) -> FsResult<Attr> {
        self.check_writable()?;
        if self.probe(key).await?.is_some() {
            return Err(FsError::Exists);
        }
        let size = body.len() as u64;
        self.loc
            .write(key, Arc::new(MemorySource(body)), &meta, WriteMode::Replace)
            .await?;
        self.created(key);
        Ok(self.attr_of(false, size, None, &meta, None))
    }

    /// What of `meta` `caller` may write under `key` when the mount is of a
    /// local directory: root anything it asks; anyone else no device and no
    /// setuid/setgid bit (`location/privilege.rs`, the rule `sync` follows
    /// for a bucket's metadata), a refused device being EPERM. A bucket
    /// behind the mount keeps what it is given: mounts show no setuid bit
    /// and no device to the host (`nosuid`, `nodev`).
    pub fn allowed(&self, key: &str, caller: Caller, meta: PosixMeta) -> FsResult<PosixMeta> {
        if !self.loc.keys_are_paths() || caller.uid == 0 {
            return Ok(meta);
        }
        match unprivileged(&meta, Privileges::default()) {
            Unprivileged::Write { meta, dropped } => {
                if let Some(d) = dropped {
                    tracing::warn!(key = %key, uid = caller.uid, "{d}");
                }
                Ok(meta)
            }
            Unprivileged::Refuse(message) => Err(FsError::Store(LocationError::Unsupported {
                location: self.loc.describe(),
                key: key.to_string(),
                message,
            })),
        }
    }

    /// The target of the link `key`; EINVAL when it is no link.
    pub async fn readlink(&self, key: &str) -> FsResult<Vec<u8>> {
        let a = self.probe(key).await?.ok_or(FsError::NotFound)?;
        if a.kind != FileKind::Symlink {
            return Err(FsError::Invalid(format!("`{key}` is not a symbolic link")));
        }
        if a.size > MAX_LINK_TARGET {
            return Err(FsError::Invalid(format!(
                "`{key}` holds {} bytes, too long for a link's target",
                a.size
            )));
        }
        let body = self
            .loc
            .read_range(key, 0..a.size, a.etag.as_deref())
            .await?;
        Ok(body.to_vec())
    }
}
