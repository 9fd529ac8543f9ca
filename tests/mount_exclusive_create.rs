//! `open(O_CREAT|O_EXCL)` through a mount asks the store, not only the
//! metadata cache: a name the mount saw absent and another client then
//! created, within the metadata TTL, is EEXIST and its object stays as that client wrote it.

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::mount::mount;

#[tokio::test(flavor = "multi_thread")]
async fn an_exclusive_create_of_a_name_another_client_just_made_is_eexist() {
    let s = common::moto();
    let bucket = s.new_bucket("mount-excl").await;
    s.put(&bucket, "p/seed", b"seed").await;
    // A long TTL: the listing below is what the mount believes for a minute.
    let m = mount(Some(&s), &s.url(&bucket, "p"), &["--metadata-ttl", "60s"]);
    let names: Vec<String> = std::fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["seed"]);
    assert!(!m.path("x").exists(), "x before anyone made it");

    s.put(&bucket, "p/x", b"theirs").await;
    let err = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("x"))
        .map(|mut f| f.write_all(b"mine"))
        .expect_err("an exclusive create of an existing object succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    assert_eq!(s.get(&bucket, "p/x").await, b"theirs");

    // A name that is free is still created.
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.path("y"))
        .expect("an exclusive create of a free name");
    f.write_all(b"mine").unwrap();
    drop(f);
    assert_eq!(s.get(&bucket, "p/y").await, b"mine");
    assert_eq!(m.unmount(), Some(0));
}
