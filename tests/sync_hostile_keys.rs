//! Keys that are not safe relative paths (`..`, `.`, empty components,
//! absolute, over-long components, a file that is also a directory prefix)
//! are skipped and reported, and nothing is ever written outside the
//! destination root. Between buckets, the keys DataSync refuses (`//`,
//! `/./`, `/../`) are skipped too, while odd-but-valid keys are copied.
//! Control characters in keys reach the terminal and the text log escaped
//! (`\x1b`), never raw.
//!
//! moto only: s3s-fs stores objects as files and cannot hold these keys
//! (shared/TESTING.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use common::S3Server;

const PREFIX: &str = "hostile";

/// Puts `prefix/key` and checks that moto lists it under exactly that key
/// (so a test never passes because the server rewrote a key).
async fn put_exact(server: &S3Server, bucket: &str, key: &str, body: &[u8]) {
    server.put(bucket, key, body).await;
    let listed = server.keys(bucket, key).await;
    assert!(
        listed.iter().any(|k| k == key),
        "moto did not keep the key {key:?} as given; listed: {listed:?}"
    );
}

/// The report, one JSON value per line, by key (a key reported twice is an error).
fn report_by_key(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let lines = common::read_report(path);
    let mut out = BTreeMap::new();
    for v in &lines {
        let key = v["key"]
            .as_str()
            .unwrap_or_else(|| panic!("report line without key: {v}"))
            .to_string();
        assert!(
            out.insert(key.clone(), v.clone()).is_none(),
            "{key:?} reported twice in {lines:#?}"
        );
    }
    out
}

fn assert_skipped_with_reason(report: &BTreeMap<String, serde_json::Value>, key: &str) {
    let line = report
        .get(key)
        .unwrap_or_else(|| panic!("{key:?} is not in the report: {report:#?}"));
    assert_eq!(line["result"], "skipped", "{key:?}: {line}");
    let reason = line["reason"].as_str().unwrap_or_default();
    assert!(
        !reason.trim().is_empty(),
        "{key:?} skipped without a reason: {line}"
    );
}

/// Every path under `root` (files, directories, symlinks, anything), relative,
/// '/'-separated; symlinks are not followed.
fn walk_all(root: &Path) -> BTreeSet<String> {
    common::tree_entries(root).into_keys().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_keys_are_skipped_and_reported_and_nothing_lands_outside_the_destination() {
    let server = common::moto();
    let bucket = server.new_bucket("hostile-local").await;
    let long_component = "L".repeat(256);
    // Keys relative to PREFIX/, with the reason they cannot be paths.
    let hostile: Vec<String> = vec![
        "../escape".into(),            // parent component: would be ../escape
        "a/../../escape2".into(),      // climbs out through a subdirectory
        "./dot".into(),                // `.` component
        "a//b".into(),                 // empty component
        "/abs".into(),                 // PREFIX + "//abs": absolute once relative
        format!("{long_component}/f"), // component over 255 bytes
        "x".into(),                    // a file that is also the directory x/
    ];
    let good = [("ok/normal", &b"normal file"[..]), ("x/y", &b"in x"[..])];
    for key in &hostile {
        put_exact(
            &server,
            &bucket,
            &format!("{PREFIX}/{key}"),
            format!("hostile {key}").as_bytes(),
        )
        .await;
    }
    for (key, body) in good {
        put_exact(&server, &bucket, &format!("{PREFIX}/{key}"), body).await;
    }

    // The destination sits inside a parent of its own, so that every escape
    // (`..` from the root) would land in the parent, where we look.
    let parent = common::tempdir();
    let dest = parent.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir dest");
    let state = common::tempdir();
    let out_dir = common::tempdir();
    let report = out_dir.path().join("report.jsonl");
    let abs_existed = Path::new("/abs").exists();

    let out = common::run_sync_with_report(
        &server,
        &server.endpoint,
        &server.url(&bucket, PREFIX),
        &dest.to_string_lossy(),
        state.path(),
        &report,
    );

    // Nothing outside the destination root: the parent holds `dest` alone,
    // and nothing appeared at the root of the filesystem.
    let outside: Vec<String> = walk_all(parent.path())
        .into_iter()
        .filter(|p| p != "dest" && !p.starts_with("dest/"))
        .collect();
    assert!(
        outside.is_empty(),
        "written outside the destination: {outside:?}"
    );
    if !abs_existed {
        assert!(
            !Path::new("/abs").exists(),
            "the key `/abs` was written to /abs"
        );
    }

    // Inside: exactly the two good files and their directories.
    let inside = walk_all(&dest);
    let expected: BTreeSet<String> = ["ok", "ok/normal", "x", "x/y"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(inside, expected, "destination tree");
    let tree = common::read_tree(&dest);
    assert_eq!(tree["ok/normal"], b"normal file");
    assert_eq!(tree["x/y"], b"in x");

    // Each hostile key is reported as skipped, with a reason.
    let lines = report_by_key(&report);
    for key in &hostile {
        assert_skipped_with_reason(&lines, key);
    }
    for (key, _) in good {
        assert_eq!(
            lines.get(key).map(|l| l["result"].clone()),
            Some("ok".into()),
            "{key}: {lines:#?}"
        );
    }

    // Skips are not failures.
    assert_eq!(out.status, 0, "skipped keys must not fail the execution");
    let s = common::parse_summary(&out);
    assert_eq!(s["Status"], "SUCCESS", "{s}");
    assert_eq!(s["FilesTransferred"], 2, "{s}");
    assert_eq!(s["FilesFailed"], 0, "{s}");
    assert_eq!(s["FilesSkipped"], hostile.len(), "{s}");
}

/// moto keeps a NUL byte in a key; such a key cannot be a file name.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_with_a_nul_byte_is_skipped_and_reported() {
    let server = common::moto();
    let bucket = server.new_bucket("hostile-nul").await;
    let client = server.client().await;
    let nul_key = format!("{PREFIX}/nul\0byte");
    client
        .put_object()
        .bucket(&bucket)
        .key(&nul_key)
        .body(ByteStream::from_static(b"nul"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("moto refused a NUL key: {e:?}"));
    server
        .put(&bucket, &format!("{PREFIX}/fine"), b"fine")
        .await;
    // A NUL cannot appear in XML 1.0: the key is only listed percent-encoded
    // (`encoding-type=url`, as S3 documents for such keys).
    let listed: Vec<String> = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(PREFIX)
        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
        .send()
        .await
        .expect("ListObjectsV2 with encoding-type=url")
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert_eq!(
        listed,
        vec![format!("{PREFIX}/fine"), format!("{PREFIX}/nul%00byte")],
        "moto did not keep the NUL key as given"
    );

    let parent = common::tempdir();
    let dest = parent.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir dest");
    let state = common::tempdir();
    let out_dir = common::tempdir();
    let report = out_dir.path().join("report.jsonl");
    let out = common::run_sync_with_report(
        &server,
        &server.endpoint,
        &server.url(&bucket, PREFIX),
        &dest.to_string_lossy(),
        state.path(),
        &report,
    );

    assert_eq!(
        walk_all(parent.path()),
        ["dest", "dest/fine"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    assert_skipped_with_reason(&report_by_key(&report), "nul\0byte");
    assert_eq!(out.status, 0);
    assert_eq!(common::parse_summary(&out)["FilesFailed"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn between_buckets_keys_datasync_refuses_are_skipped_and_odd_valid_keys_are_copied() {
    let server = common::moto();
    let src_bucket = server.new_bucket("hostile-s3-src").await;
    let dst_bucket = server.new_bucket("hostile-s3-dst").await;
    let refused = ["a//b", "c/./d", "e/../f", "/abs"];
    let copied = [
        "ok/normal",
        "with spaces/a file name.txt",
        "a..b",
        "dots.../..x",
    ];
    for key in refused.iter().chain(copied.iter()) {
        put_exact(
            &server,
            &src_bucket,
            &format!("{PREFIX}/{key}"),
            format!("body of {key}").as_bytes(),
        )
        .await;
    }
    let state = common::tempdir();
    let out_dir = common::tempdir();
    let report = out_dir.path().join("report.jsonl");

    let out = common::run_sync_with_report(
        &server,
        &server.endpoint,
        &server.url(&src_bucket, PREFIX),
        &server.url(&dst_bucket, "copy"),
        state.path(),
        &report,
    );

    let mut expected: Vec<String> = copied.iter().map(|k| format!("copy/{k}")).collect();
    expected.sort();
    assert_eq!(server.keys(&dst_bucket, "").await, expected);
    for key in copied {
        assert_eq!(
            server
                .get_unvalidated(&dst_bucket, &format!("copy/{key}"))
                .await,
            format!("body of {key}").into_bytes(),
            "{key}"
        );
    }

    let lines = report_by_key(&report);
    for key in refused {
        assert_skipped_with_reason(&lines, key);
    }
    for key in copied {
        assert_eq!(
            lines.get(key).map(|l| l["result"].clone()),
            Some("ok".into()),
            "{key}: {lines:#?}"
        );
    }
    assert_eq!(out.status, 0, "refused keys are skips, not failures");
    let s = common::parse_summary(&out);
    assert_eq!(s["Status"], "SUCCESS", "{s}");
    assert_eq!(s["FilesTransferred"], copied.len(), "{s}");
    assert_eq!(s["FilesSkipped"], refused.len(), "{s}");
    assert_eq!(s["FilesFailed"], 0, "{s}");
}

/// The destination root is created when missing, inside its parent and
/// nowhere else, like `syncmount sync ./a ./b` on a fresh machine.
#[tokio::test(flavor = "multi_thread")]
async fn a_destination_root_that_does_not_exist_yet_is_created_and_filled() {
    let server = common::moto();
    let bucket = server.new_bucket("new-root").await;
    put_exact(&server, &bucket, &format!("{PREFIX}/ok/normal"), b"normal").await;
    put_exact(&server, &bucket, &format!("{PREFIX}/top"), b"top").await;

    let parent = common::tempdir();
    let dest = parent.path().join("not").join("there").join("yet");
    let state = common::tempdir();
    let out_dir = common::tempdir();
    let report = out_dir.path().join("report.jsonl");
    let out = common::run_sync_with_report(
        &server,
        &server.endpoint,
        &server.url(&bucket, PREFIX),
        &dest.to_string_lossy(),
        state.path(),
        &report,
    );

    assert_eq!(out.status, 0, "a missing destination root is created");
    assert_eq!(common::parse_summary(&out)["FilesTransferred"], 2);
    let expected: BTreeMap<String, Vec<u8>> = [
        ("ok/normal".to_string(), b"normal".to_vec()),
        ("top".to_string(), b"top".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_eq!(common::read_tree(&dest), expected);
    let outside: Vec<String> = walk_all(parent.path())
        .into_iter()
        .filter(|p| !p.starts_with("not/there/yet/"))
        .collect();
    assert_eq!(outside, vec!["not", "not/there", "not/there/yet"]);
}

/// Neither raw ESC nor CR nor BEL in a command's output, and the escaped
/// form of the key is there.
fn assert_shown_escaped(out: &common::RunOutput, what: &str) {
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains(['\x1b', '\r', '\x07']),
            "{what}: a raw control character on {stream}: {text:?}"
        );
    }
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("red\\x1b[31mkey\\x0d\\x07.txt"),
        "{what}: the key is shown escaped: {all}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_in_keys_are_escaped_in_human_output_both_ways() {
    let server = common::moto();
    let bucket = server.new_bucket("ctl-keys").await;
    let name = "red\x1b[31mkey\r\x07.txt";
    // Not put_exact: a listing without EncodingType=url cannot carry ESC
    // in XML (syncmount lists with it).
    server
        .put(&bucket, &format!("down/{name}"), b"escape")
        .await;
    let tmp = common::tempdir();
    let state = tmp.path().join("state");
    let local = tmp.path().join("local");
    let out = common::run(common::sync_cmd(
        &server,
        &state,
        &[
            "-v",
            &server.url(&bucket, "down"),
            &common::path_str(&local),
        ],
    ));
    assert_eq!(out.status, 0, "sync down: {}", out.stderr);
    assert_shown_escaped(&out, "sync -v down");
    assert_eq!(
        std::fs::read(local.join(name)).unwrap_or_default(),
        b"escape"
    );

    let out = common::run(common::sync_cmd(
        &server,
        &state,
        &["-v", &common::path_str(&local), &server.url(&bucket, "up")],
    ));
    assert_eq!(out.status, 0, "sync up: {}", out.stderr);
    assert_shown_escaped(&out, "sync -v up");
    assert!(
        server.head(&bucket, &format!("up/{name}")).await.is_some(),
        "uploaded under the same key"
    );
}

#[test]
fn a_failed_key_with_control_characters_is_escaped_in_the_summary() {
    let tmp = common::tempdir();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let name = "red\x1b[31mkey\r\x07.txt";
    common::write_tree(&a, &[(name, b"x")]);
    // A directory where the file goes: the copy fails, the summary lists it.
    common::write_tree(&b, &[(&format!("{name}/inner"), b"y")]);
    let out = common::run(common::sync_cmd(
        None,
        &tmp.path().join("state"),
        &[
            &common::path_str(&a),
            &common::path_str(&b),
            "--overwrite",
            "always",
        ],
    ));
    assert_eq!(out.status, 1, "the clash fails: {}", out.stderr);
    assert_shown_escaped(&out, "sync with a failed key");
    assert!(
        out.stderr
            .contains("failed: red\\x1b[31mkey\\x0d\\x07.txt (copy)"),
        "{}",
        out.stderr
    );
}
