//! A mount's life: starting (and failing to start, before detaching, with the
//! reason), detaching, stopping with SIGTERM or fusermount3 while files are
//! open, read-only mounts, keys that cannot be names, and a local location.
//! Results are checked through the S3 API or the local directory, never
//! through the mount.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::mount::{is_mounted, mount, mount_cmd, require_fuse, sh, writer_body, OpenWriter};
use common::{random_bytes, run, S3Server};

/// Whether process `pid` still exists (and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// Waits up to `limit` for `cond`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// A `syncmount mount` that should fail: runs it (detaching, unless `args`
/// says `--foreground`) and returns its output; the mountpoint must not be
/// left mounted and no process may be left serving it.
fn failed_mount(server: Option<&S3Server>, location: &str, mnt: &Path, args: &[&str]) -> String {
    require_fuse();
    let state = common::tempdir();
    let cmd = mount_cmd(server, location, mnt, state.path(), args);
    let started = Instant::now();
    let out = run(cmd);
    assert_ne!(out.status, 0, "the mount of {location} did not fail");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "failing took {:?}",
        started.elapsed()
    );
    out.stderr + &out.stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_fails_before_detaching_and_names_the_bucket() {
    let s = common::moto();
    let mnt = common::tempdir();
    let bucket = common::unique_bucket_name("no-such");
    for args in [&[][..], &["--foreground"][..]] {
        let text = failed_mount(Some(&s), &s.url(&bucket, "p"), mnt.path(), args);
        assert!(
            text.contains(&bucket),
            "{args:?}: the message does not name the bucket:\n{text}"
        );
        assert!(!is_mounted(mnt.path()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_fail_the_mount_before_detaching_with_the_reason() {
    let s = common::s3s();
    let bucket = s.new_bucket("ml-creds").await;
    let wrong = S3Server {
        secret_key: "not-the-secret".into(),
        ..s.clone()
    };
    let mnt = common::tempdir();
    let text = failed_mount(Some(&wrong), &wrong.url(&bucket, "p"), mnt.path(), &[]);
    assert!(
        text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || text.contains("InvalidAccessKeyId"),
        "the message does not say the credentials were refused:\n{text}"
    );
    assert!(!is_mounted(mnt.path()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mountpoint_that_is_mounted_or_missing_is_refused_with_the_reason() {
    let s = common::s3s();
    let bucket = s.new_bucket("ml-busy").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    for args in [&[][..], &["--foreground"][..]] {
        let text = failed_mount(Some(&s), &s.url(&bucket, "p"), &m.dir, args);
        assert!(text.contains("already a mount point"), "{args:?}:\n{text}");
    }
    // The first mount still works.
    std::fs::write(m.path("still"), b"here").unwrap();
    assert_eq!(s.get(&bucket, "p/still").await, b"here");
    assert_eq!(m.unmount(), Some(0));

    let tmp = common::tempdir();
    let gone = tmp.path().join("missing");
    let text = failed_mount(Some(&s), &s.url(&bucket, "p"), &gone, &[]);
    assert!(text.contains("does not exist"), "{text}");
    // A local location that is not there is refused the same way.
    let text = failed_mount(None, &common::path_str(&gone), tmp.path(), &[]);
    assert!(text.contains("is not a directory"), "{text}");
    assert!(
        text.contains(&common::path_str(&gone)),
        "the message does not name the path:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detached_mount_returns_once_mounted_says_where_it_logs_and_ends_with_fusermount() {
    require_fuse();
    let s = common::s3s();
    let bucket = s.new_bucket("ml-detach").await;
    s.put(&bucket, "p/f", b"detached").await;
    let tmp = common::tempdir();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("mount.log");
    let log_s = common::path_str(&log);
    let out = run(mount_cmd(
        Some(&s),
        &s.url(&bucket, "p"),
        &mnt,
        tmp.path(),
        &["--log-file", &log_s],
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(is_mounted(&mnt), "returned before the mount was live");
    assert!(
        out.stderr.contains(&log_s),
        "does not say where it logs:\n{}",
        out.stderr
    );
    let pid: u32 = out
        .stderr
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {}", out.stderr));
    assert!(alive(pid));
    assert_eq!(std::fs::read(mnt.join("f")).unwrap(), b"detached");
    std::fs::write(mnt.join("g"), b"written").unwrap();
    assert_eq!(s.get(&bucket, "p/g").await, b"written");
    sh(&format!("fusermount3 -u {}", mnt.display()));
    assert!(
        wait_for(Duration::from_secs(10), || !alive(pid)),
        "the background process {pid} is still running after fusermount3 -u"
    );
    assert!(!is_mounted(&mnt));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("was unmounted"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_uploads_a_file_still_open_with_unsaved_data_then_unmounts_and_exits_zero() {
    let s = common::s3s();
    let bucket = s.new_bucket("ml-sigterm").await;
    let mut m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let w = OpenWriter::start(&m.path("open.bin"), 100_000);
    assert!(!s.exists(&bucket, "p/open.bin").await);
    assert_eq!(m.stop_with(libc::SIGTERM), Some(0), "{}", m.log_text());
    assert!(!is_mounted(&m.dir), "still mounted after SIGTERM");
    assert_eq!(s.get(&bucket, "p/open.bin").await, writer_body(100_000));
    let _ = w.close();
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_a_mount_during_a_large_write_never_leaves_a_partial_object() {
    // SIGTERM with a 20 MiB file open (multipart), and fusermount3 -u -z
    // with one open: each object ends whole, and no upload is left open.
    let s = common::moto();
    let bucket = s.new_bucket("ml-partial").await;
    let size = 20 * 1024 * 1024;
    let mut m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let w = OpenWriter::start(&m.path("big-term"), size);
    assert_eq!(m.stop_with(libc::SIGTERM), Some(0), "{}", m.log_text());
    let _ = w.close();
    assert!(!is_mounted(&m.dir));
    assert!(
        s.get_unvalidated(&bucket, "p/big-term").await == writer_body(size),
        "the object differs from what was written"
    );

    let mut m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    let w = OpenWriter::start(&m.path("big-lazy"), size);
    sh(&format!("fusermount3 -u -z {}", m.dir.display()));
    // The open file still works on a lazily unmounted file system; its
    // close uploads it.
    assert_eq!(w.close(), "closed", "{}", m.log_text());
    assert!(
        s.get_unvalidated(&bucket, "p/big-lazy").await == writer_body(size),
        "the object differs from what was written"
    );
    // Signal 0 sends nothing: this waits for the process to end by itself.
    assert_eq!(m.stop_with(0), Some(0), "{}", m.log_text());
    assert_eq!(s.open_upload_keys(&bucket).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_mount_refuses_every_change_with_erofs() {
    let s = common::moto();
    let bucket = s.new_bucket("ml-ro").await;
    s.put(&bucket, "p/f", b"keep").await;
    s.put(&bucket, "p/d/x", b"x").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &["--read-only"]);
    let script = r#"
import os, sys
root = sys.argv[1]
def attempt(name, f):
    try:
        f()
        print(name, "OK")
    except OSError as e:
        print(name, e.errno)
attempt("create", lambda: open(os.path.join(root, "new"), "wb").close())
attempt("write", lambda: open(os.path.join(root, "f"), "r+b").close())
attempt("mkdir", lambda: os.mkdir(os.path.join(root, "nd")))
attempt("rm", lambda: os.unlink(os.path.join(root, "f")))
attempt("rmdir", lambda: os.rmdir(os.path.join(root, "d")))
attempt("rename", lambda: os.rename(os.path.join(root, "f"), os.path.join(root, "g")))
attempt("chmod", lambda: os.chmod(os.path.join(root, "f"), 0o600))
attempt("truncate", lambda: os.truncate(os.path.join(root, "f"), 0))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&m.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for op in [
        "create", "write", "mkdir", "rm", "rmdir", "rename", "chmod", "truncate",
    ] {
        assert!(
            text.lines().any(|l| l == format!("{op} {}", libc::EROFS)),
            "{op} was not refused with EROFS:\n{text}"
        );
    }
    // Reads work, and nothing changed.
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"keep");
    assert_eq!(s.keys(&bucket, "p/").await, ["p/d/x", "p/f"]);
    assert_eq!(s.get_unvalidated(&bucket, "p/f").await, b"keep");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_that_cannot_be_names_are_hidden_and_logged_once() {
    let s = common::moto();
    let bucket = s.new_bucket("ml-hidden").await;
    let long = "L".repeat(300);
    for k in ["a//b", "x/../y", "./z", long.as_str(), "ok", "x/fine"] {
        s.put(&bucket, &format!("p/{k}"), b"v").await;
    }
    assert!(s
        .keys(&bucket, "p/")
        .await
        .contains(&"p/x/../y".to_string()));
    let m = mount(Some(&s), &s.url(&bucket, "p"), &["--metadata-ttl", "0"]);
    for _ in 0..2 {
        let listing = sh(&format!("cd {} && find . | sort", m.dir.display()));
        assert_eq!(
            listing.lines().collect::<Vec<_>>(),
            [".", "./a", "./ok", "./x", "./x/fine"],
            "listing:\n{listing}"
        );
    }
    let log = m.log_text();
    let hidden: Vec<&str> = log.lines().filter(|l| l.contains("key hidden")).collect();
    for part in ["a//", "x/../", long.as_str()] {
        assert_eq!(
            hidden.iter().filter(|l| l.contains(part)).count(),
            1,
            "`{part}` is not logged exactly once:\n{log}"
        );
    }
    assert!(
        hidden.iter().filter(|l| l.contains("\"./\"")).count() == 1,
        "`./` is not logged exactly once:\n{log}"
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_that_is_both_a_file_and_a_directory_prefix_shows_the_directory() {
    let s = common::moto();
    let bucket = s.new_bucket("ml-clash").await;
    s.put(&bucket, "p/k", b"file").await;
    s.put(&bucket, "p/k/child", b"child").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    assert!(std::fs::metadata(m.path("k")).unwrap().is_dir());
    assert_eq!(std::fs::read(m.path("k/child")).unwrap(), b"child");
    let listing = sh(&format!("ls -1 {}", m.dir.display()));
    assert_eq!(listing, "k\n", "one entry for the clash");
    assert_eq!(m.unmount(), Some(0));
}

#[test]
fn writes_into_a_local_location_are_atomic_and_leave_no_temp_files() {
    let src = common::tempdir();
    std::fs::create_dir(src.path().join("d")).unwrap();
    std::fs::write(src.path().join("d/f"), b"old").unwrap();
    let m = mount(None, &common::path_str(src.path()), &[]);
    // An open file with new content leaves the old one in place.
    let w = OpenWriter::start(&m.path("d/f"), 50_000);
    assert_eq!(std::fs::read(src.path().join("d/f")).unwrap(), b"old");
    assert_eq!(w.close(), "closed");
    assert_eq!(
        std::fs::read(src.path().join("d/f")).unwrap(),
        writer_body(50_000)
    );
    let body = random_bytes(3 * 1024 * 1024);
    std::fs::write(m.path("d/g"), &body).unwrap();
    sh(&format!("echo more >> {}", m.path("d/g").display()));
    let mut want = body.clone();
    want.extend_from_slice(b"more\n");
    assert!(std::fs::read(src.path().join("d/g")).unwrap() == want);
    sh(&format!(
        "cd {} && mkdir -p e/f && cp d/g e/f/copy && mv d/g e/moved",
        m.dir.display()
    ));
    assert!(std::fs::read(src.path().join("e/moved")).unwrap() == want);
    assert!(std::fs::read(src.path().join("e/f/copy")).unwrap() == want);
    let temps: Vec<String> = common::tree_entries(src.path())
        .into_keys()
        .filter(|k| {
            k.rsplit('/')
                .next()
                .unwrap_or("")
                .starts_with(".syncmount-")
        })
        .collect();
    assert_eq!(temps, Vec::<String>::new(), "temporary files left");
    assert_eq!(m.unmount(), Some(0));
}

#[test]
fn removing_the_last_file_of_a_local_directory_keeps_the_directory() {
    let src = common::tempdir();
    std::fs::create_dir_all(src.path().join("d/sub")).unwrap();
    std::fs::write(src.path().join("d/sub/only"), b"x").unwrap();
    let m = mount(None, &common::path_str(src.path()), &[]);
    std::fs::remove_file(m.path("d/sub/only")).unwrap();
    assert!(!src.path().join("d/sub/only").exists());
    assert!(
        src.path().join("d/sub").is_dir(),
        "the emptied directory went too"
    );
    assert!(m.path("d/sub").is_dir());
    std::fs::remove_dir(m.path("d/sub")).unwrap();
    assert!(!src.path().join("d/sub").exists());
    assert!(src.path().join("d").is_dir());
    assert_eq!(m.unmount(), Some(0));
}

/// `syncmount mount … --foreground` with its state in `state`, waited for
/// until mounted; the caller ends it.
fn spawn_mount(server: &S3Server, location: &str, mnt: &Path, state: &Path) -> std::process::Child {
    let mut cmd = mount_cmd(Some(server), location, mnt, state, &["--foreground"]);
    let log = std::fs::File::create(state.join(format!(
        "{}.log",
        mnt.file_name().and_then(|n| n.to_str()).unwrap_or("mount")
    )))
    .expect("log file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start syncmount mount");
    let up = wait_for(Duration::from_secs(30), || {
        is_mounted(mnt) || child.try_wait().ok().flatten().is_some()
    });
    assert!(up && is_mounted(mnt), "the mount did not come up");
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_mount_aborts_the_multipart_upload_of_a_killed_one() {
    require_fuse();
    let s = common::moto();
    let bucket = s.new_bucket("ml-killed").await;
    // Parts never get through: the upload stays open while the client retries.
    let proxy = FaultProxy::start(
        &s.endpoint,
        FaultPlan::fail_path_containing("x-id=UploadPart", Fault::Drop),
    );
    let via = s.through(&proxy);
    let tmp = common::tempdir();
    let (mnt1, mnt2) = (tmp.path().join("m1"), tmp.path().join("m2"));
    std::fs::create_dir(&mnt1).unwrap();
    std::fs::create_dir(&mnt2).unwrap();
    let mut first = spawn_mount(&via, &s.url(&bucket, "p"), &mnt1, tmp.path());
    let mut writer = Command::new("python3")
        .arg("-c")
        .arg("import sys; open(sys.argv[1], 'wb').write(b'x' * (20 << 20))")
        .arg(mnt1.join("big"))
        .spawn()
        .unwrap();
    let started = wait_for(Duration::from_secs(30), || {
        proxy
            .counters
            .log()
            .iter()
            .any(|l| l.contains("x-id=UploadPart"))
    });
    assert!(started, "no part upload seen: {:#?}", proxy.counters.log());
    first.kill().unwrap();
    let _ = first.wait();
    let _ = writer.kill();
    let _ = writer.wait();
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(&mnt1)
        .status();
    assert_eq!(s.open_upload_keys(&bucket).await, ["p/big"]);

    let mut second = spawn_mount(&s, &s.url(&bucket, "p"), &mnt2, tmp.path());
    let mut left = Vec::new();
    for _ in 0..100 {
        left = s.open_upload_keys(&bucket).await;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: kill with a valid pid and signal.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = second.wait().unwrap();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "the killed mount's upload is still open"
    );
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(tmp.path().join("m2.log")).unwrap_or_default()
    );
    assert!(!s.exists(&bucket, "p/big").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_non_zero_naming_an_open_file_whose_upload_failed() {
    let s = common::moto();
    let bucket = s.new_bucket("ml-lost").await;
    let proxy = FaultProxy::start(
        &s.endpoint,
        FaultPlan::fail_path_containing("doomed?x-id=PutObject", Fault::InternalError),
    );
    let via = s.through(&proxy);
    let mut m = mount(Some(&via), &s.url(&bucket, "p"), &[]);
    let w = OpenWriter::start(&m.path("doomed"), 1000);
    let code = m.stop_with(libc::SIGTERM);
    let log = m.log_text();
    assert_ne!(code, Some(0), "unsaved data was lost silently:\n{log}");
    assert!(log.contains("doomed") && log.contains("lost"), "{log}");
    assert!(!is_mounted(&m.dir));
    assert!(!s.exists(&bucket, "p/doomed").await);
    let _ = w.close();
}
