//! Permissions in a mount shared with other users (`--allow-other`,
//! `--allow-root`): the kernel enforces the mode, owner and group the mount
//! shows (`default_permissions`), and only root or the owner changes them.
//! The mounts run as root (the tests do); the other user is `nobody`
//! (65534), through `setpriv`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::mount::{as_nobody, mount, mount_cmd, Mount};
use common::RunOutput as Out;

const NOBODY: u32 = 65534;

/// `sh -c SCRIPT sh PATH` as `nobody` (the path is `$1`).
fn sh_as_nobody(script: &str, path: &Path) -> Out {
    let p = path.to_string_lossy();
    as_nobody(&["sh", "-c", script, "sh", &p])
}

/// `os.utime(path, (t, t))`, or to now, in python as `nobody`.
fn utime_as_nobody(path: &Path, t: Option<i64>) -> Out {
    let times = t.map_or("None".to_string(), |t| format!("({t}, {t})"));
    let script = format!("import os, sys; os.utime(sys.argv[1], {times})");
    as_nobody(&["python3", "-c", &script, &p(path)])
}

fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[track_caller]
fn assert_denied(out: &Out, code: i32, message: &str, what: &str) {
    assert!(
        out.status == code && out.stderr.contains(message),
        "{what}: expected exit {code} and `{message}`, got {out:?}"
    );
}

/// `sh`'s exit code when a redirection cannot be opened.
const SH_REDIRECT_FAILED: i32 = 2;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// A local directory mounted with `args`, reachable by other users, with
/// (as root, through the mount) `private.txt` 0600, `public.txt` 0644,
/// `shared/` 0777 and `closed/` 0755.
fn shared_local_mount(args: &[&str]) -> (tempfile::TempDir, Mount) {
    let src = tempfile::tempdir().expect("temp dir");
    let m = mount(None, &p(src.path()), args);
    m.reachable_by_others();
    std::fs::write(m.path("private.txt"), "secret\n").expect("write private.txt");
    chmod(&m.path("private.txt"), 0o600);
    std::fs::write(m.path("public.txt"), "hello\n").expect("write public.txt");
    chmod(&m.path("public.txt"), 0o644);
    std::fs::create_dir(m.path("shared")).expect("mkdir shared");
    chmod(&m.path("shared"), 0o777);
    std::fs::create_dir(m.path("closed")).expect("mkdir closed");
    chmod(&m.path("closed"), 0o755);
    (src, m)
}

#[test]
fn with_allow_other_another_user_reads_writes_and_creates_only_what_the_modes_allow() {
    let (src, m) = shared_local_mount(&["--allow-other"]);
    let shown = m.options_shown();
    assert!(
        shown.contains("default_permissions") && shown.contains("allow_other"),
        "the mount's options: {shown}"
    );
    let private = m.path("private.txt");
    let public = m.path("public.txt");

    let out = as_nobody(&["cat", &p(&private)]);
    assert_denied(&out, 1, "Permission denied", "cat of a 0600 root file");
    assert!(!out.stdout.contains("secret"), "{out:?}");
    let out = sh_as_nobody("echo x >> \"$1\"", &private);
    assert_denied(
        &out,
        SH_REDIRECT_FAILED,
        "Permission denied",
        "append to a 0600 root file",
    );
    let out = sh_as_nobody("echo x > \"$1\"", &private);
    assert_denied(
        &out,
        SH_REDIRECT_FAILED,
        "Permission denied",
        "overwrite of a 0600 root file",
    );

    let out = as_nobody(&["cat", &p(&public)]);
    assert_eq!((out.status, out.stdout.as_str()), (0, "hello\n"), "{out:?}");
    let out = sh_as_nobody("echo x >> \"$1\"", &public);
    assert_denied(
        &out,
        SH_REDIRECT_FAILED,
        "Permission denied",
        "append to a 0644 root file",
    );
    let out = as_nobody(&["truncate", "-s", "0", &p(&public)]);
    assert_denied(&out, 1, "Permission denied", "truncate of a 0644 root file");

    // New names in directories nobody may not write.
    let out = sh_as_nobody("echo x > \"$1\"", &m.path("new.txt"));
    assert_denied(
        &out,
        SH_REDIRECT_FAILED,
        "Permission denied",
        "a new file in the 0755 root-owned mount root",
    );
    let out = sh_as_nobody("echo x > \"$1\"", &m.path("closed/new.txt"));
    assert_denied(
        &out,
        SH_REDIRECT_FAILED,
        "Permission denied",
        "a new file in a 0755 root-owned directory",
    );
    let out = as_nobody(&["mkdir", &p(&m.path("closed/sub"))]);
    assert_denied(
        &out,
        1,
        "Permission denied",
        "mkdir in a 0755 root directory",
    );
    let out = as_nobody(&["rm", "-f", &p(&public)]);
    assert_denied(&out, 1, "Permission denied", "rm in the 0755 mount root");
    let out = as_nobody(&["mv", &p(&public), &p(&m.path("shared/moved.txt"))]);
    assert_denied(
        &out,
        1,
        "Permission denied",
        "mv out of the 0755 mount root",
    );

    // access(2) gives the same answers (test -r/-w ask it).
    let test = |flag: &str, path: &Path| as_nobody(&["test", flag, &p(path)]).status;
    assert_eq!(test("-r", &private), 1, "access(R_OK) of a 0600 root file");
    assert_eq!(test("-w", &private), 1, "access(W_OK) of a 0600 root file");
    assert_eq!(test("-r", &public), 0, "access(R_OK) of a 0644 file");
    assert_eq!(test("-w", &public), 1, "access(W_OK) of a 0644 root file");
    assert_eq!(
        test("-w", &m.path("shared")),
        0,
        "access(W_OK) of a 0777 dir"
    );

    // What the modes allow works: a file of nobody's own in a 0777 directory.
    let mine = m.path("shared/mine.txt");
    let out = sh_as_nobody("echo mine > \"$1\" && echo more >> \"$1\"", &mine);
    assert_eq!(out.status, 0, "writing into a 0777 directory: {out:?}");
    let meta = std::fs::metadata(&mine).expect("stat mine.txt");
    assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY));
    let stored = src.path().join("shared/mine.txt");
    assert_eq!(std::fs::read_to_string(&stored).unwrap(), "mine\nmore\n");
    assert_eq!(std::fs::metadata(&stored).unwrap().uid(), NOBODY);
    // A root file made writable for all takes nobody's append.
    std::fs::write(m.path("shared/open.txt"), "a\n").unwrap();
    chmod(&m.path("shared/open.txt"), 0o666);
    let out = sh_as_nobody("echo b >> \"$1\"", &m.path("shared/open.txt"));
    assert_eq!(out.status, 0, "append to a 0666 file: {out:?}");

    // Nothing nobody was refused reached the store.
    let stored = |name: &str| std::fs::read_to_string(src.path().join(name)).unwrap();
    assert_eq!(stored("private.txt"), "secret\n");
    assert_eq!(stored("public.txt"), "hello\n");
    assert_eq!(stored("shared/open.txt"), "a\nb\n");
    assert!(!src.path().join("new.txt").exists());
    assert!(!src.path().join("closed/new.txt").exists());
    assert!(!src.path().join("closed/sub").exists());
    assert_eq!(mode_of(&src.path().join("private.txt")), 0o600);
}

#[test]
fn only_root_and_the_owner_change_modes_times_and_owners() {
    let (src, m) = shared_local_mount(&["--allow-other"]);
    let private = m.path("private.txt");
    let public = m.path("public.txt");
    let before = std::fs::metadata(src.path().join("public.txt")).unwrap();

    let out = as_nobody(&["chmod", "666", &p(&private)]);
    assert_denied(&out, 1, "Operation not permitted", "chmod of a root file");
    let out = as_nobody(&["chmod", "600", &p(&public)]);
    assert_denied(&out, 1, "Operation not permitted", "chmod of a root file");
    let out = as_nobody(&["chown", "65534", &p(&public)]);
    assert_denied(&out, 1, "Operation not permitted", "chown of a root file");
    let out = as_nobody(&["chgrp", "65534", &p(&public)]);
    assert_denied(&out, 1, "Operation not permitted", "chgrp of a root file");
    // utimensat(2) itself (touch(1) would first fail to open the file).
    let out = utime_as_nobody(&public, Some(981_173_106));
    assert_denied(&out, 1, "Operation not permitted", "utime of a root file");
    // To now needs write permission at least.
    let out = utime_as_nobody(&public, None);
    assert_denied(
        &out,
        1,
        "Permission denied",
        "utime to now of a 0644 root file",
    );
    let out = as_nobody(&["chmod", "777", &p(&m.path("closed"))]);
    assert_denied(
        &out,
        1,
        "Operation not permitted",
        "chmod of a root directory",
    );
    let out = as_nobody(&["chmod", "777", &p(&m.dir)]);
    assert_denied(
        &out,
        1,
        "Operation not permitted",
        "chmod of the mount root",
    );

    let after = std::fs::metadata(src.path().join("public.txt")).unwrap();
    assert_eq!(
        (after.mode(), after.uid(), after.gid(), after.mtime()),
        (before.mode(), before.uid(), before.gid(), before.mtime()),
        "the refused changes changed the stored file"
    );
    assert_eq!(mode_of(&src.path().join("private.txt")), 0o600);
    assert_eq!(mode_of(&src.path().join("closed")), 0o755);

    // The owner changes its own file's mode and times, not its owner.
    let mine = m.path("shared/mine.txt");
    assert_eq!(sh_as_nobody("echo x > \"$1\"", &mine).status, 0);
    let out = as_nobody(&["chmod", "600", &p(&mine)]);
    assert_eq!(out.status, 0, "chmod by the owner: {out:?}");
    let out = as_nobody(&["touch", "-d", "@981173106", &p(&mine)]);
    assert_eq!(out.status, 0, "touch -d by the owner: {out:?}");
    let out = as_nobody(&["chown", "0", &p(&mine)]);
    assert_denied(
        &out,
        1,
        "Operation not permitted",
        "chown to root by the owner",
    );
    let stored = std::fs::metadata(src.path().join("shared/mine.txt")).unwrap();
    assert_eq!(stored.mode() & 0o7777, 0o600);
    assert_eq!(stored.uid(), NOBODY);
    assert_eq!(stored.mtime(), 981_173_106, "2001-02-03 04:05:06 UTC");

    // Root does all of it.
    std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&mine, Some(0), Some(0)).unwrap();
    let stored = std::fs::metadata(src.path().join("shared/mine.txt")).unwrap();
    assert_eq!(
        (stored.mode() & 0o7777, stored.uid(), stored.gid()),
        (0o640, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn modes_and_owners_stored_with_s3_objects_are_enforced_for_other_users() {
    let s = common::moto();
    let bucket = s.new_bucket("mount-perms").await;
    // No metadata: the mount's defaults (0644, owned by the mounting root).
    s.put(&bucket, "plain.txt", b"plain\n").await;
    let client = s.client().await;
    let put = |key: &'static str, body: &'static str, mode: &'static str, owner: &'static str| {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .body(body.as_bytes().to_vec().into())
            .metadata("file-permissions", mode)
            .metadata("file-owner", owner)
            .metadata("file-group", "50")
            .send()
    };
    put("owned.txt", "owned\n", "0100600", "1000")
        .await
        .unwrap();
    put("group.txt", "group\n", "0100640", "1000")
        .await
        .unwrap();
    put("nobodys.txt", "nobody\n", "0100600", "65534")
        .await
        .unwrap();
    let m = mount(Some(&s), &s.url(&bucket, ""), &["--allow-other"]);
    m.reachable_by_others();

    let cat = |name: &str| as_nobody(&["cat", &p(&m.path(name))]);
    let out = cat("plain.txt");
    assert_eq!((out.status, out.stdout.as_str()), (0, "plain\n"), "{out:?}");
    let out = sh_as_nobody("echo x >> \"$1\"", &m.path("plain.txt"));
    assert_denied(
        &out,
        SH_REDIRECT_FAILED,
        "Permission denied",
        "append to an object without metadata (0644, root's)",
    );
    assert_denied(
        &cat("owned.txt"),
        1,
        "Permission denied",
        "a 0600 object of uid 1000",
    );
    assert_denied(
        &cat("group.txt"),
        1,
        "Permission denied",
        "0640, not in group 50",
    );
    let out = cat("nobodys.txt");
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "nobody\n"),
        "{out:?}"
    );
    let out = sh_as_nobody("echo again >> \"$1\"", &m.path("nobodys.txt"));
    assert_eq!(out.status, 0, "the owner appends: {out:?}");
    let out = as_nobody(&["chmod", "644", &p(&m.path("owned.txt"))]);
    assert_denied(
        &out,
        1,
        "Operation not permitted",
        "chmod of uid 1000's object",
    );

    // Root's chmod through the mount is stored, and then enforced.
    chmod(&m.path("plain.txt"), 0o600);
    assert_eq!(
        s.head_metadata(&bucket, "plain.txt").await["file-permissions"],
        "0100600"
    );
    assert_denied(&cat("plain.txt"), 1, "Permission denied", "after chmod 600");
    assert_eq!(s.get(&bucket, "nobodys.txt").await, b"nobody\nagain\n");
    assert_eq!(s.get(&bucket, "owned.txt").await, b"owned\n");
    let meta = s.head_metadata(&bucket, "owned.txt").await;
    assert_eq!(meta["file-permissions"], "0100600");
}

#[test]
fn allow_root_lets_root_in_and_no_other_user() {
    let (_src, m) = shared_local_mount(&["--allow-root"]);
    let shown = m.options_shown();
    assert!(shown.contains("default_permissions"), "{shown}");
    // The kernel knows only allow_other; the mount turns away other users.
    let out = as_nobody(&["cat", &p(&m.path("public.txt"))]);
    assert_denied(&out, 1, "Permission denied", "cat of a 0644 file as nobody");
    let out = as_nobody(&["ls", &p(&m.dir)]);
    assert_denied(&out, 2, "Permission denied", "ls of the mount as nobody");
    assert_eq!(
        std::fs::read_to_string(m.path("private.txt")).unwrap(),
        "secret\n"
    );
}

#[test]
fn without_allow_other_other_users_cannot_even_look() {
    let (_src, m) = shared_local_mount(&[]);
    let out = as_nobody(&["stat", &p(&m.path("public.txt"))]);
    assert_denied(&out, 1, "Permission denied", "stat as nobody");
}

#[test]
fn allow_other_with_allow_root_is_refused_naming_both() {
    let src = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = mount_cmd(
        None,
        &p(src.path()),
        &mnt,
        tmp.path(),
        &["--allow-other", "--allow-root", "--foreground"],
    )
    .output()
    .expect("syncmount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--allow-other") && stderr.contains("--allow-root"),
        "{stderr}"
    );
    assert!(!common::mount::is_mounted(&mnt));
}
