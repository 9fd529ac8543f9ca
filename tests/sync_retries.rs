//! Throttling (503 SlowDown), 500 InternalError and dropped connections are
//! retried with backoff; an object that keeps failing fails alone, with a
//! clear error, and the run goes on with the others.
//!
//! The faults come from a TCP proxy (tests/common/fault_proxy.rs) placed in
//! front of s3s-fs; the results are read directly from s3s-fs.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use aws_sdk_s3::error::ProvideErrorMetadata;
use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::S3Server;

/// Ten small files with distinct contents, named `file-00` … `file-09`
/// (or with `poison` in place of the first one).
fn ten_files(with_poison: bool) -> Vec<(String, Vec<u8>)> {
    (0..10)
        .map(|i| {
            let name = if with_poison && i == 0 {
                "poison".to_string()
            } else {
                format!("file-{i:02}")
            };
            let mut body = format!("body of {name}\n").into_bytes();
            body.extend((0..(i * 700)).map(|j| (j * 31 + i) as u8));
            (name, body)
        })
        .collect()
}

/// A client for `endpoint` that never retries, so each call is one request.
fn one_shot_client(server: &S3Server, endpoint: &str) -> aws_sdk_s3::Client {
    let config = common::s3_config(endpoint, server.credentials())
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The proxy itself: scripted faults reach an S3 client as S3 errors (or a
/// dropped connection), then requests pass through to the real server.
#[tokio::test(flavor = "multi_thread")]
async fn the_fault_proxy_answers_like_a_throttled_s3_and_then_passes_requests_through() {
    let server = common::s3s();
    let bucket = server.new_bucket("proxy-self").await;
    server.put(&bucket, "k", b"through the proxy").await;
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan::Script(vec![
            Some(Fault::SlowDown),
            Some(Fault::InternalError),
            Some(Fault::Drop),
        ]),
    );
    let client = one_shot_client(&server, &proxy.endpoint);

    let e = client
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .expect_err("first request is answered 503");
    assert_eq!(e.code(), Some("SlowDown"), "{e:?}");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(503));

    let e = client
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .expect_err("second request is answered 500");
    assert_eq!(e.code(), Some("InternalError"), "{e:?}");
    assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(500));

    let e = client
        .get_object()
        .bucket(&bucket)
        .key("k")
        .send()
        .await
        .expect_err("third request gets its connection dropped");
    assert!(
        e.raw_response().is_none(),
        "a dropped connection has no response: {e:?}"
    );

    for _ in 0..2 {
        let body = client
            .get_object()
            .bucket(&bucket)
            .key("k")
            .send()
            .await
            .expect("requests after the script pass")
            .body
            .collect()
            .await
            .expect("body through the proxy")
            .into_bytes();
        assert_eq!(&body[..], b"through the proxy");
    }
    let c = &proxy.counters;
    assert_eq!(
        (c.faults(), c.slow_downs(), c.internal_errors(), c.drops()),
        (3, 1, 1, 1),
        "{:?}",
        c.log()
    );
    assert_eq!(c.passed(), 2, "{:?}", c.log());
    assert_eq!(c.requests(), 5, "{:?}", c.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_through_slowdowns_500s_and_dropped_connections_retries_and_completes() {
    let server = common::s3s();
    let bucket = server.new_bucket("retry-transient").await;
    let src = common::tempdir();
    let state = common::tempdir();
    let out_dir = common::tempdir();
    let report = out_dir.path().join("report.jsonl");
    let files = ten_files(false);
    common::write_files(src.path(), &files);

    // Seven faults of all three kinds among the first eight requests; one
    // request in between passes (so that not every fault lands on the
    // destination listing).
    let script = vec![
        Some(Fault::SlowDown),
        None,
        Some(Fault::Drop),
        Some(Fault::InternalError),
        Some(Fault::SlowDown),
        Some(Fault::Drop),
        Some(Fault::InternalError),
        Some(Fault::SlowDown),
    ];
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::Script(script));

    let started = Instant::now();
    let out = common::run_sync_with_report(
        &server,
        &proxy.endpoint,
        &src.path().to_string_lossy(),
        &server.url(&bucket, "up/"),
        state.path(),
        &report,
    );
    println!("elapsed: {:?}", started.elapsed());
    println!("proxy log: {:#?}", proxy.counters.log());

    assert_eq!(out.status, 0, "the faults are transient: the run succeeds");
    let s = common::parse_summary(&out);
    assert_eq!(s["Status"], "SUCCESS", "{s}");
    assert_eq!(s["FilesTransferred"], 10, "{s}");
    assert_eq!(s["FilesFailed"], 0, "{s}");

    // Read directly from the real server, not through the proxy.
    let expected: Vec<String> = files.iter().map(|(k, _)| format!("up/{k}")).collect();
    assert_eq!(server.keys(&bucket, "").await, expected);
    for (key, body) in &files {
        assert_eq!(
            &server.get(&bucket, &format!("up/{key}")).await,
            body,
            "content of up/{key}"
        );
    }

    let c = &proxy.counters;
    assert!(c.faults() >= 6, "faults injected: {}", c.faults());
    assert_eq!(c.faults(), 7, "every scripted fault was hit: {:?}", c.log());
    assert!(
        c.slow_downs() >= 1 && c.drops() >= 1 && c.internal_errors() >= 1,
        "{:?}",
        c.log()
    );
    // Every object needed at least one request that passed.
    assert!(c.passed() >= 10, "{:?}", c.log());

    let records = common::read_report(&report);
    for (key, _) in &files {
        assert!(
            records
                .iter()
                .any(|r| r["key"] == key.as_str() && r["result"] == "ok"),
            "report has no ok line for {key}: {records:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_that_always_gets_slowdown_fails_after_retries_and_the_others_are_transferred() {
    let server = common::s3s();
    let bucket = server.new_bucket("retry-p");
    let bucket = bucket.await;
    // Only the object's own requests may carry the poison substring.
    assert!(!bucket.contains("poison"), "{bucket}");
    let src = common::tempdir();
    let state = common::tempdir();
    let out_dir = common::tempdir();
    let report = out_dir.path().join("report.jsonl");
    let files = ten_files(true);
    common::write_files(src.path(), &files);

    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan::fail_path_containing("poison", Fault::SlowDown),
    );

    let started = Instant::now();
    let out = common::run_sync_with_report(
        &server,
        &proxy.endpoint,
        &src.path().to_string_lossy(),
        &server.url(&bucket, "up/"),
        state.path(),
        &report,
    );
    let elapsed = started.elapsed();
    println!("elapsed: {elapsed:?}");
    println!("proxy log: {:#?}", proxy.counters.log());

    assert_eq!(
        out.status, 1,
        "one object failed: the execution ends in ERROR"
    );
    let s = common::parse_summary(&out);
    assert_eq!(s["Status"], "ERROR", "{s}");
    assert_eq!(s["FilesFailed"], 1, "{s}");
    assert_eq!(s["FilesTransferred"], 9, "{s}");
    let failed = s["FailedObjects"]
        .as_array()
        .unwrap_or_else(|| panic!("no FailedObjects in {s}"));
    assert_eq!(failed.len(), 1, "{s}");
    assert_eq!(failed[0]["key"], "poison", "{s}");
    let error = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("SlowDown") || error.contains("503"),
        "the error says why: {error:?}"
    );

    // The other nine are on the real server, intact; poison is not.
    let expected: BTreeMap<String, Vec<u8>> = files
        .iter()
        .filter(|(k, _)| k != "poison")
        .map(|(k, v)| (format!("up/{k}"), v.clone()))
        .collect();
    assert_eq!(
        server.keys(&bucket, "").await,
        expected.keys().cloned().collect::<Vec<_>>()
    );
    for (key, body) in &expected {
        assert_eq!(&server.get(&bucket, key).await, body, "content of {key}");
    }

    // Retries happened: poison was asked for more than once, and every such
    // request got a SlowDown.
    let c = &proxy.counters;
    assert!(
        c.matching() >= 2,
        "requests for poison: {} (no retry?) {:?}",
        c.matching(),
        c.log()
    );
    assert_eq!(c.faults(), c.matching(), "{:?}", c.log());
    // ... with backoff between the tries (full jitter: a sum of many random
    // waits of up to seconds each, far above this floor).
    assert!(
        elapsed >= std::time::Duration::from_secs(2),
        "{} tries for poison in {elapsed:?}: no backoff?",
        c.matching()
    );
    assert_eq!(c.slow_downs(), c.matching());
    println!("poison was tried {} times over {elapsed:?}", c.matching());

    let records = common::read_report(&report);
    let poison = common::records_for(&records, "poison");
    assert_eq!(poison.len(), 1, "{records:#?}");
    assert_eq!(poison[0]["result"], "failed", "{records:#?}");
    assert!(poison[0]["error"].as_str().is_some_and(|e| !e.is_empty()));
}
