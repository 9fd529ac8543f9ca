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
