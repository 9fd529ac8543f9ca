//! One task execution from start to end: PREPARING (list both sides, diff)
//! and TRANSFERRING (workers run actions) overlap as one stream, so the first
//! copy starts before the listing ends and memory is bounded by the
//! concurrency, not by the number of keys; then VERIFYING; then a status.
//! The one-shot CLI and the daemon both call `super::execute`, which picks
//! this ([`execute_one_way`]) or a two-way execution.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::stream::StreamExt;

use super::diff::{self, Action, DiffOptions, Overwrite, PreserveDeleted, TransferMode};
use super::filter::{Filter, FilterError};
use super::report::{epoch_ms, Counters, ExecutionSummary, PhaseDurations, Report, Status};
use super::spool::Spool;
use super::state::PairCache;
use super::three_way::{MaxDelete, TwoWayOptions};
use super::throttle::Throttle;
use super::transfer::{Transfer, VerifyMode};
use crate::location::privilege::Privileges;
use crate::location::Location;

/// DataSync's task options.
#[derive(Clone, Debug)]
pub struct TaskOptions {
    pub transfer_mode: TransferMode,
    pub overwrite: Overwrite,
    pub preserve_deleted: PreserveDeleted,
    pub verify_mode: VerifyMode,
    pub include: Option<String>,
    pub exclude: Option<String>,
    pub bytes_per_second: Option<u64>,
    pub concurrency: usize,
    pub dry_run: bool,
    /// Set for a two-way execution: source and destination are sides A
    /// and B, kept equal in both directions (`super::two_way`).
    pub two_way: Option<TwoWayOptions>,
    /// Most deletions on a side in one execution (two-way, or one-way with
    /// `preserve_deleted: Remove`); above it nothing is deleted.
    pub max_delete: MaxDelete,
    /// Deliberate mass deletes: neither `max_delete` nor the check for a
    /// side that lists nothing refuses the execution.
    pub force: bool,
    /// Setuid/setgid bits and devices written to a local destination
    /// (DataSync's PreserveDevices; none of either by default).
    pub privileges: Privileges,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            transfer_mode: TransferMode::Changed,
            overwrite: Overwrite::Always,
            preserve_deleted: PreserveDeleted::Preserve,
            verify_mode: VerifyMode::OnlyFilesTransferred,
            include: None,
            exclude: None,
            bytes_per_second: None,
            concurrency: DEFAULT_CONCURRENCY,
            dry_run: false,
            two_way: None,
            max_delete: MaxDelete::default(),
            force: false,
            privileges: Privileges::default(),
        }
    }
}

/// Objects in flight at once. Small objects are latency-bound, so many in
/// flight pay off; large ones are bounded by the stores' byte budgets.
pub const DEFAULT_CONCURRENCY: usize = 64;

impl TaskOptions {
    pub fn filter(&self) -> Result<Filter, FilterError> {
        Filter::new(self.include.as_deref(), self.exclude.as_deref())
    }

    fn diff_options(&self, filter: Filter, dst: &dyn Location) -> DiffOptions {
        DiffOptions {
            transfer_mode: self.transfer_mode,
            overwrite: self.overwrite,
            preserve_deleted: self.preserve_deleted,
            filter,
            dst_keys_are_paths: dst.keys_are_paths(),
            privileges: self.privileges,
        }
    }
}

/// Everything an execution needs besides the two locations.
pub struct ExecutionRequest {
    pub id: String,
    pub options: TaskOptions,
    pub filter: Filter,
    pub report_path: Option<PathBuf>,
    /// Print `would copy …` lines on stdout (dry runs of the CLI).
    pub echo_dry_run: bool,
    /// Set to stop starting new actions; in-flight ones finish.
    pub cancel: Arc<AtomicBool>,
    pub counters: Arc<Counters>,
    /// When the execution was launched (before the locations were opened).
    pub launched: Instant,
    /// Where the pair cache lives; none: every same-size pair is looked at.
    pub state_dir: Option<PathBuf>,
    /// When the execution started working (epoch ms), after any queueing.
    pub started_ms: u64,
    /// Told when the execution enters PREPARING, TRANSFERRING (first
    /// action) and VERIFYING, so the task layer can record each phase.
    pub on_phase: Option<PhaseHook>,
}

/// See [`ExecutionRequest::on_phase`].
pub type PhaseHook = Arc<dyn Fn(Status) + Send + Sync>;

pub(super) struct Clock {
    pub(super) start: Instant,
    pub(super) first_action: Mutex<Option<Instant>>,
    pub(super) on_phase: Option<PhaseHook>,
}

impl Clock {
    pub(super) fn action_started(&self) {
        let first = match self.first_action.lock() {
            Ok(mut f) if f.is_none() => {
                *f = Some(Instant::now());
                true
            }
            _ => false,
        };
        if first {
            self.phase(Status::Transferring);
        }
    }

    pub(super) fn phase(&self, status: Status) {
        if let Some(hook) = &self.on_phase {
            hook(status);
        }
    }
}

pub(super) fn ms(d: std::time::Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs one one-way execution (`super::execute` picks this or two-way).
pub async fn execute_one_way(
    src: Arc<dyn Location>,
    dst: Arc<dyn Location>,
    req: ExecutionRequest,
) -> ExecutionSummary {
    let launching_ms = ms(req.launched.elapsed());
    let report = match Report::new(req.report_path.as_deref(), req.echo_dry_run) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            let mut s = summary(
                &req,
                &src,
                &dst,
                Status::Error,
                PhaseDurations::default(),
                None,
            );
            s.error_detail = Some(format!("cannot create the report file: {e}"));
            return s;
        }
    };
    let transfer = Transfer {
        src: src.clone(),
        dst: dst.clone(),
        counters: req.counters.clone(),
        report: report.clone(),
        throttle: req.options.bytes_per_second.map(Throttle::new),
        verify: req.options.verify_mode,
        dry_run: req.options.dry_run,
        cache: open_cache(&req, src.as_ref(), dst.as_ref()),
        privileges: req.options.privileges,
    };
    let clock = Clock {
        start: Instant::now(),
        first_action: Mutex::new(None),
        on_phase: req.on_phase.clone(),
    };
    clock.phase(Status::Preparing);
    let mut fatal = None;
    if !req.options.dry_run {
        if let Err(e) = dst.clean_leftovers().await {
            tracing::warn!(error = %e, "could not clean leftovers of earlier runs");
        }
    }
    let diff_end = match run_actions(&transfer, &req, &clock, &src, &dst).await {
        Ok(t) => t,
        Err(e) => {
            fatal = Some(e);
            Instant::now()
        }
    };
    let transfer_end = Instant::now();
    clock.phase(Status::Verifying);
    if !req.options.dry_run {
        // Local destinations learn about dead writers' temp files while listing.
        let _ = dst.clean_leftovers().await;
    }
    let cancelled = req.cancel.load(Ordering::Relaxed);
    if fatal.is_none()
        && !cancelled
        && !req.options.dry_run
        && req.options.verify_mode == VerifyMode::PointInTimeConsistent
    {
        if let Err(e) = verify_whole(&transfer, &req).await {
            fatal = Some(e);
        }
    }
    let end = Instant::now();
    let first = clock
        .first_action
        .lock()
        .ok()
        .and_then(|f| *f)
        .unwrap_or(diff_end);
    let phases = PhaseDurations {
        launching_ms,
        preparing_ms: ms(diff_end - clock.start),
        transferring_ms: ms(transfer_end.saturating_duration_since(first)),
        verifying_ms: ms(end - transfer_end),
        total_ms: ms(req.launched.elapsed()),
    };
    conclude(&req, &src, &dst, &report, fatal, phases)
}

/// The summary at the end of an execution: the report file closed, the
/// status from cancellation, a fatal error or failed objects.
pub(super) fn conclude(
    req: &ExecutionRequest,
    src: &Arc<dyn Location>,
    dst: &Arc<dyn Location>,
    report: &Report,
    mut fatal: Option<String>,
    phases: PhaseDurations,
) -> ExecutionSummary {
    if let Err(e) = report.finish() {
        fatal.get_or_insert(format!("cannot write the report file: {e}"));
    }
    let cancelled = req.cancel.load(Ordering::Relaxed);
    let failed = req.counters.snapshot().files_failed > 0;
    let status = match (cancelled, fatal.is_some() || failed) {
        (true, _) => Status::Cancelled,
        (false, true) => Status::Error,
        (false, false) => Status::Success,
    };
    let mut s = summary(
        req,
        src,
        dst,
        status,
        phases,
        report.path().map(|p| p.to_path_buf()),
    );
    s.failed_objects = report.failures();
    s.error_detail = fatal.or_else(|| {
        failed.then(|| format!("{} objects failed; see the report", s.counters.files_failed))
    });
    s
}

/// The pair cache, when there is a state directory; a cache that cannot be
/// opened only costs HEADs, so it is a warning, not an error.
fn open_cache(
    req: &ExecutionRequest,
    src: &dyn Location,
    dst: &dyn Location,
) -> Option<Arc<PairCache>> {
    let dir = req.state_dir.as_ref()?;
    let path = PairCache::path_for(dir, &src.identity(), &dst.identity());
    match PairCache::open(&path, req.options.dry_run) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the pair cache; unchanged objects will be looked at one by one");
            None
        }
    }
}

pub(super) fn summary(
    req: &ExecutionRequest,
    src: &Arc<dyn Location>,
    dst: &Arc<dyn Location>,
    status: Status,
    phases: PhaseDurations,
    report_path: Option<PathBuf>,
) -> ExecutionSummary {
    ExecutionSummary {
        execution_id: req.id.clone(),
        status,
        source: src.describe(),
        destination: dst.describe(),
        two_way: req.options.two_way.is_some(),
        counters: req.counters.snapshot(),
        phases,
        start_time_ms: req.started_ms,
        end_time_ms: epoch_ms(),
        error_detail: None,
        failed_objects: Vec::new(),
        report_path,
    }
}

/// Streams the diff into the workers; returns when the diff ended.
/// Deletions wait in a spool until the diff is done, then run if the
/// mass-delete guard allows them (a source that lists nothing, or more
/// deletions than `max_delete`, refuse them all).
async fn run_actions(
    transfer: &Transfer,
    req: &ExecutionRequest,
    clock: &Clock,
    src: &Arc<dyn Location>,
    dst: &Arc<dyn Location>,
) -> Result<Instant, String> {
    let opts = req.options.diff_options(req.filter.clone(), dst.as_ref());
    let spool = delete_spool(req, src.as_ref(), dst.as_ref())?;
    let fatal: Mutex<Option<crate::location::LocationError>> = Mutex::new(None);
    let spool_error: Mutex<Option<String>> = Mutex::new(None);
    let diff_end: Mutex<Option<Instant>> = Mutex::new(None);
    let (listed_src, listed_dst, deletes) =
        (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let listings = (
        src.list().inspect(counting(&req.filter, &listed_src)),
        dst.list().inspect(counting(&req.filter, &listed_dst)),
    );
    let actions = diff::diff(listings.0.boxed(), listings.1.boxed(), opts)
        .take_while(|_| futures::future::ready(!req.cancel.load(Ordering::Relaxed)))
        .filter_map(|item| {
            let out = match item {
                Ok(a) => Some(a),
                Err(e) => {
                    if let Ok(mut f) = fatal.lock() {
                        f.get_or_insert(e);
                    }
                    None
                }
            };
            futures::future::ready(out)
        })
        .chain(
            futures::stream::once(async {
                if let Ok(mut d) = diff_end.lock() {
                    *d = Some(Instant::now());
                }
                None::<Action>
            })
            .filter_map(futures::future::ready),
        );
    actions
        .for_each_concurrent(req.options.concurrency.max(1), |a| async {
            if let Action::Delete { dst } = &a {
                deletes.fetch_add(1, Ordering::Relaxed);
                if let Some(spool) = &spool {
                    if let Err(e) = spool.push(&dst.key) {
                        crate::lock(&spool_error).get_or_insert(e);
                    }
                    return;
                }
            }
            clock.action_started();
            transfer.run(a).await
        })
        .await;
    let end = diff_end
        .lock()
        .ok()
        .and_then(|d| *d)
        .unwrap_or_else(Instant::now);
    if let Some(e) = fatal.into_inner().ok().flatten() {
        return Err(transfer.explain(&e).await);
    }
    if let Some(e) = spool_error.into_inner().ok().flatten() {
        return Err(e);
    }
    if req.cancel.load(Ordering::Relaxed) {
        return Ok(end);
    }
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    check_deletes(
        &req.options,
        (src.as_ref(), n(&listed_src)),
        (dst.as_ref(), n(&listed_dst)),
        n(&deletes),
    )?;
    if let Some(spool) = &spool {
        spool
            .for_each(req.options.concurrency, |key| async {
                clock.action_started();
                let dst = crate::location::Entry {
                    key,
                    size: 0,
                    modified: None,
                    etag: None,
                    meta: None,
                };
                transfer.run(Action::Delete { dst }).await
            })
            .await?;
    }
    Ok(end)
}

/// Counts the listed keys `filter` selects into `c`.
fn counting<'a>(
    filter: &'a Filter,
    c: &'a AtomicU64,
) -> impl FnMut(&crate::location::Result<crate::location::Entry>) + 'a {
    move |e| {
        if e.as_ref().is_ok_and(|e| filter.selects(&e.key)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where a one-way execution's deletions wait: none when it deletes
/// nothing or only pretends to (a dry run records them as it goes).
fn delete_spool(
    req: &ExecutionRequest,
    src: &dyn Location,
    dst: &dyn Location,
) -> Result<Option<Spool<String>>, String> {
    if req.options.preserve_deleted != PreserveDeleted::Remove || req.options.dry_run {
        return Ok(None);
    }
    // One per pair in the state directory (the guards run one execution
    // of a pair at a time); else one per execution in the temp directory.
    let path = match &req.state_dir {
        Some(dir) => PairCache::path_for(dir, &src.identity(), &dst.identity())
            .with_extension("deletes.jsonl"),
        None => std::env::temp_dir().join(format!("syncmount-{}.deletes.jsonl", req.id)),
    };
    Spool::create(path).map(Some)
}

/// The mass-delete guard of a one-way execution: `deletes` of the keys
/// the destination lists are about to go.
fn check_deletes(
    opts: &TaskOptions,
    (src, listed_src): (&dyn Location, u64),
    (dst, listed_dst): (&dyn Location, u64),
    deletes: u64,
) -> Result<(), String> {
    if deletes == 0 || opts.force {
        return Ok(());
    }
    let nothing = if opts.dry_run {
        "nothing would be deleted"
    } else {
        "nothing was deleted (copies were made)"
    };
    if listed_src == 0 {
        return Err(format!(
            "refused: the source ({}) lists no keys while the destination ({}) holds {listed_dst}; an unmounted disk, a wrong prefix or a listing without permission looks like this; {nothing}. If the source was emptied on purpose, run again with --force (a task: --override force=true)",
            src.describe(),
            dst.describe()
        ));
    }
    if !opts.max_delete.allows(deletes, listed_dst) {
        return Err(format!(
            "refused: {deletes} of the {listed_dst} keys at the destination ({}) would be deleted, more than max_delete = {} allows; {nothing}. If this is deliberate, run again with --force (a task: --override force=true) or a larger max_delete",
            dst.describe(),
            opts.max_delete
        ));
    }
    Ok(())
}

/// POINT_IN_TIME_CONSISTENT: list both sides again and compare them; every
/// difference left is a failed object.
pub(super) async fn verify_whole(
    transfer: &Transfer,
    req: &ExecutionRequest,
) -> Result<(), String> {
    let mut opts = req
        .options
        .diff_options(req.filter.clone(), transfer.dst.as_ref());
    opts.transfer_mode = TransferMode::Changed;
    opts.overwrite = Overwrite::Always;
    let actions = diff::diff(transfer.src.list(), transfer.dst.list(), opts);
    // Checks need a HEAD each: run them with the execution's concurrency.
    // Each outcome: None for keys that are refused anyway, else whether equal.
    let mut outcomes = actions
        .map(|item| async move {
            let action = item.map_err(|e| format!("verification listing failed: {e}"))?;
            let same = match &action {
                Action::Skip {
                    reason: diff::SkipReason::Unchanged,
                    ..
                } => Some(true),
                Action::Skip { .. } => None,
                Action::Check { src, dst } => Some(!transfer.differs(src, dst).await),
                Action::Copy { .. } | Action::Delete { .. } => Some(false),
            };
            Ok::<_, String>((action.key().to_string(), same))
        })
        .buffer_unordered(req.options.concurrency.max(1));
    let mut verified = 0;
    while let Some(outcome) = outcomes.next().await {
        match outcome? {
            (_, Some(true)) => verified += 1,
            (key, Some(false)) => {
                Counters::add(&transfer.counters.files_failed, 1);
                transfer.report.record(super::report::ObjectRecord {
                    key,
                    action: "verify",
                    result: "failed",
                    bytes: 0,
                    reason: None,
                    error: Some("source and destination differ after the transfer".into()),
                    checksum: None,
                    verified: false,
                    kind: None,
                    dropped: None,
                });
            }
            (_, None) => {}
        }
    }
    // In this mode FilesVerified counts every object compared, not only the transferred ones.
    transfer
        .counters
        .files_verified
        .store(verified, Ordering::Relaxed);
    Ok(())
}
