//! Execution records in SQLite (`STATE_DIR/history.db`): one row per
//! execution with its status, the time it entered each phase, DataSync's
//! counters, phase durations, error code and detail, and the report path.
//! Many processes write it at once (task runners, the daemon, `task cancel`),
//! so it runs in WAL mode with a busy timeout, every write is one statement,
//! and status changes are conditional: a terminal status is never
//! overwritten, and CANCELLING is only left for a terminal status.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::engine::report::{epoch_ms, CounterValues, ExecutionSummary, PhaseDurations, Status};

/// How long a writer waits for another one before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    pid INTEGER,
    overrides TEXT NOT NULL DEFAULT '[]',
    queued_at INTEGER NOT NULL,
    launching_at INTEGER,
    preparing_at INTEGER,
    transferring_at INTEGER,
    verifying_at INTEGER,
    cancelling_at INTEGER,
    ended_at INTEGER,
    counters TEXT,
    phases TEXT,
    error_code TEXT,
    error_detail TEXT,
    report_path TEXT
);
CREATE INDEX IF NOT EXISTS executions_by_task ON executions(task, queued_at);
CREATE TABLE IF NOT EXISTS schedule_state (
    task TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    disabled_by TEXT,
    reason TEXT,
    updated_at INTEGER NOT NULL,
    -- Executions up to this rowid are older than the last enable.
    since_rowid INTEGER NOT NULL DEFAULT 0
);
";

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("execution history `{path}`: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("execution history `{path}`: {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
}

/// When the execution entered each phase (epoch ms).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Timestamps {
    pub queued_ms: u64,
    pub launching_ms: Option<u64>,
    pub preparing_ms: Option<u64>,
    pub transferring_ms: Option<u64>,
    pub verifying_ms: Option<u64>,
    pub cancelling_ms: Option<u64>,
    pub ended_ms: Option<u64>,
}

/// One execution, as `task describe --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionRecord {
    pub execution_id: String,
    pub task: String,
    pub status: Status,
    pub source: String,
    pub destination: String,
    /// The process running it.
    pub pid: Option<u32>,
    /// `--override key=value` given at start.
    pub overrides: Vec<String>,
    pub timestamps: Timestamps,
    #[serde(flatten)]
    pub counters: CounterValues,
    pub phases: PhaseDurations,
    pub error_code: Option<String>,
    pub error_detail: Option<String>,
    pub report_path: Option<PathBuf>,
}

/// What a new row holds.
pub struct NewExecution<'a> {
    pub id: &'a str,
    pub task: &'a str,
    pub source: &'a str,
    pub destination: &'a str,
    pub pid: u32,
    pub overrides: &'a [String],
}

pub struct History {
    conn: Mutex<Connection>,
    path: PathBuf,
}

fn status_column(s: Status) -> &'static str {
    match s {
        Status::Launching => "launching_at",
        Status::Preparing => "preparing_at",
        Status::Transferring => "transferring_at",
        Status::Verifying => "verifying_at",
        Status::Cancelling => "cancelling_at",
        Status::Success | Status::Error | Status::Cancelled => "ended_at",
        Status::Queued => "queued_at",
    }
}

pub(super) const COLUMNS: &str = "id, task, status, source, destination, pid, overrides, queued_at, launching_at, preparing_at, transferring_at, verifying_at, cancelling_at, ended_at, counters, phases, error_code, error_detail, report_path";

pub(super) fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<ExecutionRecord> {
    let json = |i: usize| -> rusqlite::Result<Option<String>> { row.get(i) };
    let ms = |i: usize| -> rusqlite::Result<Option<u64>> {
        row.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64))
    };
    let status: String = row.get(2)?;
    Ok(ExecutionRecord {
        execution_id: row.get(0)?,
        task: row.get(1)?,
        status: Status::parse(&status).unwrap_or(Status::Error),
        source: row.get(3)?,
        destination: row.get(4)?,
        pid: row.get::<_, Option<i64>>(5)?.map(|p| p as u32),
        overrides: serde_json::from_str(&row.get::<_, String>(6)?).unwrap_or_default(),
        timestamps: Timestamps {
            queued_ms: ms(7)?.unwrap_or(0),
            launching_ms: ms(8)?,
            preparing_ms: ms(9)?,
            transferring_ms: ms(10)?,
            verifying_ms: ms(11)?,
            cancelling_ms: ms(12)?,
            ended_ms: ms(13)?,
        },
        counters: json(14)?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        phases: json(15)?
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default(),
        error_code: row.get(16)?,
        error_detail: row.get(17)?,
        report_path: row.get::<_, Option<String>>(18)?.map(PathBuf::from),
    })
}

pub(super) const TERMINAL: &str = "('SUCCESS', 'ERROR', 'CANCELLED')";

impl History {
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("history.db")
    }

    pub fn open(state_dir: &Path) -> Result<History, HistoryError> {
        let path = Self::path_in(state_dir);
        let err = |source| HistoryError::Sql {
            path: path.display().to_string(),
            source,
        };
        crate::shared::private::create_state_dir(state_dir)
            .and_then(|()| crate::shared::private::prepare_db(&path))
            .map_err(|source| HistoryError::Io {
                path: state_dir.display().to_string(),
                source,
            })?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // journal_mode=WAL is persistent; switching needs a moment alone,
        // which the busy timeout provides.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(History {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, HistoryError> {
        let conn = crate::lock(&self.conn);
        f(&conn).map_err(|source| HistoryError::Sql {
            path: self.path.display().to_string(),
            source,
        })
    }

    pub fn insert(&self, e: &NewExecution<'_>) -> Result<(), HistoryError> {
        let overrides = serde_json::to_string(e.overrides).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "INSERT INTO executions (id, task, status, source, destination, pid, overrides, queued_at) VALUES (?1, ?2, 'QUEUED', ?3, ?4, ?5, ?6, ?7)",
                params![e.id, e.task, e.source, e.destination, e.pid, overrides, epoch_ms() as i64],
            )
            .map(|_| ())
        })
    }

    pub fn set_pid(&self, id: &str, pid: u32) -> Result<(), HistoryError> {
        self.with(|c| {
            c.execute(
                "UPDATE executions SET pid = ?2 WHERE id = ?1",
                params![id, pid],
            )
            .map(|_| ())
        })
    }

    /// Moves a running execution into a non-terminal phase (never out of
    /// CANCELLING or a terminal status); false when it did not move.
    pub fn enter(&self, id: &str, status: Status) -> Result<bool, HistoryError> {
        let sql = format!(
            "UPDATE executions SET status = ?2, {} = ?3 WHERE id = ?1 AND status NOT IN {TERMINAL} AND status != 'CANCELLING'",
            status_column(status)
        );
        self.with(|c| {
            c.execute(&sql, params![id, status.to_string(), epoch_ms() as i64])
                .map(|n| n > 0)
        })
    }

    pub fn update_counters(&self, id: &str, counters: &CounterValues) -> Result<(), HistoryError> {
        let j = serde_json::to_string(counters).unwrap_or_default();
        self.with(|c| {
            c.execute(
                "UPDATE executions SET counters = ?2 WHERE id = ?1",
                params![id, j],
            )
            .map(|_| ())
        })
    }

    /// Records the end of an execution the engine ran.
    pub fn finish(&self, id: &str, s: &ExecutionSummary) -> Result<(), HistoryError> {
        let code = match s.status {
            Status::Error if s.counters.files_failed > 0 => Some("ObjectsFailed"),
            Status::Error => Some("ExecutionFailed"),
            _ => None,
        };
        let counters = serde_json::to_string(&s.counters).unwrap_or_default();
        let phases = serde_json::to_string(&s.phases).unwrap_or_default();
        let report = s.report_path.as_ref().map(|p| p.display().to_string());
        self.with(|c| {
            c.execute(
                &format!("UPDATE executions SET status = ?2, ended_at = ?3, counters = ?4, phases = ?5, error_code = ?6, error_detail = ?7, report_path = ?8 WHERE id = ?1 AND status NOT IN {TERMINAL}"),
                params![id, s.status.to_string(), epoch_ms() as i64, counters, phases, code, s.error_detail, report],
            )
            .map(|_| ())
        })
    }

    /// Ends an execution that never reached (or never came back from) the
    /// engine: ERROR or CANCELLED with a code and detail. False when it had
    /// already ended.
    pub fn end(
        &self,
        id: &str,
        status: Status,
        code: Option<&str>,
        detail: &str,
    ) -> Result<bool, HistoryError> {
        self.with(|c| {
            c.execute(
                &format!("UPDATE executions SET status = ?2, ended_at = ?3, error_code = ?4, error_detail = ?5 WHERE id = ?1 AND status NOT IN {TERMINAL}"),
                params![id, status.to_string(), epoch_ms() as i64, code, detail],
            )
            .map(|n| n > 0)
        })
    }

    /// Asks a queued or running execution to stop: CANCELLING. Returns its
    /// status before (unchanged when it had already ended); None: unknown id.
    pub fn request_cancel(&self, id: &str) -> Result<Option<Status>, HistoryError> {
        let before = self.status(id)?;
        if before.is_some_and(|s| !s.is_terminal()) {
            self.with(|c| {
                c.execute(
                    &format!("UPDATE executions SET status = 'CANCELLING', cancelling_at = ?2 WHERE id = ?1 AND status NOT IN {TERMINAL} AND status != 'CANCELLING'"),
                    params![id, epoch_ms() as i64],
                )
            })?;
        }
        Ok(before)
    }

    pub fn status(&self, id: &str) -> Result<Option<Status>, HistoryError> {
        self.with(|c| {
            c.query_row(
                "SELECT status FROM executions WHERE id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })
        .map(|s| s.and_then(|s| Status::parse(&s)))
    }

    pub fn get(&self, id: &str) -> Result<Option<ExecutionRecord>, HistoryError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM executions WHERE id = ?1"),
                params![id],
                record,
            )
            .optional()
        })
    }

    /// A task's executions, newest first (at most `limit`).
    pub fn for_task(&self, task: &str, limit: usize) -> Result<Vec<ExecutionRecord>, HistoryError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM executions WHERE task = ?1 ORDER BY queued_at DESC, rowid DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![task, limit as i64], record)?;
            rows.collect()
        })
    }

    /// Executions that have not ended.
    pub fn active(&self) -> Result<Vec<ExecutionRecord>, HistoryError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM executions WHERE status NOT IN {TERMINAL} ORDER BY queued_at"
            ))?;
            let rows = st.query_map([], record)?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(id: &'a str, overrides: &'a [String]) -> NewExecution<'a> {
        NewExecution {
            id,
            task: "t",
            source: "/a",
            destination: "/b",
            pid: 7,
            overrides,
        }
    }

    #[test]
    fn phases_are_recorded_and_a_terminal_status_is_final() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        let ov = vec!["concurrency=2".to_string()];
        h.insert(&new("e1", &ov)).unwrap();
        assert!(h.enter("e1", Status::Launching).unwrap());
        assert!(h.enter("e1", Status::Preparing).unwrap());
        assert!(h.end("e1", Status::Error, Some("X"), "broken").unwrap());
        assert!(!h.enter("e1", Status::Transferring).unwrap());
        assert!(!h.end("e1", Status::Cancelled, None, "late").unwrap());
        let r = h.get("e1").unwrap().unwrap();
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.error_code.as_deref(), Some("X"));
        assert_eq!(r.overrides, ov);
        assert!(r.timestamps.launching_ms.is_some() && r.timestamps.preparing_ms.is_some());
        assert!(r.timestamps.transferring_ms.is_none());
        assert!(r.timestamps.ended_ms.is_some());
    }

    #[test]
    fn cancelling_is_left_only_for_an_end() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        h.insert(&new("e2", &[])).unwrap();
        assert_eq!(h.request_cancel("e2").unwrap(), Some(Status::Queued));
        assert!(!h.enter("e2", Status::Launching).unwrap());
        assert_eq!(h.status("e2").unwrap(), Some(Status::Cancelling));
        assert!(h.end("e2", Status::Cancelled, None, "cancelled").unwrap());
        assert_eq!(h.request_cancel("e2").unwrap(), Some(Status::Cancelled));
        assert_eq!(h.request_cancel("nope").unwrap(), None);
        assert!(h.active().unwrap().is_empty());
        assert_eq!(h.for_task("t", 10).unwrap().len(), 1);
    }
}
