//! S3 → S3 between two different servers: no server-side copy is possible,
//! so objects stream through this process (in parallel ranged reads and
//! multipart parts for a large one), with metadata carried over.

mod common;

#[tokio::test(flavor = "multi_thread")]
async fn objects_stream_from_one_server_to_another_with_content_and_metadata() {
    let (moto, s3s) = (common::moto(), common::s3s());
    let src_bucket = moto.new_bucket("xs-src").await;
    let dst_bucket = s3s.new_bucket("xs-dst").await;
    let big: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    moto.put(&src_bucket, "big.bin", &big).await;
    moto.put(&src_bucket, "dir/small.txt", b"small").await;
    // Metadata another tool wrote (rclone's mtime) must arrive too.
    moto.client()
        .await
        .put_object()
        .bucket(&src_bucket)
        .key("meta.txt")
        .metadata("mtime", "1600000000.5")
        .body(b"with metadata".to_vec().into())
        .send()
        .await
        .expect("put meta.txt");

    let state = common::tempdir();
    // s3s-fs checks signatures, moto accepts any key: s3s-fs's credentials serve both sides.
    let mut cmd = common::syncmount_for(&s3s);
    cmd.args([
        "sync",
        &moto.url(&src_bucket, ""),
        &s3s.url(&dst_bucket, "copy"),
        "--src-endpoint-url",
        &moto.endpoint,
        "--dst-endpoint-url",
        &s3s.endpoint,
        "--multipart-threshold",
        "5242880",
        "--part-size",
        "5242880",
        "--json",
        "--state-dir",
    ])
    .arg(state.path());
    let out = common::run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("summary json");
    assert_eq!(summary["FilesTransferred"], 3, "{summary}");
    // Streamed, not copied server-side: the bytes went through this process.
    assert!(
        summary["BytesTransferred"].as_u64().unwrap_or(0) >= big.len() as u64,
        "expected the payload to stream through the process: {summary}"
    );
    assert_eq!(s3s.get(&dst_bucket, "copy/big.bin").await, big);
    assert_eq!(s3s.get(&dst_bucket, "copy/dir/small.txt").await, b"small");
    let meta = s3s.head_metadata(&dst_bucket, "copy/meta.txt").await;
    let mtime_ns = meta.get("file-mtime").map(String::as_str);
    assert_eq!(mtime_ns, Some("1600000000500000000ns"), "{meta:?}");

    // And a second run finds nothing to do.
    let mut again = common::syncmount_for(&s3s);
    again
        .args([
            "sync",
            &moto.url(&src_bucket, ""),
            &s3s.url(&dst_bucket, "copy"),
        ])
        .args([
            "--src-endpoint-url",
            &moto.endpoint,
            "--dst-endpoint-url",
            &s3s.endpoint,
            "--json",
            "--state-dir",
        ])
        .arg(state.path());
    let out = common::run(again);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let summary: serde_json::Value = serde_json::from_str(&out.stdout).expect("summary json");
    assert_eq!(summary["FilesTransferred"], 0, "{summary}");
}
