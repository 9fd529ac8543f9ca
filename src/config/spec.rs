//! What a location spec denotes, and opening it: `s3://bucket[/prefix]`, a
//! local path, or (through [`Config::resolve`]) the name of a configured
//! location. Shared by `sync`, `location check`, task executions and
//! `config check`, so every command reads a spec the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Config, LocationKind};
use crate::location::local::LocalLocation;
use crate::location::s3::{ListMode, S3Config, S3Location};
use crate::location::{Location, LocationError, Place};

/// S3 connection settings given outside the location itself (flags, task
/// options); each one set overrides what the location says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Overrides {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub storage_class: Option<String>,
    pub sse: Option<crate::location::s3_settings::Sse>,
    pub sse_kms_key_id: Option<String>,
    pub requester_pays: Option<bool>,
    pub expected_bucket_owner: Option<String>,
}

/// S3 transfer tuning of one execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct S3Tuning {
    pub part_size: Option<u64>,
    pub multipart_threshold: Option<u64>,
    pub multipart_copy_threshold: Option<u64>,
    pub list_mode: ListMode,
    /// Most parts per upload (tests only; S3's limit otherwise).
    pub max_parts: Option<u64>,
    pub object_tags: crate::location::s3::ObjectTags,
}

impl LocationKind {
    /// A spec that is not a configured name: `s3://…` or a local path.
    pub fn parse(spec: &str, what: &str) -> Result<LocationKind, String> {
        if spec.starts_with("s3://") {
            return S3Config::from_url(spec)
                .map(LocationKind::S3)
                .ok_or_else(|| format!("{what} `{spec}`: expected s3://bucket[/prefix]"));
        }
        if spec.contains("://") {
            return Err(format!(
                "{what} `{spec}`: only local paths and s3:// URLs are supported"
            ));
        }
        Ok(LocationKind::Local(PathBuf::from(spec)))
    }

    /// Where it is, as the guards compare places (no connection needed):
    /// the same value the opened location's `place()` gives.
    pub fn place(&self, overrides: &S3Overrides) -> Place {
        match self {
            LocationKind::S3(cfg) => Place::S3 {
                endpoint: overrides
                    .endpoint_url
                    .clone()
                    .or_else(|| cfg.endpoint_url.clone())
                    .unwrap_or_else(|| "aws".into()),
                bucket: cfg.bucket.clone(),
                prefix: cfg.prefix.clone(),
            },
            LocationKind::Local(p) => Place::Local(
                std::fs::canonicalize(p)
                    .or_else(|_| std::path::absolute(p))
                    .unwrap_or_else(|_| p.clone()),
            ),
        }
    }

    /// Opens it; flags override what the config file says.
    pub async fn open(
        self,
        side: &S3Overrides,
        tuning: S3Tuning,
        journal: PathBuf,
        is_src: bool,
    ) -> Result<Arc<dyn Location>, LocationError> {
        match self {
            LocationKind::Local(path) => {
                if is_src && !path.is_dir() {
                    return Err(LocationError::Config {
                        location: path.display().to_string(),
                        message: "the source is not a directory".into(),
                    });
                }
                Ok(Arc::new(LocalLocation::new(path)?))
            }
            LocationKind::S3(mut cfg) => {
                cfg.region = side.region.clone().or(cfg.region);
                cfg.endpoint_url = side.endpoint_url.clone().or(cfg.endpoint_url);
                cfg.profile = side.profile.clone().or(cfg.profile);
                cfg.role_arn = side.role_arn.clone().or(cfg.role_arn);
                cfg.storage_class = side.storage_class.clone().or(cfg.storage_class);
                cfg.sse = side.sse.or(cfg.sse);
                cfg.sse_kms_key_id = side.sse_kms_key_id.clone().or(cfg.sse_kms_key_id);
                cfg.requester_pays = side.requester_pays.unwrap_or(cfg.requester_pays);
                cfg.expected_bucket_owner = side
                    .expected_bucket_owner
                    .clone()
                    .or(cfg.expected_bucket_owner);
                cfg.part_size = tuning.part_size;
                cfg.multipart_threshold = tuning.multipart_threshold;
                cfg.multipart_copy_threshold = tuning.multipart_copy_threshold;
                cfg.list_mode = tuning.list_mode;
                cfg.max_parts = tuning.max_parts;
                cfg.object_tags = tuning.object_tags;
                Ok(Arc::new(S3Location::connect(cfg, Some(journal)).await?))
            }
        }
    }
}

/// Two specs that would read what they write (same place, or one inside the other).
pub fn overlap(a: &LocationKind, b: &LocationKind) -> bool {
    let none = S3Overrides::default();
    a.place(&none).overlaps(&b.place(&none))
}

impl Config {
    /// A spec as written: `s3://…`, a path, or the name of a configured location.
    pub fn resolve(&self, spec: &str, what: &str) -> Result<LocationKind, String> {
        let is_name = !spec.contains('/') && !spec.contains(':');
        if let Some(loc) = self.location(spec).filter(|_| is_name) {
            if Path::new(spec).exists() {
                return Err(format!(
                    "{what} `{spec}` is both a location in the config file and a path here; write ./{spec} for the path"
                ));
            }
            return loc.kind();
        }
        LocationKind::parse(spec, what)
    }

    /// A task's or mount's location: a configured name, `s3://…` or an
    /// absolute path (never relative: the daemon's folder is not the user's).
    pub fn task_location(&self, spec: &str, what: &str) -> Result<LocationKind, String> {
        if spec.contains("://") {
            return LocationKind::parse(spec, what);
        }
        if spec.starts_with('/') {
            return Ok(LocationKind::Local(spec.into()));
        }
        match self.location(spec) {
            Some(l) => l.kind(),
            None => Err(format!(
                "{what} `{spec}` is not a location in this file (nor an s3:// URL or an absolute path)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_locations_are_detected() {
        let s = |u: &str| LocationKind::parse(u, "x").unwrap();
        assert!(overlap(&s("s3://b/a"), &s("s3://b/a/b")));
        assert!(overlap(&s("s3://b"), &s("s3://b/x")));
        assert!(!overlap(&s("s3://b/a"), &s("s3://b/ab")));
        assert!(!overlap(&s("s3://b/a"), &s("s3://c/a")));
        assert!(overlap(&s("/tmp/x"), &s("/tmp/x/y")));
        assert!(!overlap(&s("/tmp/x"), &s("/tmp/xy")));
    }

    #[test]
    fn unknown_schemes_are_errors() {
        assert!(LocationKind::parse("gs://b", "source")
            .unwrap_err()
            .contains("source `gs://b`"));
        assert!(LocationKind::parse("s3://", "source").is_err());
    }

    #[test]
    fn a_place_uses_the_overriding_endpoint() {
        let s = LocationKind::parse("s3://b/p", "x").unwrap();
        let o = S3Overrides {
            endpoint_url: Some("http://h:1".into()),
            ..Default::default()
        };
        assert_eq!(
            s.place(&o),
            Place::S3 {
                endpoint: "http://h:1".into(),
                bucket: "b".into(),
                prefix: "p/".into()
            }
        );
    }
}
