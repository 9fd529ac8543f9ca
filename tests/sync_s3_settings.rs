//! Per-location S3 settings: the storage class and server-side encryption
//! of written objects reach the server (single PUT, multipart upload,
//! CopyObject; moto stores and returns them), requester pays and the
//! expected bucket owner go with every request (seen by a proxy in front of
//! the server), point-in-time verification into an archive class is
//! refused before anything is written, and bad values are errors naming
//! them.

mod common;

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::{counter, path_str, sync_json, sync_ok, write_tree};

const FIVE_MIB: &str = "5242880";

#[tokio::test(flavor = "multi_thread")]
async fn storage_class_and_sse_reach_every_kind_of_write() {
    let server = common::moto();
    let bucket = server.new_bucket("class").await;
    let copy = server.new_bucket("class-copy").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let big = common::random_bytes(6 << 20);
    write_tree(src.path(), &[("small.txt", b"small"), ("big.bin", &big)]);
    let summary = sync_ok(
        &server,
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--storage-class",
            "standard_ia",
            "--sse",
            "aes256",
            "--multipart-threshold",
            FIVE_MIB,
            "--part-size",
            FIVE_MIB,
        ],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 2, "{summary}");
    for key in ["small.txt", "big.bin"] {
        let h = server.head(&bucket, key).await.expect("written");
        assert_eq!(
            h.storage_class().map(|c| c.as_str()),
            Some("STANDARD_IA"),
            "{key}"
        );
        assert_eq!(
            h.server_side_encryption().map(|e| e.as_str()),
            Some("AES256"),
            "{key}"
        );
    }
    // SSE-KMS with a named key (moto stores the header; it checks no key).
    let kms = server.new_bucket("kms").await;
    let key_arn = "arn:aws:kms:us-east-1:123456789012:key/syncmount-test";
    sync_ok(
        &server,
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&kms, ""),
            "--sse",
            "aws:kms",
            "--sse-kms-key-id",
            key_arn,
            "--multipart-threshold",
            FIVE_MIB,
            "--part-size",
            FIVE_MIB,
        ],
    );
    for key in ["small.txt", "big.bin"] {
        let h = server.head(&kms, key).await.expect("written");
        assert_eq!(
            h.server_side_encryption().map(|e| e.as_str()),
            Some("aws:kms"),
            "{key}"
        );
        assert_eq!(h.ssekms_key_id(), Some(key_arn), "{key}");
    }
    // A server-side copy within the server takes the destination's class.
    let summary = sync_ok(
        &server,
        state.path(),
        &[
            &server.url(&bucket, ""),
            &server.url(&copy, ""),
            "--storage-class",
            "ONEZONE_IA",
        ],
    );
    assert!(
        counter(&summary, "BytesTransferred") < big.len() as u64,
        "expected server-side copies: {summary}"
    );
    for key in ["small.txt", "big.bin"] {
        let h = server.head(&copy, key).await.expect("copied");
        assert_eq!(
            h.storage_class().map(|c| c.as_str()),
            Some("ONEZONE_IA"),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requester_pays_and_the_expected_owner_go_with_every_request() {
    let server = common::moto();
    let bucket = server.new_bucket("owner").await;
    server.put(&bucket, "old.txt", b"old").await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let state = common::tempdir();
    let src = common::tempdir();
    write_tree(src.path(), &[("a.txt", b"a"), ("b/c.txt", b"c")]);
    let summary = sync_ok(
        &via,
        state.path(),
        &[
            &path_str(src.path()),
            &via.url(&bucket, ""),
            "--dst-expected-bucket-owner",
            "123456789012",
            "--requester-pays",
        ],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 2, "{summary}");
    let heads = proxy.counters.heads();
    assert!(
        heads.len() >= 3,
        "listing and two writes at least: {heads:#?}"
    );
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nx-amz-expected-bucket-owner: 123456789012\r\n")
                && lower.contains("\r\nx-amz-request-payer: requester\r\n"),
            "a request without the headers:\n{h}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_side_copy_names_the_expected_owner_of_its_source_bucket() {
    let server = common::moto();
    let (src, dst) = (
        server.new_bucket("owner-src").await,
        server.new_bucket("owner-dst").await,
    );
    server.put(&src, "a.txt", b"a").await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let state = common::tempdir();
    let summary = sync_ok(
        &via,
        state.path(),
        &[
            &via.url(&src, ""),
            &via.url(&dst, ""),
            "--src-expected-bucket-owner",
            "123456789012",
            "--dst-expected-bucket-owner",
            "123456789012",
        ],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 1, "{summary}");
    let copies: Vec<String> = proxy
        .counters
        .heads()
        .into_iter()
        .filter(|h| h.to_ascii_lowercase().contains("\r\nx-amz-copy-source:"))
        .collect();
    assert_eq!(copies.len(), 1, "one CopyObject: {copies:#?}");
    let lower = copies[0].to_ascii_lowercase();
    assert!(
        lower.contains("\r\nx-amz-source-expected-bucket-owner: 123456789012\r\n")
            && lower.contains("\r\nx-amz-expected-bucket-owner: 123456789012\r\n"),
        "{}",
        copies[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_verification_into_an_archive_class_is_refused_before_anything_is_written() {
    let server = common::moto();
    let bucket = server.new_bucket("glacier").await;
    let state = common::tempdir();
    let src = common::tempdir();
    write_tree(src.path(), &[("a.txt", b"a")]);
    let (out, summary) = sync_json(
        &server,
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--storage-class",
            "GLACIER",
            "--verify-mode",
            "point-in-time-consistent",
        ],
    );
    assert_ne!(out.status, 0, "{summary}");
    assert_eq!(summary["Status"], "ERROR", "{summary}");
    let detail = summary["ErrorDetail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("POINT_IN_TIME_CONSISTENT")
            && detail.contains("GLACIER")
            && detail.contains("only-files-transferred"),
        "{summary}"
    );
    assert!(server.keys(&bucket, "").await.is_empty());
    // The default verification works (HEADs need no restore).
    let summary = sync_ok(
        &server,
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--storage-class",
            "GLACIER",
        ],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 1, "{summary}");
    let h = server.head(&bucket, "a.txt").await.expect("written");
    assert_eq!(h.storage_class().map(|c| c.as_str()), Some("GLACIER"));
}

#[test]
fn bad_values_are_errors_naming_them() {
    let state = common::tempdir();
    let src = common::tempdir();
    let dst = common::tempdir();
    let (s, d) = (path_str(src.path()), path_str(dst.path()));
    for (flag, value, words) in [
        ("--storage-class", "COLD", &["`COLD`", "STANDARD_IA"][..]),
        ("--sse", "kms", &["kms", "aws:kms"][..]),
        (
            "--dst-expected-bucket-owner",
            "acme",
            &["`acme`", "12 digits"][..],
        ),
    ] {
        let out = common::run(common::sync_cmd(None, state.path(), &[&s, &d, flag, value]));
        assert_eq!(out.status, 2, "{flag} {value}: {}", out.stderr);
        for w in words {
            assert!(out.stderr.contains(w), "{flag} {value}: {}", out.stderr);
        }
    }
    // In the config file, the location and the key are named.
    let env = common::tasks::TaskEnv::new(
        "[[location]]\nname = \"cold\"\nbucket = \"b\"\nstorage_class = \"FROZEN\"\n\n[[location]]\nname = \"here\"\npath = \"/tmp\"\nsse = \"aes256\"\n",
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2, "{}\n{}", out.stdout, out.stderr);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("location `cold`") && text.contains("`FROZEN`"),
        "{text}"
    );
    assert!(
        text.contains("location `here` has a path") && text.contains("sse"),
        "{text}"
    );
}
