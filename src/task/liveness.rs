//! Whether the process running an execution is still there. Each queued or
//! running execution has a file `STATE_DIR/executions/ID.lock` on which its
//! runner holds an exclusive `flock` from before its history row exists
//! until after it recorded its end. The kernel drops the lock when the
//! process dies, however it dies, so "the lock can be taken" means "its
//! runner is gone" — no pid guessing (pids are reused). A row that has not
//! ended and whose lock is free is recorded as ERROR by [`reap`].

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::history::{History, HistoryError};
use crate::engine::report::Status;

/// The runner's lock on its execution; dropping it (or the process dying)
/// releases it.
#[derive(Debug)]
pub struct RunnerLock {
    file: File,
    path: PathBuf,
}

fn lock_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("executions").join(format!("{id}.lock"))
}

fn try_flock(f: &File) -> io::Result<bool> {
    super::guard::flock(f, true)
}

impl RunnerLock {
    /// Creates and locks the execution's lock file.
    pub fn create(state_dir: &Path, id: &str) -> io::Result<RunnerLock> {
        let path = lock_path(state_dir, id);
        if let Some(dir) = path.parent() {
            crate::shared::private::create_dir(dir)?;
        }
        let file = crate::shared::private::create_file(&path)?;
        if !try_flock(&file)? {
            return Err(io::Error::other(format!(
                "{} is locked by another process",
                path.display()
            )));
        }
        Ok(RunnerLock { file, path })
    }

    /// The descriptor a child process inherits to keep holding the lock.
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Removes the file once the execution's end is recorded; the lock goes
    /// with the descriptor.
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes the lock file of an execution whose runner holds it by an
/// inherited descriptor (the detached child), at its end.
pub fn remove(state_dir: &Path, id: &str) {
    let _ = fs::remove_file(lock_path(state_dir, id));
}

/// True while some process holds the execution's lock.
pub fn alive(state_dir: &Path, id: &str) -> bool {
    match File::open(lock_path(state_dir, id)) {
        // Locked by someone else: alive. Taken by us: nobody held it.
        Ok(f) => !try_flock(&f).unwrap_or(false),
        Err(_) => false,
    }
}

/// Records every execution that has not ended but whose runner is gone as
/// ERROR with the reason; returns their ids.
pub fn reap(state_dir: &Path, history: &History) -> Result<Vec<String>, HistoryError> {
    let mut reaped = Vec::new();
    for rec in history.active()? {
        if alive(state_dir, &rec.execution_id) {
            continue;
        }
        let pid = rec.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        let detail = format!(
            "the process running it{pid} ended while it was {} without recording a result: it was killed or crashed. Its guard was released; objects it was writing were never made visible and are cleaned up by the next execution",
            rec.status
        );
        if history.end(
            &rec.execution_id,
            Status::Error,
            Some("ProcessDied"),
            &detail,
        )? {
            remove(state_dir, &rec.execution_id);
            reaped.push(rec.execution_id);
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_alive_and_a_released_one_is_not() {
        let d = tempfile::tempdir().unwrap();
        let l = RunnerLock::create(d.path(), "e1").unwrap();
        assert!(alive(d.path(), "e1"));
        drop(l);
        assert!(!alive(d.path(), "e1"));
        assert!(!alive(d.path(), "never"));
    }

    #[test]
    fn an_unended_execution_without_a_runner_is_recorded_as_error() {
        let d = tempfile::tempdir().unwrap();
        let h = History::open(d.path()).unwrap();
        let live = RunnerLock::create(d.path(), "live").unwrap();
        for id in ["live", "dead"] {
            h.insert(&super::super::history::NewExecution {
                id,
                task: "t",
                source: "/a",
                destination: "/b",
                pid: 42,
                overrides: &[],
            })
            .unwrap();
        }
        assert_eq!(reap(d.path(), &h).unwrap(), vec!["dead".to_string()]);
        let dead = h.get("dead").unwrap().unwrap();
        assert_eq!(dead.status, Status::Error);
        assert_eq!(dead.error_code.as_deref(), Some("ProcessDied"));
        assert!(dead.error_detail.unwrap().contains("pid 42"));
        assert_eq!(h.status("live").unwrap(), Some(Status::Queued));
        live.release();
    }
}
