//! The units in systemd/ pass `systemd-analyze verify` (with ExecStart=
//! pointed at the binary under test, as an install would), the template
//! verified as instances, and the example bidirectional config passes
//! `config check`. scripts/test.sh installs systemd-analyze when missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies `unit` into `dir` as `name`, with the install path of the binary
/// replaced by the one under test.
fn install(unit: &str, name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("systemd").join(unit))
        .unwrap_or_else(|e| panic!("systemd/{unit}: {e}"));
    assert!(
        unit.ends_with(".timer")
            || unit.ends_with(".mount")
            || text.contains("/usr/local/bin/syncmount"),
        "{unit} does not run /usr/local/bin/syncmount"
    );
    let text = text.replace("/usr/local/bin/syncmount", env!("CARGO_BIN_EXE_syncmount"));
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write unit");
    path
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let tool = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        tool.as_ref().is_ok_and(|o| o.status.success()),
        "systemd-analyze is missing: run the tests through scripts/test.sh, which installs it (Debian package `systemd`)"
    );
    let dir = common::tempdir();
    let units = [
        install("syncmount.service", "syncmount.service", dir.path()),
        install(
            "syncmount-task@.service",
            "syncmount-task@a-to-b.service",
            dir.path(),
        ),
        install(
            "syncmount-task@.timer",
            "syncmount-task@a-to-b.timer",
            dir.path(),
        ),
        install(
            "syncmount-task@.service",
            "syncmount-task@b-to-a.service",
            dir.path(),
        ),
        install(
            "syncmount-task@.timer",
            "syncmount-task@b-to-a.timer",
            dir.path(),
        ),
        install("mnt-bucket.mount", "mnt-bucket.mount", dir.path()),
    ];
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys and bad values are only warnings: none may appear.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned:\n{stderr}"
    );
}

#[test]
fn a_broken_unit_would_be_caught() {
    let dir = common::tempdir();
    let unit = install("syncmount.service", "syncmount.service", dir.path());
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("Type=notify", "Type=notify\nNotAKey=1");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotAKey"));
}

#[test]
fn the_service_is_type_notify_and_the_task_unit_waits() {
    let service = std::fs::read_to_string(repo().join("systemd/syncmount.service")).unwrap();
    assert!(service.contains("Type=notify"));
    // The daemon mounts: it needs /dev/fuse and must not get a mount
    // namespace of its own, or nobody else would see its mounts.
    assert!(service.contains("DeviceAllow=/dev/fuse rw"));
    assert!(service.contains("@mount"));
    let settings: Vec<&str> = service.lines().filter(|l| !l.starts_with('#')).collect();
    for own_namespace in [
        "ProtectSystem=",
        "PrivateTmp=",
        "PrivateDevices=",
        "ProtectHome=",
    ] {
        assert!(
            !settings.iter().any(|l| l.starts_with(own_namespace)),
            "{own_namespace} hides the daemon's mounts"
        );
    }
    let task = std::fs::read_to_string(repo().join("systemd/syncmount-task@.service")).unwrap();
    assert!(task.contains("Type=oneshot"));
    assert!(task.contains("task start %i --wait"));
}

#[test]
fn the_example_bidirectional_config_passes_config_check() {
    let mut cmd = common::syncmount();
    cmd.arg("--config")
        .arg(repo().join("systemd/bidirectional.toml"))
        .args(["config", "check"]);
    let out = common::run(cmd);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 task"), "{}", out.stdout);
    let text = std::fs::read_to_string(repo().join("systemd/bidirectional.toml")).unwrap();
    assert!(
        text.contains("direction = \"two-way\""),
        "the example is one two-way task, not two one-way tasks (which lose edits)"
    );
}
