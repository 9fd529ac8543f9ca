//! Symbolic links and special files through a mount: `ln -s`, `readlink`,
//! `ls -l`, `mkfifo` and `mknod` store them as `sync` does (a link is an
//! object whose body is its target with S_IFLNK in its mode; a FIFO or
//! device an empty object with its type and device number), a fresh mount
//! shows them again, and they round-trip mount → S3 → `sync` to a local
//! directory → a mount of that directory. Over a local location they are
//! real links and nodes, and a link pointing outside is shown, not followed.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::mount::{mount, sh};
use common::{path_str, S3Server};

fn lstat(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
}

/// `mknod PATH TYPE [MAJOR MINOR]` with coreutils, through the mount.
fn mknod(path: &Path, args: &str) {
    sh(&format!("mknod -m 0640 '{}' {args}", path.display()));
}

/// Makes, through the mount at `root`: `f` (a file), `l -> f`,
/// `up -> ../../etc/passwd`, `dangling -> no/such`, and the FIFO `p`.
fn make_links(root: &Path) {
    std::fs::write(root.join("f"), b"file body").unwrap();
    std::os::unix::fs::symlink("f", root.join("l")).unwrap();
    std::os::unix::fs::symlink("../../etc/passwd", root.join("up")).unwrap();
    std::os::unix::fs::symlink("no/such", root.join("dangling")).unwrap();
    sh(&format!("mkfifo -m 0640 '{}'", root.join("p").display()));
}

/// What [`make_links`] made, as seen at `root` (a mount or a directory).
fn assert_links(root: &Path) {
    for (name, target) in [
        ("l", "f"),
        ("up", "../../etc/passwd"),
        ("dangling", "no/such"),
    ] {
        let m = lstat(&root.join(name));
        assert!(m.file_type().is_symlink(), "{name}: {m:?}");
        assert_eq!(
            m.len(),
            target.len() as u64,
            "{name}: size is the target's length"
        );
        assert_eq!(
            std::fs::read_link(root.join(name)).unwrap(),
            PathBuf::from(target)
        );
    }
    // The kernel follows a link inside the mount to the file.
    assert_eq!(std::fs::read(root.join("l")).unwrap(), b"file body");
    let p = lstat(&root.join("p"));
    assert!(p.file_type().is_fifo(), "{p:?}");
    assert_eq!(p.mode() & 0o7777, 0o640);
    assert_eq!(p.len(), 0);
    // It is a working pipe (the kernel's, not the store's), and `find`
    // sees the types too.
    let piped = sh(&format!(
        "cd '{}' && {{ cat p & echo through-the-fifo > p; wait; }}",
        root.display()
    ));
    assert_eq!(piped, "through-the-fifo\n");
    let found = sh(&format!(
        "cd '{}' && find . -type l ! -name out | sort",
        root.display()
    ));
    assert_eq!(found, "./dangling\n./l\n./up\n");
}

async fn links_through_a_mount_are_stored_and_shown_again(s: &S3Server) {
    let bucket = s.new_bucket("mnt-links").await;
    let url = s.url(&bucket, "");
    let m = mount(Some(s), &url, &[]);
    make_links(&m.dir);
    assert_links(&m.dir);
    let ls = sh(&format!("cd '{}' && ls -l", m.dir.display()));
    assert!(ls.contains("l -> f"), "{ls}");
    assert!(ls.contains("up -> ../../etc/passwd"), "{ls}");
    assert!(
        ls.lines().any(|l| l.starts_with('p') && l.ends_with(" p")),
        "{ls}"
    );
    // Renamed, a link stays a link.
    std::fs::rename(m.path("dangling"), m.path("dangling2")).unwrap();
    assert_eq!(
        std::fs::read_link(m.path("dangling2")).unwrap(),
        PathBuf::from("no/such")
    );
    std::fs::rename(m.path("dangling2"), m.path("dangling")).unwrap();
    // chown -h changes the link's owner, and it stays a link.
    std::os::unix::fs::lchown(m.path("l"), Some(1234), Some(4321)).unwrap();
    assert_eq!(lstat(&m.path("l")).uid(), 1234);
    drop(m);

    // In the bucket: the body is the target, the mode says S_IFLNK / S_IFIFO.
    assert_eq!(s.get(&bucket, "l").await, b"f");
    assert_eq!(s.get(&bucket, "up").await, b"../../etc/passwd");
    let meta = s.head_metadata(&bucket, "l").await;
    assert_eq!(meta["file-permissions"], "0120777", "{meta:?}");
    assert_eq!(meta["file-owner"], "1234", "{meta:?}");
    assert!(s.get(&bucket, "p").await.is_empty());
    let meta = s.head_metadata(&bucket, "p").await;
    assert_eq!(meta["file-permissions"], "010640", "{meta:?}");

    // A fresh mount shows them again.
    let again = mount(Some(s), &url, &[]);
    assert_links(&again.dir);
    drop(again);

    // sync to a local directory: real links and a FIFO; mounted, the same.
    let state = common::tempdir();
    let local = common::tempdir();
    common::sync_ok(s, state.path(), &[&url, &path_str(local.path())]);
    assert_links(local.path());
    let lm = mount(None, &path_str(local.path()), &[]);
    assert_links(&lm.dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn links_and_fifos_through_a_moto_mount_round_trip() {
    links_through_a_mount_are_stored_and_shown_again(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn links_and_fifos_through_an_s3s_mount_round_trip() {
    links_through_a_mount_are_stored_and_shown_again(&common::s3s()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_made_through_a_mount_keep_their_number() {
    common::require_root("mknod of a device");
    let s = common::moto();
    let bucket = s.new_bucket("mnt-dev").await;
    let url = s.url(&bucket, "");
    let m = mount(Some(&s), &url, &[]);
    mknod(&m.path("null"), "c 1 3");
    mknod(&m.path("blk"), "b 7 200");
    let null = lstat(&m.path("null"));
    assert!(null.file_type().is_char_device(), "{null:?}");
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o640);
    drop(m);
    let meta = s.head_metadata(&bucket, "null").await;
    assert_eq!(meta["file-permissions"], "020640", "{meta:?}");
    assert_eq!(meta["rdev"], libc::makedev(1, 3).to_string(), "{meta:?}");
    let again = mount(Some(&s), &url, &[]);
    let blk = lstat(&again.path("blk"));
    assert!(blk.file_type().is_block_device(), "{blk:?}");
    assert_eq!(blk.rdev(), libc::makedev(7, 200));
}

#[tokio::test(flavor = "multi_thread")]
async fn over_a_local_location_links_and_nodes_are_real_and_never_followed() {
    common::require_root("mknod of a device");
    let dir = common::tempdir();
    let outside = common::tempdir();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    // A link already in the directory, pointing outside it.
    let target = outside.path().join("secret");
    std::os::unix::fs::symlink(&target, dir.path().join("out")).unwrap();
    let m = mount(None, &path_str(dir.path()), &[]);
    make_links(&m.dir);
    mknod(&m.path("null"), "c 1 3");
    assert_links(dir.path());
    let null = lstat(&dir.path().join("null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(lstat(&m.path("null")).rdev(), libc::makedev(1, 3));
    // The mount shows the outside link as a link with its target.
    let out = lstat(&m.path("out"));
    assert!(out.file_type().is_symlink());
    assert_eq!(std::fs::read_link(m.path("out")).unwrap(), target);
    // Removing it through the mount removes the link, not its target.
    std::fs::remove_file(m.path("out")).unwrap();
    assert!(std::fs::symlink_metadata(dir.path().join("out")).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), b"outside");
    // No temp names left behind by the link and node writes.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".syncmount-")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_name_is_eexist_and_readlink_of_a_file_is_einval() {
    let s = common::moto();
    let bucket = s.new_bucket("mnt-link-err").await;
    s.put(&bucket, "f", b"x").await;
    let m = mount(Some(&s), &s.url(&bucket, ""), &[]);
    let err = std::os::unix::fs::symlink("t", m.path("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    let err = std::fs::read_link(m.path("f")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(s.get(&bucket, "f").await, b"x");
}
