//! Completion hooks: a task's `on_end` commands run after each execution
//! ended, with the execution record on stdin and its status, task and id in
//! the environment; a failing hook changes nothing about the execution.
//! A hook gets only `SYNCMOUNT_*`, `PATH` and `HOME` (everything with
//! `on_end_inherit_env`), and at its timeout its whole process group is
//! killed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::tasks::{status, TaskEnv, PAIR};
use serde_json::Value;

/// Waits until `path` exists (a hook runs after the end is recorded, so it
/// may finish after `task start --wait` returned).
fn wait_for_file(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The task a-b configured by `config` (which `config check` accepts),
/// with a file to copy.
fn pair_with(config: &str) -> TaskEnv {
    let env = TaskEnv::new(config);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    common::write_tree(&env.root().join("a"), &[("f.txt", b"f")]);
    std::fs::create_dir_all(env.root().join("b")).expect("b");
    env
}

#[test]
fn on_end_hooks_get_the_record_on_stdin_and_the_status_and_a_failing_one_changes_nothing() {
    let config = format!(
        "{PAIR}on_end = [\"exit 3\", \"cat > '{{root}}/record.json'; echo \\\"$SYNCMOUNT_STATUS $SYNCMOUNT_TASK $SYNCMOUNT_EXECUTION_ID\\\" > '{{root}}/env.txt'\"]\n"
    );
    let env = pair_with(&config);
    let out = env.run(&["task", "start", "a-b", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).expect("an execution record");
    assert_eq!(status(&rec), "SUCCESS", "{rec:#}");
    let id = rec["ExecutionId"].as_str().expect("an id").to_string();

    let env_line = wait_for_file(&env.root().join("env.txt"));
    assert_eq!(env_line.trim(), format!("SUCCESS a-b {id}"));
    let got: Value = serde_json::from_str(&wait_for_file(&env.root().join("record.json")))
        .expect("the record as JSON");
    assert_eq!(got["ExecutionId"], id.as_str(), "{got:#}");
    assert_eq!(
        status(&got),
        "SUCCESS",
        "the end is recorded first: {got:#}"
    );
    // The first hook failed (exit 3): the execution is still a success.
    assert_eq!(status(&env.describe(&id)), "SUCCESS");
}

/// The pids in the process group `pgid` that are still running (zombies
/// waiting for a reaper count as gone).
fn live_in_group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …: comm may hold spaces, so split after ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_everything_it_started() {
    let config = format!(
        "{PAIR}on_end_timeout = \"1s\"\non_end = [\"sleep 1000 & echo $! > '{{root}}/child.pid'; echo $$ > '{{root}}/hook.pid'; sleep 1000\"]\n"
    );
    let env = pair_with(&config);
    let out = env.run(&["task", "start", "a-b", "--wait"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let hook: u32 = wait_for_file(&env.root().join("hook.pid"))
        .trim()
        .parse()
        .expect("a pid");
    let child: u32 = wait_for_file(&env.root().join("child.pid"))
        .trim()
        .parse()
        .expect("a pid");
    let start = Instant::now();
    while is_running(hook) || is_running(child) || !live_in_group(hook).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "30 s after a 1 s timeout: hook {hook} running {}, its child {child} running {}, its group {:?}",
            is_running(hook),
            is_running(child),
            live_in_group(hook)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The environment a hook saw (`env` output) when the runner had an AWS
/// secret in its own, with `extra` task settings.
fn hook_environment(extra: &str) -> String {
    let config = format!("{PAIR}{extra}on_end = [\"env > '{{root}}/env.txt'\"]\n");
    let env = pair_with(&config);
    let mut cmd = env.cmd(&["task", "start", "a-b", "--wait"]);
    cmd.env("AWS_SECRET_ACCESS_KEY", "hook-must-not-see-this")
        .env("HOME", env.root());
    let out = common::run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    wait_for_file(&env.root().join("env.txt"))
}

#[test]
fn a_hook_gets_only_its_variables_path_and_home_unless_it_asks_to_inherit() {
    let seen = hook_environment("");
    let names: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    assert!(!seen.contains("hook-must-not-see-this"), "{seen}");
    assert!(!names.iter().any(|n| n.starts_with("AWS_")), "{seen}");
    for needed in [
        "SYNCMOUNT_STATUS",
        "SYNCMOUNT_TASK",
        "SYNCMOUNT_EXECUTION_ID",
        "PATH",
        "HOME",
    ] {
        assert!(names.contains(&needed), "{needed} missing: {seen}");
    }
    // What sh itself adds (PWD, SHLVL, `_`) aside, nothing else.
    let unexpected: Vec<&&str> = names
        .iter()
        .filter(|n| {
            !n.starts_with("SYNCMOUNT_") && !["PATH", "HOME", "PWD", "SHLVL", "_"].contains(n)
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?} in {seen}");

    let inherited = hook_environment("on_end_inherit_env = true\n");
    assert!(
        inherited.contains("AWS_SECRET_ACCESS_KEY=hook-must-not-see-this"),
        "{inherited}"
    );
}

#[test]
fn hook_settings_without_hooks_or_a_zero_timeout_are_refused() {
    for (extra, says) in [
        (
            "on_end_inherit_env = true\n",
            "on_end_inherit_env has no meaning",
        ),
        ("on_end_timeout = \"5s\"\n", "on_end_timeout has no meaning"),
        ("on_end = [\"true\"]\non_end_timeout = 0\n", "more than 0"),
        (
            "on_end = [\"true\"]\non_end_timeout = \"1e11\"\n",
            "on_end_timeout `1e11` is too long",
        ),
        (
            "on_end = [\"true\"]\non_end_inherit_env = \"yes\"\n",
            "on_end_inherit_env",
        ),
    ] {
        let env = TaskEnv::new(&format!("{PAIR}{extra}"));
        let out = env.run(&["config", "check"]);
        assert_eq!(out.status, 2, "{extra}");
        assert!(
            out.stdout.contains(says) || out.stderr.contains(says),
            "{extra}: {}\n{}",
            out.stdout,
            out.stderr
        );
    }
}
