//! The configuration file (`/etc/syncmount/syncmount.toml`, or `--config`):
//! named `[[location]]` tables that commands accept wherever they take a
//! location, `[[task]]` tables (tables.rs: what to copy where, when, how) and
//! `[[mount]]` tables (the mount layer's). `check.rs` reads the file while
//! collecting every problem with its line; `spec.rs` resolves location specs.
//!
//! ```toml
//! [[location]]
//! name = "photos-src"        # an S3 location: it has a bucket
//! bucket = "src-bucket"
//! prefix = "photos"
//! region = "us-east-1"
//! role_arn = "arn:aws:iam::111111111111:role/syncmount-transfer"
//!
//! [[location]]
//! name = "photos-local"      # a local directory: it has a path
//! path = "/srv/photos"
//! ```
//!
//! Unknown keys, a location with neither or both of `bucket` and `path`, and
//! two locations of one name are errors naming the line.

mod check;
pub mod spec;
pub mod tables;
pub mod units;
mod values;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use check::Problem;
pub use tables::{
    LockConfig, LockKind, LogLevel, MountConfig, RetentionConfig, TaskConfig, TaskOptionsConfig,
};

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/syncmount/syncmount.toml";

#[derive(Clone, Debug, Default)]
pub struct Config {
    pub location: Vec<toml::Spanned<LocationConfig>>,
    pub task: Vec<toml::Spanned<TaskConfig>>,
    /// Read by the mount layer.
    pub mount: Vec<toml::Spanned<MountConfig>>,
    /// Where S3 locks live (`[lock]`).
    pub lock: Option<toml::Spanned<LockConfig>>,
    /// How much execution history the daemon keeps (`[retention]`).
    pub retention: RetentionConfig,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct LocationConfig {
    pub name: String,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    /// S3: storage class of the objects written (`STANDARD_IA`, …).
    pub storage_class: Option<String>,
    /// S3: `aes256` or `aws:kms`.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub requester_pays: Option<bool>,
    /// S3: the account that must own the bucket (12 digits).
    pub expected_bucket_owner: Option<String>,
    pub path: Option<PathBuf>,
}

/// What a location (named, or written as a URL or path) denotes.
// A handful exist at a time (one per configured location): boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationKind {
    S3(crate::location::s3::S3Config),
    Local(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file `{path}`: {message}")]
    Read { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

impl Config {
    /// Reads `path`; a missing file is an empty config only when it is the
    /// default path (nobody asked for it).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(e) => {
                return Err(ConfigError::Read {
                    path: shown,
                    message: e.to_string(),
                })
            }
        };
        Config::parse(&text, &shown)
    }

    /// Reads `text`; the first problem (by line) is the error, naming how
    /// many more there are.
    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let (config, problems) = Config::check(text);
        match problems.first() {
            None => Ok(config),
            Some(p) => {
                let more = match problems.len() - 1 {
                    0 => String::new(),
                    1 => " (and 1 more problem: `syncmount config check` lists all)".to_string(),
                    n => format!(" (and {n} more problems: `syncmount config check` lists all)"),
                };
                Err(ConfigError::Invalid {
                    path: shown.to_string(),
                    line: p.line,
                    message: format!("{}{more}", p.message),
                })
            }
        }
    }

    /// Reads `text`, collecting every problem (in line order) with whatever
    /// could be read.
    pub fn check(text: &str) -> (Config, Vec<Problem>) {
        check::read(text)
    }

    /// Which lock a task's executions take, after its `lock` option and the
    /// `[lock]` table's `kind`.
    pub fn lock_kind(&self, options: &TaskOptionsConfig) -> LockKind {
        options
            .lock
            .or_else(|| self.lock.as_ref().and_then(|l| l.get_ref().kind))
            .unwrap_or_default()
    }

    /// The task of that name.
    pub fn task(&self, name: &str) -> Option<&TaskConfig> {
        self.task
            .iter()
            .map(|t| t.get_ref())
            .find(|t| t.name == name)
    }

    /// The location of that name.
    pub fn location(&self, name: &str) -> Option<&LocationConfig> {
        self.location
            .iter()
            .map(|l| l.get_ref())
            .find(|l| l.name == name)
    }
}

impl LocationConfig {
    /// S3 when it names a bucket, local when it names a path.
    pub fn kind(&self) -> Result<LocationKind, String> {
        match (&self.bucket, &self.path) {
            (Some(bucket), None) => {
                use crate::location::s3_settings as settings;
                let prefix = self.prefix.as_deref().unwrap_or("").trim_matches('/');
                let named = |e: String| format!("location `{}`: {e}", self.name);
                Ok(LocationKind::S3(crate::location::s3::S3Config {
                    bucket: bucket.clone(),
                    prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
                    region: self.region.clone(),
                    endpoint_url: self.endpoint_url.clone(),
                    profile: self.profile.clone(),
                    role_arn: self.role_arn.clone(),
                    storage_class: self.storage_class.as_deref().map(settings::storage_class).transpose().map_err(named)?,
                    sse: self.sse.as_deref().map(settings::Sse::parse).transpose().map_err(named)?,
                    sse_kms_key_id: self.sse_kms_key_id.clone(),
                    requester_pays: self.requester_pays.unwrap_or(false),
                    expected_bucket_owner: self.expected_bucket_owner.as_deref().map(settings::account_id).transpose().map_err(named)?,
                    ..Default::default()
                }))
            }
            (None, Some(path)) => {
                let s3_only = [&self.prefix, &self.region, &self.endpoint_url, &self.profile, &self.role_arn, &self.storage_class, &self.sse, &self.sse_kms_key_id, &self.expected_bucket_owner];
                if s3_only.iter().any(|v| v.is_some()) || self.requester_pays.is_some() {
                    return Err(format!(
                        "location `{}` has a path, so it is local: prefix, region, endpoint_url, profile, role_arn, storage_class, sse, sse_kms_key_id, requester_pays and expected_bucket_owner apply only to S3 locations (with a bucket)",
                        self.name
                    ));
                }
                Ok(LocationKind::Local(path.clone()))
            }
            (Some(_), Some(_)) => Err(format!(
                "location `{}` has both a bucket and a path; an S3 location has `bucket`, a local one `path`",
                self.name
            )),
            (None, None) => Err(format!(
                "location `{}` has neither a bucket nor a path; an S3 location has `bucket`, a local one `path`",
                self.name
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_and_local_locations_are_told_apart_by_bucket_and_path() {
        let c = Config::parse(
            "[[location]]\nname = \"a\"\nbucket = \"b\"\nprefix = \"/p/q/\"\nregion = \"eu-west-1\"\n\n[[location]]\nname = \"l\"\npath = \"/srv/x\"\n",
            "t.toml",
        )
        .unwrap();
        match c.location("a").unwrap().kind().unwrap() {
            LocationKind::S3(s) => {
                assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("b", "p/q/"));
                assert_eq!(s.region.as_deref(), Some("eu-west-1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.location("l").unwrap().kind().unwrap(),
            LocationKind::Local("/srv/x".into())
        );
        assert!(c.location("nope").is_none());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_its_line() {
        let err = Config::parse(
            "[[location]]\nname = \"a\"\npath = \"/x\"\nbuckt = \"b\"\n",
            "t.toml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.toml:4:"), "{text}");
        assert!(text.contains("buckt"), "{text}");
    }

    #[test]
    fn a_location_without_bucket_or_path_and_duplicate_names_are_errors_with_lines() {
        let err = Config::parse("\n\n[[location]]\nname = \"a\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.toml:3:") && err.contains("neither a bucket nor a path"),
            "{err}"
        );
        let dup = "[[location]]\nname = \"a\"\npath = \"/x\"\n[[location]]\nname = \"a\"\npath = \"/y\"\n";
        let err = Config::parse(dup, "t.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:5:") && err.contains("second location named `a`"),
            "{err}"
        );
        let mixed = "[[location]]\nname = \"a\"\npath = \"/x\"\nregion = \"us-east-1\"\n";
        assert!(Config::parse(mixed, "t.toml")
            .unwrap_err()
            .to_string()
            .contains("apply only to S3"));
    }

    #[test]
    fn task_and_mount_tables_are_typed() {
        let c = Config::parse(
            "[[location]]\nname = \"l\"\npath = \"/srv/l\"\n[[task]]\nname = \"t\"\nsource = \"l\"\ndestination = \"s3://b/x\"\nschedule = \"rate(15 minutes)\"\ntransfer_mode = \"ALL\"\nverify_mode = \"none\"\nqueueing = false\n[[mount]]\nlocation = \"l\"\npath = \"/m\"\nread_only = true\nmetadata_ttl = \"500ms\"\ncache_size = \"1GiB\"\nfile_mode = \"0640\"\ndir_mode = 0o750\nuid = 1000\n",
            "t.toml",
        )
        .unwrap();
        let t = c.task("t").unwrap();
        assert_eq!(t.schedule.as_deref(), Some("rate(15 minutes)"));
        assert_eq!(
            t.options.transfer_mode,
            Some(crate::engine::diff::TransferMode::All)
        );
        assert_eq!(
            t.options.verify_mode,
            Some(crate::engine::transfer::VerifyMode::None)
        );
        assert!(!t.options.queueing());
        let m = c.mount[0].get_ref();
        assert!(m.read_only);
        assert_eq!(m.metadata_ttl, Some(std::time::Duration::from_millis(500)));
        assert_eq!(m.cache_size, Some(1 << 30));
        assert_eq!(
            (m.file_mode, m.dir_mode, m.uid),
            (Some(0o640), Some(0o750), Some(1000))
        );
    }

    #[test]
    fn allow_other_and_allow_root_together_are_one_problem_on_the_line_of_allow_root() {
        let text = "[[mount]]\nlocation = \"/srv/a\"\npath = \"/mnt/a\"\nallow_other = true\nallow_root = true\n";
        let (_, problems) = Config::check(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 5);
        assert!(
            problems[0].message.contains("allow_other and allow_root"),
            "{problems:?}"
        );
        let (_, problems) = Config::check(&text.replace("allow_root = true\n", ""));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn two_way_tasks_refuse_one_way_options_and_one_way_tasks_two_way_ones() {
        let two = "[[task]]\nname = \"t\"\nsource = \"/a\"\ndestination = \"/b\"\ndirection = \"two-way\"\nmax_delete = \"10%\"\n";
        let (c, problems) = Config::check(two);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(c.task[0].get_ref().is_two_way());
        let (_, problems) = Config::check(&format!("{two}preserve_deleted_files = \"remove\"\n"));
        assert!(
            problems.iter().any(|p| p
                .message
                .contains("`preserve_deleted_files` has no meaning in a two-way task")),
            "{problems:?}"
        );
        let (_, problems) = Config::check(&two.replace("direction = \"two-way\"\n", ""));
        assert!(
            problems.iter().any(|p| p.message.contains(
                "`max_delete` has no meaning in a one-way task that keeps deleted files"
            )),
            "{problems:?}"
        );
        let (_, problems) = Config::check(&two.replace(
            "direction = \"two-way\"\n",
            "preserve_deleted_files = \"remove\"\nforce = true\n",
        ));
        assert!(problems.is_empty(), "{problems:?}");
        let (_, problems) = Config::check(
            &two.replace("direction = \"two-way\"\n", "conflict_policy = \"newer\"\n"),
        );
        assert!(
            problems.iter().any(|p| p
                .message
                .contains("`conflict_policy` has no meaning in a one-way task")),
            "{problems:?}"
        );
        let (_, problems) = Config::check(&two.replace("10%", "lots"));
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("max_delete `lots`")),
            "{problems:?}"
        );
        let (_, problems) = Config::check(&two.replace("two-way", "sideways"));
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("`sideways` is not one of")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_two_way_task_writes_its_source_too() {
        let text = "[[task]]\nname = \"t1\"\nsource = \"/srv/a\"\ndestination = \"/srv/b\"\ndirection = \"two-way\"\n\n[[task]]\nname = \"t2\"\nsource = \"/srv/c\"\ndestination = \"/srv/a/sub\"\n";
        let (_, problems) = Config::check(text);
        assert!(
            problems.iter().any(|p| p.line == 10
                && p.message
                    .contains("overlaps the destination of task `t1` (line 3)")),
            "{problems:?}"
        );
    }

    #[test]
    fn an_s3_lock_needs_a_lock_table_with_an_s3_location() {
        let text = "[[task]]\nname = \"t\"\nsource = \"/a\"\ndestination = \"/b\"\nlock = \"s3\"\n";
        let (_, problems) = Config::check(text);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, 5);
        assert!(problems[0].message.contains("[lock] table"), "{problems:?}");
        let local = format!("{text}\n[lock]\nlocation = \"/srv/locks\"\nlease_seconds = 0\n");
        let (_, problems) = Config::check(&local);
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [8, 9], "{problems:?}");
        let good = format!("{text}\n[lock]\nlocation = \"s3://locks/guards\"\n");
        let (c, problems) = Config::check(&good);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.lock_kind(&c.task[0].get_ref().options), LockKind::S3);
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "[[location]]\nname = \"a\"\nbucket = \"b\"\nrole_arn = \"arn:aws:iam::12:role/x\"\n\n[[task]]\nname = \"t1\"\nsource = \"nowhere\"\ndestination = \"a\"\nschedule = \"rate(5 fortnights)\"\ncolour = \"blue\"\n\n[[task]]\nname = \"t2\"\nsource = \"/srv/x\"\ndestination = \"s3://b/sub\"\nconcurrency = \"many\"\n\n[[task]]\nname = \"t3\"\nsource = \"/srv/y\"\ndestination = \"s3://b/sub\"\n";
        let (_, problems) = Config::check(text);
        let found: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        let has = |line: usize, what: &str| {
            assert!(
                found.iter().any(|(l, m)| *l == line && m.contains(what)),
                "no problem on line {line} containing `{what}` in {found:#?}"
            )
        };
        has(4, "role_arn");
        has(8, "`nowhere` is not a location");
        has(10, "fortnights");
        has(11, "unknown key `colour`");
        has(17, "many");
        // t2 is still checked although a value of it is wrong.
        has(16, "overlaps the destination of task `t1`");
        has(22, "overlaps the destination of task `t1`");
        has(22, "overlaps the destination of task `t2`");
        assert_eq!(problems.len(), 8, "{found:#?}");
    }

    #[test]
    fn a_missing_default_file_is_an_empty_config_but_a_missing_explicit_one_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let err = Config::load(Some(&d.path().join("none.toml"))).unwrap_err();
        assert!(err.to_string().contains("none.toml"), "{err}");
    }
}
