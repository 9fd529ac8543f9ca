//! Unit tests of the local location: listing order, atomic writes with
//! their metadata, leftovers, and nothing ever written through a link.
use super::*;
use futures::stream::TryStreamExt;
use std::os::unix::fs::MetadataExt;

async fn collect_keys(loc: &dyn Location) -> Result<Vec<String>> {
    loc.list().map_ok(|e| e.key).try_collect().await
}
use crate::location::meta::system_time_to_ns;

fn touch(root: &Path, rel: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, rel.as_bytes()).unwrap();
}

#[tokio::test]
async fn listing_is_in_s3_byte_order_with_directories_as_name_slash() {
    let d = tempfile::tempdir().unwrap();
    for f in ["a-b", "a/b", "a.b", "a0", "b c", "é", "a/a/x", "z"] {
        touch(d.path(), f);
    }
    fs::create_dir(d.path().join("empty")).unwrap();
    let loc = LocalLocation::new(d.path()).unwrap();
    let keys = collect_keys(&loc).await.unwrap();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(
        keys,
        vec!["a-b", "a.b", "a/a/x", "a/b", "a0", "b c", "empty/", "z", "é"]
    );
}

#[tokio::test]
async fn write_is_atomic_and_keeps_metadata() {
    let d = tempfile::tempdir().unwrap();
    let loc = LocalLocation::new(d.path()).unwrap();
    let meta = PosixMeta {
        mtime_ns: Some(1_600_000_000_000_000_000),
        mode: Some(0o100600),
        uid: None,
        gid: None,
        rdev: None,
        ctime_ns: None,
    };
    let body = Bytes::from(vec![7u8; 20 * 1024 * 1024 + 3]);
    let out = loc
        .write(
            "x/y.bin",
            Arc::new(super::super::MemorySource(body.clone())),
            &meta,
            WriteMode::Replace,
        )
        .await
        .unwrap();
    assert_eq!(out.crc32c, Some(crc32c::crc32c(&body)));
    let m = fs::metadata(d.path().join("x/y.bin")).unwrap();
    assert_eq!(m.len(), body.len() as u64);
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!(
        system_time_to_ns(m.modified().unwrap()),
        1_600_000_000_000_000_000
    );
    assert_eq!(collect_keys(&loc).await.unwrap(), vec!["x/y.bin"]);
}

#[tokio::test]
async fn a_source_with_a_wrong_checksum_leaves_nothing() {
    struct Lying;
    #[async_trait]
    impl ByteSource for Lying {
        fn len(&self) -> u64 {
            3
        }
        async fn read_range(&self, _r: Range<u64>) -> Result<Bytes> {
            Ok(Bytes::from_static(b"abc"))
        }
        fn known_crc32c(&self) -> Option<u32> {
            Some(1)
        }
    }
    let d = tempfile::tempdir().unwrap();
    let loc = LocalLocation::new(d.path()).unwrap();
    let err = loc
        .write(
            "f",
            Arc::new(Lying),
            &PosixMeta::default(),
            WriteMode::Replace,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LocationError::ChecksumMismatch { .. }),
        "{err}"
    );
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn dead_writers_temp_files_are_found_and_removed() {
    let d = tempfile::tempdir().unwrap();
    // pid 0 is never a live writer.
    fs::write(d.path().join(".syncmount-999999999-00.tmp"), b"partial").unwrap();
    touch(d.path(), "keep");
    let loc = LocalLocation::new(d.path()).unwrap();
    assert_eq!(collect_keys(&loc).await.unwrap(), vec!["keep"]);
    assert_eq!(loc.clean_leftovers().await.unwrap(), 1);
    assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn a_symlinked_directory_in_the_destination_is_never_written_through() {
    let outside = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), d.path().join("link")).unwrap();
    let loc = LocalLocation::new(d.path()).unwrap();
    let src = Arc::new(super::super::MemorySource(Bytes::from_static(b"x")));
    let err = loc
        .write("link/f", src, &PosixMeta::default(), WriteMode::Replace)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn create_new_refuses_to_replace() {
    let d = tempfile::tempdir().unwrap();
    touch(d.path(), "f");
    let loc = LocalLocation::new(d.path()).unwrap();
    let src = Arc::new(super::super::MemorySource(Bytes::from_static(b"new")));
    assert!(loc
        .write("f", src, &PosixMeta::default(), WriteMode::CreateNew)
        .await
        .is_err());
    assert_eq!(fs::read(d.path().join("f")).unwrap(), b"f");
}

/// Swaps `a` and `b` with renameat2(RENAME_EXCHANGE) until `stop`, at most
/// `max` times; returns how many swaps it made.
fn swap_until(
    a: PathBuf,
    b: PathBuf,
    stop: Arc<std::sync::atomic::AtomicBool>,
    max: u64,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0;
        while n < max && !stop.load(std::sync::atomic::Ordering::Relaxed) {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &a,
                rustix::fs::CWD,
                &b,
                rustix::fs::RenameFlags::EXCHANGE,
            )
            .unwrap();
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_swapped_for_a_link_mid_run_is_never_followed_by_either_resolver() {
    for how in [Resolver::Openat2, Resolver::Walk] {
        let outside = tempfile::tempdir().unwrap();
        touch(outside.path(), "victim");
        let victim_mode = fs::metadata(outside.path().join("victim")).unwrap().mode() & 0o777;
        let d = tempfile::tempdir().unwrap();
        touch(d.path(), "d/own");
        std::os::unix::fs::symlink(outside.path(), d.path().join("swap")).unwrap();
        let loc = LocalLocation::with_resolver(d.path(), how).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swaps = swap_until(
            d.path().join("d"),
            d.path().join("swap"),
            stop.clone(),
            10_000_000,
        );
        for i in 0..200 {
            let key = format!("d/f{i}");
            let src = Arc::new(super::super::MemorySource(Bytes::from(vec![1u8; 1000])));
            let _ = loc
                .write(&key, src, &PosixMeta::default(), WriteMode::Replace)
                .await;
            let _ = loc.read_range("d/victim", 0..6, None).await.map(|b| {
                assert_ne!(&b[..], b"victim", "{how:?} read through the link");
            });
            let _ = loc.stat("d/victim").await.map(|s| assert!(s.is_none()));
            let _ = loc.delete("d/victim").await;
            let _ = loc
                .make_dir(&format!("d/m{i}/"), &PosixMeta::default())
                .await;
            let private = PosixMeta {
                mode: Some(0o100600),
                ..Default::default()
            };
            let _ = loc.set_meta("d/victim", &private).await;
        }
        let _: Vec<_> = loc.list().collect().await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(swaps.join().unwrap() > 0);
        let names: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["victim"], "{how:?}");
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"victim");
        let mode = fs::metadata(outside.path().join("victim")).unwrap().mode();
        assert_eq!(mode & 0o777, victim_mode, "{how:?}");
    }
}

#[tokio::test]
async fn both_resolvers_write_list_and_prune_alike() {
    for how in [Resolver::Openat2, Resolver::Walk] {
        let d = tempfile::tempdir().unwrap();
        let loc = LocalLocation::with_resolver(d.path().join("made"), how).unwrap();
        let src = Arc::new(super::super::MemorySource(Bytes::from_static(b"x")));
        loc.write("a/b/c", src, &PosixMeta::default(), WriteMode::Replace)
            .await
            .unwrap();
        assert_eq!(collect_keys(&loc).await.unwrap(), vec!["a/b/c"], "{how:?}");
        assert_eq!(loc.read_range("a/b/c", 0..1, None).await.unwrap(), "x");
        loc.delete("a/b/c").await.unwrap();
        assert_eq!(fs::read_dir(d.path().join("made")).unwrap().count(), 0);
    }
}
