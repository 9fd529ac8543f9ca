//! Input a user, a config file or a bucket's writer controls never panics
//! syncmount: out-of-range numbers in user metadata are ignored with a
//! warning naming the key (the sync succeeds, a mount keeps answering),
//! config values and flags out of range exit 2 naming the value, and a
//! SIGHUP with such a file keeps the daemon on its previous config.

mod common;

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use common::daemon::LoggedDaemon;
use common::tasks::{TaskEnv, PAIR};

/// Metadata values a bucket's writer may set, by object name: each is out
/// of range for the field it names.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("aws-mtime.txt", "file-mtime", "99999999999999999999"),
    (
        "rclone-mtime.txt",
        "mtime",
        "1000000000000000000000000000000",
    ),
    ("rclone-exp.txt", "mtime", "1e30"),
    ("ctime.txt", "file-ctime", "99999999999999999999999999999ns"),
    (
        "s3fs-ctime.txt",
        "ctime",
        "-1000000000000000000000000000000",
    ),
    ("owner.txt", "file-owner", "99999999999999999999"),
    ("group.txt", "file-group", "4294967296"),
    ("mode.txt", "file-permissions", "77777777777"),
];

async fn hostile_bucket(server: &common::S3Server) -> String {
    let bucket = server.new_bucket("hostile-meta").await;
    let client = server.client().await;
    for (name, key, value) in HOSTILE {
        client
            .put_object()
            .bucket(&bucket)
            .key(format!("data/{name}"))
            .metadata(*key, *value)
            .body(ByteStream::from(name.as_bytes().to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutObject {name} with {key}={value}: {e:?}"));
    }
    bucket
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_metadata_is_ignored_with_a_warning_by_sync_and_mount() {
    let server = common::moto();
    let bucket = hostile_bucket(&server).await;
    let tmp = common::tempdir();
    let dst = tmp.path().join("dst");
    let src = format!("s3://{bucket}/data");
    let out = common::run(common::sync_cmd(
        &server,
        &tmp.path().join("state"),
        &["-v", &src, &common::path_str(&dst)],
    ));
    assert_eq!(out.status, 0, "sync down: {}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    for (name, key, _) in HOSTILE {
        assert_eq!(
            std::fs::read(dst.join(name)).unwrap_or_default(),
            name.as_bytes(),
            "{name} copied"
        );
        assert!(
            out.stderr.contains(&format!("key=\"{key}\""))
                || out.stderr.contains(&format!("key={key}")),
            "a warning names {key}:\n{}",
            out.stderr
        );
    }

    let m = common::mount::mount(Some(&server), &server.url(&bucket, "data"), &[]);
    let listed = common::mount::sh(&format!("ls -l {}", m.dir.display()));
    for (name, _, _) in HOSTILE {
        assert!(listed.contains(name), "ls -l shows {name}:\n{listed}");
        let meta = std::fs::metadata(m.path(name))
            .unwrap_or_else(|e| panic!("stat {name} through the mount: {e}"));
        assert_eq!(meta.len(), name.len() as u64, "{name}");
    }
    // Still answering after every hostile object was looked at.
    assert!(std::fs::read_dir(&m.dir).is_ok_and(|d| d.count() == HOSTILE.len()));
    let log = m.log_text();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(m.unmount(), Some(0), "the mount ends cleanly");
}

/// `config check` on a file with `body` appended to a valid pair: exit 2,
/// the output naming `value`.
fn assert_check_refuses(body: &str, value: &str) {
    let env = TaskEnv::new(&format!("{PAIR}{body}"));
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2, "config check with {body}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains(value), "the message names {value}:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn out_of_range_durations_and_part_sizes_in_config_and_flags_exit_2_naming_the_value() {
    assert_check_refuses(
        "\n[[mount]]\nlocation = \"A\"\npath = \"/mnt/x\"\nmetadata_ttl = 1e30\n",
        "1000000000000000000000000000000",
    );
    assert_check_refuses(
        "\n[[mount]]\nlocation = \"A\"\npath = \"/mnt/x\"\nmetadata_ttl = \"1e11\"\n",
        "1e11",
    );
    assert_check_refuses("part_size = 9223372036854775807\n", "9223372036854775807");
    assert_check_refuses(
        "schedule = \"rate(106751991167300 days)\"\n",
        "rate(106751991167300 days)",
    );
    assert_check_refuses(
        "\n[lock]\nkind = \"local\"\nlease_seconds = 9223372036854775807\n",
        "9223372036854775807",
    );

    let tmp = common::tempdir();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for (args, value) in [
        (
            vec![
                "mount",
                "/tmp",
                &common::path_str(&mnt),
                "--metadata-ttl",
                "1e11",
            ],
            "1e11",
        ),
        (
            vec!["daemon", "--grace-seconds", "18446744073709551615"],
            "18446744073709551615",
        ),
        (
            vec![
                "sync",
                "/tmp",
                "s3://b/p",
                "--part-size",
                "18446744073709551615",
            ],
            "18446744073709551615",
        ),
    ] {
        let mut cmd = common::syncmount();
        cmd.args(&args)
            .arg("--state-dir")
            .arg(tmp.path().join("state"));
        let out = common::run(cmd);
        assert_eq!(out.status, 2, "{args:?}");
        assert!(out.stderr.contains(value), "names {value}: {}", out.stderr);
    }
}

#[test]
fn sighup_with_an_out_of_range_schedule_keeps_the_previous_config() {
    let every_second = PAIR.replace(
        "destination = \"B\"",
        "destination = \"B\"\nschedule = \"rate(1 second)\"",
    );
    let env = TaskEnv::new(&every_second);
    common::write_tree(&env.root().join("a"), &[("one.txt", b"1")]);
    std::fs::create_dir_all(env.root().join("b")).unwrap();
    let d = LoggedDaemon::start(&env, &[]);
    let bad = every_second.replace("rate(1 second)", "rate(106751991167300 days)");
    std::fs::write(
        &env.config,
        bad.replace("{root}", &env.root().display().to_string()),
    )
    .unwrap();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
    let why = d.wait_log(Duration::from_secs(30), |l| {
        l.contains("config not reloaded")
    });
    assert!(why.contains("106751991167300"), "logs why: {why}");
    // The old schedule keeps firing after the refused reload (counted in
    // the log: the CLI itself refuses the file now).
    let ended = |l: &str| l.contains("execution ended status=SUCCESS");
    let before = d.count_log(ended);
    d.wait_count(Duration::from_secs(30), before + 2, ended);
    let (code, log) = d.stop();
    assert_eq!(code, 0, "{}", log.join("\n"));
    assert!(
        !log.iter().any(|l| l.contains("panicked")),
        "{}",
        log.join("\n")
    );
}
