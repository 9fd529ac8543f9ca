//! The mount harness itself: a location mounts, shows its keys, and unmounts
//! cleanly both ways (fusermount3 -u and SIGTERM).

mod common;

use common::mount::{is_mounted, mount};

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_mounts_shows_its_keys_and_unmounts_with_fusermount() {
    let s = common::s3s();
    let bucket = s.new_bucket("mount-smoke").await;
    s.put(&bucket, "p/hello.txt", b"hello").await;
    let m = mount(Some(&s), &s.url(&bucket, "p"), &[]);
    assert_eq!(std::fs::read(m.path("hello.txt")).unwrap(), b"hello");
    let dir = m.dir.clone();
    assert_eq!(m.unmount(), Some(0));
    assert!(!is_mounted(&dir));
}

#[test]
fn sigterm_unmounts_a_local_location_and_exits_zero() {
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), b"x").unwrap();
    let mut m = mount(None, &src.path().to_string_lossy(), &[]);
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"x");
    assert_eq!(m.stop_with(libc::SIGTERM), Some(0));
    assert!(!is_mounted(&m.dir), "{}", m.log_text());
}
