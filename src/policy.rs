//! `syncmount policy …`: the IAM and bucket policies a transfer needs, filled
//! in and printed as JSON ready to paste (`Version` 2012-10-17, one clearly
//! named `Sid` per statement). Modelled on DataSync's tutorials for copying
//! between buckets of different accounts and for restricting a bucket to the
//! transfer role, but cut down to what syncmount itself calls:
//!
//! | S3 call syncmount makes | permission | on |
//! |---|---|---|
//! | ListObjectsV2, HeadBucket | `s3:ListBucket` | both buckets |
//! | GetBucketLocation (Region checks) | `s3:GetBucketLocation` | both buckets |
//! | GetObject, HeadObject, the read side of CopyObject / UploadPartCopy | `s3:GetObject` | source objects; destination objects (change detection, verification) |
//! | PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload, the write side of CopyObject / UploadPartCopy | `s3:PutObject` | destination objects |
//! | AbortMultipartUpload (failed uploads, a crashed run's journalled uploads) | `s3:AbortMultipartUpload` | destination objects |
//! | DeleteObject (`--preserve-deleted-files remove`, the `location check --write-probe` key) | `s3:DeleteObject` | destination objects |
//!
//! Left out on purpose: `s3:ListBucketMultipartUploads` (syncmount journals
//! its own uploads instead of listing them), `s3:ListMultipartUploadParts`,
//! the tagging and version actions (not used yet), `iam:PassRole` (nobody
//! hands the role to a service). `s3:DeleteObject` is granted on the
//! destination even though only `--preserve-deleted-files remove` uses it;
//! drop it by hand for a copy-only destination. `location check` also asks
//! GetBucketOwnershipControls and GetBucketVersioning; without those
//! permissions it reports the items as not checked, the transfer is unaffected.
//!
//! The four documents:
//! - `source-user`: identity policy for the person running syncmount in the
//!   source account: `sts:AssumeRole` on the transfer role and, with
//!   `--source-bucket`, list and read on the source bucket.
//! - `transfer-role`: the role's inline policy and its trust policy. Every
//!   destination statement carries `aws:ResourceAccount` = the destination
//!   account, so the role cannot write into a same-named bucket someone else
//!   re-created. Source statements carry `aws:ResourceAccount` = the source
//!   account when `--source-account` is given, and no condition otherwise
//!   (the source account is then unknown). The trust policy names
//!   `--trusted-principal`, else the source account's root
//!   (`arn:aws:iam::SOURCE:root`: every principal of that account whose own
//!   policy allows `sts:AssumeRole` on the role, which `source-user` grants).
//! - `destination-bucket`: the destination's bucket policy granting the
//!   transfer role (and optionally a user) the same bucket and object actions.
//! - `restricted-bucket`: Deny `s3:*` to `Principal: "*"` unless `aws:userid`
//!   is one of the allowed ids: `ROLEID:*` for a role (every session of it),
//!   `USERID` for an IAM user, the 12-digit account id for its root user.
//!   A bucket has one policy: `--merge FILE` adds the Deny to an existing
//!   policy (for instance the `destination-bucket` output). With `--lookup`
//!   the caller's own id is fetched with STS GetCallerIdentity; with
//!   `--lookup --role-arn ARN` the caller first assumes that role, so the id
//!   is the role's. Other principals' ids come from IAM:
//!   `aws iam get-role --role-name NAME --query Role.RoleId --output text` or
//!   `aws iam get-user --user-name NAME --query User.UserId --output text`.
//!
//! JSON goes to stdout and nothing else; notes and errors go to stderr. Bad
//! input exits 2 with a message naming the value and what was expected.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::{json, Value};

/// The only policy language version with policy variables and conditions as used here.
pub const POLICY_VERSION: &str = "2012-10-17";

/// How long `--lookup` waits for STS before giving up.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// STS answers in every Region; one is needed to sign, so take the global one.
const LOOKUP_DEFAULT_REGION: &str = "us-east-1";

const BUCKET_ACTIONS: [&str; 2] = ["s3:GetBucketLocation", "s3:ListBucket"];
const SOURCE_OBJECT_ACTIONS: [&str; 1] = ["s3:GetObject"];
const DESTINATION_OBJECT_ACTIONS: [&str; 4] = [
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:PutObject",
];

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[derive(clap::Subcommand, Debug)]
pub enum PolicyCommand {
    /// Identity policy for the person running syncmount in the source account
    /// (sts:AssumeRole on the transfer role; list/read on the source bucket).
    SourceUser(SourceUserArgs),
    /// The transfer role's inline policy and trust policy.
    TransferRole(TransferRoleArgs),
    /// Bucket policy for the destination bucket, granting the transfer role.
    DestinationBucket(DestinationBucketArgs),
    /// Bucket policy denying everyone but the allowed roles/users (aws:userid).
    RestrictedBucket(RestrictedBucketArgs),
}

#[derive(clap::Args, Debug)]
pub struct SourceUserArgs {
    /// ARN of the transfer role the user assumes (arn:aws:iam::ACCOUNT:role/NAME).
    #[arg(long)]
    pub role_arn: String,
    /// Source bucket the user reads directly (without the role).
    #[arg(long)]
    pub source_bucket: Option<String>,
    /// Account owning the source bucket: adds an aws:ResourceAccount condition.
    #[arg(long, requires = "source_bucket")]
    pub source_account: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct TransferRoleArgs {
    #[arg(long)]
    pub destination_bucket: String,
    /// Account owning the destination bucket (12 digits).
    #[arg(long)]
    pub destination_account: String,
    /// Source bucket the role reads too (for --src-role-arn and server-side copies).
    #[arg(long)]
    pub source_bucket: Option<String>,
    /// Account owning the source bucket and the role; trusted by default.
    #[arg(long)]
    pub source_account: Option<String>,
    /// Who may assume the role (a role, user or account-root ARN); default
    /// arn:aws:iam::SOURCE_ACCOUNT:root.
    #[arg(long)]
    pub trusted_principal: Option<String>,
    /// AWS partition of the bucket ARNs (aws, aws-cn, aws-us-gov, …).
    #[arg(long, default_value = "aws")]
    pub partition: String,
    /// Print only one of the two documents (for `aws iam … file://`).
    #[arg(long, value_enum, default_value = "both")]
    pub only: TransferRolePart,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferRolePart {
    /// {"InlinePolicy": …, "TrustPolicy": …}
    Both,
    /// The permissions policy alone (aws iam put-role-policy).
    Inline,
    /// The trust policy alone (aws iam create-role --assume-role-policy-document).
    Trust,
}

#[derive(clap::Args, Debug)]
pub struct DestinationBucketArgs {
    #[arg(long)]
    pub bucket: String,
    /// ARN of the transfer role (arn:aws:iam::ACCOUNT:role/NAME).
    #[arg(long)]
    pub role_arn: String,
    /// Also grant this IAM user (arn:aws:iam::ACCOUNT:user/NAME).
    #[arg(long)]
    pub user_arn: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RestrictedBucketArgs {
    #[arg(long)]
    pub bucket: String,
    /// Unique id of a role to allow (AROA…; `aws iam get-role --query Role.RoleId`).
    #[arg(long)]
    pub allow_role_id: Vec<String>,
    /// Unique id of an IAM user to allow (AIDA…; `aws iam get-user --query User.UserId`).
    #[arg(long)]
    pub allow_user_id: Vec<String>,
    /// Account id whose root user stays allowed (recommended: the bucket
    /// owner's, so the policy can still be changed without the root user's
    /// special rescue).
    #[arg(long)]
    pub allow_account: Vec<String>,
    /// Also allow the caller (STS GetCallerIdentity), or with --role-arn the
    /// role the caller can assume.
    #[arg(long)]
    pub lookup: bool,
    /// With --lookup: assume this role and allow its id.
    #[arg(long, requires = "lookup")]
    pub role_arn: Option<String>,
    /// Add the Deny to this existing bucket policy (JSON file, or the
    /// `aws s3api get-bucket-policy` answer) instead of printing it alone.
    #[arg(long)]
    pub merge: Option<PathBuf>,
    /// AWS partition of the bucket ARNs.
    #[arg(long, default_value = "aws")]
    pub partition: String,
    #[command(flatten)]
    pub conn: LookupConn,
}

/// Where `--lookup` asks STS.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LookupConn {
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub endpoint_url: Option<String>,
}

/// Prints the policy JSON on stdout; returns the exit code (0; 2 for bad
/// input, with a message on stderr naming the bad value and what is expected).
pub async fn run(cmd: PolicyCommand) -> i32 {
    match render(cmd).await {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(e) => {
            eprintln!("syncmount policy: {e}");
            2
        }
    }
}

async fn render(cmd: PolicyCommand) -> Result<String, PolicyError> {
    Ok(match cmd {
        PolicyCommand::SourceUser(a) => pretty(&source_user_policy(
            &a.role_arn,
            a.source_bucket.as_deref(),
            a.source_account.as_deref(),
        )?),
        PolicyCommand::TransferRole(a) => {
            let p = transfer_role_policies(&TransferRoleInput {
                destination_bucket: &a.destination_bucket,
                destination_account: &a.destination_account,
                source_bucket: a.source_bucket.as_deref(),
                source_account: a.source_account.as_deref(),
                trusted_principal: a.trusted_principal.as_deref(),
                partition: &a.partition,
            })?;
            match a.only {
                TransferRolePart::Both => pretty(&p),
                TransferRolePart::Inline => pretty(&p.inline),
                TransferRolePart::Trust => pretty(&p.trust),
            }
        }
        PolicyCommand::DestinationBucket(a) => pretty(&destination_bucket_policy(
            &a.bucket,
            &a.role_arn,
            a.user_arn.as_deref(),
        )?),
        PolicyCommand::RestrictedBucket(a) => restricted(a).await?,
    })
}

async fn restricted(a: RestrictedBucketArgs) -> Result<String, PolicyError> {
    // Bad input is refused before --lookup spends a request on it.
    validate_bucket(&a.bucket, "--bucket")?;
    validate_partition(&a.partition)?;
    let mut allowed = allowed_ids(&a.allow_role_id, &a.allow_user_id, &a.allow_account)?;
    if let Some(arn) = &a.role_arn {
        parse_iam_arn(arn, "--role-arn", &[PrincipalKind::Role])?;
    }
    if a.lookup {
        let user_id = lookup_caller_user_id(&a.conn, a.role_arn.as_deref()).await?;
        let id = allowed_from_caller(&user_id)?;
        eprintln!("--lookup: allowing {}", id.describe());
        allowed.push(id);
    }
    let policy = restricted_bucket_policy(&a.bucket, &a.partition, &allowed)?;
    if !allowed.iter().any(|i| matches!(i, AllowedId::Account(_))) {
        eprintln!(
            "note: no --allow-account: once this policy is set, only the bucket owner's root user can change or delete it"
        );
    }
    match &a.merge {
        None => Ok(pretty(&policy)),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                PolicyError::Usage(format!("--merge `{}`: cannot read it: {e}", path.display()))
            })?;
            Ok(pretty(&merge_policy(&text, &policy)?))
        }
    }
}

/// Pretty JSON straight from the typed document, so members keep their
/// written order (Version first, Sid first), which a `Value` would sort.
fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("a policy always serializes")
}

// ---------------------------------------------------------------------------
// Errors and validation
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A value of the wrong form: names the option, the value and the form expected.
    #[error("{what} `{value}` is not valid: expected {expected}")]
    Invalid {
        what: String,
        value: String,
        expected: String,
    },
    /// Options that do not fit together, or a file that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// `--lookup` could not ask STS.
    #[error("--lookup: {0}")]
    Lookup(String),
}

fn invalid(what: &str, value: &str, expected: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        what: what.to_string(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

/// A general purpose bucket name, by S3's naming rules.
pub fn validate_bucket(name: &str, what: &str) -> Result<(), PolicyError> {
    if let Some(rest) = name
        .strip_prefix("s3://")
        .or_else(|| name.split_once(":s3:::").map(|(_, b)| b))
    {
        let bare = rest.split('/').next().unwrap_or_default();
        return Err(invalid(
            what,
            name,
            format!("the bucket name alone (`{bare}`), not a URL or ARN"),
        ));
    }
    let rule = "a bucket name: 3 to 63 characters, lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit";
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&name.len())
        || !ok_chars
        || !edge(name.as_bytes().first())
        || !edge(name.as_bytes().last())
    {
        return Err(invalid(what, name, rule));
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Err(invalid(
            what,
            name,
            "a bucket name without `..`, `.-` or `-.`",
        ));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(invalid(what, name, "a bucket name, not an IP address"));
    }
    Ok(())
}

/// A 12-digit AWS account id.
pub fn validate_account(id: &str, what: &str) -> Result<(), PolicyError> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(invalid(
            what,
            id,
            "a 12-digit AWS account id, e.g. 111122223333",
        ))
    }
}

/// An AWS partition name: `aws`, `aws-cn`, `aws-us-gov`, `aws-iso-b`, …
pub fn validate_partition(p: &str) -> Result<(), PolicyError> {
    let ok = p == "aws"
        || p.strip_prefix("aws-").is_some_and(|rest| {
            rest.split('-')
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()))
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "--partition",
            p,
            "aws, aws-cn, aws-us-gov or another aws-… partition",
        ))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    Role,
    User,
    /// `arn:aws:iam::ACCOUNT:root`
    Root,
}

/// An IAM role, user or account-root ARN, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IamArn {
    pub partition: String,
    pub account: String,
    pub kind: PrincipalKind,
}

/// Parses `arn:PARTITION:iam::ACCOUNT:(role|user)/[PATH/]NAME` (or `:root`
/// when `kinds` allows it), refusing any other kind.
pub fn parse_iam_arn(
    arn: &str,
    what: &str,
    kinds: &[PrincipalKind],
) -> Result<IamArn, PolicyError> {
    let names: Vec<&str> = kinds
        .iter()
        .map(|k| match k {
            PrincipalKind::Role => "role/NAME",
            PrincipalKind::User => "user/NAME",
            PrincipalKind::Root => "root",
        })
        .collect();
    let mut expected = format!(
        "arn:aws:iam::ACCOUNT:{} (ACCOUNT: 12 digits)",
        names.join(" or ")
    );
    if arn.contains(":assumed-role/") {
        expected.push_str(
            "; this is a role session's ARN, pass the role's own arn:aws:iam::ACCOUNT:role/NAME",
        );
    }
    let bad = || invalid(what, arn, expected.clone());
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [a, partition, service, region, account, resource] = parts[..] else {
        return Err(bad());
    };
    if a != "arn"
        || service != "iam"
        || !region.is_empty()
        || validate_partition(partition).is_err()
    {
        return Err(bad());
    }
    validate_account(account, what).map_err(|_| bad())?;
    let (kind, rest) = if resource == "root" {
        (PrincipalKind::Root, None)
    } else if let Some(r) = resource.strip_prefix("role/") {
        (PrincipalKind::Role, Some(r))
    } else if let Some(u) = resource.strip_prefix("user/") {
        (PrincipalKind::User, Some(u))
    } else {
        return Err(bad());
    };
    if !kinds.contains(&kind) {
        return Err(bad());
    }
    if let Some(path_and_name) = rest {
        // Names are 1 to 64 of [A-Za-z0-9+=,.@_-]; paths are /-separated segments of the same.
        let name_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        let name = path_and_name.rsplit('/').next().unwrap_or_default();
        if name.is_empty()
            || name.len() > 64
            || !path_and_name.chars().all(|c| name_char(c) || c == '/')
            || path_and_name.contains("//")
        {
            return Err(bad());
        }
    }
    Ok(IamArn {
        partition: partition.to_string(),
        account: account.to_string(),
        kind,
    })
}

/// A principal let through by `restricted-bucket`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedId {
    /// A role's unique id (AROA…): every session of the role.
    Role(String),
    /// An IAM user's unique id (AIDA…).
    User(String),
    /// An account id: its root user.
    Account(String),
}

impl AllowedId {
    /// The `aws:userid` pattern that matches this principal's requests.
    pub fn pattern(&self) -> String {
        match self {
            AllowedId::Role(id) => format!("{id}:*"),
            AllowedId::User(id) | AllowedId::Account(id) => id.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            AllowedId::Role(id) => format!("role id {id}"),
            AllowedId::User(id) => format!("user id {id}"),
            AllowedId::Account(id) => format!("root user of account {id}"),
        }
    }
}

/// A role (`AROA`) or user (`AIDA`) unique id: the prefix and at least 16
/// uppercase letters or digits.
pub fn validate_unique_id(id: &str, what: &str, prefix: &str) -> Result<(), PolicyError> {
    let get = match prefix {
        "AROA" => "aws iam get-role --role-name NAME --query Role.RoleId --output text",
        _ => "aws iam get-user --user-name NAME --query User.UserId --output text",
    };
    let body_ok = |b: &str| {
        (16..=124).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    match id.strip_prefix(prefix) {
        Some(body) if body_ok(body) => Ok(()),
        _ => {
            let mut expected = format!(
                "a unique id `{prefix}` followed by 16 or more uppercase letters and digits (from `{get}`)"
            );
            if id.ends_with(":*") {
                expected.push_str("; pass the bare id, syncmount adds `:*`");
            } else if id.starts_with("AIDA") && prefix == "AROA" {
                expected.push_str("; this is a user id, pass it with --allow-user-id");
            } else if id.starts_with("AROA") && prefix == "AIDA" {
                expected.push_str("; this is a role id, pass it with --allow-role-id");
            } else if id.starts_with("AKIA") || id.starts_with("ASIA") {
                expected.push_str("; this is an access key id, not a principal's unique id");
            } else if id.starts_with("arn:") {
                expected.push_str("; this is an ARN, not the unique id");
            }
            Err(invalid(what, id, expected))
        }
    }
}

/// The ids given on the command line, validated, in order, without repeats.
pub fn allowed_ids(
    roles: &[String],
    users: &[String],
    accounts: &[String],
) -> Result<Vec<AllowedId>, PolicyError> {
    let mut out = Vec::new();
    for r in roles {
        validate_unique_id(r, "--allow-role-id", "AROA")?;
        out.push(AllowedId::Role(r.clone()));
    }
    for u in users {
        validate_unique_id(u, "--allow-user-id", "AIDA")?;
        out.push(AllowedId::User(u.clone()));
    }
    for a in accounts {
        validate_account(a, "--allow-account")?;
        out.push(AllowedId::Account(a.clone()));
    }
    Ok(out)
}

/// What to allow for a caller, from GetCallerIdentity's `UserId`:
/// `AROA…:session` for an assumed role, `AIDA…` for an IAM user, the
/// account id for the root user.
pub fn allowed_from_caller(user_id: &str) -> Result<AllowedId, PolicyError> {
    let what = "the caller's UserId (STS GetCallerIdentity)";
    if let Some((role, _session)) = user_id.split_once(':') {
        if role.starts_with("AROA") {
            validate_unique_id(role, what, "AROA").map_err(|_| {
                invalid(
                    what,
                    user_id,
                    "AROA followed by 16 or more uppercase letters and digits, then `:session`",
                )
            })?;
            return Ok(AllowedId::Role(role.to_string()));
        }
        return Err(invalid(
            what,
            user_id,
            "an assumed role (AROA…:session), an IAM user (AIDA…) or a root user (account id); federated sessions cannot be allowed by id, use --allow-role-id or --allow-user-id",
        ));
    }
    if user_id.starts_with("AIDA") {
        validate_unique_id(user_id, what, "AIDA")?;
        return Ok(AllowedId::User(user_id.to_string()));
    }
    validate_account(user_id, what).map_err(|_| {
        invalid(
            what,
            user_id,
            "an assumed role (AROA…:session), an IAM user (AIDA…) or a root user (account id)",
        )
    })?;
    Ok(AllowedId::Account(user_id.to_string()))
}

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

fn document(statements: Vec<Statement>) -> PolicyDocument {
    PolicyDocument {
        version: POLICY_VERSION,
        statements,
    }
}

fn bucket_arn(partition: &str, bucket: &str) -> String {
    format!("arn:{partition}:s3:::{bucket}")
}

fn objects_arn(partition: &str, bucket: &str) -> String {
    format!("arn:{partition}:s3:::{bucket}/*")
}

/// Reading a source bucket: list it, ask its Region, read its objects.
fn source_statements(partition: &str, bucket: &str, account: Option<&str>) -> Vec<Statement> {
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
            &BUCKET_ACTIONS,
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
            &BUCKET_ACTIONS,
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

// ---------------------------------------------------------------------------
// --lookup
// ---------------------------------------------------------------------------

/// GetCallerIdentity's `UserId` for the default credential chain (with the
/// given profile/Region/endpoint), after assuming `role_arn` when given.
async fn lookup_caller_user_id(
    conn: &LookupConn,
    role_arn: Option<&str>,
) -> Result<String, PolicyError> {
    use aws_config::BehaviorVersion;
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(p) = &conn.profile {
        loader = loader.profile_name(p);
    }
    if let Some(r) = &conn.region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    if let Some(e) = &conn.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    let mut sdk = loader.load().await;
    if sdk.region().is_none() {
        sdk = sdk
            .into_builder()
            .region(aws_config::Region::new(LOOKUP_DEFAULT_REGION))
            .build();
    }
    if let Some(arn) = role_arn {
        let provider = aws_config::sts::AssumeRoleProvider::builder(arn)
            .session_name("syncmount-policy-lookup")
            .configure(&sdk)
            .build()
            .await;
        sdk = sdk
            .into_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
    }
    let ask = aws_sdk_sts::Client::new(&sdk).get_caller_identity().send();
    let who = match role_arn {
        Some(arn) => format!("as role {arn}"),
        None => "with the default credentials".to_string(),
    };
    let fix = "pass the ids with --allow-role-id / --allow-user-id instead (aws iam get-role --role-name NAME --query Role.RoleId)";
    match tokio::time::timeout(LOOKUP_TIMEOUT, ask).await {
        Err(_) => Err(PolicyError::Lookup(format!(
            "STS GetCallerIdentity {who} did not answer within {}s; {fix}",
            LOOKUP_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => Err(PolicyError::Lookup(format!(
            "STS GetCallerIdentity {who} failed: {}; {fix}",
            aws_sdk_sts::error::DisplayErrorContext(&e)
        ))),
        Ok(Ok(out)) => out.user_id().map(str::to_string).ok_or_else(|| {
            PolicyError::Lookup(format!(
                "STS GetCallerIdentity {who} returned no UserId; {fix}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
    const WRITE: [&str; 4] = [
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
        "s3:GetObject",
        "s3:PutObject",
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
                allow(&["s3:GetObject"], &["arn:aws:s3:::src-bucket/*"]).when("111111111111"),
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
                allow(&BUCKET, &["arn:aws:s3:::dst-bucket"]).when("222222222222"),
                allow(&WRITE, &["arn:aws:s3:::dst-bucket/*"]).when("222222222222"),
            ])
        );
        assert_eq!(
            grants(&pretty(&p.trust)),
            vec![allow(&["sts:AssumeRole"], &[])
                .by(json!({"AWS": "arn:aws:iam::111111111111:root"}))]
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
                allow(&["s3:GetObject"], &["arn:aws:s3:::src-bucket/*"]).when("111111111111"),
                allow(&BUCKET, &["arn:aws:s3:::dst-bucket"]).when("222222222222"),
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
        assert!(g.contains(&allow(&["s3:GetObject"], &["arn:aws:s3:::src-bucket/*"])));
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
                allow(&BUCKET, &["arn:aws:s3:::dst-bucket"]).by(who.clone()),
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
            restricted_bucket_policy("dst-bucket", "aws", &[AllowedId::Role(ROLE_ID.into())])
                .unwrap();
        let merged = pretty(&merge_policy(&grant_doc, &deny).unwrap());
        assert_eq!(grants(&merged).len(), 3);
        // Merging again (say, with another id) replaces the Deny, never doubles it.
        let deny2 =
            restricted_bucket_policy("dst-bucket", "aws", &[AllowedId::User(USER_ID.into())])
                .unwrap();
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
        let deny =
            restricted_bucket_policy("b-1", "aws", &[AllowedId::Account("111111111111".into())])
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
}
