//! Real FUSE mounts for tests: `syncmount mount … --foreground` as a child
//! process, waited for until the kernel shows the mount, unmounted (and the
//! process reaped) when the [`Mount`] is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::tasks::TaskEnv;
use super::{syncmount, S3Server};

/// How long a mount may take to come up (the S3 client's first request included).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Mount {
    /// The mountpoint.
    pub dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    _tmp: tempfile::TempDir,
}

/// Fails loudly when FUSE cannot work here (scripts/test.sh installs fuse3).
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need FUSE"
    );
    let ok = Command::new("fusermount3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "fusermount3 is missing: run the tests through scripts/test.sh (it installs fuse3)"
    );
}

/// Whether `path` is a mount point now.
pub fn is_mounted(path: &Path) -> bool {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| Path::new(p) == canon)
}

/// `syncmount mount LOCATION MNT --foreground ARGS…` for `server` (or a local
/// location when `None`), waiting until it is mounted.
pub fn mount(server: Option<&S3Server>, location: &str, args: &[&str]) -> Mount {
    mount_in(server, location, None, args)
}

/// [`mount`] with its state directory at `STATE_ROOT/state` (shared with
/// other commands of the test) instead of a temporary one.
pub fn mount_in(
    server: Option<&S3Server>,
    location: &str,
    state_root: Option<&Path>,
    args: &[&str],
) -> Mount {
    require_fuse();
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).expect("mountpoint");
    let log = tmp.path().join("mount.log");
    let state = state_root.unwrap_or(tmp.path());
    let mut cmd = mount_cmd(server, location, &dir, state, args);
    cmd.arg("--foreground");
    let out = std::fs::File::create(&log).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out);
    let mut child = cmd.spawn().expect("start syncmount mount");
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "syncmount mount exited with {status} before mounting:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        if is_mounted(&dir) {
            break;
        }
        if started.elapsed() > MOUNT_TIMEOUT {
            let _ = child.kill();
            panic!(
                "no mount at {} after {MOUNT_TIMEOUT:?}:\n{}",
                dir.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Mount {
        dir,
        log,
        child: Some(child),
        _tmp: tmp,
    }
}

/// The `syncmount mount` command line (without `--foreground`), with its
/// state directory in `state`.
pub fn mount_cmd(
    server: Option<&S3Server>,
    location: &str,
    mountpoint: &Path,
    state: &Path,
    args: &[&str],
) -> Command {
    let mut cmd = syncmount();
    cmd.arg("mount").arg(location).arg(mountpoint);
    cmd.arg("--state-dir").arg(state.join("state"));
    if let Some(s) = server {
        cmd.envs(s.env());
        cmd.args(["--endpoint-url", &s.endpoint]);
    }
    cmd.args(args);
    cmd
}

impl Mount {
    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Lets other users reach the mountpoint: the temporary directory it
    /// lives in is created 0700 (for tests of what other users may do
    /// inside the mount, whose own modes then decide).
    pub fn reachable_by_others(&self) {
        use std::os::unix::fs::PermissionsExt;
        if let Some(parent) = self.dir.parent() {
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
                .expect("chmod 755 the mountpoint's parent");
        }
    }

    /// This mount's options as /proc/self/mountinfo shows them (mount
    /// options and super options).
    pub fn options_shown(&self) -> String {
        let canon = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        text.lines()
            .find(|l| l.split(' ').nth(4).is_some_and(|p| Path::new(p) == canon))
            .unwrap_or_default()
            .to_string()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `signal` to the mount process and waits for it to exit;
    /// returns its exit code.
    pub fn stop_with(&mut self, signal: i32) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill with a valid pid and signal number.
        unsafe { libc::kill(child.id() as i32, signal) };
        match exit_within(&mut child, Duration::from_secs(30)) {
            Some(code) => code,
            None => panic!(
                "the mount process did not exit within 30 s of signal {signal}:\n{}",
                self.log_text()
            ),
        }
    }

    /// `fusermount3 -u`, then waits for the process; returns its exit code.
    pub fn unmount(mut self) -> Option<i32> {
        let ok = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "fusermount3 -u {} failed", self.dir.display());
        let mut child = self.child.take()?;
        match exit_within(&mut child, Duration::from_secs(30)) {
            Some(code) => code,
            None => panic!("the mount process did not exit after fusermount3 -u"),
        }
    }
}

/// Waits up to `limit` for `child` to exit: `Some(exit code)`, or `None`
/// after killing and reaping it.
fn exit_within(child: &mut Child, limit: Duration) -> Option<Option<i32>> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st.code());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
            let _ = exit_within(&mut child, Duration::from_secs(10));
        }
    }
}

/// Runs `argv` as the user `nobody` (uid and gid 65534, no supplementary
/// groups, a reset environment), for what other users may do in a mount.
pub fn as_nobody(argv: &[&str]) -> super::RunOutput {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--reset-env",
        "--",
    ])
    .args(argv);
    super::run(cmd)
}

/// Runs a shell command line (bash -c), panicking with its output on failure.
pub fn sh(script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A python writer holding `path` open with `size` bytes written (and
/// flushed to the mount) but not closed; it closes when told to.
pub struct OpenWriter {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl OpenWriter {
    pub fn start(path: &Path, size: usize) -> OpenWriter {
        let script = r#"
import os, sys
f = open(sys.argv[1], "wb")
f.write(bytes(i % 251 for i in range(int(sys.argv[2]))))
f.flush()
print("written", flush=True)
sys.stdin.readline()
try:
    f.close()
    print("closed", flush=True)
except OSError as e:
    print("ERRNO", e.errno, flush=True)
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(size.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read from python");
        assert_eq!(line.trim(), "written", "the writer did not get to write");
        OpenWriter { child, out }
    }

    /// Closes the file; returns what python printed (`closed` or `ERRNO n`).
    pub fn close(mut self) -> String {
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(b"\n").expect("tell python to close");
        drop(stdin);
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read from python");
        let _ = self.child.wait();
        line.trim().to_string()
    }
}

/// The body an [`OpenWriter`] writes.
pub fn writer_body(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

/// The daemon's process and the directory its mounts live under (a failed
/// test kills it, and a killed FUSE server leaves its mounts behind).
pub struct Daemon(Child, std::path::PathBuf);

impl Daemon {
    pub fn start(env: &TaskEnv, mountpoint: &std::path::Path) -> Daemon {
        Daemon::start_with(env, &[], mountpoint)
    }

    /// `syncmount daemon ARGS…`, returned once `mountpoint` is mounted.
    pub fn start_with(env: &TaskEnv, args: &[&str], mountpoint: &std::path::Path) -> Daemon {
        require_fuse();
        let mut argv = vec!["daemon"];
        argv.extend_from_slice(args);
        let child = env
            .cmd(&argv)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the daemon");
        let d = Daemon(child, env.root().to_path_buf());
        wait_until(
            || is_mounted(mountpoint),
            "the daemon to mount its [[mount]]",
        );
        d
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }

    pub fn stop(mut self) -> i32 {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = self.0.try_wait().expect("wait") {
                return st.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the daemon did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for point in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
            if std::path::Path::new(point).starts_with(&self.1) {
                let _ = std::process::Command::new("fusermount3")
                    .args(["-u", "-z", point])
                    .status();
            }
        }
    }
}

pub fn wait_until(cond: impl Fn() -> bool, what: &str) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
