//! Readers of config values with messages naming the bad value: clap
//! value enums in either spelling, durations, byte sizes, octal modes and
//! counts. Used by the typed tables (tables.rs) through
//! `#[serde(deserialize_with = …)]`.

use std::time::Duration;

use serde::{de::Error as _, Deserialize, Deserializer};

/// Reads a clap value enum from its CLI spelling or DataSync's
/// (`only-files-transferred`, `ONLY_FILES_TRANSFERRED`).
pub(super) fn value_enum<'de, D: Deserializer<'de>, T: clap::ValueEnum>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let norm = s.to_ascii_lowercase().replace('_', "-");
    T::from_str(&norm, true).map(Some).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        D::Error::custom(format!("`{s}` is not one of: {}", names.join(", ")))
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Int(u64),
    Float(f64),
    Text(String),
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    named_duration(d, "")
}

/// `on_end_timeout`: a duration, its key named in the error.
pub(super) fn on_end_timeout<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    named_duration(d, "on_end_timeout ")
}

/// A duration; an error starts with `prefix` (the key, where the caller
/// wants it named).
fn named_duration<'de, D: Deserializer<'de>>(
    d: D,
    prefix: &str,
) -> Result<Option<Duration>, D::Error> {
    let parsed = match Option::<NumberOrText>::deserialize(d)? {
        None => return Ok(None),
        Some(NumberOrText::Int(n)) => super::units::duration_from_secs(n as f64, &n.to_string()),
        Some(NumberOrText::Float(f)) => super::units::duration_from_secs(f, &f.to_string()),
        Some(NumberOrText::Text(s)) => super::units::parse_duration(&s),
    };
    parsed
        .map(Some)
        .map_err(|e| D::Error::custom(format!("{prefix}{e}")))
}

/// `on_end_inherit_env`: true or false, its key named in the error.
pub(super) fn on_end_inherit_env<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum FlagOrOther {
        Flag(bool),
        Other(toml::Value),
    }
    match FlagOrOther::deserialize(d)? {
        FlagOrOther::Flag(b) => Ok(b),
        FlagOrOther::Other(v) => Err(D::Error::custom(format!(
            "on_end_inherit_env `{v}`: expected true or false"
        ))),
    }
}

/// A whole number from 0 up, for the key `key` (named in the error, with
/// `what` it counts and what 0 means).
pub(super) fn count<'de, D: Deserializer<'de>>(
    d: D,
    key: &str,
    what: &str,
    zero: &str,
) -> Result<Option<u32>, D::Error> {
    let v = match Option::<NumberOrText>::deserialize(d)? {
        None => return Ok(None),
        Some(v) => v,
    };
    let given = match v {
        NumberOrText::Int(n) => match u32::try_from(n) {
            Ok(n) => return Ok(Some(n)),
            Err(_) => n.to_string(),
        },
        NumberOrText::Float(f) => f.to_string(),
        NumberOrText::Text(s) => format!("\"{s}\""),
    };
    Err(D::Error::custom(format!(
        "{key} `{given}`: expected {what}, a whole number from 0 (0: {zero})"
    )))
}

pub(super) fn auto_disable_after<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count(
        d,
        "auto_disable_after",
        "a number of failed executions",
        "never",
    )
}

pub(super) fn history_days<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count(
        d,
        "history_days",
        "a number of days",
        "records are kept forever",
    )
}

pub(super) fn max_reports<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    count(
        d,
        "max_reports",
        "a number of reports per task",
        "every report is kept",
    )
}

pub(super) fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<NumberOrText>::deserialize(d)? {
        None => Ok(None),
        Some(NumberOrText::Int(n)) => Ok(Some(n)),
        Some(NumberOrText::Text(s)) => super::units::parse_size(&s)
            .map(Some)
            .map_err(D::Error::custom),
        Some(NumberOrText::Float(f)) => Err(D::Error::custom(format!(
            "`{f}` is not a whole number of bytes"
        ))),
    }
}

pub(super) fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let (m, given) = match Option::<NumberOrText>::deserialize(d)? {
        None => return Ok(None),
        Some(NumberOrText::Int(n)) => (u32::try_from(n).ok(), format!("{n:o} (octal)")),
        Some(NumberOrText::Text(s)) => {
            return super::units::parse_mode(&s)
                .map(Some)
                .map_err(D::Error::custom)
        }
        Some(NumberOrText::Float(f)) => (None, f.to_string()),
    };
    m.filter(|m| *m <= 0o7777).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "mode `{given}`: a mode is octal, 0 to 7777 (e.g. \"0644\" or 0o644)"
        ))
    })
}
