//! Nothing outside a local location's root is read, written, chowned or
//! deleted when someone who can write below the root plants symbolic links
//! (issue 20, findings 1 and 2). Links placed before a run, at a directory
//! of a key's path or at the key's own name, for `sync` down, up, two-way
//! and a mount of a local directory: the key is reported ("a symbolic link
//! was found where a directory was expected"), the rest of the run goes on.
//! Then the same as races: a thread swapping a directory for a link
//! (`renameat2(RENAME_EXCHANGE)`) and one replacing our temp files with
//! links, while root syncs down and up and writes through a mount, for a
//! fixed number of operations. A sentinel tree of root's private files
//! (content, owner, mode) is unchanged after each.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use common::mount::{as_nobody, mount};
use common::sentinel::{Sentinel, SECRET};
use common::{path_str, read_report, records_for, sync_json, S3Server};
use serde_json::Value;

const WHERE_DIR: &str = "a symbolic link was found where a directory was expected";

fn link(target: &Path, at: &Path) {
    if let Some(dir) = at.parent() {
        std::fs::create_dir_all(dir).expect("parent of a link");
    }
    std::os::unix::fs::symlink(target, at)
        .unwrap_or_else(|e| panic!("symlink {}: {e}", at.display()));
}

/// `sync ARGS… --json --report` on `s`; returns the exit status, summary
/// and report.
fn sync_reported(s: &S3Server, state: &Path, args: &[&str]) -> (i32, Value, Vec<Value>) {
    let report = state.with_file_name(format!(
        "report-{}.jsonl",
        rand_suffix().fetch_add(1, Ordering::Relaxed)
    ));
    let mut all = args.to_vec();
    let report_arg = path_str(&report);
    all.extend(["--report", &report_arg]);
    let (out, summary) = sync_json(s, state, &all);
    let records = if report.exists() {
        read_report(&report)
    } else {
        Vec::new()
    };
    (out.status, summary, records)
}

fn rand_suffix() -> &'static AtomicU64 {
    static N: AtomicU64 = AtomicU64::new(0);
    &N
}

#[track_caller]
fn assert_refused_for_a_link(report: &[Value], key: &str) {
    let records = records_for(report, key);
    assert!(
        records
            .iter()
            .any(|r| r["error"].as_str().unwrap_or("").contains(WHERE_DIR)),
        "{key} is not reported as a link in the way: {records:?}"
    );
}

/// Puts `key` with owner and mode metadata (a write applies them as root).
async fn put_owned(s: &S3Server, bucket: &str, key: &str, body: Vec<u8>) {
    s.client()
        .await
        .put_object()
        .bucket(bucket)
        .key(key)
        .metadata("file-owner", "65534")
        .metadata("file-group", "65534")
        .metadata("file-permissions", "0100666")
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutObject {key}: {e:?}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_down_writes_and_chowns_nothing_through_a_planted_link() {
    common::require_root("writing files with their owners");
    let sentinel = Sentinel::new();
    let s = common::moto();
    let bucket = s.new_bucket("down-links").await;
    for key in ["d/f", "deep/sub/f", "deep/sub/more/g", "x", "ok/y"] {
        put_owned(&s, &bucket, key, b"from the bucket".to_vec()).await;
    }
    let dst = common::tempdir();
    link(&sentinel.path("closed"), &dst.path().join("d"));
    link(&sentinel.path("closed"), &dst.path().join("deep/sub"));
    link(&sentinel.path("secret"), &dst.path().join("x"));
    let state = common::tempdir();
    let (status, summary, report) = sync_reported(
        &s,
        state.path(),
        &[&s.url(&bucket, ""), &path_str(dst.path())],
    );
    assert_ne!(status, 0, "{summary}");
    for key in ["d/f", "deep/sub/f", "deep/sub/more/g"] {
        assert_refused_for_a_link(&report, key);
    }
    // The rest of the run went on: a link at the key's own name is
    // replaced, never written through.
    assert_eq!(
        std::fs::read(dst.path().join("ok/y")).unwrap(),
        b"from the bucket"
    );
    let x = std::fs::symlink_metadata(dst.path().join("x")).unwrap();
    assert!(x.file_type().is_file(), "{x:?}");
    sentinel.assert_unchanged("sync down");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_up_reads_nothing_through_a_planted_link() {
    let sentinel = Sentinel::new();
    let s = common::moto();
    let bucket = s.new_bucket("up-links").await;
    let src = common::tempdir();
    common::write_tree(src.path(), &[("a", b"plain")]);
    link(&sentinel.path("closed"), &src.path().join("d"));
    link(&sentinel.path("secret"), &src.path().join("x"));
    link(&sentinel.path("public"), &src.path().join("e/y"));
    let state = common::tempdir();
    let (status, summary, _) = sync_reported(
        &s,
        state.path(),
        &[&path_str(src.path()), &s.url(&bucket, "")],
    );
    assert_eq!(status, 0, "{summary}");
    let keys = s.keys(&bucket, "").await;
    assert_eq!(keys, vec!["a", "d", "e/y", "x"], "links go up as links");
    for key in &keys {
        assert_ne!(s.get(&bucket, key).await, SECRET, "{key} carried a secret");
    }
    sentinel.assert_unchanged("sync up");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_way_writes_nothing_through_a_planted_link() {
    let sentinel = Sentinel::new();
    let s = common::moto();
    let bucket = s.new_bucket("two-way-links").await;
    s.put(&bucket, "d/f", b"from the bucket").await;
    s.put(&bucket, "ok", b"fine").await;
    let local = common::tempdir();
    link(&sentinel.path("closed"), &local.path().join("d"));
    let state = common::tempdir();
    let (_, summary, report) = sync_reported(
        &s,
        state.path(),
        &[&path_str(local.path()), &s.url(&bucket, ""), "--two-way"],
    );
    assert_refused_for_a_link(&report, "d/f");
    assert_eq!(
        std::fs::read(local.path().join("ok")).unwrap(),
        b"fine",
        "{summary}"
    );
    sentinel.assert_unchanged("two-way");
}

#[test]
fn a_mount_never_follows_a_directory_swapped_for_a_link_behind_it() {
    common::require_root("a mount other users reach");
    let sentinel = Sentinel::new();
    let src = common::tempdir();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/f"), b"mine").unwrap();
    set_mode(&src.path().join("d"), 0o777);
    let m = mount(None, &path_str(src.path()), &["--allow-other"]);
    m.reachable_by_others();
    // The mount knows `d` as a directory (never listed: each name below
    // is asked of the location).
    assert!(m.path("d").is_dir());
    // Behind the mount, `d` becomes a link into root's closed directory.
    std::fs::rename(src.path().join("d"), src.path().join("d.old")).unwrap();
    link(&sentinel.path("closed"), &src.path().join("d"));

    assert!(std::fs::read(m.path("d/inner")).is_err(), "read through");
    // A write may be refused at open or at close: either way nothing
    // lands outside (checked below).
    let _ = std::fs::write(m.path("d/new"), b"x");
    let _ = std::fs::create_dir(m.path("d/newdir"));
    assert!(std::fs::remove_file(m.path("d/inner")).is_err(), "unlink");
    assert!(
        std::fs::rename(m.path("d/inner"), m.path("stolen")).is_err(),
        "rename out"
    );
    let mnt = path_str(&m.path(""));
    let out = as_nobody(&[
        "sh",
        "-c",
        "cat \"$1/d/inner\"; cat \"$1/d/sub/../inner\"; rm -f \"$1/d/inner\"; \
         mv \"$1/d/inner\" \"$1/stolen2\"; echo x > \"$1/d/planted\"",
        "sh",
        &mnt,
    ]);
    assert!(!out.stdout.contains("secret"), "{out:?}");
    assert!(!src.path().join("stolen").exists());
    assert!(!src.path().join("stolen2").exists());
    sentinel.assert_unchanged("a local mount");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory held open, written in by name relative to it.
struct DirFd(std::fs::File);

impl DirFd {
    fn open(path: &Path) -> DirFd {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        DirFd(f)
    }

    /// Creates or truncates `name` and writes `body`; failures are the
    /// race's expected outcome and ignored.
    fn write(&self, name: &str, body: &[u8]) {
        use std::io::Write;
        use std::os::fd::{AsRawFd, FromRawFd};
        let c = CString::new(name).expect("no NUL");
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW;
        // SAFETY: a valid directory descriptor and name.
        let fd = unsafe { libc::openat(self.0.as_raw_fd(), c.as_ptr(), flags, 0o644) };
        if fd >= 0 {
            // SAFETY: `fd` was just opened and is owned here.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let _ = f.write_all(body);
        }
    }

    fn unlink(&self, name: &str) {
        use std::os::fd::AsRawFd;
        let c = CString::new(name).expect("no NUL");
        // SAFETY: a valid directory descriptor and name.
        let _ = unsafe { libc::unlinkat(self.0.as_raw_fd(), c.as_ptr(), 0) };
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in temp paths")
}

/// Makes the calling thread (only: the raw system calls, not libc's
/// process-wide wrappers) `nobody`, the attacker of the races.
fn become_nobody() {
    // SAFETY: plain system calls on this thread's credentials.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, NOBODY),
            0
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, NOBODY),
            0
        );
    }
}

const NOBODY: libc::c_long = 65534;

/// Swaps `a` and `b` (a directory and a link to `target`) atomically, as
/// an attacker who can write their parent would, until `stop` or `max`
/// swaps; a name the run removed meanwhile is planted again as a link.
/// Returns how many swaps were made.
fn swapper(
    a: &Path,
    b: &Path,
    target: &Path,
    stop: Arc<AtomicBool>,
    max: u64,
) -> std::thread::JoinHandle<u64> {
    let (pa, pb, target) = (a.to_path_buf(), b.to_path_buf(), target.to_path_buf());
    let (a, b) = (cpath(a), cpath(b));
    std::thread::spawn(move || {
        become_nobody();
        let (mut tries, mut swaps) = (0, 0);
        while tries < max && !stop.load(Ordering::Relaxed) {
            tries += 1;
            // SAFETY: two valid NUL-terminated paths.
            let rc = unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc == 0 {
                swaps += 1;
                continue;
            }
            for p in [&pa, &pb] {
                if std::fs::symlink_metadata(p).is_err() {
                    let _ = std::os::unix::fs::symlink(&target, p);
                }
            }
        }
        swaps
    })
}

/// Replaces every temp file of ours it finds in `dirs` with a link to
/// `target`, until `stop` or `max` scans; returns how many it replaced.
fn temp_replacer(
    dirs: Vec<std::path::PathBuf>,
    target: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    max: u64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        become_nobody();
        let (mut scans, mut replaced) = (0, 0);
        while scans < max && !stop.load(Ordering::Relaxed) {
            scans += 1;
            for dir in &dirs {
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    if !e.file_name().as_bytes().starts_with(b".syncmount-") {
                        continue;
                    }
                    let p = e.path();
                    if std::fs::remove_file(&p).is_ok()
                        && std::os::unix::fs::symlink(&target, &p).is_ok()
                    {
                        replaced += 1;
                    }
                }
            }
        }
        replaced
    })
}

/// Files of each round; rounds alternate between two prefixes of the
/// bucket with different content and names, so every round writes,
/// replaces and (`--preserve-deleted-files remove`) deletes.
const FILES: usize = 12;
const ROUNDS: usize = 6;
/// Writes through the mount.
const MOUNT_WRITES: usize = 40;
/// Bounds of the attacker loops (they stop earlier, when the runs end).
const MAX_SWAPS: u64 = 50_000_000;
const MAX_SCANS: u64 = 50_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn racing_links_never_reach_outside_the_root() {
    common::require_root("writing files with their owners");
    let sentinel = Sentinel::new();
    let s = common::moto();
    let bucket = s.new_bucket("race-down").await;
    let up = s.new_bucket("race-up").await;
    for round in 0..2 {
        for i in 0..FILES {
            let body = vec![b'a' + round as u8; 256 * 1024 + i];
            put_owned(&s, &bucket, &format!("r{round}/d/f{i}"), body.clone()).await;
            put_owned(&s, &bucket, &format!("r{round}/d/only{round}-{i}"), body).await;
        }
    }
    // The destination belongs to the attacker, as a user's home would.
    let dst = common::tempdir();
    std::fs::create_dir(dst.path().join("d")).unwrap();
    link(&sentinel.path("closed"), &dst.path().join("swap"));
    for p in [dst.path(), &dst.path().join("d")] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    let m = mount(None, &path_str(dst.path()), &[]);
    let mount_d = DirFd::open(&m.path("d"));

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(
        &dst.path().join("d"),
        &dst.path().join("swap"),
        &sentinel.path("closed"),
        stop.clone(),
        MAX_SWAPS,
    );
    let temps = temp_replacer(
        vec![dst.path().join("d"), dst.path().join("swap")],
        sentinel.path("secret"),
        stop.clone(),
        MAX_SCANS,
    );
    let state = common::tempdir();
    for round in 0..ROUNDS {
        let from = s.url(&bucket, &format!("r{}/", round % 2));
        let dst_arg = path_str(dst.path());
        let down = [
            from.as_str(),
            dst_arg.as_str(),
            "--preserve-deleted-files",
            "remove",
        ];
        // Failures are expected (a link in the way): only what reaches
        // outside the root matters.
        sync_reported(&s, state.path(), &down);
        sync_reported(&s, state.path(), &[&dst_arg, &s.url(&up, "")]);
    }
    // Through the mount's own node for `d` (held open): a path through
    // the mount would have the kernel follow a link the mount shows, as
    // root, which is the caller's doing, not the mount's.
    for i in 0..MOUNT_WRITES {
        mount_d.write(&format!("w{i}"), &[b'w'; 64 * 1024]);
        mount_d.unlink(&format!("w{}", i / 2));
    }
    stop.store(true, Ordering::Relaxed);
    let swapped = swaps.join().expect("swapper");
    let replaced = temps.join().expect("temp replacer");
    assert!(swapped > 0, "the swapper never ran");
    drop(mount_d);
    drop(m);
    sentinel.assert_unchanged(&format!(
        "{swapped} swaps and {replaced} temp files replaced"
    ));
    for key in s.keys(&up, "").await {
        assert_ne!(s.get(&up, &key).await, SECRET, "{key} carried a secret up");
    }
}
