//! Access problems with moto enforcing IAM (issue 5): a principal lacking
//! s3:PutObject gets a clear error and nothing partial, `location check`
//! reports each failing item on deliberately broken setups, a role assumed
//! with `--dst-role-arn` writes where its user may not, and the secret key
//! never shows up in what syncmount prints or reports.
//!
//! All of it runs on the second moto (`common::moto_iam()`), whose IAM
//! enforcement these tests switch on and off. Every test holds
//! `common::moto_iam_lock()` throughout, starts by opening the server
//! (`reset-auth inf`) and wiping it (`/moto-api/reset`), sets up users,
//! roles and buckets, and only then enforces (`reset-auth 0`); an
//! [`OpenOnDrop`] guard opens the server again when the test ends, panics
//! included.
//!
//! What moto enforces, as observed on 5.2.5, the version scripts/requirements-test.txt
//! pins (5.2.6 authorizes ListObjects(V2) as s3:ListObjects(V2), not
//! s3:ListBucket, so no AWS-valid policy lets a user list there; see
//! shared/TESTING.md too):
//! - inline identity policies (PutUserPolicy / PutRolePolicy), on users and
//!   on assumed-role sessions alike; keys it never issued are refused
//!   (InvalidAccessKeyId for S3, InvalidClientTokenId for STS), the default
//!   `testing` keys included;
//! - S3 actions as its own table names them: CreateMultipartUpload,
//!   UploadPart and CompleteMultipartUpload as s3:PutObject (as on AWS), but
//!   HeadBucket as `s3:HeadBucket` (AWS authorizes it with s3:ListBucket), so
//!   policies here grant that moto-only name where the region item should pass;
//! - authorization before existence: HeadBucket on a missing bucket is 403
//!   unless the policy covers that bucket's ARN (then 404);
//! - sts:AssumeRole: the caller's identity policy and, within one account,
//!   the role's trust policy; a role that does not exist, or one in another
//!   account, is assumed without complaint;
//! - not the copy source of CopyObject: a role allowed to write the
//!   destination copies from a bucket it may not read;
//! - not GetCallerIdentity (always allowed, as on AWS).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use common::{RunOutput, S3Server};
use serde_json::{json, Value};

/// 12 MiB: above the 5 MiB multipart threshold the tests pass, so the
/// object goes up in parts.
const BIG: usize = 12 * 1024 * 1024;
const FIVE_MIB: &str = "5242880";

// ---------------------------------------------------------------------------
// The IAM moto
// ---------------------------------------------------------------------------

/// POSTs `body` (text/plain, as moto's reset-auth wants) to `path` on the
/// server at `endpoint` (`http://HOST:PORT`); panics unless it answers 200.
fn moto_api_post(endpoint: &str, path: &str, body: &str) {
    let host = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(host).unwrap_or_else(|e| panic!("connect to {host}: {e}"));
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("POST {path} to {host}: {e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("POST {path} to {host}: reading the answer: {e}"));
    let status_line = answer.lines().next().unwrap_or_default();
    assert!(
        status_line.split_whitespace().nth(1) == Some("200"),
        "POST {path} {body:?} to {host}: {answer}"
    );
}

/// Sets moto's INITIAL_NO_AUTH_ACTION_COUNT: `inf` opens it, `0` enforces.
fn set_auth(endpoint: &str, count: &str) {
    moto_api_post(endpoint, "/moto-api/reset-auth", count);
}

/// Opens the IAM moto again when dropped, whatever way the test ends.
struct OpenOnDrop(String);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        // Never panic while unwinding: that would abort the test binary.
        let endpoint = self.0.clone();
        if std::panic::catch_unwind(|| set_auth(&endpoint, "inf")).is_err() {
            eprintln!("could not open the IAM moto at {endpoint} again");
        }
    }
}

/// An IAM user with an access key: the binary runs as `server` (the user's
/// keys on the IAM moto).
struct User {
    name: String,
    server: S3Server,
}

impl User {
    fn arn(&self) -> String {
        format!(
            "arn:aws:iam::{}:user/{}",
            common::MOTO_DEFAULT_ACCOUNT,
            self.name
        )
    }

    fn secret(&self) -> &str {
        &self.server.secret_key
    }
}

/// The IAM moto, wiped and open; [`Iam::enforce`] switches enforcement on.
struct Iam {
    /// Moto's default `testing` keys: usable only while the server is open.
    root: S3Server,
    iam: aws_sdk_iam::Client,
    /// A user allowed everything: what the test looks with once enforcing.
    admin: User,
    _open: OpenOnDrop,
}

fn policy(statements: Value) -> String {
    json!({ "Version": "2012-10-17", "Statement": statements }).to_string()
}

impl Iam {
    /// Opens and wipes the IAM moto, then creates the admin user.
    async fn start() -> Iam {
        let root = common::moto_iam();
        let open = OpenOnDrop(root.endpoint.clone());
        set_auth(&root.endpoint, "inf");
        moto_api_post(&root.endpoint, "/moto-api/reset", "");
        let config = aws_sdk_iam::config::Builder::new()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new(common::REGION))
            .endpoint_url(&root.endpoint)
            .credentials_provider(root.credentials())
            .build();
        let iam = aws_sdk_iam::Client::from_conf(config);
        let admin = create_user(
            &iam,
            &root,
            "syncmount-admin",
            Some(json!([{ "Effect": "Allow", "Action": "*", "Resource": "*" }])),
        )
        .await;
        Iam {
            root,
            iam,
            admin,
            _open: open,
        }
    }

    /// A user with `statements` as its inline policy (none: no permissions).
    async fn user(&self, name: &str, statements: Option<Value>) -> User {
        create_user(&self.iam, &self.root, name, statements).await
    }

    /// A role in the default account that `trusted` may assume, with
    /// `statements` as its inline policy; returns its ARN.
    async fn role(&self, name: &str, trusted: &User, statements: Value) -> String {
        let trust = policy(json!([{
            "Effect": "Allow",
            "Principal": { "AWS": trusted.arn() },
            "Action": "sts:AssumeRole"
        }]));
        let out = self
            .iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust)
            .send()
            .await
            .unwrap_or_else(|e| panic!("CreateRole {name}: {e:?}"));
        self.iam
            .put_role_policy()
            .role_name(name)
            .policy_name("transfer")
            .policy_document(policy(statements))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutRolePolicy {name}: {e:?}"));
        let arn = out
            .role()
            .expect("CreateRole returns the role")
            .arn()
            .to_string();
        assert_eq!(
            arn,
            format!("arn:aws:iam::{}:role/{name}", common::MOTO_DEFAULT_ACCOUNT)
        );
        arn
    }

    /// A bucket of the default account (created while the server is open).
    async fn bucket(&self, tag: &str) -> String {
        self.root.new_bucket(tag).await
    }

    /// Switches enforcement on: from now on only issued keys get anywhere.
    fn enforce(&self) {
        set_auth(&self.root.endpoint, "0");
    }

    /// Every key of `bucket`, seen by the admin (works while enforcing).
    async fn keys(&self, bucket: &str) -> Vec<String> {
        self.admin.server.keys(bucket, "").await
    }

    /// The multipart uploads open in `bucket` (keys), seen by the admin.
    async fn open_uploads(&self, bucket: &str) -> Vec<String> {
        self.admin.server.open_upload_keys(bucket).await
    }
}

async fn create_user(
    iam: &aws_sdk_iam::Client,
    root: &S3Server,
    name: &str,
    statements: Option<Value>,
) -> User {
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateUser {name}: {e:?}"));
    if let Some(statements) = statements {
        iam.put_user_policy()
            .user_name(name)
            .policy_name("inline")
            .policy_document(policy(statements))
            .send()
            .await
            .unwrap_or_else(|e| panic!("PutUserPolicy {name}: {e:?}"));
    }
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateAccessKey {name}: {e:?}"));
    let key = key.access_key().expect("CreateAccessKey returns a key");
    let mut server = root.clone();
    server.access_key = key.access_key_id().to_string();
    server.secret_key = key.secret_access_key().to_string();
    assert!(server.secret_key.len() >= 16, "a real-looking secret");
    User {
        name: name.to_string(),
        server,
    }
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

fn objects_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}/*")
}

/// Bucket-level `actions` on `bucket`. moto authorizes HeadBucket as
/// `s3:HeadBucket` (AWS: s3:ListBucket), so a policy meant to pass the
/// region item names it too.
fn on_bucket(bucket: &str, actions: &[&str]) -> Value {
    json!({ "Effect": "Allow", "Action": actions, "Resource": bucket_arn(bucket) })
}

fn on_objects(bucket: &str, actions: &[&str]) -> Value {
    json!({ "Effect": "Allow", "Action": actions, "Resource": objects_arn(bucket) })
}

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

/// `syncmount location check URL --endpoint-url E ARGS...` as `user`.
fn location_check(user: &S3Server, url: &str, args: &[&str]) -> RunOutput {
    let mut cmd = common::syncmount_for(user);
    cmd.args(["location", "check", url, "--endpoint-url", &user.endpoint])
        .args(args);
    common::run(cmd)
}

/// One checklist item: `SIGN WHAT: DETAIL` and its `    fix: ...` line.
#[derive(Debug, Clone)]
struct Item {
    sign: String,
    what: String,
    detail: String,
    fix: Option<String>,
}

/// The items `location check` printed (the `checking ...` header skipped).
fn items(stdout: &str) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    for line in stdout.lines() {
        if let Some(fix) = line.strip_prefix("    fix: ") {
            let last = items.last_mut().expect("a fix line follows an item");
            assert!(last.fix.is_none(), "two fix lines for {last:?}");
            last.fix = Some(fix.to_string());
            continue;
        }
        let Some((sign, rest)) = line.split_once(' ') else {
            continue;
        };
        if !["✓", "✗", "!", "-"].contains(&sign) {
            continue;
        }
        let (what, detail) = rest
            .split_once(": ")
            .unwrap_or_else(|| panic!("item line without `: `: {line:?}"));
        items.push(Item {
            sign: sign.to_string(),
            what: what.to_string(),
            detail: detail.to_string(),
            fix: None,
        });
    }
    items
}

/// The item named `what`; panics (showing the checklist) when absent.
fn item<'a>(items: &'a [Item], what: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.what == what)
        .unwrap_or_else(|| panic!("no `{what}` item in {items:#?}"))
}

/// Asserts `item` is a failure whose detail contains `detail` and whose fix
/// contains every one of `fix`.
fn assert_fails(item: &Item, detail: &str, fix: &[&str]) {
    assert_eq!(item.sign, "✗", "{item:?}");
    assert!(
        item.detail.contains(detail),
        "{item:?} should say {detail:?}"
    );
    let shown = item
        .fix
        .as_deref()
        .unwrap_or_else(|| panic!("a failed item comes with its fix: {item:?}"));
    for f in fix {
        assert!(shown.contains(f), "the fix of {item:?} should say {f:?}");
    }
}

/// Asserts `secret` appears in none of the streams nor the report file.
fn assert_no_secret(secret: &str, out: &RunOutput, report: Option<&Path>) {
    assert!(!secret.is_empty());
    assert!(!out.stdout.contains(secret), "the secret key is on stdout");
    assert!(!out.stderr.contains(secret), "the secret key is on stderr");
    if let Some(p) = report {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        assert!(!text.contains(secret), "the secret key is in the report");
    }
}

/// A summary's `FailedObjects` by key.
fn failed_objects(summary: &Value) -> Vec<(String, String)> {
    summary["FailedObjects"]
        .as_array()
        .unwrap_or_else(|| panic!("no FailedObjects in {summary}"))
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default().to_string(),
                r["error"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The `error` of the report's record for `key` (there must be one).
fn report_error(report: &[Value], key: &str) -> String {
    let records = common::records_for(report, key);
    assert_eq!(records.len(), 1, "one record for {key}: {report:?}");
    assert_eq!(records[0]["result"], "failed", "{:?}", records[0]);
    records[0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {:?}", records[0]))
        .to_string()
}

/// A user who may list and read `bucket` but not write it.
fn read_only(bucket: &str) -> Value {
    json!([
        on_bucket(bucket, &["s3:ListBucket", "s3:GetBucketLocation"]),
        on_objects(bucket, &["s3:GetObject"]),
    ])
}

// ---------------------------------------------------------------------------
// 1. A principal lacking s3:PutObject
// ---------------------------------------------------------------------------

/// Runs local → s3://bucket/p as a read-only user with a 5 MiB multipart
/// threshold; returns the user, the output, the summary and the report.
async fn sync_without_put_object(
    iam: &Iam,
    bucket: &str,
    files: &[(&str, Vec<u8>)],
) -> (User, RunOutput, Value, Vec<Value>, tempfile::TempDir) {
    let user = iam.user("no-put", Some(read_only(bucket))).await;
    iam.enforce();
    let dir = common::tempdir();
    let src = dir.path().join("src");
    common::write_files(&src, files);
    let report = dir.path().join("report.jsonl");
    let dst = format!("s3://{bucket}/p");
    let (src_s, report_s) = (common::path_str(&src), common::path_str(&report));
    let (out, summary) = common::sync_json(
        &user.server,
        &dir.path().join("state"),
        &[
            &src_s,
            &dst,
            "--report",
            &report_s,
            "--multipart-threshold",
            FIVE_MIB,
            "--part-size",
            FIVE_MIB,
        ],
    );
    assert_no_secret(user.secret(), &out, Some(&report));
    let records = common::read_report(&report);
    (user, out, summary, records, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_put_object_gets_errors_naming_the_action_the_location_and_the_user_and_nothing_partial(
) {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("no-put").await;
    let files = [
        ("small.txt", b"small".to_vec()),
        ("big.bin", common::random_bytes(BIG)),
    ];
    let (user, out, summary, report, _dir) = sync_without_put_object(&iam, &bucket, &files).await;

    assert_eq!(out.status, 1, "a refused write fails the run");
    assert_eq!(summary["Status"], "ERROR", "{summary}");
    assert_eq!(common::counter(&summary, "FilesFailed"), 2, "{summary}");
    assert_eq!(
        common::counter(&summary, "FilesTransferred"),
        0,
        "{summary}"
    );

    let location = format!("s3://{bucket}/p/");
    let failed = failed_objects(&summary);
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (key, _) in &files {
        let in_summary = &failed
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} not in FailedObjects: {failed:?}"))
            .1;
        let in_report = report_error(&report, key);
        assert_eq!(in_summary, &in_report, "summary and report agree on {key}");
        for needle in [
            location.as_str(),
            "AccessDenied",
            &user.arn(),
            "location check",
            "--write-probe",
        ] {
            assert!(
                in_report.contains(needle),
                "{key}: {in_report:?} lacks {needle:?}"
            );
        }
    }
    // The single PUT is refused as PutObject; moto authorizes
    // CreateMultipartUpload as s3:PutObject too and refuses it, so the big
    // file never gets an upload id.
    assert!(report_error(&report, "small.txt").contains("PutObject `small.txt`"));
    assert!(
        report_error(&report, "big.bin").contains("CreateMultipartUpload `big.bin`"),
        "moto refuses the multipart upload at its creation"
    );

    // Nothing partial: no object, no open multipart upload.
    assert_eq!(iam.keys(&bucket).await, Vec::<String>::new());
    assert_eq!(iam.open_uploads(&bucket).await, Vec::<String>::new());
}

/// The IAM action to grant for a refused multipart upload is s3:PutObject:
/// an error that only says `CreateMultipartUpload` leaves the user to guess
/// (the location check's fix, and the issue, speak of s3:PutObject).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_multipart_upload_names_the_iam_action_put_object() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("no-put-multipart").await;
    let files = [("big.bin", common::random_bytes(BIG))];
    let (_user, out, _summary, report, _dir) = sync_without_put_object(&iam, &bucket, &files).await;
    assert_eq!(out.status, 1);
    let error = report_error(&report, "big.bin");
    assert!(
        error.contains("PutObject"),
        "the error of a refused multipart upload names s3:PutObject, the permission to grant: {error:?}"
    );
    assert_eq!(iam.open_uploads(&bucket).await, Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// 2. `location check` on broken setups
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn location_check_of_a_user_without_s3_permissions_fails_list_bucket_and_the_region_item() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("no-s3").await;
    iam.root.put(&bucket, "p/k", b"data").await;
    let user = iam.user("no-s3", None).await;
    iam.enforce();

    let out = location_check(&user.server, &format!("s3://{bucket}/p"), &[]);
    assert_eq!(out.status, 1, "a failed item fails the check");
    assert_no_secret(user.secret(), &out, None);
    let items = items(&out.stdout);

    let creds = item(&items, "credentials");
    assert_eq!(creds.sign, "✓", "{creds:?}");
    assert_eq!(creds.detail, format!("acting as {}", user.arn()));
    // HeadBucket is refused: the region item fails (it cannot ask) and says
    // to allow s3:ListBucket, which is what AWS authorizes HeadBucket with.
    assert_fails(
        item(&items, "region"),
        &format!("HeadBucket on `{bucket}` was refused"),
        &["allow s3:ListBucket"],
    );
    assert_fails(
        item(&items, "s3:ListBucket"),
        "AccessDenied",
        &[&format!("allow s3:ListBucket on {}", bucket_arn(&bucket))],
    );
    // Nothing was listed, so there is no sample to read.
    assert_eq!(item(&items, "s3:GetObject").sign, "-");
}

/// A checklist line is read by a person: the refused HeadBucket (whose 403
/// has no body, hence no error code) must not print the SDK's Debug dump of
/// the raw response.
#[tokio::test(flavor = "multi_thread")]
async fn location_check_lines_are_short_sentences_not_sdk_debug_dumps() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("dump").await;
    let user = iam.user("no-s3", None).await;
    iam.enforce();

    let out = location_check(&user.server, &format!("s3://{bucket}"), &[]);
    assert_eq!(out.status, 1);
    for i in items(&out.stdout) {
        for marker in ["SdkBody", "ServiceError(", "extensions", "ErrorMetadata"] {
            assert!(
                !i.detail.contains(marker),
                "`{}` prints a Debug dump ({marker}): {}",
                i.what,
                i.detail
            );
        }
        assert!(
            i.detail.len() < 300,
            "`{}` detail is {} characters long: {}",
            i.what,
            i.detail.len(),
            i.detail
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn location_check_with_list_bucket_but_not_get_object_fails_get_object_only() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("no-get").await;
    iam.root.put(&bucket, "p/sample.txt", b"sample").await;
    let user = iam
        .user(
            "list-only",
            Some(json!([on_bucket(
                &bucket,
                &["s3:ListBucket", "s3:GetBucketLocation", "s3:HeadBucket"]
            )])),
        )
        .await;
    iam.enforce();

    let out = location_check(&user.server, &format!("s3://{bucket}/p"), &[]);
    assert_eq!(out.status, 1);
    assert_no_secret(user.secret(), &out, None);
    let items = items(&out.stdout);
    assert_eq!(item(&items, "region").sign, "✓", "{items:#?}");
    let list = item(&items, "s3:ListBucket");
    assert_eq!(list.sign, "✓", "{list:?}");
    assert!(list.detail.contains("`p/sample.txt`"), "{list:?}");
    assert_fails(
        item(&items, "s3:GetObject"),
        "`p/sample.txt`: AccessDenied",
        &[&format!("allow s3:GetObject on {}", objects_arn(&bucket))],
    );
    let failed: Vec<&str> = items
        .iter()
        .filter(|i| i.sign == "✗")
        .map(|i| i.what.as_str())
        .collect();
    assert_eq!(failed, vec!["s3:GetObject"], "{items:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn location_check_write_probe_without_put_object_fails_put_object_and_leaves_nothing() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("probe-no-put").await;
    iam.root.put(&bucket, "p/sample.txt", b"sample").await;
    let mut statements = read_only(&bucket);
    statements
        .as_array_mut()
        .unwrap()
        .push(on_bucket(&bucket, &["s3:HeadBucket"]));
    let user = iam.user("read-only", Some(statements)).await;
    iam.enforce();

    let out = location_check(
        &user.server,
        &format!("s3://{bucket}/p"),
        &["--write-probe"],
    );
    assert_eq!(out.status, 1);
    assert_no_secret(user.secret(), &out, None);
    let items = items(&out.stdout);
    assert_eq!(item(&items, "s3:ListBucket").sign, "✓", "{items:#?}");
    assert_eq!(item(&items, "s3:GetObject").sign, "✓", "{items:#?}");
    assert_fails(
        item(&items, "s3:PutObject"),
        "AccessDenied",
        &["allow s3:PutObject", &objects_arn(&bucket)],
    );
    // No delete is tried after a refused write.
    assert!(
        items.iter().all(|i| i.what != "s3:DeleteObject"),
        "{items:#?}"
    );
    assert_eq!(iam.keys(&bucket).await, vec!["p/sample.txt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn location_check_of_a_missing_bucket_says_it_does_not_exist_and_stops() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    // moto authorizes before it looks: only a principal whose policy covers
    // the missing bucket's ARN gets the 404 (the admin's `*` does).
    iam.enforce();
    let missing = common::unique_bucket_name("missing");

    let out = location_check(&iam.admin.server, &format!("s3://{missing}/p"), &[]);
    assert_eq!(out.status, 1);
    assert_no_secret(iam.admin.secret(), &out, None);
    let items = items(&out.stdout);
    assert_eq!(item(&items, "credentials").sign, "✓", "{items:#?}");
    assert_fails(
        item(&items, "region"),
        &format!("bucket `{missing}` does not exist"),
        &["create it", "bucket name"],
    );
    let names: Vec<&str> = items.iter().map(|i| i.what.as_str()).collect();
    assert_eq!(
        names,
        vec!["credentials", "region"],
        "nothing to check past a missing bucket"
    );
}

/// moto answers STS's 403 for a key it never issued with an error body the
/// SDK cannot parse (no code): still a refusal, not an endpoint without STS.
#[tokio::test(flavor = "multi_thread")]
async fn location_check_with_an_access_key_never_issued_fails_credentials() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("bad-key").await;
    iam.enforce();
    let mut stranger = iam.root.clone();
    stranger.access_key = "AKIAIOSFODNN7NEVERSEEN".into();
    stranger.secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYNEVERSEEN1".into();

    let out = location_check(&stranger, &format!("s3://{bucket}"), &[]);
    assert_eq!(out.status, 1);
    assert_no_secret(&stranger.secret_key, &out, None);
    let items = items(&out.stdout);
    assert_fails(item(&items, "credentials"), "", &["credentials"]);
    assert_eq!(
        item(&items, "s3:ListBucket").sign,
        "✗",
        "S3 refuses the key too (InvalidAccessKeyId): {items:#?}"
    );
    assert!(item(&items, "s3:ListBucket")
        .detail
        .contains("InvalidAccessKeyId"));
}

#[tokio::test(flavor = "multi_thread")]
async fn location_check_of_a_fully_allowed_user_passes_every_item() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("allowed").await;
    iam.root.put(&bucket, "p/sample.txt", b"sample").await;
    let user = iam
        .user(
            "allowed",
            Some(json!([
                on_bucket(
                    &bucket,
                    &[
                        "s3:ListBucket",
                        "s3:GetBucketLocation",
                        "s3:HeadBucket",
                        "s3:GetBucketVersioning",
                        "s3:GetBucketOwnershipControls",
                    ]
                ),
                on_objects(
                    &bucket,
                    &[
                        "s3:GetObject",
                        "s3:PutObject",
                        "s3:DeleteObject",
                        "s3:AbortMultipartUpload"
                    ]
                ),
            ])),
        )
        .await;
    iam.enforce();

    let out = location_check(
        &user.server,
        &format!("s3://{bucket}/p"),
        &["--write-probe"],
    );
    assert_eq!(out.status, 0, "nothing fails");
    let items = items(&out.stdout);
    assert!(items.iter().all(|i| i.sign != "✗"), "{items:#?}");
    for what in [
        "credentials",
        "region",
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
    ] {
        assert_eq!(item(&items, what).sign, "✓", "{items:#?}");
    }
    assert_eq!(
        item(&items, "credentials").detail,
        format!("acting as {}", user.arn())
    );
    assert_eq!(item(&items, "region").detail, common::REGION);
    // The probe was written and removed.
    assert_eq!(iam.keys(&bucket).await, vec!["p/sample.txt"]);
}

/// The tagging actions `object_tags = preserve` (the default) needs:
/// without them `location check` warns naming each and the way out
/// (`object_tags = "none"`); with them both pass. A streamed copy of a
/// tagged object by a user without s3:GetObjectTagging fails naming it,
/// and `--object-tags none` copies it.
#[tokio::test(flavor = "multi_thread")]
async fn missing_tagging_permissions_are_named_by_location_check_and_by_the_copy() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("tags").await;
    let dst = iam.bucket("tags-dst").await;
    iam.root
        .client()
        .await
        .put_object()
        .bucket(&bucket)
        .key("p/sample.txt")
        .tagging("k=v")
        .body(b"sample".to_vec().into())
        .send()
        .await
        .expect("a tagged object");
    let bucket_actions = [
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:HeadBucket",
        "s3:GetBucketVersioning",
        "s3:GetBucketOwnershipControls",
        "s3:ListBucketMultipartUploads",
    ];
    let object_actions = [
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
    ];
    let without = iam
        .user(
            "no-tagging",
            Some(json!([
                on_bucket(&bucket, &bucket_actions),
                on_objects(&bucket, &object_actions),
                on_bucket(&dst, &bucket_actions),
                on_objects(&dst, &object_actions),
            ])),
        )
        .await;
    let mut all = object_actions.to_vec();
    all.extend(["s3:GetObjectTagging", "s3:PutObjectTagging"]);
    let with = iam
        .user(
            "tagging",
            Some(json!([
                on_bucket(&bucket, &bucket_actions),
                on_objects(&bucket, &all),
            ])),
        )
        .await;
    iam.enforce();

    let url = format!("s3://{bucket}/p");
    let out = location_check(&without.server, &url, &["--write-probe"]);
    let got = items(&out.stdout);
    for what in ["s3:GetObjectTagging", "s3:PutObjectTagging"] {
        let i = item(&got, what);
        assert_eq!(i.sign, "!", "{what}: {got:#?}");
        let fix = i.fix.clone().unwrap_or_default();
        assert!(
            fix.contains(&format!("allow {what} on {}", objects_arn(&bucket)))
                && fix.contains("object_tags = \"none\""),
            "{what}: {i:?}"
        );
    }
    let out = location_check(&with.server, &url, &["--write-probe"]);
    let got = items(&out.stdout);
    for what in ["s3:GetObjectTagging", "s3:PutObjectTagging"] {
        assert_eq!(item(&got, what).sign, "✓", "{what}: {got:#?}");
    }
    // The probe was written and removed.
    assert_eq!(iam.keys(&bucket).await, vec!["p/sample.txt"]);

    // Streamed (another name of the server: no CopyObject), the tags are
    // read with GetObjectTagging, which this user may not call.
    let state = common::tempdir();
    let other = without.server.endpoint.replace("127.0.0.1", "localhost");
    let sync = |extra: &[&str]| {
        let mut cmd = common::syncmount_for(&without.server);
        cmd.args([
            "sync",
            &url,
            &format!("s3://{dst}/q"),
            "--src-endpoint-url",
            &without.server.endpoint,
            "--dst-endpoint-url",
            &other,
            "--json",
            "--state-dir",
        ])
        .arg(state.path())
        .args(extra);
        common::run(cmd)
    };
    let out = sync(&[]);
    assert_eq!(out.status, 1, "{}", out.stderr);
    let summary = common::parse_summary(&out);
    let failed = failed_objects(&summary);
    assert!(
        failed.len() == 1 && failed[0].1.contains("s3:GetObjectTagging"),
        "{summary}"
    );
    assert_eq!(iam.keys(&dst).await, Vec::<String>::new());
    let out = sync(&["--object-tags", "none"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(iam.keys(&dst).await, vec!["q/sample.txt"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn location_check_with_a_role_the_user_may_not_assume_fails_credentials_and_role() {
    let _lock = common::moto_iam_lock().await;
    let iam = Iam::start().await;
    let bucket = iam.bucket("role-refused").await;
    let owner = iam.user("role-owner", None).await;
    let role = iam
        .role(
            "transfer",
            &owner,
            json!([on_bucket(&bucket, &["s3:ListBucket"])]),
        )
        .await;
    // No sts:AssumeRole in this user's policy (nor in the role's trust).
    let user = iam.user("stranger", None).await;
    iam.enforce();

    let out = location_check(
        &user.server,
        &format!("s3://{bucket}"),
        &["--role-arn", &role],
    );
    assert_eq!(out.status, 1);
    assert_no_secret(user.secret(), &out, None);
    let items = items(&out.stdout);
    assert_fails(
        item(&items, "credentials and role"),
        "",
        &[&role, "trust policy"],
    );
}

// ---------------------------------------------------------------------------
// 3. Writing through a role (--dst-role-arn)
// ---------------------------------------------------------------------------

/// The transfer setup: `src` holds `in/a.txt` and `in/d/b.txt`; the role
/// may write `dst` (and nothing else); the user may read `src` and assume
/// the role, nothing more.
struct RoleSetup {
    iam: Iam,
    src: String,
    dst: String,
    role: String,
    user: User,
}

async fn role_setup() -> RoleSetup {
    let iam = Iam::start().await;
    let src = iam.bucket("role-src").await;
    let dst = iam.bucket("role-dst").await;
    iam.root.put(&src, "in/a.txt", b"alpha").await;
    iam.root.put(&src, "in/d/b.txt", b"bravo").await;
    // The role's ARN is known before it exists: the user's policy names it,
    // and the role's trust policy names the user.
    let role_arn = format!(
        "arn:aws:iam::{}:role/syncmount-transfer",
        common::MOTO_DEFAULT_ACCOUNT
    );
    let user = iam
        .user(
            "source-user",
            Some(json!([
                { "Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn },
                on_bucket(&src, &["s3:ListBucket", "s3:GetBucketLocation"]),
                on_objects(&src, &["s3:GetObject"]),
            ])),
        )
        .await;
    let role = iam
        .role(
            "syncmount-transfer",
            &user,
            json!([
                on_bucket(&dst, &["s3:ListBucket", "s3:GetBucketLocation"]),
                on_objects(
                    &dst,
                    &["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
                ),
            ]),
        )
        .await;
    assert_eq!(role, role_arn);
    RoleSetup {
        iam,
        src,
        dst,
        role,
        user,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_allowed_only_to_assume_the_transfer_role_writes_the_destination_through_dst_role_arn(
) {
    let _lock = common::moto_iam_lock().await;
    let s = role_setup().await;
    s.iam.enforce();
    let dir = common::tempdir();
    let src_url = format!("s3://{}/in", s.src);
    let dst_url = format!("s3://{}/out", s.dst);

    // Through the role: everything arrives.
    let (out, summary) = common::sync_json(
        &s.user.server,
        &dir.path().join("state-role"),
        &[&src_url, &dst_url, "--dst-role-arn", &s.role],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(summary["Status"], "SUCCESS", "{summary}");
    assert_eq!(
        common::counter(&summary, "FilesTransferred"),
        2,
        "{summary}"
    );
    assert_eq!(s.iam.keys(&s.dst).await, vec!["out/a.txt", "out/d/b.txt"]);
    let admin = &s.iam.admin.server;
    assert_eq!(admin.get_unvalidated(&s.dst, "out/a.txt").await, b"alpha");
    assert_eq!(admin.get_unvalidated(&s.dst, "out/d/b.txt").await, b"bravo");

    // Without it, the user's own credentials are refused at the destination.
    let report = dir.path().join("report.jsonl");
    let report_s = common::path_str(&report);
    let (out, summary) = common::sync_json(
        &s.user.server,
        &dir.path().join("state-user"),
        &[
            &src_url,
            &format!("s3://{}/again", s.dst),
            "--report",
            &report_s,
        ],
    );
    assert_eq!(out.status, 1);
    assert_eq!(summary["Status"], "ERROR", "{summary}");
    assert_no_secret(s.user.secret(), &out, Some(&report));
    let detail = summary["ErrorDetail"].as_str().unwrap_or_default();
    for needle in [
        format!("s3://{}/again/", s.dst).as_str(),
        "AccessDenied",
        &s.user.arn(),
        "location check",
    ] {
        assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
    }
    assert_eq!(s.iam.keys(&s.dst).await, vec!["out/a.txt", "out/d/b.txt"]);
}

/// moto enforces the role's own policy on its session: the role may not
/// write a bucket its policy does not name, and the error names the
/// assumed-role principal.
#[tokio::test(flavor = "multi_thread")]
async fn a_role_writing_outside_its_policy_is_refused_and_the_error_names_the_assumed_role() {
    let _lock = common::moto_iam_lock().await;
    let s = role_setup().await;
    let other = s.iam.bucket("role-other").await;
    s.iam.enforce();
    let dir = common::tempdir();
    let report = dir.path().join("report.jsonl");
    let report_s = common::path_str(&report);
    let (out, summary) = common::sync_json(
        &s.user.server,
        &dir.path().join("state"),
        &[
            &format!("s3://{}/in", s.src),
            &format!("s3://{other}/out"),
            "--dst-role-arn",
            &s.role,
            "--report",
            &report_s,
        ],
    );
    assert_eq!(out.status, 1);
    assert_eq!(summary["Status"], "ERROR", "{summary}");
    assert_no_secret(s.user.secret(), &out, Some(&report));
    let detail = summary["ErrorDetail"].as_str().unwrap_or_default();
    let session = format!(
        "arn:aws:sts::{}:assumed-role/syncmount-transfer/",
        common::MOTO_DEFAULT_ACCOUNT
    );
    for needle in [
        format!("s3://{other}/out/").as_str(),
        "AccessDenied",
        &session,
        "--role-arn",
        &s.role,
    ] {
        assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
    }
    assert_eq!(s.iam.keys(&other).await, Vec::<String>::new());
}

/// A role the user may not assume: the error says so and names the role
/// (not an SDK dump of a credentials-provider failure).
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_through_a_role_the_user_may_not_assume_names_the_role() {
    let _lock = common::moto_iam_lock().await;
    let s = role_setup().await;
    let stranger = s
        .iam
        .user(
            "stranger",
            Some(json!([
                on_bucket(&s.src, &["s3:ListBucket"]),
                on_objects(&s.src, &["s3:GetObject"]),
            ])),
        )
        .await;
    s.iam.enforce();
    let dir = common::tempdir();
    let mut cmd = common::sync_cmd(
        &stranger.server,
        &dir.path().join("state"),
        &[
            &format!("s3://{}/in", s.src),
            &format!("s3://{}/out", s.dst),
            "--dst-role-arn",
            &s.role,
        ],
    );
    cmd.arg("--json");
    let out = common::run(cmd);
    assert_ne!(out.status, 0);
    assert_no_secret(stranger.secret(), &out, None);
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert!(all.contains(&s.role), "the error names the role: {all}");
    assert!(
        all.contains("AssumeRole"),
        "the error says it could not be assumed: {all}"
    );
    assert!(!all.contains("SdkBody"), "no SDK Debug dump: {all}");
    assert_eq!(s.iam.keys(&s.dst).await, Vec::<String>::new());
}
