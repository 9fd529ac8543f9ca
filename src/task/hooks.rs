//! Completion hooks: a task's `on_end = ["COMMAND …"]`, run once each of its
//! executions has ended and its end is recorded (the guards already let
//! others start). Each command runs with `/bin/sh -c`, gets the execution
//! record (as `task describe --json` prints it) on stdin and
//! `SYNCMOUNT_STATUS`, `SYNCMOUNT_TASK` and `SYNCMOUNT_EXECUTION_ID` in its
//! environment. A hook never changes the execution's outcome: one that
//! fails, or runs longer than [`HOOK_TIMEOUT`] (then it is killed), is a
//! warning in the log.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What the hooks of one ended execution are told.
pub struct Ended<'a> {
    pub task: &'a str,
    pub execution_id: &'a str,
    /// `SUCCESS`, `ERROR` or `CANCELLED`.
    pub status: &'a str,
    /// The execution record, as JSON.
    pub record: &'a str,
}

/// Runs `commands` one after the other.
pub async fn run_on_end(commands: &[String], ended: &Ended<'_>) {
    for command in commands {
        if let Err(why) = run_one(command, ended).await {
            tracing::warn!(task = ended.task, execution_id = ended.execution_id, command = %command, "on_end hook: {why}");
        }
    }
}

async fn run_one(command: &str, ended: &Ended<'_>) -> Result<(), String> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("SYNCMOUNT_STATUS", ended.status)
        .env("SYNCMOUNT_TASK", ended.task)
        .env("SYNCMOUNT_EXECUTION_ID", ended.execution_id)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is fine.
        let _ = stdin.write_all(ended.record.as_bytes()).await;
    }
    match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("ended with {s}")),
        Ok(Err(e)) => Err(format!("cannot wait for it: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!(
                "still running after {}s; killed",
                HOOK_TIMEOUT.as_secs()
            ))
        }
    }
}
