//! `syncmount daemon` as a child process whose stderr (its log) is
//! collected line by line, so a test can wait until the daemon logged
//! something instead of sleeping; stopped with SIGTERM (killed if it hangs)
//! when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::tasks::TaskEnv;

pub struct LoggedDaemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LoggedDaemon {
    /// `syncmount GLOBAL… daemon` on `env`; returns once its control
    /// socket answers.
    pub fn start(env: &TaskEnv, global: &[&str]) -> LoggedDaemon {
        let mut args = global.to_vec();
        args.push("daemon");
        let mut child = env
            .cmd(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let stderr = child.stderr.take().expect("the daemon's stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lines").push(line);
            }
        });
        let d = LoggedDaemon {
            child,
            lines,
            reader: Some(reader),
        };
        let sock = env.state.join("daemon.sock");
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon's socket never answered:\n{}",
                d.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().expect("log lines").clone()
    }

    /// Waits until a logged line satisfies `pred`; that line. Panics with
    /// the log after `limit`.
    pub fn wait_log(&self, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self.log().into_iter().find(|l| pred(l)) {
                return l;
            }
            assert!(
                start.elapsed() < limit,
                "the daemon did not log the line waited for within {limit:?}:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until at least `n` logged lines satisfy `pred`.
    pub fn wait_count(&self, limit: Duration, n: usize, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        while self.count_log(&pred) < n {
            assert!(
                start.elapsed() < limit,
                "the daemon did not log {n} of the lines waited for within {limit:?}:\n{}",
                self.log().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many logged lines satisfy `pred`.
    pub fn count_log(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.log().iter().filter(|l| pred(l)).count()
    }

    /// SIGTERM, then waits for the exit; its exit code and whole log.
    pub fn stop(mut self) -> (i32, Vec<String>) {
        let code = self.terminate();
        (code, self.log())
    }

    fn terminate(&mut self) -> i32 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        let code = loop {
            if let Some(st) = self.child.try_wait().expect("wait for the daemon") {
                break st.code().unwrap_or(-1);
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the daemon did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        code
    }
}

impl Drop for LoggedDaemon {
    fn drop(&mut self) {
        if self.reader.is_none() {
            return;
        }
        if std::thread::panicking() {
            // A failed test: no second panic from a stuck daemon.
            let _ = self.child.kill();
            let _ = self.child.wait();
        } else {
            self.terminate();
        }
    }
}
