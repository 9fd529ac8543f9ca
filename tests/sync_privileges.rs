//! Nothing privileged comes from a bucket unless the task asks: run as
//! root, `sync` down clears setuid/setgid bits and creates no device node
//! by default, and says so per key (a report line, a warning, FilesSkipped
//! for the device); `--preserve-setid preserve` and `--preserve-devices
//! preserve` restore them. The objects are put with the SDK the way
//! someone who can write the bucket would: `file-permissions=0104755` and
//! no owner, and an empty object whose mode says character device.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::tasks::TaskEnv;
use common::{counter, path_str, read_report, records_for, sync_ok, S3Server};

/// `/dev/mem`'s numbers.
const MEM: (u32, u32) = (1, 1);

async fn put_privileged(s: &S3Server, bucket: &str) {
    let client = s.client().await;
    let dev = libc::makedev(MEM.0, MEM.1).to_string();
    // `bin/sg` has an owner: restoring it must not clear the bits again.
    for (key, body, mode, rdev, owner) in [
        ("bin/su", &b"#!/bin/sh\nid\n"[..], "0104755", None, None),
        (
            "bin/sg",
            &b"#!/bin/sh\nid -g\n"[..],
            "0102755",
            None,
            Some("0"),
        ),
        ("mem", &b""[..], "020666", Some(dev), None),
    ] {
        let mut put = client
            .put_object()
            .bucket(bucket)
            .key(key)
            .metadata("file-permissions", mode)
            .metadata("file-mtime", "1600000000000000000ns")
            .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()));
        if let Some(r) = rdev {
            put = put.metadata("rdev", r);
        }
        if let Some(o) = owner {
            put = put.metadata("file-owner", o).metadata("file-group", o);
        }
        put.send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }
}

/// The report line of `key` names `what` among what was dropped.
fn assert_dropped(lines: &[serde_json::Value], key: &str, what: &str) {
    let line = records_for(lines, key)[0];
    assert!(
        line["dropped"].as_str().is_some_and(|d| d.contains(what)),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn setuid_bits_and_devices_from_a_bucket_are_dropped_by_default_and_reported() {
    common::require_root("checking what root writes");
    let s = common::moto();
    let bucket = s.new_bucket("privileged").await;
    put_privileged(&s, &bucket).await;
    let dst = common::tempdir();
    let state = common::tempdir();
    let report = state.path().join("report.jsonl");
    let (out, summary) = common::sync_json(
        &s,
        state.path(),
        &[
            &s.url(&bucket, ""),
            &path_str(dst.path()),
            "--report",
            &path_str(&report),
        ],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(summary["Status"], "SUCCESS", "{summary}");

    let su = std::fs::symlink_metadata(dst.path().join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o755, "the setuid bit was written");
    assert_eq!(su.uid(), 0);
    assert!(
        std::fs::symlink_metadata(dst.path().join("mem")).is_err(),
        "a device node was created"
    );
    assert_eq!(counter(&summary, "FilesSkipped"), 1, "{summary}");
    assert_eq!(counter(&summary, "SpecialFilesTransferred"), 0, "{summary}");

    let lines = read_report(&report);
    assert_eq!(records_for(&lines, "bin/su")[0]["result"], "ok");
    assert_dropped(&lines, "bin/su", "setuid bit dropped");
    let sg = std::fs::symlink_metadata(dst.path().join("bin/sg")).unwrap();
    assert_eq!(sg.mode() & 0o7777, 0o755, "the setgid bit was written");
    assert_dropped(&lines, "bin/sg", "setgid bit dropped");
    let mem_line = records_for(&lines, "mem")[0];
    assert_eq!(mem_line["result"], "skipped", "{mem_line}");
    assert!(
        mem_line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("character device is not created")),
        "{mem_line}"
    );
    for key in ["bin/su", "mem"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("WARN") && l.contains(key)),
            "no warning names {key}:\n{}",
            out.stderr
        );
    }
    // The next run finds the file as it would write it: nothing to do for
    // it; the device is reported again.
    let again = sync_ok(
        &s,
        state.path(),
        &[&s.url(&bucket, ""), &path_str(dst.path())],
    );
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
    assert_eq!(counter(&again, "FilesSkipped"), 3, "{again}");
}

#[tokio::test(flavor = "multi_thread")]
async fn setuid_bits_and_devices_are_restored_when_the_task_asks() {
    common::require_root("making a device");
    let s = common::moto();
    let bucket = s.new_bucket("privileged-kept").await;
    put_privileged(&s, &bucket).await;
    let dst = common::tempdir();
    let state = common::tempdir();
    let summary = sync_ok(
        &s,
        state.path(),
        &[
            &s.url(&bucket, ""),
            &path_str(dst.path()),
            "--preserve-setid",
            "preserve",
            "--preserve-devices",
            "preserve",
        ],
    );
    assert_eq!(counter(&summary, "FilesSkipped"), 0, "{summary}");
    assert_eq!(counter(&summary, "SpecialFilesTransferred"), 1, "{summary}");
    let su = std::fs::symlink_metadata(dst.path().join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    let sg = std::fs::symlink_metadata(dst.path().join("bin/sg")).unwrap();
    assert_eq!(
        sg.mode() & 0o7777,
        0o2755,
        "restored, then cleared by chown"
    );
    assert_eq!(sg.uid(), 0);
    let mem = std::fs::symlink_metadata(dst.path().join("mem")).unwrap();
    assert!(mem.file_type().is_char_device());
    assert_eq!(mem.rdev(), libc::makedev(MEM.0, MEM.1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_in_the_config_takes_the_same_options() {
    common::require_root("checking what root writes");
    let s = common::moto();
    let bucket = s.new_bucket("privileged-task").await;
    put_privileged(&s, &bucket).await;
    let config = format!(
        "[[location]]\nname = \"bucket\"\nbucket = \"{bucket}\"\nendpoint_url = \"{}\"\n\n\
         [[task]]\nname = \"down\"\nsource = \"bucket\"\ndestination = \"{{root}}/out\"\n\
         preserve_setid = \"preserve\"\npreserve_devices = \"none\"\n",
        s.endpoint
    );
    let mut env = TaskEnv::new(&config);
    env.vars = s.env();
    let checked = env.run(&["config", "check"]);
    assert_eq!(checked.status, 0, "{}{}", checked.stdout, checked.stderr);
    let out = env.run(&["task", "start", "down", "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let out_dir = env.root().join("out");
    let su = std::fs::symlink_metadata(out_dir.join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert!(std::fs::symlink_metadata(out_dir.join("mem")).is_err());

    let bad =
        TaskEnv::new(&config.replace("preserve_devices = \"none\"", "preserve_devices = \"all\""));
    let refused = bad.run(&["config", "check"]);
    assert_eq!(refused.status, 2, "{}", refused.stdout);
    assert!(
        refused
            .stdout
            .contains("`all` is not one of: none, preserve"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_way_sync_drops_and_reports_them_the_same_way() {
    common::require_root("checking what root writes");
    let s = common::moto();
    let bucket = s.new_bucket("privileged-two-way").await;
    put_privileged(&s, &bucket).await;
    let dst = common::tempdir();
    let state = common::tempdir();
    let report = state.path().join("report.jsonl");
    let summary = sync_ok(
        &s,
        state.path(),
        &[
            &s.url(&bucket, ""),
            &path_str(dst.path()),
            "--two-way",
            "--report",
            &path_str(&report),
        ],
    );
    assert_eq!(counter(&summary, "FilesSkipped"), 1, "{summary}");
    let su = std::fs::symlink_metadata(dst.path().join("bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o755);
    assert!(std::fs::symlink_metadata(dst.path().join("mem")).is_err());
    let lines = read_report(&report);
    assert_dropped(&lines, "bin/su", "setuid bit dropped");
    // The bucket keeps what it holds: the next run copies nothing back.
    let again = sync_ok(
        &s,
        state.path(),
        &[&s.url(&bucket, ""), &path_str(dst.path()), "--two-way"],
    );
    assert_eq!(counter(&again, "FilesTransferred"), 0, "{again}");
    assert_eq!(
        s.head_metadata(&bucket, "bin/su").await["file-permissions"],
        "0104755"
    );
}
