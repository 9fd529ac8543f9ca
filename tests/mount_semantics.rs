//! SEMANTICS.md is a contract: every test it names must exist (as a test
//! function in tests/*.rs), and the claims not covered by the other mount
//! tests are checked here.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::mount::{is_mounted, mount, sh, wait_until};
use common::random_bytes;

const MIB: usize = 1024 * 1024;

/// The test names SEMANTICS.md cites (`test: name` or `test: file::name`).
fn cited_tests(doc: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in doc.split("test: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let name = name.rsplit("::").next().unwrap_or("").to_string();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

#[test]
fn every_test_semantics_md_cites_exists_in_the_mount_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("SEMANTICS.md")).expect("SEMANTICS.md");
    let cited = cited_tests(&doc);
    assert!(
        cited.len() >= 20,
        "SEMANTICS.md cites only {} tests; each claim should name one",
        cited.len()
    );
    let mut sources = String::new();
    for entry in std::fs::read_dir(root.join("tests")).expect("tests/") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "rs") {
            sources.push_str(&std::fs::read_to_string(&p).expect("read test file"));
        }
    }
    // A cited name must be a test: `fn name(` right after a test attribute.
    let is_test = |n: &str| {
        sources.match_indices(&format!("fn {n}(")).any(|(at, _)| {
            let before = &sources[..at];
            let attr = before.rfind("#[").unwrap_or(0);
            let between = &before[attr..];
            (between.starts_with("#[test]") || between.starts_with("#[tokio::test"))
                && between.lines().count() <= 2
        })
    };
    let missing: Vec<&String> = cited.iter().filter(|n| !is_test(n)).collect();
    assert!(
        missing.is_empty(),
        "SEMANTICS.md cites tests that do not exist: {missing:?}"
    );
}

#[test]
fn the_citation_parser_finds_names_and_ignores_prose() {
    let doc = "a | b | test: mount_reads::some_name, test: other_one\nno test here";
    assert_eq!(cited_tests(doc), vec!["some_name", "other_one"]);
}

fn errno_of(r: std::io::Result<()>) -> i32 {
    r.expect_err("the operation should fail")
        .raw_os_error()
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread")]
async fn hard_links_and_extended_attributes_are_refused() {
    let s = common::s3s();
    let bucket = s.new_bucket("mount-unsup").await;
    s.put(&bucket, "f", b"x").await;
    let m = mount(Some(&s), &s.url(&bucket, ""), &[]);
    let f = m.path("f");
    assert_eq!(errno_of(std::fs::hard_link(&f, m.path("h"))), libc::EPERM);
    let path = std::ffi::CString::new(f.to_string_lossy().as_bytes()).unwrap();
    let name = std::ffi::CString::new("user.x").unwrap();
    // SAFETY: valid paths and a 1-byte value.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    let mut buf = [0u8; 64];
    // SAFETY: valid paths and a 64-byte buffer.
    let rc = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    // SAFETY: a valid path and a 64-byte buffer.
    let rc = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), 64) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EOPNOTSUPP)
    );
    assert!(!s.exists(&bucket, "h").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn statfs_reports_room_so_tools_that_check_free_space_proceed() {
    let s = common::s3s();
    let bucket = s.new_bucket("mount-statfs").await;
    let m = mount(Some(&s), &s.url(&bucket, ""), &[]);
    let out = common::mount::sh(&format!(
        "df -B1 --output=avail '{}' | tail -1",
        m.dir.display()
    ));
    let avail: u64 = out.trim().parse().expect("df avail");
    assert!(avail >= 1 << 50, "df shows {avail} bytes available");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kernel_page_cache_is_dropped_when_the_object_changed_between_opens() {
    let s = common::s3s();
    let bucket = s.new_bucket("mount-keepcache").await;
    s.put(&bucket, "f", b"version one").await;
    let m = mount(Some(&s), &s.url(&bucket, ""), &["--metadata-ttl", "200ms"]);
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"version one");
    // Same size, new content: only the version tells them apart.
    s.put(&bucket, "f", b"version two").await;
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"version two");
}

fn errno_at(r: std::io::Result<impl Sized>) -> i32 {
    r.map(|_| ())
        .expect_err("the operation should fail")
        .raw_os_error()
        .unwrap_or(-1)
}

fn cpath(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// renameat2(2) with `flags`: the errno, or 0.
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> i32 {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: two valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ordinary_mistakes_get_the_usual_errnos_and_change_nothing() {
    let s = common::moto();
    let bucket = s.new_bucket("sem-errno").await;
    s.put(&bucket, "p/f", b"file").await;
    s.put(&bucket, "p/g", b"other").await;
    s.put(&bucket, "p/full/x", b"x").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    std::fs::create_dir(m.path("empty")).unwrap();
    let before = s.keys(&bucket, "p/").await;
    let p = |n: &str| m.path(n);
    assert_eq!(errno_at(std::fs::read(p("missing"))), libc::ENOENT);
    assert_eq!(errno_at(std::fs::remove_file(p("missing"))), libc::ENOENT);
    assert_eq!(errno_at(std::fs::create_dir(p("full"))), libc::EEXIST);
    assert_eq!(errno_at(std::fs::create_dir(p("f"))), libc::EEXIST);
    assert_eq!(errno_at(std::fs::remove_dir(p("f"))), libc::ENOTDIR);
    assert_eq!(errno_at(std::fs::remove_file(p("full"))), libc::EISDIR);
    assert_eq!(errno_at(std::fs::remove_dir(p("full"))), libc::ENOTEMPTY);
    assert_eq!(
        errno_at(std::fs::OpenOptions::new().write(true).open(p("full"))),
        libc::EISDIR
    );
    assert_eq!(rename2(&p("f"), &p("empty"), 0), libc::EISDIR);
    assert_eq!(rename2(&p("empty"), &p("f"), 0), libc::ENOTDIR);
    assert_eq!(rename2(&p("empty"), &p("full"), 0), libc::ENOTEMPTY);
    assert_eq!(
        rename2(&p("f"), &p("g"), libc::RENAME_EXCHANGE),
        libc::EINVAL
    );
    assert_eq!(
        rename2(&p("f"), &p("g"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(
        errno_at(std::fs::write(p(&"n".repeat(300)), b"x")),
        libc::ENAMETOOLONG
    );
    let bad = {
        use std::os::unix::ffi::OsStrExt;
        m.dir.join(std::ffi::OsStr::from_bytes(b"not-utf8-\xff"))
    };
    assert_eq!(errno_at(std::fs::write(bad, b"x")), libc::EINVAL);
    assert_eq!(
        s.keys(&bucket, "p/").await,
        before,
        "a failed operation changed the bucket"
    );
    assert_eq!(s.get_unvalidated(&bucket, "p/f").await, b"file");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_without_stored_metadata_show_the_mount_defaults_and_rclone_and_s3fs_metadata_is_read(
) {
    let s = common::moto();
    let bucket = s.new_bucket("sem-defaults").await;
    s.put(&bucket, "p/plain", b"plain").await;
    s.put(&bucket, "p/d/x", b"x").await;
    let client = s.client().await;
    client
        .put_object()
        .bucket(&bucket)
        .key("p/rclone")
        .metadata("mtime", "1500000000.5")
        .body(b"r".to_vec().into())
        .send()
        .await
        .unwrap();
    client
        .put_object()
        .bucket(&bucket)
        .key("p/s3fs")
        .metadata("mode", "33216") // 0o100700
        .metadata("uid", "1234")
        .metadata("gid", "5678")
        .body(b"s".to_vec().into())
        .send()
        .await
        .unwrap();
    let modified = s
        .head(&bucket, "p/plain")
        .await
        .unwrap()
        .last_modified()
        .unwrap()
        .secs();
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let st = |n: &str| std::fs::metadata(m.path(n)).unwrap();
    let plain = st("plain");
    assert_eq!(
        (
            plain.mode() & 0o7777,
            plain.uid(),
            plain.gid(),
            plain.mtime()
        ),
        (0o644, uid, gid, modified),
        "plain object"
    );
    let d = st("d");
    assert_eq!(
        (d.mode() & 0o7777, d.uid(), d.mtime()),
        (0o755, uid, 0),
        "directory without a marker"
    );
    let root = std::fs::metadata(&m.dir).unwrap();
    assert_eq!(
        (root.mode() & 0o7777, root.uid(), root.mtime()),
        (0o755, uid, 0),
        "the root"
    );
    let r = st("rclone");
    assert_eq!(
        (r.mtime(), r.mtime_nsec()),
        (1_500_000_000, 500_000_000),
        "rclone's mtime"
    );
    let f = st("s3fs");
    assert_eq!(
        (f.mode() & 0o7777, f.uid(), f.gid()),
        (0o700, 1234, 5678),
        "s3fs's mode/uid/gid"
    );
    assert_eq!(m.unmount(), Some(0));

    let m = mount(
        Some(&s),
        &s.url(&bucket, "p"),
        &[
            "--file-mode",
            "600",
            "--dir-mode",
            "700",
            "--uid",
            "42",
            "--gid",
            "43",
        ],
    );
    let plain = std::fs::metadata(m.path("plain")).unwrap();
    assert_eq!(
        (plain.mode() & 0o7777, plain.uid(), plain.gid()),
        (0o600, 42, 43)
    );
    let d = std::fs::metadata(m.path("d")).unwrap();
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o700, 42, 43));
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mount_root_and_atime_take_changes_without_keeping_them() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-root").await;
    s.put(&bucket, "p/f", b"x").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &["--metadata-ttl", "0"]);
    sh(&format!(
        "chmod 700 '{0}' && chown 1234:5678 '{0}' && TZ=UTC touch -d '2001-02-03 04:05:06' '{0}'",
        m.dir.display()
    ));
    let root = std::fs::metadata(&m.dir).unwrap();
    // SAFETY: no preconditions.
    let uid = unsafe { libc::getuid() };
    assert_eq!(
        (root.mode() & 0o7777, root.uid(), root.mtime()),
        (0o755, uid, 0),
        "the root kept a change"
    );
    let before = std::fs::metadata(m.path("f")).unwrap();
    sh(&format!(
        "TZ=UTC touch -a -d '2001-02-03 04:05:06' '{}'",
        m.path("f").display()
    ));
    let after = std::fs::metadata(m.path("f")).unwrap();
    assert_eq!(after.atime(), after.mtime(), "atime is the mtime");
    assert_eq!(after.mtime(), before.mtime(), "touch -a changed the mtime");
    assert_ne!(after.atime(), 981_173_106, "atime was kept");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listing_asks_the_store_each_time_while_a_name_looked_up_is_trusted_for_the_ttl() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-list").await;
    s.put(&bucket, "p/a", b"a").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &["--metadata-ttl", "60s"]);
    assert!(m.path("a").exists());
    assert!(!m.path("b").exists());
    s.put(&bucket, "p/b", b"b").await;
    s.client()
        .await
        .delete_object()
        .bucket(&bucket)
        .key("p/a")
        .send()
        .await
        .unwrap();
    let ls = || sh(&format!("ls '{}'", m.dir.display()));
    assert_eq!(ls(), "b\n", "the listing within the TTL");
    // `a` was looked up before: trusted until the TTL ends ...
    assert!(
        m.path("a").exists(),
        "a cached lookup was not trusted for the TTL"
    );
    // ... but an open asks the store.
    assert_eq!(errno_at(std::fs::File::open(m.path("a"))), libc::ENOENT);
    assert_eq!(std::fs::read(m.path("b")).unwrap(), b"b");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn own_writes_show_in_the_mount_at_once_and_in_the_store_after_fsync_or_close() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-own").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let mut f = std::fs::File::create(m.path("f")).unwrap();
    f.write_all(b"hello").unwrap();
    // s3s-fs never lists an empty directory marker: the mount remembers it.
    std::fs::create_dir(m.path("made")).unwrap();
    assert_eq!(std::fs::metadata(m.path("f")).unwrap().len(), 5);
    let mut listed = names_in(&m.dir);
    listed.sort();
    assert_eq!(listed, ["f", "made"]);
    assert!(
        !s.exists(&bucket, "p/f").await,
        "in the store before a close"
    );
    // A second open reads the unsaved bytes.
    let mut r = std::fs::File::open(m.path("f")).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello");
    assert!(
        !s.exists(&bucket, "p/f").await,
        "in the store before a close"
    );
    // Any close uploads: the reader's, or the copy of the descriptor a
    // child process closes when it starts another program (CLOEXEC).
    drop(r);
    assert_eq!(
        s.get(&bucket, "p/f").await,
        b"hello",
        "after the reader's close"
    );
    f.write_all(b" more").unwrap();
    sh("true");
    assert_eq!(
        s.get(&bucket, "p/f").await,
        b"hello more",
        "after a child process started"
    );
    f.write_all(b" again").unwrap();
    assert_eq!(s.get(&bucket, "p/f").await, b"hello more", "before fsync");
    f.sync_all().unwrap();
    assert_eq!(
        s.get(&bucket, "p/f").await,
        b"hello more again",
        "after fsync"
    );
    f.write_all(b"!").unwrap();
    assert_eq!(
        s.get(&bucket, "p/f").await,
        b"hello more again",
        "before close"
    );
    drop(f);
    assert_eq!(
        s.get(&bucket, "p/f").await,
        b"hello more again!",
        "after close"
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn of_two_mounts_writing_one_key_the_last_close_wins_whole_and_a_new_open_sees_it() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-lastclose").await;
    let m1 = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let m2 = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let mut a = std::fs::File::create(m1.path("f")).unwrap();
    let mut b = std::fs::File::create(m2.path("f")).unwrap();
    a.write_all(&[b'a'; 100_000]).unwrap();
    b.write_all(b"bbbbbbbbbb").unwrap();
    drop(a);
    assert_eq!(s.get(&bucket, "p/f").await, vec![b'a'; 100_000]);
    drop(b);
    assert_eq!(s.get(&bucket, "p/f").await, b"bbbbbbbbbb");
    // Within m1's TTL: a new open there reads the new version, whole.
    assert_eq!(std::fs::read(m1.path("f")).unwrap(), b"bbbbbbbbbb");
    assert_eq!(m1.unmount(), Some(0));
    assert_eq!(m2.unmount(), Some(0));
}

#[test]
fn a_local_location_renames_files_and_directories_with_rename_2() {
    let store = common::tempdir();
    std::fs::create_dir_all(store.path().join("d/sub")).unwrap();
    std::fs::write(store.path().join("d/sub/x"), b"x").unwrap();
    std::fs::write(store.path().join("f"), b"f").unwrap();
    let ino = |p: &str| std::fs::metadata(store.path().join(p)).unwrap().ino();
    let (f_ino, d_ino, x_ino) = (ino("f"), ino("d"), ino("d/sub/x"));
    let m = mount(None, &common::path_str(store.path()), &[]);
    std::fs::rename(m.path("f"), m.path("g")).unwrap();
    std::fs::rename(m.path("d"), m.path("e")).unwrap();
    assert_eq!(
        (ino("g"), ino("e"), ino("e/sub/x")),
        (f_ino, d_ino, x_ino),
        "copied, not renamed"
    );
    assert_eq!(m.unmount(), Some(0));
}

/// The names in `dir` (none when it does not exist).
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_being_written_are_staged_unnamed_and_the_disk_cache_starts_empty_at_each_mount() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-staging").await;
    s.put(&bucket, "p/big", &random_bytes(3 * MIB)).await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    // The harness keeps the state directory next to the log.
    let staging = m.log.parent().unwrap().join("state/staging");
    let mut w = std::fs::File::create(m.path("new")).unwrap();
    w.write_all(&random_bytes(MIB)).unwrap();
    assert!(
        staging.is_dir(),
        "no staging directory at {}",
        staging.display()
    );
    assert_eq!(
        names_in(&staging),
        Vec::<String>::new(),
        "a staged file has a name"
    );
    drop(w);
    assert_eq!(m.unmount(), Some(0));

    let cache = common::tempdir();
    let args = ["--cache-dir", &common::path_str(cache.path())];
    let m = mount(Some(&s), &s.url(&bucket, "p"), &args);
    assert_eq!(std::fs::read(m.path("big")).unwrap().len(), 3 * MIB);
    assert_eq!(
        names_in(&cache.path().join("blocks")).len(),
        3,
        "blocks on disk"
    );
    let mut w = std::fs::File::create(m.path("new2")).unwrap();
    w.write_all(b"staged").unwrap();
    assert!(
        cache.path().join("staging").is_dir(),
        "staging is not in the cache dir"
    );
    assert_eq!(
        names_in(&cache.path().join("staging")),
        Vec::<String>::new()
    );
    drop(w);
    assert_eq!(m.unmount(), Some(0));
    let m = mount(Some(&s), &s.url(&bucket, "p"), &args);
    assert_eq!(
        names_in(&cache.path().join("blocks")),
        Vec::<String>::new(),
        "the disk cache kept blocks across mounts"
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sequential_reader_gets_blocks_fetched_ahead_of_its_reads() {
    let server = common::s3s();
    let bucket = server.new_bucket("sem-ahead").await;
    let body = random_bytes(64 * MIB);
    server.put(&bucket, "p/f", &body).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let m = mount(Some(&via), &server.url(&bucket, "p"), &[]);
    let size = body.len() as u64;
    let fetched = || -> u64 {
        proxy
            .counters
            .get_ranges("/p/f", size)
            .iter()
            .map(|r| r.end - r.start)
            .sum()
    };
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(m.path("f"))
            .unwrap()
    };
    // 4 MiB read in 128 KiB steps: 4 blocks asked for, and a window that
    // doubled on every step to 32 blocks ahead of the reader.
    let mut got = vec![0u8; 4 * MIB];
    for chunk in got.chunks_mut(128 * 1024) {
        f.read_exact(chunk).unwrap();
    }
    assert!(got == body[..4 * MIB], "wrong bytes");
    wait_until(
        || fetched() >= 16 * MIB as u64,
        "16 MiB fetched for a sequential reader of 4 MiB",
    );
    // Each byte at most once, and no more than the read and one window.
    let mut ranges = proxy.counters.get_ranges("/p/f", size);
    ranges.sort_by_key(|r| r.start);
    for pair in ranges.windows(2) {
        assert!(pair[0].end <= pair[1].start, "fetched twice: {ranges:?}");
    }
    assert!(
        fetched() <= (4 + 32) * MIB as u64,
        "{} bytes fetched: {ranges:?}",
        fetched()
    );
    drop(f);
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_uploads_open_files_and_unmounts_like_sigterm() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-sigint").await;
    let mut m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let mut w = std::fs::File::create(m.path("open")).unwrap();
    w.write_all(b"unsaved").unwrap();
    assert_eq!(m.stop_with(libc::SIGINT), Some(0), "{}", m.log_text());
    assert!(!is_mounted(&m.dir));
    assert_eq!(s.get(&bucket, "p/open").await, b"unsaved");
    drop(w);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_upload_over_an_existing_object_leaves_the_previous_one() {
    let s = common::moto();
    let bucket = s.new_bucket("sem-keepold").await;
    s.put(&bucket, "p/kept", b"previous").await;
    let proxy = FaultProxy::start(
        &s.endpoint,
        FaultPlan::fail_path_containing(
            "kept?x-id=PutObject",
            common::fault_proxy::Fault::InternalError,
        ),
    );
    let via = s.through(&proxy);
    let m = mount(Some(&via), &s.url(&bucket, "p"), &[]);
    let mut f = std::fs::File::create(m.path("kept")).unwrap();
    f.write_all(b"new content").unwrap();
    // close(2) through libc: std's drop ignores the error.
    use std::os::fd::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: a descriptor this test owns, closed once.
    let rc = unsafe { libc::close(fd) };
    assert_eq!(rc, -1, "the close of a failed upload succeeded");
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EIO)
    );
    assert_eq!(s.get_unvalidated(&bucket, "p/kept").await, b"previous");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disk_cache_stays_within_its_size() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-disk-size").await;
    let body = random_bytes(12 * MIB);
    s.put(&bucket, "big", &body).await;
    let cache = common::tempdir();
    let dir = common::path_str(cache.path());
    let args = [
        "--cache-dir",
        dir.as_str(),
        "--cache-size",
        "1MiB",
        "--cache-dir-size",
        "3MiB",
    ];
    let m = mount(Some(&s), &s.url(&bucket, ""), &args);
    assert_eq!(std::fs::read(m.path("big")).unwrap(), body);
    let on_disk: u64 = std::fs::read_dir(cache.path().join("blocks"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    // Each block file holds 1 MiB and its 4-byte checksum.
    assert!(
        on_disk <= 3 * (MIB as u64 + 4),
        "{on_disk} bytes of blocks on disk, over the 3 MiB limit"
    );
    assert!(
        on_disk >= MIB as u64,
        "nothing was kept on disk ({on_disk} bytes)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_made_here_shows_another_clients_file_once_listed() {
    let s = common::s3s();
    let bucket = s.new_bucket("sem-known-dir").await;
    let m = mount(Some(&s), &s.url(&bucket, ""), &["--metadata-ttl", "1h"]);
    std::fs::create_dir(m.path("d")).unwrap();
    std::fs::write(m.path("d/mine"), b"1").unwrap();
    // Within the TTL a lookup in a directory made here trusts what this
    // mount put there ...
    s.put(&bucket, "d/theirs", b"2").await;
    assert!(!m.path("d/theirs").exists());
    // ... until a listing shows the store's view.
    let mut names: Vec<String> = std::fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["mine", "theirs"]);
    assert_eq!(std::fs::read(m.path("d/theirs")).unwrap(), b"2");
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_attributes_show_the_listings_size_and_time_without_a_head_per_file() {
    let s = common::moto();
    let bucket = s.new_bucket("sem-listattr").await;
    let client = s.client().await;
    for i in 0..20 {
        client
            .put_object()
            .bucket(&bucket)
            .key(format!("p/d/f{i:02}"))
            .metadata("mtime", "1500000000.5")
            .metadata("mode", "33152") // 0o100600
            .body(vec![b'x'; i + 1].into())
            .send()
            .await
            .unwrap();
    }
    // Each object's own LastModified (the puts may straddle a second).
    let mut modified = std::collections::HashMap::new();
    for name in ["f04", "f07"] {
        let t = s
            .head(&bucket, &format!("p/d/{name}"))
            .await
            .unwrap()
            .last_modified()
            .unwrap()
            .secs();
        modified.insert(name, t);
    }
    let proxy = FaultProxy::start(&s.endpoint, FaultPlan::PassAll);
    let via = s.through(&proxy);
    let heads_of_files = || proxy.counters.count("HEAD", &["/p/d/f"]);
    // `ls -l` prints mode, size and mtime (seconds) of every file.
    let ls = |dir: &Path| sh(&format!("ls -l --time-style=+%s '{}'", dir.display()));
    let line = |out: &str, name: &str| -> Vec<String> {
        let l = out
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not in ls -l:\n{out}"));
        let f: Vec<&str> = l.split_whitespace().collect();
        vec![f[0].to_string(), f[4].to_string(), f[5].to_string()]
    };

    // By default every file's stored metadata is read: one HEAD each.
    let m = mount(Some(&via), &s.url(&bucket, "p"), &["--metadata-ttl", "60s"]);
    let out = ls(&m.path("d"));
    assert_eq!(line(&out, "f04"), ["-rw-------", "5", "1500000000"]);
    assert_eq!(heads_of_files(), 20, "one HEAD per file by default");
    assert_eq!(m.unmount(), Some(0));

    // --listing-attributes: what the listing says, and the default mode.
    let before = heads_of_files();
    let m = mount(
        Some(&via),
        &s.url(&bucket, "p"),
        &["--metadata-ttl", "60s", "--listing-attributes"],
    );
    let out = ls(&m.path("d"));
    assert_eq!(out.lines().filter(|l| l.starts_with('-')).count(), 20);
    assert_eq!(
        line(&out, "f04"),
        ["-rw-r--r--", "5", modified["f04"].to_string().as_str()]
    );
    assert_eq!(heads_of_files(), before, "no HEAD of a listed file");
    // A file looked up by name (a HEAD) shows the same, not its metadata.
    let st = std::fs::metadata(m.path("d/f07")).unwrap();
    assert_eq!((st.mode() & 0o7777, st.mtime()), (0o644, modified["f07"]));
    assert_eq!(m.unmount(), Some(0));
}
