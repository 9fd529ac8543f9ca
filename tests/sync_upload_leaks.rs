//! No multipart upload is leaked, whatever happens to a run: after injected
//! faults (5xx answers, dropped connections) and repeated SIGKILLs, one
//! clean run leaves no incomplete upload in the bucket and the bucket holds
//! exactly the source. Uploads started by another tool are never aborted.
//!
//! On moto (which lists multipart uploads), through the fault proxy
//! (tests/common/fault_proxy.rs). The big files are 3 × 12 MiB in 5 MiB
//! parts rather than 3 × 40 MiB: moto takes ~27 MB/s, and what matters is
//! the number of multipart uploads started and interrupted, not their size;
//! they get new contents before every run, so every run starts uploads.
//! The kills land from 0.2 s to 3 s into a run, where its
//! CreateMultipartUploads are in flight. A separate test loses the answers
//! to CreateMultipartUpload on their way back (the server made the upload,
//! the client never learnt its id).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::fault_proxy::{FaultPlan, FaultProxy};
use common::S3Server;
use rand::{Rng, SeedableRng};

const MIB: usize = 1024 * 1024;
const BIG_FILES: usize = 3;
const BIG: usize = 12 * MIB;
const SMALL_FILES: usize = 200;
const PART: &str = "5242880";
/// Killed runs before the final one, in each trial.
const KILLS: usize = 10;
/// Killed runs in the test of another tool's uploads (which need not be
/// as thorough, and runs beside the other).
const FOREIGN_KILLS: usize = 5;
const TRIALS: u64 = 5;
/// Fault rates on the way to the server: 5% 5xx answers, 3% dropped connections.
const P_5XX: f64 = 0.05;
const P_DROP: f64 = 0.03;
/// Requests the random fault script covers (more than any trial makes).
const SCRIPTED_REQUESTS: usize = 200_000;
/// How long a run is let go before its SIGKILL: from barely started (the
/// listing and the first CreateMultipartUploads) to well into the parts.
const KILL_AFTER_MS: std::ops::Range<u64> = 200..3_000;

/// Writes the source tree: big files uploaded in parts, with new contents
/// each time (so every run has multipart uploads to start), and many small
/// files, one of which changes each time.
fn write_source(root: &Path, version: usize) {
    // Random bytes once (slow in a debug build); each version stamps its number.
    static BIG_BODIES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let bodies =
        BIG_BODIES.get_or_init(|| (0..BIG_FILES).map(|_| common::random_bytes(BIG)).collect());
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let mut body = body.clone();
        body[..8].copy_from_slice(&(version as u64).to_le_bytes());
        files.push((format!("big-{i}.bin"), body));
    }
    let small = |i: usize| format!("small/{:02}/f-{i:03}.txt", i % 20);
    if version == 0 {
        files.extend((0..SMALL_FILES).map(|i| {
            let body = format!("small file {i}\n").repeat(1 + i % 50);
            (small(i), body.into_bytes())
        }));
    } else {
        let i = version % SMALL_FILES;
        let body = format!("small file {i}, version {version}\n");
        files.push((small(i), body.into_bytes()));
    }
    common::write_files(root, &files);
}

/// `sync SRC DST -v` through `endpoint` with 5 MiB parts for anything
/// above 5 MiB.
fn sync_via(server: &S3Server, endpoint: &str, state: &Path, src: &str, dst: &str) -> Command {
    let mut cmd = common::sync_cmd_via(server, endpoint, state, &[src, dst]);
    cmd.args(["--multipart-threshold", PART, "--part-size", PART, "-v"]);
    cmd
}

/// What `-v` logs for each upload a sweep found and aborted.
const SWEPT: &str = "aborted an upload whose id was never learnt";

/// How many uploads the runs' logs say a clean-up found and aborted
/// without knowing their id (a sweep).
fn swept(logs: &Path, final_run: &str) -> usize {
    let in_logs: usize = std::fs::read_dir(logs)
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|t| t.matches(SWEPT).count())
                .sum()
        })
        .unwrap_or(0);
    in_logs + final_run.matches(SWEPT).count()
}

/// Starts `cmd` with its output in `logs`, lets it run `after`, then
/// SIGKILLs and reaps it (unless it ended by itself: then its status).
fn run_then_kill(mut cmd: Command, logs: &Path, n: usize, after: Duration) -> String {
    let out = logs.join(format!("run-{n}.log"));
    let file = std::fs::File::create(&out).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    let mut child: Child = cmd.spawn().expect("start syncmount");
    std::thread::sleep(after);
    let outcome = match child.try_wait().expect("try_wait") {
        Some(status) => format!("ended by itself ({status})"),
        None => {
            child.kill().expect("SIGKILL syncmount");
            let status = child.wait().expect("reap the killed syncmount");
            format!("killed after {after:?} ({status})")
        }
    };
    println!("run {n}: {outcome}");
    outcome
}

/// Upload ids named anywhere in the upload journal (STATE/uploads).
fn journalled_ids(state: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state.join("uploads")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["upload_id"].as_str().map(str::to_string))
        .collect()
}

/// The files of the upload journal (STATE/uploads).
fn journal_files(state: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state.join("uploads")) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| {
            let body = std::fs::read_to_string(e.path()).unwrap_or_default();
            format!("{}: {body}", e.file_name().to_string_lossy())
        })
        .collect()
}

/// Every object under `prefix` with its bytes.
async fn bucket_tree(server: &S3Server, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let client = common::lenient_client(&server.endpoint, server.credentials());
    let mut out = BTreeMap::new();
    for key in server.keys(bucket, prefix).await {
        let body = common::get_with(&client, bucket, &key).await;
        out.insert(key[prefix.len()..].to_string(), body);
    }
    out
}

/// What one trial left behind: open uploads after the final run (key, id),
/// and a line per leak saying whether the journal knew it and what the
/// proxy saw of its key's CreateMultipartUploads.
struct Trial {
    leaked: Vec<(String, String)>,
    diagnosis: Vec<String>,
    /// Uploads found by a sweep (their id never learnt) and aborted.
    swept: usize,
}

/// `kills` runs SIGKILLed at random moments through a faulty proxy, the
/// source changed before each, then one clean run (still through the
/// faults, not killed). `foreign` uploads are another tool's.
async fn killed_runs_then_a_clean_one(
    server: &S3Server,
    src: &Path,
    kills: usize,
    seed: u64,
    foreign: &[(String, String)],
    bucket: &str,
) -> Trial {
    let state = common::tempdir();
    let logs = common::tempdir();
    let proxy = FaultProxy::start(
        &server.endpoint,
        FaultPlan::random(SCRIPTED_REQUESTS, P_5XX, P_DROP, seed),
    );
    let src_arg = common::path_str(src);
    let dst_arg = server.url(bucket, "up/");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for n in 0..kills {
        write_source(src, n);
        let after = Duration::from_millis(rng.random_range(KILL_AFTER_MS));
        let cmd = sync_via(server, &proxy.endpoint, state.path(), &src_arg, &dst_arg);
        run_then_kill(cmd, logs.path(), n, after);
    }
    let out = common::run(sync_via(
        server,
        &proxy.endpoint,
        state.path(),
        &src_arg,
        &dst_arg,
    ));
    assert_eq!(out.status, 0, "seed {seed}: the final run failed");
    let expected = common::read_tree(src);
    let got = bucket_tree(server, bucket, "up/").await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "seed {seed}: the bucket's keys"
    );
    for (key, body) in &expected {
        assert!(
            got[key] == *body,
            "seed {seed}: {key} differs from the source"
        );
    }
    assert_eq!(
        journal_files(state.path()),
        Vec::<String>::new(),
        "seed {seed}: the clean run left journal entries"
    );
    let open = server
        .open_uploads(bucket)
        .await
        .expect("moto lists uploads");
    let journal = journalled_ids(state.path());
    let log = proxy.counters.log();
    let leaked: Vec<(String, String)> = open.into_iter().filter(|u| !foreign.contains(u)).collect();
    let diagnosis = leaked
        .iter()
        .map(|(key, id)| {
            let creates: Vec<&String> = log
                .iter()
                .filter(|l| l.starts_with("POST ") && l.contains(key.as_str()) && l.contains("?uploads"))
                .collect();
            format!(
                "{key} {id}: journalled {}; CreateMultipartUpload requests for the key: {creates:?}",
                journal.contains(id)
            )
        })
        .collect();
    Trial {
        leaked,
        diagnosis,
        swept: swept(logs.path(), &out.stderr),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkills_and_faults_leave_no_incomplete_upload_after_a_clean_run_on_moto() {
    let server = common::moto();
    let src = common::tempdir();
    let base_seed: u64 = std::env::var("SYNCMOUNT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seeds {base_seed}.. (set SYNCMOUNT_TEST_SEED to replay)");
    let mut leaks = Vec::new();
    for trial in 0..TRIALS {
        let bucket = server.new_bucket("leaks").await;
        let seed = base_seed.wrapping_add(trial);
        let t = killed_runs_then_a_clean_one(&server, src.path(), KILLS, seed, &[], &bucket).await;
        println!(
            "trial {trial} (seed {seed}): {} leaked, {} found by a sweep and aborted",
            t.leaked.len(),
            t.swept
        );
        for d in &t.diagnosis {
            println!("  {d}");
        }
        leaks.push(t.leaked.len());
    }
    println!("leaked uploads per trial: {leaks:?}");
    assert!(
        leaks.iter().all(|n| *n == 0),
        "incomplete uploads left after the clean run, per trial: {leaks:?}"
    );
}

/// An incomplete upload another tool started (SDK, for keys under the
/// destination prefix: one syncmount never writes, one it writes itself)
/// survives killed and clean runs.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_started_by_another_tool_are_never_aborted_on_moto() {
    let server = common::moto();
    let src = common::tempdir();
    let bucket = server.new_bucket("foreign").await;
    let client = server.client().await;
    let mut foreign = Vec::new();
    for key in ["up/not-ours.bin", "up/big-0.bin"] {
        let out = client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(key)
            .send()
            .await
            .expect("CreateMultipartUpload by another tool");
        let id = out.upload_id().expect("an upload id").to_string();
        foreign.push((key.to_string(), id));
    }
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let t =
        killed_runs_then_a_clean_one(&server, src.path(), FOREIGN_KILLS, seed, &foreign, &bucket)
            .await;
    let open = server
        .open_uploads(&bucket)
        .await
        .expect("moto lists uploads");
    for u in &foreign {
        assert!(
            open.contains(u),
            "another tool's upload {u:?} was aborted; open now: {open:?}"
        );
    }
    assert_eq!(
        t.leaked,
        Vec::<(String, String)>::new(),
        "{:?}",
        t.diagnosis
    );
}

/// A CreateMultipartUpload the server carried out but whose answer was lost
/// on the way back is retried by the SDK; the upload the lost answer named
/// is found and aborted by the same run.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_created_by_a_create_whose_answer_was_lost_is_aborted_by_the_same_run_on_moto() {
    let server = common::moto();
    let bucket = server.new_bucket("lost-answers").await;
    let src = common::tempdir();
    let files: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| (format!("big-{i}.bin"), common::random_bytes(6 * MIB)))
        .collect();
    common::write_files(src.path(), &files);
    let state = common::tempdir();
    // The first two answers to CreateMultipartUpload (POST KEY?uploads).
    let proxy = FaultProxy::losing_answers(&server.endpoint, "POST", "?uploads", 2);
    let out = common::run(sync_via(
        &server,
        &proxy.endpoint,
        state.path(),
        &common::path_str(src.path()),
        &server.url(&bucket, "up/"),
    ));
    assert_eq!(out.status, 0, "the run succeeds");
    let log = proxy.counters.log();
    let lost = log.iter().filter(|l| l.ends_with("answer lost")).count();
    assert_eq!(lost, 2, "{log:#?}");
    let swept = out.stderr.matches(SWEPT).count();
    assert_eq!(swept, 2, "both found by a sweep");
    let expected: BTreeMap<String, Vec<u8>> = files.into_iter().collect();
    let got = bucket_tree(&server, &bucket, "up/").await;
    assert!(got == expected, "the bucket differs from the source");
    let open = server
        .open_uploads(&bucket)
        .await
        .expect("moto lists uploads");
    assert_eq!(open, Vec::<(String, String)>::new(), "{log:#?}");
    assert_eq!(journal_files(state.path()), Vec::<String>::new());
}
