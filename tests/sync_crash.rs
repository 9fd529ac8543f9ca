//! SIGKILL mid-transfer: nothing partial is ever visible at the destination,
//! and the next run (same state directory) removes our leftovers (temp files,
//! multipart uploads) and completes.
//!
//! The runs are slowed down with `--bytes-per-second` so that the kill lands
//! in the middle of the transfer. Each scenario runs on s3s-fs and on moto.
//! s3s-fs 0.14.1 does not implement ListMultipartUploads: there the open
//! upload is found through its id (from the upload journal in the state
//! directory) with ListParts, which lists the parts while the upload is open.
//! On moto, ListMultipartUploads shows the upload (moto's ListParts answer
//! cannot be parsed by the SDK).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use common::{S3Server, ServerKind};

const BIG: usize = 60 * 1024 * 1024;
const PART: &str = "5242880";
const SLOW: &str = "4000000";
/// How long we wait for the slow run to reach the point where we kill it.
const WAIT_FOR_PROGRESS: Duration = Duration::from_secs(20);

/// A `syncmount` process running in the background, its output in files.
struct Running {
    child: Child,
    shown: String,
    stdout: PathBuf,
    stderr: PathBuf,
    _logs: tempfile::TempDir,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let logs = common::tempdir();
        let stdout = logs.path().join("stdout");
        let stderr = logs.path().join("stderr");
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let shown = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {shown}: {e}"));
        println!("$ {shown} &  (pid {})", child.id());
        Running {
            child,
            shown,
            stdout,
            stderr,
            _logs: logs,
        }
    }

    fn output(&self) -> String {
        format!(
            "{}\n---- stdout ----\n{}\n---- stderr ----\n{}",
            self.shown,
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Panics (with the output) if the process already ended.
    fn assert_running(&mut self, waiting_for: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "syncmount ended ({status}) before {waiting_for}:\n{}",
                self.output()
            );
        }
    }

    /// SIGKILL, then reap it (a zombie's pid would still look alive to the
    /// next run's leftover check).
    fn kill9(mut self) {
        self.assert_running("the kill");
        self.child.kill().expect("SIGKILL syncmount");
        let status = self.child.wait().expect("wait for the killed syncmount");
        println!("killed: {status}\n{}", self.output());
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}

/// Polls `probe` every 100 ms until it returns `Some`, for at most
/// [`WAIT_FOR_PROGRESS`]; the process must keep running meanwhile.
async fn wait_for<T, F, Fut>(run: &mut Running, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_FOR_PROGRESS;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        run.assert_running(what);
        if Instant::now() > deadline {
            panic!("no {what} within {WAIT_FOR_PROGRESS:?}:\n{}", run.output());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Parts uploaded so far to an upload; `None` when the server says the
/// upload does not exist (any more).
async fn part_count(server: &S3Server, bucket: &str, key: &str, upload_id: &str) -> Option<usize> {
    match server
        .client()
        .await
        .list_parts()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
    {
        Ok(out) => Some(out.parts().len()),
        Err(e) if e.code() == Some("NoSuchUpload") => None,
        Err(e) => panic!("ListParts {bucket}/{key} {upload_id}: {e:?}"),
    }
}

/// Upload ids recorded in the upload journal (STATE_DIR/uploads) for `key`.
fn journalled_upload_ids(state: &Path, bucket: &str, key: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state.join("uploads")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v["bucket"] == bucket && v["key"] == key)
        .filter_map(|v| v["upload_id"].as_str().map(str::to_string))
        .collect()
}

async fn upload_killed_mid_multipart_is_invisible_then_cleaned_and_completed(server: &S3Server) {
    let bucket = server.new_bucket("crash-up").await;
    let src = common::tempdir();
    let state = common::tempdir();
    let data = common::random_bytes(BIG);
    std::fs::write(src.path().join("big.bin"), &data).expect("write big.bin");
    let key = "crash/big.bin";
    let src_arg = src.path().to_string_lossy().into_owned();
    let dst_arg = server.url(&bucket, "crash/");
    let listing_works = server.open_uploads(&bucket).await.is_some();
    if server.kind == ServerKind::Moto {
        assert!(listing_works, "moto implements ListMultipartUploads");
    }
    // moto 5 answers ListParts with a `ListPartsResponse` root element, which
    // the SDK cannot parse: parts are only looked at on s3s-fs.
    let parts_listable = server.kind == ServerKind::S3sFs;

    let mut slow = common::sync_cmd(server, state.path(), &[&src_arg, &dst_arg]);
    slow.args(["--multipart-threshold", PART, "--part-size", PART])
        .args(["--bytes-per-second", SLOW]);
    let mut run = Running::spawn(slow);

    // The multipart upload exists ...
    let upload_id = wait_for(&mut run, "multipart upload", || async {
        if listing_works {
            let open = server.open_uploads(&bucket).await.unwrap_or_default();
            open.into_iter().find(|(k, _)| k == key).map(|(_, id)| id)
        } else {
            journalled_upload_ids(state.path(), &bucket, key)
                .into_iter()
                .next()
        }
    })
    .await;
    // ... and has at least one part: we are in the middle of the transfer.
    if parts_listable {
        wait_for(&mut run, "uploaded part", || async {
            part_count(server, &bucket, key, &upload_id)
                .await
                .filter(|n| *n >= 1)
        })
        .await;
    } else {
        // A 5 MiB part takes about 1.3 s at 4 MB/s.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    run.kill9();

    // Nothing partial is visible.
    assert!(
        !server.exists(&bucket, key).await,
        "{:?}: a partial object is visible after the crash",
        server.kind
    );
    assert_eq!(server.keys(&bucket, "").await, Vec::<String>::new());
    // The crash left the upload open (nobody could abort it).
    if listing_works {
        let open = server.open_uploads(&bucket).await.unwrap();
        assert!(
            open.iter().any(|(_, id)| *id == upload_id),
            "{:?}: {open:?}",
            server.kind
        );
    }
    if parts_listable {
        let parts_left = part_count(server, &bucket, key, &upload_id).await;
        assert!(
            parts_left.is_some_and(|n| n >= 1),
            "{:?}: the killed upload's parts: {parts_left:?}",
            server.kind
        );
    }

    // The next run with the same state directory cleans up and completes.
    let mut again = common::sync_cmd(server, state.path(), &[&src_arg, &dst_arg]);
    again.arg("--json");
    let out = common::run(again);
    assert_eq!(out.status, 0, "{:?}: the re-run succeeds", server.kind);
    assert_eq!(server.keys(&bucket, "").await, vec![key.to_string()]);
    assert!(
        server.get(&bucket, key).await == data,
        "{:?}: the object differs from the local file",
        server.kind
    );
    if listing_works {
        let open = server.open_uploads(&bucket).await.unwrap();
        assert!(
            open.is_empty(),
            "{:?}: uploads left open after the re-run: {open:?}",
            server.kind
        );
    }
    // Our killed upload is gone (s3s-fs lists no parts for an unknown id).
    if parts_listable {
        let parts_left = part_count(server, &bucket, key, &upload_id).await;
        assert!(
            parts_left.is_none() || parts_left == Some(0),
            "{:?}: the killed upload still has parts: {parts_left:?}",
            server.kind
        );
    }
}

/// Every path under `root` whose file name starts with `.syncmount-`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    common::tree_entries(root)
        .into_values()
        .map(|(path, _)| path)
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".syncmount-"))
        })
        .collect()
}

fn is_our_temp_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.starts_with(".syncmount-") && name.ends_with(".tmp")
}

async fn download_killed_mid_file_is_invisible_then_cleaned_and_completed(server: &S3Server) {
    let bucket = server.new_bucket("crash-down").await;
    let data = common::random_bytes(BIG);
    server.put(&bucket, "dl/big.bin", &data).await;
    let parent = common::tempdir();
    let dest = parent.path().join("dest");
    std::fs::create_dir(&dest).expect("mkdir dest");
    let state = common::tempdir();
    let src_arg = server.url(&bucket, "dl/");
    let dst_arg = dest.to_string_lossy().into_owned();

    let mut slow = common::sync_cmd(server, state.path(), &[&src_arg, &dst_arg]);
    slow.args(["--bytes-per-second", SLOW]);
    let mut run = Running::spawn(slow);
    let tmp = wait_for(&mut run, "temp file in the destination", || async {
        temp_files(&dest).into_iter().find(|p| is_our_temp_file(p))
    })
    .await;
    println!("temp file: {}", tmp.display());
    // Let some bytes land in it, so the kill leaves a real partial file.
    tokio::time::sleep(Duration::from_millis(500)).await;
    run.kill9();

    assert!(
        !dest.join("big.bin").exists(),
        "{:?}: the final name exists after the crash",
        server.kind
    );
    assert!(
        !temp_files(&dest).is_empty(),
        "{:?}: the crash left no temp file (was it killed mid-transfer?)",
        server.kind
    );

    let mut again = common::sync_cmd(server, state.path(), &[&src_arg, &dst_arg]);
    again.arg("--json");
    let out = common::run(again);
    assert_eq!(out.status, 0, "{:?}: the re-run succeeds", server.kind);
    let got = std::fs::read(dest.join("big.bin")).expect("big.bin after the re-run");
    assert!(
        got == data,
        "{:?}: big.bin differs from the object",
        server.kind
    );
    assert_eq!(
        temp_files(&dest),
        Vec::<PathBuf>::new(),
        "{:?}: temp files left in the destination",
        server.kind
    );
    assert_eq!(
        common::read_tree(&dest).into_keys().collect::<Vec<_>>(),
        vec!["big.bin".to_string()]
    );
    // Nothing beside the destination either.
    let beside: Vec<_> = std::fs::read_dir(parent.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("dest")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_multipart_upload_shows_no_object_and_the_next_run_aborts_it_and_completes_on_s3s_fs(
) {
    upload_killed_mid_multipart_is_invisible_then_cleaned_and_completed(&common::s3s()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_multipart_upload_shows_no_object_and_the_next_run_aborts_it_and_completes_on_moto(
) {
    upload_killed_mid_multipart_is_invisible_then_cleaned_and_completed(&common::moto()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_download_shows_no_file_and_the_next_run_removes_the_temp_file_on_s3s_fs()
{
    download_killed_mid_file_is_invisible_then_cleaned_and_completed(&common::s3s()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_download_shows_no_file_and_the_next_run_removes_the_temp_file_on_moto() {
    download_killed_mid_file_is_invisible_then_cleaned_and_completed(&common::moto()).await;
}
