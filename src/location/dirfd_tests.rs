//! Unit tests of the resolver, for both ways of resolving: `..`, absolute
//! paths, a link at each component and a magic link are refused; the
//! primitives never follow a link at the last name either.

use super::*;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

const BOTH: [Resolver; 2] = [Resolver::Openat2, Resolver::Walk];

fn tree() -> (tempfile::TempDir, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("a/b/c")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(outside.path().join("b/c")).unwrap();
    (root, outside)
}

fn open(root: &Path, how: Resolver) -> Root {
    Root::open(root, how).unwrap()
}

#[test]
fn plain_directories_resolve_both_ways() {
    let (root, _outside) = tree();
    for how in BOTH {
        let r = open(root.path(), how);
        let fd = r.dir(Path::new("a/b/c")).unwrap();
        assert!(stat_fd(fd.as_fd()).unwrap().is_dir(), "{how:?}");
        r.dir(Path::new("")).unwrap();
        let missing = r.dir(Path::new("a/x")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound, "{how:?}");
    }
    // This kernel has openat2: the first way really was it.
    assert!(!OPENAT2_MISSING.load(Ordering::Relaxed));
}

#[test]
fn dot_dot_and_absolute_paths_are_refused_both_ways() {
    let (root, _outside) = tree();
    for how in BOTH {
        let r = open(root.path(), how);
        for bad in ["..", "a/../..", "a/..", "/etc", "./a"] {
            let e = r.dir(Path::new(bad)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{how:?} {bad}: {e}");
        }
    }
}

#[test]
fn the_kernel_itself_refuses_escapes_and_links_under_openat2() {
    let (root, outside) = tree();
    symlink(outside.path(), root.path().join("link")).unwrap();
    let r = open(root.path(), Resolver::Openat2);
    assert_eq!(r.openat2(Path::new("a/../..")).unwrap_err(), Errno::XDEV);
    assert_eq!(r.openat2(Path::new("/etc")).unwrap_err(), Errno::XDEV);
    assert_eq!(r.openat2(Path::new("link/b")).unwrap_err(), Errno::LOOP);
}

#[test]
fn a_link_at_any_component_is_refused_and_named_both_ways() {
    for how in BOTH {
        for (i, component) in ["a", "a/b", "a/b/c"].iter().enumerate() {
            let (root, outside) = tree();
            let at = root.path().join(component);
            fs::remove_dir_all(&at).unwrap();
            // Points at a directory outside with the same shape below.
            let target = outside
                .path()
                .join(["", "b", "b/c"][i].trim_start_matches('/'));
            symlink(&target, &at).unwrap();
            let r = open(root.path(), how);
            let e = r.dir(Path::new("a/b/c")).unwrap_err();
            assert!(is_symlink_in_path(&e), "{how:?} {component}: {e}");
            assert!(e.to_string().contains(&format!("`{component}`")), "{e}");
            assert!(e.to_string().contains("where a directory was expected"));
            let e = r.make_dirs(Path::new("a/b/c/d")).unwrap_err();
            assert!(is_symlink_in_path(&e), "{how:?} {component}: {e}");
            assert!(!outside.path().join("b/c/d").exists());
            assert!(!outside.path().join("c/d").exists());
        }
    }
}

#[test]
fn a_magic_link_is_refused_both_ways() {
    for how in BOTH {
        let r = open(Path::new("/proc/self"), how);
        for magic in ["root", "root/etc", "cwd"] {
            let e = r.dir(Path::new(magic)).unwrap_err();
            assert!(is_symlink_in_path(&e), "{how:?} {magic}: {e}");
        }
    }
}

#[test]
fn make_dirs_creates_what_is_missing_and_a_file_in_the_way_is_not_a_directory() {
    let (root, _outside) = tree();
    fs::write(root.path().join("a/file"), b"x").unwrap();
    for how in BOTH {
        let r = open(root.path(), how);
        let sub = format!("{how:?}/x/y");
        r.make_dirs(Path::new(&sub)).unwrap();
        assert!(root.path().join(&sub).is_dir());
        let e = r.make_dirs(Path::new("a/file/z")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
    }
}

#[test]
fn the_last_name_is_never_followed() {
    let (root, outside) = tree();
    let secret = outside.path().join("secret");
    fs::write(&secret, b"secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    symlink(&secret, root.path().join("a/l")).unwrap();
    let r = open(root.path(), Resolver::Openat2);
    let dir = r.dir(Path::new("a")).unwrap();
    let l = OsStr::new("l");
    // A temp name taken by a link: EEXIST, nothing created through it.
    let e = create_temp(dir.as_fd(), l).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    let e = open_regular(dir.as_fd(), l).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
    let meta = PosixMeta {
        mtime_ns: Some(1_000_000_000),
        ..Default::default()
    };
    apply_meta_at(dir.as_fd(), l, Some(0o777), &meta).unwrap();
    unlink_in(dir.as_fd(), l, false).unwrap();
    let m = fs::metadata(&secret).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    assert_ne!(
        m.modified().unwrap(),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1)
    );
    assert_eq!(fs::read(&secret).unwrap(), b"secret");
}

#[test]
fn a_fifo_is_not_opened_as_a_regular_file() {
    let (root, _outside) = tree();
    let r = open(root.path(), Resolver::Walk);
    let dir = r.dir(Path::new("a")).unwrap();
    rfs::mknodat(
        &dir,
        "fifo",
        rfs::FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let e = open_regular(dir.as_fd(), OsStr::new("fifo")).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}
