//! Creating a name through a mount that another client made within the
//! metadata TTL (the mount saw it absent): `open(O_CREAT|O_EXCL)` asks the
//! store and is EEXIST; a plain create uploads only while the name is
//! free, and replaces what is there only for a user who may write it.

mod common;

use std::fs::OpenOptions;
use std::io::Write;

use common::mount::{as_nobody, mount};

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

#[tokio::test(flavor = "multi_thread")]
async fn a_create_meeting_another_clients_object_replaces_it_only_for_a_user_who_may_write_it() {
    common::require_root("running as nobody");
    let s = common::moto();
    let bucket = s.new_bucket("mount-create-race").await;
    s.put(&bucket, "seed", b"seed").await;
    // A sticky, world-writable root: nobody may create names in it.
    let m = mount(
        Some(&s),
        &s.url(&bucket, ""),
        &[
            "--metadata-ttl",
            "60s",
            "--allow-other",
            "--dir-mode",
            "1777",
        ],
    );
    m.reachable_by_others();
    for name in ["roots", "open"] {
        assert!(!m.path(name).exists(), "{name} before anyone made it");
    }
    let client = s.client().await;
    for (key, mode) in [("roots", "0100600"), ("open", "0100666")] {
        client
            .put_object()
            .bucket(&bucket)
            .key(key)
            .metadata("file-permissions", mode)
            .metadata("file-owner", "0")
            .body(aws_sdk_s3::primitives::ByteStream::from_static(b"root's"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }
    let write_as_nobody = |name: &str| {
        let path = m.path(name).to_string_lossy().into_owned();
        let script = "import sys\nf = open(sys.argv[1], 'w')\nf.write('mine')\nf.close()";
        as_nobody(&["python3", "-c", script, &path])
    };
    let out = write_as_nobody("roots");
    assert!(
        out.status != 0 && out.stderr.contains("Permission denied"),
        "{out:?}"
    );
    assert_eq!(s.get(&bucket, "roots").await, b"root's");
    let out = write_as_nobody("open");
    assert_eq!(out.status, 0, "{out:?}");
    assert_eq!(s.get(&bucket, "open").await, b"mine");
    assert_eq!(m.unmount(), Some(0));
}
