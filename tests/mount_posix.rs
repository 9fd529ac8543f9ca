//! Issue 11's POSIX details through a real mount: times (nanoseconds,
//! UTIME_NOW and UTIME_OMIT, mtime and ctime moved by writes, ctime by
//! metadata changes and kept), and the edge cases of names, opens, renames
//! and removals that ordinary programs rely on.

mod common;

use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::mount::mount;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// utimensat(AT_FDCWD, path, [atime, mtime], 0): 0 or the errno.
fn utimensat(path: &Path, atime: libc::timespec, mtime: libc::timespec) -> i32 {
    let times = [atime, mtime];
    // SAFETY: a valid C string and a two-element array, as utimensat wants.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(path).as_ptr(), times.as_ptr(), 0) };
    if r == 0 {
        0
    } else {
        errno()
    }
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn special(nsec: i64) -> libc::timespec {
    ts(0, nsec)
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Where a test's mount points: a bucket prefix on moto or s3s-fs, or a
/// local directory; and how to read what it stored there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Moto,
    S3s,
    Local,
}

struct Store {
    server: Option<common::S3Server>,
    bucket: String,
    dir: tempfile::TempDir,
}

impl Store {
    async fn new(kind: Kind, tag: &str) -> Store {
        let server = match kind {
            Kind::Moto => Some(common::moto()),
            Kind::S3s => Some(common::s3s()),
            Kind::Local => None,
        };
        let bucket = match &server {
            Some(s) => s.new_bucket(tag).await,
            None => String::new(),
        };
        Store {
            server,
            bucket,
            dir: common::tempdir(),
        }
    }

    fn location(&self) -> String {
        match &self.server {
            Some(s) => s.url(&self.bucket, "p"),
            None => self.dir.path().display().to_string(),
        }
    }

    fn mount(&self) -> common::mount::Mount {
        mount(self.server.as_ref(), &self.location(), &[])
    }

    /// What the store holds at `rel` (None: nothing).
    async fn get(&self, rel: &str) -> Option<Vec<u8>> {
        match &self.server {
            Some(s) if s.exists(&self.bucket, &format!("p/{rel}")).await => {
                Some(s.get_unvalidated(&self.bucket, &format!("p/{rel}")).await)
            }
            Some(_) => None,
            None => std::fs::read(self.dir.path().join(rel)).ok(),
        }
    }
}

async fn utimensat_case(kind: Kind) {
    let st = Store::new(kind, "posix-times").await;
    let m = st.mount();
    let f = m.path("f");
    std::fs::write(&f, b"times").unwrap();

    assert_eq!(
        utimensat(&f, ts(1_500_000_000, 1), ts(1_600_000_000, 123_456_789)),
        0
    );
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));

    // UTIME_OMIT keeps the mtime while the atime is set.
    assert_eq!(
        utimensat(&f, ts(1_700_000_000, 0), special(libc::UTIME_OMIT)),
        0
    );
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!(m.unmount(), Some(0));

    // Stored: a fresh mount shows the same nanoseconds.
    let m = st.mount();
    let f = m.path("f");
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));

    // UTIME_NOW takes the clock.
    let before = now_s();
    assert_eq!(
        utimensat(&f, special(libc::UTIME_OMIT), special(libc::UTIME_NOW)),
        0
    );
    let after = now_s();
    let md = std::fs::metadata(&f).unwrap();
    assert!(
        (before..=after).contains(&md.mtime()),
        "UTIME_NOW gave {} outside [{before}, {after}]",
        md.mtime()
    );
    assert_eq!(m.unmount(), Some(0));
}

fn ctime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

async fn times_case(kind: Kind) {
    let st = Store::new(kind, "posix-ctime").await;
    let m = st.mount();
    let f = m.path("f");
    std::fs::write(&f, b"one").unwrap();
    let c0 = ctime_ns(&std::fs::metadata(&f).unwrap());

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c1 = ctime_ns(&std::fs::metadata(&f).unwrap());
    assert!(c1 > c0, "chmod moves ctime: {c0} -> {c1}");
    // Setting the mtime is a metadata change too; the mtime is what was set.
    assert_eq!(utimensat(&f, ts(1, 0), ts(1_000_000_000, 5)), 0);
    let md = std::fs::metadata(&f).unwrap();
    let c2 = ctime_ns(&md);
    assert!(c2 > c1, "utimensat moves ctime: {c1} -> {c2}");
    assert_eq!(mtime_ns(&md), 1_000_000_000_000_000_005);

    // Appending to the closed file: both move, to the same instant.
    let before = now_s();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .unwrap()
        .write_all(b" two")
        .unwrap();
    let md = std::fs::metadata(&f).unwrap();
    let c3 = ctime_ns(&md);
    assert!(c3 > c2, "a write moves ctime: {c2} -> {c3}");
    assert!(md.mtime() >= before, "a write moves mtime: {}", md.mtime());
    assert_eq!(mtime_ns(&md), c3);
    assert_eq!(m.unmount(), Some(0));

    let m = st.mount();
    let md = std::fs::metadata(m.path("f")).unwrap();
    assert_eq!(ctime_ns(&md), c3, "the stored ctime");
    assert_eq!(mtime_ns(&md), c3, "the stored mtime");
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"one two");
    assert_eq!(m.unmount(), Some(0));
}

async fn edges_case(kind: Kind) {
    let st = Store::new(kind, "posix-edges").await;
    let m = st.mount();

    // A name of exactly 255 bytes works end to end; 256 is ENAMETOOLONG.
    let longest = "n".repeat(255);
    std::fs::write(m.path(&longest), b"long").unwrap();
    assert_eq!(std::fs::read(m.path(&longest)).unwrap(), b"long");
    let names: Vec<String> = std::fs::read_dir(&m.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&longest), "{names:?}");
    assert_eq!(st.get(&longest).await.as_deref(), Some(&b"long"[..]));
    let err = std::fs::write(m.path(&"n".repeat(256)), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));

    // O_EXCL on an existing name.
    std::fs::write(m.path("x"), b"exists").unwrap();
    let err = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("x"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    assert_eq!(std::fs::read(m.path("x")).unwrap(), b"exists");

    // O_TRUNC empties at open; the store has the new content after close.
    let mut t = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("x"))
        .unwrap();
    assert_eq!(std::fs::metadata(m.path("x")).unwrap().len(), 0);
    t.write_all(b"new").unwrap();
    drop(t);
    assert_eq!(st.get("x").await.as_deref(), Some(&b"new"[..]));

    // O_APPEND writes at the end whatever the offset.
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("x"))
        .unwrap();
    a.seek(SeekFrom::Start(0)).unwrap();
    a.write_all(b"+end").unwrap();
    drop(a);
    assert_eq!(st.get("x").await.as_deref(), Some(&b"new+end"[..]));

    // A directory into itself, and rmdir of `.`: EINVAL.
    std::fs::create_dir_all(m.path("d/sub")).unwrap();
    let err = std::fs::rename(m.path("d"), m.path("d/sub/d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    let err = std::fs::remove_dir(m.path("d/.")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    // Over an empty directory a directory is replaced.
    std::fs::create_dir(m.path("empty")).unwrap();
    std::fs::rename(m.path("d"), m.path("empty")).unwrap();
    assert!(m.path("empty/sub").is_dir() && !m.path("d").exists());

    // An unlinked open file stays readable and writable until its last
    // close, and never comes back.
    std::fs::write(m.path("gone"), b"before").unwrap();
    let mut g = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("gone"))
        .unwrap();
    std::fs::remove_file(m.path("gone")).unwrap();
    assert!(!m.path("gone").exists());
    g.seek(SeekFrom::End(0)).unwrap();
    g.write_all(b" and after").unwrap();
    g.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    g.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before and after");
    drop(g);
    assert!(!m.path("gone").exists());
    assert_eq!(st.get("gone").await, None, "an unlinked file was stored");
    assert_eq!(m.unmount(), Some(0));
}

// One test per case and kind of location (the counts in SEMANTICS.md).

#[tokio::test(flavor = "multi_thread")]
async fn utimensat_keeps_nanoseconds_and_honours_utime_now_and_utime_omit() {
    utimensat_case(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn utimensat_keeps_nanoseconds_and_utime_now_and_omit_on_s3s_fs() {
    utimensat_case(Kind::S3s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn utimensat_keeps_nanoseconds_and_utime_now_and_omit_on_a_local_location() {
    utimensat_case(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_move_mtime_and_ctime_metadata_changes_move_ctime_and_a_remount_keeps_them() {
    times_case(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mtime_and_ctime_move_and_are_kept_on_s3s_fs() {
    times_case(Kind::S3s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_opens_renames_and_removals_behave_as_on_a_local_disk() {
    edges_case(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_opens_renames_and_removals_on_s3s_fs() {
    edges_case(Kind::S3s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_opens_renames_and_removals_on_a_local_location() {
    edges_case(Kind::Local).await;
}

// The times case is not run on a local location: there the files' own
// ctime shows, which the kernel stamps with its coarse clock (it can read
// earlier than the time a write through the mount took), and stat right
// after a write can still show the ctime from before it (SEMANTICS.md).
