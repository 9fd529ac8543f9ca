//! Retention: the daemon deletes execution records (with their report and
//! runner log) that ended more than `history_days` ago and, per task, the
//! reports of all but the newest `max_reports` ended executions — at start
//! and after each execution it ran ended — and never touches an execution
//! that has not ended, however old.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::LoggedDaemon;
use common::tasks::{big_files, status, TaskEnv, PAIR, SLOW};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn report(env: &TaskEnv, id: &str) -> PathBuf {
    env.state.join("reports").join(format!("{id}.jsonl"))
}

fn runner_log(env: &TaskEnv, id: &str) -> PathBuf {
    env.state.join("executions").join(format!("{id}.log"))
}

fn ids(env: &TaskEnv) -> Vec<String> {
    let out = env.run(&["task", "executions", "a-b", "--json", "--limit", "100"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let all: Vec<Value> = serde_json::from_str(&out.stdout).expect("executions --json");
    let mut ids: Vec<String> = all
        .iter()
        .map(|r| r["ExecutionId"].as_str().expect("an id").to_string())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Moves an execution's queue (and end, if it has one) `days` into the past.
fn age(state: &Path, id: &str, days: i64) {
    let db = rusqlite::Connection::open(state.join("history.db")).expect("open history.db");
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    let n = db
        .execute(
            "UPDATE executions SET queued_at = queued_at - ?2, ended_at = ended_at - ?2 WHERE id = ?1",
            rusqlite::params![id, days * DAY_MS],
        )
        .expect("age the record");
    assert_eq!(n, 1, "no record {id}");
}

fn run_to_end(env: &TaskEnv) -> String {
    let rec = env.start_wait("a-b", &[]);
    assert_eq!(status(&rec), "SUCCESS", "{rec:#}");
    rec["ExecutionId"].as_str().expect("an id").to_string()
}

#[test]
fn the_daemon_prunes_old_records_and_extra_reports_but_never_a_running_execution() {
    let env = TaskEnv::new(&format!(
        "{PAIR}\n[retention]\nhistory_days = 1\nmax_reports = 2\n"
    ));
    common::write_tree(&env.root().join("a"), &[("one.txt", b"1")]);
    std::fs::create_dir_all(env.root().join("b")).unwrap();
    // Four ended executions, each run by a detached runner (report + log).
    let e: Vec<String> = (0..4).map(|_| run_to_end(&env)).collect();
    for id in &e {
        assert!(report(&env, id).exists(), "{id} has a report");
        assert!(runner_log(&env, id).exists(), "{id} has a runner log");
    }
    // A fifth that runs (slowly) while the daemon prunes.
    big_files(&env.root().join("a"), 30);
    let running = env.start("a-b", SLOW);
    env.wait_for(&running, LIMIT, |r| status(r) == "TRANSFERRING");
    // The oldest ended one and the running one look three days old.
    age(&env.state, &e[0], 3);
    age(&env.state, &running, 3);

    let d = LoggedDaemon::start(&env, &["-v"]);
    d.wait_count(LIMIT, 1, |l| l.contains("retention: pruned"));
    assert_eq!(
        ids(&env),
        sorted(&[&e[1], &e[2], &e[3], &running]),
        "only the old ended record is gone"
    );
    assert!(!report(&env, &e[0]).exists() && !runner_log(&env, &e[0]).exists());
    assert!(
        !report(&env, &e[1]).exists(),
        "beyond the newest two reports"
    );
    assert!(
        runner_log(&env, &e[1]).exists(),
        "its record (and log) stay"
    );
    assert_eq!(env.describe(&e[1])["ReportPath"], Value::Null);
    for id in &e[2..] {
        assert!(report(&env, id).exists(), "{id}: one of the newest two");
        assert!(env.describe(id)["ReportPath"].is_string());
    }
    let rec = env.describe(&running);
    assert_eq!(status(&rec), "TRANSFERRING", "untouched: {rec:#}");
    assert!(runner_log(&env, &running).exists());

    // After an execution the daemon ran ends, it prunes again: the newest
    // two ended (that one and the cancelled one) keep their reports.
    let out = env.run(&["task", "cancel", &running]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rec = env.wait_end(&running, LIMIT);
    assert_eq!(status(&rec), "CANCELLED", "{rec:#}");
    assert!(rec["ReportPath"].is_string(), "{rec:#}");
    let last = run_to_end(&env);
    d.wait_count(LIMIT, 2, |l| l.contains("retention: pruned"));
    assert_eq!(
        ids(&env),
        sorted(&[&e[1], &e[2], &e[3], &running, &last]),
        "no record is old enough"
    );
    for id in [&e[1], &e[2], &e[3]] {
        assert!(!report(&env, id).exists(), "{id}: beyond the newest two");
    }
    for id in [&running, &last] {
        assert!(report(&env, id).exists(), "{id}: one of the newest two");
    }
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{}", log.join("\n"));
}
