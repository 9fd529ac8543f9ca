//! Mounting a location as a directory: FUSE (`fuser`) as a thin adapter over
//! [`Location`](crate::location::Location).
//!
//! - `inode.rs`: inode numbers ⇄ keys, with the kernel's lookup counts.
//! - `cache.rs`: the metadata cache (TTL, negative entries) and the block
//!   cache (1 MiB blocks keyed by key + version, memory and optional disk).
//! - `prefetch.rs`: the read-ahead window and the memory budget all
//!   windows share; `reader.rs`: one open file's reads, streaming its
//!   window of ranged GETs ahead of a sequential reader.
//! - `write.rs`: files being written, staged locally and uploaded on close.
//! - `core.rs`: what each operation does, in keys; `fs.rs`: the FUSE side.
//! - `permission.rs`: who may read, write or change a file (the mount is
//!   made with `default_permissions`, so the kernel enforces the shown
//!   modes; `fs.rs` checks them too).
//!
//! [`serve`] mounts and blocks until the file system is unmounted
//! (`fusermount3 -u`) or the process is told to stop (SIGTERM, SIGINT), in
//! which case it uploads what open files have not uploaded yet, then
//! unmounts.

pub mod cache;
pub mod command;
pub mod core;
pub mod error;
pub mod fs;
pub mod inode;
pub mod nodes;
pub mod permission;
pub mod prefetch;
pub mod reader;
pub mod write;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::location::Location;

pub use self::core::MountSettings;

/// Everything `serve` needs besides the location.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub settings: MountSettings,
    pub cache_bytes: u64,
    /// Optional disk block cache: directory and size.
    pub cache_dir: Option<(PathBuf, u64)>,
    /// Let every user in (`allow_other`); the shown modes still decide
    /// what each may do.
    pub allow_other: bool,
    /// Let root in as well as the mounting user (`allow_root`).
    pub allow_root: bool,
    /// FUSE worker threads.
    pub threads: usize,
}

/// Why a mount could not start.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mountpoint `{0}` does not exist or is not a directory")]
    NoMountpoint(PathBuf),
    #[error("mountpoint `{0}` is already a mount point (unmount it first: fusermount3 -u {0})")]
    Busy(PathBuf),
    #[error("cannot mount at `{path}`: {message}")]
    Fuse { path: PathBuf, message: String },
    #[error("cannot use the cache directory `{path}`: {message}")]
    CacheDir { path: PathBuf, message: String },
    #[error("allow_other and allow_root cannot both be set (allow_other lets every user in, allow_root only root besides the mounting user): choose one")]
    AllowOtherAndRoot,
}

impl MountOptions {
    /// Which users the kernel lets into the mount (what they may then do
    /// is decided by the modes it shows, `default_permissions`).
    pub fn session_acl(&self) -> Result<fuser::SessionACL, MountError> {
        match (self.allow_other, self.allow_root) {
            (true, true) => Err(MountError::AllowOtherAndRoot),
            (true, false) => Ok(fuser::SessionACL::All),
            (false, true) => Ok(fuser::SessionACL::RootAndOwner),
            (false, false) => Ok(fuser::SessionACL::Owner),
        }
    }
}

/// The mount points currently mounted (from /proc/self/mountinfo).
pub fn mounted_paths() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    mounted_paths().iter().any(|p| p == &canon)
}

/// A live mount: unmounts when dropped.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    core: Arc<core::Core>,
    notifier: Option<fuser::Notifier>,
    inodes: Arc<std::sync::Mutex<inode::InodeTable>>,
    pub mountpoint: PathBuf,
}

impl Mounted {
    /// True while the kernel side is still there (not unmounted from outside).
    pub fn is_alive(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| !s.guard.is_finished())
    }

    /// A handle that drops this mount's caches, for whoever learns that
    /// its location changed (a task execution writing into it).
    pub fn invalidator(&self) -> Invalidator {
        Invalidator {
            core: self.core.clone(),
            notifier: self.notifier.clone(),
            inodes: self.inodes.clone(),
        }
    }

    /// Unmounts; files still open are uploaded first when they have
    /// unsaved changes. When some are still open (the kernel says busy),
    /// the mount is detached lazily: it leaves the namespace at once, and
    /// its open files fail once this process exits.
    /// An open file whose upload fails is an error (after unmounting):
    /// its unsaved changes are lost.
    pub async fn unmount(mut self) -> std::io::Result<()> {
        let failed = self.core.commit_all().await;
        let lost = |res: std::io::Result<()>| {
            if failed.is_empty() {
                return res;
            }
            res?;
            Err(std::io::Error::other(format!(
                "the unsaved changes of {} open file(s) could not be uploaded and are lost: {} (the log says why)",
                failed.len(),
                failed.join(", ")
            )))
        };
        let Some(session) = self.session.take() else {
            return lost(Ok(()));
        };
        let mountpoint = self.mountpoint.clone();
        let res = tokio::task::spawn_blocking(move || match unmount_path(&mountpoint, false) {
            // Unmounted: the session ends by itself (fuser's own unmount
            // would race with the kernel tearing the connection down, and
            // fail with EINVAL).
            Ok(()) => session.join(),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::warn!(mountpoint = %mountpoint.display(), "files are still open in the mount: detaching it lazily (their content was uploaded; later writes are lost)");
                crate::shared::notice(format_args!(
                    "syncmount: files are still open in {}: detached lazily",
                    mountpoint.display()
                ));
                unmount_path(&mountpoint, true)?;
                // The session thread serves the open files until this
                // process exits (or they are closed).
                drop(session);
                Ok(())
            }
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        lost(res)
    }
}

/// Drops a mount's caches, ours and the kernel's; cheap to clone.
#[derive(Clone)]
pub struct Invalidator {
    core: Arc<core::Core>,
    notifier: Option<fuser::Notifier>,
    inodes: Arc<std::sync::Mutex<inode::InodeTable>>,
}

impl Invalidator {
    /// Where the mounted location's keys live.
    pub fn place(&self) -> crate::location::Place {
        self.core.loc.place()
    }

    /// Drops everything the caches hold, ours and the kernel's (after a
    /// change made elsewhere, e.g. by a task execution writing into this
    /// location): the next lookup, getattr and read ask the store, without
    /// waiting for the metadata TTL.
    pub fn invalidate_all(&self) {
        self.core.invalidate_all();
        let Some(notifier) = &self.notifier else {
            return;
        };
        let entries = crate::lock(&self.inodes).entries();
        let ino_of: std::collections::HashMap<&str, u64> =
            entries.iter().map(|(i, k)| (k.as_str(), *i)).collect();
        for (ino, key) in &entries {
            // Attributes and cached pages of the inode; then the name in its
            // parent, so a lookup sees a new or deleted object. Errors only
            // mean the kernel had already forgotten it.
            let _ = notifier.inval_inode(fuser::INodeNo(*ino), 0, 0);
            let parent = match inode::parent_of(key) {
                "" => inode::ROOT,
                p => match ino_of.get(p) {
                    Some(&i) => i,
                    None => continue,
                },
            };
            let _ = notifier.inval_entry(
                fuser::INodeNo(parent),
                std::ffi::OsStr::new(inode::name_of(key)),
            );
        }
        // Names the kernel cached as missing hang off known directories:
        // forgetting the directories' own attributes and pages covers them.
        let _ = notifier.inval_inode(fuser::INodeNo(inode::ROOT), 0, 0);
    }
}

/// Whether `mountpoint` can be mounted on: an existing directory that is
/// not a mount point already.
pub fn check_mountpoint(mountpoint: &Path) -> Result<(), MountError> {
    if !mountpoint.is_dir() {
        return Err(MountError::NoMountpoint(mountpoint.to_path_buf()));
    }
    if is_mounted(mountpoint) {
        return Err(MountError::Busy(mountpoint.to_path_buf()));
    }
    Ok(())
}

/// Unmounts `path` (lazily: detached even while busy): umount2 as root,
/// else `fusermount3 -u [-z]`. A busy mount is an EBUSY error.
fn unmount_path(path: &Path, lazy: bool) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    // Not root: fusermount3 is setuid and unmounts what we mounted.
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg(path).output()?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    if text.contains("busy") {
        return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
    }
    Err(std::io::Error::other(format!(
        "fusermount3 -u: {}",
        text.trim()
    )))
}

/// Mounts `loc` at `mountpoint` (returns once the kernel has accepted it).
pub fn mount(
    loc: Arc<dyn Location>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<Mounted, MountError> {
    let acl = opts.session_acl()?;
    check_mountpoint(mountpoint)?;
    // --cache-size bounds both the block cache and the read-ahead windows.
    let (budget, memory_bytes) = prefetch::Budget::split(opts.cache_bytes);
    let blocks = cache::BlockCache::new(memory_bytes, opts.cache_dir.clone()).map_err(|e| {
        MountError::CacheDir {
            path: opts.cache_dir.clone().map(|c| c.0).unwrap_or_default(),
            message: e.to_string(),
        }
    })?;
    let metrics = crate::metrics::global().mount(&mountpoint.display().to_string());
    let core = Arc::new(core::Core::new(
        loc.clone(),
        opts.settings.clone(),
        blocks,
        budget,
        metrics,
    ));
    let fs = fs::MountFs::new(core.clone(), tokio::runtime::Handle::current());
    let inodes = fs.inodes();
    let mut options = vec![
        fuser::MountOption::FSName(loc.describe()),
        fuser::MountOption::Subtype("syncmount".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        // The kernel checks the shown mode, owner and group on every
        // access: without it, with allow_other, every user could read and
        // write every file whatever its mode.
        fuser::MountOption::DefaultPermissions,
    ];
    if opts.settings.read_only {
        options.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config.acl = acl;
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| MountError::Fuse {
        path: mountpoint.to_path_buf(),
        message: e.to_string(),
    })?;
    let notifier = Some(session.notifier());
    Ok(Mounted {
        session: Some(session),
        core,
        notifier,
        inodes,
        mountpoint: mountpoint.to_path_buf(),
    })
}

/// Mounts and serves until unmounted from outside or told to stop by a
/// signal. Returns the exit code.
pub async fn serve(
    loc: Arc<dyn Location>,
    mountpoint: &Path,
    opts: &MountOptions,
) -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a SIGTERM as soon as the mount is visible must
    // unmount, not kill the process and leave a dead mount behind.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mounted = mount(loc.clone(), mountpoint, opts)?;
    tracing::info!(location = %loc.describe(), mountpoint = %mountpoint.display(), "mounted");
    crate::shared::notice(format_args!(
        "syncmount: mounted {} at {}",
        loc.describe(),
        mountpoint.display()
    ));
    // A mount killed earlier (SIGKILL, a crash) may have left a multipart
    // upload open in the store: abort what its journal names.
    let cleaner = loc.clone();
    tokio::spawn(async move {
        match cleaner.clean_leftovers().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(n, "removed leftovers of interrupted writes"),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove leftovers of interrupted writes")
            }
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => {
                if !mounted.is_alive() {
                    crate::shared::notice(format_args!("syncmount: {} was unmounted", mountpoint.display()));
                    return Ok(0);
                }
            }
        }
    }
    crate::shared::notice(format_args!(
        "syncmount: unmounting {}",
        mountpoint.display()
    ));
    mounted.unmount().await?;
    Ok(0)
}
