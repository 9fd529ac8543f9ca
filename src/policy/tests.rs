//! Unit tests of the policy generator: every statement compared exactly.

use super::*;
use clap::Parser;
use serde_json::{json, Value};

const ROLE: &str = "arn:aws:iam::111111111111:role/syncmount-transfer";
const USER: &str = "arn:aws:iam::111111111111:user/alice";
const ROLE_ID: &str = "AROAEXAMPLEROLEID0001";
const USER_ID: &str = "AIDAEXAMPLEUSERID0001";

/// One statement reduced to what it grants: the order of actions,
/// resources and condition values does not matter, the Sid is checked apart.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    effect: String,
    actions: Vec<String>,
    resources: Vec<String>,
    principal: String,
    condition: String,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    let mut out: Vec<String> = match v {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
        Some(other) => panic!("expected a string or an array of strings, got {other}"),
    };
    out.sort();
    out
}

/// Sorts every array (and makes a lone string an array of one), so two
/// equivalent principals or conditions print the same.
fn canon(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => json!([s]),
                        other => canon(other),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => {
            let mut items: Vec<Value> = a.iter().map(canon).collect();
            items.sort_by_key(|x| x.to_string());
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// Parses a printed document, checks Version and Sids, returns its grants sorted.
fn grants(text: &str) -> Vec<Grant> {
    let doc: Value = serde_json::from_str(text).expect("valid JSON");
    assert_eq!(doc["Version"], POLICY_VERSION);
    let statements = doc["Statement"].as_array().expect("Statement array");
    let mut sids: Vec<&str> = statements
        .iter()
        .map(|s| s["Sid"].as_str().expect("every statement has a Sid"))
        .collect();
    assert!(sids
        .iter()
        .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())));
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), statements.len(), "Sids are unique");
    let mut out: Vec<Grant> = statements
        .iter()
        .map(|s| Grant {
            effect: s["Effect"].as_str().unwrap().to_string(),
            actions: strings(s.get("Action")),
            resources: strings(s.get("Resource")),
            principal: s
                .get("Principal")
                .map(canon)
                .unwrap_or(Value::Null)
                .to_string(),
            condition: s
                .get("Condition")
                .map(canon)
                .unwrap_or(Value::Null)
                .to_string(),
        })
        .collect();
    out.sort();
    out
}

/// An expected statement: `allow(actions, resources)`, then `.by(principal)`,
/// `.when(account)` (aws:ResourceAccount) or `.cond(condition)`.
fn allow(actions: &[&str], resources: &[&str]) -> Grant {
    let sorted = |x: &[&str]| {
        let mut v: Vec<String> = x.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    Grant {
        effect: "Allow".into(),
        actions: sorted(actions),
        resources: sorted(resources),
        principal: Value::Null.to_string(),
        condition: Value::Null.to_string(),
    }
}

fn deny(actions: &[&str], resources: &[&str]) -> Grant {
    Grant {
        effect: "Deny".into(),
        ..allow(actions, resources)
    }
}

impl Grant {
    fn by(mut self, principal: Value) -> Grant {
        self.principal = canon(&principal).to_string();
        self
    }

    fn when(self, account: &str) -> Grant {
        self.cond(json!({"StringEquals": {"aws:ResourceAccount": account}}))
    }

    fn cond(mut self, condition: Value) -> Grant {
        self.condition = canon(&condition).to_string();
        self
    }
}

fn sorted(mut g: Vec<Grant>) -> Vec<Grant> {
    g.sort();
    g
}

const BUCKET: [&str; 2] = ["s3:GetBucketLocation", "s3:ListBucket"];
const DST_BUCKET: [&str; 3] = [
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
];
const WRITE: [&str; 5] = [
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:PutObject",
    "s3:PutObjectTagging",
];

fn input<'a>() -> TransferRoleInput<'a> {
    TransferRoleInput {
        destination_bucket: "dst-bucket",
        destination_account: "222222222222",
        source_bucket: None,
        source_account: Some("111111111111"),
        trusted_principal: None,
        partition: "aws",
    }
}

#[test]
fn source_user_without_a_bucket_only_assumes_the_role() {
    let doc = source_user_policy(ROLE, None, None).unwrap();
    assert_eq!(
        grants(&pretty(&doc)),
        vec![allow(&["sts:AssumeRole"], &[ROLE])]
    );
}

#[test]
fn source_user_with_a_bucket_lists_and_reads_it_and_nothing_more() {
    let doc = source_user_policy(ROLE, Some("src-bucket"), Some("111111111111")).unwrap();
    assert_eq!(
        grants(&pretty(&doc)),
        sorted(vec![
            allow(&["sts:AssumeRole"], &[ROLE]),
            allow(&BUCKET, &["arn:aws:s3:::src-bucket"]).when("111111111111"),
            allow(
                &["s3:GetObject", "s3:GetObjectTagging"],
                &["arn:aws:s3:::src-bucket/*"]
            )
            .when("111111111111"),
        ])
    );
}

#[test]
fn source_user_takes_the_partition_from_the_role_arn() {
    let role = "arn:aws-cn:iam::111111111111:role/t";
    let text = pretty(&source_user_policy(role, Some("src"), None).unwrap());
    assert!(text.contains("arn:aws-cn:s3:::src/*"), "{text}");
    assert!(!text.contains("arn:aws:s3"), "{text}");
}

#[test]
fn transfer_role_pins_destination_statements_to_the_destination_account() {
    let p = transfer_role_policies(&input()).unwrap();
    assert_eq!(
        grants(&pretty(&p.inline)),
        sorted(vec![
            allow(&DST_BUCKET, &["arn:aws:s3:::dst-bucket"]).when("222222222222"),
            allow(&WRITE, &["arn:aws:s3:::dst-bucket/*"]).when("222222222222"),
        ])
    );
    assert_eq!(
        grants(&pretty(&p.trust)),
        vec![allow(&["sts:AssumeRole"], &[]).by(json!({"AWS": "arn:aws:iam::111111111111:root"}))]
    );
}

#[test]
fn transfer_role_with_a_source_bucket_reads_it_in_the_source_account() {
    let p = transfer_role_policies(&TransferRoleInput {
        source_bucket: Some("src-bucket"),
        ..input()
    })
    .unwrap();
    assert_eq!(
        grants(&pretty(&p.inline)),
        sorted(vec![
            allow(&BUCKET, &["arn:aws:s3:::src-bucket"]).when("111111111111"),
            allow(
                &["s3:GetObject", "s3:GetObjectTagging"],
                &["arn:aws:s3:::src-bucket/*"]
            )
            .when("111111111111"),
            allow(&DST_BUCKET, &["arn:aws:s3:::dst-bucket"]).when("222222222222"),
            allow(&WRITE, &["arn:aws:s3:::dst-bucket/*"]).when("222222222222"),
        ])
    );
}

#[test]
fn transfer_role_source_statements_have_no_condition_when_the_source_account_is_unknown() {
    let p = transfer_role_policies(&TransferRoleInput {
        source_bucket: Some("src-bucket"),
        source_account: None,
        trusted_principal: Some(USER),
        ..input()
    })
    .unwrap();
    let g = grants(&pretty(&p.inline));
    assert!(g.contains(&allow(&BUCKET, &["arn:aws:s3:::src-bucket"])));
    assert!(g.contains(&allow(
        &["s3:GetObject", "s3:GetObjectTagging"],
        &["arn:aws:s3:::src-bucket/*"]
    )));
    assert_eq!(
        grants(&pretty(&p.trust)),
        vec![allow(&["sts:AssumeRole"], &[]).by(json!({"AWS": USER}))]
    );
}

#[test]
fn transfer_role_needs_someone_to_trust() {
    let e = transfer_role_policies(&TransferRoleInput {
        source_account: None,
        ..input()
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("--source-account") && msg.contains("--trusted-principal"),
        "{msg}"
    );
}

#[test]
fn transfer_role_refuses_a_principal_of_another_partition() {
    let e = transfer_role_policies(&TransferRoleInput {
        trusted_principal: Some("arn:aws-cn:iam::111111111111:root"),
        ..input()
    })
    .unwrap_err();
    assert!(e.to_string().contains("--partition aws-cn"), "{e}");
}

#[test]
fn transfer_role_names_each_bad_value() {
    for (i, needle) in [
        (
            TransferRoleInput {
                destination_account: "2222",
                ..input()
            },
            "--destination-account `2222`",
        ),
        (
            TransferRoleInput {
                source_account: Some("abc"),
                ..input()
            },
            "--source-account `abc`",
        ),
        (
            TransferRoleInput {
                destination_bucket: "Dst",
                ..input()
            },
            "--destination-bucket `Dst`",
        ),
        (
            TransferRoleInput {
                source_bucket: Some("a"),
                ..input()
            },
            "--source-bucket `a`",
        ),
        (
            TransferRoleInput {
                trusted_principal: Some("alice"),
                ..input()
            },
            "--trusted-principal `alice`",
        ),
        (
            TransferRoleInput {
                partition: "azure",
                ..input()
            },
            "--partition `azure`",
        ),
    ] {
        let msg = transfer_role_policies(&i).unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg} should name {needle}");
    }
}

#[test]
fn destination_bucket_grants_the_role_and_the_user_exactly_the_transfer_actions() {
    let doc = destination_bucket_policy("dst-bucket", ROLE, Some(USER)).unwrap();
    let who = json!({"AWS": [ROLE, USER]});
    assert_eq!(
        grants(&pretty(&doc)),
        sorted(vec![
            allow(&DST_BUCKET, &["arn:aws:s3:::dst-bucket"]).by(who.clone()),
            allow(&WRITE, &["arn:aws:s3:::dst-bucket/*"]).by(who),
        ])
    );
}

#[test]
fn destination_bucket_refuses_a_user_as_the_role_and_a_session_arn() {
    let e = destination_bucket_policy("dst-bucket", USER, None).unwrap_err();
    assert!(
        e.to_string().contains(&format!("--role-arn `{USER}`")),
        "{e}"
    );
    let session = "arn:aws:sts::111111111111:assumed-role/t/s";
    let e = destination_bucket_policy("dst-bucket", session, None).unwrap_err();
    assert!(e.to_string().contains("role session"), "{e}");
    let e = destination_bucket_policy("dst-bucket", ROLE, Some(ROLE)).unwrap_err();
    assert!(e.to_string().contains("--user-arn"), "{e}");
}

#[test]
fn restricted_bucket_denies_everything_to_everyone_but_the_ids() {
    let allowed = allowed_ids(
        &[ROLE_ID.to_string()],
        &[USER_ID.to_string()],
        &["222222222222".to_string()],
    )
    .unwrap();
    let doc = restricted_bucket_policy("dst-bucket", "aws", &allowed).unwrap();
    assert_eq!(
        grants(&pretty(&doc)),
        vec![deny(&["s3:*"], &["arn:aws:s3:::dst-bucket", "arn:aws:s3:::dst-bucket/*"]).by(json!("*")).cond(json!({"StringNotLike": {"aws:userid": [format!("{ROLE_ID}:*"), USER_ID, "222222222222"]}}))]
    );
}

#[test]
fn restricted_bucket_lists_each_id_once_and_needs_one() {
    let allowed = vec![
        AllowedId::Role(ROLE_ID.into()),
        AllowedId::Role(ROLE_ID.into()),
    ];
    let doc = restricted_bucket_policy("b-1", "aws", &allowed).unwrap();
    assert_eq!(
        doc.statements[0].condition,
        Some(json!({"StringNotLike": {"aws:userid": [format!("{ROLE_ID}:*")]}}))
    );
    let e = restricted_bucket_policy("b-1", "aws", &[]).unwrap_err();
    assert!(e.to_string().contains("--allow-role-id"), "{e}");
}

#[test]
fn unique_ids_must_have_the_right_prefix_and_form() {
    assert!(validate_unique_id(ROLE_ID, "--allow-role-id", "AROA").is_ok());
    assert!(validate_unique_id(USER_ID, "--allow-user-id", "AIDA").is_ok());
    for (id, prefix, hint) in [
        ("AROASHORT", "AROA", "16 or more"),
        ("AROAexampleroleid0001", "AROA", "uppercase"),
        (USER_ID, "AROA", "--allow-user-id"),
        (ROLE_ID, "AIDA", "--allow-role-id"),
        ("AROAEXAMPLEROLEID0001:*", "AROA", "bare id"),
        ("AKIAIOSFODNN7EXAMPLE", "AIDA", "access key"),
        (ROLE, "AROA", "ARN"),
    ] {
        let msg = validate_unique_id(id, "--x", prefix)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("--x `{id}`")) && msg.contains(hint),
            "{msg}"
        );
    }
}

#[test]
fn caller_ids_map_to_what_to_allow() {
    assert_eq!(
        allowed_from_caller(&format!("{ROLE_ID}:syncmount-policy-lookup")).unwrap(),
        AllowedId::Role(ROLE_ID.into())
    );
    assert_eq!(
        allowed_from_caller(USER_ID).unwrap(),
        AllowedId::User(USER_ID.into())
    );
    assert_eq!(
        allowed_from_caller("111111111111").unwrap(),
        AllowedId::Account("111111111111".into())
    );
    for bad in ["111111111111:bob", "AKIAIOSFODNN7EXAMPLE", "AROASHORT:s"] {
        assert!(allowed_from_caller(bad)
            .unwrap_err()
            .to_string()
            .contains(bad));
    }
}

#[test]
fn bucket_names_follow_s3_rules() {
    for ok in ["abc", "my-bucket.v2", "0-a", &"a".repeat(63)] {
        assert!(validate_bucket(ok, "--bucket").is_ok(), "{ok}");
    }
    for (bad, hint) in [
        ("ab", "3 to 63"),
        (&"a".repeat(64), "3 to 63"),
        ("My-Bucket", "lowercase"),
        ("-abc", "starting and ending"),
        ("abc.", "starting and ending"),
        ("a..b", "`..`"),
        ("a.-b", "`.-`"),
        ("192.168.1.1", "IP address"),
        ("s3://my-bucket/data", "`my-bucket`"),
        ("arn:aws:s3:::my-bucket", "`my-bucket`"),
        ("my_bucket", "lowercase"),
    ] {
        let msg = validate_bucket(bad, "--bucket").unwrap_err().to_string();
        assert!(
            msg.contains(&format!("--bucket `{bad}`")) && msg.contains(hint),
            "{msg}"
        );
    }
}

#[test]
fn arns_are_iam_roles_users_or_roots_with_12_digit_accounts() {
    let role = parse_iam_arn(
        "arn:aws-us-gov:iam::111111111111:role/path/to/r+=,.@_-",
        "--x",
        &[PrincipalKind::Role],
    )
    .unwrap();
    assert_eq!(role.partition, "aws-us-gov");
    assert_eq!(role.account, "111111111111");
    let all = [
        PrincipalKind::Role,
        PrincipalKind::User,
        PrincipalKind::Root,
    ];
    assert_eq!(
        parse_iam_arn("arn:aws:iam::111111111111:root", "--x", &all)
            .unwrap()
            .kind,
        PrincipalKind::Root
    );
    for bad in [
        "arn:aws:iam::11111111111:role/r",
        "arn:aws:iam::1111111111112:role/r",
        "arn:aws:iam:us-east-1:111111111111:role/r",
        "arn:aws:s3:::bucket",
        "arn:aws:iam::111111111111:role/",
        "arn:aws:iam::111111111111:role/a b",
        "arn:aws:iam::111111111111:group/g",
        "arn:gcp:iam::111111111111:role/r",
        "role/r",
        "",
    ] {
        let msg = parse_iam_arn(bad, "--x", &all).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("--x `{bad}`")) && msg.contains("arn:aws:iam::ACCOUNT:"),
            "{msg}"
        );
    }
    let msg = parse_iam_arn(USER, "--role-arn", &[PrincipalKind::Role])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("role/NAME") && !msg.contains("user/NAME"),
        "{msg}"
    );
}

#[test]
fn account_ids_are_12_digits() {
    assert!(validate_account("012345678901", "--a").is_ok());
    for bad in ["12345678901", "1234567890123", "1234-5678-9012", ""] {
        let msg = validate_account(bad, "--a").unwrap_err().to_string();
        assert!(
            msg.contains(&format!("--a `{bad}`")) && msg.contains("12-digit"),
            "{msg}"
        );
    }
}

#[test]
fn merge_adds_the_deny_and_replaces_an_older_one() {
    let grant_doc = pretty(&destination_bucket_policy("dst-bucket", ROLE, None).unwrap());
    let deny =
        restricted_bucket_policy("dst-bucket", "aws", &[AllowedId::Role(ROLE_ID.into())]).unwrap();
    let merged = pretty(&merge_policy(&grant_doc, &deny).unwrap());
    assert_eq!(grants(&merged).len(), 3);
    // Merging again (say, with another id) replaces the Deny, never doubles it.
    let deny2 =
        restricted_bucket_policy("dst-bucket", "aws", &[AllowedId::User(USER_ID.into())]).unwrap();
    let again = pretty(&merge_policy(&merged, &deny2).unwrap());
    let g = grants(&again);
    assert_eq!(g.len(), 3);
    assert!(
        again.contains(USER_ID) && !again.contains(ROLE_ID),
        "{again}"
    );
}

#[test]
fn merge_reads_the_get_bucket_policy_answer_and_refuses_what_it_cannot_keep() {
    let inner = json!({"Version": POLICY_VERSION, "Id": "p1", "Statement": {"Sid": "Old", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b-1/*"}});
    let wrapped = json!({"Policy": inner.to_string()}).to_string();
    let deny = restricted_bucket_policy("b-1", "aws", &[AllowedId::Account("111111111111".into())])
        .unwrap();
    let merged = merge_policy(&wrapped, &deny).unwrap();
    assert_eq!(merged.id, Some(json!("p1")));
    assert_eq!(merged.statements.len(), 2);
    for (bad, hint) in [
        ("not json", "not JSON"),
        (r#"{"Version":"2008-10-17","Statement":[]}"#, "2008-10-17"),
        (r#"{"Statement":[],"Extra":1}"#, "Extra"),
        (r#"{"Statement":"x"}"#, "array"),
        ("[]", "object"),
    ] {
        let msg = merge_policy(bad, &deny).unwrap_err().to_string();
        assert!(msg.contains(hint), "{msg}");
    }
}

#[test]
fn printed_documents_put_version_and_sid_first() {
    let text = pretty(&source_user_policy(ROLE, None, None).unwrap());
    let compact: String = text.split_whitespace().collect();
    assert!(
        compact.starts_with(r#"{"Version":"2012-10-17","Statement":[{"Sid":"#),
        "{text}"
    );
}

/// The CLI wraps `PolicyCommand` as `syncmount policy …`: a stand-in
/// parser checks the subcommand and flag names.
#[derive(clap::Parser, Debug)]
struct Harness {
    #[command(subcommand)]
    cmd: PolicyCommand,
}

async fn cli(args: &[&str]) -> Result<String, PolicyError> {
    let mut argv = vec!["policy"];
    argv.extend_from_slice(args);
    render(Harness::try_parse_from(argv).expect("parses").cmd).await
}

#[tokio::test]
async fn every_subcommand_parses_and_renders() {
    let out = cli(&[
        "source-user",
        "--role-arn",
        ROLE,
        "--source-bucket",
        "src-bucket",
    ])
    .await
    .unwrap();
    assert_eq!(grants(&out).len(), 3);
    let out = cli(&[
        "transfer-role",
        "--destination-bucket",
        "dst-bucket",
        "--destination-account",
        "222222222222",
        "--source-account",
        "111111111111",
    ])
    .await
    .unwrap();
    let both: Value = serde_json::from_str(&out).unwrap();
    assert!(both.get("InlinePolicy").is_some() && both.get("TrustPolicy").is_some());
    let out = cli(&[
        "transfer-role",
        "--destination-bucket",
        "dst-bucket",
        "--destination-account",
        "222222222222",
        "--source-account",
        "111111111111",
        "--only",
        "trust",
    ])
    .await
    .unwrap();
    assert_eq!(grants(&out)[0].actions, vec!["sts:AssumeRole"]);
    let out = cli(&[
        "destination-bucket",
        "--bucket",
        "dst-bucket",
        "--role-arn",
        ROLE,
    ])
    .await
    .unwrap();
    assert_eq!(grants(&out).len(), 2);
    let out = cli(&[
        "restricted-bucket",
        "--bucket",
        "dst-bucket",
        "--allow-role-id",
        ROLE_ID,
        "--allow-role-id",
        "AROAEXAMPLEROLEID0002",
        "--allow-account",
        "222222222222",
    ])
    .await
    .unwrap();
    assert!(out.contains("AROAEXAMPLEROLEID0002:*"), "{out}");
    let e = cli(&[
        "restricted-bucket",
        "--bucket",
        "dst-bucket",
        "--allow-role-id",
        "nope",
    ])
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--allow-role-id `nope`"), "{e}");
    assert!(Harness::try_parse_from([
        "policy",
        "restricted-bucket",
        "--bucket",
        "b-1",
        "--role-arn",
        ROLE
    ])
    .is_err());
}

#[tokio::test]
async fn run_returns_2_on_bad_input() {
    let cmd = Harness::try_parse_from(["policy", "source-user", "--role-arn", "nope"])
        .unwrap()
        .cmd;
    assert_eq!(run(cmd).await, 2);
}

#[test]
fn the_lifecycle_note_names_the_bucket_and_a_valid_abort_incomplete_upload_rule() {
    let note = lifecycle_note("dst-bucket");
    assert!(note.contains("AbortIncompleteMultipartUpload"), "{note}");
    assert!(note.contains("--bucket dst-bucket"), "{note}");
    let json = note
        .split_once("--lifecycle-configuration '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(json, _)| json)
        .unwrap_or_else(|| panic!("no quoted configuration in {note}"));
    let rules: Value = serde_json::from_str(json).unwrap();
    let rule = &rules["Rules"][0];
    assert_eq!(rule["Status"], "Enabled");
    assert_eq!(rule["Filter"], json!({}), "every key of the bucket");
    assert_eq!(
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
        ABORT_INCOMPLETE_AFTER_DAYS
    );
}
