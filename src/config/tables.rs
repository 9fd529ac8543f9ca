//! The typed `[[task]]` and `[[mount]]` tables. Task options use the names
//! and values of `syncmount sync`'s flags (`transfer_mode = "changed"`;
//! DataSync's spelling `"CHANGED"` works too) and can be overridden per
//! execution with `task start --override key=value`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::spec::S3Tuning;
use crate::engine::diff::{Overwrite, PreserveDeleted, TransferMode};
use crate::engine::run::{TaskOptions, DEFAULT_CONCURRENCY};
use crate::engine::three_way::{ConflictPolicy, MaxDelete, TwoWayOptions};
use crate::engine::transfer::VerifyMode;
use crate::location::privilege::{PreserveDevices, PreserveSetid, Privileges};
use crate::location::s3::ListMode;
use crate::task::schedule_state::DEFAULT_AUTO_DISABLE_AFTER;

use super::values::{
    auto_disable_after, byte_size, duration, history_days, max_reports, mode, on_end_inherit_env,
    on_end_timeout, value_enum,
};

/// Keys of a `[[task]]` besides its options.
pub const TASK_KEYS: &[&str] = &[
    "name",
    "source",
    "destination",
    "schedule",
    "direction",
    "on_end",
    "on_end_timeout",
    "on_end_inherit_env",
    "auto_disable_after",
];
/// Keys of a task's options (also what `--override` accepts).
pub const OPTION_KEYS: &[&str] = &[
    "transfer_mode",
    "overwrite",
    "preserve_deleted_files",
    "verify_mode",
    "include",
    "exclude",
    "bytes_per_second",
    "concurrency",
    "part_size",
    "multipart_threshold",
    "multipart_copy_threshold",
    "list_mode",
    "object_tags",
    "queueing",
    "lock",
    "conflict_policy",
    "max_delete",
    "force",
    "log_level",
    "preserve_devices",
    "preserve_setid",
];
pub const MOUNT_KEYS: &[&str] = &[
    "location",
    "path",
    "read_only",
    "metadata_ttl",
    "cache_size",
    "cache_dir",
    "allow_other",
    "allow_root",
    "uid",
    "gid",
    "file_mode",
    "dir_mode",
    "listing_attributes",
];
pub const LOCATION_KEYS: &[&str] = &[
    "name",
    "bucket",
    "prefix",
    "region",
    "endpoint_url",
    "profile",
    "role_arn",
    "storage_class",
    "sse",
    "sse_kms_key_id",
    "requester_pays",
    "expected_bucket_owner",
    "path",
];

/// A `[[task]]`: what to copy where, when, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TaskConfig {
    pub name: String,
    /// A location name, `s3://bucket[/prefix]` or an absolute path.
    pub source: String,
    pub destination: String,
    /// `rate(…)` or a cron expression (see task::schedule); none: only started by hand.
    pub schedule: Option<String>,
    /// Commands run after each execution ended (`task::hooks`).
    #[serde(default)]
    pub on_end: Vec<String>,
    /// How long each `on_end` command may run before its process group is
    /// killed (default `task::hooks::HOOK_TIMEOUT`).
    #[serde(default, deserialize_with = "on_end_timeout")]
    pub on_end_timeout: Option<Duration>,
    /// Give `on_end` commands the whole environment of the daemon (or
    /// runner) instead of only `SYNCMOUNT_*`, `PATH` and `HOME`.
    #[serde(default, deserialize_with = "on_end_inherit_env")]
    pub on_end_inherit_env: bool,
    /// `one-way` (default: source → destination) or `two-way` (source and
    /// destination are sides A and B, kept equal in both directions).
    #[serde(default, deserialize_with = "value_enum")]
    pub direction: Option<Direction>,
    /// Disable the schedule after this many consecutive executions ended
    /// in ERROR with the same error code (0: never; default
    /// [`DEFAULT_AUTO_DISABLE_AFTER`]).
    #[serde(default, deserialize_with = "auto_disable_after")]
    pub auto_disable_after: Option<u32>,
    #[serde(skip)]
    pub options: TaskOptionsConfig,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Direction {
    #[default]
    OneWay,
    TwoWay,
}

impl TaskConfig {
    pub fn is_two_way(&self) -> bool {
        self.direction == Some(Direction::TwoWay)
    }

    pub fn auto_disable_after(&self) -> u32 {
        self.auto_disable_after
            .unwrap_or(DEFAULT_AUTO_DISABLE_AFTER)
    }
}

/// What a task's executions log (DataSync's CloudWatch log levels): `off`
/// nothing, `basic` their start, end and errors, `transfer` also one line
/// per object copied, deleted or failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Off,
    #[default]
    Basic,
    Transfer,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Off => "off",
            LogLevel::Basic => "basic",
            LogLevel::Transfer => "transfer",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        <LogLevel as clap::ValueEnum>::from_str(s, true).ok()
    }
}

/// How executions of a task are guarded against overlapping ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// The flock registry in the state directory (one host).
    #[default]
    Local,
    /// An object in a bucket, taken with conditional writes (several hosts).
    S3,
}

/// A task's options; every one unset takes `syncmount sync`'s default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct TaskOptionsConfig {
    #[serde(default, deserialize_with = "value_enum")]
    pub transfer_mode: Option<TransferMode>,
    #[serde(default, deserialize_with = "value_enum")]
    pub overwrite: Option<Overwrite>,
    #[serde(default, deserialize_with = "value_enum")]
    pub preserve_deleted_files: Option<PreserveDeleted>,
    #[serde(default, deserialize_with = "value_enum")]
    pub verify_mode: Option<VerifyMode>,
    pub include: Option<String>,
    pub exclude: Option<String>,
    pub bytes_per_second: Option<u64>,
    pub concurrency: Option<usize>,
    pub part_size: Option<u64>,
    pub multipart_threshold: Option<u64>,
    pub multipart_copy_threshold: Option<u64>,
    #[serde(default, deserialize_with = "value_enum")]
    pub list_mode: Option<ListMode>,
    /// S3 → S3: `preserve` (default) copies objects' tags, `none` does not.
    #[serde(default, deserialize_with = "value_enum")]
    pub object_tags: Option<crate::location::s3::ObjectTags>,
    /// Wait behind an overlapping execution (default) instead of failing.
    pub queueing: Option<bool>,
    pub lock: Option<LockKind>,
    /// Two-way tasks: how conflicts are settled (default keep-both).
    #[serde(default, deserialize_with = "value_enum")]
    pub conflict_policy: Option<ConflictPolicy>,
    /// Most deletions per side per execution, `50%` or `100` (two-way
    /// tasks, and one-way tasks with preserve_deleted_files = remove).
    pub max_delete: Option<String>,
    /// Allow a mass delete (max_delete and the empty-side check do not
    /// refuse).
    pub force: Option<bool>,
    /// What the task's executions log (default `basic`).
    #[serde(default, deserialize_with = "value_enum")]
    pub log_level: Option<LogLevel>,
    /// DataSync's PreserveDevices: `none` (default) creates no character
    /// or block device at a local destination, `preserve` does (as root).
    #[serde(default, deserialize_with = "value_enum")]
    pub preserve_devices: Option<PreserveDevices>,
    /// `none` (default) clears setuid/setgid bits of files written to a
    /// local destination, `preserve` keeps them.
    #[serde(default, deserialize_with = "value_enum")]
    pub preserve_setid: Option<PreserveSetid>,
}

impl TaskOptionsConfig {
    /// `self`, with every option `over` sets replaced.
    pub fn overridden_by(&self, over: &TaskOptionsConfig) -> TaskOptionsConfig {
        macro_rules! pick {
            ($($f:ident),*) => { TaskOptionsConfig { $($f: over.$f.clone().or_else(|| self.$f.clone()),)* } };
        }
        pick!(
            transfer_mode,
            overwrite,
            preserve_deleted_files,
            verify_mode,
            include,
            exclude,
            bytes_per_second,
            concurrency,
            part_size,
            multipart_threshold,
            multipart_copy_threshold,
            list_mode,
            object_tags,
            queueing,
            lock,
            conflict_policy,
            max_delete,
            force,
            log_level,
            preserve_devices,
            preserve_setid
        )
    }

    /// The engine's options (defaults filled in; a bad `max_delete` is
    /// reported by [`Self::problems`] and taken as the default).
    pub fn engine(&self) -> TaskOptions {
        let d = TaskOptions::default();
        TaskOptions {
            transfer_mode: self.transfer_mode.unwrap_or(d.transfer_mode),
            overwrite: self.overwrite.unwrap_or(d.overwrite),
            preserve_deleted: self.preserve_deleted_files.unwrap_or(d.preserve_deleted),
            verify_mode: self.verify_mode.unwrap_or(d.verify_mode),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            bytes_per_second: self.bytes_per_second,
            concurrency: self.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            dry_run: false,
            two_way: None,
            max_delete: self
                .max_delete
                .as_deref()
                .and_then(|m| m.parse().ok())
                .unwrap_or_default(),
            force: self.force.unwrap_or(false),
            privileges: Privileges {
                devices: self.preserve_devices.unwrap_or_default(),
                setid: self.preserve_setid.unwrap_or_default(),
            },
        }
    }

    /// The options of a two-way execution (defaults filled in).
    pub fn two_way(&self) -> TwoWayOptions {
        TwoWayOptions {
            conflict_policy: self.conflict_policy.unwrap_or_default(),
        }
    }

    pub fn tuning(&self) -> S3Tuning {
        S3Tuning {
            part_size: self.part_size,
            multipart_threshold: self.multipart_threshold,
            multipart_copy_threshold: self.multipart_copy_threshold,
            list_mode: self.list_mode.unwrap_or_default(),
            max_parts: None,
            object_tags: self.object_tags.unwrap_or_default(),
        }
    }

    pub fn queueing(&self) -> bool {
        self.queueing.unwrap_or(true)
    }

    pub fn log_level(&self) -> LogLevel {
        self.log_level.unwrap_or_default()
    }

    /// What is wrong with these values, each as a sentence.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.concurrency == Some(0) {
            out.push("concurrency must be at least 1".to_string());
        }
        if self.bytes_per_second == Some(0) {
            out.push("bytes_per_second must be at least 1".to_string());
        }
        if let Some(p) = self
            .part_size
            .and_then(|n| super::units::part_size_problem(n, &n.to_string()))
        {
            out.push(format!("part_size: {p}"));
        }
        if let Err(e) = self.engine().filter() {
            out.push(e.to_string());
        }
        if let Some(Err(e)) = self.max_delete.as_deref().map(str::parse::<MaxDelete>) {
            out.push(e);
        }
        out
    }
}

pub const LOCK_KEYS: &[&str] = &["kind", "location", "lease_seconds"];
pub const RETENTION_KEYS: &[&str] = &["history_days", "max_reports"];

/// The `[retention]` table: how long the daemon keeps execution records and
/// how many per-object reports (see `task::retention`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct RetentionConfig {
    /// Execution records (with their report and log files) that ended more
    /// than this many days ago are deleted; 0: kept forever.
    #[serde(default, deserialize_with = "history_days")]
    pub history_days: Option<u32>,
    /// Per task, only the newest this many ended executions keep their
    /// per-object report file; 0: every report is kept.
    #[serde(default, deserialize_with = "max_reports")]
    pub max_reports: Option<u32>,
}

/// DataSync keeps a task's execution history for 30 days.
pub const DEFAULT_HISTORY_DAYS: u32 = 30;
/// A report holds a line per object: a 10 M-object task writes gigabytes
/// per execution, so only the last few are kept to look into.
pub const DEFAULT_MAX_REPORTS: u32 = 10;

impl RetentionConfig {
    pub fn history_days(&self) -> u32 {
        self.history_days.unwrap_or(DEFAULT_HISTORY_DAYS)
    }

    pub fn max_reports(&self) -> u32 {
        self.max_reports.unwrap_or(DEFAULT_MAX_REPORTS)
    }
}

/// The `[lock]` table: where S3 locks live, and whether every task uses one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct LockConfig {
    /// The default for tasks that do not say (`local` when unset).
    pub kind: Option<LockKind>,
    /// An S3 location (name or `s3://bucket/prefix`) holding the lock object.
    pub location: Option<String>,
    /// How long a taken lock stays valid without renewal: a crashed host's
    /// lock is free after this long.
    pub lease_seconds: Option<u64>,
}

/// A lease long enough that renewals (every third of it) survive a slow
/// request or two, short enough that a crashed host blocks others briefly.
pub const DEFAULT_LEASE_SECONDS: u64 = 60;

/// A `[[mount]]`: a location shown as a directory (the mount layer reads it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MountConfig {
    /// A location name or `s3://bucket[/prefix]`.
    pub location: String,
    /// The mount point (absolute).
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
    /// How long file and directory metadata is trusted: seconds, or a
    /// string such as "500ms", "2s", "1m".
    #[serde(default, deserialize_with = "duration")]
    pub metadata_ttl: Option<Duration>,
    /// Bytes of the data cache: a number, or "512MiB", "2GiB", "100MB".
    #[serde(default, deserialize_with = "byte_size")]
    pub cache_size: Option<u64>,
    pub cache_dir: Option<PathBuf>,
    #[serde(default)]
    pub allow_other: bool,
    /// As `--allow-root` (exclusive with `allow_other`; the mount refuses both).
    #[serde(default)]
    pub allow_root: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Octal, as a string ("0644") or a TOML octal number (0o644).
    #[serde(default, deserialize_with = "mode")]
    pub file_mode: Option<u32>,
    #[serde(default, deserialize_with = "mode")]
    pub dir_mode: Option<u32>,
    /// As `--listing-attributes`: no HEAD per file for stored metadata.
    #[serde(default)]
    pub listing_attributes: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = TaskOptionsConfig {
            concurrency: Some(4),
            include: Some("/a".into()),
            ..Default::default()
        };
        let over = TaskOptionsConfig {
            concurrency: Some(8),
            queueing: Some(false),
            ..Default::default()
        };
        let m = base.overridden_by(&over);
        assert_eq!(m.concurrency, Some(8));
        assert_eq!(m.include.as_deref(), Some("/a"));
        assert!(!m.queueing());
        assert!(base.queueing());
    }
}
