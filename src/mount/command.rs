//! `syncmount mount LOCATION MOUNTPOINT`: option parsing, the pre-mount
//! checks that make a doomed mount fail before detaching, and detaching.
//!
//! Without `--foreground` the command starts itself again in the
//! foreground, in a new session with its output in a log file, waits until
//! the mount is live (or the child has failed, whose log it then prints)
//! and exits, like `mount` does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::units::{parse_duration, parse_mode, parse_size};

use crate::location::Location;

use super::{MountOptions, MountSettings};

/// How long the detaching parent waits for the mount to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Set in the environment of the detached child.
const DETACHED_ENV: &str = "SYNCMOUNT_DETACHED";

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// s3://bucket[/prefix], a local directory, or a location name from the config file.
    pub location: String,
    /// An existing empty directory to mount on.
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub conn: crate::shared::SideArgs,
    /// Role to assume (STS AssumeRole) for the location.
    #[arg(long)]
    pub role_arn: Option<String>,
    /// Refuse every change (EROFS).
    #[arg(long)]
    pub read_only: bool,
    /// How long attributes and directory entries are trusted before the
    /// store is asked again (e.g. 1s, 500ms, 0).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub metadata_ttl: Duration,
    /// In-memory block cache size (e.g. 512MiB, 2GiB).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// Also keep blocks on disk here (evicted oldest first past --cache-dir-size).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, default_value = "10GiB", value_parser = parse_size)]
    pub cache_dir_size: u64,
    /// Let every user use the mount, not only the one mounting. What each
    /// may do is decided by the modes, owners and groups the mount shows
    /// (checked by the kernel, as on a local disk). A user other than root
    /// needs `user_allow_other` in /etc/fuse.conf for this.
    #[arg(long, conflicts_with = "allow_root")]
    pub allow_other: bool,
    /// Let root use the mount besides the user mounting (no one else).
    /// Like --allow-other, a user other than root needs `user_allow_other`
    /// in /etc/fuse.conf for this.
    #[arg(long)]
    pub allow_root: bool,
    /// Owner shown for objects without stored metadata (default: the mounting user).
    #[arg(long)]
    pub uid: Option<u32>,
    /// Group shown for objects without stored metadata (default: the mounting user's group).
    #[arg(long)]
    pub gid: Option<u32>,
    /// Permissions shown for files without stored metadata (octal).
    #[arg(long, default_value = "644", value_parser = parse_mode)]
    pub file_mode: u32,
    /// Permissions shown for directories without stored metadata (octal).
    #[arg(long, default_value = "755", value_parser = parse_mode)]
    pub dir_mode: u32,
    /// Renaming a directory of more objects than this is refused (EXDEV, so
    /// `mv` copies instead); each object is a copy and a delete on S3.
    #[arg(long, default_value_t = 10_000)]
    pub max_rename_objects: u64,
    /// Show files with what the listing says (size, and LastModified as
    /// mtime) and the default owner and modes, instead of one HEAD per file
    /// for the metadata `sync` stored: `ls -l` of large directories costs
    /// only the listing. Metadata set through the mount is still stored.
    #[arg(long)]
    pub listing_attributes: bool,
    /// Stay in the foreground (otherwise detach once the mount is ready).
    #[arg(long)]
    pub foreground: bool,
    /// Where the detached mount logs (default: STATE_DIR/logs/mount-<mountpoint>.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// Serve Prometheus metrics (cache hits and misses, bytes fetched, open
    /// files, upload failures, S3 requests) at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Parses `MountArgs` alone, for their clap defaults.
#[derive(clap::Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    args: MountArgs,
}

impl MountArgs {
    /// The arguments a `[[mount]]` table stands for: the command line's
    /// defaults, overridden by what the table sets.
    pub fn from_config(m: &crate::config::MountConfig) -> MountArgs {
        use clap::Parser as _;
        let mut a = DefaultsOnly::parse_from([
            std::ffi::OsStr::new("mount"),
            std::ffi::OsStr::new(&m.location),
            m.path.as_os_str(),
        ])
        .args;
        a.read_only = m.read_only;
        a.metadata_ttl = m.metadata_ttl.unwrap_or(a.metadata_ttl);
        a.cache_size = m.cache_size.unwrap_or(a.cache_size);
        a.cache_dir = m.cache_dir.clone();
        a.allow_other = m.allow_other;
        a.allow_root = m.allow_root;
        a.uid = m.uid;
        a.gid = m.gid;
        a.file_mode = m.file_mode.unwrap_or(a.file_mode);
        a.dir_mode = m.dir_mode.unwrap_or(a.dir_mode);
        a.listing_attributes = m.listing_attributes;
        a.foreground = true;
        a
    }

    pub fn options(&self, state_dir: &Path) -> MountOptions {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let staging_dir = match &self.cache_dir {
            Some(d) => d.join("staging"),
            None => state_dir.join("staging"),
        };
        MountOptions {
            settings: MountSettings {
                read_only: self.read_only,
                metadata_ttl: self.metadata_ttl,
                uid: self.uid.unwrap_or(uid),
                gid: self.gid.unwrap_or(gid),
                file_mode: self.file_mode,
                dir_mode: self.dir_mode,
                staging_dir,
                max_rename_objects: self.max_rename_objects,
                listing_attributes: self.listing_attributes,
            },
            cache_bytes: self.cache_size,
            cache_dir: self.cache_dir.clone().map(|d| (d, self.cache_dir_size)),
            allow_other: self.allow_other,
            allow_root: self.allow_root,
            threads: 16,
        }
    }
}

/// Checks that the location answers (credentials, bucket) before mounting,
/// so a doomed mount fails at once with the store's own explanation.
pub async fn check_location(loc: &Arc<dyn Location>) -> anyhow::Result<()> {
    if let Err(e) = loc.list_dir("", None).await {
        let hint = loc
            .explain(&e)
            .await
            .map(|h| format!("\n{h}"))
            .unwrap_or_default();
        anyhow::bail!("cannot mount {}: {e}{hint}", loc.describe());
    }
    Ok(())
}

/// The default log of a detached mount.
fn default_log(state_dir: &Path, mountpoint: &Path) -> PathBuf {
    let abs = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let name: String = abs
        .to_string_lossy()
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    state_dir.join("logs").join(format!("mount-{name}.log"))
}

/// Whether this process is the detached child of a `mount` without `--foreground`.
pub fn is_detached_child() -> bool {
    std::env::var_os(DETACHED_ENV).is_some()
}

/// Starts this command again in the foreground, detached, and waits until
/// the mount is ready. Returns the exit code for the parent.
pub fn detach(args: &MountArgs, state_dir: &Path) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    // The parent waits for the mountpoint to become a mount point: one that
    // already is one would look ready at once.
    super::check_mountpoint(&args.mountpoint)?;
    let log = args
        .log_file
        .clone()
        .unwrap_or_else(|| default_log(state_dir, &args.mountpoint));
    if let Some(dir) = log.parent() {
        crate::shared::private::create_dir(dir)?;
    }
    let out = crate::shared::private::append_file(&log)
        .map_err(|e| anyhow::anyhow!("cannot open the mount log `{}`: {e}", log.display()))?;
    let start_len = out.metadata().map(|m| m.len()).unwrap_or(0);
    let exe = std::env::current_exe()?;
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    argv.push("--foreground".into());
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&argv)
        .env(DETACHED_ENV, "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe and has no preconditions.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read(&log).unwrap_or_default();
            let new = String::from_utf8_lossy(text.get(start_len as usize..).unwrap_or(&[]));
            eprint!("{new}");
            return Ok(status.code().unwrap_or(1).max(1));
        }
        if super::is_mounted(&args.mountpoint) {
            crate::shared::notice(format_args!(
                "syncmount: mounted {} at {} (pid {}, log {})",
                args.location,
                args.mountpoint.display(),
                child.id(),
                log.display()
            ));
            return Ok(0);
        }
        if started.elapsed() > READY_TIMEOUT {
            let _ = child.kill();
            anyhow::bail!(
                "the mount of {} at {} was not ready after {}s; see {}",
                args.location,
                args.mountpoint.display(),
                READY_TIMEOUT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_log_is_named_after_the_mountpoint() {
        let p = default_log(Path::new("/var/lib/syncmount"), Path::new("/mnt/my data"));
        assert_eq!(
            p,
            PathBuf::from("/var/lib/syncmount/logs/mount-mnt-my-data.log")
        );
    }

    #[test]
    fn a_mount_table_keeps_the_command_lines_defaults_for_what_it_leaves_out() {
        let m = crate::config::MountConfig {
            location: "s3://b/p".into(),
            path: "/mnt/b".into(),
            listing_attributes: true,
            file_mode: Some(0o600),
            ..Default::default()
        };
        let a = MountArgs::from_config(&m);
        let s = a.options(Path::new("/state")).settings;
        assert!(s.listing_attributes);
        assert_eq!((s.file_mode, s.dir_mode), (0o600, 0o755));
        assert_eq!(s.metadata_ttl, Duration::from_secs(1));
        assert_eq!(a.cache_size, 512 * 1024 * 1024);
        assert!(a.foreground, "the daemon's mounts never detach");
        let plain = crate::config::MountConfig {
            listing_attributes: false,
            ..m
        };
        assert!(
            !MountArgs::from_config(&plain)
                .options(Path::new("/state"))
                .settings
                .listing_attributes
        );
    }

    #[test]
    fn allow_root_in_a_mount_table_lets_root_in_and_allow_other_everyone() {
        let base = crate::config::MountConfig {
            location: "s3://b".into(),
            path: "/mnt/b".into(),
            ..Default::default()
        };
        let acl = |m: &crate::config::MountConfig| {
            MountArgs::from_config(m)
                .options(Path::new("/state"))
                .session_acl()
        };
        let root = crate::config::MountConfig {
            allow_root: true,
            ..base.clone()
        };
        let other = crate::config::MountConfig {
            allow_other: true,
            ..base.clone()
        };
        assert_eq!(acl(&base).ok(), Some(fuser::SessionACL::Owner));
        assert_eq!(acl(&root).ok(), Some(fuser::SessionACL::RootAndOwner));
        assert_eq!(acl(&other).ok(), Some(fuser::SessionACL::All));
        let both = crate::config::MountConfig {
            allow_root: true,
            ..other
        };
        let err = acl(&both).expect_err("both are refused").to_string();
        assert!(
            err.contains("allow_other") && err.contains("allow_root"),
            "{err}"
        );
    }

    #[test]
    fn the_command_line_refuses_allow_other_with_allow_root_naming_both() {
        use clap::Parser as _;
        let err = DefaultsOnly::try_parse_from([
            "mount",
            "/data",
            "/mnt",
            "--allow-other",
            "--allow-root",
        ])
        .err()
        .expect("both flags are refused")
        .to_string();
        assert!(
            err.contains("--allow-other") && err.contains("--allow-root"),
            "{err}"
        );
        let root = DefaultsOnly::try_parse_from(["mount", "/data", "/mnt", "--allow-root"])
            .map(|d| d.args.options(Path::new("/state")).session_acl().ok());
        assert_eq!(root.ok().flatten(), Some(fuser::SessionACL::RootAndOwner));
    }
}
