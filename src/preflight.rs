//! `syncmount location check`: a checklist of what a location needs before a
//! task can use it, each failed item with its fix.
//!
//! For S3: whose credentials these are (STS GetCallerIdentity), that the
//! role can be assumed, that the bucket lives in the configured Region,
//! ListBucket, GetObject on a sample key, optionally a write probe
//! (PutObject + DeleteObject of a throw-away key, and ListMultipartUploads,
//! which finds uploads a crash interrupted), the bucket's object
//! ownership (BucketOwnerEnforced is what a cross-account destination wants),
//! its versioning state and whether a lifecycle rule aborts incomplete
//! multipart uploads (advised). For a local directory: that it exists, can be
//! listed and, with the probe, written.

use std::fmt::Write as _;
use std::path::Path;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::location::s3::{error_chain, short};
use aws_sdk_s3::types::ObjectOwnership;

use crate::location::s3::S3Location;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Pass,
    Fail,
    Warn,
    /// Could not be checked here (the server does not support it, nothing to sample).
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub mark: Mark,
    pub what: String,
    pub detail: String,
    pub fix: Option<String>,
}

fn item(mark: Mark, what: &str, detail: impl Into<String>, fix: Option<String>) -> Item {
    Item {
        mark,
        what: what.to_string(),
        detail: detail.into(),
        fix,
    }
}

/// Renders the checklist; true when nothing failed.
pub fn render(items: &[Item]) -> (String, bool) {
    let mut out = String::new();
    for i in items {
        let sign = match i.mark {
            Mark::Pass => "✓",
            Mark::Fail => "✗",
            Mark::Warn => "!",
            Mark::Skip => "-",
        };
        let _ = writeln!(out, "{sign} {}: {}", i.what, i.detail);
        if let Some(f) = &i.fix {
            let _ = writeln!(out, "    fix: {f}");
        }
    }
    (out, items.iter().all(|i| i.mark != Mark::Fail))
}

/// An SDK error as `Code: message`, else `HTTP status`, else its causes,
/// shortened (never with credentials in it, never a request dump).
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => match e.raw_response().map(|r| r.status()) {
            Some(s) => format!("HTTP {s}"),
            None => short(&error_chain(e)),
        },
    }
}

/// The HTTP status of a raw response (S3 and STS share the response type).
pub trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_smithy_runtime_api::client::orchestrator::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// What kind of failure an SDK error is, for the checklist.
fn refused<E: ProvideErrorMetadata, R: HasStatus>(e: &SdkError<E, R>) -> bool {
    denied(e.code()) || matches!(e.raw_response().map(|r| r.status()), Some(401 | 403))
}

/// The fix for a refused request: the permission, unless the credentials
/// themselves are the problem.
fn fix_for<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>, permission: String) -> String {
    match e.code() {
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken") => {
            "fix the credentials first (see the credentials item)".to_string()
        }
        _ => permission,
    }
}

fn denied(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "AccessDenied"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "InvalidAccessKeyId"
        )
    )
}

pub async fn check_s3(loc: &S3Location, write_probe: bool) -> Vec<Item> {
    let mut items = vec![identity(loc).await];
    let region = region(loc).await;
    let bucket_missing = region.mark == Mark::Fail && region.detail.contains("does not exist");
    items.push(region);
    if bucket_missing {
        return items;
    }
    let (list, sample) = list(loc).await;
    items.push(list);
    items.push(read_sample(loc, sample.clone()).await);
    items.push(read_tags(loc, sample).await);
    if write_probe {
        items.extend(probe(loc).await);
        items.push(list_uploads(loc).await);
    }
    items.push(ownership(loc).await);
    items.push(versioning(loc).await);
    items.push(lifecycle(loc).await);
    items
}

async fn identity(loc: &S3Location) -> Item {
    let what = if loc.config().role_arn.is_some() {
        "credentials and role"
    } else {
        "credentials"
    };
    match loc.sts().get_caller_identity().send().await {
        Ok(out) => item(
            Mark::Pass,
            what,
            format!("acting as {}", out.arn().unwrap_or("?")),
            None,
        ),
        // Refused, or no credentials to sign with (a role that cannot be
        // assumed shows up here), or AWS itself: a failure. Only a custom
        // endpoint that answers in some other way simply has no STS.
        Err(e)
            if refused(&e)
                || matches!(e, SdkError::DispatchFailure(_))
                || loc.config().endpoint_url.is_none() =>
        {
            let fix = match &loc.config().role_arn {
                Some(arn) => format!(
                    "the base credentials must be valid and allowed to assume {arn} (its trust policy must name them): `syncmount policy transfer-role` prints one"
                ),
                None => "set valid credentials: AWS_PROFILE / --profile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_string(),
            };
            item(Mark::Fail, what, describe(&e), Some(fix))
        }
        Err(e) => item(
            Mark::Skip,
            what,
            format!("this endpoint has no STS to ask ({})", describe(&e)),
            None,
        ),
    }
}

async fn region(loc: &S3Location) -> Item {
    let bucket = &loc.config().bucket;
    let configured = loc.region().unwrap_or_default();
    let res = loc.client().head_bucket().bucket(bucket).send().await;
    let (actual, err) = match res {
        Ok(out) => (out.bucket_region().map(str::to_string), None),
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            let header = e
                .raw_response()
                .and_then(|r| r.headers().get("x-amz-bucket-region"))
                .map(str::to_string);
            (header, Some((status, describe(&e))))
        }
    };
    match (actual, err) {
        (Some(r), _) if r != configured => item(
            Mark::Fail,
            "region",
            format!("bucket `{bucket}` is in {r}, the location is set to {configured}"),
            Some(format!("set --region {r} (or region = \"{r}\" on the location)")),
        ),
        (_, Some((Some(404), _))) => item(
            Mark::Fail,
            "region",
            format!("bucket `{bucket}` does not exist"),
            Some("create it, or check the bucket name, the endpoint and the account".into()),
        ),
        (_, Some((Some(403), d))) => item(
            Mark::Fail,
            "region",
            format!("HeadBucket on `{bucket}` was refused ({d})"),
            Some("allow s3:ListBucket on the bucket: `syncmount policy destination-bucket` or `policy source-user` print the statements".into()),
        ),
        (_, Some((_, d))) => item(Mark::Warn, "region", format!("could not ask ({d})"), None),
        (Some(r), None) => item(Mark::Pass, "region", r, None),
        (None, None) => item(Mark::Skip, "region", format!("the server does not say (using {configured})"), None),
    }
}

async fn list(loc: &S3Location) -> (Item, Option<(String, i64)>) {
    let cfg = loc.config();
    let res = loc
        .client()
        .list_objects_v2()
        .bucket(&cfg.bucket)
        .prefix(&cfg.prefix)
        .max_keys(1)
        .send()
        .await;
    match res {
        Ok(out) => {
            let sample = out
                .contents()
                .first()
                .and_then(|o| Some((o.key()?.to_string(), o.size().unwrap_or(0))));
            let detail = match &sample {
                Some((k, _)) => format!("ListObjectsV2 allowed (first key `{k}`)"),
                None => "ListObjectsV2 allowed (no keys under the prefix)".to_string(),
            };
            (item(Mark::Pass, "s3:ListBucket", detail, None), sample)
        }
        Err(e) => (
            item(
                Mark::Fail,
                "s3:ListBucket",
                describe(&e),
                Some(fix_for(
                    &e,
                    format!("allow s3:ListBucket on arn:aws:s3:::{}", cfg.bucket),
                )),
            ),
            None,
        ),
    }
}

async fn read_sample(loc: &S3Location, sample: Option<(String, i64)>) -> Item {
    let Some((key, size)) = sample else {
        return item(
            Mark::Skip,
            "s3:GetObject",
            "no object to read a sample of",
            None,
        );
    };
    let get = loc
        .client()
        .get_object()
        .bucket(&loc.config().bucket)
        .key(&key);
    // One byte is enough to prove the permission; an empty object has none.
    let res = if size > 0 {
        get.range("bytes=0-0").send().await.map(|_| ())
    } else {
        get.send().await.map(|_| ())
    };
    match res {
        Ok(()) => item(Mark::Pass, "s3:GetObject", format!("read `{key}`"), None),
        Err(e) => item(
            Mark::Fail,
            "s3:GetObject",
            format!("`{key}`: {}", describe(&e)),
            Some(fix_for(
                &e,
                format!(
                    "allow s3:GetObject on arn:aws:s3:::{}/*",
                    loc.config().bucket
                ),
            )),
        ),
    }
}

/// What a tagging call's outcome says: not needed with `object_tags =
/// none`, so a refusal is a warning.
fn tagging_item<E, R>(
    what: &'static str,
    done: String,
    res: Result<(), SdkError<E, R>>,
    bucket: &str,
) -> Item
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    match res {
        Ok(()) => item(Mark::Pass, what, done, None),
        Err(e) if e.code() == Some("NotImplemented") => item(
            Mark::Skip,
            what,
            "the server does not implement object tagging".to_string(),
            None,
        ),
        Err(e) => item(
            Mark::Warn,
            what,
            describe(&e),
            Some(fix_for(
                &e,
                format!("allow {what} on arn:aws:s3:::{bucket}/* (S3 → S3 copies carry tags), or set object_tags = \"none\" (--object-tags none)"),
            )),
        ),
    }
}

/// GetObjectTagging of the sample key: copies with `object_tags =
/// preserve` read the tags of tagged source objects.
async fn read_tags(loc: &S3Location, sample: Option<(String, i64)>) -> Item {
    let what = "s3:GetObjectTagging";
    let Some((key, _)) = sample else {
        return item(Mark::Skip, what, "no object to read the tags of", None);
    };
    let res = loc
        .client()
        .get_object_tagging()
        .bucket(&loc.config().bucket)
        .key(&key)
        .send()
        .await
        .map(|_| ());
    tagging_item(
        what,
        format!("read the tags of `{key}`"),
        res,
        &loc.config().bucket,
    )
}

async fn probe(loc: &S3Location) -> Vec<Item> {
    let cfg = loc.config();
    let key = format!(
        "{}.syncmount-probe-{:016x}",
        cfg.prefix,
        rand::random::<u64>()
    );
    let put = loc
        .client()
        .put_object()
        .bucket(&cfg.bucket)
        .key(&key)
        .body(bytes::Bytes::from_static(b"probe").into())
        .send()
        .await;
    if let Err(e) = put {
        return vec![item(
            Mark::Fail,
            "s3:PutObject",
            describe(&e),
            Some(format!(
                "allow s3:PutObject (and s3:AbortMultipartUpload) on arn:aws:s3:::{}/*",
                cfg.bucket
            )),
        )];
    }
    let tagging = aws_sdk_s3::types::Tagging::builder()
        .tag_set(
            aws_sdk_s3::types::Tag::builder()
                .key("syncmount-probe")
                .value("1")
                .build()
                .expect("key and value are set"),
        )
        .build()
        .expect("the tag set is set");
    let tag = loc
        .client()
        .put_object_tagging()
        .bucket(&cfg.bucket)
        .key(&key)
        .tagging(tagging)
        .send()
        .await
        .map(|_| ());
    let tag = tagging_item(
        "s3:PutObjectTagging",
        "tagged the probe".to_string(),
        tag,
        &cfg.bucket,
    );
    let del = loc
        .client()
        .delete_object()
        .bucket(&cfg.bucket)
        .key(&key)
        .send()
        .await;
    vec![
        item(Mark::Pass, "s3:PutObject", format!("wrote probe `{key}`"), None),
        tag,
        match del {
            Ok(_) => item(Mark::Pass, "s3:DeleteObject", "removed the probe", None),
            Err(e) => item(
                Mark::Fail,
                "s3:DeleteObject",
                format!("{} (the probe `{key}` is left behind)", describe(&e)),
                Some(format!(
                    "allow s3:DeleteObject on arn:aws:s3:::{}/* (needed for --preserve-deleted-files remove and for the probe)",
                    cfg.bucket
                )),
            ),
        },
    ]
}

/// ListMultipartUploads under the prefix: how a crashed run's upload whose
/// id was never learnt is found. Not needed to transfer, hence a warning.
async fn list_uploads(loc: &S3Location) -> Item {
    let cfg = loc.config();
    let what = "s3:ListBucketMultipartUploads";
    let res = loc
        .client()
        .list_multipart_uploads()
        .bucket(&cfg.bucket)
        .prefix(&cfg.prefix)
        .max_uploads(1)
        .send()
        .await;
    match res {
        Ok(_) => item(Mark::Pass, what, "ListMultipartUploads allowed", None),
        Err(e) if e.code() == Some("NotImplemented") => item(
            Mark::Skip,
            what,
            "this server does not list multipart uploads",
            None,
        ),
        Err(e) => item(
            Mark::Warn,
            what,
            format!(
                "{} (transfers work, but an upload whose creation a crash interrupts cannot be found and aborted)",
                describe(&e)
            ),
            Some(fix_for(
                &e,
                format!(
                    "allow s3:ListBucketMultipartUploads on arn:aws:s3:::{}",
                    cfg.bucket
                ),
            )),
        ),
    }
}

/// Whether an enabled AbortIncompleteMultipartUpload rule covers the
/// location's prefix: advised for every bucket syncmount writes to.
async fn lifecycle(loc: &S3Location) -> Item {
    let cfg = loc.config();
    let what = "incomplete-upload rule";
    let fix = Some(crate::policy::lifecycle_rule_command(&cfg.bucket));
    let res = loc
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&cfg.bucket)
        .send()
        .await;
    let rules = match res {
        Ok(out) => out.rules().to_vec(),
        Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
        Err(e) if denied(e.code()) => {
            return item(
                Mark::Skip,
                what,
                format!(
                    "not allowed to read the lifecycle rules ({}); an AbortIncompleteMultipartUpload rule is advised",
                    describe(&e)
                ),
                fix,
            )
        }
        Err(e) => {
            return item(
                Mark::Skip,
                what,
                format!("the server does not tell ({})", describe(&e)),
                None,
            )
        }
    };
    let days = rules
        .iter()
        .filter(|r| covers(r, &cfg.prefix))
        .filter_map(|r| {
            r.abort_incomplete_multipart_upload()?
                .days_after_initiation()
        })
        .min();
    match days {
        Some(d) => item(
            Mark::Pass,
            what,
            format!("AbortIncompleteMultipartUpload after {d} days"),
            None,
        ),
        None => item(
            Mark::Warn,
            what,
            "no lifecycle rule aborts incomplete multipart uploads: syncmount aborts its own, but what other tools leave (and what a server without ListMultipartUploads hides) is billed until removed",
            fix,
        ),
    }
}

/// An enabled lifecycle rule whose filter takes in every key under `prefix`
/// (tag and size filters do not apply to multipart uploads).
fn covers(rule: &aws_sdk_s3::types::LifecycleRule, prefix: &str) -> bool {
    use aws_sdk_s3::types::ExpirationStatus;
    #[allow(deprecated)]
    let legacy = rule.prefix();
    let filter = rule.filter();
    let filter_prefix = filter
        .and_then(|f| f.prefix().or_else(|| f.and().and_then(|a| a.prefix())))
        .or(legacy)
        .unwrap_or("");
    rule.status() == &ExpirationStatus::Enabled && prefix.starts_with(filter_prefix)
}

async fn ownership(loc: &S3Location) -> Item {
    let bucket = &loc.config().bucket;
    let fix = format!(
        "for a cross-account destination: aws s3api put-bucket-ownership-controls --bucket {bucket} --ownership-controls 'Rules=[{{ObjectOwnership=BucketOwnerEnforced}}]'"
    );
    match loc
        .client()
        .get_bucket_ownership_controls()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(out) => {
            let owner = out
                .ownership_controls()
                .and_then(|c| c.rules().first())
                .map(|r| r.object_ownership().clone());
            match owner {
                Some(ObjectOwnership::BucketOwnerEnforced) => {
                    item(Mark::Pass, "object ownership", "BucketOwnerEnforced", None)
                }
                other => item(
                    Mark::Warn,
                    "object ownership",
                    format!(
                        "{} (objects written by another account stay that account's)",
                        other
                            .map(|o| o.as_str().to_string())
                            .unwrap_or_else(|| "not set".into())
                    ),
                    Some(fix),
                ),
            }
        }
        Err(e) if e.code() == Some("OwnershipControlsNotFoundError") => item(
            Mark::Warn,
            "object ownership",
            "not set: ACLs decide who owns written objects",
            Some(fix),
        ),
        Err(e) if denied(e.code()) => item(
            Mark::Skip,
            "object ownership",
            format!("not allowed to read it ({})", describe(&e)),
            None,
        ),
        Err(e) => item(
            Mark::Skip,
            "object ownership",
            format!("the server does not tell ({})", describe(&e)),
            None,
        ),
    }
}

async fn versioning(loc: &S3Location) -> Item {
    match loc
        .client()
        .get_bucket_versioning()
        .bucket(&loc.config().bucket)
        .send()
        .await
    {
        Ok(out) => {
            let state = out
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "never enabled".into());
            let note = if state == "Enabled" {
                ": overwritten and deleted objects keep their old versions (and cost)"
            } else {
                ""
            };
            item(Mark::Pass, "versioning", format!("{state}{note}"), None)
        }
        Err(e) => item(
            Mark::Skip,
            "versioning",
            format!("the server does not tell ({})", describe(&e)),
            None,
        ),
    }
}

/// The checklist of a local directory.
pub async fn check_local(root: &Path, write_probe: bool) -> Vec<Item> {
    let shown = root.display().to_string();
    let meta = match tokio::fs::metadata(root).await {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            return vec![item(
                Mark::Fail,
                "directory",
                format!("`{shown}` is not a directory"),
                None,
            )]
        }
        Err(e) => {
            return vec![item(
                Mark::Fail,
                "directory",
                format!("`{shown}`: {e}"),
                Some("create it (a sync creates a missing destination itself)".into()),
            )]
        }
    };
    let _ = meta;
    let mut items = vec![item(Mark::Pass, "directory", shown.clone(), None)];
    items.push(match tokio::fs::read_dir(root).await {
        Ok(_) => item(Mark::Pass, "list", "readable", None),
        Err(e) => item(
            Mark::Fail,
            "list",
            e.to_string(),
            Some(format!("grant read and execute on `{shown}`")),
        ),
    });
    if write_probe {
        let probe = root.join(format!(".syncmount-probe-{:016x}", rand::random::<u64>()));
        items.push(match tokio::fs::write(&probe, b"probe").await {
            Ok(()) => {
                let _ = tokio::fs::remove_file(&probe).await;
                item(Mark::Pass, "write", "wrote and removed a probe file", None)
            }
            Err(e) => item(
                Mark::Fail,
                "write",
                e.to_string(),
                Some(format!("grant write on `{shown}`")),
            ),
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_item_fails_the_checklist_and_shows_its_fix() {
        let items = vec![
            item(Mark::Pass, "credentials", "acting as arn:x", None),
            item(
                Mark::Fail,
                "s3:ListBucket",
                "AccessDenied",
                Some("allow it".into()),
            ),
            item(Mark::Warn, "object ownership", "not set", None),
        ];
        let (text, ok) = render(&items);
        assert!(!ok);
        assert!(
            text.contains("✗ s3:ListBucket: AccessDenied\n    fix: allow it"),
            "{text}"
        );
        assert!(
            render(&items[..1]).1 && render(&items[2..]).1,
            "warnings alone pass"
        );
    }

    #[test]
    fn an_incomplete_upload_rule_counts_when_enabled_and_its_prefix_takes_in_the_location() {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, ExpirationStatus, LifecycleRule, LifecycleRuleFilter,
        };
        let rule = |status: ExpirationStatus, prefix: Option<&str>| {
            LifecycleRule::builder()
                .status(status)
                .set_filter(prefix.map(|p| LifecycleRuleFilter::builder().prefix(p).build()))
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(7)
                        .build(),
                )
                .build()
                .unwrap()
        };
        let on = ExpirationStatus::Enabled;
        assert!(covers(&rule(on.clone(), None), "data/"));
        assert!(covers(&rule(on.clone(), Some("")), ""));
        assert!(covers(&rule(on.clone(), Some("data/")), "data/x/"));
        assert!(!covers(&rule(on.clone(), Some("data/x/")), "data/"));
        assert!(!covers(&rule(on, Some("logs/")), "data/"));
        assert!(!covers(&rule(ExpirationStatus::Disabled, None), "data/"));
    }

    #[tokio::test]
    async fn a_missing_local_directory_fails_with_a_fix() {
        let d = tempfile::tempdir().unwrap();
        let items = check_local(&d.path().join("nope"), false).await;
        assert_eq!(items[0].mark, Mark::Fail);
        assert!(items[0].fix.is_some());
        let items = check_local(d.path(), true).await;
        assert!(items.iter().all(|i| i.mark == Mark::Pass), "{items:?}");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "the probe is removed"
        );
    }
}
