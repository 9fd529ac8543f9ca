//! The daemon's `[[mount]]`s: mounted at start, remounted on SIGHUP when
//! their table changed, unmounted on SIGTERM; and a change a task execution
//! writes into a mounted location shows through the mount at once, although
//! the mount's metadata TTL is an hour.

mod common;

use std::time::{Duration, Instant};

use common::mount::{as_nobody, is_mounted, wait_until, Daemon};
use common::tasks::{status, TaskEnv};

fn config(s: &common::S3Server, bucket: &str, mount_dir: &str) -> String {
    format!(
        r#"
[[location]]
name = "A"
path = "{{root}}/a"

[[location]]
name = "B"
bucket = "{bucket}"
prefix = "data"
endpoint_url = "{ep}"

[[task]]
name = "a-b"
source = "A"
destination = "B"

[[mount]]
location = "B"
path = "{{root}}/{mount_dir}"
metadata_ttl = "1h"
"#,
        ep = s.endpoint
    )
}

async fn env_with_bucket(tag: &str, mount_dir: &str) -> (common::S3Server, String, TaskEnv) {
    let s = common::s3s();
    let bucket = s.new_bucket(tag).await;
    let mut env = TaskEnv::new(&config(&s, &bucket, mount_dir));
    env.vars = s.env();
    std::fs::create_dir_all(env.root().join("a")).unwrap();
    std::fs::create_dir_all(env.root().join(mount_dir)).unwrap();
    (s, bucket, env)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_synced_change_shows_in_the_daemons_mount_at_once_and_sigterm_unmounts() {
    let (s, bucket, env) = env_with_bucket("daemon-mount", "mnt").await;
    s.put(&bucket, "data/f.txt", b"old").await;
    let mnt = env.root().join("mnt");
    let d = Daemon::start(&env, &mnt);

    // Cached by the mount (and the kernel) for the hour-long TTL.
    assert_eq!(std::fs::read(mnt.join("f.txt")).unwrap(), b"old");
    assert_eq!(std::fs::metadata(mnt.join("f.txt")).unwrap().len(), 3);
    // A name looked up while missing is not kept missing after the sync.
    assert!(!mnt.join("g.txt").exists());

    std::fs::write(env.root().join("a/f.txt"), b"new and longer").unwrap();
    std::fs::write(env.root().join("a/g.txt"), b"brand new").unwrap();
    let id = env.start("a-b", &[]);
    let rec = env.wait_end(&id, Duration::from_secs(60));
    assert_eq!(status(&rec), "SUCCESS", "{rec:#}");
    assert_eq!(s.get(&bucket, "data/f.txt").await, b"new and longer");

    assert_eq!(
        std::fs::metadata(mnt.join("f.txt")).unwrap().len(),
        14,
        "the kernel's cached size was dropped"
    );
    assert_eq!(std::fs::read(mnt.join("f.txt")).unwrap(), b"new and longer");
    assert_eq!(std::fs::read(mnt.join("g.txt")).unwrap(), b"brand new");

    assert_eq!(d.stop(), 0);
    assert!(!is_mounted(&mnt), "SIGTERM unmounts");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_moves_a_mount_whose_table_changed_and_keeps_serving_it() {
    let (s, bucket, env) = env_with_bucket("daemon-remount", "mnt1").await;
    s.put(&bucket, "data/x", b"x").await;
    let (m1, m2) = (env.root().join("mnt1"), env.root().join("mnt2"));
    std::fs::create_dir_all(&m2).unwrap();
    let d = Daemon::start(&env, &m1);
    assert_eq!(std::fs::read(m1.join("x")).unwrap(), b"x");

    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(&env.config, text.replace("/mnt1\"", "/mnt2\"")).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(|| is_mounted(&m2), "the remount at the new path");
    wait_until(|| !is_mounted(&m1), "the old path to be unmounted");
    assert_eq!(std::fs::read(m2.join("x")).unwrap(), b"x");

    assert_eq!(d.stop(), 0);
    assert!(!is_mounted(&m2));
}

/// Issue 10: the daemon runs a scheduled two-way task between a local
/// directory and a bucket while it mounts the local side: a file copied in
/// through the mount reaches the bucket, and an object put into the bucket
/// shows through the mount, each after the next scheduled execution.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_two_way_task_carries_a_file_written_through_the_mount_to_s3_and_back() {
    let s = common::s3s();
    let bucket = s.new_bucket("daemon-two-way").await;
    let text = format!(
        r#"
[[location]]
name = "A"
path = "{{root}}/a"

[[location]]
name = "B"
bucket = "{bucket}"
prefix = "team"
endpoint_url = "{ep}"

[[task]]
name = "team-sync"
direction = "two-way"
source = "A"
destination = "B"
schedule = "rate(1 second)"

[[mount]]
location = "A"
path = "{{root}}/mnt"
"#,
        ep = s.endpoint
    );
    let mut env = TaskEnv::new(&text);
    env.vars = s.env();
    std::fs::create_dir_all(env.root().join("a")).unwrap();
    std::fs::create_dir_all(env.root().join("mnt")).unwrap();
    let mnt = env.root().join("mnt");
    let d = Daemon::start(&env, &mnt);

    let src = env.root().join("report.txt");
    std::fs::write(&src, b"written through the mount").unwrap();
    let cp = std::process::Command::new("cp")
        .arg(&src)
        .arg(mnt.join("report.txt"))
        .status()
        .expect("run cp");
    assert!(cp.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.exists(&bucket, "team/report.txt").await {
        assert!(
            Instant::now() < deadline,
            "the file never reached the bucket"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.get(&bucket, "team/report.txt").await,
        b"written through the mount"
    );

    s.put(&bucket, "team/from-s3.txt", b"put into the bucket")
        .await;
    let shown = mnt.join("from-s3.txt");
    wait_until_async(|| shown.exists(), "the object to show through the mount").await;
    assert_eq!(std::fs::read(&shown).unwrap(), b"put into the bucket");
    assert_eq!(
        std::fs::read(env.root().join("a/from-s3.txt")).unwrap(),
        b"put into the bucket"
    );
    // No execution of the task ended in ERROR along the way.
    let out = common::run(env.cmd(&["task", "executions", "team-sync", "--json"]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(out.stdout.contains("SUCCESS"), "{}", out.stdout);
    assert!(!out.stdout.contains("\"ERROR\""), "{}", out.stdout);

    assert_eq!(d.stop(), 0);
    assert!(!is_mounted(&mnt));
}

async fn wait_until_async(cond: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon runs as root: a `[[mount]]` with `allow_other` lets every
/// user in, and the modes decide what each may do (issue 11).
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_mount_with_allow_other_keeps_a_0600_file_from_other_users() {
    use std::os::unix::fs::PermissionsExt;
    let (s, bucket, env) = env_with_bucket("daemon-perms", "mnt").await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        text.replace(
            "metadata_ttl = \"1h\"",
            "metadata_ttl = \"1h\"\nallow_other = true",
        ),
    )
    .unwrap();
    // Other users must reach the mountpoint (the temporary root is 0700).
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = env.root().join("mnt");
    let d = Daemon::start(&env, &mnt);

    std::fs::write(mnt.join("private.txt"), "secret\n").unwrap();
    std::fs::set_permissions(mnt.join("private.txt"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(mnt.join("public.txt"), "hello\n").unwrap();
    std::fs::set_permissions(mnt.join("public.txt"), PermissionsExt::from_mode(0o644)).unwrap();
    let path = |name: &str| mnt.join(name).to_string_lossy().into_owned();

    let out = as_nobody(&["cat", &path("private.txt")]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let out = as_nobody(&["sh", "-c", "echo x >> \"$1\"", "sh", &path("private.txt")]);
    assert_eq!(out.status, 2, "{out:?}");
    assert!(out.stderr.contains("Permission denied"), "{out:?}");
    let out = as_nobody(&["chmod", "666", &path("private.txt")]);
    assert_eq!(out.status, 1, "{out:?}");
    assert!(out.stderr.contains("Operation not permitted"), "{out:?}");
    let out = as_nobody(&["cat", &path("public.txt")]);
    assert_eq!((out.status, out.stdout.as_str()), (0, "hello\n"), "{out:?}");

    assert_eq!(s.get(&bucket, "data/private.txt").await, b"secret\n");
    let meta = s.head_metadata(&bucket, "data/private.txt").await;
    assert_eq!(meta["file-permissions"], "0100600");
    assert_eq!(d.stop(), 0);
}
