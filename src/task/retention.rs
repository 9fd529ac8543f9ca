//! Retention: what the daemon deletes so the history and the per-object
//! reports do not grow without bound (`[retention]` in the config). An
//! execution record that ended more than `history_days` ago goes, with its
//! report (`STATE_DIR/reports/ID.jsonl`) and runner log
//! (`STATE_DIR/executions/ID.log`); of the rest, per task only the newest
//! `max_reports` ended executions keep their report (the record stays, its
//! report path cleared). Executions that have not ended are never touched.
//! [`plan`] decides (pure); [`prune`] deletes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::params;

use super::history::{History, HistoryError, TERMINAL};

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The limits (0: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub history_days: u32,
    pub max_reports: u32,
}

impl From<&crate::config::RetentionConfig> for Policy {
    fn from(c: &crate::config::RetentionConfig) -> Policy {
        Policy {
            history_days: c.history_days(),
            max_reports: c.max_reports(),
        }
    }
}

/// An ended execution, as retention sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub id: String,
    pub task: String,
    /// When it ended (epoch ms).
    pub ended_ms: u64,
    pub has_report: bool,
}

/// What to delete: whole records (with their files), and reports alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prune {
    pub records: Vec<String>,
    pub reports: Vec<String>,
}

/// What `policy` deletes at `now_ms` from `ended` (newest first).
pub fn plan(ended: &[Ended], now_ms: u64, policy: Policy) -> Prune {
    let mut out = Prune::default();
    let cutoff = (policy.history_days > 0)
        .then(|| now_ms.saturating_sub(u64::from(policy.history_days) * DAY_MS));
    let mut reports_kept: HashMap<&str, u32> = HashMap::new();
    for e in ended {
        if cutoff.is_some_and(|c| e.ended_ms < c) {
            out.records.push(e.id.clone());
            continue;
        }
        if !e.has_report || policy.max_reports == 0 {
            continue;
        }
        let kept = reports_kept.entry(&e.task).or_default();
        if *kept < policy.max_reports {
            *kept += 1;
        } else {
            out.reports.push(e.id.clone());
        }
    }
    out
}

/// What [`prune`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: usize,
    pub reports: usize,
}

/// An id that is safe as a file name (ids are `exec-` and hex).
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The report of execution `id` (where `task::execution` writes it).
pub fn report_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("reports").join(format!("{id}.jsonl"))
}

fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "retention: cannot delete"),
    }
}

/// Deletes what `policy` says is too old or too many, now.
pub fn prune(history: &History, state_dir: &Path, policy: Policy) -> Result<Pruned, HistoryError> {
    let ended = history.ended_for_retention()?;
    let now = crate::engine::report::epoch_ms();
    let p = plan(&ended, now, policy);
    for id in p.reports.iter().filter(|id| safe_id(id)) {
        remove(&report_path(state_dir, id));
        history.clear_report(id)?;
    }
    for id in p.records.iter().filter(|id| safe_id(id)) {
        remove(&report_path(state_dir, id));
        remove(&state_dir.join("executions").join(format!("{id}.log")));
    }
    history.delete_ended(&p.records)?;
    Ok(Pruned {
        records: p.records.len(),
        reports: p.reports.len(),
    })
}

impl History {
    /// Every ended execution, newest end first.
    fn ended_for_retention(&self) -> Result<Vec<Ended>, HistoryError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT id, task, COALESCE(ended_at, queued_at), report_path IS NOT NULL FROM executions WHERE status IN {TERMINAL} ORDER BY COALESCE(ended_at, queued_at) DESC, rowid DESC"
            ))?;
            let rows = st.query_map([], |r| {
                Ok(Ended {
                    id: r.get(0)?,
                    task: r.get(1)?,
                    ended_ms: r.get::<_, i64>(2)?.max(0) as u64,
                    has_report: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn clear_report(&self, id: &str) -> Result<(), HistoryError> {
        self.with(|c| {
            c.execute(
                "UPDATE executions SET report_path = NULL WHERE id = ?1",
                params![id],
            )
            .map(|_| ())
        })
    }

    /// Deletes these records, if they have ended.
    fn delete_ended(&self, ids: &[String]) -> Result<(), HistoryError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            for id in ids {
                tx.execute(
                    &format!("DELETE FROM executions WHERE id = ?1 AND status IN {TERMINAL}"),
                    params![id],
                )?;
            }
            tx.commit()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(id: &str, task: &str, days_ago: u64, has_report: bool) -> Ended {
        Ended {
            id: id.into(),
            task: task.into(),
            ended_ms: NOW - days_ago * DAY_MS - 1,
            has_report,
        }
    }

    const NOW: u64 = 1_000 * DAY_MS;

    #[test]
    fn old_records_go_and_each_task_keeps_its_newest_reports() {
        let list = [
            ended("t1", "t", 0, true),
            ended("u1", "u", 0, true),
            ended("t2", "t", 1, false),
            ended("t3", "t", 2, true),
            ended("t4", "t", 3, true),
            ended("u2", "u", 5, true),
            ended("t5", "t", 7, true),
            ended("u3", "u", 9, false),
        ];
        let p = plan(
            &list,
            NOW,
            Policy {
                history_days: 7,
                max_reports: 2,
            },
        );
        assert_eq!(p.records, ["t5", "u3"], "ended 7 or more days ago");
        assert_eq!(
            p.reports,
            ["t4"],
            "t keeps t1 and t3 (t2 has none); u keeps both"
        );
        let p = plan(
            &list,
            NOW,
            Policy {
                history_days: 0,
                max_reports: 0,
            },
        );
        assert_eq!(p, Prune::default(), "0: no limits");
        let p = plan(
            &list,
            NOW,
            Policy {
                history_days: 0,
                max_reports: 1,
            },
        );
        assert_eq!(p.records, Vec::<String>::new());
        assert_eq!(p.reports, ["t3", "t4", "u2", "t5"]);
    }

    #[test]
    fn only_plain_ids_become_file_names() {
        assert!(safe_id("exec-0123abcdef"));
        for bad in ["", "../x", "a/b", "x.y"] {
            assert!(!safe_id(bad), "{bad}");
        }
    }
}
