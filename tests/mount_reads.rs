//! Reading through real mounts: many readers of one large object, directory
//! listings past one page, the attributes `sync` stored, what another
//! client's update looks like (after the TTL; never mixed bytes in a file
//! opened before it), and unmounting with files open.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use futures::StreamExt;

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::mount::{is_mounted, mount, sh};
use common::{at, path_str, random_bytes, set_mtime, sync_ok, write_files, S3Server};

const MIB: usize = 1024 * 1024;

/// Puts `count` small objects `{prefix}obj-NNNNN` concurrently.
async fn put_many(server: &S3Server, bucket: &str, prefix: &str, count: usize) -> BTreeSet<String> {
    let client = server.client().await;
    let names: BTreeSet<String> = (0..count).map(|i| format!("obj-{i:05}")).collect();
    futures::stream::iter(names.iter().map(|name| {
        let client = client.clone();
        let key = format!("{prefix}{name}");
        async move {
            client
                .put_object()
                .bucket(bucket)
                .key(&key)
                .body(ByteStream::from(key.clone().into_bytes()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("PutObject {key}: {e:?}"));
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<()>>()
    .await;
    names
}

/// Names listed in `dir` by `ls -f`, `find`, python's os.listdir and
/// read_dir: each must be exactly `want`, with no name twice.
fn assert_lists_completely(dir: &Path, want: &BTreeSet<String>) {
    let d = dir.display();
    let listings = [
        (
            "ls -f",
            sh(&format!("ls -f '{d}' | grep -v -x -F -e . -e ..")),
        ),
        (
            "find",
            sh(&format!(
                "find '{d}' -mindepth 1 -maxdepth 1 -printf '%f\\n'"
            )),
        ),
        (
            "os.listdir",
            sh(&format!(
                "python3 -c 'import os, sys; print(\"\\n\".join(os.listdir(sys.argv[1])))' '{d}'"
            )),
        ),
        ("ls -l", {
            let out = sh(&format!("ls -l '{d}'"));
            out.lines()
                .filter(|l| l.starts_with('-') || l.starts_with('d'))
                .map(|l| l.split_whitespace().last().unwrap_or_default().to_string() + "\n")
                .collect()
        }),
    ];
    for (tool, text) in listings {
        let names: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        let unique: BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names.len(),
            unique.len(),
            "{tool}: {} names listed, {} distinct",
            names.len(),
            unique.len()
        );
        let missing: Vec<_> = want.difference(&unique).take(5).collect();
        let extra: Vec<_> = unique.difference(want).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{tool}: {} listed of {}; missing {missing:?}…, extra {extra:?}…",
            unique.len(),
            want.len()
        );
    }
    let read: Vec<String> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(read.len(), want.len(), "read_dir: count");
    assert_eq!(read.into_iter().collect::<BTreeSet<_>>(), *want, "read_dir");
}

/// Reads `dir` with opendir/readdir, remembers the position after entry
/// `at` (telldir), reads on to the end, then seeks back (seekdir) and reads
/// again, and rewinds (rewinddir) and reads everything: offsets handed out
/// on one page must still mean the same entry after later pages were read.
fn assert_seekdir_resumes(dir: &Path, at: usize, want: &BTreeSet<String>) {
    fn read_rest(d: *mut libc::DIR) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            // SAFETY: `d` is an open directory stream.
            let ent = unsafe { libc::readdir(d) };
            if ent.is_null() {
                return names;
            }
            // SAFETY: readdir returned a valid entry with a NUL-terminated name.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
            let name = name.to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    assert!(!d.is_null(), "opendir {}", dir.display());
    let mut first = Vec::new();
    let mut pos = None;
    loop {
        // SAFETY: `d` is an open directory stream.
        let ent = unsafe { libc::readdir(d) };
        if ent.is_null() {
            break;
        }
        // SAFETY: as above.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let name = name.to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        first.push(name);
        if first.len() == at {
            // SAFETY: `d` is an open directory stream.
            pos = Some(unsafe { libc::telldir(d) });
        }
    }
    let pos = pos.expect("the directory has fewer entries than `at`");
    let after = first[at..].to_vec();
    // SAFETY: `pos` came from telldir on this stream.
    unsafe { libc::seekdir(d, pos) };
    let again = read_rest(d);
    // SAFETY: `d` is an open directory stream.
    unsafe { libc::rewinddir(d) };
    let all = read_rest(d);
    // SAFETY: closes the stream opened above.
    unsafe { libc::closedir(d) };
    assert_eq!(first.len(), want.len(), "first pass");
    assert!(
        again == after,
        "after seekdir: {} entries, {} expected (first differs at {:?})",
        again.len(),
        after.len(),
        again.iter().zip(&after).position(|(a, b)| a != b)
    );
    assert_eq!(all.len(), want.len(), "after rewinddir: count");
    assert_eq!(
        all.into_iter().collect::<BTreeSet<_>>(),
        *want,
        "after rewinddir"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_of_2500_objects_on_s3s_fs_lists_every_name_once() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-readdir").await;
    // More than two ListObjectsV2 pages of 1,000.
    let want = put_many(&server, &bucket, "p/big/", 2500).await;
    server.put(&bucket, "p/other", b"x").await;
    // A long TTL keeps the attributes (a HEAD each) between the listings;
    // the listings themselves are never cached.
    let m = mount(
        Some(&server),
        &server.url(&bucket, "p"),
        &["--metadata-ttl", "60s"],
    );
    assert_lists_completely(&m.path("big"), &want);
    assert_seekdir_resumes(&m.path("big"), 1500, &want);
    assert_eq!(m.unmount(), Some(0));
}

#[test]
fn a_local_directory_of_3000_files_lists_every_name_once() {
    let store = common::tempdir();
    let dir = store.path().join("big");
    std::fs::create_dir(&dir).unwrap();
    // The local location lists 1,000 entries a page.
    let want: BTreeSet<String> = (0..3000).map(|i| format!("obj-{i:05}")).collect();
    for name in &want {
        std::fs::write(dir.join(name), name.as_bytes()).unwrap();
    }
    let m = mount(None, &path_str(store.path()), &[]);
    assert_lists_completely(&m.path("big"), &want);
    assert_seekdir_resumes(&m.path("big"), 1700, &want);
    assert_eq!(m.unmount(), Some(0));
}

/// The expected bytes at `offset..offset + len` compared with what was
/// read, reporting the first differing offset.
fn check_range(want: &[u8], got: &[u8], offset: usize, who: &str) {
    if want[offset..offset + got.len()] != *got {
        let first = got
            .iter()
            .zip(&want[offset..])
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{who}: wrong bytes at offset {} (read of {} at {offset})",
            offset + first,
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_readers_of_a_100_mib_object_on_s3s_fs_get_the_right_bytes() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-readers").await;
    let body = Arc::new(random_bytes(100 * MIB));
    server.put(&bucket, "p/big.bin", &body).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let m = mount(Some(&via), &server.url(&bucket, "p"), &[]);
    let path = m.path("big.bin");
    let started = Instant::now();
    let readers: Vec<_> = (0..8)
        .map(|n| {
            let (path, body) = (path.clone(), body.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::File::open(&path).expect("open");
                if n % 2 == 0 {
                    // Sequential, in odd-sized reads, to the end.
                    let mut buf = vec![0u8; 300 * 1024 + n];
                    let mut off = 0;
                    loop {
                        let k = f.read(&mut buf).expect("sequential read");
                        if k == 0 {
                            break;
                        }
                        check_range(&body, &buf[..k], off, &format!("sequential reader {n}"));
                        off += k;
                    }
                    assert_eq!(off, body.len(), "sequential reader {n}: length");
                } else {
                    // Random offsets and lengths, some across block edges.
                    for _ in 0..150 {
                        let len = 1 + rand::random_range(0..256 * 1024);
                        let off = rand::random_range(0..body.len() - len);
                        let mut buf = vec![0u8; len];
                        f.read_exact_at(&mut buf, off as u64).expect("random read");
                        check_range(&body, &buf, off, &format!("random reader {n}"));
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().expect("a reader failed");
    }
    println!("8 readers done in {:?}", started.elapsed());
    // Readers of one block share its GET (a block in flight is waited for,
    // never asked for again), and the cache (512 MiB) keeps every block: the
    // block GETs (read-ahead asks for runs of up to 8 blocks in one) cover
    // the object exactly once. The random readers' reads (at most 256 KiB,
    // never a scan) are small GETs of their own: at most one per FUSE
    // request (128 KiB), each at most the read widened to 64 KiB on both
    // sides.
    let ranges = proxy.counters.get_ranges("/p/big.bin", body.len() as u64);
    let mut big: Vec<_> = ranges
        .iter()
        .filter(|r| r.end - r.start >= MIB as u64)
        .cloned()
        .collect();
    big.sort_by_key(|r| r.start);
    let mut covered = 0;
    for r in &big {
        assert_eq!(
            r.start, covered,
            "block GETs overlap or leave a gap: {big:?}"
        );
        covered = r.end;
    }
    assert_eq!(
        covered,
        body.len() as u64,
        "the block GETs cover the object"
    );
    assert!(big.len() <= 100, "{} block GETs", big.len());
    let small: Vec<_> = ranges
        .iter()
        .filter(|r| r.end - r.start < MIB as u64)
        .collect();
    assert!(
        small.len() <= 4 * 150 * 3,
        "{} small GETs for 600 random reads",
        small.len()
    );
    assert!(
        small
            .iter()
            .all(|r| r.end - r.start <= 128 * 1024 + 2 * 64 * 1024),
        "a random read fetched more than its bytes widened to 64 KiB: {small:?}"
    );
    // And the shell's way: dd with skip lands on the right block.
    let out = sh(&format!(
        "dd if='{}' bs=4096 skip=12345 count=3 status=none | od -An -tx1 | tr -d ' \\n'",
        path.display()
    ));
    let want: String = body[12345 * 4096..12348 * 4096]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(out == want, "dd skip=12345 read the wrong bytes");
    assert_eq!(m.unmount(), Some(0));
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ls_l_in_a_mount_shows_the_mode_mtime_and_owner_that_sync_stored() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-attrs").await;
    let src = common::tempdir();
    let state = common::tempdir();
    let files = [
        ("private", 0o600, (1_600_000_000, 123_456_789), (1001, 2002)),
        ("tool.sh", 0o755, (1_500_000_000, 0), (0, 0)),
        ("read-only", 0o444, (1_234_567_890, 999_999_999), (4242, 77)),
        ("setgid", 0o2750, (1_700_000_000, 1), (65534, 65534)),
    ];
    let tree = src.path().join("t");
    for (name, mode, (s, ns), (uid, gid)) in files {
        let p = tree.join(name);
        write_files(&tree, &[(name, random_bytes(1000 + s as usize % 5000))]);
        set_mtime(&p, at(s, ns));
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
        chmod(&p, mode);
    }
    sync_ok(
        &server,
        state.path(),
        &[&path_str(&tree), &server.url(&bucket, "t")],
    );
    let m = mount(Some(&server), &server.url(&bucket, "t"), &[]);

    // `ls -ln` with full times (readdirplus) reads the same in both places.
    assert_eq!(
        ls_ln(&m.dir),
        ls_ln(&tree),
        "ls -ln of the mount vs of the source"
    );

    // stat (lookup + getattr) too.
    for (name, ..) in files {
        let a = std::fs::metadata(tree.join(name)).unwrap();
        let b = std::fs::metadata(m.path(name)).unwrap();
        let view = |x: &std::fs::Metadata| {
            (
                x.mode() & 0o7777,
                x.mtime(),
                x.mtime_nsec(),
                x.uid(),
                x.gid(),
                x.len(),
            )
        };
        assert_eq!(
            view(&b),
            view(&a),
            "{name}: (mode, mtime, ns, uid, gid, size) in the mount vs the source"
        );
    }
    assert_eq!(m.unmount(), Some(0));
}

/// `ls -ln` of `dir` with full times, without the "total" line.
fn ls_ln(dir: &Path) -> Vec<String> {
    sh(&format!("ls -ln --time-style=+%s.%N '{}'", dir.display()))
        .lines()
        .filter(|l| !l.starts_with("total"))
        .map(str::to_string)
        .collect()
}

/// Issue 12: the state directory remembers each object version's POSIX
/// metadata (by ETag and LastModified), so `ls -l` of a fresh mount sends
/// no HEAD for objects `sync` wrote there or an earlier mount looked at;
/// an object changed behind its back costs exactly one.
#[tokio::test(flavor = "multi_thread")]
async fn ls_l_of_a_fresh_mount_heads_only_objects_whose_metadata_the_state_dir_does_not_know() {
    // moto lists ETags (s3s-fs does not, so there every object costs its HEAD).
    let server = common::moto();
    let bucket = server.new_bucket("mount-known").await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let url = via.url(&bucket, "t");
    let src = common::tempdir();
    let tree = src.path().join("t");
    let n = 24;
    for i in 0..n {
        let name = format!("f{i:02}");
        write_files(&tree, &[(name.as_str(), random_bytes(100 + i))]);
        chmod(&tree.join(&name), [0o600, 0o640, 0o755, 0o444][i % 4]);
        set_mtime(
            &tree.join(&name),
            at(1_600_000_000 + i as u64 * 7, 123_000 * i as u32),
        );
    }
    let state = common::tempdir();
    sync_ok(&via, &state.path().join("state"), &[&path_str(&tree), &url]);
    let heads = || proxy.counters.count("HEAD", &[]);

    let before = heads();
    let m = common::mount::mount_in(Some(&via), &url, Some(state.path()), &[]);
    assert_eq!(
        ls_ln(&m.dir),
        ls_ln(&tree),
        "ls -ln of the mount vs the source"
    );
    assert_eq!(
        heads() - before,
        0,
        "HEADs for objects sync wrote: {:#?}",
        proxy.counters.log()
    );
    assert_eq!(m.unmount(), Some(0));

    // Rewritten behind syncmount's back (no POSIX metadata): one HEAD.
    server.put(&bucket, "t/f03", b"changed elsewhere").await;
    let before = heads();
    let m = common::mount::mount_in(Some(&via), &url, Some(state.path()), &[]);
    let shown = ls_ln(&m.dir);
    assert_eq!(heads() - before, 1, "one HEAD for the changed object");
    let f03 = shown
        .iter()
        .find(|l| l.ends_with(" f03"))
        .expect("f03 listed");
    assert!(
        f03.starts_with("-rw-r--r-- ") && f03.contains(" 17 "),
        "{f03}"
    );
    assert_eq!(shown.len(), n);
    assert_eq!(m.unmount(), Some(0));

    // A state directory that knows nothing: one HEAD per object, once.
    let fresh = common::tempdir();
    let before = heads();
    let m = common::mount::mount_in(Some(&via), &url, Some(fresh.path()), &[]);
    assert_eq!(ls_ln(&m.dir), shown);
    assert_eq!(heads() - before, n, "one HEAD per object");
    assert_eq!(m.unmount(), Some(0));
    let before = heads();
    let m = common::mount::mount_in(Some(&via), &url, Some(fresh.path()), &[]);
    assert_eq!(ls_ln(&m.dir), shown);
    assert_eq!(heads() - before, 0, "a second fresh mount remembers");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_through_the_s3_api_is_seen_through_the_mount_after_the_ttl() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-ttl").await;
    server.put(&bucket, "p/same-size", b"version one").await;
    server.put(&bucket, "p/grows", b"short").await;
    server.put(&bucket, "p/gone", b"soon deleted").await;
    let m = mount(
        Some(&server),
        &server.url(&bucket, "p"),
        &["--metadata-ttl", "1s"],
    );
    assert_eq!(std::fs::read(m.path("same-size")).unwrap(), b"version one");
    assert_eq!(std::fs::read(m.path("grows")).unwrap(), b"short");
    assert_eq!(std::fs::read(m.path("gone")).unwrap(), b"soon deleted");
    // A negative entry is cached for `new`, and the listing seen.
    assert!(!m.path("new").exists());
    assert_eq!(
        sh(&format!("ls '{}'", m.dir.display()))
            .lines()
            .collect::<Vec<_>>(),
        ["gone", "grows", "same-size"]
    );

    server.put(&bucket, "p/same-size", b"version two").await;
    server.put(&bucket, "p/grows", b"a good deal longer").await;
    server.put(&bucket, "p/new", b"new").await;
    server
        .client()
        .await
        .delete_object()
        .bucket(&bucket)
        .key("p/gone")
        .send()
        .await
        .expect("DeleteObject");
    std::thread::sleep(Duration::from_millis(1500));

    assert_eq!(std::fs::read(m.path("same-size")).unwrap(), b"version two");
    assert_eq!(std::fs::metadata(m.path("grows")).unwrap().len(), 18);
    assert_eq!(
        std::fs::read(m.path("grows")).unwrap(),
        b"a good deal longer"
    );
    assert_eq!(std::fs::read(m.path("new")).unwrap(), b"new");
    let gone = std::fs::read(m.path("gone")).unwrap_err();
    assert_eq!(gone.kind(), std::io::ErrorKind::NotFound, "{gone}");
    let listed = sh(&format!("ls '{}'", m.dir.display()));
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        ["grows", "new", "same-size"]
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_changed_elsewhere_and_opened_within_the_ttl_reads_whole_as_the_new_version() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-reopen").await;
    server.put(&bucket, "p/same", b"version one").await;
    server.put(&bucket, "p/grows", b"short").await;
    server
        .put(&bucket, "p/shrinks", b"rather long at first")
        .await;
    // A TTL far longer than the test: the kernel and the mount still hold
    // the old attributes when the files are opened.
    let m = mount(
        Some(&server),
        &server.url(&bucket, "p"),
        &["--metadata-ttl", "60s"],
    );
    let old: Vec<u64> = ["same", "grows", "shrinks"]
        .iter()
        .map(|n| std::fs::metadata(m.path(n)).unwrap().len())
        .collect();
    assert_eq!(old, [11, 5, 20]);
    server.put(&bucket, "p/same", b"version two").await;
    server.put(&bucket, "p/grows", b"a good deal longer").await;
    server.put(&bucket, "p/shrinks", b"brief").await;
    // Not EIO (a pin to the cached ETag), not cut at the cached size.
    assert_eq!(std::fs::read(m.path("same")).unwrap(), b"version two");
    assert_eq!(
        sh(&format!("cat '{}'", m.path("grows").display())),
        "a good deal longer"
    );
    assert_eq!(std::fs::read(m.path("shrinks")).unwrap(), b"brief");
    assert_eq!(m.unmount(), Some(0));
}

/// Opens a 16 MiB object, reads its first 4 KiB, replaces it through the S3
/// API and reads on: the open file is pinned to the old ETag (If-Match on
/// every ranged GET), so it returns old bytes and then EIO, never new ones.
async fn check_pinned_reader(server: &S3Server) {
    let bucket = server.new_bucket("mount-pinned").await;
    // 16 blocks of 1 MiB: the first read fetches a few, the rest come later.
    let old = random_bytes(16 * MIB);
    let new = random_bytes(16 * MIB);
    server.put(&bucket, "p/f", &old).await;
    let m = mount(
        Some(server),
        &server.url(&bucket, "p"),
        &["--metadata-ttl", "1s"],
    );
    let mut f = std::fs::File::open(m.path("f")).unwrap();
    let mut first = vec![0u8; 4096];
    f.read_exact(&mut first).unwrap();
    assert_eq!(first, old[..4096], "the first block");
    server.put(&bucket, "p/f", &new).await;

    let mut got = first;
    let mut buf = vec![0u8; 64 * 1024];
    let err = loop {
        match f.read(&mut buf) {
            Ok(0) => break None,
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => break Some(e),
        }
    };
    let kind = server.kind;
    check_range(
        &old,
        &got,
        0,
        &format!("{kind:?}: the reader pinned to the old version"),
    );
    let err = err.unwrap_or_else(|| {
        panic!(
            "{kind:?}: read all {} bytes of the old version after the object changed: the blocks not yet fetched must fail (If-Match)",
            got.len()
        )
    });
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{kind:?}: {err}");
    drop(f);

    // A new open after the TTL reads the new version whole.
    std::thread::sleep(Duration::from_millis(1500));
    let now = std::fs::read(m.path("f")).unwrap();
    assert!(
        now == new,
        "{kind:?}: the new version read after the TTL differs"
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_opened_before_an_update_on_moto_reads_old_bytes_then_eio_never_mixed_bytes() {
    check_pinned_reader(&common::moto()).await;
}

// s3s-fs 0.14.1 ignores If-Match on GetObject (it checks it on PutObject
// only): the pin holds there because the S3 location also compares the ETag
// each GET answered with.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_opened_before_an_update_on_s3s_fs_reads_old_bytes_then_eio_never_mixed_bytes() {
    check_pinned_reader(&common::s3s()).await;
}

/// Whether process `pid` has exited (gone, or a zombie waiting to be reaped).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // pid (comm) STATE …; comm may hold spaces, so read after the last ')'.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn wait_exited(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if exited(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    exited(pid)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lazy_unmount_with_a_file_open_keeps_it_readable_and_the_process_exits_after_close() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-lazy").await;
    let body = random_bytes(3 * MIB);
    server.put(&bucket, "p/f", &body).await;
    let mut m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    let mut f = std::fs::File::open(m.path("f")).unwrap();
    let mut head = vec![0u8; 1000];
    f.read_exact(&mut head).unwrap();
    sh(&format!("fusermount3 -u -z '{}'", m.dir.display()));
    assert!(!is_mounted(&m.dir), "still mounted after fusermount3 -u -z");
    // The open file still reads (the connection lives until it is closed).
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert!(
        head == body,
        "the open file read wrong bytes after the lazy unmount"
    );
    drop(f);
    assert!(
        wait_exited(m.pid(), Duration::from_secs(20)),
        "the mount process is still running 20 s after its last file closed:\n{}",
        m.log_text()
    );
    // Reap it (the signal goes to a process that has already exited).
    assert_eq!(m.stop_with(libc::SIGTERM), Some(0), "{}", m.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_files_open_for_reading_unmounts_and_the_process_exits() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-term").await;
    server.put(&bucket, "p/a", &random_bytes(2 * MIB)).await;
    server.put(&bucket, "p/b", b"bee").await;
    let mut m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    let mut a = std::fs::File::open(m.path("a")).unwrap();
    let mut buf = vec![0u8; 4096];
    a.read_exact(&mut buf).unwrap();
    let b = std::fs::File::open(m.path("b")).unwrap();
    let code = m.stop_with(libc::SIGTERM);
    assert_eq!(code, Some(0), "exit code after SIGTERM:\n{}", m.log_text());
    assert!(
        !is_mounted(&m.dir),
        "still mounted after SIGTERM:\n{}",
        m.log_text()
    );
    // The handles are dead, not hanging (far past what the kernel read ahead).
    let err = a.read_at(&mut buf, 2 * MIB as u64 - 8192);
    assert!(
        err.is_err(),
        "a read from a file of a stopped mount succeeded"
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_and_a_directory_of_one_name_on_different_listing_pages_show_once_as_the_directory()
{
    // moto: only real S3 key semantics let `x` and `x/y` both exist.
    let server = common::moto();
    let bucket = server.new_bucket("mount-shadow").await;
    // `d/x` sorts first and `d/x/` last, 1,100 keys `d/x-NNNNN` apart
    // ('-' < '/'): the file ends up on the first ListObjectsV2 page and the
    // directory on the second.
    let mut want = put_many(&server, &bucket, "p/d/x-", 1100).await;
    want = want.into_iter().map(|n| format!("x-{n}")).collect();
    server.put(&bucket, "p/d/x", b"file").await;
    server.put(&bucket, "p/d/x/y", b"below").await;
    want.insert("x".to_string());
    let m = mount(
        Some(&server),
        &server.url(&bucket, "p"),
        &["--metadata-ttl", "60s"],
    );
    assert_lists_completely(&m.path("d"), &want);
    let dirs = sh(&format!(
        "find '{}' -mindepth 1 -type d -printf '%P\\n'",
        m.path("d").display()
    ));
    assert_eq!(
        dirs.lines().collect::<Vec<_>>(),
        ["x"],
        "the directory shadows the file"
    );
    assert_eq!(std::fs::read(m.path("d/x/y")).unwrap(), b"below");
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_of_sizes_around_the_block_edges_read_back_exactly() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-edges").await;
    let sizes = [0, 1, MIB - 1, MIB, MIB + 1, 2 * MIB, 3 * MIB - 7];
    let mut bodies = Vec::new();
    for size in sizes {
        let body = random_bytes(size);
        server.put(&bucket, &format!("p/s{size}"), &body).await;
        bodies.push((size, body));
    }
    let m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    for (size, body) in &bodies {
        let path = m.path(&format!("s{size}"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), *size as u64);
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), *size, "s{size}: length read");
        check_range(body, &got, 0, &format!("s{size}"));
        // The last byte alone, and a read that starts at the end.
        let f = std::fs::File::open(&path).unwrap();
        if *size > 0 {
            let mut one = [0u8; 1];
            f.read_exact_at(&mut one, *size as u64 - 1).unwrap();
            assert_eq!(one[0], body[size - 1], "s{size}: last byte");
        }
        let mut buf = [0u8; 16];
        assert_eq!(
            f.read_at(&mut buf, *size as u64).unwrap(),
            0,
            "s{size}: read at the end"
        );
    }
    assert_eq!(m.unmount(), Some(0));
}

/// GetObject requests the proxy passed for keys ending in `suffix`.
fn gets_of(proxy: &FaultProxy, suffix: &str) -> usize {
    let key = format!("{suffix}?");
    proxy.counters.count("GET", &[&key, "x-id=GetObject"])
}

/// Reads `path` with O_DIRECT (around the kernel's page cache, so every byte
/// comes from the mount's own caches or the store).
fn read_direct(path: &Path) -> Vec<u8> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open O_DIRECT {}: {e}", path.display()));
    let mut out = Vec::new();
    f.read_to_end(&mut out).expect("O_DIRECT read");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn blocks_evicted_from_memory_are_read_back_from_the_disk_cache_and_a_corrupt_one_is_fetched_again(
) {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-disk-cache").await;
    let body = random_bytes(12 * MIB + 5);
    server.put(&bucket, "p/f", &body).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let cache = common::tempdir();
    // Memory for two blocks: a 13-block object is mostly served from disk.
    let m = mount(
        Some(&via),
        &server.url(&bucket, "p"),
        &[
            "--cache-size",
            "2MiB",
            "--cache-dir",
            &path_str(cache.path()),
        ],
    );
    let first = read_direct(&m.path("f"));
    check_range(&body, &first, 0, "first read");
    assert_eq!(first.len(), body.len());
    let after_first = gets_of(&proxy, "/p/f");
    assert!(after_first >= 13, "{after_first} GETs for 13 blocks");
    let blocks = cache.path().join("blocks");
    let files: Vec<_> = std::fs::read_dir(&blocks)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 13, "blocks on disk: {files:?}");

    let again = read_direct(&m.path("f"));
    assert!(again == body, "the re-read from the disk cache differs");
    assert_eq!(
        gets_of(&proxy, "/p/f"),
        after_first,
        "the re-read went to the store"
    );

    // Flip a byte in every block on disk: the CRC32C catches it, and the
    // block is fetched from the store again.
    for p in &files {
        let mut raw = std::fs::read(p).unwrap();
        raw[0] ^= 0xff;
        std::fs::write(p, raw).unwrap();
    }
    let third = read_direct(&m.path("f"));
    assert!(third == body, "a corrupt disk block was served");
    let refetched = gets_of(&proxy, "/p/f") - after_first;
    assert!(refetched >= 10, "only {refetched} blocks fetched again");
    assert_eq!(m.unmount(), Some(0));
}

/// Bytes asked for by the GetObject requests for keys ending in `suffix`.
fn get_bytes_of(proxy: &FaultProxy, suffix: &str, size: u64) -> u64 {
    proxy
        .counters
        .get_ranges(suffix, size)
        .iter()
        .map(|r| r.end - r.start)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn random_4_kib_reads_fetch_one_small_request_each() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-window").await;
    let body = random_bytes(64 * MIB);
    server.put(&bucket, "p/f", &body).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let m = mount(Some(&via), &server.url(&bucket, "p"), &[]);
    let f = std::fs::File::open(m.path("f")).unwrap();
    // 20 reads of 4 KiB, each in a different block, far apart.
    let blocks: Vec<usize> = (0..20).map(|i| (i * 37 + 11) % 64).collect();
    for b in &blocks {
        let off = b * MIB + 8192;
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        check_range(&body, &buf, off, "random read");
    }
    let random_gets = gets_of(&proxy, "/p/f");
    assert_eq!(
        random_gets,
        blocks.len(),
        "{random_gets} GETs for {} random 4 KiB reads",
        blocks.len()
    );
    // The smallest request is 64 KiB: at most twice that per read.
    let fetched = get_bytes_of(&proxy, "/p/f", body.len() as u64);
    let bound = 2 * 64 * 1024 * blocks.len() as u64;
    assert!(
        fetched <= bound,
        "{fetched} bytes fetched for {} reads of 4 KiB (bound {bound})",
        blocks.len()
    );
    drop(f);
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sequential_read_of_a_file_twice_the_cache_size_fetches_each_byte_once() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-twice").await;
    // --cache-size 8MiB: 4 MiB of read-ahead (the most one window holds)
    // and 4 MiB of block cache; the file is 16 MiB.
    let body = random_bytes(16 * MIB + 12345);
    server.put(&bucket, "p/f", &body).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let m = mount(
        Some(&via),
        &server.url(&bucket, "p"),
        &["--cache-size", "8MiB"],
    );
    let got = read_direct(&m.path("f"));
    assert!(got == body, "the bytes read differ");
    let fetched = get_bytes_of(&proxy, "/p/f", body.len() as u64);
    let window = 4 * MIB as u64;
    assert!(
        fetched >= body.len() as u64 && fetched <= body.len() as u64 + window,
        "{fetched} bytes fetched for a {}-byte file (at most one 4 MiB window more)",
        body.len()
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_fits_the_cache_is_fetched_once_and_its_re_read_fetches_nothing() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-reread").await;
    let body = random_bytes(24 * MIB + 99);
    server.put(&bucket, "p/f", &body).await;
    let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
    let via = server.through(&proxy);
    let m = mount(Some(&via), &server.url(&bucket, "p"), &[]);
    // O_DIRECT: past the kernel's page cache, so the re-read reaches the
    // mount and only its own cache can spare the store.
    let first = read_direct(&m.path("f"));
    assert!(first == body, "the first read differs");
    let size = body.len() as u64;
    assert_eq!(
        get_bytes_of(&proxy, "/p/f", size),
        size,
        "the first read fetched each byte once"
    );
    let gets = gets_of(&proxy, "/p/f");
    assert!(gets <= 25, "{gets} GETs for 25 blocks of 1 MiB");
    let again = read_direct(&m.path("f"));
    assert!(again == body, "the re-read differs");
    assert_eq!(
        gets_of(&proxy, "/p/f"),
        gets,
        "the re-read went to the store"
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_file_whose_object_is_deleted_elsewhere_reads_old_bytes_then_eio() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-deleted").await;
    let body = random_bytes(8 * MIB);
    server.put(&bucket, "p/f", &body).await;
    let m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    let mut f = std::fs::File::open(m.path("f")).unwrap();
    let mut got = vec![0u8; 4096];
    f.read_exact(&mut got).unwrap();
    server
        .client()
        .await
        .delete_object()
        .bucket(&bucket)
        .key("p/f")
        .send()
        .await
        .expect("DeleteObject");
    let mut rest = Vec::new();
    let err = f
        .read_to_end(&mut rest)
        .expect_err("read the whole of a deleted object");
    got.extend_from_slice(&rest);
    check_range(&body, &got, 0, "the reader of a deleted object");
    // EIO like any other change; ENOENT is not an error read(2) gives.
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    assert_eq!(m.unmount(), Some(0));
}
