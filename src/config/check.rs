//! Reading the config file while collecting EVERY problem with its line
//! (what `syncmount config check` prints): TOML syntax, unknown keys, wrong
//! types, locations with neither or both of bucket and path, invalid role
//! ARNs, tasks naming missing locations, bad schedules or options, a task
//! whose source and destination overlap, two tasks whose destinations
//! overlap, and mounts of unknown locations or at relative paths.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::spec::S3Overrides;
use super::tables::{
    LockConfig, LockKind, RetentionConfig, TaskConfig, TaskOptionsConfig, LOCATION_KEYS, LOCK_KEYS,
    MOUNT_KEYS, OPTION_KEYS, RETENTION_KEYS, TASK_KEYS,
};
use super::{line_of, Config, LocationConfig, MountConfig};
use crate::policy::validate::{parse_iam_arn, PrincipalKind};
use crate::task::schedule::Schedule;

/// One problem of a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

/// Tables that appear once (`[lock]`); the others are arrays (`[[task]]`).
const SINGLE_TABLES: &[&str] = &["lock", "retention"];

/// How a table is written: `[lock]`, `[[task]]`.
fn label(kind: &str) -> String {
    if SINGLE_TABLES.contains(&kind) {
        format!("[{kind}]")
    } else {
        format!("[[{kind}]]")
    }
}

/// The line of each key of one table.
type KeyLines = BTreeMap<String, usize>;

struct Reader<'t> {
    text: &'t str,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.problems.push(Problem {
            line: line_of(self.text, span.start),
            message: message.into(),
        });
    }

    fn line(&mut self, line: usize, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }

    /// The tables of one `[[kind]]` array with only `allowed` keys kept
    /// (the others reported), each with the lines of its keys.
    fn tables<'i>(
        &mut self,
        kind: &str,
        value: &Spanned<DeValue<'i>>,
        allowed: &[&str],
    ) -> Vec<(Spanned<DeValue<'i>>, KeyLines)> {
        let Some(items) = value.get_ref().as_array() else {
            self.at(
                value.span(),
                format!("`{kind}` must be an array of tables: write [[{kind}]]"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let Some(table) = item.get_ref().as_table() else {
                self.at(
                    item.span(),
                    format!("each `{kind}` must be a table: write [[{kind}]]"),
                );
                continue;
            };
            let mut kept = DeTable::new();
            let mut lines = KeyLines::new();
            for (k, v) in table.iter() {
                let name = k.get_ref().as_ref();
                if allowed.contains(&name) {
                    kept.insert(k.clone(), v.clone());
                    lines.insert(name.to_string(), line_of(self.text, k.span().start));
                } else {
                    self.at(
                        k.span(),
                        format!(
                            "unknown key `{name}` in {}; expected one of: {}",
                            label(kind),
                            allowed.join(", ")
                        ),
                    );
                }
            }
            out.push((Spanned::new(item.span(), DeValue::Table(kept)), lines));
        }
        out
    }

    /// A single `[kind]` table as a `T`, read as a one-element array of
    /// tables (so unknown keys and bad values are reported the same way).
    fn single<T: DeserializeOwned>(
        &mut self,
        kind: &str,
        value: &Spanned<DeValue<'_>>,
        allowed: &[&str],
    ) -> Option<(Spanned<T>, KeyLines)> {
        let mut one = toml::de::DeArray::new();
        one.push(value.clone());
        let wrapped = Spanned::new(value.span(), DeValue::Array(one));
        let (t, lines) = self.tables(kind, &wrapped, allowed).into_iter().next()?;
        Some((self.typed::<T>(&t, kind)?, lines))
    }

    /// The table as a `T`. A wrong value is reported and its key dropped,
    /// then the rest is tried again, so every bad value of a table is
    /// reported and the table is still checked for everything else.
    fn typed<T: DeserializeOwned>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        kind: &str,
    ) -> Option<Spanned<T>> {
        let mut current = value.clone();
        loop {
            let e = match T::deserialize(ValueDeserializer::from(current.clone())) {
                Ok(t) => return Some(Spanned::new(value.span(), t)),
                Err(e) => e,
            };
            let span = e.span().unwrap_or(value.span());
            self.at(span.clone(), format!("{}: {}", label(kind), e.message()));
            let DeValue::Table(table) = current.get_mut() else {
                return None;
            };
            let culprit = table
                .iter()
                .find(|(_, v)| v.span().start <= span.start && span.end <= v.span().end)
                .map(|(k, _)| k.clone());
            match culprit {
                Some(k) if span != value.span() => {
                    table.remove(&k);
                }
                _ => return None,
            }
        }
    }
}

/// Reads `text`: the config (with whatever could be read) and every problem,
/// in line order.
pub fn read(text: &str) -> (Config, Vec<Problem>) {
    let mut r = Reader {
        text,
        problems: Vec::new(),
    };
    let (doc, errors) = DeTable::parse_recoverable(text);
    for e in &errors {
        r.at(e.span().unwrap_or(0..0), e.message().to_string());
    }
    let mut config = Config::default();
    let (mut loc_lines, mut task_lines, mut mount_lines) = (Vec::new(), Vec::new(), Vec::new());
    let mut lock_lines = KeyLines::new();
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "location" => {
                for (t, lines) in r.tables("location", value, LOCATION_KEYS) {
                    if let Some(l) = r.typed::<LocationConfig>(&t, "location") {
                        config.location.push(l);
                        loc_lines.push(lines);
                    }
                }
            }
            "task" => {
                let mut allowed = TASK_KEYS.to_vec();
                allowed.extend_from_slice(OPTION_KEYS);
                for (t, lines) in r.tables("task", value, &allowed) {
                    let head = r.typed::<TaskConfig>(&t, "task");
                    let options = r.typed::<TaskOptionsConfig>(&t, "task");
                    if let (Some(mut head), Some(options)) = (head, options) {
                        head.get_mut().options = options.into_inner();
                        config.task.push(head);
                        task_lines.push(lines);
                    }
                }
            }
            "mount" => {
                for (t, lines) in r.tables("mount", value, MOUNT_KEYS) {
                    if let Some(m) = r.typed::<MountConfig>(&t, "mount") {
                        config.mount.push(m);
                        mount_lines.push(lines);
                    }
                }
            }
            "lock" => {
                if let Some((l, lines)) = r.single::<LockConfig>("lock", value, LOCK_KEYS) {
                    config.lock = Some(l);
                    lock_lines = lines;
                }
            }
            "retention" => {
                if let Some((t, _)) = r.single::<RetentionConfig>("retention", value, RETENTION_KEYS) {
                    config.retention = t.into_inner();
                }
            }
            other => r.at(
                key.span(),
                format!(
                    "unknown key `{other}`; expected [[location]], [[task]], [[mount]] tables, [lock] or [retention]"
                ),
            ),
        }
    }
    check_locations(&mut r, &config, &loc_lines);
    check_tasks(&mut r, &config, &task_lines);
    check_mounts(&mut r, &config, &mount_lines);
    check_lock(&mut r, &config, &lock_lines);
    r.problems.sort_by_key(|p| p.line);
    (config, r.problems)
}

/// The line of `key` in a table, else the table's own line.
fn key_line(text: &str, lines: &KeyLines, span: &Range<usize>, key: &str) -> usize {
    lines
        .get(key)
        .copied()
        .unwrap_or_else(|| line_of(text, span.start))
}

fn check_locations(r: &mut Reader<'_>, config: &Config, lines: &[KeyLines]) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (loc, keys) in config.location.iter().zip(lines) {
        let l = loc.get_ref();
        let at = |k: &str| key_line(r.text, keys, &loc.span(), k);
        let (name_line, arn_line, table_line) = (
            at("name"),
            at("role_arn"),
            line_of(r.text, loc.span().start),
        );
        if let Some(first) = seen.get(l.name.as_str()) {
            r.line(name_line, format!("a second location named `{}` (the first is on line {first}); names must be unique", l.name));
        } else {
            seen.insert(&l.name, name_line);
        }
        if let Err(m) = l.kind() {
            r.line(table_line, m);
        }
        if let Some(arn) = &l.role_arn {
            if let Err(e) = parse_iam_arn(
                arn,
                &format!("location `{}`: role_arn", l.name),
                &[PrincipalKind::Role],
            ) {
                r.line(arn_line, e.to_string());
            }
        }
    }
}

fn check_tasks(r: &mut Reader<'_>, config: &Config, lines: &[KeyLines]) {
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    // Destinations seen so far: (task, line, place).
    let mut dests = Vec::new();
    for (task, keys) in config.task.iter().zip(lines) {
        let t = task.get_ref();
        let at = |k: &str| key_line(r.text, keys, &task.span(), k);
        let name_line = at("name");
        if let Some(first) = names.get(t.name.as_str()) {
            r.line(
                name_line,
                format!(
                    "a second task named `{}` (the first is on line {first}); names must be unique",
                    t.name
                ),
            );
        } else {
            names.insert(&t.name, name_line);
        }
        if let Some(s) = &t.schedule {
            if let Err(e) = Schedule::parse(s) {
                r.line(at("schedule"), format!("task `{}`: {e}", t.name));
            }
        }
        for p in t.options.problems() {
            r.line(name_line, format!("task `{}`: {p}", t.name));
        }
        if t.auto_disable_after.is_some() && t.schedule.is_none() {
            r.line(
                at("auto_disable_after"),
                format!("task `{}`: auto_disable_after has no meaning without a schedule (it disables the schedule after repeated failures); add schedule = \"…\" or remove it", t.name),
            );
        }
        for (key, p) in hook_problems(t) {
            r.line(at(key), format!("task `{}`: {p}", t.name));
        }
        for p in direction_problems(t) {
            r.line(name_line, format!("task `{}`: {p}", t.name));
        }
        if config.lock_kind(&t.options) == LockKind::S3
            && config
                .lock
                .as_ref()
                .and_then(|l| l.get_ref().location.as_ref())
                .is_none()
        {
            r.line(at("lock"), format!("task `{}`: an S3 lock needs a [lock] table naming the S3 location that holds it (location = \"…\")", t.name));
        }
        let src = config.task_location(&t.source, &format!("task `{}`: source", t.name));
        let dst = config.task_location(&t.destination, &format!("task `{}`: destination", t.name));
        if let Err(m) = &src {
            r.line(at("source"), m.clone());
        }
        let dst = match dst {
            Ok(d) => d,
            Err(m) => {
                r.line(at("destination"), m);
                continue;
            }
        };
        if let Ok(s) = &src {
            if super::spec::overlap(s, &dst) {
                r.line(at("destination"), format!("task `{}`: source and destination overlap (one is inside the other); pick separate folders", t.name));
            }
        }
        // A two-way task writes both of its sides.
        let mut written = vec![(
            dst.place(&S3Overrides::default()),
            at("destination"),
            "destination",
        )];
        if let (true, Ok(s)) = (t.is_two_way(), &src) {
            written.push((
                s.place(&S3Overrides::default()),
                at("source"),
                "source (a two-way task writes it)",
            ));
        }
        for (place, line, what) in written {
            for (other, other_line, other_place) in &dests {
                if place.overlaps(other_place) {
                    r.line(line, format!(
                        "task `{}`: {what} {place} overlaps the destination of task `{other}` (line {other_line}); tasks sharing a bucket need separate folders",
                        t.name
                    ));
                }
            }
            dests.push((t.name.clone(), line, place));
        }
    }
}

/// What is wrong with a task's `on_end_*` settings, by key.
fn hook_problems(t: &TaskConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if t.on_end_timeout == Some(std::time::Duration::ZERO) {
        out.push((
            "on_end_timeout",
            "on_end_timeout must be more than 0 (how long each on_end command may run)".into(),
        ));
    }
    for (key, set) in [
        ("on_end_timeout", t.on_end_timeout.is_some()),
        ("on_end_inherit_env", t.on_end_inherit_env),
    ] {
        if set && t.on_end.is_empty() {
            out.push((
                key,
                format!(
                    "{key} has no meaning without on_end = [\"…\"]; add the hooks or remove it"
                ),
            ));
        }
    }
    out
}

/// Options that mean nothing for the task's direction.
fn direction_problems(t: &crate::config::TaskConfig) -> Vec<String> {
    let o = &t.options;
    const TWO_WAY: &str = "a two-way task (it copies what changed on either side and propagates deletions by its own rules)";
    const ONE_WAY: &str = "a one-way task (set direction = \"two-way\" for it)";
    const KEEPS: &str = "a one-way task that keeps deleted files (it guards deletions: set preserve_deleted_files = \"remove\", or direction = \"two-way\")";
    let removes = o.preserve_deleted_files == Some(crate::engine::diff::PreserveDeleted::Remove);
    let wrong = if t.is_two_way() {
        vec![
            ("transfer_mode", o.transfer_mode.is_some(), TWO_WAY),
            ("overwrite", o.overwrite.is_some(), TWO_WAY),
            (
                "preserve_deleted_files",
                o.preserve_deleted_files.is_some(),
                TWO_WAY,
            ),
        ]
    } else {
        vec![
            ("conflict_policy", o.conflict_policy.is_some(), ONE_WAY),
            ("max_delete", o.max_delete.is_some() && !removes, KEEPS),
            ("force", o.force.is_some() && !removes, KEEPS),
        ]
    };
    wrong
        .into_iter()
        .filter(|(_, is_set, _)| *is_set)
        .map(|(k, _, wrong_for)| format!("`{k}` has no meaning in {wrong_for}"))
        .collect()
}

fn check_mounts(r: &mut Reader<'_>, config: &Config, lines: &[KeyLines]) {
    let mut paths: Vec<(std::path::PathBuf, usize)> = Vec::new();
    for (m, keys) in config.mount.iter().zip(lines) {
        let mc = m.get_ref();
        let at = |k: &str| key_line(r.text, keys, &m.span(), k);
        if let Err(e) = config.task_location(&mc.location, "mount: location") {
            r.line(at("location"), e);
        }
        if mc.allow_other && mc.allow_root {
            r.line(
                at("allow_root"),
                "mount: allow_other and allow_root cannot both be set (allow_other lets every user in, allow_root only root and the owner); choose one".to_string(),
            );
        }
        let line = at("path");
        if !mc.path.is_absolute() {
            r.line(
                line,
                format!("mount path `{}` must be absolute", mc.path.display()),
            );
        }
        for (other, other_line) in &paths {
            if mc.path.starts_with(other) || other.starts_with(&mc.path) {
                r.line(
                    line,
                    format!(
                        "mount path `{}` overlaps the mount at `{}` (line {other_line})",
                        mc.path.display(),
                        other.display()
                    ),
                );
            }
        }
        paths.push((mc.path.clone(), line));
    }
}

fn check_lock(r: &mut Reader<'_>, config: &Config, lines: &KeyLines) {
    let Some(lock) = &config.lock else { return };
    let l = lock.get_ref();
    let at = |k: &str| key_line(r.text, lines, &lock.span(), k);
    if let Some(loc) = &l.location {
        match config.task_location(loc, "[lock] location") {
            Ok(super::LocationKind::S3(_)) => {}
            Ok(super::LocationKind::Local(_)) => r.line(
                at("location"),
                format!(
                    "[lock] location `{loc}` is a local directory; an S3 lock lives in a bucket"
                ),
            ),
            Err(e) => r.line(at("location"), e),
        }
    } else if l.kind == Some(LockKind::S3) {
        r.line(
            at("kind"),
            "[lock] kind = \"s3\" needs location = \"…\" (the S3 location that holds the lock)",
        );
    }
    let max = crate::config::units::MAX_DURATION.as_secs();
    if let Some(n) = l.lease_seconds.filter(|n| *n == 0 || *n > max) {
        r.line(
            at("lease_seconds"),
            format!("[lock] lease_seconds `{n}`: must be from 1 to {max}"),
        );
    }
}
