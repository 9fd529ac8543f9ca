//! Prometheus metrics of the process: task executions, mounts and S3
//! requests, counted always (a few atomics) and served over HTTP only when
//! asked (`--metrics-addr`). A leaf module: it knows no other part of
//! syncmount, which hand it plain values.
//!
//! The exposition is prometheus-client's encoder of the Prometheus text
//! format (0.0.4); the HTTP side is the minimum a scraper needs: `GET
//! /metrics` answered and the connection closed.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskStatus {
    task: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskKind {
    task: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabel {
    mount: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountTier {
    mount: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct S3Request {
    operation: String,
    status: String,
}

/// Every status an execution can be in, for the one-hot status gauge.
pub const STATUSES: [&str; 9] = [
    "QUEUED",
    "LAUNCHING",
    "PREPARING",
    "TRANSFERRING",
    "VERIFYING",
    "SUCCESS",
    "ERROR",
    "CANCELLING",
    "CANCELLED",
];

pub struct Metrics {
    registry: Registry,
    executions: Family<TaskStatus, Counter>,
    files: Family<TaskKind, Counter>,
    bytes: Family<TaskKind, Counter>,
    last_success: Family<TaskLabel, Gauge<f64, AtomicU64>>,
    last_duration: Family<TaskLabel, Gauge<f64, AtomicU64>>,
    status: Family<TaskStatus, Gauge>,
    cache: Family<MountTier, Counter>,
    cache_misses: Family<MountLabel, Counter>,
    fetched: Family<MountLabel, Counter>,
    handles: Family<MountLabel, Gauge>,
    upload_failures: Family<MountLabel, Counter>,
    s3_requests: Family<S3Request, Counter>,
    s3_errors: Family<S3Request, Counter>,
}

/// What one execution did, as its record says when it ended.
pub struct Ended<'a> {
    pub task: &'a str,
    /// SUCCESS, ERROR or CANCELLED.
    pub status: &'a str,
    /// `(kind, count)`: transferred, verified, deleted, failed, conflicted, skipped.
    pub files: &'a [(&'a str, u64)],
    /// `(kind, bytes)`: transferred (read from the source), written.
    pub bytes: &'a [(&'a str, u64)],
    pub duration: Duration,
    /// When it ended, in seconds since the Unix epoch.
    pub ended_s: f64,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("syncmount"),
            executions: Family::default(),
            files: Family::default(),
            bytes: Family::default(),
            last_success: Family::default(),
            last_duration: Family::default(),
            status: Family::default(),
            cache: Family::default(),
            cache_misses: Family::default(),
            fetched: Family::default(),
            handles: Family::default(),
            upload_failures: Family::default(),
            s3_requests: Family::default(),
            s3_errors: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "task_executions",
            "Task executions ended, by final status",
            m.executions.clone(),
        );
        r.register(
            "task_files",
            "Files of ended executions by what happened to them (transferred, verified, deleted, failed, conflicted, skipped)",
            m.files.clone(),
        );
        r.register(
            "task_bytes",
            "Bytes of ended executions: transferred (read from the source) and written (to the destination)",
            m.bytes.clone(),
        );
        r.register(
            "task_last_success_timestamp_seconds",
            "When the task's last successful execution ended (Unix time)",
            m.last_success.clone(),
        );
        r.register(
            "task_last_duration_seconds",
            "How long the task's last ended execution took",
            m.last_duration.clone(),
        );
        r.register(
            "task_status",
            "1 for the status of the task's latest execution in this process, 0 for the others",
            m.status.clone(),
        );
        r.register(
            "mount_cache_hits",
            "Block reads a mount served from its cache, by tier (memory, disk)",
            m.cache.clone(),
        );
        r.register(
            "mount_cache_misses",
            "Block reads a mount fetched from its location",
            m.cache_misses.clone(),
        );
        r.register(
            "mount_fetched_bytes",
            "Bytes a mount read from its location",
            m.fetched.clone(),
        );
        r.register(
            "mount_open_handles",
            "Files open through a mount",
            m.handles.clone(),
        );
        r.register(
            "mount_upload_failures",
            "Uploads of files written through a mount that failed",
            m.upload_failures.clone(),
        );
        r.register(
            "s3_requests",
            "S3 request attempts by operation and HTTP status (\"none\": no answer)",
            m.s3_requests.clone(),
        );
        r.register(
            "s3_request_errors",
            "S3 request attempts that failed (HTTP status 400 and above, or no answer)",
            m.s3_errors.clone(),
        );
        m
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// An execution of `task` entered `status`.
    pub fn task_status(&self, task: &str, status: &str) {
        for s in STATUSES {
            let label = TaskStatus {
                task: task.to_string(),
                status: s.to_string(),
            };
            self.status
                .get_or_create(&label)
                .set(i64::from(s == status));
        }
    }

    /// An execution ended.
    pub fn execution_ended(&self, e: &Ended) {
        self.task_status(e.task, e.status);
        self.executions
            .get_or_create(&TaskStatus {
                task: e.task.to_string(),
                status: e.status.to_string(),
            })
            .inc();
        for (family, values) in [(&self.files, e.files), (&self.bytes, e.bytes)] {
            for (kind, n) in values {
                family
                    .get_or_create(&TaskKind {
                        task: e.task.to_string(),
                        kind: kind.to_string(),
                    })
                    .inc_by(*n);
            }
        }
        let task = TaskLabel {
            task: e.task.to_string(),
        };
        self.last_duration
            .get_or_create(&task)
            .set(e.duration.as_secs_f64());
        if e.status == "SUCCESS" {
            self.last_success.get_or_create(&task).set(e.ended_s);
        }
    }

    /// The counters of the mount at `mountpoint`.
    pub fn mount(&self, mountpoint: &str) -> MountMetrics {
        let label = MountLabel {
            mount: mountpoint.to_string(),
        };
        let tier = |t: &str| {
            self.cache
                .get_or_create(&MountTier {
                    mount: mountpoint.to_string(),
                    tier: t.to_string(),
                })
                .clone()
        };
        MountMetrics {
            memory_hits: tier("memory"),
            disk_hits: tier("disk"),
            misses: self.cache_misses.get_or_create(&label).clone(),
            fetched: self.fetched.get_or_create(&label).clone(),
            handles: self.handles.get_or_create(&label).clone(),
            upload_failures: self.upload_failures.get_or_create(&label).clone(),
        }
    }

    /// One attempt of S3 operation `operation` ended with HTTP `status`
    /// (`None`: no answer).
    pub fn s3_attempt(&self, operation: &str, status: Option<u16>) {
        let label = S3Request {
            operation: operation.to_string(),
            status: status.map_or_else(|| "none".to_string(), |s| s.to_string()),
        };
        self.s3_requests.get_or_create(&label).inc();
        if status.is_none_or(|s| s >= 400) {
            self.s3_errors.get_or_create(&label).inc();
        }
    }
}

/// One mount's counters (handles into the process's registry; a mount made
/// outside it, as in unit tests, counts into counters nobody serves).
#[derive(Clone, Debug, Default)]
pub struct MountMetrics {
    pub memory_hits: Counter,
    pub disk_hits: Counter,
    pub misses: Counter,
    pub fetched: Counter,
    pub handles: Gauge,
    pub upload_failures: Counter,
}

/// The process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The largest request head read before answering.
const MAX_HEAD: usize = 8 * 1024;

/// Serves [`global`]'s exposition on `addr` (`GET /metrics`), when given,
/// until the returned task is aborted or the process ends.
pub async fn serve(
    addr: Option<SocketAddr>,
) -> std::io::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics-addr {addr}: {e}")))?;
    tracing::info!(%addr, "serving metrics at /metrics");
    Ok(Some(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })))
}

async fn answer(mut stream: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    if !matches!(
        tokio::time::timeout(Duration::from_secs(10), read).await,
        Ok(true)
    ) {
        return;
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let (status, kind, body) = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            global().encode(),
        ),
        (Some(b"GET"), _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served here\n".into(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics is served here\n".into(),
        ),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_execution_is_counted_and_its_status_is_one_hot() {
        let m = Metrics::new();
        m.task_status("t", "TRANSFERRING");
        let ended = Ended {
            task: "t",
            status: "SUCCESS",
            files: &[("transferred", 3), ("failed", 0)],
            bytes: &[("transferred", 300)],
            duration: Duration::from_millis(1500),
            ended_s: 1_700_000_000.0,
        };
        m.execution_ended(&ended);
        m.execution_ended(&ended);
        let text = m.encode();
        for line in [
            "syncmount_task_executions_total{task=\"t\",status=\"SUCCESS\"} 2",
            "syncmount_task_files_total{task=\"t\",kind=\"transferred\"} 6",
            "syncmount_task_files_total{task=\"t\",kind=\"failed\"} 0",
            "syncmount_task_bytes_total{task=\"t\",kind=\"transferred\"} 600",
            "syncmount_task_status{task=\"t\",status=\"SUCCESS\"} 1",
            "syncmount_task_status{task=\"t\",status=\"TRANSFERRING\"} 0",
            "syncmount_task_last_duration_seconds{task=\"t\"} 1.5",
            "syncmount_task_last_success_timestamp_seconds{task=\"t\"} 1700000000.0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn s3_errors_count_failed_and_unanswered_attempts_only() {
        let m = Metrics::new();
        m.s3_attempt("PutObject", Some(200));
        m.s3_attempt("PutObject", Some(503));
        m.s3_attempt("GetObject", None);
        let text = m.encode();
        assert!(
            text.contains("syncmount_s3_requests_total{operation=\"PutObject\",status=\"200\"} 1")
        );
        assert!(text.contains(
            "syncmount_s3_request_errors_total{operation=\"PutObject\",status=\"503\"} 1"
        ));
        assert!(text.contains(
            "syncmount_s3_request_errors_total{operation=\"GetObject\",status=\"none\"} 1"
        ));
        assert!(!text
            .contains("syncmount_s3_request_errors_total{operation=\"PutObject\",status=\"200\"}"));
    }
}
