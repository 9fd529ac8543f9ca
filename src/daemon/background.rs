//! `syncmount daemon --daemonize`, for hosts without systemd: starts the
//! daemon again in its own session (log in STATE_DIR/daemon.log) and
//! returns once it answers on its control socket.

use std::path::Path;
use std::time::Duration;

use super::control::{self, Request};
use super::DaemonArgs;

/// How long `--daemonize` waits for the background daemon to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the daemon again in the background (own session, output to
/// STATE_DIR/daemon.log) and returns once it answers on its socket.
pub(super) async fn daemonize(
    args: &DaemonArgs,
    state_dir: &Path,
    config: Option<&Path>,
) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    crate::shared::private::create_state_dir(state_dir)?;
    let state_dir = std::path::absolute(state_dir)?;
    let pid_file = std::path::absolute(
        args.pid_file
            .clone()
            .unwrap_or_else(|| state_dir.join("daemon.pid")),
    )?;
    let log = crate::shared::private::append_file(&state_dir.join("daemon.log"))?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("-v").arg("--state-dir").arg(&state_dir);
    if let Some(c) = config {
        cmd.arg("--config").arg(std::path::absolute(c)?);
    }
    cmd.arg("daemon")
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--grace-seconds")
        .arg(args.grace_seconds.to_string());
    if let Some(a) = args.metrics_addr {
        cmd.arg("--metrics-addr").arg(a.to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let start = tokio::time::Instant::now();
    while start.elapsed() < READY_TIMEOUT {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the daemon exited at once ({status}); see {}",
                state_dir.join("daemon.log").display()
            );
        }
        if let Some(Ok(r)) = control::ask(&state_dir, &Request::Ping).await {
            if r.pid == child.id() {
                println!("{}", child.id());
                return Ok(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "the daemon did not answer within {READY_TIMEOUT:?}; see {}",
        state_dir.join("daemon.log").display()
    )
}
