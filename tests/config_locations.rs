//! Named locations from the config file (`--config`), wherever a command
//! takes a location: `sync` and `location check`.

mod common;

use std::path::Path;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("syncmount.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_and_location_check_accept_names_from_the_config_file() {
    let server = common::moto();
    let bucket = server.new_bucket("cfg-names").await;
    let work = common::tempdir();
    let src = work.path().join("src");
    common::write_tree(&src, &[("a.txt", b"alpha"), ("d/b.txt", b"beta")]);
    let config = write_config(
        work.path(),
        &format!(
            "[[location]]\nname = \"here\"\npath = \"{}\"\n\n[[location]]\nname = \"there\"\nbucket = \"{bucket}\"\nprefix = \"named\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n",
            src.display(),
            server.endpoint
        ),
    );
    let state = common::tempdir();
    let mut cmd = common::syncmount_for(&server);
    cmd.current_dir(work.path())
        .args([
            "--config",
            &config.display().to_string(),
            "sync",
            "here",
            "there",
            "--state-dir",
        ])
        .arg(state.path());
    let out = common::run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        server.keys(&bucket, "").await,
        vec!["named/a.txt", "named/d/b.txt"]
    );
    assert_eq!(server.get(&bucket, "named/d/b.txt").await, b"beta");

    let mut check = common::syncmount_for(&server);
    check.current_dir(work.path()).args([
        "--config",
        &config.display().to_string(),
        "location",
        "check",
        "there",
    ]);
    let out = common::run(check);
    assert_eq!(out.status, 0, "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("s3://{bucket}/named/")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("✓ s3:ListBucket"), "{}", out.stdout);
}

#[test]
fn a_config_with_an_unknown_key_is_a_usage_error_naming_the_file_and_line() {
    let work = common::tempdir();
    let config = write_config(
        work.path(),
        "[[location]]\nname = \"x\"\npath = \"/tmp\"\nregoin = \"eu-west-1\"\n",
    );
    let mut cmd = common::syncmount();
    cmd.args([
        "--config",
        &config.display().to_string(),
        "location",
        "check",
        "x",
    ]);
    let out = common::run(cmd);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("syncmount.toml:4:"), "{}", out.stderr);
    assert!(out.stderr.contains("regoin"), "{}", out.stderr);
}

#[test]
fn a_name_that_is_also_a_directory_here_is_refused_as_ambiguous() {
    let work = common::tempdir();
    std::fs::create_dir(work.path().join("photos")).expect("mkdir");
    let config = write_config(
        work.path(),
        "[[location]]\nname = \"photos\"\npath = \"/srv/photos\"\n",
    );
    let mut cmd = common::syncmount();
    cmd.current_dir(work.path())
        .args([
            "--config",
            &config.display().to_string(),
            "sync",
            "photos",
            "out",
            "--state-dir",
        ])
        .arg(work.path().join("state"));
    let out = common::run(cmd);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(out.stderr.contains("write ./photos"), "{}", out.stderr);
}

#[test]
fn an_explicit_config_file_that_does_not_exist_is_a_usage_error() {
    let mut cmd = common::syncmount();
    cmd.args([
        "--config",
        "/nonexistent/syncmount.toml",
        "location",
        "check",
        "/tmp",
    ]);
    let out = common::run(cmd);
    assert_eq!(out.status, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("/nonexistent/syncmount.toml"),
        "{}",
        out.stderr
    );
}
