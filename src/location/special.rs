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

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::meta::{FileKind, PosixMeta};

/// What a key holds locally: its kind from `lstat`'s mode.
pub fn kind_of(m: &fs::Metadata) -> FileKind {
    FileKind::of_mode(m.mode())
}

/// The size a key of this local kind lists with: a link's target length,
/// nothing for special files.
pub fn listed_size(m: &fs::Metadata) -> u64 {
    match kind_of(m) {
        FileKind::Dir => 0,
        k if k.is_special() => 0,
        // lstat's size of a link is its target's length.
        _ => m.len(),
    }
}

/// The content of a link or special file (never opened).
pub fn content(path: &Path, kind: FileKind) -> io::Result<Vec<u8>> {
    match kind {
        FileKind::Symlink => Ok(fs::read_link(path)?.as_os_str().as_bytes().to_vec()),
        _ => Ok(Vec::new()),
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
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

/// Makes `tmp` as a link to `target` or a node of `meta`'s kind, with the
/// metadata applied (nothing followed).
pub fn make(tmp: &Path, kind: FileKind, target: &[u8], meta: &PosixMeta) -> Result<(), MakeError> {
    let c = cpath(tmp)?;
    match kind {
        FileKind::Symlink => {
            if target.is_empty() || target.contains(&0) {
                return Err(MakeError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a symbolic link's target must be non-empty and contain no NUL byte",
                )));
            }
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), tmp)?;
        }
        _ => {
            let mode = kind.type_bits() | meta.mode.map_or(0o644, |m| m & 0o7777);
            let rdev = meta.rdev.unwrap_or(0) as libc::dev_t;
            // SAFETY: `c` is a valid NUL-terminated path.
            let rc = unsafe { libc::mknod(c.as_ptr(), mode, rdev) };
            if let Err(e) = check(rc) {
                if e.raw_os_error() == Some(libc::EPERM) {
                    return Err(MakeError::NotPermitted(format!(
                        "a {} can be created only by root (mknod needs CAP_MKNOD); skipped",
                        kind.name()
                    )));
                }
                return Err(e.into());
            }
        }
    }
    apply_meta(tmp, kind, meta)?;
    Ok(())
}

/// Applies mode, owner (as root) and mtime to a link or node without
/// following it. A link's own mode cannot be changed on Linux (always 0777).
pub fn apply_meta(path: &Path, kind: FileKind, meta: &PosixMeta) -> io::Result<()> {
    let c = cpath(path)?;
    if kind != FileKind::Symlink {
        if let Some(mode) = meta.mode {
            // fchmodat does not follow a non-link; the node is not opened.
            // SAFETY: `c` is a valid NUL-terminated path.
            check(unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), mode & 0o7777, 0) })?;
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && (meta.uid.is_some() || meta.gid.is_some()) {
        let (u, g) = (meta.uid.unwrap_or(u32::MAX), meta.gid.unwrap_or(u32::MAX));
        // SAFETY: `c` is a valid NUL-terminated path; -1 leaves an id as is.
        let _ = unsafe { libc::lchown(c.as_ptr(), u, g) };
    }
    if let Some(ns) = meta.mtime_ns {
        let mtime = libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
        };
        let atime = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        };
        let times = [atime, mtime];
        // SAFETY: `c` is a valid path and `times` holds two timespecs.
        check(unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::meta::{S_IFIFO, S_IFLNK};

    #[test]
    fn a_link_is_made_with_its_time_and_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        let meta = PosixMeta {
            mtime_ns: Some(1_600_000_000_123_000_000),
            mode: Some(S_IFLNK | 0o777),
            ..Default::default()
        };
        make(&p, FileKind::Symlink, b"../../etc/passwd", &meta).unwrap();
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!(kind_of(&m), FileKind::Symlink);
        assert_eq!(m.mtime(), 1_600_000_000);
        assert_eq!(m.mtime_nsec(), 123_000_000);
        assert_eq!(
            content(&p, FileKind::Symlink).unwrap(),
            b"../../etc/passwd".to_vec()
        );
        assert_eq!(listed_size(&m), 16);
    }

    #[test]
    fn a_fifo_is_made_with_its_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let meta = PosixMeta {
            mode: Some(S_IFIFO | 0o640),
            ..Default::default()
        };
        make(&p, FileKind::Fifo, b"", &meta).unwrap();
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!(kind_of(&m), FileKind::Fifo);
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert_eq!(listed_size(&m), 0);
    }

    #[test]
    fn an_empty_link_target_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let err = make(
            &d.path().join("l"),
            FileKind::Symlink,
            b"",
            &PosixMeta::default(),
        );
        assert!(matches!(err, Err(MakeError::Io(_))));
    }
}
