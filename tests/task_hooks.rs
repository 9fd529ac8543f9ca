//! Completion hooks: a task's `on_end` commands run after each execution
//! ended, with the execution record on stdin and its status, task and id in
//! the environment; a failing hook changes nothing about the execution.

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

#[test]
fn on_end_hooks_get_the_record_on_stdin_and_the_status_and_a_failing_one_changes_nothing() {
    let config = format!(
        "{PAIR}on_end = [\"exit 3\", \"cat > '{{root}}/record.json'; echo \\\"$SYNCMOUNT_STATUS $SYNCMOUNT_TASK $SYNCMOUNT_EXECUTION_ID\\\" > '{{root}}/env.txt'\"]\n"
    );
    let env = TaskEnv::new(&config);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    common::write_tree(&env.root().join("a"), &[("f.txt", b"f")]);
    std::fs::create_dir_all(env.root().join("b")).expect("b");
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
