//! Symbolic links and special files (FIFOs, sockets, devices) in a local
//! directory, as [`LocalLocation`](super::local::LocalLocation) keeps them.
//!
//! Nothing here ever follows a link: links are found with `lstat`, read with
//! `readlink`, and their times and owner set with the `*at(...,
//! AT_SYMLINK_NOFOLLOW)` calls. A link's target is data (the key's
//! content), never a path we open, so a link pointing outside the root is
//! kept as it is and nothing is written through it. Special files are
//! never opened either (opening a FIFO blocks): their content is empty.
//!
//! New links and nodes are made under a temp name in the target directory
//! and renamed over the key, so a reader sees the old entry or the new one.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, FileType, Mode};
use rustix::io::Errno;

use super::dirfd::{self, Found};
use super::meta::{FileKind, PosixMeta};

/// The size a key of this local kind lists with: a link's target length,
/// nothing for special files.
pub fn listed_size(m: &Found) -> u64 {
    match m.kind() {
        FileKind::Dir => 0,
        k if k.is_special() => 0,
        // lstat's size of a link is its target's length.
        _ => m.size,
    }
}

/// The content of a link or special file `name` in `dir` (never opened).
pub fn content(dir: BorrowedFd<'_>, name: &OsStr, kind: FileKind) -> io::Result<Vec<u8>> {
    match kind {
        FileKind::Symlink => dirfd::read_link_at(dir, name),
        _ => Ok(Vec::new()),
    }
}

/// Why a special file cannot be made here, in words for the report.
#[derive(Debug)]
pub enum MakeError {
    /// Not allowed for this user (devices need CAP_MKNOD, i.e. root).
    NotPermitted(String),
    Io(io::Error),
}

impl From<io::Error> for MakeError {
    fn from(e: io::Error) -> Self {
        MakeError::Io(e)
    }
}

/// Makes `tmp` in `dir` as a link to `target` or a node of `meta`'s kind,
/// with the metadata applied (nothing followed).
pub fn make(
    dir: BorrowedFd<'_>,
    tmp: &OsStr,
    kind: FileKind,
    target: &[u8],
    meta: &PosixMeta,
) -> Result<(), MakeError> {
    match kind {
        FileKind::Symlink => {
            if target.is_empty() || target.contains(&0) {
                return Err(MakeError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a symbolic link's target must be non-empty and contain no NUL byte",
                )));
            }
            rfs::symlinkat(OsStr::from_bytes(target), dir, tmp).map_err(io::Error::from)?;
        }
        _ => {
            let perm = meta.mode.map_or(0o644, |m| m & 0o7777);
            let file_type = FileType::from_raw_mode(kind.type_bits());
            let rdev = meta.rdev.unwrap_or(0);
            // Made private; the mode is set once the node is pinned.
            match rfs::mknodat(dir, tmp, file_type, Mode::from_raw_mode(perm & 0o700), rdev) {
                Ok(()) => {}
                Err(Errno::PERM) => {
                    return Err(MakeError::NotPermitted(format!(
                        "a {} can be created only by root (mknod needs CAP_MKNOD); skipped",
                        kind.name()
                    )))
                }
                Err(e) => return Err(MakeError::Io(e.into())),
            }
        }
    }
    let applied = PosixMeta {
        mode: Some(meta.mode.unwrap_or(kind.type_bits() | 0o644)),
        ..*meta
    };
    apply_meta(dir, tmp, kind, &applied)?;
    Ok(())
}

/// Applies mode, owner (as root) and mtime to a link or node without
/// following it. A link's own mode cannot be changed on Linux (always 0777).
pub fn apply_meta(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: FileKind,
    meta: &PosixMeta,
) -> io::Result<()> {
    let perm = meta
        .mode
        .filter(|_| kind != FileKind::Symlink)
        .map(|m| m & 0o7777);
    dirfd::apply_meta_at(dir, name, perm, meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::meta::{S_IFIFO, S_IFLNK};
    use std::os::fd::{AsFd, OwnedFd};

    fn open_dir(d: &tempfile::TempDir) -> OwnedFd {
        rfs::open(
            d.path(),
            rfs::OFlags::PATH | rfs::OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn a_link_is_made_with_its_time_and_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(&d);
        let meta = PosixMeta {
            mtime_ns: Some(1_600_000_000_123_000_000),
            mode: Some(S_IFLNK | 0o777),
            ..Default::default()
        };
        let name = OsStr::new("l");
        make(
            dir.as_fd(),
            name,
            FileKind::Symlink,
            b"../../etc/passwd",
            &meta,
        )
        .unwrap();
        let m = dirfd::stat_at(dir.as_fd(), name).unwrap();
        assert_eq!(m.kind(), FileKind::Symlink);
        assert_eq!(m.mtime_ns, 1_600_000_000_123_000_000);
        assert_eq!(
            content(dir.as_fd(), name, FileKind::Symlink).unwrap(),
            b"../../etc/passwd".to_vec()
        );
        assert_eq!(listed_size(&m), 16);
    }

    #[test]
    fn a_fifo_is_made_with_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(&d);
        let meta = PosixMeta {
            mode: Some(S_IFIFO | 0o640),
            ..Default::default()
        };
        let name = OsStr::new("f");
        make(dir.as_fd(), name, FileKind::Fifo, b"", &meta).unwrap();
        let m = dirfd::stat_at(dir.as_fd(), name).unwrap();
        assert_eq!(m.kind(), FileKind::Fifo);
        assert_eq!(m.mode & 0o7777, 0o640);
        assert_eq!(listed_size(&m), 0);
    }

    #[test]
    fn an_empty_link_target_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = open_dir(&d);
        let err = make(
            dir.as_fd(),
            OsStr::new("l"),
            FileKind::Symlink,
            b"",
            &PosixMeta::default(),
        );
        assert!(matches!(err, Err(MakeError::Io(_))));
    }
}
