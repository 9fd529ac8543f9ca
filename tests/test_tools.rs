//! The test tools are the ones the lock names (issue 19): the Python venv
//! the suite runs moto, boto3 and prometheus_client from holds exactly
//! what `scripts/requirements-test.txt` pins, and the check that says so
//! (`scripts/lib/venv_check.py`, also run by scripts/test.sh before the
//! suite starts) fails on a venv that differs from its lock.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv scripts/test.sh made (SYNCMOUNT_TEST_PYTHON is its python).
fn venv() -> PathBuf {
    let python = std::env::var("SYNCMOUNT_TEST_PYTHON")
        .expect("SYNCMOUNT_TEST_PYTHON is not set: run the tests with scripts/test.sh");
    Path::new(&python)
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("SYNCMOUNT_TEST_PYTHON={python} is not VENV/bin/python"))
        .to_path_buf()
}

/// Runs the check of `venv` against `lock`: (exit code, stderr).
fn check(lock: &Path, venv: &Path) -> (i32, String) {
    let out = Command::new("python3")
        .arg(repo().join("scripts/lib/venv_check.py"))
        .arg(lock)
        .arg(venv)
        .output()
        .expect("run python3 scripts/lib/venv_check.py");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_test_venv_holds_exactly_what_the_lock_pins() {
    let lock = repo().join("scripts/requirements-test.txt");
    let (code, stderr) = check(&lock, &venv());
    assert_eq!(code, 0, "the test venv differs from its lock:\n{stderr}");
}

#[test]
fn every_pin_in_the_lock_is_exact_and_hashed() {
    let lock = std::fs::read_to_string(repo().join("scripts/requirements-test.txt"))
        .expect("read scripts/requirements-test.txt");
    let pins: Vec<&str> = lock
        .lines()
        .filter(|l| {
            !l.starts_with('#') && !l.trim_start().starts_with("--hash") && !l.trim().is_empty()
        })
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(pins.len() > 10, "moto and its dependencies: {pins:?}");
    for pin in &pins {
        assert!(pin.contains("=="), "not an exact pin: {pin}");
    }
    assert_eq!(
        lock.matches("==").count(),
        pins.len(),
        "one `==` per package line"
    );
    let hashed = lock.split("==").skip(1).all(|after| {
        after
            .split_once('\n')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with("--hash=sha256:"))
    });
    assert!(hashed, "every pin is followed by its hashes");
    for tool in [
        "moto==",
        "boto3==",
        "botocore==",
        "prometheus-client==",
        "werkzeug==",
    ] {
        assert!(lock.contains(tool), "{tool} is pinned");
    }
}

/// The check catches drift: the same venv against a lock that pins one
/// package at another version, one that lacks a package and one with an
/// extra package each fail, naming the package.
#[test]
fn the_check_fails_on_a_venv_that_differs_from_its_lock() {
    let lock = std::fs::read_to_string(repo().join("scripts/requirements-test.txt"))
        .expect("read scripts/requirements-test.txt");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let moto_line = lock
        .lines()
        .find(|l| l.starts_with("moto=="))
        .expect("moto is in the lock");
    let other_version = write(
        "other-version.txt",
        &lock.replace(moto_line, "moto==4.0.0 \\"),
    );
    let (code, stderr) = check(&other_version, &venv());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("moto:") && stderr.contains("4.0.0 locked"),
        "{stderr}"
    );

    let without_six: String = {
        let mut out = String::new();
        let mut skipping = false;
        for l in lock.lines() {
            if l.starts_with("six==") {
                skipping = true;
                continue;
            }
            if skipping && l.starts_with(' ') {
                continue;
            }
            skipping = false;
            out.push_str(l);
            out.push('\n');
        }
        out
    };
    let missing = write("missing.txt", &without_six);
    let (code, stderr) = check(&missing, &venv());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not in the lock: six=="), "{stderr}");

    let extra = write(
        "extra.txt",
        &format!("{lock}\nnot-a-real-package==1.0 \\\n    --hash=sha256:00\n"),
    );
    let (code, stderr) = check(&extra, &venv());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("missing: not-a-real-package==1.0"),
        "{stderr}"
    );
}
