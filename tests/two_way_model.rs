//! Two-way sync checked against a reference model.
//!
//! Between runs, random user edits land on both sides of a pair (create,
//! edit, delete, rename, chmod on local sides, the same new content written
//! on both). The model knows what each side did to each key since the sides
//! last agreed and predicts, from the rules alone, what both sides must hold
//! after the next run: changed on one side → that version everywhere; on both
//! with equal content → that content; with different content → the newer (by
//! mtime) under the name and the other as `NAME.conflict-<A|B>-<its mtime>`;
//! deleted where the other side is unchanged → gone; deleted against an edit
//! → the edit; no base → never deleted. After every run both sides must be
//! equal, match the prediction key by key, every version a user wrote since
//! the last run must still be there (under its name or a conflict name), the
//! counters must agree, and an immediate re-run must do nothing.
//!
//! The SIGKILL tests run the same kind of workload, larger, kill the run at
//! random points several times, and check that one clean run then reaches
//! the same prediction: nothing lost, no partial or temp files, no open
//! multipart uploads, no conflict for a key that was not in conflict before.
//!
//! Cases are seeded; a failure prints its seed, and `TWO_WAY_MODEL_SEED=N`
//! replays that one case.
//!
//! How the model keeps its predictions exact:
//! - Local writes set mtimes explicitly, strictly later (by ≥ 1 s) than any
//!   mtime the key had on that side, around "now" ± 20 s so local and S3
//!   versions win conflicts either way. Side A's mtimes fall on even
//!   milliseconds and side B's on odd ones, never on a whole second: two
//!   different versions never look simultaneous (the engine treats equal
//!   size and mtime within 1 ms as equal content, and an S3 object's
//!   LastModified is a whole second).
//! - S3 writes are SDK PUTs with no mtime metadata: their time is the
//!   server's LastModified, known only to lie between the instants around the
//!   PUT. A conflict whose two times are that close accepts either winner.
//! - A write always changes a key's bytes (so an S3 rewrite changes its ETag),
//!   a chmod always moves away from the mode the round started with, and no
//!   side is ever emptied by the user (a side listing nothing while the base
//!   is not empty is refused without `--force`, by design; the model does not
//!   exercise that guard and runs with `--max-delete 100%`).
//! - S3 PUTs carry a CRC32C checksum half the time (always when the same
//!   new bytes are written on both sides), the SDK's default CRC32 else.
//!
//! The engine bugs the model found are pinned by deterministic tests at the
//! end of this file (their seeds are in those tests' comments).
//!
//! Two more tests at the end pin bugs of e74aa40 that d9372a0 fixed.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ChecksumAlgorithm;
use common::{RunOutput, S3Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const SEC: i128 = 1_000_000_000;
const MS: i128 = 1_000_000;
/// The modes a chmod picks from (all readable and writable by us).
const MODES: [u32; 5] = [0o600, 0o640, 0o644, 0o664, 0o755];
/// Seeds × rounds per backend: enough to meet every rule many times, few
/// enough to stay well under a minute (moto answers ≈ 360 PUT/s).
const LOCAL_CASES: u64 = 16;
const LOCAL_ROUNDS: usize = 6;
const MOTO_CASES: u64 = 10;
const MOTO_ROUNDS: usize = 5;
/// Killed runs per round of the SIGKILL tests, and the bandwidth they get:
/// each round moves 45 MiB or more, so an uninterrupted run lasts over 4 s
/// and the first random delay always lands inside it.
const KILLS: usize = 3;
const KILL_THROTTLE: &str = "10000000";
const KILL_DELAY_MS: std::ops::Range<u64> = 100..2500;

// ---------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// `TWO_WAY_MODEL_SEED` alone, else `cases` fresh random seeds (or
/// `TWO_WAY_MODEL_CASES` of them, for a longer soak).
fn seeds(cases: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("TWO_WAY_MODEL_SEED") {
        return vec![s.trim().parse().expect("TWO_WAY_MODEL_SEED is a u64")];
    }
    let cases = std::env::var("TWO_WAY_MODEL_CASES")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(cases);
    (0..cases).map(|_| rand::random()).collect()
}

/// Runs one seeded case; a failure names the seed and how to replay it.
fn with_seed(seed: u64, case: impl FnOnce(u64)) {
    // The test harness names each test's thread after the test.
    let test = std::thread::current().name().unwrap_or("TEST").to_string();
    println!("==== {test}: seed {seed}");
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| case(seed))) {
        eprintln!(
            "{test} FAILED with seed {seed}; replay it alone: TWO_WAY_MODEL_SEED={seed} bash scripts/test.sh --test two_way_model {test}"
        );
        resume_unwind(p);
    }
}

// ---------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------

fn ns(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn now_ns() -> i128 {
    ns(SystemTime::now())
}

fn from_ns(t: i128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(t.max(0) as u64)
}

/// When a version was written, as the engine will see it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Time {
    /// A local file's mtime.
    Exact(i128),
    /// An S3 PUT between these instants (LastModified: cut to the second).
    Around(i128, i128),
    /// Never compared (an S3 version from before the round).
    Unknown,
}

impl Time {
    fn range(self) -> Option<(i128, i128)> {
        match self {
            Time::Exact(t) => Some((t, t)),
            Time::Around(lo, hi) => Some((lo - SEC, hi + SEC)),
            Time::Unknown => None,
        }
    }
}

/// The side whose version keeps the name: the newer (A on a tie); `None`
/// when the times are too close to know.
fn newer(a: Time, b: Time) -> Option<char> {
    let ((alo, ahi), (blo, bhi)) = (a.range()?, b.range()?);
    if blo > ahi {
        Some('B')
    } else if bhi <= alo {
        Some('A')
    } else {
        None
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ`, written independently of the engine's.
fn utc_stamp(t: i128) -> String {
    let ms = t.div_euclid(MS);
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i128::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

fn describe(body: &[u8]) -> String {
    format!("{} bytes, crc32c {:08x}", body.len(), crc32c::crc32c(body))
}

// ---------------------------------------------------------------------------
// The two sides
// ---------------------------------------------------------------------------

enum Store {
    Local(PathBuf),
    S3 {
        server: S3Server,
        client: aws_sdk_s3::Client,
        bucket: String,
        prefix: String,
    },
}

struct Side {
    letter: char,
    store: Store,
}

fn stat_of(p: &Path) -> (i128, u32) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
    let mtime = m.modified().expect("mtime");
    (ns(mtime), m.permissions().mode() & 0o7777)
}

/// Removes `dir` and its parents up to `root` while they are empty, as a
/// user tidying up after `rm` would (an empty directory is a key of its own,
/// a marker, which this model leaves out).
fn prune(root: &Path, dir: Option<&Path>) {
    let mut dir = dir;
    while let Some(d) = dir {
        if d == root || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

impl Side {
    fn url(&self) -> String {
        match &self.store {
            Store::Local(root) => common::path_str(root),
            Store::S3 {
                server,
                bucket,
                prefix,
                ..
            } => server.url(bucket, prefix),
        }
    }

    fn root(&self) -> Option<&Path> {
        match &self.store {
            Store::Local(root) => Some(root),
            Store::S3 { .. } => None,
        }
    }

    /// Every key the side holds, with its bytes.
    fn tree(&self) -> BTreeMap<String, Vec<u8>> {
        match &self.store {
            Store::Local(root) => common::read_tree(root),
            Store::S3 {
                server,
                bucket,
                prefix,
                ..
            } => rt().block_on(async {
                use futures::StreamExt;
                let keys = server.keys(bucket, prefix).await;
                futures::stream::iter(keys)
                    .map(|full| async move {
                        let body = server.get_unvalidated(bucket, &full).await;
                        (full[prefix.len()..].to_string(), body)
                    })
                    .buffer_unordered(16)
                    .collect()
                    .await
            }),
        }
    }

    /// The time an S3 object is known by: its `file-mtime` metadata, else
    /// its LastModified; `None` on a local side or when there is no object.
    fn s3_time(&self, key: &str) -> Option<i128> {
        let Store::S3 {
            server,
            bucket,
            prefix,
            ..
        } = &self.store
        else {
            return None;
        };
        let head = rt().block_on(server.head(bucket, &format!("{prefix}{key}")))?;
        let meta = head.metadata().and_then(|m| m.get("file-mtime"));
        let stored = meta.and_then(|v| v.strip_suffix("ns")?.parse().ok());
        stored.or_else(|| {
            let t = head.last_modified()?;
            Some(i128::from(t.secs()) * SEC + i128::from(t.subsec_nanos()))
        })
    }

    /// Local files' (mtime, permission bits); nothing for S3.
    fn stats(&self) -> BTreeMap<String, (i128, u32)> {
        let Some(root) = self.root() else {
            return BTreeMap::new();
        };
        common::tree_entries(root)
            .into_iter()
            .filter(|(_, (_, ft))| ft.is_file())
            .map(|(k, (p, _))| (k, stat_of(&p)))
            .collect()
    }

    /// Our temp files (`.syncmount-*`) anywhere under a local side.
    fn temp_files(&self) -> Vec<String> {
        let Some(root) = self.root() else {
            return Vec::new();
        };
        common::tree_entries(root)
            .into_keys()
            .filter(|k| {
                k.rsplit('/')
                    .next()
                    .unwrap_or("")
                    .starts_with(".syncmount-")
            })
            .collect()
    }

    fn write(&self, key: &str, body: &[u8], mtime: i128, crc32c: bool) -> Time {
        match &self.store {
            Store::Local(root) => {
                let p = root.join(key);
                std::fs::create_dir_all(p.parent().unwrap()).expect("mkdir -p");
                std::fs::write(&p, body).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
                common::set_mtime(&p, from_ns(mtime));
                Time::Exact(stat_of(&p).0)
            }
            Store::S3 {
                client,
                bucket,
                prefix,
                ..
            } => rt().block_on(async {
                let lo = now_ns();
                let full = format!("{prefix}{key}");
                let mut put = client
                    .put_object()
                    .bucket(bucket)
                    .key(&full)
                    .body(ByteStream::from(body.to_vec()));
                if crc32c {
                    put = put.checksum_algorithm(ChecksumAlgorithm::Crc32C);
                }
                put.send()
                    .await
                    .unwrap_or_else(|e| panic!("PutObject s3://{bucket}/{full}: {e:?}"));
                Time::Around(lo, now_ns())
            }),
        }
    }

    fn delete(&self, key: &str) {
        match &self.store {
            Store::Local(root) => {
                let p = root.join(key);
                std::fs::remove_file(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
                prune(root, p.parent());
            }
            Store::S3 {
                client,
                bucket,
                prefix,
                ..
            } => rt().block_on(async {
                let full = format!("{prefix}{key}");
                client
                    .delete_object()
                    .bucket(bucket)
                    .key(&full)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("DeleteObject s3://{bucket}/{full}: {e:?}"));
            }),
        }
    }

    /// A rename: `mv` locally (the mtime moves along), a PUT of the bytes
    /// under the new key and a DELETE of the old one on S3.
    fn rename(&self, from: &str, to: &str, body: &[u8]) -> Time {
        match &self.store {
            Store::Local(root) => {
                let (f, t) = (root.join(from), root.join(to));
                std::fs::create_dir_all(t.parent().unwrap()).expect("mkdir -p");
                std::fs::rename(&f, &t)
                    .unwrap_or_else(|e| panic!("mv {} {}: {e}", f.display(), t.display()));
                prune(root, f.parent());
                Time::Exact(stat_of(&t).0)
            }
            Store::S3 { .. } => {
                let time = self.write(to, body, 0, false);
                self.delete(from);
                time
            }
        }
    }

    fn chmod(&self, key: &str, mode: u32) {
        let p = self.root().expect("chmod on a local side").join(key);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", p.display()));
    }
}

// ---------------------------------------------------------------------------
// The pair and its runs
// ---------------------------------------------------------------------------

struct Pair {
    sides: [Side; 2],
    server: Option<S3Server>,
    state: tempfile::TempDir,
    logs: tempfile::TempDir,
    runs: Cell<u32>,
    /// Extra arguments every run gets.
    extra: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

fn local_side(letter: char, dirs: &mut Vec<tempfile::TempDir>) -> Side {
    let d = common::tempdir();
    let root = d.path().join(letter.to_string());
    std::fs::create_dir(&root).expect("mkdir side");
    dirs.push(d);
    Side {
        letter,
        store: Store::Local(root),
    }
}

impl Pair {
    fn local() -> Pair {
        let mut dirs = Vec::new();
        let sides = [local_side('A', &mut dirs), local_side('B', &mut dirs)];
        Pair::new(sides, None, dirs)
    }

    /// A local side and a moto prefix; `s3_is_a` puts the bucket on side A.
    fn with_moto(s3_is_a: bool) -> Pair {
        let server = common::moto();
        let (bucket, client) = rt().block_on(async {
            (
                server.new_bucket("two-way-model").await,
                server.client().await,
            )
        });
        let mut dirs = Vec::new();
        let letters = if s3_is_a { ['A', 'B'] } else { ['B', 'A'] };
        let s3 = Side {
            letter: letters[0],
            store: Store::S3 {
                server: server.clone(),
                client,
                bucket,
                prefix: "m/".into(),
            },
        };
        let local = local_side(letters[1], &mut dirs);
        let sides = if s3_is_a { [s3, local] } else { [local, s3] };
        Pair::new(sides, Some(server), dirs)
    }

    fn new(sides: [Side; 2], server: Option<S3Server>, dirs: Vec<tempfile::TempDir>) -> Pair {
        Pair {
            sides,
            server,
            state: common::tempdir(),
            logs: common::tempdir(),
            runs: Cell::new(0),
            extra: Vec::new(),
            _dirs: dirs,
        }
    }

    fn s3(&self) -> Option<(&S3Server, &str)> {
        self.sides.iter().find_map(|s| match &s.store {
            Store::S3 { server, bucket, .. } => Some((server, bucket.as_str())),
            Store::Local(_) => None,
        })
    }

    /// `syncmount sync A B --two-way …` writing its report to a new file.
    fn command(&self, extra: &[&str]) -> (Command, PathBuf) {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let report = self.logs.path().join(format!("run-{n}.jsonl"));
        let (a, b, r) = (
            self.sides[0].url(),
            self.sides[1].url(),
            common::path_str(&report),
        );
        let mut args = vec![
            a.as_str(),
            b.as_str(),
            "--two-way",
            "--max-delete",
            "100%",
            "--json",
            "--report",
            r.as_str(),
        ];
        args.extend(self.extra.iter().map(String::as_str));
        args.extend(extra);
        (
            common::sync_cmd(self.server.as_ref(), self.state.path(), &args),
            report,
        )
    }

    /// One run to completion: it must succeed with no failed object.
    fn sync(&self, ctx: &str) -> (Value, Vec<Value>) {
        let (cmd, report) = self.command(&[]);
        let out = common::run(cmd);
        let summary = expect_success(ctx, &out);
        (summary, read_report_lenient(&report))
    }

    /// Both sides' trees, which must be equal; returns one.
    fn same_on_both_sides(&self, ctx: &str) -> BTreeMap<String, Vec<u8>> {
        let (a, b) = (self.sides[0].tree(), self.sides[1].tree());
        if a != b {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            let diff: Vec<String> = keys
                .into_iter()
                .filter(|k| a.get(*k) != b.get(*k))
                .map(|k| {
                    let show = |t: &BTreeMap<String, Vec<u8>>| {
                        t.get(k).map_or("missing".to_string(), |b| describe(b))
                    };
                    format!("`{k}`: A {} / B {}", show(&a), show(&b))
                })
                .collect();
            panic!(
                "{ctx}: the sides differ after the run:\n  {}",
                diff.join("\n  ")
            );
        }
        a
    }

    fn assert_no_temp_files(&self, ctx: &str) {
        for side in &self.sides {
            let left = side.temp_files();
            assert!(
                left.is_empty(),
                "{ctx}: temp files left on side {}: {left:?}",
                side.letter
            );
        }
    }
}

fn expect_success(ctx: &str, out: &RunOutput) -> Value {
    let summary = common::parse_summary(out);
    assert_eq!(out.status, 0, "{ctx}: the run failed: {}", out.stderr);
    assert_eq!(summary["Status"], "SUCCESS", "{ctx}: {summary}");
    assert_eq!(
        common::counter(&summary, "FilesFailed"),
        0,
        "{ctx}: {summary}"
    );
    summary
}

/// A report's complete lines (a killed run may leave a partial last one).
fn read_report_lenient(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The keys a report calls conflicts: both sides changed them differently,
/// or one deleted what the other edited.
fn conflicts_in(report: &[Value]) -> BTreeSet<String> {
    report
        .iter()
        .filter(|r| {
            let reason = r["reason"].as_str().unwrap_or("");
            r["action"] == "conflict" || reason.contains("-deleted-on-")
        })
        .filter_map(|r| r["key"].as_str().map(str::to_string))
        .collect()
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Version {
    body: Vec<u8>,
    time: Time,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}, {:?})", describe(&self.body), self.time)
    }
}

/// What the sides agreed on after the last run, and what the model keeps
/// from one round to the next.
#[derive(Default)]
struct Model {
    synced: BTreeMap<String, Vec<u8>>,
    /// Keys both sides changed to equal content: recorded as they are, so
    /// their modes may differ until one side's version is copied again.
    mode_free: BTreeSet<String>,
    /// Per side, the latest mtime a key has shown there (writes go later).
    last: [BTreeMap<String, i128>; 2],
}

/// One side's edits in the current round.
struct Edits {
    view: BTreeMap<String, Version>,
    touched: BTreeSet<String>,
    start_modes: BTreeMap<String, u32>,
    chmodded: BTreeSet<String>,
}

/// What a side did to a key since the last run.
#[derive(Clone, Debug)]
enum St {
    Absent,
    Unchanged,
    Deleted,
    Changed(Version),
}

/// The model's prediction for one run.
#[derive(Default, Debug)]
struct Want {
    keep: BTreeMap<String, Vec<u8>>,
    /// Keys changed differently on both sides: (A's, B's) versions.
    conflicts: BTreeMap<String, [Version; 2]>,
    /// Those keys and the edits that beat a delete.
    conflict_keys: BTreeSet<String>,
    mode_free: BTreeSet<String>,
    /// Every version a user wrote this round that must survive.
    written: Vec<(char, String, Vec<u8>)>,
    transferred: u64,
    conflicted: u64,
    /// Keys deleted on one side and unchanged on the other.
    deleted: BTreeSet<String>,
}

struct Round<'a> {
    pair: &'a Pair,
    model: &'a mut Model,
    rng: &'a mut StdRng,
    edits: [Edits; 2],
    /// Whether each operation is printed (not for the kill tests' hundreds).
    verbose: bool,
}

fn random_body(rng: &mut StdRng, big: bool) -> Vec<u8> {
    let len = if big {
        rng.random_range(10 << 20..=20 << 20)
    } else {
        match rng.random_range(0..10) {
            0 => 0,
            1..=5 => 8,
            _ => rng.random_range(1..400),
        }
    };
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

impl<'a> Round<'a> {
    fn start(pair: &'a Pair, model: &'a mut Model, rng: &'a mut StdRng) -> Round<'a> {
        let edits = [0, 1].map(|x| {
            let stats = pair.sides[x].stats();
            let view = model
                .synced
                .iter()
                .map(|(k, body)| {
                    let time = stats.get(k).map_or(Time::Unknown, |s| Time::Exact(s.0));
                    let v = Version {
                        body: body.clone(),
                        time,
                    };
                    (k.clone(), v)
                })
                .collect();
            Edits {
                view,
                touched: BTreeSet::new(),
                start_modes: stats.iter().map(|(k, s)| (k.clone(), s.1)).collect(),
                chmodded: BTreeSet::new(),
            }
        });
        Round {
            pair,
            model,
            rng,
            edits,
            verbose: true,
        }
    }

    /// Shows a user operation (a failing case's output tells its story).
    fn log(&self, x: usize, what: String) {
        if self.verbose {
            println!("  side {}: {what}", self.pair.sides[x].letter);
        }
    }

    /// A local mtime for a new version of `key` on side `x`: at least a
    /// second after any it had there, near now, on side x's millisecond
    /// parity and never on a whole second.
    fn next_mtime(&mut self, x: usize, key: &str) -> i128 {
        let floor = self.model.last[x].get(key).map_or(i128::MIN, |t| t + SEC);
        let near = now_ns() + self.rng.random_range(-20 * SEC..20 * SEC);
        let mut ms = floor.max(near).div_euclid(MS) + 1;
        while ms.rem_euclid(2) != x as i128 || ms.rem_euclid(1000) == 0 {
            ms += 1;
        }
        ms * MS
    }

    fn new_body(&mut self, x: usize, key: &str, big: bool) -> Vec<u8> {
        loop {
            let b = random_body(self.rng, big);
            if self.writable(x, key, &b) {
                return b;
            }
        }
    }

    /// Whether `body` may be written to `key` on side `x`: it changes the
    /// bytes there, and on S3 it is not the version the base holds either
    /// (its ETag would be the agreed one: the same bytes, taken as
    /// unchanged, whatever LastModified says).
    fn writable(&self, x: usize, key: &str, body: &[u8]) -> bool {
        let now = self.edits[x].view.get(key).map(|v| &v.body);
        let base = self.model.synced.get(key);
        let s3 = self.pair.sides[x].root().is_none();
        now.is_none_or(|b| b != body) && !(s3 && base.is_some_and(|b| b == body))
    }

    fn write(&mut self, x: usize, key: &str, body: Vec<u8>, crc32c: bool) {
        let mtime = self.next_mtime(x, key);
        let time = self.pair.sides[x].write(key, &body, mtime, crc32c);
        self.log(x, format!("write `{key}` {} {time:?}", describe(&body)));
        if let Time::Exact(t) = time {
            self.model.last[x].insert(key.to_string(), t);
        }
        self.edits[x].touched.insert(key.to_string());
        self.edits[x]
            .view
            .insert(key.to_string(), Version { body, time });
    }

    fn delete(&mut self, x: usize, key: &str) {
        self.pair.sides[x].delete(key);
        self.log(x, format!("delete `{key}`"));
        self.edits[x].view.remove(key);
        self.edits[x].touched.insert(key.to_string());
    }

    fn rename(&mut self, x: usize, from: &str, to: &str) {
        let v = self.edits[x].view.remove(from).expect("renamed key exists");
        let time = self.pair.sides[x].rename(from, to, &v.body);
        self.log(x, format!("rename `{from}` → `{to}` {time:?}"));
        if let Time::Exact(t) = time {
            let last = self.model.last[x].entry(to.to_string()).or_insert(t);
            *last = (*last).max(t);
        }
        for k in [from, to] {
            self.edits[x].touched.insert(k.to_string());
        }
        self.edits[x]
            .view
            .insert(to.to_string(), Version { body: v.body, time });
    }

    /// Moves a local file's mode away from the one the round started with.
    fn chmod(&mut self, x: usize, key: &str) {
        let side = &self.pair.sides[x];
        let path = side.root().expect("local").join(key);
        let (mtime, now) = stat_of(&path);
        let start = self.edits[x].start_modes.get(key).copied();
        let choices: Vec<u32> = MODES
            .into_iter()
            .filter(|m| *m != now && Some(*m) != start)
            .collect();
        let mode = choices[self.rng.random_range(0..choices.len())];
        side.chmod(key, mode);
        self.log(x, format!("chmod `{key}` {now:o} → {mode:o}"));
        let e = &mut self.edits[x];
        e.chmodded.insert(key.to_string());
        if e.touched.insert(key.to_string()) {
            // The version now differs only in its mode; its time is its mtime.
            e.view.get_mut(key).expect("chmodded key exists").time = Time::Exact(mtime);
        }
    }

    /// One random user operation on a random side.
    fn random_op(&mut self, names: &[String]) {
        let x = self.rng.random_range(0..2);
        let is_local = self.pair.sides[x].root().is_some();
        // The kill tests' big files get their own operations.
        let existing: Vec<String> = self.edits[x]
            .view
            .keys()
            .filter(|k| !k.starts_with("big"))
            .cloned()
            .collect();
        let free: Vec<&String> = names
            .iter()
            .filter(|n| !self.edits[x].view.contains_key(*n))
            .collect();
        // A rename target new to this side since the last run.
        let fresh: Vec<&String> = free
            .iter()
            .copied()
            .filter(|n| !self.model.synced.contains_key(*n))
            .collect();
        let chmoddable: Vec<&String> = existing
            .iter()
            .filter(|k| {
                // Not a key both sides changed to equal content with other
                // modes: the base holds A's mode, so a chmod on B to A's mode
                // makes B "unchanged" — a fair reading the model does not
                // follow.
                !self.edits[x].chmodded.contains(*k) && !self.model.mode_free.contains(*k)
            })
            .collect();
        let pick = |rng: &mut StdRng, v: &[&String]| v[rng.random_range(0..v.len())].clone();
        let roll = self.rng.random_range(0..100);
        let crc = self.rng.random_bool(0.5);
        if roll < 10 {
            // The same new bytes on both sides.
            let key = names[self.rng.random_range(0..names.len())].clone();
            let body = loop {
                let b = random_body(self.rng, false);
                if self.writable(0, &key, &b) && self.writable(1, &key, &b) {
                    break b;
                }
            };
            self.write(0, &key, body.clone(), true);
            self.write(1, &key, body, true);
        } else if roll < 25 && existing.len() >= 2 {
            let key = pick(self.rng, &existing.iter().collect::<Vec<_>>());
            self.delete(x, &key);
        } else if roll < 35 && !existing.is_empty() && !fresh.is_empty() {
            let from = pick(self.rng, &existing.iter().collect::<Vec<_>>());
            let to = pick(self.rng, &fresh);
            self.rename(x, &from, &to);
        } else if roll < 45 && is_local && !chmoddable.is_empty() {
            let key = pick(self.rng, &chmoddable);
            self.chmod(x, &key);
        } else if (roll < 70 || free.is_empty()) && !existing.is_empty() {
            let key = pick(self.rng, &existing.iter().collect::<Vec<_>>());
            let body = self.new_body(x, &key, false);
            self.write(x, &key, body, crc);
        } else if !free.is_empty() {
            let key = pick(self.rng, &free);
            let body = self.new_body(x, &key, false);
            self.write(x, &key, body, crc);
        }
    }

    fn state(&self, x: usize, key: &str) -> St {
        let e = &self.edits[x];
        match (e.view.get(key), self.model.synced.contains_key(key)) {
            (Some(v), _) if e.touched.contains(key) => St::Changed(v.clone()),
            (Some(_), true) => St::Unchanged,
            (Some(_), false) => unreachable!("untouched `{key}` not in the base"),
            (None, true) => St::Deleted,
            (None, false) => St::Absent,
        }
    }

    /// Touches (a later mtime) a local version of a key with no base that a
    /// different version of equal size on the other side could pass for:
    /// same mtime within the engine's 1 ms, which happens when a local file
    /// renamed with an mtime taken from an S3 LastModified meets a PUT of
    /// that name in the same second. Without a base such versions are taken
    /// for equal content (a first run's quick check, by design); with one,
    /// the engine compares their bytes (shown by
    /// `versions_of_equal_size_and_mtime_changed_on_both_sides_are_both_kept`).
    fn separate_lookalikes(&mut self) {
        let close = |a: Time, b: Time| match (a, b) {
            (Time::Exact(a), Time::Exact(b)) => (a - b).abs() < 2 * MS,
            (Time::Exact(t), Time::Around(lo, hi)) | (Time::Around(lo, hi), Time::Exact(t)) => {
                let sub = t.rem_euclid(SEC);
                (lo - SEC..=hi + SEC).contains(&t) && !(2 * MS..SEC - 2 * MS).contains(&sub)
            }
            _ => false,
        };
        let keys: Vec<String> = self.edits[0].view.keys().cloned().collect();
        let mut queue = keys;
        while let Some(key) = queue.pop() {
            let (St::Changed(a), St::Changed(b)) = (self.state(0, &key), self.state(1, &key))
            else {
                continue;
            };
            if self.model.synced.contains_key(&key)
                || a.body == b.body
                || a.body.len() != b.body.len()
                || !close(a.time, b.time)
            {
                continue;
            }
            // Looked at again after the touch.
            queue.push(key.clone());
            let x = if matches!(a.time, Time::Exact(_)) {
                0
            } else {
                1
            };
            let mtime = self.next_mtime(x, &key);
            let path = self.pair.sides[x].root().expect("local").join(&key);
            common::set_mtime(&path, from_ns(mtime));
            let t = stat_of(&path).0;
            self.log(x, format!("touch `{key}` {t}"));
            self.model.last[x].insert(key.clone(), t);
            self.edits[x].view.get_mut(&key).expect("changed").time = Time::Exact(t);
        }
    }

    /// What the rules say the next run must leave on both sides.
    fn predict(&self) -> Want {
        let mut w = Want::default();
        let keys: BTreeSet<&String> = self
            .model
            .synced
            .keys()
            .chain(self.edits[0].view.keys())
            .chain(self.edits[1].view.keys())
            .collect();
        for key in keys {
            let (sa, sb) = (self.state(0, key), self.state(1, key));
            for (x, s) in [(0, &sa), (1, &sb)] {
                if let St::Changed(v) = s {
                    let letter = self.pair.sides[x].letter;
                    w.written.push((letter, key.clone(), v.body.clone()));
                }
            }
            let copied = |w: &mut Want, v: &Version| {
                w.keep.insert(key.clone(), v.body.clone());
                w.transferred += 1;
            };
            match (&sa, &sb) {
                (St::Unchanged, St::Unchanged) => {
                    w.keep.insert(key.clone(), self.model.synced[key].clone());
                    if self.model.mode_free.contains(key) {
                        w.mode_free.insert(key.clone());
                    }
                }
                (St::Changed(v), St::Unchanged | St::Absent)
                | (St::Unchanged | St::Absent, St::Changed(v)) => copied(&mut w, v),
                (St::Changed(v), St::Deleted) | (St::Deleted, St::Changed(v)) => {
                    copied(&mut w, v);
                    w.conflicted += 1;
                    w.conflict_keys.insert(key.clone());
                }
                (St::Deleted, St::Unchanged) | (St::Unchanged, St::Deleted) => {
                    w.deleted.insert(key.clone());
                }
                (St::Changed(va), St::Changed(vb)) if va.body == vb.body => {
                    w.keep.insert(key.clone(), va.body.clone());
                    w.mode_free.insert(key.clone());
                }
                (St::Changed(va), St::Changed(vb)) => {
                    w.conflicts.insert(key.clone(), [va.clone(), vb.clone()]);
                    w.conflict_keys.insert(key.clone());
                    w.conflicted += 1;
                    // The loser to its conflict name on both sides, the
                    // winner over the loser's side.
                    w.transferred += 3;
                }
                (St::Deleted | St::Absent, St::Deleted | St::Absent) => {}
                (a, b) => panic!("the model reached an impossible pair for `{key}`: {a:?} {b:?}"),
            }
        }
        w
    }
}

/// `name` is `KEY.conflict-<side>-<stamp>` for this `key`: (side, stamp).
fn conflict_suffix<'n>(name: &'n str, key: &str) -> Option<(char, &'n str)> {
    let rest = name.strip_prefix(key)?.strip_prefix(".conflict-")?;
    let (side, stamp) = rest.split_once('-')?;
    let side = match side {
        "A" => 'A',
        "B" => 'B',
        _ => return None,
    };
    let shape = stamp.len() == 20
        && stamp.char_indices().all(|(i, c)| match i {
            8 => c == 'T',
            15 => c == '.',
            19 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    shape.then_some((side, stamp))
}

/// The tree after a run against the prediction, key by key.
fn check_tree(ctx: &str, want: &Want, got: &BTreeMap<String, Vec<u8>>) {
    for (k, body) in &want.keep {
        match got.get(k) {
            Some(b) if b == body => {}
            Some(b) => panic!(
                "{ctx}: `{k}` holds {}, the rules say {}",
                describe(b),
                describe(body)
            ),
            None => panic!("{ctx}: `{k}` is gone, the rules say {}", describe(body)),
        }
    }
    let mut unexplained: BTreeSet<&String> = got
        .keys()
        .filter(|k| !want.keep.contains_key(*k) && !want.conflicts.contains_key(*k))
        .collect();
    for (k, [va, vb]) in &want.conflicts {
        let at = got
            .get(k)
            .unwrap_or_else(|| panic!("{ctx}: conflict `{k}`: the name holds neither version"));
        let (won, lost) = if *at == va.body {
            ('A', vb)
        } else if *at == vb.body {
            ('B', va)
        } else {
            panic!(
                "{ctx}: conflict `{k}` holds {}, neither A's {} nor B's {}",
                describe(at),
                describe(&va.body),
                describe(&vb.body)
            );
        };
        if let Some(newer) = newer(va.time, vb.time) {
            assert_eq!(
                won, newer,
                "{ctx}: conflict `{k}`: side {newer}'s version is newer (A {:?}, B {:?}) and should keep the name",
                va.time, vb.time
            );
        }
        let loser = if won == 'A' { 'B' } else { 'A' };
        let kept: Vec<&String> = unexplained
            .iter()
            .copied()
            .filter(|n| conflict_suffix(n, k).is_some())
            .collect();
        assert_eq!(
            kept.len(),
            1,
            "{ctx}: conflict `{k}`: expected one conflict copy, found {kept:?} in {:?}",
            got.keys().collect::<Vec<_>>()
        );
        let name = kept[0];
        unexplained.remove(name);
        let (side, stamp) = conflict_suffix(name, k).unwrap();
        assert_eq!(side, loser, "{ctx}: `{name}` names the wrong side");
        assert!(
            got[name] == lost.body,
            "{ctx}: `{name}` holds {}, side {loser}'s version was {}",
            describe(&got[name]),
            describe(&lost.body)
        );
        if let Some((lo, hi)) = lost.time.range() {
            let (lo, hi) = (utc_stamp(lo), utc_stamp(hi));
            assert!(
                lo.as_str() <= stamp && stamp <= hi.as_str(),
                "{ctx}: `{name}`: the stamp is not the losing version's mtime ({lo} ..= {hi})"
            );
        }
    }
    assert!(
        unexplained.is_empty(),
        "{ctx}: keys no rule explains: {unexplained:?}"
    );
    for (side, k, body) in &want.written {
        let found = got
            .iter()
            .any(|(n, b)| b == body && (n == k || conflict_suffix(n, k).is_some()));
        assert!(
            found,
            "{ctx}: the version side {side} wrote to `{k}` ({}) is lost",
            describe(body)
        );
    }
}

fn check_counters(
    ctx: &str,
    s: &Value,
    report: &[Value],
    want: &Want,
    got: &BTreeMap<String, Vec<u8>>,
) {
    // A deleted conflict copy whose name a conflict of this run wrote again
    // (its loser has the same side and mtime stamp) holds that new copy
    // (`check_tree` saw it): not deleted.
    let deleted = want
        .deleted
        .iter()
        .filter(|k| !got.contains_key(*k))
        .count() as u64;
    for (name, n) in [
        ("FilesTransferred", want.transferred),
        ("FilesConflicted", want.conflicted),
        ("FilesDeleted", deleted),
    ] {
        let lines: Vec<String> = report.iter().map(Value::to_string).collect();
        assert_eq!(
            common::counter(s, name),
            n,
            "{ctx}: {name}: {s}\nreport:\n{}\nprediction: {want:?}",
            lines.join("\n")
        );
    }
}

/// (c) An immediate re-run has nothing to do. The rule, for S3 sides too:
/// the first re-run transfers, conflicts and deletes nothing — no extra
/// re-run is allowed. The engine records a copy's fingerprint by a stat
/// once it is written; where it cannot, the re-run HEADs the key and finds
/// it as recorded, which costs a request (FilesSkipped), not a transfer.
fn check_rerun(ctx: &str, pair: &Pair, before: &BTreeMap<String, Vec<u8>>) {
    let ctx = format!("{ctx}, re-run");
    let (s, report) = pair.sync(&ctx);
    let lines: Vec<String> = report.iter().map(Value::to_string).collect();
    for name in ["FilesTransferred", "FilesConflicted", "FilesDeleted"] {
        assert_eq!(
            common::counter(&s, name),
            0,
            "{ctx}: {name}: {s}\nreport:\n{}",
            lines.join("\n")
        );
    }
    let after = pair.same_on_both_sides(&ctx);
    assert!(after == *before, "{ctx}: the re-run changed the tree");
}

/// Local⇄local: modes agree except where both sides changed a key to equal
/// content (recorded as it is).
fn check_modes(ctx: &str, pair: &Pair, want: &Want) {
    if pair.sides.iter().any(|s| s.root().is_none()) {
        return;
    }
    let (a, b) = (pair.sides[0].stats(), pair.sides[1].stats());
    for (k, (_, ma)) in &a {
        let mb = b.get(k).map(|s| format!("{:o}", s.1));
        if !want.mode_free.contains(k) {
            assert_eq!(
                Some(format!("{ma:o}")),
                mb,
                "{ctx}: `{k}`: modes differ between A and B"
            );
        }
    }
}

impl Model {
    /// The agreed tree after a checked run.
    fn advance(&mut self, pair: &Pair, got: BTreeMap<String, Vec<u8>>, want: Want) {
        self.synced = got;
        self.mode_free = want.mode_free;
        for (x, side) in pair.sides.iter().enumerate() {
            for (k, (t, _)) in side.stats() {
                let last = self.last[x].entry(k).or_insert(t);
                *last = (*last).max(t);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The model test
// ---------------------------------------------------------------------------

/// 16 names in 3 directories and the root: small enough that both sides
/// often touch the same key.
fn small_pool() -> Vec<String> {
    let mut v: Vec<String> = (0..4).map(|i| format!("t{i}")).collect();
    for d in 0..3 {
        v.extend((0..4).map(|i| format!("d{d}/f{i}")));
    }
    v
}

fn model_case(seed: u64, pair: &Pair, rounds: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let names = small_pool();
    for round in 0..rounds {
        let ctx = format!("seed {seed}, round {round}");
        let ops = rng.random_range(2..=14);
        let mut r = Round::start(pair, &mut model, &mut rng);
        for _ in 0..ops {
            r.random_op(&names);
        }
        r.separate_lookalikes();
        let want = r.predict();
        println!(
            "{ctx}: {ops} ops; expect {} keys, {} conflicts ({} kept both), {} deletes",
            want.keep.len(),
            want.conflicted,
            want.conflicts.len(),
            want.deleted.len()
        );
        let (s, report) = pair.sync(&ctx);
        let got = pair.same_on_both_sides(&ctx);
        check_tree(&ctx, &want, &got);
        check_counters(&ctx, &s, &report, &want, &got);
        check_modes(&ctx, pair, &want);
        pair.assert_no_temp_files(&ctx);
        check_rerun(&ctx, pair, &got);
        model.advance(pair, got, want);
    }
}

#[test]
fn local_and_local_random_edits_on_both_sides_end_as_the_model_says_and_a_rerun_does_nothing() {
    for seed in seeds(LOCAL_CASES) {
        with_seed(seed, |seed| model_case(seed, &Pair::local(), LOCAL_ROUNDS));
    }
}

#[test]
fn local_and_moto_random_edits_on_both_sides_end_as_the_model_says_and_a_rerun_does_nothing() {
    for seed in seeds(MOTO_CASES) {
        with_seed(seed, |seed| {
            let pair = Pair::with_moto(seed % 2 == 0);
            model_case(seed, &pair, MOTO_ROUNDS)
        });
    }
}

// ---------------------------------------------------------------------------
// SIGKILL at random points
// ---------------------------------------------------------------------------

/// Round 0 of the kill test: a few hundred small files spread over both
/// sides (some on both, equal or not) and three big ones.
fn populate(r: &mut Round, names: &[String]) {
    for key in names.iter().take(300) {
        let roll = r.rng.random_range(0..10);
        let body = random_body(r.rng, false);
        let crc = r.rng.random_bool(0.5);
        match roll {
            0..=3 => r.write(0, key, body, crc),
            4..=7 => r.write(1, key, body, crc),
            8 => {
                r.write(0, key, body.clone(), true);
                r.write(1, key, body, true);
            }
            _ => {
                r.write(0, key, body, crc);
                let other = r.new_body(0, key, false);
                r.write(1, key, other, crc);
            }
        }
    }
    for (x, key) in [(0, "big0"), (0, "big1"), (1, "big2")] {
        let body = random_body(r.rng, true);
        r.write(x, key, body, false);
    }
}

/// Round 1: random edits, and the big files edited on both sides (a big
/// conflict), on one side, deleted and created.
fn churn(r: &mut Round, names: &[String]) {
    for _ in 0..150 {
        r.random_op(names);
    }
    for (x, key) in [(0, "big0"), (1, "big0"), (1, "big1")] {
        let body = random_body(r.rng, true);
        r.write(x, key, body, false);
    }
    r.delete(0, "big2");
    let body = random_body(r.rng, true);
    r.write(1, "big3", body, false);
}

/// Runs killed after a random delay, [`KILLS`] times; returns how many were
/// still running when killed and the conflicts their reports name.
fn killed_runs(ctx: &str, pair: &Pair, rng: &mut StdRng) -> (usize, BTreeSet<String>) {
    let (mut landed, mut conflicts) = (0, BTreeSet::new());
    for i in 0..KILLS {
        let (mut cmd, report) = pair.command(&["--bytes-per-second", KILL_THROTTLE]);
        let out_path = pair
            .logs
            .path()
            .join(format!("killed-{}.out", pair.runs.get()));
        let out = std::fs::File::create(&out_path).expect("output file");
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {shown}: {e}"));
        // A random kill point (not a wait for a state): the delay is drawn
        // from the seed; the loop only stops early if the run ends first.
        let delay = Duration::from_millis(rng.random_range(KILL_DELAY_MS));
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && child.try_wait().expect("try_wait").is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let status = match child.try_wait().expect("try_wait") {
            Some(status) => status,
            None => {
                child.kill().expect("SIGKILL");
                landed += 1;
                child.wait().expect("reap the killed run")
            }
        };
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        println!("{ctx}: run {i} after {delay:?}: {status}\n$ {shown}\n{output}");
        assert!(
            status.signal() == Some(libc::SIGKILL) || status.success(),
            "{ctx}: killed run {i} ended {status} on its own:\n{output}"
        );
        conflicts.extend(conflicts_in(&read_report_lenient(&report)));
    }
    (landed, conflicts)
}

fn kill_case(seed: u64, pair: &Pair) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let names: Vec<String> = (0..400).map(|i| format!("k{}/s{i:03}", i % 8)).collect();
    for round in 0..2 {
        let ctx = format!("seed {seed}, kill round {round}");
        let mut r = Round::start(pair, &mut model, &mut rng);
        r.verbose = false;
        if round == 0 {
            populate(&mut r, &names);
        } else {
            churn(&mut r, &names);
        }
        r.separate_lookalikes();
        let want = r.predict();
        let (landed, mut conflicts) = killed_runs(&ctx, pair, &mut rng);
        assert!(
            landed > 0,
            "{ctx}: every run ended before its kill: the workload is too small to test a crash"
        );
        if let Some((server, bucket)) = pair.s3() {
            let open = rt().block_on(server.open_uploads(bucket));
            println!("{ctx}: uploads the kills left open: {open:?}");
        }
        let (s, report) = pair.sync(&format!("{ctx}, clean run"));
        conflicts.extend(conflicts_in(&report));
        let got = pair.same_on_both_sides(&ctx);
        check_tree(&ctx, &want, &got);
        let unexpected: Vec<&String> = conflicts.difference(&want.conflict_keys).collect();
        assert!(
            unexpected.is_empty(),
            "{ctx}: conflicts reported for keys only one side changed (or both equally): {unexpected:?}"
        );
        assert!(
            common::counter(&s, "FilesConflicted") <= want.conflicted,
            "{ctx}: more conflicts than the workload made: {s}"
        );
        check_modes(&ctx, pair, &want);
        pair.assert_no_temp_files(&ctx);
        if let Some((server, bucket)) = pair.s3() {
            let open = rt().block_on(server.open_uploads(bucket));
            assert_eq!(open, Some(Vec::new()), "{ctx}: multipart uploads left open");
        }
        check_rerun(&ctx, pair, &got);
        model.advance(pair, got, want);
    }
}

#[test]
fn local_and_local_runs_killed_at_random_points_then_one_clean_run_lose_nothing() {
    for seed in seeds(1) {
        with_seed(seed, |seed| kill_case(seed, &Pair::local()));
    }
}

#[test]
fn local_and_moto_runs_killed_at_random_points_then_one_clean_run_lose_nothing() {
    for seed in seeds(1) {
        with_seed(seed, |seed| {
            let mut pair = Pair::with_moto(seed % 2 == 0);
            // Big files go up in 5 MiB parts, so a kill can leave an upload open.
            pair.extra = ["--multipart-threshold", "5242880", "--part-size", "5242880"]
                .map(String::from)
                .to_vec();
            kill_case(seed, &pair)
        });
    }
}

// ---------------------------------------------------------------------------
// Minimal cases of what the model found
// ---------------------------------------------------------------------------

/// A chmod of `k` on the `local` side is the next run's one copy (counted
/// in `counter`) and its mode lands in the S3 object's metadata.
fn chmod_reaches_s3(pair: &Pair, local: &Side, counter: &str, ctx: &str) {
    local.chmod("k", 0o600);
    let (s, report) = pair.sync(ctx);
    assert_eq!(
        common::counter(&s, counter),
        1,
        "{ctx}: the chmod was not copied to S3: {s}\n{report:?}"
    );
    let (server, bucket) = pair.s3().expect("an S3 side");
    let meta = rt().block_on(server.head_metadata(bucket, "m/k"));
    assert_eq!(
        meta.get("file-permissions").map(String::as_str),
        Some("0100600"),
        "{ctx}: the S3 object's metadata: {meta:?}"
    );
}

/// A chmod is a change like any other ("metadata-only changes too",
/// src/engine/three_way.rs). At e74aa40 a key first written to S3 by a plain
/// PUT was recorded in the base without a mode; a later chmod of its local
/// copy then matched the base ("unknown mode is no evidence"), the base took
/// the new fingerprint, and the mode never reached S3. Found by the model
/// (moto, seed 6787893860075593429, round 4: `chmod d0/f1 644 → 640` on the
/// local side copied nothing); fixed by d9372a0 (the written side's stored
/// metadata goes into the base).
#[test]
fn a_local_chmod_of_a_key_that_came_from_s3_without_a_mode_reaches_s3() {
    let pair = Pair::with_moto(false);
    let ctx = "chmod of a key born on S3";
    let (local, s3) = (&pair.sides[0], &pair.sides[1]);
    s3.write("k", b"written by a plain PUT", 0, false);
    let (s, _) = pair.sync(ctx);
    assert_eq!(common::counter(&s, "FilesTransferredBToA"), 1, "{s}");
    chmod_reaches_s3(&pair, local, "FilesTransferredAToB", ctx);
}

/// An S3 object rewritten by another writer with the same size, in the same
/// second as the version the base holds, is still a change. The engine
/// compared the object's HEAD with the base by size, time to the second,
/// mode and CRC32C: a plain PUT has no mode and no CRC32C, its LastModified
/// is that same second, so it "matched", the ETag that moved was not looked
/// at, the base took the new fingerprint and the sides stayed different for
/// good (the next local edit overwrote the S3 version). Now a listed ETag
/// other than the recorded one is a change (`three_way::listed_state`). Found by the model
/// (moto, seed 6456091759157731850, round 1: a rewrite of a conflict copy,
/// whose base row has no CRC32C at all). The PUT, the run and the rewrite
/// must fit in one second: attempts are repeated until they do.
#[test]
fn an_s3_rewrite_of_the_same_size_in_the_same_second_is_copied() {
    let pair = Pair::with_moto(false);
    let (local, s3) = (&pair.sides[0], &pair.sides[1]);
    let (server, bucket) = pair.s3().expect("an S3 side");
    let second = |key: &str| {
        let head = rt().block_on(server.head(bucket, &format!("m/{key}")));
        head.and_then(|h| h.last_modified().map(|t| t.secs()))
    };
    for attempt in 0..10 {
        let ctx = format!("same-second rewrite, attempt {attempt}");
        let key = format!("k{attempt}");
        s3.write(&key, b"version1", 0, false);
        let first = second(&key);
        let (s, _) = pair.sync(&ctx);
        assert_eq!(common::counter(&s, "FilesTransferredBToA"), 1, "{ctx}: {s}");
        s3.write(&key, b"version2", 0, false);
        if second(&key) != first {
            println!("{ctx}: the rewrite fell in the next second; again");
            // Settled before the next attempt counts its own copies.
            pair.sync(&ctx);
            continue;
        }
        let (s, report) = pair.sync(&ctx);
        let got = std::fs::read(local.root().unwrap().join(&key)).expect("the local copy");
        assert!(
            got == b"version2",
            "{ctx}: the S3 rewrite was not copied (local holds {:?}): {s}\n{report:?}",
            String::from_utf8_lossy(&got)
        );
        return;
    }
    panic!("could not fit a PUT, a run and a rewrite into one second in 10 attempts");
}

/// At e74aa40 a key copied from S3 was recorded in the base with the time
/// its listing shows (LastModified), while the copy written to the local
/// side took the object's stored mtime (`file-mtime`, as syncmount itself
/// and rclone write it): the next run found the local copy "changed"
/// against its own base and copied it back. Found by the SIGKILL test (moto,
/// seed 11626446775111850388: a conflict copy, which carries the losing
/// version's mtime, copied to the other side by the clean run, copied again
/// by the re-run); fixed by d9372a0.
#[test]
fn a_rerun_after_copying_an_s3_object_with_a_stored_mtime_transfers_nothing() {
    let pair = Pair::with_moto(false);
    let (server, bucket) = pair.s3().expect("an S3 side");
    rt().block_on(async {
        server
            .client()
            .await
            .put_object()
            .bucket(bucket)
            .key("m/k")
            .metadata("file-mtime", "1700000000123456789ns")
            .body(ByteStream::from_static(b"uploaded with its mtime"))
            .send()
            .await
            .expect("PutObject with file-mtime");
    });
    let ctx = "an S3 object with a stored mtime";
    let (s, _) = pair.sync(ctx);
    assert_eq!(common::counter(&s, "FilesTransferredBToA"), 1, "{ctx}: {s}");
    let local = pair.sides[0].root().unwrap().join("k");
    assert_eq!(
        stat_of(&local).0,
        1_700_000_000_123_456_789,
        "{ctx}: the local copy keeps the stored mtime"
    );
    let got = pair.same_on_both_sides(ctx);
    check_rerun(ctx, &pair, &got);
}

/// A run killed in the middle of a keep-both resolution leaves the losing
/// version's conflict copy on the losing side only (it is written there
/// first). The next run listed that copy as a new key and copied it across —
/// and, in the same run, settled the conflict again, which wrote the copy
/// on both sides once more. The copy's base row described the first write,
/// so when the losing side is S3 (a server-side copy: a new LastModified and
/// no stored mtime) the run after found it "changed" and copied it yet
/// again: an immediate re-run was not idle. Now a conflict copy's own key
/// waits for the resolution of the key it copies, and is left to the next
/// run when that resolution wrote it; a side already holding the losing
/// version under the name is not written again. Found by the SIGKILL test (moto,
/// seed 13267370003948233054, kill round 1: `k3/s075` resolved and its
/// conflict copy recorded "equal on both sides" in the same clean run, then
/// copied by the re-run); here the killed run's half is made by hand.
#[test]
fn a_conflict_copy_left_by_a_killed_run_is_settled_once() {
    let pair = Pair::with_moto(true);
    let (s3, local) = (&pair.sides[0], &pair.sides[1]);
    let (server, bucket) = pair.s3().expect("an S3 side");
    let ctx = "a half-made conflict copy";
    s3.write("k", b"agreed", 0, false);
    pair.sync(ctx);
    // Both sides change k; the local version is an hour newer, so S3's
    // loses and is kept as k.conflict-A-<its LastModified>.
    s3.write("k", b"edited on S3", 0, false);
    local.write("k", b"edited locally", now_ns() + 3600 * SEC, false);
    let loser_time = s3.s3_time("k").expect("k on S3");
    let copy = format!("k.conflict-A-{}", utc_stamp(loser_time));
    // What the killed run did first: the losing version to its conflict
    // name on its own side (a server-side copy).
    rt().block_on(async {
        server
            .client()
            .await
            .copy_object()
            .copy_source(format!("{bucket}/m/k"))
            .bucket(bucket)
            .key(format!("m/{copy}"))
            .send()
            .await
            .expect("CopyObject to the conflict name");
    });
    // The clean run's own copies must fall in a later second than that one
    // (LastModified has whole seconds): wait for the clock, not for a state.
    let second = now_ns().div_euclid(SEC);
    while now_ns().div_euclid(SEC) == second {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (s, _) = pair.sync(ctx);
    assert_eq!(common::counter(&s, "FilesConflicted"), 1, "{ctx}: {s}");
    let got = pair.same_on_both_sides(ctx);
    let want: BTreeMap<String, Vec<u8>> = [
        ("k".to_string(), b"edited locally".to_vec()),
        (copy, b"edited on S3".to_vec()),
    ]
    .into();
    assert!(got == want, "{ctx}: {:?}", got.keys().collect::<Vec<_>>());
    check_rerun(ctx, &pair, &got);
}

/// The other way a base row gets no mode: a key both sides hold with equal
/// bytes and mtime when first seen (a conflict copy: the losing version is
/// written on both sides with its own mtime, and the run after finds it new
/// on both) is recorded from side A's metadata alone — an S3 object written
/// by a plain PUT has no mode. A later chmod of the local copy then matched
/// the base (same size and mtime, mode unknown) and never reached S3 (nor
/// won against a delete there). Now each of mode, uid and gid is recorded
/// from whichever side knows it. Found by the model (moto, seed
/// 16545623424239711732, round 1: `chmod
/// d2/f2.conflict-A-20261130T053043.000Z 644 → 640` on the local side B
/// copied nothing).
#[test]
fn a_local_chmod_of_a_key_both_sides_wrote_equal_reaches_s3() {
    let pair = Pair::with_moto(true);
    let (s3, local) = (&pair.sides[0], &pair.sides[1]);
    let ctx = "chmod of a key recorded equal";
    s3.write("k", b"the same bytes", 0, false);
    let t = s3.s3_time("k").expect("k on S3");
    local.write("k", b"the same bytes", t, false);
    let (s, _) = pair.sync(ctx);
    assert_eq!(common::counter(&s, "FilesTransferred"), 0, "{ctx}: {s}");
    chmod_reaches_s3(&pair, local, "FilesTransferredBToA", ctx);
}

/// Both sides changed a key they agreed on to different bytes of the same
/// size that carry the same mtime (to the millisecond): a conflict, both
/// versions kept. The engine called equal size and mtime "equal content"
/// without looking at the bytes, recorded the key as agreed and left the
/// sides different for good (the next edit on one side overwrote the
/// other's version). Local files make it easy (`cp -p`, `touch -r`,
/// archives); the model met it on moto (seed 9864447232584329860, round 4:
/// a local file renamed to `d1/f0` kept the mtime it got from an S3
/// LastModified, a PUT of another 8 bytes to `d1/f0` fell in that same
/// second). Now versions both sides changed since an agreed one are
/// compared by CRC32C unless both carry one. Without a base (a first run)
/// equal size and mtime still count as equal content, as rsync's and
/// rclone's quick check do (TWO-WAY.md).
#[test]
fn versions_of_equal_size_and_mtime_changed_on_both_sides_are_both_kept() {
    let pair = Pair::local();
    let (a, b) = (&pair.sides[0], &pair.sides[1]);
    let ctx = "look-alike versions";
    let t = now_ns();
    a.write("k", b"version 0", t - 10 * SEC, false);
    pair.sync(ctx);
    pair.same_on_both_sides(ctx);
    a.write("k", b"version A", t, false);
    b.write("k", b"version B", t, false);
    let (s, report) = pair.sync(ctx);
    let got = a.tree();
    assert_eq!(
        common::counter(&s, "FilesConflicted"),
        1,
        "{ctx}: not a conflict: {s}\n{report:?}"
    );
    let bodies: BTreeSet<&[u8]> = got.values().map(Vec::as_slice).collect();
    assert!(
        bodies.contains(&b"version A"[..]) && bodies.contains(&b"version B"[..]),
        "{ctx}: a version is lost: {got:?}"
    );
    pair.same_on_both_sides(ctx);
}

/// A user renames a conflict copy back to its key ("I want that version")
/// while the other side changes the key again: a new conflict, whose losing
/// version is that same renamed file — same mtime, so the same conflict
/// name as the copy just renamed away. The run wrote the new conflict copy
/// on both sides, and then deleted it on the other side, because that name
/// was "deleted on this side, unchanged on the other": the sides differed
/// after the run (the version survived on one side only until the next
/// run). Now the name's own key is left to the next run when this run's
/// resolution wrote it. Found by the model (local, seed 16328861850740708396, round 4: B
/// renamed `t3.conflict-B-20261130T060531.807Z` back to `t3` while A wrote
/// `t3`).
#[test]
fn a_conflict_copy_renamed_back_to_its_key_is_kept_when_the_conflict_comes_again() {
    let pair = Pair::local();
    let (a, b) = (&pair.sides[0], &pair.sides[1]);
    let ctx = "a conflict copy renamed back";
    let t = now_ns() - 100 * SEC;
    a.write("k", b"version A", t + 10 * SEC, false);
    b.write("k", b"version B", t, false);
    pair.sync(ctx);
    let copy = format!("k.conflict-B-{}", utc_stamp(t));
    let got = pair.same_on_both_sides(ctx);
    assert!(
        got.get(&copy).is_some_and(|v| v == b"version B"),
        "{ctx}: the first conflict: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    // The run after records the copy in the base (it is first seen there).
    check_rerun(ctx, &pair, &got);
    a.write("k", b"version A2", t + 20 * SEC, false);
    b.rename(&copy, "k", b"version B");
    let (s, report) = pair.sync(ctx);
    let want: BTreeMap<String, Vec<u8>> = [
        ("k".to_string(), b"version A2".to_vec()),
        (copy, b"version B".to_vec()),
    ]
    .into();
    let (ta, tb) = (a.tree(), b.tree());
    assert!(
        ta == want && tb == want,
        "{ctx}: A holds {:?}, B holds {:?}: {s}\n{report:?}",
        ta.keys().collect::<Vec<_>>(),
        tb.keys().collect::<Vec<_>>()
    );
}

/// The same renamed-back conflict, but the user had also edited the old
/// conflict copy on the other side: the new conflict's losing version has
/// the same side and mtime, so its conflict name is taken by another
/// version. The edit is never overwritten: the new copy moves to the next
/// millisecond's name, and every version ends on both sides.
#[test]
fn a_new_conflict_never_overwrites_an_edited_conflict_copy_of_the_same_name() {
    let pair = Pair::local();
    let (a, b) = (&pair.sides[0], &pair.sides[1]);
    let ctx = "an edited conflict copy";
    let t = now_ns() - 100 * SEC;
    a.write("k", b"version A", t + 10 * SEC, false);
    b.write("k", b"version B", t, false);
    pair.sync(ctx);
    let copy = format!("k.conflict-B-{}", utc_stamp(t));
    pair.sync(ctx);
    a.write("k", b"version A2", t + 20 * SEC, false);
    a.write(&copy, b"the copy, edited", t + 30 * SEC, false);
    b.rename(&copy, "k", b"version B");
    let (s, report) = pair.sync(ctx);
    assert_eq!(common::counter(&s, "FilesConflicted"), 2, "{ctx}: {s}");
    let next = format!("k.conflict-B-{}", utc_stamp(t + MS));
    let want: BTreeMap<String, Vec<u8>> = [
        ("k".to_string(), b"version A2".to_vec()),
        (copy, b"the copy, edited".to_vec()),
        (next, b"version B".to_vec()),
    ]
    .into();
    let got = pair.same_on_both_sides(ctx);
    assert!(
        got == want,
        "{ctx}: {:?}\n{report:?}",
        got.keys().collect::<Vec<_>>()
    );
    check_rerun(ctx, &pair, &got);
}
