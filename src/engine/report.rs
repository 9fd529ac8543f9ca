//! Counters with DataSync's names, the per-object task report (JSON lines)
//! and the execution summary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::shared::Escaped;
use serde::Serialize;

/// Live counters, updated by the transfer workers.
#[derive(Debug, Default)]
pub struct Counters {
    pub estimated_files: AtomicU64,
    pub estimated_bytes: AtomicU64,
    pub files_transferred: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_transferred: AtomicU64,
    pub files_skipped: AtomicU64,
    pub files_deleted: AtomicU64,
    pub files_verified: AtomicU64,
    pub files_failed: AtomicU64,
    /// Two-way executions: conflicts (changed on both sides, or changed on
    /// one and deleted on the other), and the work per direction.
    pub files_conflicted: AtomicU64,
    pub files_transferred_a_to_b: AtomicU64,
    pub files_transferred_b_to_a: AtomicU64,
    pub files_deleted_a: AtomicU64,
    pub files_deleted_b: AtomicU64,
    /// Of the files transferred: symbolic links, and FIFOs, sockets and
    /// devices (recreated locally with mknod).
    pub symlinks_transferred: AtomicU64,
    pub special_files_transferred: AtomicU64,
}

/// A snapshot of [`Counters`], serialized with DataSync's names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CounterValues {
    pub estimated_files_to_transfer: u64,
    pub estimated_bytes_to_transfer: u64,
    pub files_transferred: u64,
    pub bytes_written: u64,
    pub bytes_transferred: u64,
    pub files_skipped: u64,
    pub files_deleted: u64,
    pub files_verified: u64,
    pub files_failed: u64,
    #[serde(default)]
    pub files_conflicted: u64,
    #[serde(default, rename = "FilesTransferredAToB")]
    pub files_transferred_a_to_b: u64,
    #[serde(default, rename = "FilesTransferredBToA")]
    pub files_transferred_b_to_a: u64,
    #[serde(default, rename = "FilesDeletedA")]
    pub files_deleted_a: u64,
    #[serde(default, rename = "FilesDeletedB")]
    pub files_deleted_b: u64,
    #[serde(default)]
    pub symlinks_transferred: u64,
    #[serde(default)]
    pub special_files_transferred: u64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterValues {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterValues {
            estimated_files_to_transfer: g(&self.estimated_files),
            estimated_bytes_to_transfer: g(&self.estimated_bytes),
            files_transferred: g(&self.files_transferred),
            bytes_written: g(&self.bytes_written),
            bytes_transferred: g(&self.bytes_transferred),
            files_skipped: g(&self.files_skipped),
            files_deleted: g(&self.files_deleted),
            files_verified: g(&self.files_verified),
            files_failed: g(&self.files_failed),
            files_conflicted: g(&self.files_conflicted),
            files_transferred_a_to_b: g(&self.files_transferred_a_to_b),
            files_transferred_b_to_a: g(&self.files_transferred_b_to_a),
            files_deleted_a: g(&self.files_deleted_a),
            files_deleted_b: g(&self.files_deleted_b),
            symlinks_transferred: g(&self.symlinks_transferred),
            special_files_transferred: g(&self.special_files_transferred),
        }
    }
}

/// One line of the task report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObjectRecord {
    pub key: String,
    /// copy | delete | skip | mkdir; two-way: copy-a-to-b | copy-b-to-a |
    /// delete-a | delete-b | conflict | record | skip
    pub action: &'static str,
    /// ok | failed | skipped | dry-run
    pub result: &'static str,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
    /// What the key is when not a regular file (`symbolic link`, `FIFO`,
    /// `socket`, `character device`, `block device`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// Privileged metadata not written (setuid/setgid bits the task does
    /// not preserve): `location/privilege.rs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// Where the per-object log lines go (a task's `log_level = "transfer"`
/// shows them; so does `-v` outside a task execution).
pub const TRANSFER_TARGET: &str = "syncmount::transfer";

/// One log line per object copied, deleted or failed (not for skipped ones).
fn log_object(r: &ObjectRecord) {
    if !matches!(r.result, "ok" | "failed") || r.action == "skip" {
        return;
    }
    if r.result == "failed" {
        tracing::warn!(target: TRANSFER_TARGET, key = %r.key, action = r.action, result = r.result, bytes = r.bytes, error = r.error.as_deref().unwrap_or(""), "{} failed", r.action);
    } else {
        tracing::info!(target: TRANSFER_TARGET, key = %r.key, action = r.action, result = r.result, bytes = r.bytes, verified = r.verified, "{}", r.action);
    }
}

/// Writes report lines to a file, if one was asked for, and keeps the first
/// few failures for the summary.
#[derive(Debug)]
pub struct Report {
    file: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    path: Option<PathBuf>,
    failures: Mutex<Vec<ObjectRecord>>,
    /// Print dry-run lines on stdout as they come.
    echo: bool,
}

/// Failures kept in the summary; the report file has them all.
const SUMMARY_FAILURES: usize = 20;

impl Report {
    pub fn new(path: Option<&Path>, echo: bool) -> std::io::Result<Report> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::shared::private::create_dir(dir)?;
                }
                Some(Mutex::new(std::io::BufWriter::new(
                    crate::shared::private::create_file(p)?,
                )))
            }
            None => None,
        };
        Ok(Report {
            file,
            path: path.map(Path::to_path_buf),
            failures: Mutex::default(),
            echo,
        })
    }

    pub fn record(&self, r: ObjectRecord) {
        log_object(&r);
        if self.echo && r.result == "dry-run" {
            println!(
                "would {} {} ({})",
                r.action,
                Escaped(&r.key),
                Escaped(r.reason.as_deref().unwrap_or(""))
            );
        }
        if let Some(f) = &self.file {
            if let (Ok(mut w), Ok(line)) = (f.lock(), serde_json::to_string(&r)) {
                if let Err(e) = writeln!(w, "{line}") {
                    tracing::warn!(error = %e, "cannot write the task report");
                }
            }
        }
        if r.result == "failed" {
            if let Ok(mut f) = self.failures.lock() {
                if f.len() < SUMMARY_FAILURES {
                    f.push(r);
                }
            }
        }
    }

    pub fn finish(&self) -> std::io::Result<()> {
        if let Some(f) = &self.file {
            if let Ok(mut w) = f.lock() {
                w.flush()?;
                w.get_ref().sync_all()?;
            }
        }
        Ok(())
    }

    pub fn failures(&self) -> Vec<ObjectRecord> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    Launching,
    Preparing,
    Transferring,
    Verifying,
    Success,
    Error,
    Cancelling,
    Cancelled,
}

impl Status {
    /// SUCCESS, ERROR and CANCELLED: nothing changes any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Success | Status::Error | Status::Cancelled)
    }

    /// Reads DataSync's spelling (`TRANSFERRING`).
    pub fn parse(s: &str) -> Option<Status> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// Milliseconds spent in each phase.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PhaseDurations {
    pub launching_ms: u64,
    pub preparing_ms: u64,
    pub transferring_ms: u64,
    pub verifying_ms: u64,
    pub total_ms: u64,
}

/// Milliseconds since the Unix epoch, now.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What `--json` prints at the end of an execution.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecutionSummary {
    pub execution_id: String,
    pub status: Status,
    pub source: String,
    pub destination: String,
    /// Source and destination are side A and side B of a two-way execution.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub two_way: bool,
    #[serde(flatten)]
    pub counters: CounterValues,
    pub phases: PhaseDurations,
    /// When the execution started working (after any wait in the queue)
    /// and ended, in milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    pub end_time_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_objects: Vec<ObjectRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_path: Option<PathBuf>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("UNKNOWN"))
    }
}

impl ExecutionSummary {
    /// The human summary printed when `--json` is not given.
    pub fn human(&self) -> String {
        let c = &self.counters;
        let mut s = format!(
            "{} {}: {} → {}\n  transferred {} files ({} bytes written), skipped {}, deleted {}, verified {}, failed {}\n  phases: preparing {} ms, transferring {} ms, verifying {} ms, total {} ms\n",
            self.execution_id,
            self.status,
            Escaped(&self.source),
            Escaped(&self.destination),
            c.files_transferred,
            c.bytes_written,
            c.files_skipped,
            c.files_deleted,
            c.files_verified,
            c.files_failed,
            self.phases.preparing_ms,
            self.phases.transferring_ms,
            self.phases.verifying_ms,
            self.phases.total_ms,
        );
        if self.two_way {
            s.push_str(&format!(
                "  two-way: a→b {}, b→a {}, deleted on a {}, deleted on b {}, conflicts {}\n",
                c.files_transferred_a_to_b,
                c.files_transferred_b_to_a,
                c.files_deleted_a,
                c.files_deleted_b,
                c.files_conflicted,
            ));
        }
        if let Some(d) = &self.error_detail {
            s.push_str(&format!("  error: {}\n", Escaped(d)));
        }
        for f in &self.failed_objects {
            s.push_str(&format!(
                "  failed: {} ({}): {}\n",
                Escaped(&f.key),
                f.action,
                Escaped(f.error.as_deref().unwrap_or(""))
            ));
        }
        if let Some(p) = &self.report_path {
            s.push_str(&format!("  report: {}\n", p.display()));
        }
        s
    }
}

/// A DataSync-style execution id: `exec-` and 17 hex digits.
pub fn new_execution_id() -> String {
    format!(
        "exec-{:017x}",
        rand::random::<u64>() & 0x0fff_ffff_ffff_ffff
    )
}
