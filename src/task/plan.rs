//! A task resolved for one execution ([`Plan`]): its two locations, where
//! the guards see them, its options after `--override key=value`, and
//! which lock it takes.

use std::time::Duration;

use super::error::TaskError;
use super::guard::Claim;
use crate::config::spec::S3Overrides;
use crate::config::tables::{DEFAULT_LEASE_SECONDS, OPTION_KEYS};
use crate::config::{Config, LocationKind, LockKind, TaskConfig, TaskOptionsConfig};
use crate::location::Place;

/// `key=value` overrides of a task's options. Values are TOML (`4`,
/// `false`, `"x"`); a bare word is taken as a string.
pub fn parse_overrides(list: &[String]) -> Result<TaskOptionsConfig, TaskError> {
    let mut doc = String::new();
    for given in list {
        let bad = |message: String| TaskError::BadOverride {
            given: given.clone(),
            message,
        };
        let (key, value) = given
            .split_once('=')
            .ok_or_else(|| bad("expected key=value".into()))?;
        let key = key.trim();
        if !OPTION_KEYS.contains(&key) {
            return Err(bad(format!(
                "unknown option `{key}`; expected one of: {}",
                OPTION_KEYS.join(", ")
            )));
        }
        let value = value.trim();
        let line = if toml::from_str::<toml::Table>(&format!("v = {value}")).is_ok() {
            format!("{key} = {value}\n")
        } else {
            format!("{key} = {}\n", toml::Value::String(value.to_string()))
        };
        let one: TaskOptionsConfig =
            toml::from_str(&line).map_err(|e| bad(e.message().to_string()))?;
        if let Some(p) = one.problems().first() {
            return Err(bad(p.clone()));
        }
        doc.push_str(&line);
    }
    toml::from_str(&doc).map_err(|e| TaskError::BadOverride {
        given: list.join(" "),
        message: e.message().to_string(),
    })
}

/// A task resolved for one execution: its locations and options.
pub struct Plan {
    pub task: TaskConfig,
    pub options: TaskOptionsConfig,
    pub source: LocationKind,
    pub destination: LocationKind,
    pub source_place: Place,
    pub destination_place: Place,
    /// With `lock = "s3"`: the location holding the lock and its lease.
    pub s3_lock: Option<(LocationKind, Duration)>,
}

impl Plan {
    pub fn new(config: &Config, name: &str, overrides: &[String]) -> Result<Plan, TaskError> {
        let task = config
            .task(name)
            .cloned()
            .ok_or_else(|| TaskError::UnknownTask(name.to_string()))?;
        let options = task.options.overridden_by(&parse_overrides(overrides)?);
        let invalid = |message: String| TaskError::Invalid {
            task: name.to_string(),
            message,
        };
        let source = config
            .task_location(&task.source, "source")
            .map_err(invalid)?;
        let destination = config
            .task_location(&task.destination, "destination")
            .map_err(invalid)?;
        let none = S3Overrides::default();
        let s3_lock = match config.lock_kind(&options) {
            LockKind::Local => None,
            LockKind::S3 => {
                let lock = config
                    .lock
                    .as_ref()
                    .map(|l| l.get_ref().clone())
                    .unwrap_or_default();
                let loc = lock.location.ok_or_else(|| {
                    invalid(
                        "lock = \"s3\" needs a [lock] table with the S3 location that holds it"
                            .into(),
                    )
                })?;
                let kind = config
                    .task_location(&loc, "[lock] location")
                    .map_err(invalid)?;
                let lease =
                    Duration::from_secs(lock.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS).max(1));
                Some((kind, lease))
            }
        };
        Ok(Plan {
            s3_lock,
            source_place: source.place(&none),
            destination_place: destination.place(&none),
            task,
            options,
            source,
            destination,
        })
    }

    pub(super) fn claim(&self, id: &str) -> Claim {
        Claim {
            execution_id: id.to_string(),
            pid: std::process::id(),
            source: self.source_place.clone(),
            destination: self.destination_place.clone(),
            two_way: self.task.is_two_way(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_toml_values_or_bare_words() {
        let o = parse_overrides(&[
            "concurrency=4".into(),
            "queueing=false".into(),
            "transfer_mode=all".into(),
            "exclude = \"*.tmp\"".into(),
        ])
        .unwrap();
        assert_eq!(o.concurrency, Some(4));
        assert_eq!(o.queueing, Some(false));
        assert_eq!(o.exclude.as_deref(), Some("*.tmp"));
        assert!(o.transfer_mode.is_some());
    }

    #[test]
    fn bad_overrides_name_what_is_wrong() {
        for (given, why) in [
            ("colour=blue", "unknown option `colour`"),
            ("concurrency", "expected key=value"),
            ("concurrency=0", "at least 1"),
            ("transfer_mode=sometimes", "`sometimes` is not one of"),
            ("concurrency=lots", "concurrency"),
        ] {
            let e = parse_overrides(&[given.into()]).unwrap_err().to_string();
            assert!(e.contains(why), "{given}: {e}");
        }
    }
}
