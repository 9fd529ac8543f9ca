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
//! | ListMultipartUploads of one key (before creating an upload of it; after a crash or a lost answer, to find the upload whose id was never learnt) | `s3:ListBucketMultipartUploads` | destination bucket |
//! | DeleteObject (`--preserve-deleted-files remove`, the `location check --write-probe` key) | `s3:DeleteObject` | destination objects |
//! | GetObjectTagging, the read side of CopyObject with tags (`object_tags = preserve`, the default) | `s3:GetObjectTagging` | source objects |
//! | PutObject/CreateMultipartUpload/CopyObject with tags | `s3:PutObjectTagging` | destination objects |
//!
//! Left out on purpose: `s3:ListMultipartUploadParts`, the version actions
//! (not used), `iam:PassRole` (nobody hands the role to a service). The
//! tagging actions can be dropped by hand with `object_tags = "none"`. `s3:DeleteObject` is granted on the
//! destination even though only `--preserve-deleted-files remove` uses it;
//! drop it by hand for a copy-only destination. `location check` also asks
//! GetBucketOwnershipControls and GetBucketVersioning; without those
//! permissions it reports the items as not checked, the transfer is unaffected.
//! Without `s3:ListBucketMultipartUploads` a transfer works too, but an
//! upload whose creation a crash interrupted cannot be found again. Either
//! way an `AbortIncompleteMultipartUpload` lifecycle rule on the destination
//! bucket is recommended (printed as a note on stderr, and checked by
//! `location check`): it also removes what another tool leaves behind.
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

/// The only policy language version with policy variables and conditions as used here.
pub const POLICY_VERSION: &str = "2012-10-17";

/// How long `--lookup` waits for STS before giving up.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// STS answers in every Region; one is needed to sign, so take the global one.
const LOOKUP_DEFAULT_REGION: &str = "us-east-1";

const BUCKET_ACTIONS: [&str; 2] = ["s3:GetBucketLocation", "s3:ListBucket"];
/// The destination bucket also lists multipart uploads (of the keys written).
const DESTINATION_BUCKET_ACTIONS: [&str; 3] = [
    "s3:GetBucketLocation",
    "s3:ListBucket",
    "s3:ListBucketMultipartUploads",
];
const SOURCE_OBJECT_ACTIONS: [&str; 2] = ["s3:GetObject", "s3:GetObjectTagging"];
const DESTINATION_OBJECT_ACTIONS: [&str; 5] = [
    "s3:AbortMultipartUpload",
    "s3:DeleteObject",
    "s3:GetObject",
    "s3:PutObject",
    "s3:PutObjectTagging",
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
            crate::shared::failure(format_args!("syncmount policy: {e}"));
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
            crate::shared::notice(format_args!("{}", lifecycle_note(&a.destination_bucket)));
            match a.only {
                TransferRolePart::Both => pretty(&p),
                TransferRolePart::Inline => pretty(&p.inline),
                TransferRolePart::Trust => pretty(&p.trust),
            }
        }
        PolicyCommand::DestinationBucket(a) => {
            let doc = destination_bucket_policy(&a.bucket, &a.role_arn, a.user_arn.as_deref())?;
            crate::shared::notice(format_args!("{}", lifecycle_note(&a.bucket)));
            pretty(&doc)
        }
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
        crate::shared::notice(format_args!("--lookup: allowing {}", id.describe()));
        allowed.push(id);
    }
    let policy = restricted_bucket_policy(&a.bucket, &a.partition, &allowed)?;
    if !allowed.iter().any(|i| matches!(i, AllowedId::Account(_))) {
        crate::shared::notice(format_args!(
            "note: no --allow-account: once this policy is set, only the bucket owner's root user can change or delete it"
        ));
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

mod documents;
pub(crate) mod validate;
pub use documents::*;
pub use validate::*;

#[cfg(test)]
mod tests;
