//! `syncmount daemon`: runs scheduled tasks, serves the control socket, and
//! (through [`mounts::Mounts`]) keeps the configured mounts.
//!
//! One loop owns the state: it sleeps until the next scheduled time, a
//! control request, a finished execution or a signal. Executions run as
//! tasks in this process, under the same guards and history as `task start`
//! from a shell. A schedule firing while that task still has an execution
//! that has not ended is skipped (as DataSync does), and so is one whose
//! schedule is disabled (`task disable`, or by the daemon itself after
//! repeated failures: task::schedule_state). SIGHUP reloads the
//! config (a broken file keeps the old one); SIGTERM stops scheduling and
//! accepting, gives running executions `--grace-seconds` to finish, then
//! cancels them (objects in flight finish, nothing partial is left) and
//! waits for them. systemd hears READY, STATUS and STOPPING (notify.rs).
//! At start, after each execution ended and hourly, `[retention]` prunes
//! old records and reports (task::retention).

mod background;
pub mod control;
pub mod mounts;
pub mod notify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::Config;
use crate::engine::report::{epoch_ms, Status};
use crate::shared::UsageError;
use crate::task::execution::{self, Context};
use crate::task::history::History;
use crate::task::liveness;
use crate::task::retention;
use crate::task::schedule::Schedule;
use crate::task::schedule_state::ScheduleState;
use control::{Request, Response};
use mounts::{FuseMounts, Mounts};
use notify::notify;

#[derive(Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Run in the background (own session, log in STATE_DIR/daemon.log);
    /// returns once the daemon is ready. For hosts without systemd.
    #[arg(long)]
    pub daemonize: bool,
    /// Write the daemon's pid here (default with --daemonize: STATE_DIR/daemon.pid).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// After SIGTERM, how long running executions may go on before they
    /// are cancelled.
    #[arg(long, default_value_t = DEFAULT_GRACE_SECONDS, value_parser = crate::config::units::parse_seconds)]
    pub grace_seconds: u64,
    /// Serve Prometheus metrics (executions, files and bytes per task,
    /// mounts' caches, S3 requests) at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9464. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Long enough for most small executions to end on their own; short
/// enough for systemd's default 90 s stop timeout to include the cancel.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;

/// How often retention runs besides at start and after each execution:
/// records age by the day, so an hour late costs nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

type Control = (Request, oneshot::Sender<Response>);
type Schedules = HashMap<String, (String, Schedule, i64)>;

/// The signals the daemon handles (registered before READY).
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

struct Daemon {
    ctx: Context,
    config_path: Option<PathBuf>,
    history: Arc<History>,
    /// Task name → schedule and next time (Unix seconds).
    schedules: Schedules,
    /// Execution id → its cancel flag.
    running: HashMap<String, Arc<AtomicBool>>,
    executions: JoinSet<(String, Status)>,
    mounts: Box<dyn Mounts>,
}

fn now_secs() -> i64 {
    (epoch_ms() / 1000) as i64
}

pub async fn run(
    args: DaemonArgs,
    state_dir: PathBuf,
    config_path: Option<PathBuf>,
) -> anyhow::Result<i32> {
    if args.daemonize {
        return background::daemonize(&args, &state_dir, config_path.as_deref()).await;
    }
    let config = Config::load(config_path.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    crate::shared::private::create_state_dir(&state_dir)?;
    if let Some(Ok(r)) = control::ask(&state_dir, &Request::Ping).await {
        return Err(UsageError(format!(
            "a daemon (pid {}) already serves {}",
            r.pid,
            state_dir.display()
        ))
        .into());
    }
    // Handlers before the socket: a reload or stop as soon as the socket
    // answers (or READY is sent) must not find the default action, which
    // would kill the process.
    let signals = Signals {
        hup: signal(SignalKind::hangup())?,
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
    };
    let listener = control::bind(&state_dir)?;
    if let Some(p) = &args.pid_file {
        crate::shared::private::write_file(p, format!("{}\n", std::process::id()))?;
    }
    let metrics = crate::metrics::serve(args.metrics_addr)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let history = Arc::new(History::open(&state_dir)?);
    liveness::reap(&state_dir, &history)?;
    let mounts = FuseMounts::new(state_dir.clone());
    let mut d = Daemon {
        ctx: Context {
            state_dir: state_dir.clone(),
            config: Arc::new(config),
            on_written: Some(mounts.written_hook()),
        },
        config_path,
        history,
        schedules: HashMap::new(),
        running: HashMap::new(),
        executions: JoinSet::new(),
        mounts: Box::new(mounts),
    };
    d.load_schedules();
    d.prune();
    d.mounts.apply(&d.ctx.config).await;
    let (tx, rx) = mpsc::channel::<Control>(16);
    let acceptor = tokio::spawn(accept(listener, tx));
    notify(&format!("READY=1\nSTATUS={}", d.status()));
    tracing::info!(pid = std::process::id(), "daemon ready");
    d.serve(rx, signals).await;
    acceptor.abort();
    let _ = std::fs::remove_file(control::socket_path(&state_dir));
    d.shutdown(Duration::from_secs(args.grace_seconds)).await;
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(p) = &args.pid_file {
        let _ = std::fs::remove_file(p);
    }
    Ok(0)
}

/// Hands each connection's request to the main loop.
async fn accept(listener: tokio::net::UnixListener, tx: mpsc::Sender<Control>) {
    while let Ok((stream, _)) = listener.accept().await {
        let tx = tx.clone();
        tokio::spawn(control::serve_one(stream, move |req| async move {
            let (reply, answer) = oneshot::channel();
            if tx.send((req, reply)).await.is_err() {
                return Response {
                    error: Some("the daemon is stopping".into()),
                    ..Default::default()
                };
            }
            answer.await.unwrap_or_default()
        }));
    }
}

impl Daemon {
    fn status(&self) -> String {
        format!(
            "{} scheduled tasks, {} executions running",
            self.schedules.len(),
            self.running.len()
        )
    }

    /// (Re)computes schedules; an unchanged schedule keeps its next time.
    fn load_schedules(&mut self) {
        self.schedules = schedules(&self.ctx.config, &self.schedules, now_secs());
    }

    async fn serve(&mut self, mut rx: mpsc::Receiver<Control>, mut sig: Signals) {
        // Also when no execution ends for a long time (a daemon that only
        // mounts, or whose schedules are disabled).
        let mut prune =
            tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wait = self
                .schedules
                .values()
                .map(|(_, _, at)| *at)
                .min()
                .map(|at| Duration::from_secs((at - now_secs()).max(0) as u64))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(wait) => self.fire_due(),
                Some((req, reply)) = rx.recv() => {
                    let _ = reply.send(self.answer(req));
                }
                Some(done) = self.executions.join_next(), if !self.executions.is_empty() => self.ended(done),
                _ = prune.tick() => self.prune(),
                _ = sig.hup.recv() => self.reload().await,
                _ = sig.term.recv() => break,
                _ = sig.int.recv() => break,
            }
            notify(&format!("STATUS={}", self.status()));
        }
    }

    fn fire_due(&mut self) {
        let now = now_secs();
        let due: Vec<String> = self
            .schedules
            .iter()
            .filter(|(_, (_, _, at))| *at <= now)
            .map(|(name, _)| name.clone())
            .collect();
        if !due.is_empty() {
            // A runner that died (outside this daemon) must not look busy forever.
            if let Err(e) = liveness::reap(&self.ctx.state_dir, &self.history) {
                tracing::warn!(error = %e, "cannot check for dead executions");
            }
        }
        for name in due {
            if let Some((_, s, at)) = self.schedules.get_mut(&name) {
                *at = s.next_after(now).unwrap_or(i64::MAX);
            }
            // Failures may have ended outside this daemon (`task start`).
            self.auto_disable(&name);
            match self.history.schedule_state(&name) {
                Ok(ScheduleState::Disabled(d)) => {
                    tracing::info!(task = %name, disabled_by = ?d.disabled_by, reason = d.reason.as_deref().unwrap_or(""), "schedule skipped: disabled");
                    continue;
                }
                Ok(ScheduleState::Enabled(_)) => {}
                Err(e) => {
                    tracing::error!(task = %name, error = %e, "schedule skipped: cannot read whether it is disabled");
                    continue;
                }
            }
            // Any unended execution of the task, however many newer ones
            // (refused starts, say) were recorded since.
            let busy = self
                .history
                .active()
                .map(|rs| rs.iter().any(|r| r.task == name))
                .unwrap_or(false);
            if busy {
                tracing::info!(task = %name, "schedule skipped: the previous execution has not ended");
                continue;
            }
            match self.start(&name, &[]) {
                Ok(id) => {
                    tracing::debug!(task = %name, execution_id = %id, "scheduled execution started")
                }
                Err(e) => {
                    tracing::error!(task = %name, error = %e, "scheduled execution not started")
                }
            }
        }
    }

    fn answer(&mut self, req: Request) -> Response {
        let pid = std::process::id();
        match req {
            Request::Ping => Response {
                pid,
                ..Default::default()
            },
            Request::Start { config, .. } if !self.same_config(config.as_deref()) => Response {
                error: Some(format!(
                    "the daemon serving this state directory reads {}, not {}; pass that --config, or another --state-dir",
                    shown(self.config_path.as_deref()),
                    shown(config.as_deref())
                )),
                usage: true,
                pid,
                ..Default::default()
            },
            Request::Start { task, overrides, .. } => match self.start(&task, &overrides) {
                Ok(id) => Response {
                    execution_id: Some(id),
                    pid,
                    ..Default::default()
                },
                Err(e) => Response {
                    usage: e.is_usage(),
                    error: Some(e.to_string()),
                    pid,
                    ..Default::default()
                },
            },
        }
    }

    /// Whether a caller's config file is the one this daemon reads.
    fn same_config(&self, theirs: Option<&Path>) -> bool {
        let canon = |p: Option<&Path>| {
            let p = p.unwrap_or(Path::new(crate::config::DEFAULT_CONFIG));
            std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
        };
        canon(self.config_path.as_deref()) == canon(theirs)
    }

    fn start(&mut self, name: &str, overrides: &[String]) -> Result<String, execution::TaskError> {
        let execution::Prepared { id, lock, .. } =
            execution::prepare(&self.ctx, &self.history, name, overrides)?;
        let cancel = Arc::new(AtomicBool::new(false));
        self.running.insert(id.clone(), cancel.clone());
        let (ctx, history, run_id) = (self.ctx.clone(), self.history.clone(), id.clone());
        self.executions.spawn(async move {
            let status = execution::run(&ctx, history, &run_id, cancel).await;
            lock.release();
            (run_id, status)
        });
        Ok(id)
    }

    fn ended(&mut self, done: Result<(String, Status), tokio::task::JoinError>) {
        match done {
            Ok((id, status)) => {
                tracing::debug!(execution_id = %id, %status, "execution ended");
                self.running.remove(&id);
                if let Ok(Some(rec)) = self.history.get(&id) {
                    self.auto_disable(&rec.task);
                }
                self.prune();
            }
            Err(e) => tracing::error!(error = %e, "an execution task failed"),
        }
    }

    /// Deletes the records and reports `[retention]` no longer keeps
    /// (never those of an execution that has not ended).
    fn prune(&self) {
        let policy = retention::Policy::from(&self.ctx.config.retention);
        match retention::prune(&self.history, &self.ctx.state_dir, policy) {
            Ok(p) if p.records + p.reports > 0 => tracing::info!(
                records = p.records,
                reports = p.reports,
                history_days = policy.history_days,
                max_reports = policy.max_reports,
                "retention: pruned execution records and reports"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention: cannot prune the history"),
        }
    }

    /// Disables the schedule of `task` when its last executions failed
    /// alike `auto_disable_after` times (scheduled tasks only).
    fn auto_disable(&self, task: &str) {
        if !self.schedules.contains_key(task) {
            return;
        }
        let Some(after) = self.ctx.config.task(task).map(|t| t.auto_disable_after()) else {
            return;
        };
        match self.history.auto_disable(task, after) {
            Ok(Some(reason)) => {
                tracing::error!(task, disabled_by = "SERVICE", %reason, "schedule disabled; `syncmount task enable {task}` re-arms it")
            }
            Ok(None) => {}
            Err(e) => tracing::error!(task, error = %e, "cannot check for repeated failures"),
        }
    }

    async fn reload(&mut self) {
        notify("RELOADING=1");
        match Config::load(self.config_path.as_deref()) {
            Ok(c) => {
                self.ctx.config = Arc::new(c);
                self.load_schedules();
                self.mounts.apply(&self.ctx.config).await;
                tracing::info!("config reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "config not reloaded; keeping the previous one");
                notify(&format!("STATUS=config not reloaded: {e}"));
            }
        }
        notify("READY=1");
    }

    /// Lets running executions end within `grace`, then cancels the rest
    /// and waits for them.
    async fn shutdown(&mut self, grace: Duration) {
        notify(&format!(
            "STOPPING=1\nSTATUS=stopping: {} executions running",
            self.running.len()
        ));
        let deadline = tokio::time::Instant::now() + grace;
        while !self.executions.is_empty() {
            match tokio::time::timeout_at(deadline, self.executions.join_next()).await {
                Ok(Some(done)) => self.ended(done),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        running = self.running.len(),
                        "grace period over: cancelling"
                    );
                    for (id, flag) in &self.running {
                        let _ = self.history.request_cancel(id);
                        flag.store(true, Ordering::Relaxed);
                    }
                    while let Some(done) = self.executions.join_next().await {
                        self.ended(done);
                    }
                }
            }
        }
        self.mounts.unmount_all().await;
    }
}

/// Task name → (expression, schedule, next time): every scheduled task of
/// `config`; one whose expression did not change keeps its next time from
/// `old`, a new or changed one starts counting at `now`.
fn schedules(config: &Config, old: &Schedules, now: i64) -> Schedules {
    let mut next = HashMap::new();
    for t in config.task.iter().map(|t| t.get_ref()) {
        let Some(expr) = &t.schedule else { continue };
        let Ok(s) = Schedule::parse(expr) else {
            continue;
        };
        let at = match old.get(&t.name) {
            Some((was, _, at)) if was == expr => *at,
            _ => match s.next_after(now) {
                Some(at) => at,
                None => continue,
            },
        };
        next.insert(t.name.clone(), (expr.clone(), s, at));
    }
    next
}

fn shown(config: Option<&Path>) -> String {
    config
        .unwrap_or(Path::new(crate::config::DEFAULT_CONFIG))
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(a: &str, b: &str) -> Config {
        Config::parse(
            &format!("[[task]]\nname = \"a\"\nsource = \"/x\"\ndestination = \"/y\"\nschedule = \"{a}\"\n[[task]]\nname = \"b\"\nsource = \"/y2\"\ndestination = \"/z\"\nschedule = \"{b}\"\n[[task]]\nname = \"manual\"\nsource = \"/m\"\ndestination = \"/n\"\n"),
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn a_reload_keeps_unchanged_schedules_and_restarts_changed_ones() {
        let first = schedules(
            &config("rate(10 minutes)", "rate(1 hour)"),
            &HashMap::new(),
            1000,
        );
        assert_eq!(first.len(), 2, "the task without a schedule is not there");
        assert_eq!(first["a"].2, 1600);
        assert_eq!(first["b"].2, 4600);
        let reloaded = schedules(&config("rate(10 minutes)", "rate(2 hours)"), &first, 1300);
        assert_eq!(reloaded["a"].2, 1600, "unchanged: keeps its next time");
        assert_eq!(
            reloaded["b"].2,
            1300 + 7200,
            "changed: counts from the reload"
        );
    }
}
