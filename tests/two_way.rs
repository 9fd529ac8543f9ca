//! Two-way executions (`sync --two-way`, `direction = "two-way"` tasks):
//! an edit on either side reaches the other, conflicts keep or settle both
//! versions by policy, deletions propagate only where the other side is
//! unchanged and only within `max_delete`, a side that lists nothing is
//! refused, a lost base deletes nothing, both argument orders share one
//! base, a dry run changes nothing, and a running two-way execution guards
//! both of its sides. Directories, moto and s3s-fs buckets as sides: a
//! round of changes converges, and what the pair copied itself is never
//! taken for an edit (no copy back, no conflict) on the next run.
//!
//! Local times are set explicitly (`set_mtime`) so "newer" never depends on
//! how fast a test runs; objects get their server's time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::tasks::{status, TaskEnv};
use common::{
    at, counter, parse_summary, path_str, read_report, read_tree, run, set_mtime, sync_cmd,
    RunOutput, S3Server, ServerKind,
};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// 2026-01-01T00:00:00Z: every local mtime is an offset from it.
const T0: u64 = 1_767_225_600;

/// The prefix every bucket side lives under.
const PREFIX: &str = "data";

/// One finished `sync --two-way` run: its output, `--json` summary and
/// `--report` records.
struct Run {
    out: RunOutput,
    summary: Value,
    report: Vec<Value>,
}

impl Run {
    fn n(&self, name: &str) -> u64 {
        counter(&self.summary, name)
    }

    /// `action/result` of every report record of `key`.
    fn actions(&self, key: &str) -> Vec<String> {
        common::records_for(&self.report, key)
            .iter()
            .map(|r| format!("{}/{}", str_of(&r["action"]), str_of(&r["result"])))
            .collect()
    }

    /// The reason of `key`'s only record.
    fn reason(&self, key: &str) -> String {
        let recs = common::records_for(&self.report, key);
        assert_eq!(recs.len(), 1, "one record for {key}: {:#?}", self.report);
        str_of(&recs[0]["reason"])
    }

    fn error_detail(&self) -> String {
        str_of(&self.summary["ErrorDetail"])
    }

    /// Exit 0 and Status SUCCESS.
    fn assert_ok(&self) {
        assert_eq!(self.out.status, 0, "{}", self.out.stderr);
        assert_eq!(self.summary["Status"], "SUCCESS", "{:#}", self.summary);
    }

    /// Exit 1 and Status ERROR.
    fn assert_refused(&self) {
        assert_eq!(self.out.status, 1, "{:#}", self.summary);
        assert_eq!(self.summary["Status"], "ERROR", "{:#}", self.summary);
    }

    /// Nothing copied, deleted or in conflict.
    fn assert_idle(&self) {
        self.assert_ok();
        for c in ["FilesTransferred", "FilesDeleted", "FilesConflicted"] {
            assert_eq!(self.n(c), 0, "{c}: {:#}\n{:#?}", self.summary, self.report);
        }
        assert!(
            !self.report.iter().any(|r| r["action"] == "conflict"),
            "{:#?}",
            self.report
        );
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

static REPORTS: AtomicU64 = AtomicU64::new(0);

/// `syncmount sync FIRST SECOND --two-way --json --report … EXTRA…`.
fn two_way(
    server: Option<&S3Server>,
    state: &Path,
    first: &str,
    second: &str,
    extra: &[&str],
) -> Run {
    let n = REPORTS.fetch_add(1, Ordering::Relaxed);
    let report = state.with_file_name(format!("report-{n}.jsonl"));
    let report_arg = path_str(&report);
    let mut args = vec![
        first,
        second,
        "--two-way",
        "--json",
        "--report",
        &report_arg,
    ];
    args.extend_from_slice(extra);
    let out = run(sync_cmd(server, state, &args));
    let summary = parse_summary(&out);
    let report = if report.exists() {
        read_report(&report)
    } else {
        Vec::new()
    };
    Run {
        out,
        summary,
        report,
    }
}

/// Writes `body` to `path` (creating parents) with mtime `T0 + secs`.
fn write_at(path: &Path, body: &[u8], secs: f64) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let whole = secs.trunc() as u64;
    let nanos = ((secs.fract() * 1000.0).round() as u32) * 1_000_000;
    set_mtime(path, at(T0 + whole, nanos));
}

fn remove(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("rm {}: {e}", path.display()));
}

fn tree_of(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

/// The whole numbers a message mentions.
fn numbers_in(s: &str) -> BTreeSet<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// Every row of every base under `state` (key and both fingerprints),
/// read straight from the SQLite files.
fn base_rows(state: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state.join("bases")) else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for e in dir.flatten() {
        if e.path().extension().is_none_or(|x| x != "sqlite") {
            continue;
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let c = rusqlite::Connection::open_with_flags(e.path(), flags).unwrap();
        let mut st = c
            .prepare("SELECT key, first_fp, second_fp, size, mtime_ns FROM base ORDER BY key")
            .unwrap();
        let got = st
            .query_map([], |r| {
                Ok(format!(
                    "{} {:?} {:?} {} {:?}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<String>>(4)?
                ))
            })
            .unwrap();
        rows.extend(got.map(Result::unwrap));
    }
    rows
}

/// Two local directories `a` and `b` and a state directory.
struct Dirs {
    root: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    state: PathBuf,
}

impl Dirs {
    fn new() -> Dirs {
        let root = common::tempdir();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        Dirs {
            state: root.path().join("state"),
            root,
            a,
            b,
        }
    }

    /// `sync a b --two-way EXTRA…`.
    fn run(&self, extra: &[&str]) -> Run {
        self.run_as(&self.a, &self.b, extra)
    }

    fn run_as(&self, first: &Path, second: &Path, extra: &[&str]) -> Run {
        two_way(
            None,
            &self.state,
            &path_str(first),
            &path_str(second),
            extra,
        )
    }

    /// A run that must succeed.
    fn ok(&self, extra: &[&str]) -> Run {
        let r = self.run(extra);
        r.assert_ok();
        r
    }

    /// `n` files `fNN.txt` on A, synced to B.
    fn synced(n: usize) -> Dirs {
        let d = Dirs::new();
        for i in 0..n {
            write_at(&d.a.join(name(i)), format!("file {i}").as_bytes(), 0.0);
        }
        let first = d.ok(&[]);
        assert_eq!(first.n("FilesTransferredAToB"), n as u64);
        assert_eq!(read_tree(&d.b).len(), n);
        d
    }

    fn assert_equal_sides(&self) -> BTreeMap<String, Vec<u8>> {
        let (a, b) = (read_tree(&self.a), read_tree(&self.b));
        assert_eq!(a, b, "sides differ");
        a
    }
}

fn name(i: usize) -> String {
    format!("f{i:02}.txt")
}

/// One side of a pair: a local directory or a bucket (under [`PREFIX`]).
enum Place {
    Dir(PathBuf),
    Bucket(S3Server, String),
}

impl Place {
    /// The directory `dir` (`None`), or a new bucket on `server`.
    async fn new(server: Option<&S3Server>, dir: &Path) -> Place {
        match server {
            None => {
                std::fs::create_dir_all(dir).unwrap();
                Place::Dir(dir.to_path_buf())
            }
            Some(s) => Place::Bucket(s.clone(), s.new_bucket("two-way").await),
        }
    }

    fn arg(&self) -> String {
        match self {
            Place::Dir(p) => path_str(p),
            Place::Bucket(s, b) => s.url(b, PREFIX),
        }
    }

    /// Writes `key`; a directory's file gets mtime `T0 + secs`, an object
    /// gets the server's time.
    async fn write(&self, key: &str, body: &[u8], secs: f64) {
        match self {
            Place::Dir(p) => write_at(&p.join(key), body, secs),
            Place::Bucket(s, b) => s.put(b, &format!("{PREFIX}/{key}"), body).await,
        }
    }

    async fn remove(&self, key: &str) {
        match self {
            Place::Dir(p) => remove(&p.join(key)),
            Place::Bucket(s, b) => {
                let full = format!("{PREFIX}/{key}");
                s.client()
                    .await
                    .delete_object()
                    .bucket(b)
                    .key(&full)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DeleteObject s3://{b}/{full}: {e:?}"));
            }
        }
    }

    /// Every key and its content.
    async fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        match self {
            Place::Dir(p) => read_tree(p),
            Place::Bucket(s, b) => {
                let mut out = BTreeMap::new();
                for full in s.keys(b, &format!("{PREFIX}/")).await {
                    // moto stores wrong checksums for copies it made.
                    let body = match s.kind {
                        ServerKind::Moto => s.get_unvalidated(b, &full).await,
                        ServerKind::S3sFs => s.get(b, &full).await,
                    };
                    let key = full[PREFIX.len() + 1..].to_string();
                    out.insert(key, body);
                }
                out
            }
        }
    }
}

/// Sides A and B (each a directory or a bucket) and a state directory.
struct Sides {
    root: tempfile::TempDir,
    server: Option<S3Server>,
    a: Place,
    b: Place,
}

impl Sides {
    /// `a` and `b`: `None` for a local directory, a server for a new bucket.
    async fn new(a: Option<&S3Server>, b: Option<&S3Server>) -> Sides {
        let root = common::tempdir();
        let (pa, pb) = (
            Place::new(a, &root.path().join("a")).await,
            Place::new(b, &root.path().join("b")).await,
        );
        Sides {
            server: a.or(b).cloned(),
            a: pa,
            b: pb,
            root,
        }
    }

    fn run(&self, extra: &[&str]) -> Run {
        let state = self.root.path().join("state");
        two_way(
            self.server.as_ref(),
            &state,
            &self.a.arg(),
            &self.b.arg(),
            extra,
        )
    }

    fn ok(&self) -> Run {
        let r = self.run(&[]);
        r.assert_ok();
        r
    }

    /// Both sides hold exactly `want`.
    async fn assert_both(&self, want: &BTreeMap<String, Vec<u8>>) {
        assert_eq!(&self.a.tree().await, want, "side A");
        assert_eq!(&self.b.tree().await, want, "side B");
    }

    /// Two more runs copy, delete and settle nothing (the first may look
    /// at copies it has not listed before, but must not move them).
    fn assert_settled(&self) {
        for _ in 0..2 {
            self.ok().assert_idle();
        }
    }
}

/// Waits until the wall clock enters its next second (at most a second).
/// S3 stamps LastModified to the second; objects written before this and
/// copies made after it differ in LastModified, as they do in any bucket
/// whose objects are older than a second when synced.
fn next_second() {
    let secs = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let now = secs();
    while secs() == now {
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------
// 1. The issue's doc.txt: an edit on B is never lost
// ---------------------------------------------------------------------------

/// doc.txt written on A, synced; edited on B; synced: B's edit is on both.
async fn an_edit_on_b_reaches_a(sides: Sides) {
    sides.a.write("doc.txt", b"v1", 0.0).await;
    let first = sides.ok();
    assert_eq!(first.actions("doc.txt"), ["copy-a-to-b/ok"]);
    assert_eq!(first.reason("doc.txt"), "new-on-a");
    sides.b.write("doc.txt", b"v2", 1.0).await;

    let second = sides.ok();
    assert_eq!(second.actions("doc.txt"), ["copy-b-to-a/ok"]);
    assert_eq!(second.reason("doc.txt"), "changed-on-b");
    assert_eq!(second.n("FilesTransferredBToA"), 1, "{:#}", second.summary);
    assert_eq!(second.n("FilesTransferredAToB"), 0, "{:#}", second.summary);
    assert_eq!(second.n("FilesConflicted"), 0, "{:#}", second.summary);
    sides.assert_both(&tree_of(&[("doc.txt", b"v2")])).await;
    sides.assert_settled();
}

#[test]
fn two_one_way_syncs_lose_the_edit_made_on_b() {
    // The approach two-way replaces: A→B then B→A, one way each.
    let d = Dirs::new();
    write_at(&d.a.join("doc.txt"), b"v1", 0.0);
    let one_way = |src: &Path, dst: &Path| {
        common::sync_ok(None, &d.state, &[&path_str(src), &path_str(dst)]);
    };
    one_way(&d.a, &d.b);
    write_at(&d.b.join("doc.txt"), b"v2", 1.0);
    one_way(&d.a, &d.b);
    one_way(&d.b, &d.a);
    let lost = tree_of(&[("doc.txt", b"v1")]);
    assert_eq!(read_tree(&d.a), lost);
    assert_eq!(read_tree(&d.b), lost);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_on_b_reaches_a_between_two_directories() {
    an_edit_on_b_reaches_a(Sides::new(None, None).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_on_b_reaches_a_between_a_directory_and_a_moto_bucket() {
    let moto = common::moto();
    an_edit_on_b_reaches_a(Sides::new(None, Some(&moto)).await).await;
}

/// doc.txt created on A, synced, then edited on A again: one copy to B,
/// no conflict (B still holds the copy this pair made).
async fn a_second_edit_on_the_side_a_file_came_from_is_copied_not_conflicted(sides: Sides) {
    sides.a.write("doc.txt", b"v1", 0.0).await;
    if matches!(sides.a, Place::Bucket(..)) {
        next_second();
    }
    sides.ok();
    sides.a.write("doc.txt", b"v2, longer", 1.0).await;
    let r = sides.ok();
    assert_eq!(r.actions("doc.txt"), ["copy-a-to-b/ok"], "{:#?}", r.report);
    assert_eq!(r.reason("doc.txt"), "changed-on-a");
    assert_eq!(r.n("FilesConflicted"), 0, "{:#}", r.summary);
    sides
        .assert_both(&tree_of(&[("doc.txt", b"v2, longer")]))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_edit_on_a_is_copied_not_conflicted_between_two_directories() {
    let sides = Sides::new(None, None).await;
    a_second_edit_on_the_side_a_file_came_from_is_copied_not_conflicted(sides).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_edit_on_a_is_copied_not_conflicted_between_a_moto_bucket_and_a_directory() {
    let moto = common::moto();
    let sides = Sides::new(Some(&moto), None).await;
    a_second_edit_on_the_side_a_file_came_from_is_copied_not_conflicted(sides).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_edit_on_a_is_copied_not_conflicted_between_an_s3s_bucket_and_a_directory() {
    let s3s = common::s3s();
    let sides = Sides::new(Some(&s3s), None).await;
    a_second_edit_on_the_side_a_file_came_from_is_copied_not_conflicted(sides).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_edit_on_a_is_copied_not_conflicted_between_two_moto_buckets() {
    let moto = common::moto();
    let sides = Sides::new(Some(&moto), Some(&moto)).await;
    a_second_edit_on_the_side_a_file_came_from_is_copied_not_conflicted(sides).await;
}

// ---------------------------------------------------------------------------
// 2. Conflicts
// ---------------------------------------------------------------------------

/// doc.txt synced, then edited on A (mtime `T0 + a_secs`) and on B
/// (`T0 + b_secs`) differently, then a run with `--conflict-policy policy`.
fn conflict(policy: &str, a_secs: f64, b_secs: f64) -> (Dirs, Run) {
    let d = Dirs::new();
    write_at(&d.a.join("doc.txt"), b"agreed", 0.0);
    d.ok(&[]);
    write_at(&d.a.join("doc.txt"), b"edited on a", a_secs);
    write_at(&d.b.join("doc.txt"), b"edited on b!", b_secs);
    let r = d.ok(&["--conflict-policy", policy]);
    assert_eq!(r.n("FilesConflicted"), 1, "{:#}", r.summary);
    assert_eq!(r.actions("doc.txt"), ["conflict/ok"]);
    (d, r)
}

/// The winner's content is on both sides under the name, and nothing else.
fn assert_settled_for(d: &Dirs, winner: &[u8]) {
    assert_eq!(d.assert_equal_sides(), tree_of(&[("doc.txt", winner)]));
    d.ok(&[]).assert_idle();
    assert_eq!(d.assert_equal_sides(), tree_of(&[("doc.txt", winner)]));
}

#[test]
fn a_conflict_under_keep_both_keeps_the_newer_under_the_name_and_the_other_as_a_conflict_copy() {
    // B is newer; A's version (mtime 01:02:03.456) is the conflict copy.
    let (d, r) = conflict("keep-both", 3723.456, 7200.0);
    let kept = "doc.txt.conflict-A-20260101T010203.456Z";
    let want = tree_of(&[("doc.txt", b"edited on b!"), (kept, b"edited on a")]);
    assert_eq!(d.assert_equal_sides(), want);
    assert!(r.reason("doc.txt").contains(kept), "{:#?}", r.report);
    let again = d.ok(&[]);
    again.assert_idle();
    assert_eq!(d.assert_equal_sides(), want);
}

#[test]
fn a_conflict_under_newer_keeps_only_the_newer_version() {
    let (d, _) = conflict("newer", 7200.0, 3600.0);
    assert_settled_for(&d, b"edited on a");
}

#[test]
fn a_conflict_under_a_wins_keeps_a_even_when_b_is_newer() {
    let (d, _) = conflict("a-wins", 3600.0, 7200.0);
    assert_settled_for(&d, b"edited on a");
}

#[test]
fn a_conflict_under_b_wins_keeps_b_even_when_a_is_newer() {
    let (d, _) = conflict("b-wins", 7200.0, 3600.0);
    assert_settled_for(&d, b"edited on b!");
}

// ---------------------------------------------------------------------------
// 3. Deletions
// ---------------------------------------------------------------------------

#[test]
fn a_file_deleted_on_a_and_unchanged_on_b_is_deleted_on_b() {
    let d = Dirs::synced(3);
    remove(&d.a.join(name(0)));
    let r = d.ok(&[]);
    assert_eq!(r.actions(&name(0)), ["delete-b/ok"]);
    assert_eq!(r.reason(&name(0)), "deleted-on-a");
    assert_eq!((r.n("FilesDeleted"), r.n("FilesDeletedB")), (1, 1));
    assert_eq!(r.n("FilesDeletedA"), 0);
    assert!(!d.b.join(name(0)).exists());
    assert_eq!(d.assert_equal_sides().len(), 2);
    d.ok(&[]).assert_idle();
}

#[test]
fn a_file_deleted_on_a_and_edited_on_b_comes_back_to_a_with_the_edit() {
    let d = Dirs::synced(3);
    remove(&d.a.join(name(0)));
    write_at(&d.b.join(name(0)), b"edited on b", 1.0);
    let r = d.ok(&[]);
    assert_eq!(r.actions(&name(0)), ["copy-b-to-a/ok"]);
    assert_eq!(r.reason(&name(0)), "changed-on-b-deleted-on-a");
    assert_eq!(r.n("FilesConflicted"), 1, "{:#}", r.summary);
    assert_eq!(r.n("FilesDeleted"), 0, "{:#}", r.summary);
    let both = d.assert_equal_sides();
    assert_eq!(both[&name(0)], b"edited on b");
    assert_eq!(both.len(), 3);
    d.ok(&[]).assert_idle();
}

// ---------------------------------------------------------------------------
// 4. The mass-delete guard
// ---------------------------------------------------------------------------

#[test]
fn deleting_more_than_half_a_side_is_refused_until_max_delete_allows_it() {
    let d = Dirs::synced(10);
    for i in 0..6 {
        remove(&d.a.join(name(i)));
    }
    write_at(&d.a.join("new.txt"), b"new", 5.0);
    let refused = d.run(&[]);
    refused.assert_refused();
    let detail = refused.error_detail();
    assert!(detail.contains("max_delete"), "{detail}");
    let numbers = numbers_in(&detail);
    assert!(numbers.contains(&6) && numbers.contains(&10), "{detail}");
    assert_eq!(refused.n("FilesDeleted"), 0);
    let b = read_tree(&d.b);
    assert_eq!(b.len(), 11, "all 10 kept, and the copy made: {b:?}");
    assert_eq!(b["new.txt"], b"new");

    let allowed = d.ok(&["--max-delete", "60%"]);
    assert_eq!(allowed.n("FilesDeletedB"), 6, "{:#}", allowed.summary);
    assert_eq!(d.assert_equal_sides().len(), 5);
    d.ok(&[]).assert_idle();
}

#[test]
fn a_count_max_delete_refuses_above_the_count_and_force_overrides_it() {
    let d = Dirs::synced(10);
    for i in 0..4 {
        remove(&d.a.join(name(i)));
    }
    // 4 of 10 is within the default 50%: the count is what refuses.
    let refused = d.run(&["--max-delete", "3"]);
    refused.assert_refused();
    let detail = refused.error_detail();
    assert!(detail.contains("max_delete"), "{detail}");
    assert!(numbers_in(&detail).contains(&4), "{detail}");
    assert_eq!(read_tree(&d.b).len(), 10);

    let forced = d.ok(&["--max-delete", "3", "--force"]);
    assert_eq!(forced.n("FilesDeletedB"), 4, "{:#}", forced.summary);
    assert_eq!(d.assert_equal_sides().len(), 6);
}

#[test]
fn a_side_that_lists_nothing_is_refused_until_forced() {
    let d = Dirs::synced(5);
    std::fs::rename(&d.a, d.root.path().join("a-moved")).unwrap();
    std::fs::create_dir(&d.a).unwrap();
    let b_before = read_tree(&d.b);
    for extra in [&[][..], &["--max-delete", "100%"][..]] {
        let refused = d.run(extra);
        refused.assert_refused();
        assert!(
            refused.error_detail().contains("lists no keys"),
            "{:#}",
            refused.summary
        );
        assert_eq!(refused.n("FilesDeleted"), 0);
        assert_eq!(read_tree(&d.b), b_before, "B untouched");
        assert!(read_tree(&d.a).is_empty(), "A untouched");
    }
    let forced = d.ok(&["--force"]);
    assert_eq!(forced.n("FilesDeletedB"), 5, "{:#}", forced.summary);
    assert!(read_tree(&d.b).is_empty());
}

#[test]
fn excluded_keys_are_neither_copied_nor_deleted() {
    let d = Dirs::synced(4);
    write_at(&d.a.join("scratch.tmp"), b"scratch", 1.0);
    remove(&d.a.join(name(0)));
    remove(&d.a.join(name(1)));
    let r = d.ok(&["--exclude", "/f00.txt|*.tmp"]);
    assert_eq!(r.actions(&name(1)), ["delete-b/ok"]);
    assert_eq!((r.n("FilesDeleted"), r.n("FilesTransferred")), (1, 0));
    let b = read_tree(&d.b);
    assert!(b.contains_key(&name(0)), "excluded, so kept on B: {b:?}");
    assert!(!b.contains_key("scratch.tmp") && !b.contains_key(&name(1)));
}

// ---------------------------------------------------------------------------
// 5. The base
// ---------------------------------------------------------------------------

#[test]
fn a_lost_base_deletes_nothing_and_loses_no_version() {
    let d = Dirs::synced(3);
    std::fs::remove_dir_all(d.state.join("bases")).unwrap();
    remove(&d.a.join(name(0)));
    write_at(&d.b.join(name(1)), b"edited on b", 1.0);
    let r = d.ok(&[]);
    assert_eq!(r.n("FilesDeleted"), 0, "{:#}", r.summary);
    assert_eq!(r.actions(&name(0)), ["copy-b-to-a/ok"], "deleted file back");
    let both = d.assert_equal_sides();
    let versions: BTreeSet<&[u8]> = both.values().map(Vec::as_slice).collect();
    for v in [&b"file 0"[..], b"file 1", b"edited on b", b"file 2"] {
        assert!(versions.contains(v), "{:?} lost: {both:?}", v);
    }
    d.ok(&[]).assert_idle();
}

#[test]
fn the_other_argument_order_uses_the_same_base() {
    let d = Dirs::new();
    for i in 0..4 {
        write_at(&d.a.join(name(i)), format!("a {i}").as_bytes(), 0.0);
    }
    write_at(&d.b.join("from-b.txt"), b"b", 0.0);
    write_at(&d.a.join("both.txt"), b"same", 0.0);
    write_at(&d.b.join("both.txt"), b"same", 0.0);
    d.ok(&[]);
    let synced = d.assert_equal_sides();
    assert_eq!(synced.len(), 6);

    let reversed = d.run_as(&d.b, &d.a, &[]);
    reversed.assert_idle();

    // In the reversed order the directory b is side A.
    write_at(&d.b.join(name(0)), b"edited in b", 1.0);
    remove(&d.a.join(name(1)));
    let r = d.run_as(&d.b, &d.a, &[]);
    r.assert_ok();
    assert_eq!(r.actions(&name(0)), ["copy-a-to-b/ok"]);
    assert_eq!(r.actions(&name(1)), ["delete-a/ok"]);
    assert_eq!(r.n("FilesConflicted"), 0);
    let both = d.assert_equal_sides();
    assert_eq!(both[&name(0)], b"edited in b");
    assert!(!both.contains_key(&name(1)));
    d.ok(&[]).assert_idle();
}

#[test]
fn the_same_directory_spelled_with_a_trailing_slash_uses_the_same_base() {
    let d = Dirs::synced(4);
    remove(&d.a.join(name(0)));
    let slashed = PathBuf::from(format!("{}/", path_str(&d.a)));
    let r = d.run_as(&slashed, &d.b, &[]);
    r.assert_ok();
    assert_eq!(r.actions(&name(0)), ["delete-b/ok"], "{:#?}", r.report);
    assert_eq!(d.assert_equal_sides().len(), 3);
}

#[test]
fn a_dry_run_changes_neither_side_nor_the_base() {
    let d = Dirs::synced(4);
    write_at(&d.a.join(name(0)), b"edited on a", 10.0);
    remove(&d.a.join(name(1)));
    write_at(&d.a.join("new-a.txt"), b"new", 10.0);
    write_at(&d.b.join(name(2)), b"edited on b", 20.0);
    write_at(&d.a.join(name(3)), b"conflict a", 30.0);
    write_at(&d.b.join(name(3)), b"conflict b!", 40.0);
    let (a, b, base) = (read_tree(&d.a), read_tree(&d.b), base_rows(&d.state));
    assert_eq!(base.len(), 4, "{base:#?}");

    let dry = d.ok(&["--dry-run"]);
    for (key, want) in [
        (name(0), "copy-a-to-b/dry-run"),
        (name(1), "delete-b/dry-run"),
        ("new-a.txt".into(), "copy-a-to-b/dry-run"),
        (name(2), "copy-b-to-a/dry-run"),
        (name(3), "conflict/dry-run"),
    ] {
        assert_eq!(dry.actions(&key), [want], "{key}");
    }
    assert_eq!((dry.n("FilesTransferred"), dry.n("FilesDeleted")), (0, 0));
    assert_eq!(read_tree(&d.a), a, "A changed");
    assert_eq!(read_tree(&d.b), b, "B changed");
    assert_eq!(base_rows(&d.state), base, "the base changed");

    let real = d.ok(&[]);
    assert_eq!(real.n("FilesDeletedB"), 1, "{:#}", real.summary);
    assert_eq!(real.n("FilesConflicted"), 1, "{:#}", real.summary);
    let both = d.assert_equal_sides();
    assert_eq!(both[&name(0)], b"edited on a");
    assert_eq!(both[&name(2)], b"edited on b");
    assert_eq!(both[&name(3)], b"conflict b!");
    assert!(!both.contains_key(&name(1)) && both.contains_key("new-a.txt"));
    assert_ne!(base_rows(&d.state), base);
}

// ---------------------------------------------------------------------------
// 6. A round of changes on both sides converges, on every kind of side
// ---------------------------------------------------------------------------

/// f1..f4 on A, synced; then A creates, edits and deletes one each, and B
/// does the same to others: one run makes both sides equal, and the runs
/// after it do nothing.
async fn a_round_of_changes_converges(sides: Sides) {
    for i in 1..=4 {
        sides
            .a
            .write(&format!("f{i}"), format!("v1 of f{i}").as_bytes(), 0.0)
            .await;
    }
    if matches!(sides.a, Place::Bucket(..)) {
        next_second();
    }
    let first = sides.ok();
    assert_eq!(first.n("FilesTransferredAToB"), 4, "{:#}", first.summary);
    sides.assert_settled();

    sides.a.write("new-a", b"new on a", 10.0).await;
    sides.a.write("f1", b"f1 edited on a", 10.0).await;
    sides.a.remove("f2").await;
    sides.b.write("new-b", b"new on b", 10.0).await;
    sides.b.write("f3", b"f3 edited on b", 10.0).await;
    sides.b.remove("f4").await;
    let r = sides.ok();
    let got = |c: &str| r.n(c);
    assert_eq!(
        [
            "FilesTransferredAToB",
            "FilesTransferredBToA",
            "FilesDeletedA",
            "FilesDeletedB",
            "FilesConflicted",
        ]
        .map(got),
        [2, 2, 1, 1, 0],
        "{:#}",
        r.summary
    );
    let want = tree_of(&[
        ("f1", b"f1 edited on a"),
        ("f3", b"f3 edited on b"),
        ("new-a", b"new on a"),
        ("new-b", b"new on b"),
    ]);
    sides.assert_both(&want).await;
    sides.assert_settled();
    sides.assert_both(&want).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_of_changes_converges_between_two_directories() {
    a_round_of_changes_converges(Sides::new(None, None).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_of_changes_converges_between_a_directory_and_an_s3s_bucket() {
    let s3s = common::s3s();
    a_round_of_changes_converges(Sides::new(None, Some(&s3s)).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_of_changes_converges_between_an_s3s_bucket_and_a_directory() {
    let s3s = common::s3s();
    a_round_of_changes_converges(Sides::new(Some(&s3s), None).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_of_changes_converges_between_two_moto_buckets() {
    let moto = common::moto();
    a_round_of_changes_converges(Sides::new(Some(&moto), Some(&moto)).await).await;
}

// ---------------------------------------------------------------------------
// 7. Tasks and config
// ---------------------------------------------------------------------------

const TWO_WAY_TASK: &str = r#"
[[location]]
name = "A"
path = "{root}/a"

[[location]]
name = "B"
path = "{root}/b"

[[task]]
name = "pair"
source = "A"
destination = "B"
direction = "two-way"
"#;

/// `task start NAME --wait --json`: the execution record, SUCCESS.
fn start_and_wait(env: &TaskEnv, task: &str) -> Value {
    let out = env.run(&["task", "start", task, "--wait", "--json"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).expect("an execution record");
    assert_eq!(status(&rec), "SUCCESS", "{rec:#}");
    rec
}

#[test]
fn a_two_way_task_carries_edits_both_ways() {
    let env = TaskEnv::new(TWO_WAY_TASK);
    let (a, b) = (env.root().join("a"), env.root().join("b"));
    write_at(&a.join("one.txt"), b"one", 0.0);
    write_at(&b.join("two.txt"), b"two", 0.0);
    let first = start_and_wait(&env, "pair");
    assert_eq!(
        (
            first["FilesTransferredAToB"].as_u64(),
            first["FilesTransferredBToA"].as_u64()
        ),
        (Some(1), Some(1)),
        "{first:#}"
    );

    write_at(&b.join("one.txt"), b"one, edited on b", 1.0);
    write_at(&a.join("two.txt"), b"two, edited on a", 1.0);
    let second = start_and_wait(&env, "pair");
    assert_eq!(
        (
            second["FilesTransferredAToB"].as_u64(),
            second["FilesTransferredBToA"].as_u64()
        ),
        (Some(1), Some(1)),
        "{second:#}"
    );
    let want = tree_of(&[
        ("one.txt", b"one, edited on b"),
        ("two.txt", b"two, edited on a"),
    ]);
    assert_eq!(read_tree(&a), want);
    assert_eq!(read_tree(&b), want);
}

#[test]
fn a_two_way_task_refused_by_max_delete_runs_with_override_force() {
    let env = TaskEnv::new(TWO_WAY_TASK);
    let (a, b) = (env.root().join("a"), env.root().join("b"));
    std::fs::create_dir_all(&b).unwrap();
    for i in 0..4 {
        write_at(&a.join(name(i)), b"x", 0.0);
    }
    start_and_wait(&env, "pair");
    for i in 0..3 {
        remove(&a.join(name(i)));
    }
    let out = env.run(&["task", "start", "pair", "--wait", "--json"]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let rec: Value = serde_json::from_str(&out.stdout).expect("an execution record");
    assert_eq!(status(&rec), "ERROR", "{rec:#}");
    let detail = str_of(&rec["ErrorDetail"]);
    assert!(detail.contains("max_delete"), "{rec:#}");
    assert_eq!(read_tree(&b).len(), 4);

    let forced = env.run(&[
        "task",
        "start",
        "pair",
        "--override",
        "force=true",
        "--wait",
        "--json",
    ]);
    assert_eq!(forced.status, 0, "{}", forced.stderr);
    let rec: Value = serde_json::from_str(&forced.stdout).expect("an execution record");
    assert_eq!(rec["FilesDeletedB"].as_u64(), Some(3), "{rec:#}");
    assert_eq!(read_tree(&b).len(), 1);
}

#[test]
fn config_check_rejects_options_of_the_other_direction_naming_the_key() {
    let env = TaskEnv::new(
        r#"
[[task]]
name = "two"
source = "{root}/a"
destination = "{root}/b"
direction = "two-way"
preserve_deleted_files = "REMOVE"

[[task]]
name = "one"
source = "{root}/c"
destination = "{root}/d"
max_delete = "10%"
"#,
    );
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 2, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines.iter().any(|l| l.contains("task `two`")
            && l.contains("`preserve_deleted_files`")
            && l.contains("two-way")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.contains("task `one`")
            && l.contains("`max_delete`")
            && l.contains("one-way")),
        "{}",
        out.stdout
    );
}

#[test]
fn config_check_accepts_a_clean_two_way_task() {
    let config =
        format!("{TWO_WAY_TASK}conflict_policy = \"newer\"\nmax_delete = \"10%\"\nforce = false\n");
    let env = TaskEnv::new(&config);
    let out = env.run(&["config", "check"]);
    assert_eq!(out.status, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("ok ("), "{}", out.stdout);
}

// ---------------------------------------------------------------------------
// 8. Guards
// ---------------------------------------------------------------------------

/// Waits until an execution holds a guard under `state` (its claim file
/// exists); the claim's execution id.
fn wait_for_claim(state: &Path) -> String {
    let start = Instant::now();
    loop {
        let claims: Vec<PathBuf> = std::fs::read_dir(state.join("locks"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for p in claims
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
        {
            let claim = std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            if let Some(id) = claim.as_ref().and_then(|c| c["execution_id"].as_str()) {
                return id.to_string();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the first execution never took its guard"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_sync(state: &Path, args: &[&str]) -> Child {
    sync_cmd(None, state, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start syncmount")
}

#[test]
fn a_running_two_way_execution_refuses_the_other_order_and_readers_of_either_side() {
    let d = Dirs::new();
    let c = d.root.path().join("c");
    // 4 MB at 1 MB/s: the first execution runs about four seconds.
    common::write_tree(&d.a, &[("big.bin", &vec![3u8; 4_000_000][..])]);
    let (a, b) = (path_str(&d.a), path_str(&d.b));
    let slow = [
        &a[..],
        &b[..],
        "--two-way",
        "--bytes-per-second",
        "1000000",
        "--json",
    ];
    let first = spawn_sync(&d.state, &slow);
    let id = wait_for_claim(&d.state);

    let c_arg = path_str(&c);
    for args in [
        [&b[..], &a[..], "--two-way", "--no-queue"].as_slice(),
        [&a[..], &c_arg[..], "--no-queue"].as_slice(),
    ] {
        let out = run(sync_cmd(None, &d.state, args));
        assert_eq!(out.status, 1, "{args:?} should be refused: {}", out.stderr);
        assert!(
            out.stderr.contains(&id),
            "{args:?} should name {id}: {}",
            out.stderr
        );
    }
    assert!(
        !c.exists() || read_tree(&c).is_empty(),
        "A→C copied something"
    );

    let out = first
        .wait_with_output()
        .expect("wait for the first execution");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("a --json summary");
    assert_eq!(out.status.code(), Some(0), "{summary:#}");
    assert_eq!(summary["ExecutionId"], id.as_str());
    assert_eq!(read_tree(&d.b)["big.bin"].len(), 4_000_000);
}
