//! `lock = "s3"` on s3s-fs (which enforces If-None-Match / If-Match): two
//! "hosts" (two state directories, so their local guards never meet)
//! running A→B and B→A are kept apart by the lock object alone; a SIGKILLed
//! holder's lease expires and the other host proceeds; with queueing off
//! the other host's execution fails naming the holder.

mod common;

use std::time::{Duration, Instant};

use common::tasks::{big_files, status, ts, TaskEnv, PAIR};
use serde_json::Value;

async fn two_hosts(lease_seconds: u64) -> (TaskEnv, TaskEnv, common::S3Server, String) {
    let server = common::s3s();
    let bucket = server.new_bucket("locks").await;
    let config = format!(
        "{PAIR}\n[[task]]\nname = \"b-a\"\nsource = \"B\"\ndestination = \"A\"\n\n[[location]]\nname = \"locks\"\nbucket = \"{bucket}\"\nprefix = \"guards\"\nendpoint_url = \"{}\"\n\n[lock]\nkind = \"s3\"\nlocation = \"locks\"\nlease_seconds = {lease_seconds}\n",
        server.endpoint
    );
    let mut one = TaskEnv::new(&config);
    one.vars = server.env();
    common::write_tree(&one.root().join("a"), &[("from-a.txt", b"a")]);
    common::write_tree(&one.root().join("b"), &[("from-b.txt", b"b")]);
    big_files(&one.root().join("a"), 3);
    let two = one.other_host("host-two");
    (one, two, server, bucket)
}

const SLOW: &[&str] = &["--override", "bytes_per_second=1000000"];

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_lock_keeps_a_to_b_and_b_to_a_apart_across_hosts() {
    let (one, two, server, bucket) = two_hosts(30).await;
    let first = one.start("a-b", SLOW);
    one.wait_for(&first, Duration::from_secs(30), |r| {
        status(r) == "TRANSFERRING"
    });
    // The registry object names the holder.
    let registry = common::get_with(
        &server.client().await,
        &bucket,
        "guards/syncmount-guards.json",
    )
    .await;
    assert!(String::from_utf8_lossy(&registry).contains(&first));
    let out = two.run(&["task", "start", "b-a", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let second: Value = serde_json::from_str(&out.stdout).unwrap();
    let first = one.describe(&first);
    assert_eq!(status(&first), "SUCCESS", "{first:#}");
    assert!(
        ts(&second, "LaunchingMs").unwrap() >= ts(&first, "EndedMs").unwrap(),
        "overlap: {first:#} {second:#}"
    );
    // Released (just after the end is recorded): no claim is left.
    let start = Instant::now();
    loop {
        let registry = common::get_with(
            &server.client().await,
            &bucket,
            "guards/syncmount-guards.json",
        )
        .await;
        let reg: Value = serde_json::from_slice(&registry).unwrap();
        if reg["claims"].as_array().map(Vec::len) == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never released: {reg}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_holders_lease_expires_and_the_other_host_proceeds() {
    let (one, two, _server, _bucket) = two_hosts(2).await;
    let first = one.start("a-b", SLOW);
    let rec = one.wait_for(&first, Duration::from_secs(30), |r| {
        status(r) == "TRANSFERRING"
    });
    let pid = rec["Pid"].as_i64().expect("pid") as i32;
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let killed_at = Instant::now();
    let out = two.run(&["task", "start", "b-a", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        killed_at.elapsed() < Duration::from_secs(20),
        "waited far beyond the lease"
    );
    assert_eq!(status(&one.describe(&first)), "ERROR");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_queueing_off_the_other_host_fails_naming_the_holder() {
    let (one, two, _server, _bucket) = two_hosts(30).await;
    let first = one.start("a-b", SLOW);
    one.wait_for(&first, Duration::from_secs(30), |r| {
        status(r) == "TRANSFERRING"
    });
    let out = two.run(&[
        "task",
        "start",
        "b-a",
        "--override",
        "queueing=false",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(rec["ErrorCode"], "TaskBusy", "{rec:#}");
    assert!(
        rec["ErrorDetail"].as_str().unwrap_or("").contains(&first),
        "{rec:#}"
    );
    assert_eq!(
        status(&one.wait_end(&first, Duration::from_secs(30))),
        "SUCCESS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lease_stops_the_execution_as_error_lock_lost_not_cancelled() {
    // A 3 s lease is renewed every second.
    let (one, _two, server, bucket) = two_hosts(3).await;
    let id = one.start("a-b", &["--override", "bytes_per_second=300000"]);
    one.wait_for(&id, Duration::from_secs(30), |r| {
        status(r) == "TRANSFERRING"
    });
    // Another host (or an operator) dropped the claim: the next renewal
    // finds it gone.
    server
        .client()
        .await
        .delete_object()
        .bucket(&bucket)
        .key("guards/syncmount-guards.json")
        .send()
        .await
        .unwrap();
    let rec = one.wait_end(&id, Duration::from_secs(60));
    assert_eq!(status(&rec), "ERROR", "{rec:#}");
    assert_eq!(rec["ErrorCode"], "LockLost", "{rec:#}");
    let detail = rec["ErrorDetail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("s3://{bucket}/guards")),
        "the detail names the lock: {detail}"
    );
}
