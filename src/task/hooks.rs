//! Completion hooks: a task's `on_end = ["COMMAND …"]`, run once each of its
//! executions has ended and its end is recorded (the guards already let
//! others start). Each command runs with `/bin/sh -c`, gets the execution
//! record (as `task describe --json` prints it) on stdin and
//! `SYNCMOUNT_STATUS`, `SYNCMOUNT_TASK` and `SYNCMOUNT_EXECUTION_ID` in its
//! environment. A hook never changes the execution's outcome: one that
//! fails, or runs longer than its timeout (`on_end_timeout`, default
//! [`HOOK_TIMEOUT`]), is a warning in the log.
//!
//! The daemon often runs as root with cloud credentials in its environment,
//! so a hook gets only what it needs: the variables above, `PATH` and `HOME`
//! (everything only with `on_end_inherit_env = true`). It runs in a process
//! group of its own, and at the timeout the whole group is killed: a hook
//! that started children in the background leaves nothing behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::config::TaskConfig;

pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// `PATH` for a hook when the runner has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the hooks of one ended execution are told.
pub struct Ended<'a> {
    pub task: &'a str,
    pub execution_id: &'a str,
    /// `SUCCESS`, `ERROR` or `CANCELLED`.
    pub status: &'a str,
    /// The execution record, as JSON.
    pub record: &'a str,
}

/// Runs the task's `on_end` commands one after the other.
pub async fn run_on_end(task: &TaskConfig, ended: &Ended<'_>) {
    for command in &task.on_end {
        if let Err(why) = run_one(command, task, ended).await {
            tracing::warn!(task = ended.task, execution_id = ended.execution_id, command = %command, "on_end hook: {why}");
        }
    }
}

async fn run_one(command: &str, task: &TaskConfig, ended: &Ended<'_>) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(command);
    if !task.on_end_inherit_env {
        cmd.env_clear().env(
            "PATH",
            std::env::var_os("PATH").unwrap_or(DEFAULT_PATH.into()),
        );
        if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
    }
    let mut child = cmd
        .env("SYNCMOUNT_STATUS", ended.status)
        .env("SYNCMOUNT_TASK", ended.task)
        .env("SYNCMOUNT_EXECUTION_ID", ended.execution_id)
        .stdin(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is fine.
        let _ = stdin.write_all(ended.record.as_bytes()).await;
    }
    let timeout = task.on_end_timeout.unwrap_or(HOOK_TIMEOUT);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(format!("ended with {s}")),
        Ok(Err(e)) => Err(format!("cannot wait for it: {e}")),
        Err(_) => {
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: kill(2) on the process group the hook leads (its
                // pid: process_group(0)); it is not reaped yet, so the id
                // cannot have been reused.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill().await;
            Err(format!(
                "still running after {:?}; its process group killed",
                timeout
            ))
        }
    }
}
