//! Schedules that can be paused: `task disable` / `task enable` are state
//! (not config) shown by `task list`; a running daemon does not fire a
//! disabled schedule and fires it again once enabled; `task start` still
//! runs a disabled task; the daemon disables a schedule itself (by SERVICE)
//! after `auto_disable_after` executions failed with one error code, and
//! `task enable` re-arms that count.

mod common;

use std::time::Duration;

use common::daemon::LoggedDaemon;
use common::tasks::{status, TaskEnv, PAIR};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// The JSON array a `--json` command prints.
fn json_array(env: &TaskEnv, args: &[&str]) -> Vec<Value> {
    let out = env.run(args);
    assert_eq!(out.status, 0, "{}", out.stderr);
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(Value::Array(a)) => a,
        other => panic!("{args:?}: not a JSON array: {other:?}"),
    }
}

fn list(env: &TaskEnv) -> Vec<Value> {
    json_array(env, &["task", "list", "--json"])
}

fn row(env: &TaskEnv, name: &str) -> Value {
    list(env)
        .into_iter()
        .find(|r| r["Name"] == name)
        .unwrap_or_else(|| panic!("no task {name} in task list"))
}

fn executions(env: &TaskEnv, name: &str) -> Vec<Value> {
    json_array(
        env,
        &["task", "executions", name, "--json", "--limit", "100"],
    )
}

/// Polls until `name` has `n` ended executions; them, newest first.
fn wait_ended(env: &TaskEnv, name: &str, n: usize) -> Vec<Value> {
    let start = std::time::Instant::now();
    loop {
        let all = executions(env, name);
        let ended = all
            .iter()
            .filter(|r| matches!(status(r).as_str(), "SUCCESS" | "ERROR" | "CANCELLED"))
            .count();
        if ended >= n && ended == all.len() {
            return all;
        }
        assert!(
            start.elapsed() < LIMIT,
            "{n} executions of {name} never ended: {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the daemon logged that it skipped `task`'s disabled schedule.
fn wait_skipped(d: &LoggedDaemon, task: &str, times: usize) {
    let task_field = format!("task={task}");
    d.wait_count(LIMIT, times, |l| {
        l.contains("schedule skipped: disabled") && l.contains(&task_field)
    });
}

fn every_second(config: &str) -> String {
    config.replace(
        "destination = \"B\"",
        "destination = \"B\"\nschedule = \"rate(1 second)\"",
    )
}

#[test]
fn disable_and_enable_are_state_shown_by_task_list_and_name_unknown_tasks() {
    let env = TaskEnv::new(&every_second(PAIR));
    let r = row(&env, "a-b");
    assert_eq!(r["ScheduleStatus"], "ENABLED", "{r:#}");
    assert_eq!(r["DisabledBy"], Value::Null, "{r:#}");
    assert_eq!(r["AutoDisableAfter"], 3, "the default: {r:#}");

    let out = env.run(&["task", "disable", "a-b", "--reason", "bucket migration"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let r = row(&env, "a-b");
    assert_eq!(r["ScheduleStatus"], "DISABLED", "{r:#}");
    assert_eq!(r["DisabledBy"], "USER", "{r:#}");
    assert_eq!(r["DisabledReason"], "bucket migration", "{r:#}");
    assert!(r["DisabledMs"].as_u64().is_some_and(|ms| ms > 0), "{r:#}");
    let human = env.run(&["task", "list"]);
    assert!(
        human.stdout.contains("DISABLED by USER") && human.stdout.contains("bucket migration"),
        "{}",
        human.stdout
    );
    let config = std::fs::read_to_string(&env.config).unwrap();
    assert!(
        !config.contains("DISABLED") && !config.contains("migration"),
        "not in the config: {config}"
    );

    let out = env.run(&["task", "enable", "a-b"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let r = row(&env, "a-b");
    assert_eq!(
        (r["ScheduleStatus"].as_str(), r["DisabledBy"].as_str()),
        (Some("ENABLED"), None),
        "{r:#}"
    );

    for cmd in ["disable", "enable"] {
        let out = env.run(&["task", cmd, "nope"]);
        assert_eq!(out.status, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains("no task named `nope`"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_disabled_schedule_does_not_fire_a_start_still_runs_and_an_enable_seen_by_the_running_daemon_fires_it(
) {
    let env = TaskEnv::new(&every_second(PAIR));
    common::write_tree(&env.root().join("a"), &[("one.txt", b"1")]);
    std::fs::create_dir_all(env.root().join("b")).unwrap();
    let out = env.run(&["task", "disable", "a-b"]);
    assert_eq!(out.status, 0, "{}", out.stderr);

    let d = LoggedDaemon::start(&env, &["-v"]);
    // Two due times went by without an execution.
    wait_skipped(&d, "a-b", 2);
    assert!(
        executions(&env, "a-b").is_empty(),
        "a disabled schedule fired"
    );

    // A manual start still runs (through the daemon).
    let out = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).expect("a record");
    assert_eq!(status(&rec), "SUCCESS", "{rec:#}");
    assert_eq!(
        rec["Pid"].as_u64(),
        Some(u64::from(d.pid())),
        "ran in the daemon: {rec:#}"
    );

    // Enabled from the shell while the daemon runs: the schedule fires.
    let out = env.run(&["task", "enable", "a-b"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let all = wait_ended(&env, "a-b", 2);
    assert!(all.iter().all(|r| status(r) == "SUCCESS"), "{all:#?}");
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{}", log.join("\n"));
}

#[test]
fn repeated_failures_with_one_code_disable_the_schedule_by_service_and_enable_rearms_the_count() {
    // The source does not exist: every execution ends in ERROR, LocationError.
    let config =
        every_second(PAIR).replace("{root}/a", "{root}/missing") + "auto_disable_after = 2\n";
    let env = TaskEnv::new(&config);
    std::fs::create_dir_all(env.root().join("b")).unwrap();
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);

    let d = LoggedDaemon::start(&env, &["-v"]);
    wait_skipped(&d, "a-b", 1);
    let all = executions(&env, "a-b");
    assert_eq!(
        all.len(),
        2,
        "disabled right after the second failure: {all:#?}"
    );
    for r in &all {
        assert_eq!(
            (status(r).as_str(), r["ErrorCode"].as_str()),
            ("ERROR", Some("LocationError")),
            "{r:#}"
        );
    }
    let r = row(&env, "a-b");
    assert_eq!(r["ScheduleStatus"], "DISABLED", "{r:#}");
    assert_eq!(r["DisabledBy"], "SERVICE", "{r:#}");
    let reason = r["DisabledReason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("2 consecutive")
            && reason.contains("LocationError")
            && reason.contains(all[0]["ExecutionId"].as_str().unwrap()),
        "{reason}"
    );
    assert!(
        d.count_log(|l| l.contains("schedule disabled") && l.contains("SERVICE")) == 1,
        "{}",
        d.log().join("\n")
    );

    // Re-armed: the two failures before the enable no longer count, so the
    // schedule is disabled again only after two new ones.
    let out = env.run(&["task", "enable", "a-b"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    d.wait_count(LIMIT, 2, |l| {
        l.contains("schedule disabled") && l.contains("SERVICE")
    });
    let all = executions(&env, "a-b");
    assert_eq!(
        all.len(),
        4,
        "two more failures before the second disable: {all:#?}"
    );
    assert_eq!(row(&env, "a-b")["DisabledBy"], "SERVICE");
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{}", log.join("\n"));
}
