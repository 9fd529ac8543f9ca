//! The command line: parses arguments, opens the locations, runs the engine
//! and turns its summary into output and an exit code. No logic of its own
//! beyond that; everything it does is a call into the library.
//!
//! Exit codes: 0 success, 1 the execution ended in ERROR, 2 bad usage or
//! configuration, 130 cancelled (SIGINT/SIGTERM).

mod fstab;
pub use crate::shared::{SideArgs, UsageError};
pub mod logging;
mod schedules;
mod task;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::config::spec::{overlap, S3Overrides, S3Tuning};
use crate::config::Config;
use crate::engine::diff::{Overwrite, PreserveDeleted, TransferMode};
use crate::engine::execute;
use crate::engine::report::{new_execution_id, Counters, ExecutionSummary, Status};
use crate::engine::run::{ExecutionRequest, TaskOptions, DEFAULT_CONCURRENCY};
use crate::engine::three_way::{ConflictPolicy, MaxDelete, TwoWayOptions};
use crate::engine::transfer::VerifyMode;
use crate::location::privilege::{PreserveDevices, PreserveSetid, Privileges};
use crate::location::s3::{ListMode, S3Location};
use crate::location::s3_settings::Sse;
use crate::location::Location;
use crate::task::guard::{self, Claim};

#[derive(Parser, Debug)]
#[command(
    name = "syncmount",
    version,
    about = "Sync tasks between S3 and local directories, the way AWS DataSync runs them"
)]
pub struct Cli {
    /// Where state lives (execution history, guards, multipart upload journal, mount staging).
    /// Default: /var/lib/syncmount as root, else $XDG_STATE_HOME/syncmount.
    #[arg(long, global = true, env = "SYNCMOUNT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// The config file: [[location]], [[task]] and [[mount]] tables (default
    /// /etc/syncmount/syncmount.toml, if it exists).
    #[arg(long, global = true, env = "SYNCMOUNT_CONFIG")]
    pub config: Option<PathBuf>,
    /// More logging on stderr (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How stderr logs: `text` (journald-friendly: no colours off a
    /// terminal, no timestamps in the journal) or `json` (one object per
    /// line, with the execution's id in its `span`).
    #[arg(long, global = true, value_enum, default_value = "text", env = logging::LOG_FORMAT_ENV)]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one task execution from SRC to DST (local path or s3://bucket/prefix).
    Sync(Box<SyncArgs>),
    /// Locations: preflight checks.
    #[command(subcommand)]
    Location(LocationCommand),
    /// Print the IAM and bucket policies a transfer needs, filled in, as JSON.
    #[command(subcommand)]
    Policy(crate::policy::PolicyCommand),
    /// Configured tasks and their executions.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// The config file.
    #[command(subcommand)]
    Config(task::ConfigCommand),
    /// Run scheduled tasks and serve the control socket (systemd: Type=notify).
    Daemon(crate::daemon::DaemonArgs),
    /// Mount a location as a directory (FUSE).
    Mount(Box<crate::mount::command::MountArgs>),
}

#[derive(Subcommand, Debug)]
pub enum LocationCommand {
    /// A checklist of what the location needs (credentials, role, Region,
    /// list, read, optionally write), each failed item with its fix.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// s3://bucket[/prefix], a local directory, or a location name from the config file.
    pub location: String,
    /// Also write and delete a throw-away key, to prove write access.
    #[arg(long)]
    pub write_probe: bool,
    #[command(flatten)]
    pub conn: SideArgs,
    /// Role to assume (STS AssumeRole) for this location.
    #[arg(long)]
    pub role_arn: Option<String>,
}

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Source: a local directory, s3://bucket[/prefix], or a location name from the config file.
    pub src: String,
    /// Destination: a local directory, s3://bucket[/prefix], or a location name from the config file.
    pub dst: String,
    #[command(flatten)]
    pub both: SideArgs,
    #[command(flatten)]
    pub sides: PerSideArgs,
    /// CHANGED copies what differs; ALL copies everything.
    #[arg(long, value_enum, default_value = "changed")]
    pub transfer_mode: TransferMode,
    /// NEVER leaves existing destination objects alone.
    #[arg(long, value_enum, default_value = "always")]
    pub overwrite: Overwrite,
    /// REMOVE deletes destination objects that are not in the source.
    #[arg(
        long = "preserve-deleted-files",
        value_enum,
        default_value = "preserve"
    )]
    pub preserve_deleted: PreserveDeleted,
    #[arg(long, value_enum, default_value = "only-files-transferred")]
    pub verify_mode: VerifyMode,
    /// Include patterns, `|`-separated (e.g. "/photos|/docs/*").
    #[arg(long)]
    pub include: Option<String>,
    /// Exclude patterns, `|`-separated (e.g. "*.tmp|/cache").
    #[arg(long)]
    pub exclude: Option<String>,
    /// Bandwidth limit for bytes passing through this machine.
    #[arg(long)]
    pub bytes_per_second: Option<u64>,
    /// Objects transferred at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Print what would be copied or deleted, and why; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the per-object report (JSON lines) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the final execution summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Fail at once, naming it, when an execution on an overlapping location
    /// runs (same state directory), instead of waiting for it.
    #[arg(long)]
    pub no_queue: bool,
    /// S3 part size in bytes for multipart uploads and copies (min 5 MiB,
    /// max 5 GiB).
    #[arg(long, value_parser = crate::config::units::parse_part_size)]
    pub part_size: Option<u64>,
    /// Objects larger than this many bytes go up in parts.
    #[arg(long)]
    pub multipart_threshold: Option<u64>,
    /// How S3 locations are listed: `tree` walks directories, several at
    /// once; `flat` is one sequential listing (fewer requests when most
    /// directories hold a handful of keys).
    #[arg(long, value_enum, default_value = "tree")]
    pub list_mode: ListMode,
    /// Most parts per multipart upload (S3's limit is 10,000); lowered by
    /// tests to exercise the part-size growth without huge objects.
    #[arg(long, hide = true)]
    pub max_parts: Option<u64>,
    /// S3 → S3: copy each object's tags (`preserve`, as DataSync's
    /// ObjectTags; needs s3:GetObjectTagging on the source and
    /// s3:PutObjectTagging on the destination) or write none (`none`).
    #[arg(long, value_enum, default_value = "preserve")]
    pub object_tags: crate::location::s3::ObjectTags,
    /// Character and block devices at a local destination: `none` creates
    /// none (reported as skipped; DataSync's PreserveDevices), `preserve`
    /// recreates them (root only).
    #[arg(long, value_enum, default_value = "none")]
    pub preserve_devices: PreserveDevices,
    /// Setuid/setgid bits of files written to a local destination: `none`
    /// clears them (each reported), `preserve` keeps them.
    #[arg(long, value_enum, default_value = "none")]
    pub preserve_setid: PreserveSetid,
    /// Keep SRC and DST equal in both directions (sides A and B): what
    /// changed on one side is copied to the other, deletions propagate
    /// where the other side is unchanged, conflicts are kept. The state
    /// both sides last agreed on (the base) lives in --state-dir.
    #[arg(long)]
    pub two_way: bool,
    /// Two-way: how a key changed differently on both sides is settled.
    #[arg(long, value_enum, default_value = "keep-both", requires = "two_way")]
    pub conflict_policy: ConflictPolicy,
    /// Most deletions per side in one execution (two-way, or
    /// --preserve-deleted-files remove), a count (`100`) or a percentage of
    /// the side's keys (`50%`); above it nothing is deleted and the
    /// execution ends in ERROR.
    #[arg(long, default_value = "50%")]
    pub max_delete: MaxDelete,
    /// Allow a mass delete: neither --max-delete nor the check for a side
    /// that suddenly lists nothing refuses the execution.
    #[arg(long)]
    pub force: bool,
    /// Server-side copies larger than this many bytes use parallel
    /// UploadPartCopy (default and maximum 5 GiB, CopyObject's limit).
    #[arg(long)]
    pub multipart_copy_threshold: Option<u64>,
    /// Storage class of the objects written to S3 (the destination; both
    /// sides of a two-way sync): STANDARD_IA, GLACIER, DEEP_ARCHIVE, …
    /// (the bucket's default when unset).
    #[arg(long, value_parser = crate::location::s3_settings::storage_class)]
    pub storage_class: Option<String>,
    /// Server-side encryption of the objects written to S3 (as
    /// --storage-class): aes256 (SSE-S3) or aws:kms (SSE-KMS).
    #[arg(long, value_enum)]
    pub sse: Option<Sse>,
    /// The KMS key of --sse aws:kms (the account's default key when unset).
    #[arg(long)]
    pub sse_kms_key_id: Option<String>,
    /// Send `x-amz-request-payer: requester` to both sides (buckets that
    /// bill the reader).
    #[arg(long)]
    pub requester_pays: bool,
}

/// Per-side S3 settings; each overrides the shared one.
#[derive(Args, Debug, Clone, Default)]
pub struct PerSideArgs {
    #[arg(long)]
    pub src_region: Option<String>,
    #[arg(long)]
    pub dst_region: Option<String>,
    #[arg(long)]
    pub src_endpoint_url: Option<String>,
    #[arg(long)]
    pub dst_endpoint_url: Option<String>,
    #[arg(long)]
    pub src_profile: Option<String>,
    #[arg(long)]
    pub dst_profile: Option<String>,
    /// Role to assume (STS AssumeRole) for the source, like DataSync's BucketAccessRoleArn.
    #[arg(long)]
    pub src_role_arn: Option<String>,
    /// Role to assume for the destination.
    #[arg(long)]
    pub dst_role_arn: Option<String>,
    /// The account that must own the source bucket (12 digits), sent as
    /// x-amz-expected-bucket-owner on every request to it.
    #[arg(long, value_parser = crate::location::s3_settings::account_id)]
    pub src_expected_bucket_owner: Option<String>,
    /// The account that must own the destination bucket.
    #[arg(long, value_parser = crate::location::s3_settings::account_id)]
    pub dst_expected_bucket_owner: Option<String>,
}

pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/syncmount");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("syncmount")
}

/// One side's S3 settings, after per-side overrides.
type Side = S3Overrides;

/// What a location spec denotes, before connecting.
type Spec = crate::config::LocationKind;

/// A spec as written: `s3://…`, a path, or the name of a configured location.
fn resolve_spec(spec: &str, what: &str, config: &Config) -> Result<Spec, UsageError> {
    config.resolve(spec, what).map_err(UsageError)
}

async fn open(
    spec: Spec,
    side: Side,
    args: &SyncArgs,
    journal: PathBuf,
    is_src: bool,
) -> anyhow::Result<Arc<dyn Location>> {
    let tuning = S3Tuning {
        part_size: args.part_size,
        multipart_threshold: args.multipart_threshold,
        multipart_copy_threshold: args.multipart_copy_threshold,
        list_mode: args.list_mode,
        max_parts: args.max_parts,
        object_tags: args.object_tags,
    };
    spec.open(&side, tuning, journal, is_src)
        .await
        .map_err(|e| UsageError(e.to_string()).into())
}

fn sides(args: &SyncArgs) -> (Side, Side) {
    let b = &args.both;
    let s = &args.sides;
    let pick = |one: &Option<String>, all: &Option<String>| one.clone().or_else(|| all.clone());
    // How written objects are stored: at the destination, or on both
    // sides of a two-way sync.
    let stored = |written: bool| S3Overrides {
        storage_class: args.storage_class.clone().filter(|_| written),
        sse: args.sse.filter(|_| written),
        sse_kms_key_id: args.sse_kms_key_id.clone().filter(|_| written),
        requester_pays: args.requester_pays.then_some(true),
        ..Default::default()
    };
    (
        Side {
            region: pick(&s.src_region, &b.region),
            endpoint_url: pick(&s.src_endpoint_url, &b.endpoint_url),
            profile: pick(&s.src_profile, &b.profile),
            role_arn: s.src_role_arn.clone(),
            expected_bucket_owner: s.src_expected_bucket_owner.clone(),
            ..stored(args.two_way)
        },
        Side {
            region: pick(&s.dst_region, &b.region),
            endpoint_url: pick(&s.dst_endpoint_url, &b.endpoint_url),
            profile: pick(&s.dst_profile, &b.profile),
            role_arn: s.dst_role_arn.clone(),
            expected_bucket_owner: s.dst_expected_bucket_owner.clone(),
            ..stored(true)
        },
    )
}

fn task_options(args: &SyncArgs) -> TaskOptions {
    TaskOptions {
        transfer_mode: args.transfer_mode,
        overwrite: args.overwrite,
        preserve_deleted: args.preserve_deleted,
        verify_mode: args.verify_mode,
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        bytes_per_second: args.bytes_per_second,
        concurrency: args.concurrency,
        dry_run: args.dry_run,
        two_way: args.two_way.then_some(TwoWayOptions {
            conflict_policy: args.conflict_policy,
        }),
        max_delete: args.max_delete,
        force: args.force,
        privileges: Privileges {
            devices: args.preserve_devices,
            setid: args.preserve_setid,
        },
    }
}

/// `syncmount mount`: detaches unless `--foreground`, checks the location
/// answers, then serves the mount until unmounted or signalled.
pub async fn mount(
    args: crate::mount::command::MountArgs,
    state_dir: PathBuf,
    config: &Config,
) -> anyhow::Result<i32> {
    use crate::mount::command;
    let spec = resolve_spec(&args.location, "location", config)?;
    if !args.foreground && !command::is_detached_child() {
        let state = state_dir.clone();
        return tokio::task::spawn_blocking(move || command::detach(&args, &state)).await?;
    }
    let side = Side {
        region: args.conn.region.clone(),
        endpoint_url: args.conn.endpoint_url.clone(),
        profile: args.conn.profile.clone(),
        role_arn: args.role_arn.clone(),
        ..Default::default()
    };
    // A mounted directory must exist, as a sync source must.
    let loc = spec
        .open(&side, S3Tuning::default(), state_dir.join("uploads"), true)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    command::check_location(&loc).await?;
    let opts = args.options(&state_dir);
    let metrics = crate::metrics::serve(args.metrics_addr)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let code = crate::mount::serve(loc, &args.mountpoint, &opts).await;
    if let Some(m) = metrics {
        m.abort();
    }
    code
}

/// `syncmount location check`: prints the checklist; exit 1 on any failed item.
pub async fn location_check(args: CheckArgs, config: &Config) -> anyhow::Result<i32> {
    let items = match resolve_spec(&args.location, "location", config)? {
        Spec::Local(path) => crate::preflight::check_local(&path, args.write_probe).await,
        Spec::S3(mut cfg) => {
            cfg.region = args.conn.region.clone().or(cfg.region);
            cfg.endpoint_url = args.conn.endpoint_url.clone().or(cfg.endpoint_url);
            cfg.profile = args.conn.profile.clone().or(cfg.profile);
            cfg.role_arn = args.role_arn.clone().or(cfg.role_arn);
            let loc = S3Location::connect(cfg, None)
                .await
                .map_err(|e| UsageError(e.to_string()))?;
            println!("checking {} ({})", loc.describe(), loc.identity());
            crate::preflight::check_s3(&loc, args.write_probe).await
        }
    };
    let (text, ok) = crate::preflight::render(&items);
    print!("{text}");
    Ok(if ok { 0 } else { 1 })
}

pub async fn sync(args: SyncArgs, state_dir: PathBuf, config: &Config) -> anyhow::Result<i32> {
    let launched = Instant::now();
    let options = task_options(&args);
    let filter = options.filter().map_err(|e| UsageError(e.to_string()))?;
    if args.concurrency == 0 {
        bail!(UsageError("--concurrency must be at least 1".into()));
    }
    if args.bytes_per_second == Some(0) {
        bail!(UsageError("--bytes-per-second must be at least 1".into()));
    }
    let src_spec = resolve_spec(&args.src, "source", config)?;
    let dst_spec = resolve_spec(&args.dst, "destination", config)?;
    if overlap(&src_spec, &dst_spec) {
        bail!(UsageError(format!(
            "source `{}` and destination `{}` overlap (one is inside the other); pick separate folders",
            args.src, args.dst
        )));
    }
    let journal = state_dir.join("uploads");
    let (src_side, dst_side) = sides(&args);
    let src = open(src_spec, src_side, &args, journal.clone(), true).await?;
    let dst = open(dst_spec, dst_side, &args, journal, false).await?;

    let id = new_execution_id();
    // A dry run only reads: it needs no guard.
    let _guard = if args.dry_run {
        None
    } else {
        let claim = Claim {
            execution_id: id.clone(),
            pid: std::process::id(),
            source: src.place(),
            destination: dst.place(),
            two_way: args.two_way,
        };
        let on_wait = |h: &Claim| {
            crate::shared::notice(format_args!(
                "queued: execution {} (pid {}) is running {} → {}; waiting for it (--no-queue to fail instead)",
                h.execution_id, h.pid, h.source, h.destination
            ))
        };
        Some(guard::acquire(&state_dir, claim, !args.no_queue, on_wait).await?)
    };
    let cancel = Arc::new(AtomicBool::new(false));
    spawn_signal_watch(cancel.clone());
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(counters.clone(), !args.json && !args.dry_run);
    let req = ExecutionRequest {
        id,
        options,
        filter,
        report_path: args.report.clone(),
        echo_dry_run: args.dry_run && !args.json,
        cancel,
        counters,
        launched,
        state_dir: Some(state_dir.clone()),
        started_ms: crate::engine::report::epoch_ms(),
        on_phase: None,
    };
    let summary = execute(src, dst, req).await;
    progress.finish();
    print_summary(&summary, args.json)?;
    Ok(match summary.status {
        Status::Success => 0,
        Status::Cancelled => 130,
        _ => 1,
    })
}

fn print_summary(s: &ExecutionSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(s).context("serializing the summary")?
        );
    } else {
        crate::shared::summary(&s.human());
    }
    Ok(())
}

/// First SIGINT/SIGTERM: stop starting new objects and let in-flight ones
/// finish. A second one exits at once (temp files and uploads are cleaned
/// by the next run).
fn spawn_signal_watch(cancel: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                crate::shared::notice(
                    "cancelling: finishing the objects in flight (again to stop at once)",
                );
                cancel.store(true, Ordering::Relaxed);
            } else {
                std::process::exit(130);
            }
        }
    });
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(counters: Arc<Counters>, wanted: bool) -> Progress {
        if !wanted || !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                ticker: None,
            };
        }
        let bar = indicatif::ProgressBar::new_spinner();
        let b = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                let c = counters.snapshot();
                b.set_message(format!(
                    "{}/{} files, {} transferred, {} skipped, {} failed",
                    c.files_transferred,
                    c.estimated_files_to_transfer,
                    indicatif::HumanBytes(c.bytes_transferred.max(c.bytes_written)),
                    c.files_skipped,
                    c.files_failed
                ));
                b.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Progress {
            bar: Some(bar),
            ticker: Some(ticker),
        }
    }

    fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

fn load_config(path: &Option<PathBuf>) -> Result<Config, UsageError> {
    Config::load(path.as_deref()).map_err(|e| UsageError(e.to_string()))
}

/// The whole program; returns the exit code.
pub fn main() -> i32 {
    // Run by mount(8) as /sbin/mount.fuse.syncmount: `syncmount mount` with
    // the mount options as flags, in a process of its own (a detaching
    // mount starts itself again with its own arguments).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match fstab::helper_args(&argv) {
        Ok(fstab::Helper::No) => {}
        Ok(fstab::Helper::Fake) => return 0,
        Ok(fstab::Helper::Run(args)) => {
            let status = std::env::current_exe()
                .and_then(|exe| std::process::Command::new(exe).args(args).status());
            return match status {
                Ok(s) => s.code().unwrap_or(1),
                Err(e) => {
                    crate::shared::failure(format_args!("syncmount: cannot run the mount: {e}"));
                    1
                }
            };
        }
        Err(e) => {
            crate::shared::failure(&e);
            return 1;
        }
    }
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            crate::shared::failure(format_args!(
                "syncmount: cannot start the async runtime: {e}"
            ));
            return 1;
        }
    };
    let state_dir = cli.state_dir.clone().unwrap_or_else(default_state_dir);
    let config_path = cli.config.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Sync(args) => sync(*args, state_dir, &load_config(&config_path)?).await,
            Command::Location(LocationCommand::Check(args)) => {
                location_check(args, &load_config(&config_path)?).await
            }
            Command::Policy(cmd) => Ok(crate::policy::run(cmd).await),
            Command::Task(cmd) => {
                let ctx = crate::task::execution::Context {
                    state_dir,
                    config: Arc::new(load_config(&config_path)?),
                    on_written: None,
                };
                task::run(cmd, ctx, config_path).await
            }
            Command::Config(task::ConfigCommand::Check) => {
                task::config_check(config_path.as_deref())
            }
            Command::Daemon(args) => crate::daemon::run(args, state_dir, config_path).await,
            Command::Mount(args) => mount(*args, state_dir, &load_config(&config_path)?).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            crate::shared::failure(format_args!("syncmount: {e:#}"));
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_usage_errors() {
        let none = Config::default();
        assert!(resolve_spec("gs://b", "source", &none)
            .unwrap_err()
            .0
            .contains("source `gs://b`"));
        assert!(resolve_spec("s3://", "source", &none).is_err());
    }
}
