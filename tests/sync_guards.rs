//! Guards across processes sharing a state directory: A→B and B→A never run
//! at once (the second queues, or with --no-queue fails naming the first),
//! executions that only share a source run side by side, and a SIGKILLed
//! holder never blocks the next run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

/// Two local directories with ~1.5 MB each, so a run at 1 MB/s takes ~1.5 s.
fn dirs(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b, c) = (root.join("a"), root.join("b"), root.join("c"));
    common::write_tree(&a, &[("from-a.bin", &[1u8; 1_500_000])]);
    common::write_tree(&b, &[("from-b.bin", &[2u8; 1_500_000])]);
    (a, b, c)
}

fn start(src: &Path, dst: &Path, state: &Path, extra: &[&str]) -> Child {
    let mut cmd = common::syncmount();
    cmd.arg("sync")
        .arg(src)
        .arg(dst)
        .args(["--bytes-per-second", "1000000", "--json", "--state-dir"])
        .arg(state)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().expect("start syncmount")
}

struct Done {
    status: i32,
    summary: Value,
    stderr: String,
}

fn finish(child: Child) -> Done {
    let out = child.wait_with_output().expect("wait for syncmount");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    Done {
        status: out.status.code().unwrap_or(-1),
        summary: serde_json::from_str(&stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn ms(d: &Done, field: &str) -> u64 {
    d.summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing: {}", d.summary))
}

/// Waits until the first run holds its guard (its claim file exists).
fn wait_for_claim(state: &Path) {
    for _ in 0..100 {
        let held = std::fs::read_dir(state.join("locks"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .unwrap_or(false);
        if held {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the first execution never took its guard");
}

#[test]
fn a_to_b_and_b_to_a_never_overlap_the_second_queues_behind_the_first() {
    let root = common::tempdir();
    let (a, b, _) = dirs(root.path());
    let state = root.path().join("state");
    let first = start(&a, &b, &state, &[]);
    wait_for_claim(&state);
    let second = start(&b, &a, &state, &[]);
    let (first, second) = (finish(first), finish(second));
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert!(second.stderr.contains("queued"), "{}", second.stderr);
    assert!(
        ms(&second, "StartTimeMs") >= ms(&first, "EndTimeMs"),
        "B→A started before A→B ended: {} / {}",
        first.summary,
        second.summary
    );
    // Both directions really ran: each side has the other's file now.
    assert!(a.join("from-b.bin").exists() && b.join("from-a.bin").exists());
}

#[test]
fn with_no_queue_the_second_start_fails_naming_the_running_execution() {
    let root = common::tempdir();
    let (a, b, _) = dirs(root.path());
    let state = root.path().join("state");
    let first = start(&a, &b, &state, &[]);
    wait_for_claim(&state);
    let refused = finish(start(&b, &a, &state, &["--no-queue"]));
    let first = finish(first);
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    let id = first.summary["ExecutionId"].as_str().expect("execution id");
    assert!(
        refused.stderr.contains(id),
        "the refusal should name {id}: {}",
        refused.stderr
    );
    assert!(
        !a.join("from-b.bin").exists(),
        "the refused run must not have copied anything"
    );
}

#[test]
fn executions_that_only_share_a_source_run_side_by_side() {
    let root = common::tempdir();
    let (a, b, c) = dirs(root.path());
    let state = root.path().join("state");
    let first = start(&a, &b, &state, &[]);
    wait_for_claim(&state);
    let second = start(&a, &c, &state, &["--no-queue"]);
    let (first, second) = (finish(first), finish(second));
    assert_eq!(first.status, 0, "{}", first.stderr);
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert!(
        ms(&second, "StartTimeMs") < ms(&first, "EndTimeMs"),
        "A→C should not have waited for A→B: {} / {}",
        first.summary,
        second.summary
    );
}

#[test]
fn a_sigkilled_holder_never_blocks_the_next_run() {
    let root = common::tempdir();
    let (a, b, _) = dirs(root.path());
    let state = root.path().join("state");
    let mut first = start(&a, &b, &state, &[]);
    wait_for_claim(&state);
    first.kill().expect("SIGKILL");
    first.wait().expect("reap");
    let next = finish(start(&b, &a, &state, &["--no-queue"]));
    assert_eq!(
        next.status, 0,
        "the stale claim should have been cleared: {}",
        next.stderr
    );
    assert!(a.join("from-b.bin").exists());
}
