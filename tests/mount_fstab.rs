//! Issue 11: `mount -t fuse.syncmount LOCATION DIR -o OPTIONS` (what
//! /etc/fstab and systemd .mount units run) through mount(8) itself, with
//! /sbin/mount.fuse.syncmount a link to the binary under test, as an
//! install makes it.

mod common;

use std::path::Path;
use std::process::Command;

use common::mount::{is_mounted, require_fuse, wait_until};

const HELPER: &str = "/sbin/mount.fuse.syncmount";

/// Points mount(8)'s helper for fuse.syncmount at the binary under test.
fn install_helper() {
    let target = env!("CARGO_BIN_EXE_syncmount");
    if std::fs::read_link(HELPER).is_ok_and(|t| t == Path::new(target)) {
        return;
    }
    let _ = std::fs::remove_file(HELPER);
    std::os::unix::fs::symlink(target, HELPER)
        .unwrap_or_else(|e| panic!("cannot link {HELPER} (the tests run as root): {e}"));
}

fn mount_t(s: &common::S3Server, location: &str, dir: &Path, options: &str) -> common::RunOutput {
    let mut cmd = Command::new("mount");
    cmd.args(["-t", "fuse.syncmount", location])
        .arg(dir)
        .args(["-o", options])
        .envs(s.env());
    common::run(cmd)
}

#[tokio::test(flavor = "multi_thread")]
async fn mount_t_fuse_syncmount_mounts_with_fstab_options_and_umount_unmounts() {
    require_fuse();
    install_helper();
    let s = common::s3s();
    let bucket = s.new_bucket("fstab").await;
    s.put(&bucket, "p/hello.txt", b"from the bucket").await;
    let tmp = common::tempdir();
    let dir = tmp.path().join("mnt");
    std::fs::create_dir(&dir).unwrap();
    let state = tmp.path().join("state");
    let options = format!(
        "rw,_netdev,nofail,x-systemd.automount,allow_other,endpoint_url={},metadata_ttl=1s,state_dir={}",
        s.endpoint,
        state.display()
    );
    let out = mount_t(&s, &s.url(&bucket, "p"), &dir, &options);
    assert_eq!(out.status, 0, "mount -t fuse.syncmount: {}", out.stderr);
    assert!(is_mounted(&dir), "mount(8) returned once mounted");
    assert_eq!(
        std::fs::read(dir.join("hello.txt")).unwrap(),
        b"from the bucket"
    );
    std::fs::write(dir.join("new.txt"), b"through fstab").unwrap();
    assert_eq!(s.get(&bucket, "p/new.txt").await, b"through fstab");
    // allow_other reached the mount; the state went where it was told.
    let opts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = opts
        .lines()
        .find(|l| l.contains(&format!(" {} ", dir.display())))
        .expect("the mount in mountinfo");
    assert!(line.contains("allow_other"), "{line}");
    assert!(
        state.join("logs").is_dir(),
        "the detached mount logs under state_dir"
    );

    let out = common::run({
        let mut c = Command::new("umount");
        c.arg(&dir);
        c
    });
    assert_eq!(out.status, 0, "umount: {}", out.stderr);
    wait_until(|| !is_mounted(&dir), "the unmount");

    // An option it does not know is refused, by name, and nothing is mounted.
    let out = mount_t(&s, &s.url(&bucket, "p"), &dir, "allow_other,bogus=1");
    assert_ne!(out.status, 0);
    assert!(out.stderr.contains("`bogus=1`"), "{}", out.stderr);
    assert!(!is_mounted(&dir));
}
