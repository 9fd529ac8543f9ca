//! Helpers for the task, daemon and config tests: a temporary directory
//! with a config file and a state directory, `syncmount` commands bound to
//! both, and waiting on execution records.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{run, syncmount, RunOutput};

/// Two local locations A and B (under `{root}`) and the task a-b.
pub const PAIR: &str = r#"
[[location]]
name = "A"
path = "{root}/a"

[[location]]
name = "B"
path = "{root}/b"

[[task]]
name = "a-b"
source = "A"
destination = "B"
"#;

pub struct TaskEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub state: PathBuf,
    /// Environment for every command (an S3 server's credentials).
    pub vars: Vec<(String, String)>,
}

impl TaskEnv {
    /// A fresh directory whose config file says `config` (`{root}` is
    /// replaced by the directory's path).
    pub fn new(config: &str) -> TaskEnv {
        let dir = super::tempdir();
        let root = dir.path().display().to_string();
        let path = dir.path().join("syncmount.toml");
        std::fs::write(&path, config.replace("{root}", &root)).expect("write the config");
        TaskEnv {
            state: dir.path().join("state"),
            config: path,
            dir,
            vars: Vec::new(),
        }
    }

    /// The same directory and config with a state directory of its own:
    /// another host, as far as the local guards can tell.
    pub fn other_host(&self, name: &str) -> TaskEnv {
        let dir = tempfile::TempDir::new_in(self.root()).expect("a second state directory");
        TaskEnv {
            state: dir.path().join(name),
            config: self.config.clone(),
            vars: self.vars.clone(),
            dir,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `syncmount --config CONFIG --state-dir STATE ARGS…`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = syncmount();
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .envs(self.vars.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> RunOutput {
        run(self.cmd(args))
    }

    /// `task start NAME ARGS…` without waiting: the execution id.
    pub fn start(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["task", "start", name];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert_eq!(out.status, 0, "task start {name}: {}", out.stderr);
        let id = out.stdout.trim().to_string();
        assert!(id.starts_with("exec-"), "not an execution id: {id:?}");
        id
    }

    /// `task start NAME --wait --json ARGS…`: the execution record, however
    /// it ended.
    pub fn start_wait(&self, name: &str, args: &[&str]) -> Value {
        let mut all = vec!["task", "start", name, "--wait", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("task start {name} --wait: {e}: {}", out.stderr))
    }

    /// `task describe ID --json`.
    pub fn describe(&self, id: &str) -> Value {
        let out = self.run(&["task", "describe", id, "--json"]);
        assert_eq!(out.status, 0, "describe {id}: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("describe {id}: {e}: {}", out.stdout))
    }

    /// Polls `describe` until `done` holds for the record; panics after `limit`.
    pub fn wait_for(&self, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let rec = self.describe(id);
            if done(&rec) {
                return rec;
            }
            if start.elapsed() > limit {
                panic!("execution {id} did not get there within {limit:?}: {rec:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the execution has ended; its record.
    pub fn wait_end(&self, id: &str, limit: Duration) -> Value {
        self.wait_for(id, limit, |r| {
            matches!(status(r).as_str(), "SUCCESS" | "ERROR" | "CANCELLED")
        })
    }
}

pub fn status(rec: &Value) -> String {
    rec["Status"].as_str().unwrap_or("?").to_string()
}

/// A timestamp of the record (`LaunchingMs`, `EndedMs`, …).
pub fn ts(rec: &Value, name: &str) -> Option<u64> {
    rec["Timestamps"][name].as_u64()
}

/// Overrides that make an execution copy one 1 MB file a second, one at a time.
pub const SLOW: &[&str] = &[
    "--override",
    "bytes_per_second=1000000",
    "--override",
    "concurrency=1",
];

/// Size of the files [`big_files`] writes.
pub const BIG: usize = 1_000_000;

/// Writes `n` files `big-I.bin` of [`BIG`] bytes into `dir`.
pub fn big_files(dir: &Path, n: usize) {
    let big = vec![7u8; BIG];
    for i in 0..n {
        std::fs::write(dir.join(format!("big-{i}.bin")), &big).expect("write a big file");
    }
}

/// `dst` holds only whole copies of the big files plus `others`: no temp
/// files, nothing cut short. Returns how many big files it holds.
pub fn nothing_partial(dst: &Path, others: &[&str]) -> usize {
    let mut big = 0;
    for (name, bytes) in super::read_tree(dst) {
        if name.starts_with("big-") {
            assert_eq!(bytes.len(), BIG, "{name} is partial");
            big += 1;
        } else {
            assert!(
                others.contains(&name.as_str()),
                "unexpected file {name} in {}",
                dst.display()
            );
        }
    }
    big
}
