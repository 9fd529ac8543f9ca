//! The policy documents themselves: pure functions from validated values to JSON.

use super::*;
use serde::Serialize;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PolicyDocument {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statements: Vec<Statement>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: &'static str,
    #[serde(rename = "Effect")]
    pub effect: Effect,
    #[serde(rename = "Principal", skip_serializing_if = "Option::is_none")]
    pub principal: Option<Value>,
    #[serde(rename = "Action")]
    pub actions: Vec<&'static str>,
    /// Empty for trust policies (the role itself is the resource).
    #[serde(rename = "Resource", skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(rename = "Condition", skip_serializing_if = "Option::is_none")]
    pub condition: Option<Value>,
}

impl Statement {
    fn allow(sid: &'static str, actions: &[&'static str], resources: Vec<String>) -> Statement {
        Statement {
            sid,
            effect: Effect::Allow,
            principal: None,
            actions: actions.to_vec(),
            resources,
            condition: None,
        }
    }

    fn in_account(mut self, account: Option<&str>) -> Statement {
        self.condition = account.map(|a| json!({"StringEquals": {"aws:ResourceAccount": a}}));
        self
    }

    fn to(mut self, principals: Value) -> Statement {
        self.principal = Some(principals);
        self
    }
}

pub(crate) fn document(statements: Vec<Statement>) -> PolicyDocument {
    PolicyDocument {
        version: POLICY_VERSION,
        statements,
    }
}

pub(crate) fn bucket_arn(partition: &str, bucket: &str) -> String {
    format!("arn:{partition}:s3:::{bucket}")
}

pub(crate) fn objects_arn(partition: &str, bucket: &str) -> String {
    format!("arn:{partition}:s3:::{bucket}/*")
}

/// Reading a source bucket: list it, ask its Region, read its objects.
pub(crate) fn source_statements(
    partition: &str,
    bucket: &str,
    account: Option<&str>,
) -> Vec<Statement> {
    vec![
        Statement::allow(
            "ListSourceBucket",
            &BUCKET_ACTIONS,
            vec![bucket_arn(partition, bucket)],
        )
        .in_account(account),
        Statement::allow(
            "ReadSourceObjects",
            &SOURCE_OBJECT_ACTIONS,
            vec![objects_arn(partition, bucket)],
        )
        .in_account(account),
    ]
}

/// `policy source-user`.
pub fn source_user_policy(
    role_arn: &str,
    source_bucket: Option<&str>,
    source_account: Option<&str>,
) -> Result<PolicyDocument, PolicyError> {
    let role = parse_iam_arn(role_arn, "--role-arn", &[PrincipalKind::Role])?;
    let mut statements = vec![Statement::allow(
        "AssumeTransferRole",
        &["sts:AssumeRole"],
        vec![role_arn.to_string()],
    )];
    if let Some(b) = source_bucket {
        validate_bucket(b, "--source-bucket")?;
        if let Some(a) = source_account {
            validate_account(a, "--source-account")?;
        }
        statements.extend(source_statements(&role.partition, b, source_account));
    }
    Ok(document(statements))
}

pub struct TransferRoleInput<'a> {
    pub destination_bucket: &'a str,
    pub destination_account: &'a str,
    pub source_bucket: Option<&'a str>,
    pub source_account: Option<&'a str>,
    pub trusted_principal: Option<&'a str>,
    pub partition: &'a str,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct TransferRolePolicies {
    #[serde(rename = "InlinePolicy")]
    pub inline: PolicyDocument,
    #[serde(rename = "TrustPolicy")]
    pub trust: PolicyDocument,
}

/// `policy transfer-role`.
pub fn transfer_role_policies(i: &TransferRoleInput) -> Result<TransferRolePolicies, PolicyError> {
    validate_partition(i.partition)?;
    validate_bucket(i.destination_bucket, "--destination-bucket")?;
    validate_account(i.destination_account, "--destination-account")?;
    if let Some(b) = i.source_bucket {
        validate_bucket(b, "--source-bucket")?;
    }
    if let Some(a) = i.source_account {
        validate_account(a, "--source-account")?;
    }
    let trusted = match (i.trusted_principal, i.source_account) {
        (Some(p), _) => {
            let arn = parse_iam_arn(
                p,
                "--trusted-principal",
                &[PrincipalKind::Role, PrincipalKind::User, PrincipalKind::Root],
            )?;
            if arn.partition != i.partition {
                return Err(PolicyError::Usage(format!(
                    "--trusted-principal `{p}` is in partition {}, the buckets in {}: pass --partition {}",
                    arn.partition, i.partition, arn.partition
                )));
            }
            p.to_string()
        }
        (None, Some(a)) => format!("arn:{}:iam::{a}:root", i.partition),
        (None, None) => {
            return Err(PolicyError::Usage(
                "transfer-role needs to know who may assume the role: pass --source-account ID (trusts that account's principals allowed by their own policy, see `policy source-user`) or --trusted-principal ARN".into(),
            ))
        }
    };
    let p = i.partition;
    let dst = i.destination_bucket;
    let mut inline = Vec::new();
    if let Some(src) = i.source_bucket {
        inline.extend(source_statements(p, src, i.source_account));
    }
    inline.push(
        Statement::allow(
            "ListDestinationBucket",
            &DESTINATION_BUCKET_ACTIONS,
            vec![bucket_arn(p, dst)],
        )
        .in_account(Some(i.destination_account)),
    );
    inline.push(
        Statement::allow(
            "WriteDestinationObjects",
            &DESTINATION_OBJECT_ACTIONS,
            vec![objects_arn(p, dst)],
        )
        .in_account(Some(i.destination_account)),
    );
    let trust = Statement::allow("TrustedPrincipalAssumesRole", &["sts:AssumeRole"], vec![])
        .to(json!({"AWS": trusted}));
    Ok(TransferRolePolicies {
        inline: document(inline),
        trust: document(vec![trust]),
    })
}

/// `policy destination-bucket`.
pub fn destination_bucket_policy(
    bucket: &str,
    role_arn: &str,
    user_arn: Option<&str>,
) -> Result<PolicyDocument, PolicyError> {
    validate_bucket(bucket, "--bucket")?;
    let role = parse_iam_arn(role_arn, "--role-arn", &[PrincipalKind::Role])?;
    let mut principals = vec![role_arn.to_string()];
    if let Some(u) = user_arn {
        let user = parse_iam_arn(u, "--user-arn", &[PrincipalKind::User])?;
        if user.partition != role.partition {
            return Err(PolicyError::Usage(format!(
                "--user-arn `{u}` and --role-arn `{role_arn}` are in different partitions"
            )));
        }
        principals.push(u.to_string());
    }
    let who = json!({ "AWS": principals });
    let p = &role.partition;
    Ok(document(vec![
        Statement::allow(
            "TransferRoleListBucket",
            &DESTINATION_BUCKET_ACTIONS,
            vec![bucket_arn(p, bucket)],
        )
        .to(who.clone()),
        Statement::allow(
            "TransferRoleWriteObjects",
            &DESTINATION_OBJECT_ACTIONS,
            vec![objects_arn(p, bucket)],
        )
        .to(who),
    ]))
}

/// Days after which the recommended lifecycle rule aborts an incomplete
/// multipart upload: AWS's own example value, long enough for any upload
/// still in progress.
pub const ABORT_INCOMPLETE_AFTER_DAYS: u32 = 7;

/// The command that gives `bucket` the recommended lifecycle rule.
pub fn lifecycle_rule_command(bucket: &str) -> String {
    format!(
        "aws s3api put-bucket-lifecycle-configuration --bucket {bucket} --lifecycle-configuration '{{\"Rules\":[{{\"ID\":\"abort-incomplete-multipart-uploads\",\"Status\":\"Enabled\",\"Filter\":{{}},\"AbortIncompleteMultipartUpload\":{{\"DaysAfterInitiation\":{ABORT_INCOMPLETE_AFTER_DAYS}}}}}]}}' (this replaces the bucket's lifecycle rules: add the rule to any it has)"
    )
}

/// The note printed (on stderr) with the policies of a destination bucket.
pub fn lifecycle_note(bucket: &str) -> String {
    format!(
        "note: syncmount aborts the multipart uploads it starts, even after a crash, but an AbortIncompleteMultipartUpload lifecycle rule on `{bucket}` is still recommended: it also removes other tools' leftovers, and uploads syncmount cannot find without s3:ListBucketMultipartUploads. To add one: {}",
        lifecycle_rule_command(bucket)
    )
}

/// The Sid of `restricted-bucket`'s statement (replaced, not doubled, by `--merge`).
pub const RESTRICTED_SID: &str = "DenyEveryoneButAllowedIds";

/// `policy restricted-bucket`.
pub fn restricted_bucket_policy(
    bucket: &str,
    partition: &str,
    allowed: &[AllowedId],
) -> Result<PolicyDocument, PolicyError> {
    validate_bucket(bucket, "--bucket")?;
    validate_partition(partition)?;
    if allowed.is_empty() {
        return Err(PolicyError::Usage(
            "restricted-bucket needs at least one principal to allow: --allow-role-id, --allow-user-id, --allow-account or --lookup".into(),
        ));
    }
    let mut patterns: Vec<String> = Vec::new();
    for p in allowed.iter().map(AllowedId::pattern) {
        if !patterns.contains(&p) {
            patterns.push(p);
        }
    }
    let mut deny = Statement::allow(
        RESTRICTED_SID,
        &["s3:*"],
        vec![
            bucket_arn(partition, bucket),
            objects_arn(partition, bucket),
        ],
    )
    .to(json!("*"));
    deny.effect = Effect::Deny;
    deny.condition = Some(json!({"StringNotLike": {"aws:userid": patterns}}));
    Ok(document(vec![deny]))
}

/// A bucket policy read back from a file, with our statements merged in.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct MergedPolicy {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Id", skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(rename = "Statement")]
    pub statements: Vec<Value>,
}

/// An existing bucket policy with `ours`'s statements added (a statement of
/// the same Sid is replaced). Accepts the policy itself or the
/// `aws s3api get-bucket-policy` answer (`{"Policy": "<json>"}`).
pub fn merge_policy(existing: &str, ours: &PolicyDocument) -> Result<MergedPolicy, PolicyError> {
    let bad = |why: &str| PolicyError::Usage(format!("--merge: {why}"));
    let mut doc: Value = serde_json::from_str(existing).map_err(|e| {
        bad(&format!(
            "not JSON ({e}); expected a bucket policy document"
        ))
    })?;
    if let Some(inner) = doc.get("Policy").and_then(Value::as_str) {
        doc = serde_json::from_str(inner)
            .map_err(|e| bad(&format!("the Policy member is not JSON ({e})")))?;
    }
    let Value::Object(mut map) = doc else {
        return Err(bad("expected a JSON object with Version and Statement"));
    };
    if let Some(v) = map.get("Version") {
        if v != POLICY_VERSION {
            return Err(bad(&format!(
                "Version {v} is not {POLICY_VERSION}; aws:userid patterns need {POLICY_VERSION}"
            )));
        }
    }
    if let Some(k) = map
        .keys()
        .find(|k| !["Version", "Id", "Statement"].contains(&k.as_str()))
    {
        return Err(bad(&format!(
            "unexpected member `{k}`: expected Version, Id and Statement"
        )));
    }
    let mut statements = match map.remove("Statement") {
        Some(Value::Array(a)) => a,
        Some(one @ Value::Object(_)) => vec![one],
        None => Vec::new(),
        Some(_) => return Err(bad("Statement must be an array of statements")),
    };
    let our_sids: Vec<&str> = ours.statements.iter().map(|s| s.sid).collect();
    statements.retain(|s| {
        !s.get("Sid")
            .and_then(Value::as_str)
            .is_some_and(|sid| our_sids.contains(&sid))
    });
    statements.extend(
        ours.statements
            .iter()
            .map(|s| serde_json::to_value(s).expect("a statement always serializes")),
    );
    Ok(MergedPolicy {
        version: POLICY_VERSION,
        id: map.remove("Id"),
        statements,
    })
}
