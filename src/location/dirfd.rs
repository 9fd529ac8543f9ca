//! Descriptor-relative access below a local location's root: the root is
//! opened once (`O_PATH|O_DIRECTORY`) and every path below it is resolved
//! from that descriptor, never by name from `/`. Directories are resolved
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`; where the kernel has no `openat2` (ENOSYS,
//! Linux before 5.6) they are walked one component at a time with
//! `openat(O_NOFOLLOW|O_DIRECTORY)`. Either way a symbolic link met where a
//! directory is expected is an error ([`is_symlink_in_path`]), never
//! followed, so a user who can write below the root cannot redirect root's
//! writes, deletes or reads elsewhere by swapping a directory for a link.
//! The last component is then handled relative to its parent's descriptor
//! with the `*at` calls and `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`.
//!
//! What openat2(2) guarantees: with RESOLVE_BENEATH the resolution fails
//! (EXDEV) rather than leave the subtree of the descriptor, even through
//! `..` raced by renames (EAGAIN then: retried); RESOLVE_NO_SYMLINKS makes
//! any link in the path ELOOP, RESOLVE_NO_MAGICLINKS refuses `/proc` magic
//! links. What we took from rsync's fixes of CVE-2024-12087/12088 and the
//! later parent-component races (CVE-2026-29518, -53796): validating a path
//! and then using it by name is never enough, the descriptor must be kept
//! from the check to the use (here: every mkdir, chmod, chown, rename and
//! unlink is relative to the parent's descriptor); their per-component
//! fallback refused to create a missing last component (ENOENT mistaken
//! for an attack), so here the walk resolves only directories and the caller
//! opens or creates the last name itself; and a path that failed to resolve
//! is re-walked only to say which component was a link, never to use it.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::meta::{FileKind, PosixMeta};

/// How directories below the root are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with RESOLVE_BENEATH|NO_SYMLINKS|NO_MAGICLINKS (falls back
    /// to the walk when the kernel has none).
    Openat2,
    /// One `openat(O_NOFOLLOW|O_DIRECTORY)` per component.
    Walk,
}

/// Set once `openat2` answered ENOSYS: every later resolution walks.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);
/// Retries of an `openat2` that answered EAGAIN (a racing rename).
const EAGAIN_RETRIES: usize = 8;

/// Flags of every directory descriptor we resolve: usable as the `dirfd`
/// of the `*at` calls, and needing no read permission (as a path did not).
const DIR_FLAGS: OFlags = OFlags::PATH
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A symbolic link found where a directory was expected.
#[derive(Debug)]
struct SymlinkInPath(PathBuf);

impl std::fmt::Display for SymlinkInPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a symbolic link was found where a directory was expected (`{}`); not followed",
            self.0.display()
        )
    }
}

impl std::error::Error for SymlinkInPath {}

/// Whether `e` says a symbolic link stood where a directory was expected.
pub fn is_symlink_in_path(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SymlinkInPath>())
}

fn symlink_in_path(rel: &Path) -> io::Error {
    io::Error::other(SymlinkInPath(rel.to_path_buf()))
}

/// The root of a local location, open.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    resolver: Resolver,
}

/// Splits a relative path into its names, refusing `..`, `.`, and absolute
/// paths (keys never hold them; the resolver refuses them all the same).
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "`{}` in `{}` is refused: only plain names below the root",
                    other.as_os_str().to_string_lossy(),
                    rel.display()
                ),
            )),
        })
        .collect()
}

impl Root {
    /// Opens the root directory by name: the one name ever resolved from `/`.
    pub fn open(path: &Path, resolver: Resolver) -> io::Result<Root> {
        let fd = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Root { fd, resolver })
    }

    /// The directory `rel` below the root (`""` for the root itself), every
    /// component a real directory, as an `O_PATH` descriptor.
    pub fn dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let parts = names(rel)?;
        if parts.is_empty() {
            return Ok(rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?);
        }
        if self.resolver == Resolver::Openat2 && !OPENAT2_MISSING.load(Ordering::Relaxed) {
            match self.openat2(rel) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
                // Some seccomp profiles answer EPERM for a system call they
                // do not know: the walk is as safe.
                Err(Errno::PERM) => {}
                // Walked again only to name the link (or the file) in the
                // way, or after renames kept racing the lookup (EAGAIN);
                // the walk is as safe, so a raced success is fine.
                Err(Errno::LOOP | Errno::NOTDIR | Errno::XDEV | Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.walk(&parts)
    }

    fn openat2(&self, rel: &Path) -> Result<OwnedFd, Errno> {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let mut tries = 0;
        loop {
            match rfs::openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), how) {
                Err(Errno::AGAIN) if tries < EAGAIN_RETRIES => tries += 1,
                r => return r,
            }
        }
    }

    fn walk(&self, parts: &[&OsStr]) -> io::Result<OwnedFd> {
        let mut cur = rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        let mut so_far = PathBuf::new();
        for name in parts {
            so_far.push(name);
            cur = open_child_dir(cur.as_fd(), name, &so_far)?;
        }
        Ok(cur)
    }

    /// Like [`Root::dir`], creating missing directories (`mkdirat`, mode
    /// 0777 less the umask, as `mkdir -p`) and opening each with
    /// `O_NOFOLLOW` before going on. A file in the way is ENOTDIR.
    pub fn make_dirs(&self, rel: &Path) -> io::Result<OwnedFd> {
        match self.dir(rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            r => return r,
        }
        let mut cur = rfs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        let mut so_far = PathBuf::new();
        for name in names(rel)? {
            so_far.push(name);
            cur = match open_child_dir(cur.as_fd(), name, &so_far) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match rfs::mkdirat(&cur, name, Mode::from_raw_mode(0o777)) {
                        // Another writer made it meanwhile: opened below.
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open_child_dir(cur.as_fd(), name, &so_far)?
                }
                r => r?,
            };
        }
        Ok(cur)
    }
}

/// A readable descriptor of the directory `dir` (an `O_PATH` one), for
/// listing it.
pub fn readable(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens directory `name` in `dir` without following a link; a link there
/// is [`SymlinkInPath`] (`so_far`, its path below the root, names it),
/// anything else not a directory ENOTDIR.
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &OsStr, so_far: &Path) -> io::Result<OwnedFd> {
    match rfs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
            match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileKind::of_mode(st.st_mode) == FileKind::Symlink => {
                    Err(symlink_in_path(so_far))
                }
                _ => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// What `lstat` says of one entry, in the units the location uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub mode: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
}

impl Found {
    // The field widths differ between architectures: widened losslessly.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn of(st: &rfs::Stat) -> Found {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Found {
            mode: st.st_mode as u32,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            rdev: st.st_rdev as u64,
        }
    }

    pub fn kind(&self) -> FileKind {
        FileKind::of_mode(self.mode)
    }

    pub fn is_dir(&self) -> bool {
        self.kind() == FileKind::Dir
    }

    pub fn modified(&self) -> Option<std::time::SystemTime> {
        super::meta::ns_to_system_time(self.mtime_ns)
    }
}

/// `lstat` of `name` in `dir` (a link is described, not followed).
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Found> {
    Ok(Found::of(&rfs::statat(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// `fstat` of an open descriptor.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Found> {
    Ok(Found::of(&rfs::fstat(fd)?))
}

/// Opens regular file `name` in `dir` for reading: a link is not followed
/// (ELOOP), and whatever else stands there (a FIFO would block a plain
/// open: O_NONBLOCK) is refused after `fstat`.
pub fn open_regular(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if stat_fd(fd.as_fd())?.kind() != FileKind::File {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("`{}` is not a regular file", name.to_string_lossy()),
        ));
    }
    Ok(std::fs::File::from(fd))
}

/// Creates temp file `name` in `dir`: never an existing name nor a link
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`), private (0600) until its metadata is set
/// on the descriptor.
pub fn create_temp(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::fs::File> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

/// The target of link `name` in `dir`, as bytes.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Renames `from` to `to`, both in `dir`; with `no_replace` an existing
/// `to` is EEXIST (`renameat2(RENAME_NOREPLACE)`).
pub fn rename_in(
    from_dir: BorrowedFd<'_>,
    from: &OsStr,
    to_dir: BorrowedFd<'_>,
    to: &OsStr,
    no_replace: bool,
) -> io::Result<()> {
    let flags = if no_replace {
        rfs::RenameFlags::NOREPLACE
    } else {
        rfs::RenameFlags::empty()
    };
    Ok(rfs::renameat_with(from_dir, from, to_dir, to, flags)?)
}

/// Removes `name` from `dir`: a directory (empty) when `is_dir`, else a
/// file, link or node (never what a link points to).
pub fn unlink_in(dir: BorrowedFd<'_>, name: &OsStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    Ok(rfs::unlinkat(dir, name, flags)?)
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn times_of(mtime_ns: i128) -> Option<rfs::Timestamps> {
    let secs = i64::try_from(mtime_ns.div_euclid(1_000_000_000)).ok()?;
    let nanos = i64::try_from(mtime_ns.rem_euclid(1_000_000_000)).ok()?;
    Some(rfs::Timestamps {
        last_access: rfs::Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_OMIT,
        },
        last_modification: rfs::Timespec {
            tv_sec: secs,
            tv_nsec: nanos,
        },
    })
}

fn ids(meta: &PosixMeta) -> (Option<rfs::Uid>, Option<rfs::Gid>) {
    (
        meta.uid.map(rfs::Uid::from_raw),
        meta.gid.map(rfs::Gid::from_raw),
    )
}

/// Applies mode `perm`, owner (as root; a failure to chown is not fatal:
/// a file system may not support it) and mtime on an open file.
pub fn apply_meta_fd(fd: BorrowedFd<'_>, perm: u32, meta: &PosixMeta) -> io::Result<()> {
    // Owner first: chown clears setuid/setgid bits, which the mode then sets.
    if is_root() && (meta.uid.is_some() || meta.gid.is_some()) {
        let (u, g) = ids(meta);
        let _ = rfs::fchown(fd, u, g);
    }
    rfs::fchmod(fd, Mode::from_raw_mode(perm))?;
    if let Some(t) = meta.mtime_ns.and_then(times_of) {
        rfs::futimens(fd, &t)?;
    }
    Ok(())
}

/// Applies mode (`None`: kept; never to a link, whose mode Linux fixes at
/// 0777), owner (as root) and mtime to `name` in `dir` without following a
/// link: what cannot be opened for an fd (a FIFO, a device, a directory we
/// may not read) is pinned with `O_PATH|O_NOFOLLOW` and changed through
/// that descriptor.
pub fn apply_meta_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    perm: Option<u32>,
    meta: &PosixMeta,
) -> io::Result<()> {
    let pinned = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let kind = stat_fd(pinned.as_fd())?.kind();
    // Owner first (chown clears setuid/setgid), on the pinned inode itself
    // (AT_EMPTY_PATH), not on whatever the name holds by then.
    if is_root() && (meta.uid.is_some() || meta.gid.is_some()) {
        let (u, g) = ids(meta);
        let _ = rfs::chownat(pinned.as_fd(), "", u, g, AtFlags::EMPTY_PATH);
    }
    if let (Some(perm), false) = (perm, kind == FileKind::Symlink) {
        // fchmod refuses an O_PATH descriptor; its /proc/self/fd entry
        // names exactly the pinned inode (what glibc's fchmodat with
        // AT_SYMLINK_NOFOLLOW does).
        let proc_path = format!("/proc/self/fd/{}", pinned.as_raw_fd());
        rfs::chmod(proc_path.as_str(), Mode::from_raw_mode(perm))?;
    }
    if let Some(t) = meta.mtime_ns.and_then(times_of) {
        rfs::utimensat(dir, name, &t, AtFlags::SYMLINK_NOFOLLOW)?;
    }
    Ok(())
}

/// The names of directory `dir` (a readable descriptor), `.` and `..` left out.
pub fn read_names(dir: OwnedFd) -> io::Result<Vec<OsString>> {
    use std::os::unix::ffi::OsStrExt;
    let mut out = Vec::new();
    let mut entries = rfs::Dir::new(dir)?;
    while let Some(ent) = entries.read() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "dirfd_tests.rs"]
mod tests;
