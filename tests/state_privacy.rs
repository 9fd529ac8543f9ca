//! Private by default: after a daemon ran a one-way and a two-way task and
//! served a mount with a write and a disk cache, all under `umask 000`,
//! every directory syncmount made for itself (the state directory, the
//! staging and the cache) is 0700, every file in them 0600 and the control
//! socket 0600; a user other than root (`nobody`) cannot start a task
//! through the socket, whether the directory keeps them out or, with the
//! modes widened by hand, the daemon refuses them by their peer uid.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mount::{as_nobody, Daemon};
use common::tasks::{status, TaskEnv};

fn config(s: &common::S3Server, bucket: &str) -> String {
    format!(
        r#"
[[location]]
name = "A"
path = "{{root}}/a"

[[location]]
name = "C"
path = "{{root}}/c"

[[location]]
name = "B"
bucket = "{bucket}"
prefix = "data"
endpoint_url = "{ep}"

[[location]]
name = "B2"
bucket = "{bucket}"
prefix = "two"
endpoint_url = "{ep}"

[[task]]
name = "a-b"
source = "A"
destination = "B"

[[task]]
name = "c-b2"
source = "C"
destination = "B2"
direction = "two-way"

[[mount]]
location = "B"
path = "{{root}}/mnt"
metadata_ttl = "1h"
cache_dir = "{{root}}/cache"
"#,
        ep = s.endpoint
    )
}

/// Every entry under `root`, itself included.
fn walked(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        if p.symlink_metadata().unwrap().is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        out.push(p);
    }
    out
}

/// The entries of `paths` whose mode is not private (0700 for a
/// directory, 0600 for anything else): (path, mode, what it is).
fn wider_than_private(paths: &[PathBuf]) -> Vec<(PathBuf, u32, &'static str)> {
    let mut out = Vec::new();
    for p in paths {
        let m = std::fs::symlink_metadata(p).unwrap();
        let mode = m.mode() & 0o7777;
        let (want, what) = if m.is_dir() {
            (0o700, "directory")
        } else if m.file_type().is_socket() {
            (0o600, "socket")
        } else {
            (0o600, "file")
        };
        if mode != want {
            out.push((p.clone(), mode, what));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_daemon_keeps_is_private_under_umask_000_and_nobody_is_refused() {
    common::require_root("running as nobody");
    // SAFETY: umask has no preconditions; this binary holds this one test,
    // and everything it starts inherits the mask.
    unsafe { libc::umask(0) };
    let s = common::moto();
    let bucket = s.new_bucket("private-state").await;
    s.put(&bucket, "data/read.bin", &common::random_bytes(300_000))
        .await;
    let mut env = TaskEnv::new(&config(&s, &bucket));
    env.vars = s.env();
    for d in ["a", "c", "mnt"] {
        std::fs::create_dir_all(env.root().join(d)).unwrap();
    }
    common::write_tree(&env.root().join("a"), &[("one.txt", b"one")]);
    common::write_tree(&env.root().join("c"), &[("two.txt", b"two")]);
    let mnt = env.root().join("mnt");
    let pid_file = common::path_str(&env.state.join("daemon.pid"));
    let d = Daemon::start_with(&env, &["--pid-file", &pid_file], &mnt);

    for task in ["a-b", "c-b2"] {
        let id = env.start(task, &[]);
        let rec = env.wait_end(&id, Duration::from_secs(60));
        assert_eq!(status(&rec), "SUCCESS", "{task}: {rec:#}");
    }
    std::fs::write(mnt.join("written.txt"), b"through the mount").unwrap();
    assert_eq!(std::fs::read(mnt.join("read.bin")).unwrap().len(), 300_000);
    assert_eq!(
        s.get(&bucket, "data/written.txt").await,
        b"through the mount"
    );

    let state = env.state.clone();
    let cache = env.root().join("cache");
    let kept: Vec<PathBuf> = walked(&state).into_iter().chain(walked(&cache)).collect();
    for want in [
        "history.db",
        "known-meta.db",
        "daemon.pid",
        "history.db-wal",
        "pairs",
        "bases",
        "locks",
        "daemon.sock",
        "reports",
        "executions",
        "staging",
        "blocks",
    ] {
        assert!(
            kept.iter()
                .any(|p| p.file_name().is_some_and(|n| n == want)),
            "no {want} among {kept:#?}"
        );
    }
    let wide = wider_than_private(&kept);
    assert!(wide.is_empty(), "not private: {wide:#?}");

    // nobody can read the config (the task's name) but not reach the socket.
    std::fs::set_permissions(env.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = env!("CARGO_BIN_EXE_syncmount");
    let (config, state_arg) = (common::path_str(&env.config), common::path_str(&state));
    let argv = [
        bin,
        "--config",
        &config,
        "--state-dir",
        &state_arg,
        "task",
        "start",
        "a-b",
    ];
    let out = as_nobody(&argv);
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("is not open to this user"),
        "{}",
        out.stderr
    );
    // With the modes widened by hand, the daemon itself refuses.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        state.join("daemon.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let out = as_nobody(&argv);
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(out.stderr.contains("refused: uid 65534"), "{}", out.stderr);
    assert_eq!(executions(&env), 1, "an execution started for nobody");
    assert_eq!(d.stop(), 0);
}

/// How many executions of a-b the history holds.
fn executions(env: &TaskEnv) -> usize {
    let out = env.run(&["task", "executions", "a-b", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON executions");
    v.as_array().map_or(0, Vec::len)
}
