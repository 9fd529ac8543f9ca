//! `syncmount sync` task options, each against a real S3 server (s3s-fs,
//! the faithful data path) or between local directories where S3 adds
//! nothing: transfer mode, overwrite, deleted files, filters, dry run, the
//! task report, the JSON summary, verification, the bandwidth limit,
//! concurrency and the exit code of a run with a failed object.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use common::{
    at, counter, path_str, read_report, records_for, set_mtime, sync_cmd, sync_json, sync_ok,
};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A local tree of `n` small files `f00.txt`, `f01.txt`, … with old mtimes.
fn small_tree(root: &Path, n: usize) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            (
                format!("f{i:02}.txt"),
                format!("file {i:02} body").into_bytes(),
            )
        })
        .collect();
    common::write_files(root, &files);
    for (i, (rel, _)) in files.iter().enumerate() {
        set_mtime(&root.join(rel), at(1_680_000_000 + i as u64, 0));
    }
    files
}

/// Whether `stdout` has a line `would <verb> <key>` (optionally followed by
/// a space and the reason).
fn has_would_line(stdout: &str, verb: &str, key: &str) -> bool {
    let exact = format!("would {verb} {key}");
    stdout
        .lines()
        .any(|l| l == exact || l.starts_with(&format!("{exact} ")))
}

// ---------------------------------------------------------------------------
// --transfer-mode
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn transfer_mode_all_copies_unchanged_files_again() {
    let server = common::s3s();
    let bucket = server.new_bucket("mode-all").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let files = small_tree(src.path(), 6);
    let url = server.url(&bucket, "");
    let src_arg = path_str(src.path());

    let first = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&first, "FilesTransferred"), 6, "{first}");
    let changed = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&changed, "FilesTransferred"), 0, "{changed}");

    let all = sync_ok(
        Some(&server),
        state.path(),
        &[&src_arg, &url, "--transfer-mode", "all"],
    );
    assert_eq!(counter(&all, "FilesTransferred"), 6, "{all}");
    let bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(counter(&all, "BytesWritten"), bytes, "{all}");
    assert_eq!(counter(&all, "FilesSkipped"), 0, "{all}");
}

// ---------------------------------------------------------------------------
// --overwrite
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn overwrite_never_leaves_a_changed_destination_object_alone_and_reports_it_skipped() {
    let server = common::s3s();
    let bucket = server.new_bucket("overwrite-never").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let reports = common::tempdir();
    small_tree(src.path(), 3);
    let url = server.url(&bucket, "");
    let src_arg = path_str(src.path());
    sync_ok(Some(&server), state.path(), &[&src_arg, &url]);

    // Changed content, size and mtime: a CHANGED task would copy it.
    let changed = src.path().join("f01.txt");
    std::fs::write(&changed, b"a much longer, different body for file 01").unwrap();
    set_mtime(&changed, at(1_690_000_000, 0));
    // And a new file, which NEVER does not stop.
    common::write_tree(src.path(), &[("new.txt", b"new file")]);

    let report = reports.path().join("never.jsonl");
    let summary = sync_ok(
        Some(&server),
        state.path(),
        &[
            &src_arg,
            &url,
            "--overwrite",
            "never",
            "--report",
            &path_str(&report),
        ],
    );
    assert_eq!(server.get(&bucket, "f01.txt").await, b"file 01 body");
    assert_eq!(server.get(&bucket, "new.txt").await, b"new file");
    assert_eq!(counter(&summary, "FilesTransferred"), 1, "{summary}");
    assert_eq!(counter(&summary, "FilesSkipped"), 3, "{summary}");
    let lines = read_report(&report);
    let f01 = records_for(&lines, "f01.txt");
    assert_eq!(f01.len(), 1, "{lines:?}");
    assert_eq!(f01[0]["action"], "skip", "{:?}", f01[0]);
    assert_eq!(f01[0]["result"], "skipped", "{:?}", f01[0]);

    // ALWAYS (the default) does overwrite it.
    let summary = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&summary, "FilesTransferred"), 1, "{summary}");
    assert_eq!(
        server.get(&bucket, "f01.txt").await,
        b"a much longer, different body for file 01"
    );
}

// ---------------------------------------------------------------------------
// --preserve-deleted-files
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn preserve_deleted_files_remove_deletes_destination_only_keys_and_preserve_keeps_them() {
    let server = common::s3s();
    let bucket = server.new_bucket("remove").await;
    let state = common::tempdir();
    let src = common::tempdir();
    small_tree(src.path(), 3);
    let extras = ["p/gone-1.txt", "p/sub/gone-2.txt"];
    for k in extras {
        server.put(&bucket, k, b"only at the destination").await;
    }
    // Outside the destination prefix: never touched.
    server.put(&bucket, "elsewhere.txt", b"not ours").await;
    let url = server.url(&bucket, "p");
    let src_arg = path_str(src.path());

    let kept = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&kept, "FilesDeleted"), 0, "{kept}");
    let keys = server.keys(&bucket, "").await;
    for k in extras {
        assert!(
            keys.contains(&k.to_string()),
            "PRESERVE deleted {k}: {keys:?}"
        );
    }

    let removed = sync_ok(
        Some(&server),
        state.path(),
        &[&src_arg, &url, "--preserve-deleted-files", "remove"],
    );
    assert_eq!(counter(&removed, "FilesDeleted"), 2, "{removed}");
    assert_eq!(counter(&removed, "FilesTransferred"), 0, "{removed}");
    assert_eq!(
        server.keys(&bucket, "").await,
        vec!["elsewhere.txt", "p/f00.txt", "p/f01.txt", "p/f02.txt"]
    );
}

// ---------------------------------------------------------------------------
// --include / --exclude
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn include_and_exclude_patterns_select_only_the_matching_keys() {
    let server = common::s3s();
    let bucket = server.new_bucket("filters").await;
    let state = common::tempdir();
    let src = common::tempdir();
    common::write_tree(
        src.path(),
        &[
            ("keep.txt", b"1"),
            ("keep.tmp", b"2"),
            ("keepdir/a.txt", b"3"),
            ("keepdir/b.tmp", b"4"),
            ("other.txt", b"5"),
            ("sub/keep.txt", b"6"),
        ],
    );
    let summary = sync_ok(
        Some(&server),
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--include",
            "/keep*",
            "--exclude",
            "*.tmp",
        ],
    );
    // `/keep*` is anchored: `sub/keep.txt` is not under the root's `keep*`.
    assert_eq!(
        server.keys(&bucket, "").await,
        vec!["keep.txt", "keepdir/a.txt"]
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn excluded_keys_are_neither_copied_nor_deleted_even_with_remove() {
    let server = common::s3s();
    let bucket = server.new_bucket("exclude-remove").await;
    let state = common::tempdir();
    let src = common::tempdir();
    common::write_tree(
        src.path(),
        &[
            ("a.txt", b"a"),
            ("b.tmp", b"b"),
            ("deep/c.tmp", b"c"),
            ("deep/d.txt", b"d"),
            ("skipdir/e.txt", b"e"),
            ("skipdirx/f.txt", b"f"),
        ],
    );
    // At the destination already: excluded ones (kept) and a stale one (deleted).
    for k in ["old.tmp", "skipdir/old.txt", "stale.txt"] {
        server.put(&bucket, k, b"already there").await;
    }
    let summary = sync_ok(
        Some(&server),
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--exclude",
            "*.tmp|/skipdir",
            "--preserve-deleted-files",
            "remove",
            // The destination's one key in scope goes (100%, above the
            // default max_delete of 50%: tests/sync_max_delete.rs).
            "--max-delete",
            "100%",
        ],
    );
    assert_eq!(
        server.keys(&bucket, "").await,
        vec![
            "a.txt",
            "deep/d.txt",
            "old.tmp",
            "skipdir/old.txt",
            "skipdirx/f.txt"
        ]
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 3, "{summary}");
    assert_eq!(counter(&summary, "FilesDeleted"), 1, "{summary}");
    assert_eq!(
        server.get(&bucket, "skipdir/old.txt").await,
        b"already there"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_include_pattern_with_a_star_before_its_end_is_a_usage_error_naming_it() {
    let server = common::s3s();
    let bucket = server.new_bucket("bad-include").await;
    let state = common::tempdir();
    let src = common::tempdir();
    small_tree(src.path(), 2);
    let mut cmd = sync_cmd(
        Some(&server),
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--include",
            "/f*|/a*b",
        ],
    );
    cmd.arg("--json");
    let out = common::run(cmd);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("/a*b"), "{}", out.stderr);
    assert!(server.keys(&bucket, "").await.is_empty());
}

// ---------------------------------------------------------------------------
// --dry-run
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_what_it_would_copy_and_delete_and_changes_nothing() {
    let server = common::s3s();
    let bucket = server.new_bucket("dry-run").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let files = small_tree(src.path(), 4);
    common::write_tree(src.path(), &[("dir/with space.txt", b"x")]);
    let url = server.url(&bucket, "");
    let src_arg = path_str(src.path());

    let out = common::run(sync_cmd(
        Some(&server),
        state.path(),
        &[&src_arg, &url, "--dry-run"],
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    for (k, _) in &files {
        assert!(
            has_would_line(&out.stdout, "copy", k),
            "no `would copy {k}`:\n{}",
            out.stdout
        );
    }
    assert!(
        has_would_line(&out.stdout, "copy", "dir/with space.txt"),
        "{}",
        out.stdout
    );
    assert!(
        server.keys(&bucket, "").await.is_empty(),
        "a dry run wrote objects"
    );

    // With REMOVE: the extra key is named, and still there afterwards.
    server
        .put(&bucket, "extra.txt", b"only at the destination")
        .await;
    let out = common::run(sync_cmd(
        Some(&server),
        state.path(),
        &[
            &src_arg,
            &url,
            "--dry-run",
            "--preserve-deleted-files",
            "remove",
            // The destination's one key in scope goes (100%, above the
            // default max_delete of 50%: tests/sync_max_delete.rs).
            "--max-delete",
            "100%",
        ],
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(
        has_would_line(&out.stdout, "delete", "extra.txt"),
        "{}",
        out.stdout
    );
    assert!(
        has_would_line(&out.stdout, "copy", "f00.txt"),
        "{}",
        out.stdout
    );
    assert_eq!(server.keys(&bucket, "").await, vec!["extra.txt"]);
    // Nothing was counted as done.
    let (out, summary) = sync_json(
        Some(&server),
        state.path(),
        &[
            &src_arg,
            &url,
            "--dry-run",
            "--preserve-deleted-files",
            "remove",
            // The destination's one key in scope goes (100%, above the
            // default max_delete of 50%: tests/sync_max_delete.rs).
            "--max-delete",
            "100%",
        ],
    );
    assert_eq!(out.status, 0);
    assert_eq!(counter(&summary, "FilesTransferred"), 0, "{summary}");
    assert_eq!(counter(&summary, "FilesDeleted"), 0, "{summary}");
    assert_eq!(server.keys(&bucket, "").await, vec!["extra.txt"]);
}

// ---------------------------------------------------------------------------
// --report
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_report_has_one_json_line_per_object_with_key_action_result_and_bytes() {
    let server = common::s3s();
    let bucket = server.new_bucket("report").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let reports = common::tempdir();
    let files = small_tree(src.path(), 3);
    server.put(&bucket, "extra.txt", b"to delete").await;
    let url = server.url(&bucket, "");
    let src_arg = path_str(src.path());
    let report = reports.path().join("nested/dir/report.jsonl");

    sync_ok(
        Some(&server),
        state.path(),
        &[
            &src_arg,
            &url,
            "--preserve-deleted-files",
            "remove",
            // The destination's one key in scope goes (100%, above the
            // default max_delete of 50%: tests/sync_max_delete.rs).
            "--max-delete",
            "100%",
            "--report",
            &path_str(&report),
        ],
    );
    let lines = read_report(&report);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for line in &lines {
        for field in ["key", "action", "result", "bytes"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
    }
    for (k, body) in &files {
        let recs = records_for(&lines, k);
        assert_eq!(recs.len(), 1, "{k}: {lines:?}");
        let r = recs[0];
        assert_eq!(r["action"], "copy", "{r}");
        assert_eq!(r["result"], "ok", "{r}");
        assert_eq!(r["bytes"], body.len() as u64, "{r}");
        assert!(r.get("error").is_none(), "{r}");
    }
    let del = records_for(&lines, "extra.txt");
    assert_eq!(del.len(), 1, "{lines:?}");
    assert_eq!(del[0]["action"], "delete", "{}", del[0]);
    assert_eq!(del[0]["result"], "ok", "{}", del[0]);

    // A second run reports every object as skipped.
    let report2 = reports.path().join("second.jsonl");
    sync_ok(
        Some(&server),
        state.path(),
        &[&src_arg, &url, "--report", &path_str(&report2)],
    );
    let lines = read_report(&report2);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["action"], "skip", "{line}");
        assert_eq!(line["result"], "skipped", "{line}");
        assert!(line["reason"].is_string(), "{line}");
    }
}

/// A source file whose destination path is a directory cannot be written.
fn clash_trees(src: &Path, dst: &Path) {
    common::write_tree(
        src,
        &[
            ("a.txt", b"a"),
            ("clash", b"a file at the source"),
            ("z.txt", b"z"),
        ],
    );
    common::write_tree(
        dst,
        &[("clash/inside.txt", b"a directory at the destination")],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_object_is_in_the_report_with_result_failed_and_an_error() {
    let state = common::tempdir();
    let src = common::tempdir();
    let dst = common::tempdir();
    let reports = common::tempdir();
    clash_trees(src.path(), dst.path());
    let report = reports.path().join("report.jsonl");
    let (out, _) = sync_json(
        None,
        state.path(),
        &[
            &path_str(src.path()),
            &path_str(dst.path()),
            "--report",
            &path_str(&report),
        ],
    );
    assert_eq!(out.status, 1, "{}", out.stderr);
    let lines = read_report(&report);
    let clash = records_for(&lines, "clash");
    assert_eq!(clash.len(), 1, "{lines:?}");
    assert_eq!(clash[0]["result"], "failed", "{}", clash[0]);
    let error = clash[0]["error"].as_str().unwrap_or_default();
    assert!(!error.is_empty(), "{}", clash[0]);
    for k in ["a.txt", "z.txt"] {
        let recs = records_for(&lines, k);
        assert_eq!(recs.len(), 1, "{k}: {lines:?}");
        assert_eq!(recs[0]["result"], "ok", "{}", recs[0]);
    }
}

// ---------------------------------------------------------------------------
// --json
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn the_json_summary_has_datasync_counter_names_and_consistent_counts() {
    let server = common::s3s();
    let bucket = server.new_bucket("json").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let files = small_tree(src.path(), 8);
    let url = server.url(&bucket, "");
    let src_arg = path_str(src.path());

    let first = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    for name in [
        "EstimatedFilesToTransfer",
        "FilesTransferred",
        "BytesWritten",
        "FilesSkipped",
        "FilesDeleted",
        "FilesVerified",
        "FilesFailed",
    ] {
        assert!(first[name].is_u64(), "{name} missing: {first}");
    }
    assert!(first["Phases"].is_object(), "{first}");
    let bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(counter(&first, "EstimatedFilesToTransfer"), 8, "{first}");
    assert_eq!(counter(&first, "FilesTransferred"), 8, "{first}");
    assert_eq!(counter(&first, "BytesWritten"), bytes, "{first}");
    assert_eq!(counter(&first, "FilesSkipped"), 0, "{first}");
    assert_eq!(counter(&first, "FilesFailed"), 0, "{first}");
    assert!(
        first
            .get("FailedObjects")
            .is_none_or(|f| f.as_array().is_some_and(|a| a.is_empty())),
        "{first}"
    );

    // Change two files (size and mtime): a partial run.
    let mut changed_bytes = 0;
    for name in ["f02.txt", "f05.txt"] {
        let body = format!("{name} changed, and longer than before");
        changed_bytes += body.len() as u64;
        let p = src.path().join(name);
        std::fs::write(&p, &body).unwrap();
        set_mtime(&p, at(1_690_000_000, 0));
    }
    let second = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&second, "FilesTransferred"), 2, "{second}");
    assert_eq!(counter(&second, "EstimatedFilesToTransfer"), 2, "{second}");
    assert_eq!(counter(&second, "BytesWritten"), changed_bytes, "{second}");
    assert_eq!(
        counter(&second, "FilesTransferred") + counter(&second, "FilesSkipped"),
        8,
        "{second}"
    );
    assert_eq!(counter(&second, "FilesDeleted"), 0, "{second}");
    assert_eq!(counter(&second, "FilesFailed"), 0, "{second}");
}

// ---------------------------------------------------------------------------
// --verify-mode
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn point_in_time_consistent_verification_on_s3s_fs_verifies_every_source_file() {
    let server = common::s3s();
    let bucket = server.new_bucket("verify-pitc").await;
    let state = common::tempdir();
    let src = common::tempdir();
    small_tree(src.path(), 5);
    let url = server.url(&bucket, "v");
    let src_arg = path_str(src.path());
    // Two of the five are there before the run: compared, not transferred.
    sync_ok(
        Some(&server),
        state.path(),
        &[&src_arg, &url, "--include", "/f00.txt|/f01.txt"],
    );

    let summary = sync_ok(
        Some(&server),
        state.path(),
        &[&src_arg, &url, "--verify-mode", "point-in-time-consistent"],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 3, "{summary}");
    assert_eq!(counter(&summary, "FilesVerified"), 5, "{summary}");
    assert_eq!(counter(&summary, "FilesFailed"), 0, "{summary}");

    // ONLY_FILES_TRANSFERRED verifies what it sent: single PUTs on s3s-fs.
    std::fs::write(src.path().join("f03.txt"), b"changed f03, longer").unwrap();
    let summary = sync_ok(Some(&server), state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&summary, "FilesTransferred"), 1, "{summary}");
    assert_eq!(counter(&summary, "FilesVerified"), 1, "{summary}");
}

// ---------------------------------------------------------------------------
// --bytes-per-second
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_bandwidth_limit_makes_the_transfer_take_at_least_bytes_over_limit() {
    let server = common::s3s();
    let bucket = server.new_bucket("bandwidth").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let chunk = vec![7u8; 200_000];
    let names = ["b0", "b1", "b2", "b3", "b4"];
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (*n, chunk.as_slice())).collect();
    common::write_tree(src.path(), &files);
    let total = (chunk.len() * names.len()) as f64;
    let limit = 200_000.0;

    let started = Instant::now();
    let summary = sync_ok(
        Some(&server),
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--bytes-per-second",
            "200000",
        ],
    );
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(counter(&summary, "BytesWritten"), total as u64, "{summary}");
    let floor = 0.9 * total / limit;
    assert!(
        elapsed >= floor,
        "{total} bytes at {limit} B/s took {elapsed:.2} s, below {floor:.2} s"
    );
}

// ---------------------------------------------------------------------------
// --concurrency
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrency_of_zero_is_a_usage_error() {
    let state = common::tempdir();
    let src = common::tempdir();
    let dst = common::tempdir();
    small_tree(src.path(), 1);
    let out = common::run(sync_cmd(
        None,
        state.path(),
        &[
            &path_str(src.path()),
            &path_str(dst.path()),
            "--concurrency",
            "0",
        ],
    ));
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("concurrency"), "{}", out.stderr);
    assert!(common::read_tree(dst.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrency_of_one_still_copies_everything() {
    let server = common::s3s();
    let bucket = server.new_bucket("concurrency-one").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let files = small_tree(src.path(), 10);
    let summary = sync_ok(
        Some(&server),
        state.path(),
        &[
            &path_str(src.path()),
            &server.url(&bucket, ""),
            "--concurrency",
            "1",
        ],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 10, "{summary}");
    let expected: Vec<String> = files.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(server.keys(&bucket, "").await, expected);
}

// ---------------------------------------------------------------------------
// Exit code 1
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_clashes_with_a_destination_directory_fails_alone_with_exit_1() {
    let state = common::tempdir();
    let src = common::tempdir();
    let dst = common::tempdir();
    clash_trees(src.path(), dst.path());
    let (out, summary) = sync_json(
        None,
        state.path(),
        &[&path_str(src.path()), &path_str(dst.path())],
    );
    assert_eq!(out.status, 1, "{}", out.stderr);
    assert_eq!(summary["Status"], "ERROR", "{summary}");
    assert_eq!(counter(&summary, "FilesFailed"), 1, "{summary}");
    assert_eq!(counter(&summary, "FilesTransferred"), 2, "{summary}");
    let failed: BTreeSet<&str> = summary["FailedObjects"]
        .as_array()
        .unwrap_or_else(|| panic!("no FailedObjects: {summary}"))
        .iter()
        .filter_map(|f| f["key"].as_str())
        .collect();
    assert_eq!(failed, BTreeSet::from(["clash"]), "{summary}");
    // The others arrived; the directory is untouched.
    let expected: BTreeMap<String, Vec<u8>> = [
        ("a.txt", &b"a"[..]),
        ("clash/inside.txt", &b"a directory at the destination"[..]),
        ("z.txt", &b"z"[..]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_vec()))
    .collect();
    assert_eq!(common::read_tree(dst.path()), expected);
}
