//! Logs: `--log-format json` writes one JSON object per line, each event of
//! an execution carrying its id; a task's `log_level` decides what its
//! executions log whatever `-v` says (`transfer`: also one line per object,
//! `basic`: start, end and errors, `off`: nothing); text logs have no
//! colours off a terminal and no timestamps when stderr is the journal.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use common::daemon::LoggedDaemon;
use common::tasks::{status, TaskEnv};
use serde_json::Value;

const CONFIG: &str = r#"
[[task]]
name = "loud"
source = "{root}/a"
destination = "{root}/b"
log_level = "transfer"

[[task]]
name = "plain"
source = "{root}/missing"
destination = "{root}/c"

[[task]]
name = "quiet"
source = "{root}/a"
destination = "{root}/d"
log_level = "off"
"#;

fn id(rec: &Value) -> String {
    rec["ExecutionId"].as_str().expect("an id").to_string()
}

/// The lines logged inside execution `id`.
fn of<'a>(lines: &'a [Value], id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["span"]["execution_id"] == id)
        .collect()
}

fn messages(lines: &[&Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn json_lines_carry_the_execution_id_and_each_tasks_log_level_decides_without_v() {
    let env = TaskEnv::new(CONFIG);
    common::write_tree(
        &env.root().join("a"),
        &[("x.txt", b"x"), ("sub/y.txt", b"yy")],
    );
    for d in ["b", "c", "d"] {
        std::fs::create_dir_all(env.root().join(d)).unwrap();
    }
    // No -v: the daemon itself logs only warnings and errors.
    let d = LoggedDaemon::start(&env, &["--log-format", "json"]);
    let loud = env.start_wait("loud", &[]);
    assert_eq!(status(&loud), "SUCCESS", "{loud:#}");
    let plain = env.start_wait("plain", &[]);
    assert_eq!(status(&plain), "ERROR", "{plain:#}");
    let quiet = env.start_wait("quiet", &[]);
    assert_eq!(status(&quiet), "SUCCESS", "{quiet:#}");
    assert_eq!(
        std::fs::read(env.root().join("d/sub/y.txt")).unwrap(),
        b"yy"
    );
    // Once the daemon has exited, every line it logged is there.
    let (code, raw) = d.stop();
    assert_eq!(code, 0, "{}", raw.join("\n"));

    let lines: Vec<Value> = raw
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v @ Value::Object(_)) => v,
            other => panic!("not a JSON object: {l:?} ({other:?})"),
        })
        .collect();

    let loud_lines = of(&lines, &id(&loud));
    let msgs = messages(&loud_lines);
    assert!(msgs.contains(&"execution started".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"execution ended".to_string()), "{msgs:?}");
    let mut objects: Vec<&str> = loud_lines
        .iter()
        .filter(|l| l["target"] == "syncmount::transfer")
        .map(|l| {
            assert_eq!(l["fields"]["action"], "copy", "{l}");
            assert_eq!(l["fields"]["result"], "ok", "{l}");
            l["fields"]["key"].as_str().expect("a key")
        })
        .collect();
    objects.sort();
    assert_eq!(objects, ["sub/y.txt", "x.txt"], "one line per object");
    assert!(loud_lines.iter().all(|l| l["span"]["task"] == "loud"));

    let plain_lines = of(&lines, &id(&plain));
    assert!(
        plain_lines
            .iter()
            .all(|l| l["target"] != "syncmount::transfer"),
        "basic: no object lines: {plain_lines:#?}"
    );
    let end = plain_lines
        .iter()
        .find(|l| l["fields"]["message"] == "execution ended")
        .unwrap_or_else(|| panic!("basic logs the end: {plain_lines:#?}"));
    assert_eq!(end["level"], "ERROR", "{end}");
    assert_eq!(end["fields"]["error_code"], "LocationError", "{end}");
    assert!(messages(&plain_lines).contains(&"execution started".to_string()));

    let quiet_id = id(&quiet);
    assert!(
        raw.iter().all(|l| !l.contains(&quiet_id)),
        "off: nothing about {quiet_id}:\n{}",
        raw.join("\n")
    );
    // Outside executions, without -v: no info lines of the daemon's own.
    assert!(
        lines
            .iter()
            .all(|l| l["span"]["execution_id"].is_string() || l["level"] != "INFO"),
        "{}",
        raw.join("\n")
    );
}

/// `syncmount -v sync A B` with stderr into a file; that file's text.
fn sync_log(env: &TaskEnv, journal: bool) -> String {
    let path = env.root().join(format!("sync-{journal}.log"));
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut cmd = common::syncmount();
    cmd.arg("-v")
        .arg("--state-dir")
        .arg(&env.state)
        .arg("sync")
        .arg(env.root().join("a"))
        .arg(env.root().join(format!("out-{journal}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .env_remove("JOURNAL_STREAM")
        .env_remove("SYNCMOUNT_LOG_FORMAT");
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let status = cmd.status().expect("run sync");
    assert!(status.success(), "{status}");
    std::fs::read_to_string(&path).unwrap()
}

#[test]
fn text_logs_have_no_colours_off_a_terminal_and_no_timestamps_in_the_journal() {
    let env = TaskEnv::new("");
    common::write_tree(&env.root().join("a"), &[("x.txt", b"x")]);
    let starts_with_time =
        |l: &str| l.len() > 4 && l.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    for journal in [false, true] {
        let text = sync_log(&env, journal);
        let object = text
            .lines()
            .find(|l| l.contains("syncmount::transfer") && l.contains("x.txt"))
            .unwrap_or_else(|| panic!("-v shows the object line:\n{text}"));
        assert!(!text.contains('\x1b'), "no ANSI colours in a file:\n{text}");
        assert_eq!(
            starts_with_time(object),
            !journal,
            "journal {journal}: {object:?}"
        );
        assert!(object.contains("INFO"), "{object}");
    }
}

/// `syncmount --log-format json -v ARGS…` with stdout and stderr captured
/// apart: (exit code, stdout, stderr).
fn json_run(env: &TaskEnv, args: &[&str]) -> (i32, String, String) {
    let out = common::syncmount()
        .args(["--log-format", "json", "-v", "--state-dir"])
        .arg(&env.state)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("SYNCMOUNT_LOG_FORMAT")
        .output()
        .expect("run syncmount");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_every_line_is_json(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {l:?}\n{stderr}"))
        })
        .collect()
}

#[test]
fn with_json_logs_every_stderr_line_is_json_and_the_summary_goes_to_stdout() {
    let env = TaskEnv::new("");
    common::write_tree(&env.root().join("a"), &[("x.txt", b"x"), ("d/y.txt", b"y")]);
    let (a, b) = (env.root().join("a"), env.root().join("b"));
    let (code, stdout, stderr) =
        json_run(&env, &["sync", &a.to_string_lossy(), &b.to_string_lossy()]);
    assert_eq!(code, 0, "{stderr}");
    let lines = assert_every_line_is_json(&stderr);
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["key"] == "d/y.txt" && l["level"] == "INFO"),
        "-v logs each object as a JSON line:\n{stderr}"
    );
    // The human summary is on stdout, not between the JSON lines.
    assert!(
        stdout.contains("SUCCESS") && stdout.contains("transferred 2 files"),
        "{stdout}"
    );
    assert!(!stderr.contains("transferred 2 files"), "{stderr}");

    // An error that ends the command is a JSON line too, at ERROR.
    let missing = env.root().join("no-such-dir");
    let (code, _, stderr) = json_run(
        &env,
        &["sync", &missing.to_string_lossy(), &b.to_string_lossy()],
    );
    assert_ne!(code, 0, "a missing source fails: {stderr}");
    let lines = assert_every_line_is_json(&stderr);
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("no-such-dir"))),
        "the error names the missing directory, as JSON:\n{stderr}"
    );
}
