//! Issue 13: the part size grows per object so every multipart upload and
//! part copy fits in S3's 10,000 parts. The limit is lowered through the
//! hidden `--max-parts` flag, so a "too many parts" object is 22 MiB here
//! instead of 80 GiB; the parts the store reports (the composite checksum's
//! `-N`) show how many were sent.

mod common;

use common::{path_str, read_report, records_for, sync_ok};

const FIVE_MIB: &str = "5242880";

/// The part count in a report line's composite checksum (`crc32c:…-N`).
fn parts_of(report: &[serde_json::Value], key: &str) -> u64 {
    let rec = records_for(report, key);
    let sum = rec
        .iter()
        .find_map(|r| r["checksum"].as_str())
        .unwrap_or_else(|| panic!("no checksum reported for {key}: {rec:?}"));
    sum.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("{key}: not a multipart checksum: {sum}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_and_a_part_copy_that_would_need_too_many_parts_get_bigger_parts() {
    let s3 = common::s3s();
    let bucket = s3.new_bucket("part-size").await;
    let src = common::tempdir();
    // 22 MiB in 5 MiB parts is 5 parts; with at most 3, parts grow to 8 MiB.
    let body = common::random_bytes(22 * 1024 * 1024);
    std::fs::write(src.path().join("big.bin"), &body).unwrap();
    let state = common::tempdir();
    for (max_parts, expected) in [("3", 3), ("10", 5)] {
        let prefix = format!("up{max_parts}");
        let report = state.path().join(format!("{prefix}.jsonl"));
        sync_ok(
            &s3,
            state.path(),
            &[
                &path_str(src.path()),
                &s3.url(&bucket, &prefix),
                "--part-size",
                FIVE_MIB,
                "--multipart-threshold",
                FIVE_MIB,
                "--max-parts",
                max_parts,
                "--report",
                &path_str(&report),
            ],
        );
        assert_eq!(
            parts_of(&read_report(&report), "big.bin"),
            expected,
            "at most {max_parts} parts"
        );
        assert!(s3.get(&bucket, &format!("{prefix}/big.bin")).await == body);
    }

    // A server-side copy in parts (UploadPartCopy) obeys the same limit.
    let report = state.path().join("copy.jsonl");
    sync_ok(
        &s3,
        state.path(),
        &[
            &s3.url(&bucket, "up3"),
            &s3.url(&bucket, "copy"),
            "--part-size",
            FIVE_MIB,
            "--multipart-copy-threshold",
            FIVE_MIB,
            "--max-parts",
            "3",
            "--report",
            &path_str(&report),
        ],
    );
    assert!(s3.get(&bucket, "copy/big.bin").await == body);
    // A part copy's checksum is the store's to compute: a multipart
    // object's ETag ends in `-N`, its part count.
    let head = s3
        .head(&bucket, "copy/big.bin")
        .await
        .expect("the copy exists");
    let parts = head
        .e_tag()
        .and_then(|e| e.trim_matches('"').rsplit_once('-'))
        .and_then(|(_, n)| n.parse::<u64>().ok());
    assert_eq!(parts, Some(3), "{head:?}");
}
