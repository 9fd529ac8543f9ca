//! `syncmount sync` end to end: local → S3 → local, S3 → S3 in one account
//! and into another through an assumed role, the key-ordering trap, no-op
//! re-runs, POSIX metadata written by other tools, directory markers and
//! the usage errors. Data-path tests run once per server (moto and s3s-fs).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use common::{
    at, counter, path_str, random_bytes, set_mtime, sync_cmd, sync_ok, S3Server, ServerKind,
};

const MIB: usize = 1024 * 1024;
const FIVE_MIB: &str = "5242880";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("mtime of {}: {e}", path.display()))
}

fn perm_bits(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Puts an object carrying user metadata.
async fn put_with_meta(
    server: &S3Server,
    bucket: &str,
    key: &str,
    body: &[u8],
    meta: &[(&str, &str)],
) {
    let mut req = server
        .client()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()));
    for (k, v) in meta {
        req = req.metadata(*k, *v);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("PutObject s3://{bucket}/{key}: {e:?}"));
}

/// The object's bytes through the S3 API: without response checksum
/// validation on moto (see [`common::lenient_client`]), with it on s3s-fs.
async fn read_object(server: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    match server.kind {
        ServerKind::Moto => server.get_unvalidated(bucket, key).await,
        ServerKind::S3sFs => server.get(bucket, key).await,
    }
}

// ---------------------------------------------------------------------------
// 1. A mixed tree round trip
// ---------------------------------------------------------------------------

async fn check_mixed_tree_round_trip(server: &S3Server) {
    let kind = server.kind;
    let bucket = server.new_bucket("roundtrip").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let back = common::tempdir();

    let big = random_bytes(12 * MIB + 12345);
    let mid = random_bytes(100 * 1024);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one-byte", b"x".to_vec()),
        ("dir/sub/random-100k.bin", mid),
        ("big/twelve-mib.bin", big),
        ("with space/file name.txt", b"spaces in names".to_vec()),
        ("ünïcödé/日本語.txt", "unicode names".as_bytes().to_vec()),
        ("private.txt", b"only for the owner".to_vec()),
        ("tool.sh", b"#!/bin/sh\necho hi\n".to_vec()),
    ];
    common::write_files(src.path(), &files);
    // Distinct mtimes with a nanosecond part, so a lost fraction shows.
    let mut mtimes = BTreeMap::new();
    for (i, (rel, _)) in files.iter().enumerate() {
        let t = at(1_650_000_000 + i as u64 * 1000, 123_456_789 + i as u32);
        set_mtime(&src.path().join(rel), t);
        mtimes.insert(rel.to_string(), t);
    }
    chmod(&src.path().join("private.txt"), 0o600);
    chmod(&src.path().join("tool.sh"), 0o755);

    let prefix = "tree";
    let dst_url = server.url(&bucket, prefix);
    let up = sync_ok(
        server,
        state.path(),
        &[
            &path_str(src.path()),
            &dst_url,
            "--multipart-threshold",
            FIVE_MIB,
            "--part-size",
            FIVE_MIB,
        ],
    );
    assert_eq!(
        counter(&up, "FilesTransferred"),
        files.len() as u64,
        "{kind:?}: {up}"
    );
    assert_eq!(counter(&up, "FilesFailed"), 0, "{kind:?}: {up}");
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(counter(&up, "BytesWritten"), total, "{kind:?}: {up}");

    // What S3 holds, read through the S3 API, is exactly the local tree.
    let mut expected_keys: Vec<String> =
        files.iter().map(|(k, _)| format!("{prefix}/{k}")).collect();
    expected_keys.sort();
    assert_eq!(server.keys(&bucket, "").await, expected_keys, "{kind:?}");
    for (rel, body) in &files {
        let got = read_object(server, &bucket, &format!("{prefix}/{rel}")).await;
        assert!(
            got == *body,
            "{kind:?}: s3://{bucket}/{prefix}/{rel}: {} bytes read, {} expected (or content differs)",
            got.len(),
            body.len()
        );
    }
    // The POSIX metadata is stored in the agreed encodings.
    let meta = server
        .head_metadata(&bucket, &format!("{prefix}/private.txt"))
        .await;
    let ns = mtimes["private.txt"]
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert_eq!(
        meta.get("file-permissions").map(String::as_str),
        Some("0100600"),
        "{kind:?}: {meta:?}"
    );
    assert_eq!(
        meta.get("file-mtime"),
        Some(&format!("{ns}ns")),
        "{kind:?}: {meta:?}"
    );
    assert_eq!(
        meta.get("mtime"),
        Some(&format!("{}.{:09}", ns / 1_000_000_000, ns % 1_000_000_000)),
        "{kind:?}: {meta:?}"
    );
    assert!(meta.contains_key("file-owner"), "{kind:?}: {meta:?}");
    assert!(meta.contains_key("file-group"), "{kind:?}: {meta:?}");
    assert!(
        !meta.contains_key("mode"),
        "{kind:?}: never a bare mode: {meta:?}"
    );

    // And back down into a fresh directory. moto reports a bogus CRC32C for
    // multipart objects (neither full-object nor composite), which a
    // verifying download rightly refuses: on moto the multipart file stays
    // up (its bytes were checked through the S3 API above).
    let mut down_args = vec![dst_url.clone(), path_str(back.path())];
    let mut expected_tree = common::read_tree(src.path());
    if kind == ServerKind::Moto {
        down_args.extend(["--exclude".to_string(), "/big".to_string()]);
        expected_tree.remove("big/twelve-mib.bin");
        mtimes.remove("big/twelve-mib.bin");
    }
    let down_args: Vec<&str> = down_args.iter().map(String::as_str).collect();
    let down = sync_ok(server, state.path(), &down_args);
    assert_eq!(
        counter(&down, "FilesTransferred"),
        expected_tree.len() as u64,
        "{kind:?}: {down}"
    );
    assert_eq!(common::read_tree(back.path()), expected_tree, "{kind:?}");
    for (rel, t) in &mtimes {
        assert_eq!(
            mtime(&back.path().join(rel)),
            *t,
            "{kind:?}: mtime of {rel}"
        );
    }
    assert_eq!(
        perm_bits(&back.path().join("private.txt")),
        0o600,
        "{kind:?}"
    );
    assert_eq!(perm_bits(&back.path().join("tool.sh")), 0o755, "{kind:?}");
    assert_eq!(
        perm_bits(&back.path().join("one-byte")),
        perm_bits(&src.path().join("one-byte")),
        "{kind:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_tree_goes_to_moto_and_back_with_bytes_mtimes_and_modes_intact() {
    check_mixed_tree_round_trip(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_tree_goes_to_s3s_fs_and_back_with_bytes_mtimes_and_modes_intact() {
    check_mixed_tree_round_trip(&common::s3s()).await;
}

// ---------------------------------------------------------------------------
// 2. The ordering trap
// ---------------------------------------------------------------------------

async fn check_ordering_trap(server: &S3Server) {
    let kind = server.kind;
    let bucket = server.new_bucket("ordering").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let back = common::tempdir();
    // `a-b` < `a.b` < `a/b` < `a0` in byte order, while a walk that sorts
    // directory names without their `/` would put `a/b` before `a-b`.
    let names = ["a-b", "a/b", "a.b", "a0", "a b", "é", "日本/x"];
    let files: Vec<(&str, Vec<u8>)> = names
        .iter()
        .map(|n| (*n, format!("content of {n}").into_bytes()))
        .collect();
    common::write_files(src.path(), &files);
    // Old mtimes: this test is about order, not about how fresh files are
    // compared (see the same-second test below).
    for (i, n) in names.iter().enumerate() {
        set_mtime(&src.path().join(n), at(1_660_000_000 + i as u64, 1));
    }

    let url = server.url(&bucket, "");
    let up = sync_ok(server, state.path(), &[&path_str(src.path()), &url]);
    assert_eq!(
        counter(&up, "FilesTransferred"),
        names.len() as u64,
        "{kind:?}: {up}"
    );
    let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    expected.sort();
    assert_eq!(server.keys(&bucket, "").await, expected, "{kind:?}");
    for (name, body) in &files {
        assert_eq!(&server.get(&bucket, name).await, body, "{kind:?}: {name}");
    }

    let down = sync_ok(server, state.path(), &[&url, &path_str(back.path())]);
    assert_eq!(
        counter(&down, "FilesTransferred"),
        names.len() as u64,
        "{kind:?}: {down}"
    );
    let expected_tree: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(common::read_tree(back.path()), expected_tree, "{kind:?}");

    // A merge-join that disagrees with S3's order sees every key as new or
    // deleted on the re-run; a correct one transfers nothing.
    let again_up = sync_ok(server, state.path(), &[&path_str(src.path()), &url]);
    assert_eq!(
        counter(&again_up, "FilesTransferred"),
        0,
        "{kind:?}: {again_up}"
    );
    assert_eq!(
        counter(&again_up, "FilesSkipped"),
        names.len() as u64,
        "{kind:?}: {again_up}"
    );
    let again_down = sync_ok(server, state.path(), &[&url, &path_str(back.path())]);
    assert_eq!(
        counter(&again_down, "FilesTransferred"),
        0,
        "{kind:?}: {again_down}"
    );
    let into_src = sync_ok(server, state.path(), &[&url, &path_str(src.path())]);
    assert_eq!(
        counter(&into_src, "FilesTransferred"),
        0,
        "{kind:?}: {into_src}"
    );
    assert_eq!(common::read_tree(back.path()), expected_tree, "{kind:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_sort_differently_as_paths_round_trip_through_moto_and_rerun_as_no_ops() {
    check_ordering_trap(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_sort_differently_as_paths_round_trip_through_s3s_fs_and_rerun_as_no_ops() {
    check_ordering_trap(&common::s3s()).await;
}

// ---------------------------------------------------------------------------
// 3. No-op re-run, then one changed file
// ---------------------------------------------------------------------------

async fn check_noop_rerun(server: &S3Server) {
    let kind = server.kind;
    let bucket = server.new_bucket("noop").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("d{}/f{i:02}.txt", i % 3),
                format!("body number {i:02}").into_bytes(),
            )
        })
        .collect();
    common::write_files(src.path(), &files);
    for (i, (rel, _)) in files.iter().enumerate() {
        set_mtime(
            &src.path().join(rel),
            at(1_700_000_000 + i as u64, 987_654_321),
        );
    }
    let url = server.url(&bucket, "p");
    let src_arg = path_str(src.path());

    let first = sync_ok(server, state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&first, "FilesTransferred"), 12, "{kind:?}: {first}");

    let second = sync_ok(server, state.path(), &[&src_arg, &url]);
    assert_eq!(
        counter(&second, "FilesTransferred"),
        0,
        "{kind:?}: {second}"
    );
    assert_eq!(counter(&second, "BytesWritten"), 0, "{kind:?}: {second}");
    assert_eq!(counter(&second, "FilesSkipped"), 12, "{kind:?}: {second}");
    assert_eq!(counter(&second, "FilesFailed"), 0, "{kind:?}: {second}");

    // Same size, new content, new mtime: exactly that one file goes again.
    let (rel, old) = &files[5];
    let new_body: Vec<u8> = old.iter().map(|b| b.to_ascii_uppercase()).collect();
    assert_eq!(new_body.len(), old.len());
    assert_ne!(&new_body, old);
    let path = src.path().join(rel);
    std::fs::write(&path, &new_body).unwrap();
    set_mtime(&path, at(1_700_100_000, 5));
    let third = sync_ok(server, state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&third, "FilesTransferred"), 1, "{kind:?}: {third}");
    assert_eq!(counter(&third, "FilesSkipped"), 11, "{kind:?}: {third}");
    assert_eq!(
        counter(&third, "BytesWritten"),
        new_body.len() as u64,
        "{kind:?}: {third}"
    );
    assert_eq!(
        server.get(&bucket, &format!("p/{rel}")).await,
        new_body,
        "{kind:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_to_moto_transfers_nothing_until_one_file_changes() {
    check_noop_rerun(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rerun_to_s3s_fs_transfers_nothing_until_one_file_changes() {
    check_noop_rerun(&common::s3s()).await;
}

/// S3 listings give LastModified to the second (moto and AWS alike: `.000Z`),
/// so a file written earlier in the same second as its upload looks newer
/// than its object. That must not make it "changed" on the next run.
async fn check_fresh_files_rerun(server: &S3Server) {
    let kind = server.kind;
    let bucket = server.new_bucket("fresh").await;
    let state = common::tempdir();
    let src = common::tempdir();
    // Write just after a second starts, so the upload lands in that second.
    let into_second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    if into_second > 50 {
        tokio::time::sleep(Duration::from_millis(u64::from(1020 - into_second))).await;
    }
    common::write_tree(
        src.path(),
        &[
            ("fresh-1.txt", b"just written"),
            ("dir/fresh-2.txt", b"also new"),
        ],
    );
    let url = server.url(&bucket, "");
    let src_arg = path_str(src.path());
    let first = sync_ok(server, state.path(), &[&src_arg, &url]);
    assert_eq!(counter(&first, "FilesTransferred"), 2, "{kind:?}: {first}");
    let again = sync_ok(server, state.path(), &[&src_arg, &url]);
    assert_eq!(
        counter(&again, "FilesTransferred"),
        0,
        "{kind:?}: files unchanged since their upload were copied again: {again}"
    );
    assert_eq!(counter(&again, "FilesSkipped"), 2, "{kind:?}: {again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn files_uploaded_to_moto_in_the_second_they_were_written_are_unchanged_on_a_rerun() {
    check_fresh_files_rerun(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_uploaded_to_s3s_fs_in_the_second_they_were_written_are_unchanged_on_a_rerun() {
    check_fresh_files_rerun(&common::s3s()).await;
}

// ---------------------------------------------------------------------------
// 4. POSIX metadata written by other tools
// ---------------------------------------------------------------------------

async fn check_foreign_metadata(server: &S3Server) {
    let kind = server.kind;
    let bucket = server.new_bucket("foreign-meta").await;
    let state = common::tempdir();
    let local = common::tempdir();

    put_with_meta(
        server,
        &bucket,
        "in/datasync.txt",
        b"written by DataSync",
        &[
            ("file-mtime", "1600000000000"),
            ("file-permissions", "100600"),
            ("user-agent", "aws-datasync"),
        ],
    )
    .await;
    put_with_meta(
        server,
        &bucket,
        "in/rclone.txt",
        b"written by rclone",
        &[("mtime", "1600000000.5"), ("mode", "100640")],
    )
    .await;
    put_with_meta(
        server,
        &bucket,
        "in/s3fs.txt",
        b"written by s3fs",
        &[("mode", "33188"), ("mtime", "1600000000")],
    )
    .await;

    let down = sync_ok(
        server,
        state.path(),
        &[&server.url(&bucket, "in"), &path_str(local.path())],
    );
    assert_eq!(counter(&down, "FilesTransferred"), 3, "{kind:?}: {down}");
    let p = |n: &str| local.path().join(n);
    assert_eq!(
        mtime(&p("datasync.txt")),
        at(1_600_000_000, 0),
        "{kind:?}: file-mtime in ms"
    );
    assert_eq!(
        perm_bits(&p("datasync.txt")),
        0o600,
        "{kind:?}: file-permissions 100600"
    );
    assert_eq!(
        mtime(&p("rclone.txt")),
        at(1_600_000_000, 500_000_000),
        "{kind:?}: rclone mtime"
    );
    assert_eq!(
        perm_bits(&p("rclone.txt")),
        0o640,
        "{kind:?}: rclone octal mode"
    );
    assert_eq!(
        mtime(&p("s3fs.txt")),
        at(1_600_000_000, 0),
        "{kind:?}: s3fs mtime"
    );
    assert_eq!(
        perm_bits(&p("s3fs.txt")),
        0o644,
        "{kind:?}: s3fs decimal mode 33188"
    );

    // The restored files are unchanged against their objects.
    let again = sync_ok(
        server,
        state.path(),
        &[&server.url(&bucket, "in"), &path_str(local.path())],
    );
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{kind:?}: {again}");

    // Up again under another prefix: written in our own encodings.
    let up = sync_ok(
        server,
        state.path(),
        &[&path_str(local.path()), &server.url(&bucket, "out")],
    );
    assert_eq!(counter(&up, "FilesTransferred"), 3, "{kind:?}: {up}");
    let m = server.head_metadata(&bucket, "out/rclone.txt").await;
    assert_eq!(
        m.get("file-permissions").map(String::as_str),
        Some("0100640"),
        "{kind:?}: {m:?}"
    );
    assert_eq!(
        m.get("file-mtime").map(String::as_str),
        Some("1600000000500000000ns"),
        "{kind:?}: {m:?}"
    );
    assert_eq!(
        m.get("mtime").map(String::as_str),
        Some("1600000000.500000000"),
        "{kind:?}: {m:?}"
    );
    assert!(!m.contains_key("mode"), "{kind:?}: {m:?}");
    let m = server.head_metadata(&bucket, "out/s3fs.txt").await;
    assert_eq!(
        m.get("file-permissions").map(String::as_str),
        Some("0100644"),
        "{kind:?}: {m:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn datasync_rclone_and_s3fs_metadata_on_moto_restores_mtimes_and_modes() {
    check_foreign_metadata(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn datasync_rclone_and_s3fs_metadata_on_s3s_fs_restores_mtimes_and_modes() {
    check_foreign_metadata(&common::s3s()).await;
}

async fn check_foreign_copies_are_unchanged(server: &S3Server) {
    let kind = server.kind;
    let bucket = server.new_bucket("foreign-same").await;
    let state = common::tempdir();
    let local = common::tempdir();
    // Local files, and the objects another tool made of them earlier
    // (uploaded now, so LastModified is later than the files' mtimes).
    type Case<'a> = (&'a str, &'a [u8], SystemTime, &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        (
            "by-rclone.bin",
            b"copied by rclone earlier",
            at(1_600_000_000, 250_000_000),
            &[("mtime", "1600000000.25")],
        ),
        (
            "by-datasync.bin",
            b"copied by DataSync earlier",
            at(1_600_000_100, 125_000_000),
            &[
                ("file-mtime", "1600000100125"),
                ("file-permissions", "100644"),
            ],
        ),
        (
            "by-s3fs.bin",
            b"copied by s3fs earlier",
            at(1_600_000_200, 0),
            &[("mtime", "1600000200"), ("mode", "33188")],
        ),
    ];
    for (name, body, t, meta) in &cases {
        let path = local.path().join(name);
        std::fs::write(&path, body).unwrap();
        set_mtime(&path, *t);
        put_with_meta(server, &bucket, name, body, meta).await;
    }
    let summary = sync_ok(
        server,
        state.path(),
        &[&path_str(local.path()), &server.url(&bucket, "")],
    );
    assert_eq!(
        counter(&summary, "FilesTransferred"),
        0,
        "{kind:?}: objects with the same size and another tool's mtime are unchanged: {summary}"
    );
    assert_eq!(counter(&summary, "FilesSkipped"), 3, "{kind:?}: {summary}");
    // Left as they were: still the other tool's metadata.
    let m = server.head_metadata(&bucket, "by-rclone.bin").await;
    assert!(!m.contains_key("file-mtime"), "{kind:?}: rewritten: {m:?}");

    // One second off is a change.
    set_mtime(
        &local.path().join("by-rclone.bin"),
        at(1_600_000_001, 250_000_000),
    );
    let summary = sync_ok(
        server,
        state.path(),
        &[&path_str(local.path()), &server.url(&bucket, "")],
    );
    assert_eq!(
        counter(&summary, "FilesTransferred"),
        1,
        "{kind:?}: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_another_tool_copied_to_moto_are_recognised_as_unchanged() {
    check_foreign_copies_are_unchanged(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_another_tool_copied_to_s3s_fs_are_recognised_as_unchanged() {
    check_foreign_copies_are_unchanged(&common::s3s()).await;
}

// ---------------------------------------------------------------------------
// 5. Directory markers (moto only: s3s-fs does not list `dir/` objects)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn empty_directories_become_markers_on_moto_and_come_back_as_empty_directories() {
    let server = common::moto();
    let bucket = server.new_bucket("markers").await;
    let state = common::tempdir();
    let src = common::tempdir();
    let back = common::tempdir();
    common::write_tree(src.path(), &[("full/file.txt", b"not empty")]);
    std::fs::create_dir_all(src.path().join("empty")).unwrap();
    std::fs::create_dir_all(src.path().join("nested/deeper/empty too")).unwrap();
    set_mtime(&src.path().join("full/file.txt"), at(1_660_000_000, 0));

    let url = server.url(&bucket, "m");
    let up = sync_ok(&server, state.path(), &[&path_str(src.path()), &url]);
    assert_eq!(counter(&up, "FilesFailed"), 0, "{up}");
    assert_eq!(
        server.keys(&bucket, "").await,
        vec!["m/empty/", "m/full/file.txt", "m/nested/deeper/empty too/"]
    );
    assert!(server.get(&bucket, "m/empty/").await.is_empty());

    let down = sync_ok(&server, state.path(), &[&url, &path_str(back.path())]);
    assert_eq!(counter(&down, "FilesFailed"), 0, "{down}");
    for dir in ["empty", "nested/deeper/empty too"] {
        let path = back.path().join(dir);
        assert!(path.is_dir(), "{dir} was not recreated");
        assert_eq!(
            std::fs::read_dir(&path).unwrap().count(),
            0,
            "{dir} is not empty"
        );
    }
    assert_eq!(
        common::read_tree(back.path()),
        common::read_tree(src.path())
    );

    // Nothing to do the second time, in either direction.
    let again = sync_ok(&server, state.path(), &[&path_str(src.path()), &url]);
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
    let again = sync_ok(&server, state.path(), &[&url, &path_str(back.path())]);
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
}

// ---------------------------------------------------------------------------
// 6. S3 → S3 in one account
// ---------------------------------------------------------------------------

async fn check_s3_to_s3_same_account(server: &S3Server) {
    let kind = server.kind;
    let src_bucket = server.new_bucket("s2s-src").await;
    let dst_bucket = server.new_bucket("s2s-dst").await;
    let state = common::tempdir();
    let local = common::tempdir();

    let big = random_bytes(12 * MIB + 777);
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("small.txt", b"small object".to_vec()),
        ("empty", Vec::new()),
        ("deep/er/random.bin", random_bytes(300 * 1024)),
        ("big/twelve-mib.bin", big),
        ("sp ace/ünï.txt", "unicode".as_bytes().to_vec()),
    ];
    common::write_files(local.path(), &files);
    for (i, (rel, _)) in files.iter().enumerate() {
        set_mtime(&local.path().join(rel), at(1_690_000_000 + i as u64, 42));
    }
    sync_ok(
        server,
        state.path(),
        &[&path_str(local.path()), &server.url(&src_bucket, "")],
    );
    // Plus an object with foreign user metadata and none of ours.
    put_with_meta(
        server,
        &src_bucket,
        "foreign.txt",
        b"someone else's",
        &[("custom-key", "custom value"), ("mtime", "1600000000.5")],
    )
    .await;

    let args = [
        server.url(&src_bucket, ""),
        server.url(&dst_bucket, "copy"),
        "--multipart-threshold".to_string(),
        FIVE_MIB.to_string(),
        // Low, so the big object takes the UploadPartCopy path.
        "--multipart-copy-threshold".to_string(),
        FIVE_MIB.to_string(),
        "--part-size".to_string(),
        FIVE_MIB.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = sync_ok(server, state.path(), &args);
    let n = files.len() as u64 + 1;
    assert_eq!(counter(&first, "FilesTransferred"), n, "{kind:?}: {first}");
    assert_eq!(counter(&first, "FilesFailed"), 0, "{kind:?}: {first}");

    let src_keys = server.keys(&src_bucket, "").await;
    let dst_keys: Vec<String> = server
        .keys(&dst_bucket, "")
        .await
        .into_iter()
        .map(|k| k.strip_prefix("copy/").unwrap_or(&k).to_string())
        .collect();
    assert_eq!(dst_keys, src_keys, "{kind:?}");
    for key in &src_keys {
        let a = read_object(server, &src_bucket, key).await;
        let b = read_object(server, &dst_bucket, &format!("copy/{key}")).await;
        assert!(
            a == b,
            "{kind:?}: {key}: content differs ({} vs {} bytes)",
            a.len(),
            b.len()
        );
        let ma = server.head_metadata(&src_bucket, key).await;
        let mb = server
            .head_metadata(&dst_bucket, &format!("copy/{key}"))
            .await;
        assert_eq!(mb, ma, "{kind:?}: user metadata of {key}");
    }
    assert_eq!(
        server.head_metadata(&dst_bucket, "copy/foreign.txt").await["custom-key"],
        "custom value",
        "{kind:?}"
    );

    let second = sync_ok(server, state.path(), &args);
    assert_eq!(
        counter(&second, "FilesTransferred"),
        0,
        "{kind:?}: {second}"
    );
    assert_eq!(counter(&second, "FilesSkipped"), n, "{kind:?}: {second}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_copies_to_another_bucket_on_moto_with_metadata_and_multipart() {
    check_s3_to_s3_same_account(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_copies_to_another_bucket_on_s3s_fs_with_metadata_and_multipart() {
    check_s3_to_s3_same_account(&common::s3s()).await;
}

// ---------------------------------------------------------------------------
// 7. S3 → S3 into a second account through an assumed role (moto)
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_copies_into_a_second_moto_account_through_dst_role_arn() {
    const OTHER: &str = "222222222222";
    let server = common::moto();
    let other = server.account_client(OTHER).await;
    let src_bucket = server.new_bucket("xacct-src").await;
    let dst_bucket = common::unique_bucket_name("xacct-dst");
    other
        .create_bucket()
        .bucket(&dst_bucket)
        .send()
        .await
        .expect("CreateBucket in account 222222222222");
    // It really lives in the other account.
    assert!(!common::bucket_names(&server.client().await)
        .await
        .contains(&dst_bucket));
    assert!(common::bucket_names(&other).await.contains(&dst_bucket));

    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("hello.txt", b"hello from account 123456789012".to_vec()),
        ("nested/dir/data.bin", random_bytes(64 * 1024)),
        ("big.bin", random_bytes(6 * MIB + 1)),
    ];
    for (k, v) in &objects {
        server.put(&src_bucket, k, v).await;
    }

    let state = common::tempdir();
    let summary = sync_ok(
        &server,
        state.path(),
        &[
            &server.url(&src_bucket, ""),
            &server.url(&dst_bucket, "from-a"),
            "--dst-role-arn",
            &common::role_arn(OTHER),
            "--multipart-threshold",
            FIVE_MIB,
            "--part-size",
            FIVE_MIB,
        ],
    );
    assert_eq!(counter(&summary, "FilesTransferred"), 3, "{summary}");

    let mut expected: Vec<String> = objects.iter().map(|(k, _)| format!("from-a/{k}")).collect();
    expected.sort();
    assert_eq!(
        common::list_keys(&other, &dst_bucket, "", None).await,
        expected
    );
    // Read with that account's credentials (leniently: see lenient_client).
    let reader = common::lenient_client(&server.endpoint, server.account_credentials(OTHER).await);
    for (k, v) in &objects {
        let got = common::get_with(&reader, &dst_bucket, &format!("from-a/{k}")).await;
        assert!(
            got == *v,
            "{k}: content differs ({} vs {} bytes)",
            got.len(),
            v.len()
        );
    }
    assert!(
        !common::bucket_names(&server.client().await)
            .await
            .contains(&dst_bucket),
        "the destination bucket must stay in account {OTHER}"
    );

    let again = sync_ok(
        &server,
        state.path(),
        &[
            &server.url(&src_bucket, ""),
            &server.url(&dst_bucket, "from-a"),
            "--dst-role-arn",
            &common::role_arn(OTHER),
        ],
    );
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
}

// ---------------------------------------------------------------------------
// 8. Usage and configuration errors
// ---------------------------------------------------------------------------

async fn check_missing_source_bucket(server: &S3Server) {
    let kind = server.kind;
    let state = common::tempdir();
    let dst = common::tempdir();
    let missing = common::unique_bucket_name("does-not-exist");
    let out = common::run(sync_cmd(
        server,
        state.path(),
        &[&server.url(&missing, "x"), &path_str(dst.path())],
    ));
    assert!(
        out.status == 1 || out.status == 2,
        "{kind:?}: exit {} for a missing bucket",
        out.status
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(&missing),
        "{kind:?}: the message does not name {missing}: {all}"
    );
    assert!(common::read_tree(dst.path()).is_empty(), "{kind:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_bucket_on_moto_fails_with_a_message_naming_it() {
    check_missing_source_bucket(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_source_bucket_on_s3s_fs_fails_with_a_message_naming_it() {
    check_missing_source_bucket(&common::s3s()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_local_source_directory_is_a_usage_error_naming_the_path() {
    let server = common::s3s();
    let bucket = server.new_bucket("missing-src").await;
    let state = common::tempdir();
    let parent = common::tempdir();
    let missing = parent.path().join("no such dir");
    let out = common::run(sync_cmd(
        &server,
        state.path(),
        &[&path_str(&missing), &server.url(&bucket, "")],
    ));
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains(&path_str(&missing)), "{}", out.stderr);
    assert!(server.keys(&bucket, "").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_s3_source_and_destination_are_a_usage_error() {
    let server = common::s3s();
    let bucket = server.new_bucket("overlap").await;
    server.put(&bucket, "x/file", b"data").await;
    let state = common::tempdir();
    for (src, dst) in [
        (server.url(&bucket, "x"), server.url(&bucket, "x/y")),
        (server.url(&bucket, "x/y"), server.url(&bucket, "x")),
        (server.url(&bucket, ""), server.url(&bucket, "x")),
        (server.url(&bucket, "x"), server.url(&bucket, "x")),
    ] {
        let out = common::run(sync_cmd(&server, state.path(), &[&src, &dst]));
        assert_eq!(out.status, 2, "{src} -> {dst}: {}", out.stderr);
        assert!(
            out.stderr.contains("overlap"),
            "{src} -> {dst}: {}",
            out.stderr
        );
    }
    assert_eq!(server.keys(&bucket, "").await, vec!["x/file"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_local_source_and_destination_are_a_usage_error() {
    let state = common::tempdir();
    let root = common::tempdir();
    common::write_tree(root.path(), &[("a/file", b"data")]);
    let src = path_str(&root.path().join("a"));
    let dst = path_str(&root.path().join("a/inner"));
    let out = common::run(sync_cmd(None, state.path(), &[&src, &dst]));
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(!root.path().join("a/inner").exists());
}
