//! The pair cache (src/engine/state.rs): per source/destination pair, a
//! SQLite file under `STATE_DIR/pairs/` remembers, per key, the fingerprints
//! of both sides when they were last known equal, so that a same-size pair
//! whose listings still show them is skipped without a HEAD request.
//!
//! Requests are counted by a pass-through proxy (tests/common/fault_proxy.rs)
//! in front of the real server. Every test runs on moto (listings carry
//! ETags) and on s3s-fs (listings carry no ETag, only LastModified): on
//! s3s-fs the first re-run after an upload still HEADs (the PUT's ETag is not
//! what the listing shows) and records the listed fingerprint, so the warm-up
//! there is an upload plus one re-run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::{at, counter, path_str, read_report, set_mtime, S3Server, ServerKind};
use serde_json::Value;

/// Files in every tree: enough that "every one was looked at" and "none
/// was" are far apart.
const FILES: usize = 20;
/// Every file has this size, so every unchanged pair is a same-size Check.
const FILE_SIZE: usize = 1024;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `f00.bin` … `f09.bin` at the top, `sub/f10.bin` … `sub/f19.bin` below.
fn key_of(i: usize) -> String {
    if i < FILES / 2 {
        format!("f{i:02}.bin")
    } else {
        format!("sub/f{i:02}.bin")
    }
}

fn all_keys() -> BTreeSet<String> {
    (0..FILES).map(key_of).collect()
}

/// A mtime long before any upload (so the listings alone cannot tell the
/// pair apart and a Check is needed), never on a whole second.
fn old_mtime(i: usize) -> std::time::SystemTime {
    at(1_700_000_000 + 7 * i as u64, 123_456_789)
}

/// Writes the [`FILES`] local files (random bodies of [`FILE_SIZE`] bytes,
/// old mtimes) under `root`; returns them by key.
fn local_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let files: BTreeMap<String, Vec<u8>> = (0..FILES)
        .map(|i| (key_of(i), common::random_bytes(FILE_SIZE)))
        .collect();
    let list: Vec<(&String, &Vec<u8>)> = files.iter().collect();
    common::write_files(root, &list);
    for i in 0..FILES {
        set_mtime(&root.join(key_of(i)), old_mtime(i));
    }
    files
}

/// Puts [`FILES`] objects (random bodies of [`FILE_SIZE`] bytes) into
/// `bucket` with a plain PutObject; returns them by key.
async fn remote_tree(server: &S3Server, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..FILES {
        let body = common::random_bytes(FILE_SIZE);
        server.put(bucket, &key_of(i), &body).await;
        files.insert(key_of(i), body);
    }
    files
}

/// An object's bytes (moto's are read without checksum validation, see
/// `common::lenient_client`).
async fn object(server: &S3Server, bucket: &str, key: &str) -> Vec<u8> {
    match server.kind {
        ServerKind::Moto => server.get_unvalidated(bucket, key).await,
        ServerKind::S3sFs => server.get(bucket, key).await,
    }
}

/// Every object of `bucket`, by key.
async fn bucket_tree(server: &S3Server, bucket: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for key in server.keys(bucket, "").await {
        let body = object(server, bucket, &key).await;
        out.insert(key, body);
    }
    out
}

/// What a run through the proxy did: its `--json` summary and every request
/// the proxy saw (`METHOD TARGET -> outcome`).
struct Proxied {
    summary: Value,
    log: Vec<String>,
}

impl Proxied {
    /// The target of every HEAD request, in arrival order.
    fn heads(&self) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|l| l.strip_prefix("HEAD "))
            .map(|rest| rest.split(' ').next().unwrap_or_default().to_string())
            .collect()
    }

    /// The distinct object keys of `bucket` that were HEADed.
    fn headed_keys(&self, bucket: &str) -> BTreeSet<String> {
        let prefix = format!("/{bucket}/");
        self.heads()
            .iter()
            .filter_map(|t| t.strip_prefix(&prefix))
            .map(|k| percent_decode(k.split('?').next().unwrap_or_default()))
            .collect()
    }

    fn files_transferred(&self) -> u64 {
        counter(&self.summary, "FilesTransferred")
    }
}

/// `%XX` escapes of a request path, decoded (keys here are ASCII).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).expect("decoded keys are UTF-8")
}

/// Runs `syncmount sync ARGS --json` with `state` through a fresh
/// pass-through proxy in front of `server`; asserts exit 0 and SUCCESS.
///
/// Every run of a test goes through the same proxy: the pair cache is keyed
/// by the endpoint too, so a warm-up through another address would not count.
fn sync_via_proxy(server: &S3Server, proxy: &FaultProxy, state: &Path, args: &[&str]) -> Proxied {
    let before = proxy.counters.log().len();
    let mut cmd = common::sync_cmd_via(server, &proxy.endpoint, state, args);
    cmd.arg("--json");
    let out = common::run(cmd);
    let log = proxy.counters.log().split_off(before);
    println!("---- proxy log ({} requests) ----", log.len());
    for l in &log {
        println!("{l}");
    }
    assert_eq!(
        out.status, 0,
        "{:?}: sync {args:?} through the proxy failed: {}",
        server.kind, out.stderr
    );
    let summary = common::parse_summary(&out);
    assert_eq!(summary["Status"], "SUCCESS", "{:?}: {summary}", server.kind);
    Proxied { summary, log }
}

/// The pair cache files (`*.sqlite`) under `state`/pairs.
fn cache_files(state: &Path) -> Vec<PathBuf> {
    let dir = state.join("pairs");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("read_dir pairs").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sqlite"))
        .collect();
    out.sort();
    out
}

/// Rows of the `pairs` table over every cache file under `state` (0 when
/// there is no file, or no table in it).
fn cached_rows(state: &Path) -> i64 {
    cache_files(state)
        .iter()
        .map(|path| {
            let conn = rusqlite::Connection::open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            let has_table: i64 = conn
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'pairs'",
                    [],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            if has_table == 0 {
                return 0;
            }
            conn.query_row("SELECT count(*) FROM pairs", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("count rows of {}: {e}", path.display()))
        })
        .sum()
}

/// Uploads `src` to `url` with `state`, plus on s3s-fs one re-run, which
/// HEADs (its listings carry no ETag) and records what the listing shows.
fn warm_up_upload(server: &S3Server, proxy: &FaultProxy, state: &Path, src: &str, url: &str) {
    let s = sync_via_proxy(server, proxy, state, &[src, url]).summary;
    assert_eq!(counter(&s, "FilesTransferred"), FILES as u64, "{s}");
    if server.kind == ServerKind::S3sFs {
        let s = sync_via_proxy(server, proxy, state, &[src, url]).summary;
        assert_eq!(counter(&s, "FilesTransferred"), 0, "{s}");
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_no_op_upload_after_warm_up_sends_no_head_while_a_fresh_state_dir_heads_every_object() {
    for server in common::data_path_servers() {
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let kind = server.kind;
        let bucket = server.new_bucket("pc-noop").await;
        let url = server.url(&bucket, "");
        let src = common::tempdir();
        local_tree(src.path());
        let src_arg = path_str(src.path());
        let state = common::tempdir();

        warm_up_upload(&server, &proxy, state.path(), &src_arg, &url);
        assert_eq!(
            cache_files(state.path()).len(),
            1,
            "{kind:?}: one cache file for the one pair"
        );

        let warm = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]);
        assert_eq!(warm.files_transferred(), 0, "{kind:?}: {}", warm.summary);
        assert_eq!(
            counter(&warm.summary, "FilesSkipped"),
            FILES as u64,
            "{kind:?}: {}",
            warm.summary
        );
        assert!(
            warm.heads().is_empty(),
            "{kind:?}: a no-op with a warm cache sent HEADs: {:?}",
            warm.heads()
        );
        assert!(
            warm.log.iter().any(|l| l.starts_with("GET ")),
            "{kind:?}: the proxy saw no listing at all (did the run go through it?): {:?}",
            warm.log
        );

        // The same no-op without the cache looks at every object.
        let fresh = common::tempdir();
        let cold = sync_via_proxy(&server, &proxy, fresh.path(), &[&src_arg, &url]);
        assert_eq!(cold.files_transferred(), 0, "{kind:?}: {}", cold.summary);
        assert_eq!(
            cold.headed_keys(&bucket),
            all_keys(),
            "{kind:?}: without a cache every same-size object needs a HEAD"
        );
        assert_eq!(cold.heads().len(), FILES, "{kind:?}: {:?}", cold.heads());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn touching_a_local_file_after_warm_up_transfers_exactly_that_file() {
    for server in common::data_path_servers() {
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let kind = server.kind;
        let bucket = server.new_bucket("pc-touch").await;
        let url = server.url(&bucket, "");
        let src = common::tempdir();
        let files = local_tree(src.path());
        let src_arg = path_str(src.path());
        let state = common::tempdir();
        warm_up_upload(&server, &proxy, state.path(), &src_arg, &url);

        // Same size, same bytes, another mtime; still long before the upload,
        // so only a HEAD (not the listings) can tell.
        let touched = key_of(4);
        set_mtime(&src.path().join(&touched), at(1_650_000_000, 987_654_321));

        let report = common::tempdir();
        let report_path = report.path().join("report.jsonl");
        let report_arg = path_str(&report_path);
        let run = sync_via_proxy(
            &server,
            &proxy,
            state.path(),
            &[&src_arg, &url, "--report", &report_arg],
        );
        assert_eq!(run.files_transferred(), 1, "{kind:?}: {}", run.summary);
        let copied: Vec<String> = read_report(&report_path)
            .iter()
            .filter(|r| r["action"] == "copy" && r["result"] == "ok")
            .map(|r| r["key"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(copied, vec![touched.clone()], "{kind:?}");
        assert_eq!(
            run.headed_keys(&bucket),
            BTreeSet::from([touched.clone()]),
            "{kind:?}: only the touched file needs a look"
        );
        assert_eq!(bucket_tree(&server, &bucket).await, files, "{kind:?}");

        // And it is settled: the next run transfers nothing.
        let again = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]).summary;
        assert_eq!(counter(&again, "FilesTransferred"), 0, "{kind:?}: {again}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_object_rewritten_behind_syncmounts_back_with_the_same_size_is_copied_again()
{
    for server in common::data_path_servers() {
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let kind = server.kind;
        let bucket = server.new_bucket("pc-rewrite-dst").await;
        let url = server.url(&bucket, "");
        let src = common::tempdir();
        let files = local_tree(src.path());
        let src_arg = path_str(src.path());
        let state = common::tempdir();
        warm_up_upload(&server, &proxy, state.path(), &src_arg, &url);

        let victim = key_of(15);
        let other = common::random_bytes(FILE_SIZE);
        assert_ne!(&other, &files[&victim]);
        server.put(&bucket, &victim, &other).await;
        assert_eq!(object(&server, &bucket, &victim).await, other, "{kind:?}");

        let run = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]);
        assert_eq!(run.files_transferred(), 1, "{kind:?}: {}", run.summary);
        assert_eq!(
            object(&server, &bucket, &victim).await,
            files[&victim],
            "{kind:?}: the rewritten object was not restored"
        );
        assert_eq!(
            run.headed_keys(&bucket),
            BTreeSet::from([victim.clone()]),
            "{kind:?}: only the rewritten object needs a look"
        );
        assert_eq!(bucket_tree(&server, &bucket).await, files, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_no_op_download_after_warm_up_sends_no_head_and_a_rewritten_source_object_is_downloaded_again(
) {
    for server in common::data_path_servers() {
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let kind = server.kind;
        let bucket = server.new_bucket("pc-download").await;
        let url = server.url(&bucket, "");
        let mut objects = remote_tree(&server, &bucket).await;
        let dst = common::tempdir();
        let dst_arg = path_str(dst.path());
        let state = common::tempdir();

        let s = sync_via_proxy(&server, &proxy, state.path(), &[&url, &dst_arg]).summary;
        assert_eq!(
            counter(&s, "FilesTransferred"),
            FILES as u64,
            "{kind:?}: {s}"
        );
        assert_eq!(common::read_tree(dst.path()), objects, "{kind:?}");

        // Both fingerprints recorded by the copy are what the listings show
        // (the source's from its listing, the file's mtime as written).
        let warm = sync_via_proxy(&server, &proxy, state.path(), &[&url, &dst_arg]);
        assert_eq!(warm.files_transferred(), 0, "{kind:?}: {}", warm.summary);
        assert!(
            warm.heads().is_empty(),
            "{kind:?}: a no-op download with a warm cache sent HEADs: {:?}",
            warm.heads()
        );

        // Without the cache, every source object is looked at.
        let fresh = common::tempdir();
        let cold = sync_via_proxy(&server, &proxy, fresh.path(), &[&url, &dst_arg]);
        assert_eq!(cold.files_transferred(), 0, "{kind:?}: {}", cold.summary);
        assert_eq!(cold.headed_keys(&bucket), all_keys(), "{kind:?}");

        // A downloaded file's mtime is the object's LastModified, which a
        // HEAD gives to the second: rewrite in a later second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let victim = key_of(3);
        let other = common::random_bytes(FILE_SIZE);
        server.put(&bucket, &victim, &other).await;
        objects.insert(victim.clone(), other);

        let run = sync_via_proxy(&server, &proxy, state.path(), &[&url, &dst_arg]);
        assert_eq!(run.files_transferred(), 1, "{kind:?}: {}", run.summary);
        assert_eq!(
            common::read_tree(dst.path()),
            objects,
            "{kind:?}: the local copy of the rewritten object is stale"
        );
        assert_eq!(
            run.headed_keys(&bucket),
            BTreeSet::from([victim.clone()]),
            "{kind:?}: only the rewritten object needs a look"
        );
    }
}

/// How a cache file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Random bytes over the whole file: not a database any more.
    Garbage,
    /// The first page (header and schema) kept, random bytes over the rest:
    /// a database whose `pairs` table is corrupt.
    GarbagePagesBehindAValidHeader,
}

/// Damages every cache file under `state`/pairs; returns how many.
fn damage_cache(state: &Path, damage: Damage) -> usize {
    const FIRST_PAGE: usize = 4096;
    let pairs = state.join("pairs");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&pairs).expect("the warm-up created STATE_DIR/pairs") {
        let path = entry.expect("read_dir pairs").path();
        let mut bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        match damage {
            Damage::Garbage => bytes = common::random_bytes(bytes.len().max(FIRST_PAGE)),
            Damage::GarbagePagesBehindAValidHeader => {
                if path.extension().is_none_or(|e| e != "sqlite") {
                    continue;
                }
                assert!(
                    bytes.len() > FIRST_PAGE,
                    "{}: {} bytes, no page after the first",
                    path.display(),
                    bytes.len()
                );
                let tail = common::random_bytes(bytes.len() - FIRST_PAGE);
                bytes[FIRST_PAGE..].copy_from_slice(&tail);
            }
        }
        std::fs::write(&path, &bytes)
            .unwrap_or_else(|e| panic!("overwrite {}: {e}", path.display()));
        damaged += 1;
    }
    damaged
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_cache_file_costs_heads_but_the_sync_still_succeeds_with_correct_results() {
    for server in common::data_path_servers() {
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        for damage in [Damage::Garbage, Damage::GarbagePagesBehindAValidHeader] {
            let kind = server.kind;
            let bucket = server.new_bucket("pc-garbage").await;
            let url = server.url(&bucket, "");
            let src = common::tempdir();
            let mut files = local_tree(src.path());
            let src_arg = path_str(src.path());
            let state = common::tempdir();
            warm_up_upload(&server, &proxy, state.path(), &src_arg, &url);

            assert!(
                damage_cache(state.path(), damage) >= 1,
                "{kind:?}: no cache file to damage"
            );

            // One real change, so "correct results" means something.
            let changed = key_of(7);
            let body = common::random_bytes(FILE_SIZE);
            std::fs::write(src.path().join(&changed), &body).expect("rewrite a local file");
            set_mtime(&src.path().join(&changed), at(1_650_000_000, 1));
            files.insert(changed.clone(), body);

            let run = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]);
            assert_eq!(
                run.files_transferred(),
                1,
                "{kind:?} {damage:?}: {}",
                run.summary
            );
            assert_eq!(
                counter(&run.summary, "FilesFailed"),
                0,
                "{kind:?} {damage:?}: {}",
                run.summary
            );
            assert_eq!(
                run.headed_keys(&bucket),
                all_keys(),
                "{kind:?} {damage:?}: a damaged cache cannot vouch for any pair"
            );
            assert_eq!(
                bucket_tree(&server, &bucket).await,
                files,
                "{kind:?} {damage:?}"
            );

            // Later runs with the same state directory keep working.
            let again = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]);
            assert_eq!(
                again.files_transferred(),
                0,
                "{kind:?} {damage:?}: {}",
                again.summary
            );
            println!(
                "{kind:?} {damage:?}: the run after the damaged one sent {} HEADs",
                again.heads().len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_records_nothing_in_the_cache_so_the_next_real_run_still_heads_every_object() {
    for server in common::data_path_servers() {
        let proxy = FaultProxy::start(&server.endpoint, FaultPlan::PassAll);
        let kind = server.kind;
        let bucket = server.new_bucket("pc-dry-run").await;
        let url = server.url(&bucket, "");
        let src = common::tempdir();
        local_tree(src.path());
        let src_arg = path_str(src.path());
        let uploaded = common::tempdir();
        warm_up_upload(&server, &proxy, uploaded.path(), &src_arg, &url);
        assert_eq!(
            cached_rows(uploaded.path()),
            FILES as i64,
            "{kind:?}: a real run records every pair it copied or checked"
        );

        // A dry run on a fresh state directory checks every pair (HEADs) and
        // would record each as equal, were it allowed to write.
        let state = common::tempdir();
        let dry = sync_via_proxy(
            &server,
            &proxy,
            state.path(),
            &[&src_arg, &url, "--dry-run"],
        );
        assert_eq!(dry.files_transferred(), 0, "{kind:?}: {}", dry.summary);
        assert_eq!(dry.headed_keys(&bucket), all_keys(), "{kind:?}");
        assert_eq!(
            cached_rows(state.path()),
            0,
            "{kind:?}: a dry run wrote the pair cache"
        );

        // So the next real run still has to look at every object ...
        let real = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]);
        assert_eq!(real.files_transferred(), 0, "{kind:?}: {}", real.summary);
        assert_eq!(real.headed_keys(&bucket), all_keys(), "{kind:?}");
        assert_eq!(cached_rows(state.path()), FILES as i64, "{kind:?}");

        // ... and records what it saw, so the one after needs no HEAD.
        let after = sync_via_proxy(&server, &proxy, state.path(), &[&src_arg, &url]);
        assert_eq!(after.files_transferred(), 0, "{kind:?}: {}", after.summary);
        assert!(after.heads().is_empty(), "{kind:?}: {:?}", after.heads());
    }
}
