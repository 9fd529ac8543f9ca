//! Issue 14's metrics: the daemon (and a standalone mount) serve Prometheus
//! text at `--metrics-addr`. After a known execution and a known read
//! through a mount, the counters are exact, and the exposition parses with
//! Prometheus' own Python client parser (installed by scripts/test.sh).
//!
//! Named `mount_*` so that scripts/test.sh runs it one test at a time, as
//! every binary holding files open through mounts.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use common::mount::{wait_until, Daemon};
use common::tasks::{status, TaskEnv};

/// A loopback address nobody listens on now.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("its address").to_string()
}

/// `GET /metrics` at `addr`: the body of a 200 answer.
fn scrape(addr: &str) -> String {
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send the request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Every sample of the exposition as Prometheus' Python client parses it:
/// `name{label="value",…}` (labels sorted) → value. Panics when it does not
/// parse.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let python = std::env::var("SYNCMOUNT_TEST_PYTHON")
        .expect("SYNCMOUNT_TEST_PYTHON is not set: run the tests with scripts/test.sh");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("the parser");
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> Option<f64> {
    samples.get(key).copied()
}

/// The sum of every sample of `name` whose labels include `with`.
fn sum(samples: &BTreeMap<String, f64>, name: &str, with: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(with))
        .map(|(_, v)| v)
        .sum()
}

/// Files open through the mount labelled `label`, as scraped now.
fn open_handles(addr: &str, label: &str) -> f64 {
    sum(&parse(&scrape(addr)), "syncmount_mount_open_handles", label)
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_serves_exact_counters_of_an_execution_and_of_a_read_through_its_mount() {
    let s = common::s3s();
    let bucket = s.new_bucket("metrics").await;
    let mut env = TaskEnv::new(&format!(
        r#"
[[location]]
name = "A"
path = "{{root}}/a"

[[location]]
name = "B"
bucket = "{bucket}"
prefix = "data"
endpoint_url = "{ep}"

[[location]]
name = "gone"
path = "{{root}}/no-such-dir"

[[task]]
name = "up"
source = "A"
destination = "B"

[[task]]
name = "broken"
source = "gone"
destination = "{{root}}/elsewhere"

[[mount]]
location = "B"
path = "{{root}}/mnt"
"#,
        ep = s.endpoint
    ));
    env.vars = s.env();
    let (a, mnt) = (env.root().join("a"), env.root().join("mnt"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let sizes = [
        ("one.txt", 100usize),
        ("two.bin", 2000),
        ("three.bin", 30_000),
    ];
    for (name, n) in sizes {
        std::fs::write(a.join(name), common::random_bytes(n)).unwrap();
    }
    let total: usize = sizes.iter().map(|(_, n)| n).sum();

    let addr = free_addr();
    let d = Daemon::start_with(&env, &["--metrics-addr", &addr], &mnt);
    let before = parse(&scrape(&addr));
    assert_eq!(
        sum(&before, "syncmount_task_executions_total", "task=\"up\""),
        0.0
    );

    let started = now_s();
    let rec = env.start_wait("up", &[]);
    assert_eq!(status(&rec), "SUCCESS", "{rec:#}");
    let ended = now_s();
    // Scraped at once after `task start --wait` returned: the metrics count
    // an end before the history records it, so nothing here waits.
    let text = scrape(&addr);
    let m = parse(&text);
    assert_eq!(
        value(
            &m,
            "syncmount_task_files_total{kind=\"transferred\",task=\"up\"}"
        ),
        Some(3.0),
        "the final counters right after --wait returned:\n{text}"
    );
    let rec = env.start_wait("broken", &[]);
    assert_eq!(status(&rec), "ERROR", "{rec:#}");
    let text = scrape(&addr);
    let m = parse(&text);
    let exact = |key: &str, want: f64| {
        assert_eq!(value(&m, key), Some(want), "{key} in\n{text}");
    };
    exact(
        "syncmount_task_executions_total{status=\"SUCCESS\",task=\"up\"}",
        1.0,
    );
    exact(
        "syncmount_task_files_total{kind=\"transferred\",task=\"up\"}",
        3.0,
    );
    exact(
        "syncmount_task_files_total{kind=\"failed\",task=\"up\"}",
        0.0,
    );
    exact(
        "syncmount_task_files_total{kind=\"deleted\",task=\"up\"}",
        0.0,
    );
    exact(
        "syncmount_task_bytes_total{kind=\"transferred\",task=\"up\"}",
        total as f64,
    );
    exact("syncmount_task_status{status=\"SUCCESS\",task=\"up\"}", 1.0);
    exact(
        "syncmount_task_status{status=\"TRANSFERRING\",task=\"up\"}",
        0.0,
    );
    let last = value(
        &m,
        "syncmount_task_last_success_timestamp_seconds{task=\"up\"}",
    )
    .expect("a last success time");
    assert!(
        (started - 1.0..=ended + 1.0).contains(&last),
        "{last} not within [{started}, {ended}]"
    );
    assert!(value(&m, "syncmount_task_last_duration_seconds{task=\"up\"}").is_some());
    // Three new small files: one PutObject each, nothing retried.
    assert_eq!(
        sum(&m, "syncmount_s3_requests_total", "operation=\"PutObject\""),
        3.0,
        "{text}"
    );
    assert_eq!(
        sum(
            &m,
            "syncmount_s3_request_errors_total",
            "operation=\"PutObject\""
        ),
        0.0
    );
    // The failed execution: counted by status, no success time.
    exact(
        "syncmount_task_executions_total{status=\"ERROR\",task=\"broken\"}",
        1.0,
    );
    exact(
        "syncmount_task_status{status=\"ERROR\",task=\"broken\"}",
        1.0,
    );
    assert_eq!(
        value(
            &m,
            "syncmount_task_last_success_timestamp_seconds{task=\"broken\"}"
        ),
        None
    );

    // One 2000-byte file read through the mount: one block fetched, once.
    let mount = format!("mount=\"{}\"", mnt.display());
    let gets_before = sum(&m, "syncmount_s3_requests_total", "operation=\"GetObject\"");
    let open = std::fs::File::open(mnt.join("two.bin")).expect("open through the mount");
    wait_until(
        || open_handles(&addr, &mount) == 1.0,
        "the open file to be counted",
    );
    let mut body = Vec::new();
    (&open)
        .read_to_end(&mut body)
        .expect("read through the mount");
    assert_eq!(body.len(), 2000);
    drop(open);
    wait_until(
        || open_handles(&addr, &mount) == 0.0,
        "the closed file to be uncounted",
    );
    let text = scrape(&addr);
    let m = parse(&text);
    assert_eq!(
        sum(&m, "syncmount_mount_cache_misses_total", &mount),
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&m, "syncmount_mount_fetched_bytes_total", &mount),
        2000.0,
        "{text}"
    );
    assert_eq!(
        sum(&m, "syncmount_s3_requests_total", "operation=\"GetObject\"") - gets_before,
        1.0,
        "{text}"
    );
    assert_eq!(
        sum(&m, "syncmount_mount_upload_failures_total", &mount),
        0.0
    );

    assert_eq!(d.stop(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_mount_serves_its_cache_counters_and_a_taken_address_is_named() {
    let s = common::s3s();
    let bucket = s.new_bucket("metrics-mount").await;
    s.put(&bucket, "f.bin", &common::random_bytes(5000)).await;
    let url = s.url(&bucket, "");

    let addr = free_addr();
    let m = common::mount::mount(Some(&s), &url, &["--metrics-addr", &addr]);
    assert_eq!(std::fs::read(m.path("f.bin")).unwrap().len(), 5000);
    let label = format!("mount=\"{}\"", m.dir.display());
    wait_until(
        || open_handles(&addr, &label) == 0.0,
        "the read file to be closed",
    );
    let samples = parse(&scrape(&addr));
    assert_eq!(
        sum(&samples, "syncmount_mount_cache_misses_total", &label),
        1.0
    );
    assert_eq!(
        sum(&samples, "syncmount_mount_fetched_bytes_total", &label),
        5000.0
    );

    // A second mount asking for the same address fails at once, naming it.
    let dir = common::tempdir();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut cmd =
        common::mount::mount_cmd(Some(&s), &url, &mnt, dir.path(), &["--metrics-addr", &addr]);
    cmd.arg("--foreground");
    let out = common::run(cmd);
    assert_ne!(out.status, 0);
    assert!(
        out.stderr.contains(&format!("--metrics-addr {addr}")),
        "{}",
        out.stderr
    );
    assert!(!common::mount::is_mounted(&mnt));
    drop(m);
}
