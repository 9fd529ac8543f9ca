//! Ordinary shell tools over real mounts: `cp -r` in and out, `rsync -a`,
//! `tar x`, `mv`, `rm -r`, `mkdir -p`, and `find`/`ls -lR`/`du` agreeing with
//! what was written. What goes in is checked through the S3 API, not through
//! the mount.
//!
//! The tools must be installed (scripts/test.sh installs rsync); a missing
//! tool fails the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::mount::{mount, sh};
use common::{at, path_str, random_bytes, set_mtime, write_files, S3Server};

const MIB: usize = 1024 * 1024;
/// Above the S3 location's default multipart threshold (16 MiB,
/// `DEFAULT_MULTIPART_THRESHOLD` in src/location/s3.rs): uploaded in parts.
const OVER_MULTIPART: usize = 16 * MIB + 3 * 1024 + 7;

fn require_tool(tool: &str) {
    let ok = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{tool}` is missing: run the tests through scripts/test.sh (it installs what they need)"
    );
}

/// Length and CRC32C, compared instead of whole bodies so a failure prints
/// something readable.
fn sum(body: &[u8]) -> (usize, u32) {
    (body.len(), crc32c::crc32c(body))
}

/// The mixed tree copied in and out: empty, tiny, a few MiB, and one file
/// over the multipart threshold.
fn mixed_tree() -> Vec<(String, Vec<u8>)> {
    vec![
        ("empty".to_string(), Vec::new()),
        ("small.txt".to_string(), b"hello, mount\n".to_vec()),
        ("a/one-byte".to_string(), b"x".to_vec()),
        ("a/mid.bin".to_string(), random_bytes(3 * MIB + 17)),
        ("a/b/big.bin".to_string(), random_bytes(OVER_MULTIPART)),
        ("a/b/c/note".to_string(), random_bytes(4097)),
    ]
}

/// Bytes of `key`, read without response checksum validation on moto (see
/// `S3Server::get_unvalidated`), with it on s3s-fs.
async fn get_object(server: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    match server.kind {
        common::ServerKind::Moto => server.get_unvalidated(bucket, key).await,
        common::ServerKind::S3sFs => server.get(bucket, key).await,
    }
}

/// Checks through the S3 API that `prefix/` holds exactly `files`.
async fn assert_bucket_holds(
    server: &S3Server,
    bucket: &str,
    prefix: &str,
    files: &[(String, Vec<u8>)],
) {
    let want_keys: BTreeSet<String> = files.iter().map(|(k, _)| format!("{prefix}/{k}")).collect();
    let keys: BTreeSet<String> = server
        .keys(bucket, &format!("{prefix}/"))
        .await
        .into_iter()
        // Directory markers made by mkdir are fine; files are what count.
        .filter(|k| !k.ends_with('/'))
        .collect();
    assert_eq!(keys, want_keys, "{:?}: keys under {prefix}/", server.kind);
    for (rel, body) in files {
        let key = format!("{prefix}/{rel}");
        let stored = get_object(server, bucket, &key).await;
        assert_eq!(
            sum(&stored),
            sum(body),
            "{:?}: content of {key}",
            server.kind
        );
    }
}

/// `cp -r` of the mixed tree into the mount stores every byte (checked
/// through the S3 API), and `cp -r` out of a fresh mount gives it back.
async fn check_cp_r_in_and_out(server: &S3Server) {
    let bucket = server.new_bucket("mount-cp").await;
    let src = common::tempdir();
    let files = mixed_tree();
    write_files(&src.path().join("tree"), &files);

    let m = mount(Some(server), &server.url(&bucket, "p"), &[]);
    sh(&format!(
        "cp -r '{}' '{}'",
        src.path().join("tree").display(),
        m.dir.display()
    ));
    assert_bucket_holds(server, &bucket, "p/tree", &files).await;
    assert_eq!(m.unmount(), Some(0));

    // A fresh mount has nothing cached: the bytes come from the store.
    let m = mount(Some(server), &server.url(&bucket, "p"), &[]);
    let out = common::tempdir();
    sh(&format!(
        "cp -r '{}' '{}'",
        m.path("tree").display(),
        out.path().display()
    ));
    let back = common::read_tree(&out.path().join("tree"));
    let want: BTreeMap<String, (usize, u32)> =
        files.iter().map(|(k, b)| (k.clone(), sum(b))).collect();
    let got: BTreeMap<String, (usize, u32)> =
        back.iter().map(|(k, b)| (k.clone(), sum(b))).collect();
    assert_eq!(got, want, "{:?}: cp -r out of the mount", server.kind);
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_r_of_a_mixed_tree_into_and_out_of_an_s3s_fs_mount_keeps_every_byte() {
    check_cp_r_in_and_out(&common::s3s()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_r_of_a_mixed_tree_into_and_out_of_a_moto_mount_keeps_every_byte() {
    check_cp_r_in_and_out(&common::moto()).await;
}

#[test]
fn cp_r_into_and_out_of_a_local_mount_keeps_every_byte() {
    let store = common::tempdir();
    let src = common::tempdir();
    let files = mixed_tree();
    write_files(&src.path().join("tree"), &files);
    let m = mount(None, &path_str(store.path()), &[]);
    sh(&format!(
        "cp -r '{}' '{}'",
        src.path().join("tree").display(),
        m.dir.display()
    ));
    assert_eq!(m.unmount(), Some(0));
    let stored = common::read_tree(&store.path().join("tree"));
    let want: BTreeMap<String, (usize, u32)> =
        files.iter().map(|(k, b)| (k.clone(), sum(b))).collect();
    let got: BTreeMap<String, (usize, u32)> =
        stored.iter().map(|(k, b)| (k.clone(), sum(b))).collect();
    assert_eq!(got, want, "the local store after cp -r into the mount");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Files with distinct modes and mtimes (with a nanosecond part).
struct Attrs {
    rel: &'static str,
    mode: u32,
    mtime: (u64, u32),
}

const RSYNC_FILES: [Attrs; 4] = [
    Attrs {
        rel: "private",
        mode: 0o600,
        mtime: (1_600_000_000, 123_456_789),
    },
    Attrs {
        rel: "tool.sh",
        mode: 0o755,
        mtime: (1_500_000_000, 0),
    },
    Attrs {
        rel: "d/shared",
        mode: 0o640,
        mtime: (1_400_000_000, 500_000_000),
    },
    Attrs {
        rel: "d/e/big.bin",
        mode: 0o644,
        mtime: (1_700_000_000, 42),
    },
];

fn attr_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = RSYNC_FILES
        .iter()
        .map(|a| {
            let len = if a.rel.ends_with(".bin") {
                2 * MIB + 1
            } else {
                100 + a.rel.len()
            };
            (a.rel.to_string(), random_bytes(len))
        })
        .collect();
    write_files(root, &files);
    for a in &RSYNC_FILES {
        let p = root.join(a.rel);
        set_mtime(&p, at(a.mtime.0, a.mtime.1));
        chmod(&p, a.mode);
    }
    files
}

/// Mode bits and mtime (ns) stored with `key`, as the sync engine writes them.
async fn stored_attrs(server: &S3Server, bucket: &str, key: &str) -> (u32, i128) {
    let meta = server.head_metadata(bucket, key).await;
    let mode = meta
        .get("file-permissions")
        .and_then(|v| u32::from_str_radix(v, 8).ok())
        .unwrap_or_else(|| panic!("{key}: no file-permissions in {meta:?}"));
    let ns = meta
        .get("file-mtime")
        .and_then(|v| v.strip_suffix("ns"))
        .and_then(|v| v.parse::<i128>().ok())
        .unwrap_or_else(|| panic!("{key}: no file-mtime in ns in {meta:?}"));
    (mode & 0o7777, ns)
}

/// The `--stats` line `Number of regular files transferred: N`.
fn files_transferred(stats: &str) -> u64 {
    stats
        .lines()
        .find_map(|l| l.strip_prefix("Number of regular files transferred: "))
        .map(|n| n.trim().replace(',', "").parse().expect("a number"))
        .unwrap_or_else(|| panic!("no `Number of regular files transferred` in:\n{stats}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rsync_a_into_an_s3s_fs_mount_stores_content_modes_and_mtimes_and_reruns_as_a_no_op() {
    require_tool("rsync");
    let server = common::s3s();
    let bucket = server.new_bucket("mount-rsync").await;
    let src = common::tempdir();
    let files = attr_tree(src.path());
    let m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    let dst = m.path("r");
    let first = sh(&format!(
        "rsync -a --stats '{}/' '{}/'",
        src.path().display(),
        dst.display()
    ));
    assert_eq!(files_transferred(&first), files.len() as u64, "{first}");

    // rsync writes `.name.XXXXXX` and renames it: only the final names remain.
    assert_bucket_holds(&server, &bucket, "p/r", &files).await;
    for a in &RSYNC_FILES {
        let key = format!("p/r/{}", a.rel);
        let (mode, ns) = stored_attrs(&server, &bucket, &key).await;
        assert_eq!(mode, a.mode, "{key}: mode {mode:o}");
        let want_ns = i128::from(a.mtime.0) * 1_000_000_000 + i128::from(a.mtime.1);
        assert_eq!(ns, want_ns, "{key}: stored mtime");
    }

    // The mount shows the same times and modes, so rsync's quick check
    // (size + mtime) finds nothing to send.
    let second = sh(&format!(
        "rsync -a --itemize-changes --stats '{}/' '{}/'",
        src.path().display(),
        dst.display()
    ));
    assert_eq!(files_transferred(&second), 0, "{second}");
    let sent: Vec<&str> = second.lines().filter(|l| l.starts_with(">f")).collect();
    assert!(
        sent.is_empty(),
        "the second rsync sent files again: {sent:?}\n{second}"
    );
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn tar_x_into_a_moto_mount_stores_content_modes_mtimes_and_owners() {
    let server = common::moto();
    let bucket = server.new_bucket("mount-tar").await;
    let src = common::tempdir();
    let files = attr_tree(&src.path().join("pkg"));
    // Owners as numbers: tar run as root restores them (chown through the mount).
    sh(&format!(
        "chown -R 1234:5678 '{}'",
        src.path().join("pkg").display()
    ));
    let archive = src.path().join("pkg.tar");
    sh(&format!(
        "tar -C '{}' -cf '{}' pkg",
        src.path().display(),
        archive.display()
    ));
    let m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    sh(&format!(
        "tar -C '{}' --numeric-owner -xf '{}'",
        m.dir.display(),
        archive.display()
    ));
    assert_bucket_holds(&server, &bucket, "p/pkg", &files).await;
    for a in &RSYNC_FILES {
        let key = format!("p/pkg/{}", a.rel);
        let (mode, ns) = stored_attrs(&server, &bucket, &key).await;
        assert_eq!(mode, a.mode, "{key}: mode {mode:o}");
        // tar keeps whole seconds (ustar/gnu format).
        assert_eq!(
            ns / 1_000_000_000,
            i128::from(a.mtime.0),
            "{key}: stored mtime"
        );
        let meta = server.head_metadata(&bucket, &key).await;
        assert_eq!(
            meta.get("file-owner").map(String::as_str),
            Some("1234"),
            "{key}: {meta:?}"
        );
        assert_eq!(
            meta.get("file-group").map(String::as_str),
            Some("5678"),
            "{key}: {meta:?}"
        );
    }
    assert_eq!(m.unmount(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn mv_rm_r_and_mkdir_p_in_a_moto_mount_change_the_bucket_accordingly() {
    let server = common::moto();
    let bucket = server.new_bucket("mount-mv").await;
    for (k, v) in [
        ("p/file1", &b"one"[..]),
        ("p/dir/a", b"a"),
        ("p/dir/sub/b", b"bb"),
        ("p/keep", b"keep"),
    ] {
        server.put(&bucket, k, v).await;
    }
    let m = mount(Some(&server), &server.url(&bucket, "p"), &[]);
    let d = m.dir.display().to_string();
    sh(&format!("mv '{d}/file1' '{d}/file2'"));
    sh(&format!("mv '{d}/dir' '{d}/moved'"));
    sh(&format!("mkdir -p '{d}/x/y/z'"));
    let keys = server.keys(&bucket, "p/").await;
    assert_eq!(
        keys,
        [
            "p/file2",
            "p/keep",
            "p/moved/a",
            "p/moved/sub/b",
            "p/x/",
            "p/x/y/",
            "p/x/y/z/"
        ],
        "after mv file, mv dir and mkdir -p"
    );
    assert_eq!(server.get_unvalidated(&bucket, "p/file2").await, b"one");
    assert_eq!(
        server.get_unvalidated(&bucket, "p/moved/sub/b").await,
        b"bb"
    );
    let found = sh(&format!("cd '{d}' && find . | sort"));
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        [
            ".",
            "./file2",
            "./keep",
            "./moved",
            "./moved/a",
            "./moved/sub",
            "./moved/sub/b",
            "./x",
            "./x/y",
            "./x/y/z"
        ],
        "find in the mount"
    );

    sh(&format!("rm -r '{d}/moved' '{d}/x'"));
    assert_eq!(
        server.keys(&bucket, "p/").await,
        ["p/file2", "p/keep"],
        "after rm -r"
    );
    let left = sh(&format!("ls -A '{d}'"));
    assert_eq!(left.lines().collect::<Vec<_>>(), ["file2", "keep"]);
    assert_eq!(m.unmount(), Some(0));
}

/// Sizes of the files in `find -printf '%P %s'` output, by path.
fn parse_find_sizes(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .map(|l| {
            let (p, s) = l.rsplit_once(' ').expect("path size");
            (p.to_string(), s.parse().expect("size"))
        })
        .collect()
}

/// Regular files in `ls -lR` output (directory headers joined to names),
/// with their sizes.
fn parse_ls_lr(text: &str) -> BTreeMap<String, u64> {
    let mut dir = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(h) = line.strip_suffix(':') {
            dir = h
                .trim_start_matches('.')
                .trim_start_matches('/')
                .to_string();
            continue;
        }
        if !line.starts_with('-') {
            continue;
        }
        // -rw-r--r-- 1 0 0 SIZE Mon DD HH:MM NAME
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert!(cols.len() >= 9, "unexpected ls -l line: {line}");
        let size: u64 = cols[4].parse().expect("size column");
        let name = cols[8..].join(" ");
        let path = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        out.insert(path, size);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn find_ls_lr_and_du_over_an_s3s_fs_mount_agree_with_the_tree_copied_in() {
    let server = common::s3s();
    let bucket = server.new_bucket("mount-find").await;
    let src = common::tempdir();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, dir) in ["", "a/", "a/b/", "c/", "c/d/e/"].iter().enumerate() {
        for j in 0..4 {
            let len = (i * 7919 + j * 104_729) % (600 * 1024);
            files.push((format!("{dir}f{j}"), random_bytes(len)));
        }
    }
    files.push(("empty".into(), Vec::new()));
    write_files(&src.path().join("t"), &files);
    let m = mount(Some(&server), &server.url(&bucket, ""), &[]);
    sh(&format!(
        "cp -r '{}' '{}'",
        src.path().join("t").display(),
        m.dir.display()
    ));
    assert_eq!(m.unmount(), Some(0));
    // A fresh mount: everything below comes from listings of the bucket.
    let m = mount(Some(&server), &server.url(&bucket, ""), &[]);
    let root = m.path("t");
    let r = root.display();

    let want: BTreeMap<String, u64> = files
        .iter()
        .map(|(k, b)| (k.clone(), b.len() as u64))
        .collect();
    let found = parse_find_sizes(&sh(&format!(
        "cd '{r}' && find . -type f -printf '%P %s\\n'"
    )));
    assert_eq!(found, want, "find -type f");
    let dirs = sh(&format!("cd '{r}' && find . -mindepth 1 -type d | sort"));
    assert_eq!(
        dirs.lines().collect::<Vec<_>>(),
        ["./a", "./a/b", "./c", "./c/d", "./c/d/e"],
        "find -type d"
    );
    let listed = parse_ls_lr(&sh(&format!("cd '{r}' && ls -lR")));
    assert_eq!(listed, want, "ls -lR");

    let total: u64 = want.values().sum();
    let du_b = sh(&format!("du -sb '{r}'"));
    let du_b: u64 = du_b.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(du_b, total, "du -sb (apparent size; directories count 0)");
    let blocks: u64 = want.values().map(|s| s.div_ceil(512) * 512).sum();
    let du = sh(&format!("du -s -B1 '{r}'"));
    let du: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(du, blocks, "du -s (512-byte blocks of each file)");
    assert_eq!(m.unmount(), Some(0));
}
