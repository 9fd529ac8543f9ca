//! What a task command can fail with (execution.rs and plan.rs both return it).

use super::guard::GuardError;
use super::history::HistoryError;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("no task named `{0}` in the config file")]
    UnknownTask(String),
    #[error("--override `{given}`: {message}")]
    BadOverride { given: String, message: String },
    #[error("task `{task}`: {message}")]
    Invalid { task: String, message: String },
    #[error("task `{task}` not started: execution {execution_id} (pid {pid}) is running on an overlapping location ({what}) and queueing is off for this task; the refused start is recorded as {refused}")]
    Busy {
        task: String,
        execution_id: String,
        pid: u32,
        what: String,
        refused: String,
    },
    #[error("no execution `{0}` in the history")]
    UnknownExecution(String),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("{0}")]
    Io(String),
}

impl TaskError {
    /// Errors that are the user's to fix (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TaskError::UnknownTask(_)
                | TaskError::BadOverride { .. }
                | TaskError::Invalid { .. }
                | TaskError::UnknownExecution(_)
        )
    }
}
