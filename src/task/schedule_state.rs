//! Whether a task's schedule is enabled, kept as state in the history
//! database (table `schedule_state`), not in the config file: `task disable`
//! and `task enable` change it from any process, and the daemon reads it
//! each time a schedule is due, so a change takes effect at the next
//! firing without a reload. A disabled schedule does not fire; a manual
//! `task start` still runs (as in DataSync).
//!
//! The daemon disables a schedule itself (disabled by SERVICE, DataSync's
//! `DisabledBy`) after `auto_disable_after` consecutive executions ended in
//! ERROR with the same error code ([`failing_streak`], pure). Only
//! executions queued after the last enable count, so `task enable` re-arms
//! the count.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::history::{record, ExecutionRecord, History, HistoryError, COLUMNS, TERMINAL};
use crate::engine::report::{epoch_ms, Status};

/// Who disabled a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DisabledBy {
    /// `syncmount task disable`.
    User,
    /// The daemon, after repeated failures.
    Service,
}

impl DisabledBy {
    fn as_str(self) -> &'static str {
        match self {
            DisabledBy::User => "USER",
            DisabledBy::Service => "SERVICE",
        }
    }

    fn parse(s: &str) -> DisabledBy {
        if s == "SERVICE" {
            DisabledBy::Service
        } else {
            DisabledBy::User
        }
    }
}

/// A disabled schedule: by whom, why, when (epoch ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Disabled {
    pub disabled_by: DisabledBy,
    pub reason: Option<String>,
    pub disabled_ms: u64,
}

/// A task's schedule state as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleState {
    /// Enabled: the executions that count towards an automatic disable are
    /// those of rowid above this (0: never disabled, all count).
    Enabled(i64),
    Disabled(Disabled),
}

impl ScheduleState {
    pub fn disabled(&self) -> Option<&Disabled> {
        match self {
            ScheduleState::Disabled(d) => Some(d),
            ScheduleState::Enabled(_) => None,
        }
    }
}

/// `auto_disable_after` when a task does not set it: a third failure for
/// the same reason is unlikely to be a passing hiccup.
pub const DEFAULT_AUTO_DISABLE_AFTER: u32 = 3;

/// The error code shared by the newest `n` ended executions (newest first
/// in `ended`), when all `n` ended in ERROR with that same code; none when
/// `n` is 0 (never) or the streak is shorter.
pub fn failing_streak(ended: &[ExecutionRecord], n: u32) -> Option<String> {
    let n = n as usize;
    if n == 0 || ended.len() < n {
        return None;
    }
    let code = ended[0].error_code.clone()?;
    ended[..n]
        .iter()
        .all(|r| r.status == Status::Error && r.error_code.as_deref() == Some(code.as_str()))
        .then_some(code)
}

impl History {
    /// Disables `task`'s schedule (replacing an earlier disable).
    pub fn disable_schedule(
        &self,
        task: &str,
        by: DisabledBy,
        reason: Option<&str>,
    ) -> Result<(), HistoryError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO schedule_state (task, status, disabled_by, reason, updated_at) VALUES (?1, 'DISABLED', ?2, ?3, ?4)",
                params![task, by.as_str(), reason, epoch_ms() as i64],
            )
            .map(|_| ())
        })
    }

    /// Enables `task`'s schedule; false when it was not disabled.
    pub fn enable_schedule(&self, task: &str) -> Result<bool, HistoryError> {
        let was = self.schedule_state(task)?.disabled().is_some();
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO schedule_state (task, status, disabled_by, reason, updated_at, since_rowid) VALUES (?1, 'ENABLED', NULL, NULL, ?2, (SELECT COALESCE(MAX(rowid), 0) FROM executions))",
                params![task, epoch_ms() as i64],
            )
            .map(|_| was)
        })
    }

    pub fn schedule_state(&self, task: &str) -> Result<ScheduleState, HistoryError> {
        let row = self.with(|c| {
            c.query_row(
                "SELECT status, disabled_by, reason, updated_at, since_rowid FROM schedule_state WHERE task = ?1",
                params![task],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, i64>(3)? as u64,
                        r.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()
        })?;
        Ok(match row {
            None => ScheduleState::Enabled(0),
            Some((status, by, reason, at, _)) if status == "DISABLED" => {
                ScheduleState::Disabled(Disabled {
                    disabled_by: DisabledBy::parse(by.as_deref().unwrap_or("")),
                    reason,
                    disabled_ms: at,
                })
            }
            Some((_, _, _, _, since)) => ScheduleState::Enabled(since),
        })
    }

    /// The newest `limit` ended executions of `task` recorded after rowid
    /// `since`, newest first.
    fn ended_since(
        &self,
        task: &str,
        since: i64,
        limit: usize,
    ) -> Result<Vec<ExecutionRecord>, HistoryError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM executions WHERE task = ?1 AND rowid > ?2 AND status IN {TERMINAL} ORDER BY queued_at DESC, rowid DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![task, since, limit as i64], record)?;
            rows.collect()
        })
    }

    /// Disables `task`'s enabled schedule when its last `after` executions
    /// (since it was last enabled) ended in ERROR with one error code; the
    /// reason when it did.
    pub fn auto_disable(&self, task: &str, after: u32) -> Result<Option<String>, HistoryError> {
        let since = match self.schedule_state(task)? {
            ScheduleState::Disabled(_) => return Ok(None),
            ScheduleState::Enabled(since) => since,
        };
        let ended = self.ended_since(task, since, after as usize)?;
        let Some(code) = failing_streak(&ended, after) else {
            return Ok(None);
        };
        let reason = format!(
            "{after} consecutive executions ended in ERROR with error code {code} (the last: {})",
            ended[0].execution_id
        );
        self.disable_schedule(task, DisabledBy::Service, Some(&reason))?;
        Ok(Some(reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::history::NewExecution;

    fn failed(h: &History, id: &str, code: &str) {
        h.insert(&NewExecution {
            id,
            task: "t",
            source: "/a",
            destination: "/b",
            pid: 1,
            overrides: &[],
        })
        .unwrap();
        if code.is_empty() {
            h.end(id, Status::Cancelled, None, "cancelled").unwrap();
        } else {
            h.end(id, Status::Error, Some(code), "broken").unwrap();
        }
    }

    #[test]
    fn three_errors_with_one_code_disable_and_another_code_or_a_cancel_breaks_the_streak() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        failed(&h, "e1", "LocationError");
        failed(&h, "e2", "ObjectsFailed");
        failed(&h, "e3", "ObjectsFailed");
        assert_eq!(h.auto_disable("t", 3).unwrap(), None, "two of one code");
        failed(&h, "e4", "");
        failed(&h, "e5", "ObjectsFailed");
        failed(&h, "e6", "ObjectsFailed");
        assert_eq!(h.auto_disable("t", 3).unwrap(), None, "a cancel in between");
        assert_eq!(h.auto_disable("t", 0).unwrap(), None, "0 is never");
        failed(&h, "e7", "ObjectsFailed");
        let why = h.auto_disable("t", 3).unwrap().expect("disabled");
        assert!(
            why.contains("3 consecutive") && why.contains("ObjectsFailed") && why.contains("e7"),
            "{why}"
        );
        let d = h.schedule_state("t").unwrap().disabled().cloned().unwrap();
        assert_eq!(d.disabled_by, DisabledBy::Service);
        assert_eq!(d.reason.as_deref(), Some(why.as_str()));
    }

    #[test]
    fn enable_rearms_the_count_and_a_user_disable_is_kept_as_such() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        assert_eq!(h.schedule_state("t").unwrap(), ScheduleState::Enabled(0));
        assert!(!h.enable_schedule("t").unwrap(), "was not disabled");
        h.disable_schedule("t", DisabledBy::User, Some("maintenance"))
            .unwrap();
        let got = h.schedule_state("t").unwrap().disabled().cloned().unwrap();
        assert_eq!(
            (got.disabled_by, got.reason.as_deref()),
            (DisabledBy::User, Some("maintenance"))
        );
        assert_eq!(h.auto_disable("t", 1).unwrap(), None, "already disabled");
        for i in 0..3 {
            failed(&h, &format!("e{i}"), "LocationError");
        }
        assert!(h.enable_schedule("t").unwrap());
        assert_eq!(
            h.auto_disable("t", 3).unwrap(),
            None,
            "earlier failures do not count"
        );
        failed(&h, "e9", "LocationError");
        assert_eq!(h.auto_disable("t", 2).unwrap(), None);
        assert!(h.auto_disable("t", 1).unwrap().is_some());
    }
}
