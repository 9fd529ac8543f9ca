//! Symbolic links and special files through `syncmount sync`: local → S3 →
//! local keeps links as links (target and mtime), never following them and
//! never writing outside the destination root; FIFOs, sockets and devices go
//! up as empty objects with their mode and device number and come back with
//! mknod (the tests run as root; as another user a device is reported and
//! skipped); S3 → S3 copies links as ordinary objects with their metadata;
//! a two-way task treats a link as a file whose content is its target.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{counter, path_str, read_report, records_for, sync_json, sync_ok, S3Server};

/// The link mtime every test link gets (seconds, nanoseconds).
const LINK_TIME: (i64, i64) = (1_600_000_000, 123_456_789);

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in temp paths")
}

/// Sets the mtime of `path` itself (a link is not followed).
fn set_link_mtime(path: &Path, (secs, nanos): (i64, i64)) {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = [t, t];
    // SAFETY: a valid path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(path).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn symlink(target: &str, at: &Path) {
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir).expect("parent directory");
    }
    std::os::unix::fs::symlink(target, at)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", at.display()));
    set_link_mtime(at, LINK_TIME);
}

/// mknod, then chmod to `mode`'s permission bits (mknod's are masked by the umask).
fn mknod(at: &Path, mode: u32, dev: u64) {
    // SAFETY: a valid path.
    let rc = unsafe { libc::mknod(cpath(at).as_ptr(), mode, dev as libc::dev_t) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        at.display(),
        std::io::Error::last_os_error()
    );
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(mode & 0o7777)).unwrap();
}

/// The links of the source tree: (path, target).
const LINKS: &[(&str, &str)] = &[
    ("rel", "a.txt"),
    ("dir/up", "../a.txt"),
    ("outside", "../../../../../../etc/passwd"),
    ("abs", "/etc/passwd"),
    ("dangling", "no/such/file"),
    ("dirlink", "dir"),
];

/// A source tree: a file, a directory and the [`LINKS`].
fn source_tree() -> tempfile::TempDir {
    let src = common::tempdir();
    common::write_tree(src.path(), &[("a.txt", b"alpha"), ("dir/b.txt", b"beta")]);
    for (path, target) in LINKS {
        symlink(target, &src.path().join(path));
    }
    src
}

/// Asserts `root` holds every link of [`LINKS`] as a link with its target
/// and mtime, and that `dirlink` was not copied as a directory.
fn assert_links(root: &Path) {
    for (path, target) in LINKS {
        let p = root.join(path);
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        assert!(m.file_type().is_symlink(), "{path} is not a link: {m:?}");
        assert_eq!(
            std::fs::read_link(&p).unwrap(),
            PathBuf::from(target),
            "{path}"
        );
        assert_eq!((m.mtime(), m.mtime_nsec()), LINK_TIME, "mtime of {path}");
    }
    assert_eq!(std::fs::read(root.join("a.txt")).unwrap(), b"alpha");
}

/// Local → bucket → fresh local directory; returns the destination, in a
/// parent that holds nothing else.
fn round_trip(s: &S3Server, bucket: &str, src: &Path) -> (tempfile::TempDir, PathBuf) {
    let state = common::tempdir();
    let url = s.url(bucket, "");
    let up = sync_ok(s, state.path(), &[&path_str(src), &url]);
    assert_eq!(
        counter(&up, "SymlinksTransferred"),
        LINKS.len() as u64,
        "{up}"
    );
    let parent = common::tempdir();
    let dst = parent.path().join("dst");
    let down = sync_ok(s, state.path(), &[&url, &path_str(&dst)]);
    assert_eq!(
        counter(&down, "SymlinksTransferred"),
        LINKS.len() as u64,
        "{down}"
    );
    (parent, dst)
}

#[tokio::test(flavor = "multi_thread")]
async fn links_round_trip_local_to_s3_to_local_as_links() {
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    for s in common::data_path_servers() {
        let src = source_tree();
        let bucket = s.new_bucket("links").await;
        let (parent, dst) = round_trip(&s, &bucket, src.path());

        // Stored as DataSync and s3fs store them: the body is the target,
        // the mode has S_IFLNK.
        for (path, target) in LINKS {
            assert_eq!(s.get(&bucket, path).await, target.as_bytes(), "{path}");
            let meta = s.head_metadata(&bucket, path).await;
            assert_eq!(meta["file-permissions"], "0120777", "{path}: {meta:?}");
        }
        // The link to a directory was not followed: nothing below it.
        let keys = s.keys(&bucket, "").await;
        assert!(
            !keys.iter().any(|k| k.starts_with("dirlink/")),
            "{:?}: {keys:?}",
            s.kind
        );

        assert_links(&dst);
        // Nothing was written outside the destination, nor through a link.
        let beside: Vec<_> = std::fs::read_dir(parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, vec![std::ffi::OsString::from("dst")]);
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);

        // Unchanged on both sides: nothing moves on a second run.
        let state = common::tempdir();
        let url = s.url(&bucket, "");
        for (from, to) in [(path_str(src.path()), url.clone()), (url, path_str(&dst))] {
            let again = sync_ok(&s, state.path(), &[&from, &to]);
            assert_eq!(counter(&again, "FilesTransferred"), 0, "{from}: {again}");
        }
    }
}

#[test]
fn local_to_local_copies_links_as_links() {
    let src = source_tree();
    let parent = common::tempdir();
    let dst = parent.path().join("dst");
    let state = common::tempdir();
    let args = [path_str(src.path()), path_str(&dst)];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let summary = sync_ok(None, state.path(), &args);
    assert_eq!(counter(&summary, "SymlinksTransferred"), LINKS.len() as u64);
    assert_links(&dst);
    assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 1);
    let again = sync_ok(None, state.path(), &args);
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_link_target_is_copied_and_a_link_replaces_a_file_of_the_same_size() {
    let s = common::moto();
    let src = source_tree();
    let bucket = s.new_bucket("links-change").await;
    let (_parent, dst) = round_trip(&s, &bucket, src.path());
    // Same length, same mtime, other target: the size and time say nothing,
    // the upload after a re-link is new content with a new time.
    std::fs::remove_file(src.path().join("rel")).unwrap();
    symlink("b.txt", &src.path().join("rel"));
    set_link_mtime(&src.path().join("rel"), (LINK_TIME.0 + 5, 0));
    // A regular file in the destination where the source has a link of the
    // same size and mtime: the type decides.
    let f = dst.join("dangling");
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, b"xxxxxxxxxxxx").unwrap();
    set_link_mtime(&f, LINK_TIME);

    let state = common::tempdir();
    let url = s.url(&bucket, "");
    sync_ok(&s, state.path(), &[&path_str(src.path()), &url]);
    assert_eq!(s.get(&bucket, "rel").await, b"b.txt");
    let down = sync_ok(&s, state.path(), &[&url, &path_str(&dst)]);
    assert_eq!(counter(&down, "FilesTransferred"), 2, "{down}");
    assert_eq!(
        std::fs::read_link(dst.join("rel")).unwrap(),
        PathBuf::from("b.txt")
    );
    assert!(std::fs::symlink_metadata(&f)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_in_the_destination_is_replaced_never_written_through() {
    let s = common::moto();
    let bucket = s.new_bucket("links-dst").await;
    s.put(&bucket, "x", b"new content").await;
    s.put(&bucket, "d/f", b"below d").await;
    let outside = common::tempdir();
    let target = outside.path().join("target");
    std::fs::write(&target, b"keep me").unwrap();
    let dst = common::tempdir();
    std::os::unix::fs::symlink(&target, dst.path().join("x")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dst.path().join("d")).unwrap();

    let state = common::tempdir();
    let (out, summary) = sync_json(
        &s,
        state.path(),
        &[&s.url(&bucket, ""), &path_str(dst.path())],
    );
    // `x` replaced the link by a file; `d/f` would go through the link `d`
    // and is refused.
    assert_ne!(out.status, 0, "{summary}");
    assert_eq!(counter(&summary, "FilesFailed"), 1, "{summary}");
    assert!(out.stderr.contains("symbolic link") || summary.to_string().contains("symbolic link"));
    let x = std::fs::symlink_metadata(dst.path().join("x")).unwrap();
    assert!(x.file_type().is_file());
    assert_eq!(std::fs::read(dst.path().join("x")).unwrap(), b"new content");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    let mut names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("target")]);
}

/// The special files of a tree: a FIFO, a socket and /dev/null's twin.
fn special_tree() -> (tempfile::TempDir, std::os::unix::net::UnixListener) {
    let src = common::tempdir();
    common::write_tree(src.path(), &[("plain", b"p")]);
    mknod(&src.path().join("fifo"), libc::S_IFIFO | 0o640, 0);
    let sock = std::os::unix::net::UnixListener::bind(src.path().join("sock")).unwrap();
    std::fs::set_permissions(
        src.path().join("sock"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    mknod(
        &src.path().join("null"),
        libc::S_IFCHR | 0o620,
        libc::makedev(1, 3),
    );
    for name in ["fifo", "sock", "null"] {
        set_link_mtime(&src.path().join(name), LINK_TIME);
    }
    (src, sock)
}

#[tokio::test(flavor = "multi_thread")]
async fn fifos_sockets_and_devices_round_trip_as_root() {
    common::require_root("making a device");
    for s in common::data_path_servers() {
        let (src, _sock) = special_tree();
        let bucket = s.new_bucket("special").await;
        let state = common::tempdir();
        let url = s.url(&bucket, "");
        let up = sync_ok(&s, state.path(), &[&path_str(src.path()), &url]);
        assert_eq!(counter(&up, "SpecialFilesTransferred"), 3, "{up}");
        assert_eq!(counter(&up, "FilesTransferred"), 4, "{up}");
        for (key, perm) in [("fifo", "010640"), ("sock", "0140700"), ("null", "020620")] {
            assert!(s.get(&bucket, key).await.is_empty(), "{key}");
            let meta = s.head_metadata(&bucket, key).await;
            assert_eq!(meta["file-permissions"], perm, "{key}: {meta:?}");
        }
        let dev = libc::makedev(1, 3).to_string();
        assert_eq!(s.head_metadata(&bucket, "null").await["rdev"], dev);

        let dst = common::tempdir();
        let report = dst.path().join("report.jsonl");
        let out_dir = dst.path().join("out");
        let down = sync_ok(
            &s,
            state.path(),
            &[
                &url,
                &path_str(&out_dir),
                "--report",
                &path_str(&report),
                "--preserve-devices",
                "preserve",
            ],
        );
        assert_eq!(counter(&down, "SpecialFilesTransferred"), 3, "{down}");
        let kind_of = |key: &str| records_for(&read_report(&report), key)[0]["kind"].clone();
        assert_eq!(kind_of("fifo"), "FIFO");
        assert_eq!(kind_of("null"), "character device");
        let lstat = |n: &str| std::fs::symlink_metadata(out_dir.join(n)).unwrap();
        assert!(lstat("fifo").file_type().is_fifo());
        assert_eq!(lstat("fifo").mode() & 0o7777, 0o640);
        assert!(lstat("sock").file_type().is_socket());
        assert!(lstat("null").file_type().is_char_device());
        assert_eq!(lstat("null").rdev(), libc::makedev(1, 3));
        assert_eq!(lstat("null").mode() & 0o7777, 0o620);
        for n in ["fifo", "sock", "null"] {
            assert_eq!((lstat(n).mtime(), lstat(n).mtime_nsec()), LINK_TIME, "{n}");
        }
        let again = sync_ok(&s, state.path(), &[&url, &path_str(&out_dir)]);
        assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn as_another_user_a_device_is_reported_and_skipped() {
    common::require_root("making a device");
    let s = common::moto();
    let (src, _sock) = special_tree();
    let bucket = s.new_bucket("special-nobody").await;
    let state = common::tempdir();
    let url = s.url(&bucket, "");
    sync_ok(&s, state.path(), &[&path_str(src.path()), &url]);

    // A destination and state `nobody` may write to; one-way, then two-way.
    let work = common::tempdir();
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for (name, extra) in [("one-way", None), ("two-way", Some("--two-way"))] {
        let dst = work.path().join(name);
        let bin = env!("CARGO_BIN_EXE_syncmount");
        let mut argv: Vec<String> = vec!["env".into()];
        argv.extend(s.env().into_iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(
            [
                bin,
                "sync",
                &url,
                &path_str(&dst),
                "--endpoint-url",
                &s.endpoint,
                "--state-dir",
                &path_str(&work.path().join("state")),
                "--json",
                "--preserve-devices",
                "preserve",
            ]
            .map(String::from),
        );
        argv.extend(extra.map(String::from));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = common::mount::as_nobody(&argv);
        let summary = common::parse_summary(&out);
        assert_eq!(out.status, 0, "{name}: {summary}");
        assert_eq!(counter(&summary, "FilesSkipped"), 1, "{name}: {summary}");
        assert_eq!(counter(&summary, "FilesFailed"), 0, "{name}: {summary}");
        assert!(
            out.stderr
                .contains("a character device can be created only by root"),
            "{name}: {}",
            out.stderr
        );
        assert!(!dst.join("null").exists(), "{name}");
        assert!(
            std::fs::symlink_metadata(dst.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo(),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn links_and_devices_stored_by_s3fs_come_down_as_such() {
    common::require_root("making a device");
    let s = common::moto();
    let bucket = s.new_bucket("s3fs-links").await;
    let client = s.client().await;
    // s3fs's form: `mode` in decimal (41471 = 0o120777, 8624 = 0o20660).
    for (key, body, mode, rdev) in [
        ("link", &b"target/file"[..], "41471", None),
        (
            "dev",
            &b""[..],
            "8624",
            Some(libc::makedev(4, 64).to_string()),
        ),
    ] {
        let mut put = client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .metadata("mode", mode)
            .metadata("mtime", "1600000000")
            .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()));
        if let Some(r) = rdev {
            put = put.metadata("rdev", r);
        }
        put.send().await.unwrap();
    }
    let dst = common::tempdir();
    let state = common::tempdir();
    let down = sync_ok(
        &s,
        state.path(),
        &[
            &s.url(&bucket, ""),
            &path_str(dst.path()),
            "--preserve-devices",
            "preserve",
        ],
    );
    assert_eq!(counter(&down, "SymlinksTransferred"), 1, "{down}");
    assert_eq!(counter(&down, "SpecialFilesTransferred"), 1, "{down}");
    assert_eq!(
        std::fs::read_link(dst.path().join("link")).unwrap(),
        PathBuf::from("target/file")
    );
    let dev = std::fs::symlink_metadata(dst.path().join("dev")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(4, 64));
    assert_eq!(dev.mode() & 0o7777, 0o660);
    assert_eq!(dev.mtime(), 1_600_000_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_to_s3_copies_links_as_objects_with_their_metadata() {
    let s = common::moto();
    let src = source_tree();
    let a = s.new_bucket("links-a").await;
    let b = s.new_bucket("links-b").await;
    let state = common::tempdir();
    sync_ok(&s, state.path(), &[&path_str(src.path()), &s.url(&a, "")]);
    // Server-side copies: the objects and their metadata, as for any object
    // (no HEAD per key to tell links apart, so they count as files).
    let copied = sync_ok(&s, state.path(), &[&s.url(&a, ""), &s.url(&b, "")]);
    assert_eq!(counter(&copied, "FilesTransferred"), LINKS.len() as u64 + 2);
    for (path, target) in LINKS {
        assert_eq!(s.get(&b, path).await, target.as_bytes(), "{path}");
        assert_eq!(
            s.head_metadata(&b, path).await,
            s.head_metadata(&a, path).await,
            "{path}"
        );
    }
    let dst = common::tempdir();
    sync_ok(&s, state.path(), &[&s.url(&b, ""), &path_str(dst.path())]);
    assert_links(dst.path());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_way_task_carries_links_both_ways_as_content() {
    let s = common::moto();
    let side_a = source_tree();
    let bucket = s.new_bucket("links-2way").await;
    let url = s.url(&bucket, "");
    let state = common::tempdir();
    let two_way = |state: &Path| sync_ok(&s, state, &[&path_str(side_a.path()), &url, "--two-way"]);
    let first = two_way(state.path());
    assert_eq!(counter(&first, "FilesConflicted"), 0, "{first}");
    for (path, target) in LINKS {
        assert_eq!(s.get(&bucket, path).await, target.as_bytes(), "{path}");
    }
    // A link made on the S3 side (as a mount or DataSync would) comes down as a link.
    let client = s.client().await;
    client
        .put_object()
        .bucket(&bucket)
        .key("from-s3")
        .metadata("file-permissions", "0120777")
        .metadata("file-mtime", "1600000000000000000ns")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"dir/b.txt",
        ))
        .send()
        .await
        .unwrap();
    let second = two_way(state.path());
    assert_eq!(counter(&second, "FilesConflicted"), 0, "{second}");
    assert_eq!(
        std::fs::read_link(side_a.path().join("from-s3")).unwrap(),
        PathBuf::from("dir/b.txt")
    );
    assert_eq!(
        std::fs::read(side_a.path().join("from-s3")).unwrap(),
        b"beta"
    );
    assert_links(side_a.path());
    let idle = two_way(state.path());
    assert_eq!(counter(&idle, "FilesTransferred"), 0, "{idle}");
}
