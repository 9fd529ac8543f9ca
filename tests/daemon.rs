//! The daemon: tells systemd READY and STOPPING over $NOTIFY_SOCKET, runs
//! schedules (after a SIGHUP added one), serves `task start` through its
//! control socket (the execution runs in the daemon), and on SIGTERM lets
//! the running execution stop cleanly, leaving nothing partial; a schedule
//! waits while its task runs elsewhere and not once that runner is killed;
//! `--daemonize` writes a pid file and returns once ready; a start naming
//! another config file is refused.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::tasks::{big_files, nothing_partial, status, TaskEnv, SLOW};
use serde_json::Value;

use common::tasks::PAIR as CONFIG;

/// The config with a-b run every second.
fn every_second() -> String {
    CONFIG.replace(
        "destination = \"B\"",
        "destination = \"B\"\nschedule = \"rate(1 second)\"",
    )
}

fn env() -> TaskEnv {
    let env = TaskEnv::new(CONFIG);
    common::write_tree(&env.root().join("a"), &[("one.txt", b"1")]);
    std::fs::create_dir_all(env.root().join("b")).unwrap();
    env
}

struct Daemon {
    child: Child,
    notify: UnixDatagram,
}

impl Daemon {
    fn start(env: &TaskEnv, extra: &[&str]) -> Daemon {
        let sock = env.root().join("notify.sock");
        let notify = UnixDatagram::bind(&sock).expect("bind the notify socket");
        notify
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut args = vec!["daemon"];
        args.extend_from_slice(extra);
        let child = env
            .cmd(&args)
            .env("NOTIFY_SOCKET", &sock)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let d = Daemon { child, notify };
        let ready = d.expect_notify("READY=1");
        assert!(
            ready.contains("\nSTATUS=") && ready.contains("scheduled tasks"),
            "READY carries a STATUS line: {ready:?}"
        );
        d
    }

    /// Reads datagrams until one contains `what`.
    fn expect_notify(&self, what: &str) -> String {
        let mut buf = [0u8; 4096];
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            let n = self
                .notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no `{what}` from the daemon: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            if msg.contains(what) {
                return msg;
            }
        }
        panic!("no `{what}` from the daemon");
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGTERM, then its exit code and stderr.
    fn stop(mut self) -> (i32, String) {
        self.signal(libc::SIGTERM);
        let stopping = self.expect_notify("STOPPING=1");
        assert!(
            stopping.contains("STATUS=stopping"),
            "STOPPING carries a STATUS line: {stopping:?}"
        );
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for the daemon") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                return (st.code().unwrap_or(-1), err);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the daemon did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn executions(env: &TaskEnv) -> Vec<Value> {
    let out = env.run(&["task", "executions", "a-b", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    serde_json::from_str::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn after_sighup_adds_a_schedule_it_fires_and_sigterm_stops_the_daemon() {
    let env = env();
    let d = Daemon::start(&env, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(executions(&env).is_empty(), "nothing is scheduled yet");
    let scheduled = every_second();
    std::fs::write(
        &env.config,
        scheduled.replace("{root}", &env.root().display().to_string()),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let start = Instant::now();
    let done = loop {
        let recs = executions(&env);
        if let Some(r) = recs.iter().find(|r| status(r) == "SUCCESS") {
            break r.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the schedule never fired: {recs:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        done["Pid"].as_u64(),
        Some(u64::from(d.child.id())),
        "ran in the daemon: {done:#}"
    );
    assert_eq!(std::fs::read(env.root().join("b/one.txt")).unwrap(), b"1");
    let (code, stderr) = d.stop();
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn task_start_goes_through_the_daemon_and_sigterm_mid_transfer_leaves_nothing_partial() {
    let env = env();
    big_files(&env.root().join("a"), 4);
    let d = Daemon::start(&env, &["--grace-seconds", "0"]);
    let id = env.start("a-b", SLOW);
    let rec = env.wait_for(&id, Duration::from_secs(30), |r| {
        status(r) == "TRANSFERRING"
    });
    assert_eq!(
        rec["Pid"].as_u64(),
        Some(u64::from(d.child.id())),
        "runs in the daemon: {rec:#}"
    );
    let (code, stderr) = d.stop();
    assert_eq!(code, 0, "{stderr}");
    let rec = env.describe(&id);
    assert_eq!(status(&rec), "CANCELLED", "{rec:#}");
    let copied = nothing_partial(&env.root().join("b"), &["one.txt"]);
    assert!(copied < 4, "SIGTERM stopped nothing");
    // Without the daemon, start runs the execution itself again.
    let out = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(common::read_tree(&env.root().join("b")).len(), 5);
}

#[test]
fn daemonize_writes_a_pid_file_and_returns_once_ready() {
    let env = env();
    let pid_file = env.root().join("syncmount.pid");
    let out = env.run(&[
        "daemon",
        "--daemonize",
        "--pid-file",
        &pid_file.display().to_string(),
    ]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(out.stdout.trim(), pid.to_string());
    // A start naming another config file than the daemon's is refused.
    let other = env.root().join("other.toml");
    std::fs::copy(&env.config, &other).unwrap();
    let mut cmd = common::syncmount();
    cmd.arg("--config")
        .arg(&other)
        .arg("--state-dir")
        .arg(&env.state)
        .args(["task", "start", "a-b"]);
    let refused = common::run(cmd);
    assert_eq!(refused.status, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&env.config.display().to_string()),
        "{}",
        refused.stderr
    );
    // A second daemon on the same state directory is refused.
    let again = env.run(&["daemon"]);
    assert_eq!(again.status, 2, "{}", again.stderr);
    assert!(again.stderr.contains("already serves"), "{}", again.stderr);
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let start = Instant::now();
    while pid_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the daemon did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_schedule_waits_for_a_running_execution_and_not_for_a_killed_one() {
    let env = TaskEnv::new(&every_second());
    common::write_tree(&env.root().join("a"), &[("one.txt", b"1")]);
    big_files(&env.root().join("a"), 3);
    // Started from a shell before the daemon: a detached runner.
    let outside = env.start("a-b", SLOW);
    let rec = env.wait_for(&outside, Duration::from_secs(30), |r| {
        status(r) == "TRANSFERRING"
    });
    let d = Daemon::start(&env, &[]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        executions(&env).len(),
        1,
        "the schedule fired while a-b ran"
    );
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(rec["Pid"].as_i64().expect("pid") as i32, libc::SIGKILL) },
        0
    );
    let start = Instant::now();
    while !executions(&env)
        .iter()
        .any(|r| status(r) == "SUCCESS" && r["Pid"].as_u64() == Some(u64::from(d.child.id())))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the schedule never ran after the kill: {:#?}",
            executions(&env)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status(&env.describe(&outside)), "ERROR");
    let (code, stderr) = d.stop();
    assert_eq!(code, 0, "{stderr}");
}
