//! Task executions: QUEUED → LAUNCHING → PREPARING → TRANSFERRING →
//! VERIFYING → SUCCESS | ERROR, or CANCELLING → CANCELLED.
//!
//! [`prepare`] checks the task and its overrides, refuses at once when
//! queueing is off and an overlapping execution runs, takes the execution's
//! [`RunnerLock`] and records it QUEUED. Then whoever runs it (a detached
//! `syncmount task run-execution ID` child, or the daemon in-process) calls
//! [`run`]: wait for the guard (QUEUED), open both locations (LAUNCHING),
//! run the engine (which reports PREPARING, TRANSFERRING, VERIFYING), record
//! the end, and only then release the guard — so the recorded
//! [LAUNCHING, end] intervals of conflicting executions never overlap.
//! Cancellation is a status in the history (`CANCELLING`), polled by the
//! runner, so it works from any process.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::config::spec::S3Overrides;
use crate::config::{Config, LocationKind};
use crate::engine::execute;
use crate::engine::report::{
    epoch_ms, new_execution_id, CounterValues, Counters, ExecutionSummary, Status,
};
use crate::engine::run::ExecutionRequest;
use crate::location::s3::S3Location;

pub use super::plan::{parse_overrides, Plan};

use super::guard::{self, Claim, GuardError};
use super::history::{History, NewExecution};
use super::liveness::RunnerLock;
use super::s3_lock::{self, S3Guard, S3Registry};

/// How often a runner looks for a cancel request and saves its counters.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// Counters are saved at most this often (each save is a write for every reader's sake).
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// What every task command needs.
#[derive(Clone)]
pub struct Context {
    pub state_dir: PathBuf,
    pub config: Arc<Config>,
    /// Told where an execution wrote, before its end is recorded (the
    /// daemon drops the caches of mounts showing that place, so whoever
    /// sees SUCCESS also sees the new data through a mount).
    pub on_written: Option<WrittenHook>,
}

/// See [`Context::on_written`].
pub type WrittenHook = Arc<dyn Fn(&crate::location::Place) + Send + Sync>;

pub use super::error::TaskError;

/// A recorded (QUEUED) execution, for its runner.
pub struct Prepared {
    pub id: String,
    /// Held by whoever runs it until its end is recorded.
    pub lock: RunnerLock,
    pub plan: Plan,
}

/// Checks and records a new execution of task `name` (QUEUED); the caller
/// runs it, holding the returned lock.
pub fn prepare(
    ctx: &Context,
    history: &History,
    name: &str,
    overrides: &[String],
) -> Result<Prepared, TaskError> {
    let plan = Plan::new(&ctx.config, name, overrides)?;
    let id = new_execution_id();
    let lock = RunnerLock::create(&ctx.state_dir, &id)
        .map_err(|e| TaskError::Io(format!("cannot create the execution's lock file: {e}")))?;
    history.insert(&NewExecution {
        id: &id,
        task: name,
        source: &plan.source_place.to_string(),
        destination: &plan.destination_place.to_string(),
        pid: std::process::id(),
        overrides,
    })?;
    if !plan.options.queueing() {
        let running = guard::holder(&ctx.state_dir, &plan.claim(&id))?
            .filter(|h| !has_ended(history, &h.execution_id));
        if let Some(h) = running {
            let what = format!("{} → {}", h.source, h.destination);
            let detail = format!("refused: execution {} (pid {}) is running on an overlapping location ({what}) and queueing is off", h.execution_id, h.pid);
            history.end(&id, Status::Error, Some("TaskBusy"), &detail)?;
            lock.release();
            return Err(TaskError::Busy {
                task: name.to_string(),
                execution_id: h.execution_id,
                pid: h.pid,
                what,
                refused: id,
            });
        }
    }
    Ok(Prepared { id, lock, plan })
}

/// An execution whose end is recorded but whose guard is not released yet
/// (it is about to be): not a reason to refuse a start.
fn has_ended(history: &History, id: &str) -> bool {
    matches!(history.status(id), Ok(Some(s)) if s.is_terminal())
}

/// Takes the guard: queueing, waits behind conflicting executions;
/// otherwise fails naming a running one, but waits out one that has
/// already recorded its end.
async fn take_guard(
    ctx: &Context,
    history: &History,
    plan: &Plan,
    id: &str,
) -> Result<guard::Guard, GuardError> {
    let on_wait = |h: &Claim| {
        tracing::info!(execution_id = id, holder = %h.execution_id, "queued behind an overlapping execution");
    };
    let queue = plan.options.queueing();
    loop {
        match guard::acquire(&ctx.state_dir, plan.claim(id), queue, on_wait).await {
            Err(GuardError::Busy { execution_id, .. }) if has_ended(history, &execution_id) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// An execution that could not reach or finish the engine.
struct Stop {
    status: Status,
    code: Option<&'static str>,
    detail: String,
}

impl Stop {
    fn error(code: &'static str, detail: impl Into<String>) -> Stop {
        Stop {
            status: Status::Error,
            code: Some(code),
            detail: detail.into(),
        }
    }
}

/// Runs execution `id` (recorded by [`prepare`]) to its end; returns its
/// final status. `cancel` may also be set from outside (signals, daemon
/// shutdown).
pub async fn run(
    ctx: &Context,
    history: Arc<History>,
    id: &str,
    cancel: Arc<AtomicBool>,
) -> Status {
    let span = execution_span(ctx, &history, id);
    run_logged(ctx, history, id, cancel).instrument(span).await
}

/// The span every event of execution `id` is logged in: its id, task and
/// the task's `log_level` (after overrides), which decides what is logged
/// (see `cli::logging`).
fn execution_span(ctx: &Context, history: &History, id: &str) -> tracing::Span {
    let rec = history.get(id).ok().flatten();
    let task = rec.as_ref().map(|r| r.task.clone()).unwrap_or_default();
    let level = rec
        .and_then(|r| Plan::new(&ctx.config, &r.task, &r.overrides).ok())
        .map(|p| p.options.log_level())
        .unwrap_or_default();
    tracing::info_span!(
        "execution",
        execution_id = %id,
        task = %task,
        log_level = level.as_str()
    )
}

/// Logs the end of execution `id` as recorded: ERROR at error level with
/// its code and detail.
fn log_end(history: &History, id: &str) {
    let Ok(Some(r)) = history.get(id) else {
        return;
    };
    let c = &r.counters;
    if r.status == Status::Error {
        tracing::error!(status = %r.status, error_code = r.error_code.as_deref().unwrap_or(""), error_detail = r.error_detail.as_deref().unwrap_or(""), files_transferred = c.files_transferred, files_failed = c.files_failed, "execution ended");
    } else {
        tracing::info!(status = %r.status, files_transferred = c.files_transferred, bytes_written = c.bytes_written, files_deleted = c.files_deleted, files_failed = c.files_failed, "execution ended");
    }
}

async fn run_logged(
    ctx: &Context,
    history: Arc<History>,
    id: &str,
    cancel: Arc<AtomicBool>,
) -> Status {
    let watch_stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let watcher = tokio::spawn(watch(
        history.clone(),
        id.to_string(),
        cancel.clone(),
        counters.clone(),
        watch_stop.clone(),
    ));
    let mut held = Held::default();
    let outcome = run_inner(ctx, &history, id, &cancel, counters, &mut held).await;
    watch_stop.store(true, Ordering::Relaxed);
    let _ = watcher.await;
    // The metrics count the end before the history records it: whoever
    // waits on the history (`task start --wait`) and then scrapes /metrics
    // sees the final counters.
    let before = history.get(id).ok().flatten();
    let status = match outcome {
        Ok(summary) => {
            if let Some(r) = &before {
                let total = Duration::from_millis(summary.phases.total_ms);
                count_end(&r.task, summary.status, &summary.counters, total);
            }
            if let Err(e) = history.finish(id, &summary) {
                tracing::error!(execution_id = id, error = %e, "cannot record the end");
                let _ = history.end(id, Status::Error, Some("HistoryError"), &e.to_string());
            }
            summary.status
        }
        Err(stop) => {
            if let Some(r) = &before {
                let total =
                    Duration::from_millis(epoch_ms().saturating_sub(r.timestamps.queued_ms));
                count_end(&r.task, stop.status, &r.counters, total);
            }
            if let Err(e) = history.end(id, stop.status, stop.code, &stop.detail) {
                tracing::error!(execution_id = id, error = %e, "cannot record the end");
            }
            stop.status
        }
    };
    // The end is recorded: now others may start.
    if let Some(g) = held.s3 {
        g.release().await;
    }
    drop(held.local);
    super::liveness::remove(&ctx.state_dir, id);
    log_end(&history, id);
    on_end(ctx, &history, id).await;
    status
}

/// Runs the task's completion hooks with the recorded end.
async fn on_end(ctx: &Context, history: &History, id: &str) {
    let Ok(Some(rec)) = history.get(id) else {
        return;
    };
    let Some(task) = ctx.config.task(&rec.task) else {
        return;
    };
    if task.on_end.is_empty() {
        return;
    }
    let record = serde_json::to_string_pretty(&rec).unwrap_or_default();
    let status = serde_json::to_value(rec.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let ended = super::hooks::Ended {
        task: &rec.task,
        execution_id: id,
        status: &status,
        record: &record,
    };
    super::hooks::run_on_end(task, &ended).await;
}

fn count_end(task: &str, status: Status, c: &CounterValues, duration: Duration) {
    let status = status.to_string();
    crate::metrics::global().execution_ended(&crate::metrics::Ended {
        task,
        status: &status,
        files: &[
            ("transferred", c.files_transferred),
            ("verified", c.files_verified),
            ("deleted", c.files_deleted),
            ("failed", c.files_failed),
            ("conflicted", c.files_conflicted),
            ("skipped", c.files_skipped),
        ],
        bytes: &[
            ("transferred", c.bytes_transferred),
            ("written", c.bytes_written),
        ],
        duration,
        ended_s: epoch_ms() as f64 / 1000.0,
    });
}

/// The guards an execution holds, released once its end is recorded.
#[derive(Default)]
struct Held {
    local: Option<guard::Guard>,
    s3: Option<S3Guard>,
}

/// The registry of an S3 lock, when the plan takes one.
async fn s3_registry(plan: &Plan) -> Result<Option<Arc<S3Registry>>, Stop> {
    let Some((kind, lease)) = &plan.s3_lock else {
        return Ok(None);
    };
    let LocationKind::S3(cfg) = kind.clone() else {
        return Err(Stop::error(
            "InvalidTask",
            "the [lock] location is not an S3 location",
        ));
    };
    let loc = S3Location::connect(cfg, None)
        .await
        .map_err(|e| Stop::error("LockError", e.to_string()))?;
    Ok(Some(Arc::new(S3Registry::new(loc, *lease))))
}

fn guard_stop(e: GuardError) -> Stop {
    match e {
        GuardError::Busy { .. } => Stop::error("TaskBusy", e.to_string()),
        other => Stop::error("GuardError", other.to_string()),
    }
}

fn cancelled_while_queued() -> Stop {
    Stop {
        status: Status::Cancelled,
        code: None,
        detail: "cancelled while queued".into(),
    }
}

async fn run_inner(
    ctx: &Context,
    history: &Arc<History>,
    id: &str,
    cancel: &Arc<AtomicBool>,
    counters: Arc<Counters>,
    held: &mut Held,
) -> Result<ExecutionSummary, Stop> {
    let rec = history
        .get(id)
        .map_err(|e| Stop::error("HistoryError", e.to_string()))?
        .ok_or_else(|| {
            Stop::error(
                "HistoryError",
                format!("execution {id} is not in the history"),
            )
        })?;
    let _ = history.set_pid(id, std::process::id());
    tracing::info!(source = %rec.source, destination = %rec.destination, "execution started");
    let plan = Plan::new(&ctx.config, &rec.task, &rec.overrides)
        .map_err(|e| Stop::error("InvalidTask", e.to_string()))?;
    let acquire = take_guard(ctx, history, &plan, id);
    held.local = Some(tokio::select! {
        g = acquire => g.map_err(guard_stop)?,
        _ = cancelled(cancel) => return Err(cancelled_while_queued()),
    });
    if let Some(registry) = s3_registry(&plan).await? {
        let on_wait = |h: &Claim| {
            tracing::info!(execution_id = id, holder = %h.execution_id, "queued behind an execution holding the S3 lock");
        };
        let acquire = s3_lock::acquire(
            registry,
            plan.claim(id),
            plan.options.queueing(),
            on_wait,
            cancel.clone(),
        );
        held.s3 = Some(tokio::select! {
            g = acquire => g.map_err(guard_stop)?,
            _ = cancelled(cancel) => return Err(cancelled_while_queued()),
        });
    }
    let launched = Instant::now();
    let _ = history.enter(id, Status::Launching);
    crate::metrics::global().task_status(&rec.task, &Status::Launching.to_string());
    let mut options = plan.options.engine();
    if plan.task.is_two_way() {
        options.two_way = Some(plan.options.two_way());
    }
    let filter = options
        .filter()
        .map_err(|e| Stop::error("InvalidTask", e.to_string()))?;
    let journal = ctx.state_dir.join("uploads");
    let none = S3Overrides::default();
    let tuning = plan.options.tuning();
    let src = plan
        .source
        .clone()
        .open(&none, tuning, journal.clone(), true)
        .await
        .map_err(|e| Stop::error("LocationError", e.to_string()))?;
    let dst = plan
        .destination
        .clone()
        .open(&none, tuning, journal, false)
        .await
        .map_err(|e| Stop::error("LocationError", e.to_string()))?;
    let hook_history = history.clone();
    let hook_id = id.to_string();
    let hook_task = rec.task.clone();
    let req = ExecutionRequest {
        id: id.to_string(),
        options,
        filter,
        report_path: Some(super::retention::report_path(&ctx.state_dir, id)),
        echo_dry_run: false,
        cancel: cancel.clone(),
        counters,
        launched,
        state_dir: Some(ctx.state_dir.clone()),
        started_ms: epoch_ms(),
        on_phase: Some(Arc::new(move |s| {
            crate::metrics::global().task_status(&hook_task, &s.to_string());
            if let Err(e) = hook_history.enter(&hook_id, s) {
                tracing::warn!(execution_id = %hook_id, error = %e, "cannot record the phase");
            }
        })),
    };
    let written = if plan.task.is_two_way() {
        vec![src.place(), dst.place()]
    } else {
        vec![dst.place()]
    };
    let summary = execute(src, dst, req).await;
    if let Some(hook) = &ctx.on_written {
        for place in &written {
            hook(place);
        }
    }
    if let Some(g) = held.s3.as_ref().filter(|g| g.lost()) {
        return Err(Stop::error(
            "LockLost",
            format!(
                "the lease on the S3 lock {} could not be renewed for a whole lease, so another host may run; the execution was stopped ({} files transferred)",
                g.url(),
                summary.counters.files_transferred
            ),
        ));
    }
    Ok(summary)
}

async fn cancelled(cancel: &AtomicBool) {
    while !cancel.load(Ordering::Relaxed) {
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Turns a CANCELLING status (set by `task cancel` from any process) into
/// the cancel flag, and saves the counters now and then.
async fn watch(
    history: Arc<History>,
    id: String,
    cancel: Arc<AtomicBool>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let mut last_save = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(WATCH_EVERY).await;
        if matches!(history.status(&id), Ok(Some(Status::Cancelling))) {
            cancel.store(true, Ordering::Relaxed);
        }
        if last_save.elapsed() >= COUNTERS_EVERY {
            last_save = Instant::now();
            let _ = history.update_counters(&id, &counters.snapshot());
        }
    }
}
