//! `syncmount config check` on broken files: every problem is printed with
//! its file and line, the exit code is 2; a good file says ok and shows the
//! next scheduled runs. Other commands refuse a broken file naming the first
//! problem and how many more there are.

mod common;

use common::tasks::TaskEnv;

const BROKEN: &str = r#"[[location]]
name = "src"
bucket = "src-bucket"
role_arn = "arn:aws:iam::1234:role/transfer"

[[location]]
name = "dst"
bucket = "dst-bucket"
prefix = "data"
regoin = "eu-west-1"

[[location]]
name = "src"
path = "/srv/src"

[[task]]
name = "one"
source = "src"
destination = "dst"
schedule = "rate(15 minutes)"

[[task]]
name = "two"
source = "missing"
destination = "s3://dst-bucket/data/nested"
schedule = "cron(0 12 * * * *)"
transfer_mode = "sometimes"

[[task]]
name = "three"
source = "/srv/x"
destination = "dst"
schedule = "every tuesday"
colour = "blue"

[[mount]]
location = "nowhere"
path = "relative/dir"
file_mode = "999"
"#;

/// `stdout` is exactly these problems, each on its `FILE:LINE: ` line.
fn assert_problems(stdout: &str, file: &str, expect: &[(usize, &str)]) {
    for (line, what) in expect {
        let prefix = format!("{file}:{line}: ");
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no `{what}` on line {line}:\n{stdout}"
        );
    }
    assert_eq!(stdout.lines().count(), expect.len(), "{stdout}");
}

#[test]
fn config_check_reports_every_problem_with_its_line() {
    let env = TaskEnv::new(BROKEN);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2, "{}\n{}", out.stdout, out.stderr);
    let file = env.config.display().to_string();
    let expect = [
        (4, "role_arn"),
        (10, "unknown key `regoin`"),
        (13, "a second location named `src`"),
        (24, "`missing` is not a location in this file"),
        (25, "overlaps the destination of task `one`"),
        (26, "cron(0 12 * * * *)"),
        (27, "`sometimes` is not one of"),
        (32, "overlaps the destination of task `one`"),
        (32, "overlaps the destination of task `two`"),
        (33, "every tuesday"),
        (34, "unknown key `colour`"),
        (37, "`nowhere` is not a location"),
        (38, "must be absolute"),
        (39, "999"),
    ];
    assert_problems(&out.stdout, &file, &expect);
    assert!(out.stderr.contains("problems in"), "{}", out.stderr);
}

#[test]
fn a_task_naming_a_missing_location_and_two_overlapping_destinations_are_caught() {
    let env = TaskEnv::new(
        "[[task]]\nname = \"a\"\nsource = \"nope\"\ndestination = \"s3://b/x\"\n\n[[task]]\nname = \"b\"\nsource = \"/srv/y\"\ndestination = \"s3://b/x/y\"\n\n[[task]]\nname = \"c\"\nsource = \"/srv/z\"\ndestination = \"s3://b/xy\"\n\n[[mount]]\nlocation = \"s3://b\"\npath = \"relative\"\n",
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].contains(":3: ") && lines[0].contains("`nope`"),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].contains(":9: ") && lines[1].contains("task `a`"),
        "{}",
        out.stdout
    );
    assert!(
        lines[2].contains(":18: ") && lines[2].contains("absolute"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_good_file_is_ok_and_shows_the_next_runs() {
    let env = TaskEnv::new(
        "[[location]]\nname = \"a\"\npath = \"{root}/a\"\n\n[[task]]\nname = \"nightly\"\nsource = \"a\"\ndestination = \"s3://b/nightly\"\nschedule = \"cron(0 2 * * ? *)\"\n\n[[mount]]\nlocation = \"a\"\npath = \"/mnt/a\"\nread_only = true\nlisting_attributes = true\n",
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ok (1 locations, 1 tasks, 1 mounts)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("task nightly: next run 20"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("T02:00:00Z"), "{}", out.stdout);
}

#[test]
fn other_commands_refuse_a_broken_file_naming_the_first_problem() {
    let env = TaskEnv::new(BROKEN);
    let out = env.run(&["task", "list"]);
    assert_eq!(out.status, 2);
    let file = env.config.display().to_string();
    assert!(out.stderr.contains(&format!("{file}:4:")), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("more problems: `syncmount config check`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_syntax_error_is_reported_with_its_line() {
    let env = TaskEnv::new("[[task]]\nname = \"a\"\nsource = \n");
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2);
    let file = env.config.display().to_string();
    assert!(out.stdout.contains(&format!("{file}:3:")), "{}", out.stdout);
}

#[test]
fn schedule_log_and_retention_options_are_checked_naming_the_bad_value() {
    let text = r#"[[task]]
name = "t"
source = "/srv/a"
destination = "/srv/b"
schedule = "rate(1 hour)"
auto_disable_after = -1
log_level = "loud"

[[task]]
name = "manual"
source = "/srv/c"
destination = "/srv/d"
auto_disable_after = 2

[retention]
history_days = "a month"
max_reports = 1.5
keep = 3
"#;
    let env = TaskEnv::new(text);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2, "{}\n{}", out.stdout, out.stderr);
    let file = env.config.display().to_string();
    let expect = [
        (
            6,
            "auto_disable_after `-1`: expected a number of failed executions",
        ),
        (7, "`loud` is not one of: off, basic, transfer"),
        (
            13,
            "task `manual`: auto_disable_after has no meaning without a schedule",
        ),
        (16, "history_days `\"a month\"`: expected a number of days"),
        (
            17,
            "max_reports `1.5`: expected a number of reports per task",
        ),
        (
            18,
            "unknown key `keep` in [retention]; expected one of: history_days, max_reports",
        ),
    ];
    assert_problems(&out.stdout, &file, &expect);

    let good = "[[task]]\nname = \"t\"\nsource = \"/srv/a\"\ndestination = \"/srv/b\"\nschedule = \"rate(1 hour)\"\nauto_disable_after = 0\nlog_level = \"TRANSFER\"\n\n[retention]\nhistory_days = 7\nmax_reports = 0\n";
    let env = TaskEnv::new(good);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
}
