//! `syncmount task …` and `syncmount config check`: the command line over
//! the task layer. `task start` asks a running daemon (control socket) or
//! launches a detached `syncmount task run-execution ID` child, so the id
//! comes back at once; `--wait` then follows the history until the end.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::schedules::{list, set_schedule, ScheduleChange};
use super::UsageError;
use crate::config::Config;
use crate::daemon::control::{self, Request};
use crate::engine::report::Status;
use crate::shared::Escaped;
use crate::task::execution::{self, Context, TaskError};
use crate::task::history::{ExecutionRecord, History};
use crate::task::liveness::{self, RunnerLock};
use crate::task::schedule::{utc, Schedule};

/// How often `--wait` looks at the history.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// The configured tasks, with their schedule and last execution.
    List(JsonFlag),
    /// Start an execution; prints its id at once.
    Start(StartArgs),
    /// A task's executions, newest first.
    Executions(ExecutionsArgs),
    /// One execution: status, phase times, counters, error, report.
    Describe(IdArgs),
    /// Cancel a queued or running execution (from any process).
    Cancel(IdArgs),
    /// Stop a task's schedule from firing (a running daemon sees it at the
    /// next due time); `task start` still runs it.
    Disable(DisableArgs),
    /// Let a disabled schedule fire again (also after the daemon disabled it).
    Enable(NameArgs),
    /// Runs a recorded execution (what `start` launches in the background).
    #[command(hide = true)]
    RunExecution { id: String },
}

#[derive(Args, Debug)]
pub struct JsonFlag {
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    pub name: String,
    /// Follow the execution to its end with progress; exit like `sync`
    /// (0 success, 1 error, 130 cancelled).
    #[arg(long)]
    pub wait: bool,
    /// Override one of the task's options for this execution, e.g.
    /// `--override concurrency=4 --override queueing=false`.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExecutionsArgs {
    pub name: String,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DisableArgs {
    pub name: String,
    /// Why (shown by `task list`).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Args, Debug)]
pub struct IdArgs {
    pub id: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Check the config file; print every problem with its line (exit 2 on any).
    Check,
}

fn usage(e: TaskError) -> anyhow::Error {
    if e.is_usage() {
        UsageError(e.to_string()).into()
    } else {
        e.into()
    }
}

pub(super) fn open_history(state_dir: &Path) -> anyhow::Result<Arc<History>> {
    let h = History::open(state_dir)?;
    // Executions whose process died are ERROR before anyone reads them.
    liveness::reap(state_dir, &h)?;
    Ok(Arc::new(h))
}

pub(super) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub async fn run(
    cmd: TaskCommand,
    ctx: Context,
    config_path: Option<PathBuf>,
) -> anyhow::Result<i32> {
    match cmd {
        TaskCommand::List(a) => list(&ctx, a.json),
        TaskCommand::Start(a) => start(&ctx, config_path, a).await,
        TaskCommand::Executions(a) => executions(&ctx, a),
        TaskCommand::Describe(a) => describe(&ctx, a),
        TaskCommand::Cancel(a) => cancel(&ctx, a),
        TaskCommand::Disable(a) => {
            set_schedule(&ctx, &a.name, ScheduleChange::Disable(a.reason.as_deref()))
        }
        TaskCommand::Enable(a) => set_schedule(&ctx, &a.name, ScheduleChange::Enable),
        TaskCommand::RunExecution { id } => run_execution(&ctx, &id).await,
    }
}

/// Starts `name` through the daemon when one runs, else in a detached child.
async fn start(ctx: &Context, config_path: Option<PathBuf>, a: StartArgs) -> anyhow::Result<i32> {
    let req = Request::Start {
        task: a.name.clone(),
        overrides: a.overrides.clone(),
        config: config_path
            .as_deref()
            .map(std::path::absolute)
            .transpose()?,
    };
    let id = match control::ask(&ctx.state_dir, &req).await {
        Some(resp) => {
            let resp = resp?;
            match (resp.execution_id, resp.error) {
                (Some(id), _) => id,
                (None, Some(e)) if resp.usage => return Err(UsageError(e).into()),
                (None, e) => anyhow::bail!(
                    "the daemon (pid {}) refused: {}",
                    resp.pid,
                    e.unwrap_or_default()
                ),
            }
        }
        None => {
            let history = History::open(&ctx.state_dir)?;
            let execution::Prepared { id, lock, .. } =
                execution::prepare(ctx, &history, &a.name, &a.overrides).map_err(usage)?;
            let pid = launch_child(&ctx.state_dir, config_path.as_deref(), &id, &lock)?;
            history.set_pid(&id, pid)?;
            // The child holds the lock through its inherited descriptor.
            drop(lock);
            id
        }
    };
    if !a.wait {
        if a.json {
            print_json(&json!({ "ExecutionId": id }))?;
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    crate::shared::notice(format_args!("started {id}"));
    follow(&ctx.state_dir, &id, a.json).await
}

/// Spawns `syncmount task run-execution ID` in its own session, holding the
/// execution's lock through an inherited descriptor; its log goes to
/// STATE_DIR/executions/ID.log.
fn launch_child(
    state_dir: &Path,
    config: Option<&Path>,
    id: &str,
    lock: &RunnerLock,
) -> anyhow::Result<u32> {
    let exe = std::env::current_exe()?;
    let log = crate::shared::private::create_file(
        &state_dir.join("executions").join(format!("{id}.log")),
    )?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-v")
        .arg("--state-dir")
        .arg(std::path::absolute(state_dir)?);
    if let Some(c) = config {
        cmd.arg("--config").arg(std::path::absolute(c)?);
    }
    cmd.args(["task", "run-execution", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let fd = lock.fd();
    // SAFETY: between fork and exec only async-signal-safe calls (setsid,
    // fcntl) are made, on a descriptor that is open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id())
}

/// The exit code for an execution's final status.
pub fn exit_code(s: Status) -> i32 {
    match s {
        Status::Success => 0,
        Status::Cancelled => 130,
        _ => 1,
    }
}

/// Follows an execution to its end: progress on a terminal, the record at
/// the end. First Ctrl-C: cancel it; second: stop waiting.
pub async fn follow(state_dir: &Path, id: &str, json: bool) -> anyhow::Result<i32> {
    let history = History::open(state_dir)?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    let ctrl_c = tokio::spawn(async move {
        for _ in 0..2 {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            if flag.swap(true, Ordering::Relaxed) {
                std::process::exit(130);
            }
        }
    });
    let tty = std::io::stderr().is_terminal() && !json;
    let mut cancel_sent = false;
    let mut tick = 0u32;
    let rec = loop {
        if interrupted.load(Ordering::Relaxed) && !cancel_sent {
            crate::shared::notice(format_args!(
                "cancelling {id} (Ctrl-C again to stop waiting)"
            ));
            history.request_cancel(id)?;
            cancel_sent = true;
        }
        tick += 1;
        if tick.is_multiple_of(5) {
            liveness::reap(state_dir, &history)?;
        }
        let rec = history
            .get(id)?
            .ok_or_else(|| UsageError(format!("no execution `{id}` in the history")))?;
        if rec.status.is_terminal() {
            break rec;
        }
        if tty {
            let c = &rec.counters;
            eprint!(
                "\r\x1b[K{} {}: {}/{} files, {} bytes written, {} skipped, {} failed",
                id,
                rec.status,
                c.files_transferred,
                c.estimated_files_to_transfer,
                c.bytes_written,
                c.files_skipped,
                c.files_failed
            );
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    };
    ctrl_c.abort();
    if tty {
        eprint!("\r\x1b[K");
    }
    if json {
        print_json(&rec)?;
    } else {
        crate::shared::summary(&human(&rec));
    }
    Ok(exit_code(rec.status))
}

fn human(r: &ExecutionRecord) -> String {
    let t = &r.timestamps;
    let at = |ms: Option<u64>| ms.map(utc).unwrap_or_else(|| "-".into());
    let c = &r.counters;
    let mut s = format!(
        "{} {} (task {}): {} → {}\n  queued {}, launching {}, preparing {}, transferring {}, verifying {}, ended {}\n  transferred {} files ({} bytes written), skipped {}, deleted {}, verified {}, failed {}\n",
        r.execution_id, r.status, r.task, Escaped(&r.source), Escaped(&r.destination),
        utc(t.queued_ms), at(t.launching_ms), at(t.preparing_ms), at(t.transferring_ms), at(t.verifying_ms), at(t.ended_ms),
        c.files_transferred, c.bytes_written, c.files_skipped, c.files_deleted, c.files_verified, c.files_failed,
    );
    if let Some(e) = &r.error_detail {
        s.push_str(&format!(
            "  error: {} {}\n",
            r.error_code.as_deref().unwrap_or(""),
            Escaped(e)
        ));
    }
    if let Some(p) = &r.report_path {
        s.push_str(&format!("  report: {}\n", p.display()));
    }
    s
}

fn executions(ctx: &Context, a: ExecutionsArgs) -> anyhow::Result<i32> {
    if ctx.config.task(&a.name).is_none() {
        crate::shared::notice(format_args!(
            "note: no task named `{}` in the config file; showing its history",
            a.name
        ));
    }
    let history = open_history(&ctx.state_dir)?;
    let recs = history.for_task(&a.name, a.limit)?;
    if a.json {
        print_json(&recs)?;
    } else {
        for r in &recs {
            println!(
                "{}  {:<12}  queued {}  ended {}  {} files, {} bytes{}",
                r.execution_id,
                r.status.to_string(),
                utc(r.timestamps.queued_ms),
                r.timestamps.ended_ms.map(utc).unwrap_or_else(|| "-".into()),
                r.counters.files_transferred,
                r.counters.bytes_written,
                r.error_code
                    .as_deref()
                    .map(|c| format!("  {c}"))
                    .unwrap_or_default(),
            );
        }
    }
    Ok(0)
}

fn describe(ctx: &Context, a: IdArgs) -> anyhow::Result<i32> {
    let history = open_history(&ctx.state_dir)?;
    let rec = history
        .get(&a.id)?
        .ok_or_else(|| UsageError(format!("no execution `{}` in the history", a.id)))?;
    if a.json {
        print_json(&rec)?;
    } else {
        print!("{}", human(&rec));
    }
    Ok(0)
}

fn cancel(ctx: &Context, a: IdArgs) -> anyhow::Result<i32> {
    let history = open_history(&ctx.state_dir)?;
    let before = history
        .request_cancel(&a.id)?
        .ok_or_else(|| UsageError(format!("no execution `{}` in the history", a.id)))?;
    let ok = !before.is_terminal();
    if a.json {
        print_json(&json!({ "ExecutionId": a.id, "PreviousStatus": before, "Cancelling": ok }))?;
    } else if ok {
        println!(
            "cancelling {} (was {before}); objects in flight finish, nothing new starts",
            a.id
        );
    } else {
        crate::shared::notice(format_args!("{} already ended: {before}", a.id));
    }
    Ok(if ok { 0 } else { 1 })
}

/// The detached runner: runs the execution, SIGTERM/SIGINT cancel it.
async fn run_execution(ctx: &Context, id: &str) -> anyhow::Result<i32> {
    let history = Arc::new(History::open(&ctx.state_dir)?);
    let cancel = Arc::new(AtomicBool::new(false));
    let (h, i, c) = (history.clone(), id.to_string(), cancel.clone());
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = h.request_cancel(&i);
        c.store(true, Ordering::Relaxed);
    });
    let status = execution::run(ctx, history, id, cancel).await;
    Ok(exit_code(status))
}

/// `syncmount config check`: every problem with its line; exit 2 on any.
pub fn config_check(path: Option<&Path>) -> anyhow::Result<i32> {
    let path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        UsageError(format!(
            "cannot read the config file `{}`: {e}",
            path.display()
        ))
    })?;
    let (config, problems) = Config::check(&text);
    for p in &problems {
        println!("{}:{}: {}", path.display(), p.line, p.message);
    }
    if problems.is_empty() {
        println!(
            "{}: ok ({} locations, {} tasks, {} mounts)",
            path.display(),
            config.location.len(),
            config.task.len(),
            config.mount.len()
        );
        for t in config.task.iter().map(|t| t.get_ref()) {
            if let Some(next) = t
                .schedule
                .as_deref()
                .and_then(|s| Schedule::parse(s).ok())
                .and_then(|s| s.next_after((crate::engine::report::epoch_ms() / 1000) as i64))
            {
                println!("  task {}: next run {}", t.name, utc(next as u64 * 1000));
            }
        }
        Ok(0)
    } else {
        crate::shared::notice(format_args!(
            "{} problems in {}",
            problems.len(),
            path.display()
        ));
        Ok(2)
    }
}
