//! `syncmount policy …` run as a user would: each subcommand prints one JSON
//! document on stdout (checked for the fact that matters most), bad input
//! exits 2 naming the value, and against moto the documents are accepted by
//! IAM and `--lookup` finds the ids IAM gave. The exact statement sets are
//! unit-tested in src/policy.rs.

mod common;

use common::{moto, run, syncmount, syncmount_for, RunOutput, S3Server, REGION};
use serde_json::Value;

const ROLE: &str = "arn:aws:iam::111111111111:role/syncmount-transfer";
const ROLE_ID: &str = "AROAEXAMPLEROLEID0001";

fn policy(args: &[&str]) -> RunOutput {
    let mut cmd = syncmount();
    cmd.arg("policy").args(args);
    run(cmd)
}

/// Runs `syncmount policy ARGS`, expects exit 0 and parses stdout.
fn policy_json(args: &[&str]) -> Value {
    let out = policy(args);
    assert_eq!(
        out.status, 0,
        "syncmount policy {args:?} failed: {}",
        out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.stdout))
}

fn statements(doc: &Value) -> &Vec<Value> {
    assert_eq!(doc["Version"], "2012-10-17");
    doc["Statement"].as_array().expect("a Statement array")
}

/// A string or an array of strings, as a Vec.
fn list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        other => panic!("expected a string or an array, got {other}"),
    }
}

#[test]
fn source_user_may_assume_exactly_the_given_role() {
    let doc = policy_json(&["source-user", "--role-arn", ROLE]);
    let s = statements(&doc);
    assert_eq!(s.len(), 1, "{doc:#}");
    assert_eq!(list(&s[0]["Action"]), ["sts:AssumeRole"]);
    assert_eq!(list(&s[0]["Resource"]), [ROLE]);
}

#[test]
fn transfer_role_pins_every_destination_statement_to_the_destination_account() {
    let doc = policy_json(&[
        "transfer-role",
        "--destination-bucket",
        "dst-bucket",
        "--destination-account",
        "222222222222",
        "--source-bucket",
        "src-bucket",
        "--source-account",
        "111111111111",
    ]);
    let inline = statements(&doc["InlinePolicy"]);
    let on_dst: Vec<&Value> = inline
        .iter()
        .filter(|s| {
            list(&s["Resource"])
                .iter()
                .any(|r| r.contains(":::dst-bucket"))
        })
        .collect();
    assert_eq!(on_dst.len(), 2, "{doc:#}");
    for s in on_dst {
        assert_eq!(
            s["Condition"]["StringEquals"]["aws:ResourceAccount"], "222222222222",
            "{s:#}"
        );
    }
    let trust = statements(&doc["TrustPolicy"]);
    assert_eq!(
        trust[0]["Principal"]["AWS"],
        "arn:aws:iam::111111111111:root"
    );
}

#[test]
fn destination_bucket_grants_the_role_as_principal() {
    let doc = policy_json(&[
        "destination-bucket",
        "--bucket",
        "dst-bucket",
        "--role-arn",
        ROLE,
    ]);
    for s in statements(&doc) {
        assert_eq!(list(&s["Principal"]["AWS"]), [ROLE], "{s:#}");
    }
}

#[test]
fn restricted_bucket_denies_all_but_sessions_of_the_allowed_role() {
    let doc = policy_json(&[
        "restricted-bucket",
        "--bucket",
        "dst-bucket",
        "--allow-role-id",
        ROLE_ID,
    ]);
    let s = &statements(&doc)[0];
    assert_eq!(s["Effect"], "Deny");
    assert_eq!(s["Principal"], "*");
    assert_eq!(
        list(&s["Condition"]["StringNotLike"]["aws:userid"]),
        [format!("{ROLE_ID}:*")]
    );
}

#[test]
fn restricted_bucket_merges_into_the_destination_bucket_policy() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bucket-policy.json");
    let grant = policy(&[
        "destination-bucket",
        "--bucket",
        "dst-bucket",
        "--role-arn",
        ROLE,
    ]);
    std::fs::write(&file, grant.stdout).unwrap();
    let doc = policy_json(&[
        "restricted-bucket",
        "--bucket",
        "dst-bucket",
        "--allow-role-id",
        ROLE_ID,
        "--merge",
        file.to_str().unwrap(),
    ]);
    let effects: Vec<&str> = statements(&doc)
        .iter()
        .map(|s| s["Effect"].as_str().unwrap())
        .collect();
    assert_eq!(effects, ["Allow", "Allow", "Deny"]);
}

#[test]
fn a_bad_role_arn_exits_2_and_names_it() {
    let bad = "arn:aws:iam::12345:role/transfer";
    let out = policy(&[
        "destination-bucket",
        "--bucket",
        "dst-bucket",
        "--role-arn",
        bad,
    ]);
    assert_eq!(out.status, 2);
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    assert!(
        out.stderr.contains(bad) && out.stderr.contains("12 digits"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bucket_url_instead_of_a_name_exits_2_with_the_name_to_use() {
    let out = policy(&[
        "source-user",
        "--role-arn",
        ROLE,
        "--source-bucket",
        "s3://src-bucket/data",
    ]);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("`src-bucket`"), "{}", out.stderr);
}

#[test]
fn lookup_that_cannot_reach_sts_exits_2_and_says_what_to_pass_instead() {
    let server = S3Server {
        endpoint: "http://127.0.0.1:1".into(),
        ..moto_like()
    };
    let mut cmd = syncmount_for(&server);
    cmd.args([
        "policy",
        "restricted-bucket",
        "--bucket",
        "dst-bucket",
        "--lookup",
        "--endpoint-url",
        &server.endpoint,
    ]);
    let out = run(cmd);
    assert_eq!(out.status, 2);
    assert!(out.stderr.contains("--allow-role-id"), "{}", out.stderr);
}

/// moto's credentials without needing the server (for tests that must fail to connect).
fn moto_like() -> S3Server {
    S3Server {
        kind: common::ServerKind::Moto,
        endpoint: String::new(),
        access_key: "testing".into(),
        secret_key: "testing".into(),
    }
}

fn iam(server: &S3Server) -> aws_sdk_iam::Client {
    let config = aws_sdk_iam::config::Builder::new()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .region(aws_sdk_iam::config::Region::new(REGION))
        .endpoint_url(&server.endpoint)
        .credentials_provider(server.credentials())
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

fn unique_name(tag: &str) -> String {
    format!("{tag}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// Creates a role in moto's default account from the `transfer-role`
/// documents (so IAM's validator sees them) and returns (ARN, RoleId).
async fn create_transfer_role(server: &S3Server) -> (String, String) {
    let doc = policy_json(&[
        "transfer-role",
        "--destination-bucket",
        "dst-bucket",
        "--destination-account",
        "222222222222",
        "--source-bucket",
        "src-bucket",
        "--source-account",
        common::MOTO_DEFAULT_ACCOUNT,
    ]);
    let name = unique_name("policy-cli");
    let iam = iam(server);
    let role = iam
        .create_role()
        .role_name(&name)
        .assume_role_policy_document(doc["TrustPolicy"].to_string())
        .send()
        .await
        .expect("IAM accepts the trust policy")
        .role
        .expect("a role");
    iam.put_role_policy()
        .role_name(&name)
        .policy_name("syncmount")
        .policy_document(doc["InlinePolicy"].to_string())
        .send()
        .await
        .expect("IAM accepts the inline policy");
    (role.arn, role.role_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_with_a_role_arn_allows_that_roles_id() {
    let server = moto();
    let (arn, role_id) = create_transfer_role(&server).await;
    assert!(role_id.starts_with("AROA"), "{role_id}");
    let mut cmd = syncmount_for(&server);
    cmd.args([
        "policy",
        "restricted-bucket",
        "--bucket",
        "dst-bucket",
        "--lookup",
        "--role-arn",
        &arn,
        "--endpoint-url",
        &server.endpoint,
    ]);
    let out = run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        list(&statements(&doc)[0]["Condition"]["StringNotLike"]["aws:userid"]),
        [format!("{role_id}:*")]
    );
}

// No moto test of `--lookup` as an IAM user: moto gives users 20 lowercase
// characters as UserId, not the AIDA… ids of AWS (unit-tested in src/policy.rs).
