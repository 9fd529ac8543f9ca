//! The configuration file (`/etc/syncmount/syncmount.toml`, or `--config`):
//! named `[[location]]` tables that commands accept wherever they take a
//! location. `[[task]]` and `[[mount]]` tables are read by the task and mount
//! layers (not part of this module yet) and kept here untouched.
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

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::location::s3::S3Config;

/// Where the config is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/syncmount/syncmount.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub location: Vec<toml::Spanned<LocationConfig>>,
    /// Read by the task layer (issue 4).
    #[serde(default)]
    pub task: Vec<toml::Table>,
    /// Read by the mount layer (issue 3).
    #[serde(default)]
    pub mount: Vec<toml::Table>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocationConfig {
    pub name: String,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub path: Option<PathBuf>,
}

/// What a named location denotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationKind {
    S3(S3Config),
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

    pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: shown.to_string(),
            line: line_of(text, offset),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            invalid(offset, e.message().to_string())
        })?;
        let mut seen: Vec<&str> = Vec::new();
        for loc in &config.location {
            let at = loc.span().start;
            let l = loc.get_ref();
            if seen.contains(&l.name.as_str()) {
                return Err(invalid(
                    at,
                    format!("a second location named `{}`; names must be unique", l.name),
                ));
            }
            seen.push(&l.name);
            l.kind().map_err(|m| invalid(at, m))?;
        }
        Ok(config)
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
                let prefix = self.prefix.as_deref().unwrap_or("").trim_matches('/');
                Ok(LocationKind::S3(S3Config {
                    bucket: bucket.clone(),
                    prefix: if prefix.is_empty() { String::new() } else { format!("{prefix}/") },
                    region: self.region.clone(),
                    endpoint_url: self.endpoint_url.clone(),
                    profile: self.profile.clone(),
                    role_arn: self.role_arn.clone(),
                    ..Default::default()
                }))
            }
            (None, Some(path)) => {
                let s3_only = [&self.prefix, &self.region, &self.endpoint_url, &self.profile, &self.role_arn];
                if s3_only.iter().any(|v| v.is_some()) {
                    return Err(format!(
                        "location `{}` has a path, so it is local: prefix, region, endpoint_url, profile and role_arn apply only to S3 locations (with a bucket)",
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
        let err =
            Config::parse("[[location]]\nname = \"a\"\nbuckt = \"b\"\n", "t.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("t.toml:3:"), "{text}");
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
            err.starts_with("t.toml:4:") && err.contains("second location named `a`"),
            "{err}"
        );
        let mixed = "[[location]]\nname = \"a\"\npath = \"/x\"\nregion = \"us-east-1\"\n";
        assert!(Config::parse(mixed, "t.toml")
            .unwrap_err()
            .to_string()
            .contains("apply only to S3"));
    }

    #[test]
    fn task_and_mount_tables_are_kept_for_their_layers() {
        let c = Config::parse(
            "[[task]]\nname = \"t\"\n[[mount]]\npath = \"/m\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!((c.task.len(), c.mount.len()), (1, 1));
    }

    #[test]
    fn a_missing_default_file_is_an_empty_config_but_a_missing_explicit_one_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let err = Config::load(Some(&d.path().join("none.toml"))).unwrap_err();
        assert!(err.to_string().contains("none.toml"), "{err}");
    }
}
