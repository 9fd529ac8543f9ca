//! Task executions across processes: `task start` returns an id at once and
//! the execution runs in a detached child; racing starts of A→B and B→A
//! never overlap (checked from the recorded phase times) and all succeed; a
//! SIGKILLed execution is recorded as ERROR and never blocks the next one;
//! cancel works from another process; queueing off refuses naming the
//! running execution; `--wait` exits like `sync`; control characters in
//! a task's paths are shown escaped by `task start` and `task describe`.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::tasks::{big_files, nothing_partial, status, ts, TaskEnv, SLOW};
use serde_json::Value;

/// A→B, B→A, and a task that conflicts with a-b but does not queue.
fn pair_config() -> String {
    format!("{}{}", common::tasks::PAIR, EXTRA)
}

const EXTRA: &str = r#"
[[task]]
name = "b-a"
source = "B"
destination = "A"

# Reads what a-b writes: conflicts with it, but fails instead of waiting.
[[task]]
name = "b-c-no-queue"
source = "B"
destination = "{root}/c"
queueing = false
"#;

fn pair() -> TaskEnv {
    let env = TaskEnv::new(&pair_config());
    common::write_tree(&env.root().join("a"), &[("from-a.txt", b"a")]);
    common::write_tree(&env.root().join("b"), &[("from-b.txt", b"b")]);
    env
}

fn slow_source(env: &TaskEnv, files: usize) {
    big_files(&env.root().join("a"), files);
}

/// Starts `n` executions alternating `a-b` and `b-a`, each from its own
/// process, all at once; checks that every one ends SUCCESS and that no two
/// [LAUNCHING, end] intervals overlap.
fn race(env: &TaskEnv, n: usize) {
    let children: Vec<_> = (0..n)
        .map(|i| {
            let task = if i % 2 == 0 { "a-b" } else { "b-a" };
            env.cmd(&["task", "start", task])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn task start")
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("task start");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .collect();
    let mut spans = Vec::new();
    for id in &ids {
        let r = env.wait_end(id, Duration::from_secs(120));
        assert_eq!(status(&r), "SUCCESS", "{r:#}");
        let (start, end) = (ts(&r, "LaunchingMs").unwrap(), ts(&r, "EndedMs").unwrap());
        assert!(start <= end, "{r:#}");
        spans.push((start, end, id.clone()));
    }
    spans.sort();
    for w in spans.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "{} [{}, {}] overlaps {} [{}, {}]",
            w[0].2,
            w[0].0,
            w[0].1,
            w[1].2,
            w[1].0,
            w[1].1
        );
    }
}

#[test]
fn fifty_racing_starts_of_a_to_b_and_b_to_a_never_overlap_and_all_succeed() {
    let env = pair();
    race(&env, 50);
    // Both directions ran: each side has the other's file.
    assert!(env.root().join("b/from-a.txt").exists());
    assert!(env.root().join("a/from-b.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_starts_between_a_directory_and_a_bucket_never_overlap() {
    let server = common::s3s();
    let bucket = server.new_bucket("race").await;
    server.put(&bucket, "data/from-b.txt", b"b").await;
    let mut env = TaskEnv::new(&format!(
        "[[location]]\nname = \"A\"\npath = \"{{root}}/a\"\n\n[[location]]\nname = \"B\"\nbucket = \"{bucket}\"\nprefix = \"data\"\nendpoint_url = \"{}\"\n\n[[task]]\nname = \"a-b\"\nsource = \"A\"\ndestination = \"B\"\n\n[[task]]\nname = \"b-a\"\nsource = \"B\"\ndestination = \"A\"\n",
        server.endpoint
    ));
    env.vars = server.env();
    common::write_tree(&env.root().join("a"), &[("from-a.txt", b"a")]);
    race(&env, 20);
    assert!(server.exists(&bucket, "data/from-a.txt").await);
    assert!(env.root().join("a/from-b.txt").exists());
}

fn pid(rec: &Value) -> i32 {
    rec["Pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid: {rec:#}")) as i32
}

fn transferring(r: &Value) -> bool {
    status(r) == "TRANSFERRING"
}

#[test]
fn a_sigkilled_execution_is_recorded_as_error_and_the_next_start_proceeds() {
    let env = pair();
    slow_source(&env, 3);
    let id = env.start("a-b", &["--override", "bytes_per_second=1000000"]);
    let rec = env.wait_for(&id, Duration::from_secs(30), transferring);
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid(&rec), libc::SIGKILL) }, 0);
    let next = env.run(&["task", "start", "b-a", "--wait", "--json"]);
    assert_eq!(next.status, 0, "{}", next.stderr);
    let killed = env.describe(&id);
    assert_eq!(status(&killed), "ERROR", "{killed:#}");
    assert_eq!(killed["ErrorCode"], "ProcessDied", "{killed:#}");
    assert!(
        killed["ErrorDetail"]
            .as_str()
            .unwrap_or("")
            .contains("killed"),
        "{killed:#}"
    );
    // The next a-b cleans up and completes.
    let again = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert_eq!(
        nothing_partial(&env.root().join("b"), &["from-a.txt", "from-b.txt"]),
        3
    );
}

#[test]
fn cancel_from_another_process_stops_the_execution_and_leaves_nothing_partial() {
    let env = pair();
    slow_source(&env, 4);
    let id = env.start("a-b", SLOW);
    env.wait_for(&id, Duration::from_secs(30), transferring);
    let out = env.run(&["task", "cancel", &id]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("cancelling"), "{}", out.stdout);
    let rec = env.wait_end(&id, Duration::from_secs(30));
    assert_eq!(status(&rec), "CANCELLED", "{rec:#}");
    assert!(ts(&rec, "CancellingMs").is_some(), "{rec:#}");
    let copied = nothing_partial(&env.root().join("b"), &["from-b.txt"]);
    assert!(copied < 4, "cancel did not stop anything ({copied} copied)");
    // Cancelling an ended execution says so.
    let late = env.run(&["task", "cancel", &id]);
    assert_eq!(late.status, 1);
    assert!(late.stderr.contains("already ended"), "{}", late.stderr);
}

#[test]
fn a_queued_execution_can_be_cancelled_before_it_runs() {
    let env = pair();
    slow_source(&env, 2);
    let first = env.start("a-b", &["--override", "bytes_per_second=1000000"]);
    env.wait_for(&first, Duration::from_secs(30), transferring);
    let queued = env.start("b-a", &[]);
    env.wait_for(&queued, Duration::from_secs(10), |r| status(r) == "QUEUED");
    assert_eq!(env.run(&["task", "cancel", &queued]).status, 0);
    let rec = env.wait_end(&queued, Duration::from_secs(10));
    assert_eq!(status(&rec), "CANCELLED", "{rec:#}");
    assert!(ts(&rec, "LaunchingMs").is_none(), "it never ran: {rec:#}");
    assert_eq!(
        status(&env.wait_end(&first, Duration::from_secs(30))),
        "SUCCESS"
    );
}

#[test]
fn with_queueing_off_a_start_is_refused_naming_the_running_execution() {
    let env = pair();
    slow_source(&env, 2);
    let running = env.start("a-b", &["--override", "bytes_per_second=1000000"]);
    env.wait_for(&running, Duration::from_secs(30), transferring);
    let out = env.run(&["task", "start", "b-c-no-queue"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&running), "{}", out.stderr);
    assert!(out.stderr.contains("queueing is off"), "{}", out.stderr);
    // The refusal is in the history.
    let hist = env.run(&["task", "executions", "b-c-no-queue", "--json"]);
    let recs: Value = serde_json::from_str(&hist.stdout).unwrap();
    assert_eq!(recs[0]["ErrorCode"], "TaskBusy", "{recs:#}");
    // --override queueing=true makes it wait instead.
    let queued = env.run(&[
        "task",
        "start",
        "b-c-no-queue",
        "--override",
        "queueing=true",
        "--wait",
        "--json",
    ]);
    assert_eq!(queued.status, 0, "{}", queued.stderr);
    let rec: Value = serde_json::from_str(&queued.stdout).unwrap();
    let first = env.describe(&running);
    assert!(
        ts(&rec, "LaunchingMs").unwrap() >= ts(&first, "EndedMs").unwrap(),
        "{rec:#} {first:#}"
    );
}

#[test]
fn wait_reports_the_record_and_exits_like_sync() {
    let env = pair();
    let out = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status(&rec), "SUCCESS");
    assert_eq!(rec["FilesTransferred"], 1, "{rec:#}");
    for phase in [
        "QueuedMs",
        "LaunchingMs",
        "PreparingMs",
        "TransferringMs",
        "VerifyingMs",
        "EndedMs",
    ] {
        assert!(ts(&rec, phase).is_some(), "{phase} missing: {rec:#}");
    }
    let report = rec["ReportPath"].as_str().expect("a report path");
    assert_eq!(common::read_report(Path::new(report)).len(), 1);
    // An execution that fails exits 1: the source directory is gone.
    std::fs::remove_dir_all(env.root().join("a")).unwrap();
    let failed = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(failed.status, 1, "{}", failed.stderr);
    let rec: Value = serde_json::from_str(&failed.stdout).unwrap();
    assert_eq!(status(&rec), "ERROR");
    assert!(
        rec["ErrorDetail"].as_str().unwrap_or("").contains("a"),
        "{rec:#}"
    );
}

#[test]
fn bad_starts_are_usage_errors_and_list_shows_the_tasks() {
    let env = pair();
    let out = env.run(&["task", "start", "nope"]);
    assert_eq!(out.status, 2);
    assert!(
        out.stderr.contains("no task named `nope`"),
        "{}",
        out.stderr
    );
    let out = env.run(&["task", "start", "a-b", "--override", "colour=red"]);
    assert_eq!(out.status, 2);
    assert!(
        out.stderr.contains("unknown option `colour`"),
        "{}",
        out.stderr
    );
    let out = env.run(&["task", "describe", "exec-nope"]);
    assert_eq!(out.status, 2);
    let list = env.run(&["task", "list", "--json"]);
    let tasks: Value = serde_json::from_str(&list.stdout).unwrap();
    let names: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["Name"].as_str())
        .collect();
    assert_eq!(names, ["a-b", "b-a", "b-c-no-queue"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_into_disjoint_prefixes_of_one_bucket_run_at_the_same_time() {
    let server = common::s3s();
    let bucket = server.new_bucket("disjoint").await;
    // `x` and `xy` share a string prefix but not a directory: no conflict.
    let mut env = TaskEnv::new(&format!(
        "[[location]]\nname = \"X\"\nbucket = \"{bucket}\"\nprefix = \"x\"\nendpoint_url = \"{ep}\"\n\n\
         [[location]]\nname = \"XY\"\nbucket = \"{bucket}\"\nprefix = \"xy\"\nendpoint_url = \"{ep}\"\n\n\
         [[task]]\nname = \"to-x\"\nsource = \"{{root}}/a1\"\ndestination = \"X\"\n\n\
         [[task]]\nname = \"to-xy\"\nsource = \"{{root}}/a2\"\ndestination = \"XY\"\n",
        ep = server.endpoint
    ));
    env.vars = server.env();
    for dir in ["a1", "a2"] {
        let d = env.root().join(dir);
        std::fs::create_dir_all(&d).unwrap();
        big_files(&d, 3);
    }
    // Each copies 3 MB at 1 MB/s: about 3 s apiece, so running one after
    // the other could not overlap.
    let ids = [env.start("to-x", SLOW), env.start("to-xy", SLOW)];
    let spans: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let r = env.wait_end(id, Duration::from_secs(120));
            assert_eq!(status(&r), "SUCCESS", "{r:#}");
            (
                ts(&r, "TransferringMs").unwrap(),
                ts(&r, "EndedMs").unwrap(),
            )
        })
        .collect();
    let (a, b) = (spans[0], spans[1]);
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "the two executions did not run at the same time: {a:?} {b:?}"
    );
    for i in 0..3 {
        assert!(server.exists(&bucket, &format!("x/big-{i}.bin")).await);
        assert!(server.exists(&bucket, &format!("xy/big-{i}.bin")).await);
    }
}

#[test]
fn task_start_and_describe_show_control_characters_in_paths_escaped() {
    let env = TaskEnv::new(&common::tasks::PAIR.replace("{root}/b\"", "{root}/b\\u001b[31m\\r\""));
    common::write_tree(&env.root().join("a"), &[("f.txt", b"f")]);
    let started = env.run(&["task", "start", "a-b", "--wait"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    let id = env.run(&["task", "executions", "a-b", "--json"]);
    let recs: Value = serde_json::from_str(&id.stdout).expect("the executions as JSON");
    let id = recs[0]["ExecutionId"].as_str().expect("an execution id");
    let described = env.run(&["task", "describe", id]);
    assert_eq!(described.status, 0, "{}", described.stderr);
    for out in [&started, &described] {
        let all = format!("{}{}", out.stdout, out.stderr);
        assert!(
            !all.contains(['\x1b', '\r']),
            "a raw control character: {all:?}"
        );
        assert!(
            all.contains("/b\\x1b[31m\\x0d"),
            "the path shown escaped: {all}"
        );
    }
    assert_eq!(
        std::fs::read(env.root().join("b\x1b[31m\r/f.txt")).unwrap_or_default(),
        b"f"
    );
}
