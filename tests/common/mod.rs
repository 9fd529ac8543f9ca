//! Shared helpers for syncmount's integration tests.
//!
//! The S3 servers are started by `scripts/test.sh`, which exports their
//! addresses as `SYNCMOUNT_TEST_*` variables. A test that needs a server and
//! does not find its variable panics (it never skips silently).
//!
//! Tests that talk to a server run on a multi-thread runtime:
//! `#[tokio::test(flavor = "multi_thread")]` (the `run` helper blocks its
//! thread while the binary runs).
//!
//! Servers (see shared/TESTING.md):
//! - moto: STS and several accounts, tagging, hostile keys; slow, in memory,
//!   does not validate checksums.
//! - s3s-fs: faithful data path (checksums, ranges, conditional writes), but
//!   filesystem-backed: keys `x` and `x/y` cannot both exist.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::FileType;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region, ResponseChecksumValidation};
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use serde_json::Value;

/// The region every test client and every `syncmount` run uses.
pub const REGION: &str = "us-east-1";
/// moto's default account (requests signed with unknown access keys land here).
pub const MOTO_DEFAULT_ACCOUNT: &str = "123456789012";
/// The role name assumed by [`S3Server::account_client`].
pub const ROLE_NAME: &str = "syncmount-test";

const MOTO_URL_VAR: &str = "SYNCMOUNT_TEST_MOTO_URL";
const S3S_URL_VAR: &str = "SYNCMOUNT_TEST_S3S_URL";
const S3S_ACCESS_KEY_VAR: &str = "SYNCMOUNT_TEST_S3S_ACCESS_KEY";
const S3S_SECRET_KEY_VAR: &str = "SYNCMOUNT_TEST_S3S_SECRET_KEY";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// moto server: STS, several accounts, tagging, real S3 key semantics.
    Moto,
    /// s3s-fs: the faithful data path (checksums, ranges, conditional writes).
    S3sFs,
}

#[derive(Debug, Clone)]
pub struct S3Server {
    pub kind: ServerKind,
    /// `http://127.0.0.1:PORT`, path-style.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the tests through scripts/test.sh, which starts the S3 servers"
        ),
    }
}

/// The moto server started by scripts/test.sh (default account 123456789012).
pub fn moto() -> S3Server {
    S3Server {
        kind: ServerKind::Moto,
        endpoint: required_env(MOTO_URL_VAR),
        // moto accepts any credentials; keys it did not issue itself map to
        // the default account.
        access_key: "testing".to_string(),
        secret_key: "testing".to_string(),
    }
}

/// The second moto server started by scripts/test.sh, reserved for tests
/// that switch IAM enforcement on (`POST /moto-api/reset-auth`): on the shared
/// server that would refuse every other test's requests. Tests using it must
/// hold [`moto_iam_lock`] throughout.
pub fn moto_iam() -> S3Server {
    S3Server {
        kind: ServerKind::Moto,
        endpoint: required_env("SYNCMOUNT_TEST_MOTO_IAM_URL"),
        access_key: "testing".to_string(),
        secret_key: "testing".to_string(),
    }
}

/// Serializes the tests of one binary that change the IAM moto's state.
pub async fn moto_iam_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The s3s-fs server started by scripts/test.sh.
pub fn s3s() -> S3Server {
    S3Server {
        kind: ServerKind::S3sFs,
        endpoint: required_env(S3S_URL_VAR),
        access_key: required_env(S3S_ACCESS_KEY_VAR),
        secret_key: required_env(S3S_SECRET_KEY_VAR),
    }
}

/// Every server a data-path test should pass on.
pub fn data_path_servers() -> Vec<S3Server> {
    vec![moto(), s3s()]
}

/// The role that [`S3Server::account_client`] assumes in `account_id`.
pub fn role_arn(account_id: &str) -> String {
    format!("arn:aws:iam::{account_id}:role/{ROLE_NAME}")
}

static BUCKET_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh, valid bucket name (lowercase letters, digits and '-', 3 to 63
/// characters, starting and ending with a letter or digit) built from `tag`,
/// the process id, a per-process counter and a random suffix.
pub fn unique_bucket_name(tag: &str) -> String {
    let mut clean: String = tag
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    // No runs of '-', no leading or trailing '-'.
    while clean.contains("--") {
        clean = clean.replace("--", "-");
    }
    let clean = clean.trim_matches('-');
    let n = BUCKET_COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(
        "{}-{}-{:06x}",
        std::process::id(),
        n,
        rand::random::<u32>() & 0xff_ffff
    );
    // "sm-" + tag + "-" + suffix <= 63.
    let room = 63 - 3 - 1 - suffix.len();
    let tag_part = clean[..clean.len().min(room)].trim_end_matches('-');
    if tag_part.is_empty() {
        format!("sm-{suffix}")
    } else {
        format!("sm-{tag_part}-{suffix}")
    }
}

/// The configuration every test client starts from: `endpoint`, path-style,
/// [`REGION`], the given static `credentials`. Built from the service config
/// directly, not from aws_config::load: no profile files, environment
/// variables or IMDS are read. Add to it (retries, checksum validation)
/// before `build()`.
pub fn s3_config(endpoint: &str, credentials: Credentials) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .force_path_style(true)
}

/// An S3 client for `endpoint` with [`s3_config`]'s defaults.
pub fn s3_client(endpoint: &str, credentials: Credentials) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(s3_config(endpoint, credentials).build())
}

/// A client that does not ask for (nor validate) response checksums.
///
/// moto stores wrong checksums for some objects it did not receive whole: a
/// CopyObject asking for CRC32C labels the source's CRC32 as CRC32C, and a
/// multipart upload's CRC32C is neither the full-object nor the composite
/// value. The SDK's default validation then rejects correct bytes, so moto's
/// objects are read without it (s3s-fs's are read with it).
pub fn lenient_client(endpoint: &str, credentials: Credentials) -> aws_sdk_s3::Client {
    let config = s3_config(endpoint, credentials)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The object's bytes, read through `client`.
pub async fn get_with(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetObject s3://{bucket}/{key}: {e:?}"))
        .body
        .collect()
        .await
        .unwrap_or_else(|e| panic!("reading body of s3://{bucket}/{key}: {e:?}"))
        .into_bytes()
        .to_vec()
}

/// Every key under `prefix` in `bucket` (all pages, at most `page_size` keys
/// a page when given), listed through `client`, sorted.
pub async fn list_keys(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    page_size: Option<i32>,
) -> Vec<String> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .set_max_keys(page_size)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("ListObjectsV2 s3://{bucket}/{prefix}: {e:?}"));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    keys.sort();
    keys
}

/// The names of the buckets `client`'s account owns.
pub async fn bucket_names(client: &aws_sdk_s3::Client) -> Vec<String> {
    client
        .list_buckets()
        .send()
        .await
        .expect("ListBuckets")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect()
}

impl S3Server {
    /// This server's static credentials.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "syncmount-test",
        )
    }

    /// An S3 client for this server with its static credentials.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        s3_client(&self.endpoint, self.credentials())
    }

    /// Temporary credentials for `role_arn(account_id)`, from moto's STS.
    pub async fn account_credentials(&self, account_id: &str) -> Credentials {
        assert_eq!(
            self.kind,
            ServerKind::Moto,
            "only moto has STS and several accounts"
        );
        let config = aws_sdk_sts::config::Builder::new()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(self.credentials())
            .build();
        let sts = aws_sdk_sts::Client::from_conf(config);
        let arn = role_arn(account_id);
        let out = sts
            .assume_role()
            .role_arn(&arn)
            .role_session_name("syncmount-test")
            .send()
            .await
            .unwrap_or_else(|e| panic!("AssumeRole {arn} at {}: {e:?}", self.endpoint));
        let c = out
            .credentials()
            .unwrap_or_else(|| panic!("AssumeRole {arn} returned no credentials"));
        Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            None,
            "syncmount-test-assumed",
        )
    }

    /// An S3 client acting in moto account `account_id` (through STS
    /// AssumeRole of [`role_arn`]); buckets it creates live in that account.
    pub async fn account_client(&self, account_id: &str) -> aws_sdk_s3::Client {
        let creds = self.account_credentials(account_id).await;
        s3_client(&self.endpoint, creds)
    }

    /// Like [`S3Server::env`], but with the temporary credentials of
    /// `role_arn(account_id)` (moto only), for running `syncmount` as that
    /// account.
    pub async fn account_env(&self, account_id: &str) -> Vec<(String, String)> {
        let creds = self.account_credentials(account_id).await;
        let mut env: Vec<(String, String)> = self
            .env()
            .into_iter()
            .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
            .collect();
        env.push((
            "AWS_ACCESS_KEY_ID".to_string(),
            creds.access_key_id().to_string(),
        ));
        env.push((
            "AWS_SECRET_ACCESS_KEY".to_string(),
            creds.secret_access_key().to_string(),
        ));
        env.push((
            "AWS_SESSION_TOKEN".to_string(),
            creds
                .session_token()
                .expect("assumed-role credentials have a session token")
                .to_string(),
        ));
        env
    }

    /// Creates a new, empty bucket with a unique name and returns the name.
    pub async fn new_bucket(&self, tag: &str) -> String {
        let name = unique_bucket_name(tag);
        self.client()
            .await
            .create_bucket()
            .bucket(&name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateBucket {name} at {}: {e:?}", self.endpoint));
        name
    }

    pub async fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.client()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutObject s3://{bucket}/{key}: {e:?}"));
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        get_with(&self.client().await, bucket, key).await
    }

    /// Like [`S3Server::get`], without response checksum validation (see
    /// [`lenient_client`]).
    pub async fn get_unvalidated(&self, bucket: &str, key: &str) -> Vec<u8> {
        let client = lenient_client(&self.endpoint, self.credentials());
        get_with(&client, bucket, key).await
    }

    /// Every key under `prefix` (all pages), sorted.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.keys_paged(bucket, prefix, None).await
    }

    /// Like [`S3Server::keys`], asking for at most `page_size` keys a page.
    pub async fn keys_paged(
        &self,
        bucket: &str,
        prefix: &str,
        page_size: Option<i32>,
    ) -> Vec<String> {
        list_keys(&self.client().await, bucket, prefix, page_size).await
    }

    /// HeadObject: `None` when the server answers 404 (no such object);
    /// any other error panics.
    pub async fn head(&self, bucket: &str, key: &str) -> Option<HeadObjectOutput> {
        match self
            .client()
            .await
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Some(out),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => None,
            Err(e) => panic!("HeadObject s3://{bucket}/{key}: {e:?}"),
        }
    }

    /// Whether the object exists (HeadObject does not answer 404).
    pub async fn exists(&self, bucket: &str, key: &str) -> bool {
        self.head(bucket, key).await.is_some()
    }

    /// The object's user metadata (`x-amz-meta-*`, without the prefix).
    pub async fn head_metadata(&self, bucket: &str, key: &str) -> HashMap<String, String> {
        let out = self
            .head(bucket, key)
            .await
            .unwrap_or_else(|| panic!("HeadObject s3://{bucket}/{key}: no such object"));
        out.metadata().cloned().unwrap_or_default()
    }

    /// Environment for a `syncmount` process talking to this server. The
    /// endpoint itself is not in it (the binary takes it its own way); the
    /// config and credentials files point to a path that does not exist, so
    /// the developer's ~/.aws is never read.
    pub fn env(&self) -> Vec<(String, String)> {
        let no_file = std::env::temp_dir()
            .join("syncmount-test-no-such-dir")
            .join("none");
        let no_file = no_file.to_string_lossy().into_owned();
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret_key.clone()),
            ("AWS_REGION".into(), REGION.into()),
            ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
            ("AWS_CONFIG_FILE".into(), no_file.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE".into(), no_file),
        ]
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("s3://{bucket}/{prefix}")
    }

    /// This server reached through `proxy` (same credentials).
    pub fn through(&self, proxy: &fault_proxy::FaultProxy) -> S3Server {
        S3Server {
            endpoint: proxy.endpoint.clone(),
            ..self.clone()
        }
    }

    /// The open multipart uploads of `bucket` as (key, upload id); `None`
    /// when the server does not implement ListMultipartUploads (s3s-fs).
    pub async fn open_uploads(&self, bucket: &str) -> Option<Vec<(String, String)>> {
        match self
            .client()
            .await
            .list_multipart_uploads()
            .bucket(bucket)
            .send()
            .await
        {
            Ok(out) => Some(
                out.uploads()
                    .iter()
                    .map(|u| {
                        (
                            u.key().unwrap_or_default().to_string(),
                            u.upload_id().unwrap_or_default().to_string(),
                        )
                    })
                    .collect(),
            ),
            Err(e)
                if aws_sdk_s3::error::ProvideErrorMetadata::code(&e) == Some("NotImplemented") =>
            {
                None
            }
            Err(e) => panic!("ListMultipartUploads {bucket}: {e:?}"),
        }
    }

    /// The keys of the open multipart uploads of `bucket`, on a server that
    /// lists them (moto).
    pub async fn open_upload_keys(&self, bucket: &str) -> Vec<String> {
        let open = self.open_uploads(bucket).await;
        let open = open.unwrap_or_else(|| panic!("{:?} cannot list multipart uploads", self.kind));
        open.into_iter().map(|(k, _)| k).collect()
    }
}

/// The `syncmount` binary under test, with every `AWS_*` variable removed
/// from the inherited environment.
pub fn syncmount() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_syncmount"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// [`syncmount`] with `server.env()` set.
pub fn syncmount_for(server: &S3Server) -> Command {
    let mut cmd = syncmount();
    cmd.envs(server.env());
    cmd
}

#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The exit code, or -1 when the process was killed by a signal.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion (stdin closed) and prints the command and both
/// streams, so that a failing test shows them.
pub fn run(mut cmd: Command) -> RunOutput {
    cmd.stdin(std::process::Stdio::null());
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not start {shown}: {e}"));
    let result = RunOutput {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    println!("$ {shown}");
    println!("status: {} ({})", result.status, out.status);
    println!("---- stdout ----\n{}", result.stdout);
    println!("---- stderr ----\n{}", result.stderr);
    result
}

// ---------------------------------------------------------------------------
// `syncmount sync` runs
// ---------------------------------------------------------------------------

/// `syncmount sync ARGS... --state-dir STATE`, with `--endpoint-url` and the
/// server's credentials when a server is given (`&server` or `None`).
pub fn sync_cmd<'a>(
    server: impl Into<Option<&'a S3Server>>,
    state: &Path,
    args: &[&str],
) -> Command {
    match server.into() {
        Some(s) => sync_cmd_via(s, &s.endpoint, state, args),
        None => {
            let mut cmd = syncmount();
            cmd.arg("sync").args(args).arg("--state-dir").arg(state);
            cmd
        }
    }
}

/// Like [`sync_cmd`] with `server`'s credentials, but talking to `endpoint`
/// (a proxy in front of the server, say).
pub fn sync_cmd_via(server: &S3Server, endpoint: &str, state: &Path, args: &[&str]) -> Command {
    let mut cmd = syncmount_for(server);
    cmd.arg("sync")
        .args(args)
        .arg("--endpoint-url")
        .arg(endpoint)
        .arg("--state-dir")
        .arg(state);
    cmd
}

/// Runs `syncmount sync SRC DST --json --report REPORT` to completion
/// ([`sync_cmd_via`]: `server`'s credentials, talking to `endpoint`),
/// whatever its exit status; the summary is [`parse_summary`] of the output
/// and the report [`read_report`] of `report`.
pub fn run_sync_with_report(
    server: &S3Server,
    endpoint: &str,
    src: &str,
    dst: &str,
    state: &Path,
    report: &Path,
) -> RunOutput {
    let report = path_str(report);
    run(sync_cmd_via(
        server,
        endpoint,
        state,
        &[src, dst, "--json", "--report", &report],
    ))
}

/// The `--json` summary a run printed on stdout.
pub fn parse_summary(out: &RunOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not one JSON document ({e}):\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    })
}

/// Runs [`sync_cmd`] with `--json`; returns the output and the parsed
/// summary (whatever the exit status).
pub fn sync_json<'a>(
    server: impl Into<Option<&'a S3Server>>,
    state: &Path,
    args: &[&str],
) -> (RunOutput, Value) {
    let mut cmd = sync_cmd(server, state, args);
    cmd.arg("--json");
    let out = run(cmd);
    let summary = parse_summary(&out);
    (out, summary)
}

/// Like [`sync_json`], asserting exit 0 and Status SUCCESS; returns the
/// summary.
pub fn sync_ok<'a>(server: impl Into<Option<&'a S3Server>>, state: &Path, args: &[&str]) -> Value {
    let server = server.into();
    let who = server
        .map(|s| format!("{:?}: ", s.kind))
        .unwrap_or_default();
    let (out, summary) = sync_json(server, state, args);
    assert_eq!(out.status, 0, "{who}sync {args:?} failed: {}", out.stderr);
    assert_eq!(summary["Status"], "SUCCESS", "{who}{summary}");
    summary
}

/// A numeric counter of a `--json` summary (`FilesTransferred`, …).
pub fn counter(summary: &Value, name: &str) -> u64 {
    summary[name]
        .as_u64()
        .unwrap_or_else(|| panic!("summary has no numeric {name}: {summary}"))
}

/// A `--report` file: one JSON object per non-blank line, in file order.
pub fn read_report(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read report {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("report line {l:?} is not JSON: {e}"))
        })
        .collect()
}

/// The report records whose `key` is `key`.
pub fn records_for<'a>(report: &'a [Value], key: &str) -> Vec<&'a Value> {
    report.iter().filter(|r| r["key"] == key).collect()
}

// ---------------------------------------------------------------------------
// Local files
// ---------------------------------------------------------------------------

/// Fails loudly unless the tests run as root (`what` says what needs it).
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "{what} needs root: run the tests as root");
}

/// `p` as a `&str` argument (temporary paths are UTF-8).
pub fn path_str(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}

/// `secs.nanos` seconds after the Unix epoch.
pub fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

/// Sets the modification time of the file at `path`.
pub fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::fill(&mut v[..]);
    v
}

/// Writes `files` (relative '/'-separated paths) under `root`, creating
/// parent directories.
pub fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    write_files(root, files);
}

/// [`write_tree`] for owned (or any) names and bodies, e.g.
/// `&[(String, Vec<u8>)]`.
pub fn write_files<K: AsRef<str>, V: AsRef<[u8]>>(root: &Path, files: &[(K, V)]) {
    for (rel, body) in files {
        let path = root.join(rel.as_ref());
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir -p {}: {e}", parent.display()));
        }
        std::fs::write(&path, body.as_ref())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Every entry under `root` (files, directories, symlinks, anything) by
/// relative '/'-separated path, with its full path and type. Directories are
/// walked; symlinks are not followed.
pub fn tree_entries(root: &Path) -> BTreeMap<String, (PathBuf, FileType)> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, (PathBuf, FileType)>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            let ft = entry
                .file_type()
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            if ft.is_dir() {
                walk(&path, &child_rel, out);
            }
            out.insert(child_rel, (path, ft));
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// Every regular file under `root`, by relative '/'-separated path.
/// Directories are walked; symlinks and other special files are left out.
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree_entries(root)
        .into_iter()
        .filter(|(_, (_, ft))| ft.is_file())
        .map(|(rel, (path, _))| {
            let body =
                std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (rel, body)
        })
        .collect()
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("syncmount-test-")
        .tempdir()
        .expect("create a temporary directory")
}

pub mod daemon;
pub mod fault_proxy;
pub mod mount;
pub mod sentinel;
pub mod tasks;
