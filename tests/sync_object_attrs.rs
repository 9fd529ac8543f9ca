//! S3 → S3 copies keep an object's system metadata (Content-Type,
//! Cache-Control, Content-Encoding, Content-Disposition, Content-Language,
//! Expires), other tools' user metadata and its tags on every path: a
//! server-side CopyObject, a part copy (UploadPartCopy), and a copy
//! streamed through this process (single PUT and multipart upload);
//! `--object-tags none` writes no tags.

mod common;

use common::{counter, S3Server};

const FIVE_MIB: &str = "5242880";

const ATTRS: [(&str, &str); 6] = [
    ("content-type", "text/x-report"),
    ("cache-control", "max-age=60"),
    ("content-encoding", "x-house-encoding"),
    ("content-disposition", "attachment; filename=\"r.txt\""),
    ("content-language", "fr"),
    ("expires", "Thu, 01 Dec 2044 16:00:00 GMT"),
];

async fn put_with_attrs(server: &S3Server, bucket: &str, key: &str, body: Vec<u8>) {
    let expires = aws_smithy_types::DateTime::from_str(
        ATTRS[5].1,
        aws_smithy_types::date_time::Format::HttpDate,
    )
    .expect("an HTTP date");
    server
        .client()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type(ATTRS[0].1)
        .cache_control(ATTRS[1].1)
        .content_encoding(ATTRS[2].1)
        .content_disposition(ATTRS[3].1)
        .content_language(ATTRS[4].1)
        .expires(expires)
        .metadata("team", "blue")
        .tagging("project=apollo&owner=ops%20team")
        .body(body.into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

/// Every attribute of `key` as HEAD shows it, plus the user metadata.
async fn attrs(server: &S3Server, bucket: &str, key: &str) -> Vec<(String, Option<String>)> {
    let h = server
        .head(bucket, key)
        .await
        .unwrap_or_else(|| panic!("{key} is missing"));
    let mut out = vec![
        ("content-type".into(), h.content_type().map(str::to_string)),
        (
            "cache-control".into(),
            h.cache_control().map(str::to_string),
        ),
        (
            "content-encoding".into(),
            h.content_encoding().map(str::to_string),
        ),
        (
            "content-disposition".into(),
            h.content_disposition().map(str::to_string),
        ),
        (
            "content-language".into(),
            h.content_language().map(str::to_string),
        ),
        ("expires".into(), h.expires_string().map(str::to_string)),
    ];
    out.push((
        "x-amz-meta-team".into(),
        h.metadata().and_then(|m| m.get("team")).cloned(),
    ));
    out
}

/// The tags of `key`, sorted.
async fn tags(server: &S3Server, bucket: &str, key: &str) -> Vec<(String, String)> {
    let out = server
        .client()
        .await
        .get_object_tagging()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("tags of {key}: {e:?}"));
    let mut t: Vec<(String, String)> = out
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    t.sort();
    t
}

fn want_tags() -> Vec<(String, String)> {
    vec![
        ("owner".into(), "ops team".into()),
        ("project".into(), "apollo".into()),
    ]
}

fn want() -> Vec<(String, Option<String>)> {
    let mut w: Vec<(String, Option<String>)> = ATTRS
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect();
    w.push(("x-amz-meta-team".into(), Some("blue".into())));
    w
}

/// `small` (one PUT or CopyObject) and `big` (12 MiB: multipart, or a part
/// copy) in a new source bucket, synced to a new destination bucket with
/// `extra` arguments; the summary.
async fn copy_both(server: &S3Server, dst_endpoint: &str, extra: &[&str]) -> (String, String) {
    let src = server.new_bucket("attrs-src").await;
    let dst = server.new_bucket("attrs-dst").await;
    put_with_attrs(server, &src, "small.txt", b"small".to_vec()).await;
    put_with_attrs(server, &src, "big.bin", common::random_bytes(12 << 20)).await;
    let state = common::tempdir();
    let mut cmd = common::syncmount_for(server);
    cmd.args([
        "sync",
        &server.url(&src, ""),
        &server.url(&dst, ""),
        "--src-endpoint-url",
        &server.endpoint,
        "--dst-endpoint-url",
        dst_endpoint,
        "--multipart-threshold",
        FIVE_MIB,
        "--part-size",
        FIVE_MIB,
        "--json",
        "--state-dir",
    ])
    .arg(state.path())
    .args(extra);
    let out = common::run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let summary = common::parse_summary(&out);
    assert_eq!(counter(&summary, "FilesTransferred"), 2, "{summary}");
    (dst, summary.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn server_side_copies_and_part_copies_keep_system_and_user_metadata() {
    let server = common::moto();
    let endpoint = server.endpoint.clone();
    let (dst, summary) = copy_both(
        &server,
        &endpoint,
        &["--multipart-copy-threshold", FIVE_MIB],
    )
    .await;
    let s: serde_json::Value = serde_json::from_str(&summary).expect("json");
    assert!(
        counter(&s, "BytesTransferred") < 12 << 20,
        "expected server-side copies, not streaming: {summary}"
    );
    for key in ["small.txt", "big.bin"] {
        assert_eq!(attrs(&server, &dst, key).await, want(), "{key}");
        assert_eq!(tags(&server, &dst, key).await, want_tags(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_copies_keep_system_and_user_metadata() {
    let server = common::moto();
    // The same server under another name: no server-side copy between
    // different endpoints, so the bytes go through this process.
    let other = server.endpoint.replace("127.0.0.1", "localhost");
    assert_ne!(other, server.endpoint, "the endpoint names 127.0.0.1");
    let (dst, summary) = copy_both(&server, &other, &[]).await;
    let s: serde_json::Value = serde_json::from_str(&summary).expect("json");
    assert!(
        counter(&s, "BytesTransferred") >= 12 << 20,
        "expected the bytes to stream through the process: {summary}"
    );
    for key in ["small.txt", "big.bin"] {
        assert_eq!(attrs(&server, &dst, key).await, want(), "{key}");
        assert_eq!(tags(&server, &dst, key).await, want_tags(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn object_tags_none_writes_no_tags_on_any_path() {
    let server = common::moto();
    let endpoint = server.endpoint.clone();
    let other = server.endpoint.replace("127.0.0.1", "localhost");
    for (how, dst_endpoint, extra) in [
        (
            "server-side",
            endpoint.as_str(),
            vec!["--multipart-copy-threshold", FIVE_MIB],
        ),
        ("streamed", other.as_str(), vec![]),
    ] {
        let mut args = extra.clone();
        args.extend(["--object-tags", "none"]);
        let (dst, _) = copy_both(&server, dst_endpoint, &args).await;
        for key in ["small.txt", "big.bin"] {
            assert_eq!(tags(&server, &dst, key).await, vec![], "{how}: {key}");
            assert_eq!(attrs(&server, &dst, key).await, want(), "{how}: {key}");
        }
    }
}
