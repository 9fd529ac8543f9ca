//! An S3 bucket + prefix as a [`Location`], through aws-sdk-s3.
//!
//! Credentials come from the standard AWS chain (env, profiles, SSO, IMDS),
//! optionally exchanged through STS AssumeRole for a role in another account
//! (DataSync's BucketAccessRoleArn). A custom endpoint (any S3-compatible
//! server) gets path-style addressing. Throttling, 5xx and dropped
//! connections are retried by the SDK's standard retry (exponential backoff
//! with jitter); what still fails is reported as a transient error so the
//! engine can try the object again later.
//!
//! Writes are in `s3_write.rs`: one PUT up to the multipart threshold, else
//! a multipart upload completed only when every part succeeded.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::ChecksumMode;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::Semaphore;

use super::{
    ByteSource, Checksum, Entry, Location, LocationError, ObjectInfo, PosixMeta, Result, WriteMode,
    WriteOutcome,
};

/// How long to wait for STS to say who we are, for an error message.
const PRINCIPAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The Region assumed for a custom endpoint when none is configured.
const DEFAULT_COMPATIBLE_REGION: &str = "us-east-1";

/// Attempts per request in the SDK's retry loop (the first try included);
/// with its exponential backoff and jitter, about 8 s of waiting at most
/// before an object is given up for this round.
const MAX_ATTEMPTS: u32 = 5;
/// 8 MiB parts: S3's minimum is 5 MiB; 8 MiB is what mountpoint-s3 and the
/// AWS CLI use, and keeps a 1 GiB object at 128 parts.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Objects above this are uploaded in parts.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
/// CopyObject's limit, and the default above which server-side copies go in
/// parts: one CopyObject needs no part bookkeeping, and some servers
/// (s3s-fs) are far slower at UploadPartCopy. On AWS, a lower threshold makes
/// large copies faster.
pub const MAX_SINGLE_COPY: u64 = 5 * 1024 * 1024 * 1024;
/// Bytes of part payload in flight at once across every transfer of this
/// location: bounds memory whatever the object count or concurrency.
pub const DEFAULT_BYTE_BUDGET: u64 = 256 * 1024 * 1024;

/// How to reach one bucket + prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub part_size: Option<u64>,
    pub multipart_threshold: Option<u64>,
    /// Server-side copies above this use UploadPartCopy in parallel parts.
    pub multipart_copy_threshold: Option<u64>,
    pub list_mode: ListMode,
    /// Most parts in one upload (S3's limit, [`MAX_PARTS`]; lowered only
    /// by tests, so a many-part upload needs no 80 GiB object).
    pub max_parts: Option<u64>,
    /// Whether objects written here from another S3 object get its tags.
    pub object_tags: ObjectTags,
    /// Storage class of the objects written here, in S3's spelling
    /// (checked by [`super::s3_settings::storage_class`]); the bucket's
    /// default when unset.
    pub storage_class: Option<String>,
    pub sse: Option<super::s3_settings::Sse>,
    pub sse_kms_key_id: Option<String>,
    /// Send `x-amz-request-payer: requester` (the bucket bills the reader).
    pub requester_pays: bool,
    /// The account that must own the bucket, sent on every request.
    pub expected_bucket_owner: Option<String>,
}

/// DataSync's `ObjectTags`: whether S3 → S3 copies carry the source
/// object's tags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectTags {
    /// Copy them (needs `s3:GetObjectTagging` on the source objects and
    /// `s3:PutObjectTagging` on the destination objects).
    #[default]
    Preserve,
    /// Written objects get no tags.
    None,
}

/// How a bucket is listed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ListMode {
    /// Directory by directory (`delimiter=/`), several directories at once:
    /// fast on large trees; one request per directory at least.
    #[default]
    Tree,
    /// One flat listing, 1,000 keys a request, one request at a time:
    /// fewest requests for trees of many tiny directories.
    Flat,
}

impl S3Config {
    /// Parses `s3://bucket[/prefix]`; the prefix gets a trailing `/`.
    pub fn from_url(url: &str) -> Option<S3Config> {
        let rest = url.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return None;
        }
        let prefix = prefix.trim_matches('/');
        Some(S3Config {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            ..Default::default()
        })
    }

    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

#[derive(Debug)]
pub struct S3Location {
    pub(super) cfg: S3Config,
    pub(super) client: aws_sdk_s3::Client,
    /// The smallest part; larger objects get larger parts ([`part_size_for`]).
    pub(super) part_size: u64,
    pub(super) max_parts: u64,
    pub(super) threshold: u64,
    pub(super) copy_threshold: u64,
    pub(super) preserve_tags: bool,
    /// Limits part payload in flight (permits are KiB).
    pub(super) budget: Arc<Semaphore>,
    /// Where in-flight multipart uploads are journalled, so a crashed run's
    /// uploads can be aborted by the next one.
    pub(super) journal_dir: Option<std::path::PathBuf>,
    /// Set once a server-side copy was refused, so we stop trying.
    pub(super) copy_refused: AtomicBool,
    /// Set once ListMultipartUploads was refused or is not implemented, so
    /// uploads are no longer listed before their creation.
    pub(super) uploads_unlisted: AtomicBool,
    /// The AWS config every client of this location uses (credentials of
    /// the assumed role when there is one).
    sdk: aws_config::SdkConfig,
    /// Who we are (STS GetCallerIdentity), asked once when first needed.
    principal: tokio::sync::OnceCell<Option<String>>,
    /// The POSIX metadata of object versions seen or written before, kept
    /// in the state directory (the journal's parent) so that a listing for
    /// a mount needs no HEAD per object.
    known: Option<super::known_meta::KnownMeta>,
}

/// The [`super::ObjectAttrs`] of a HeadObject or GetObject answer.
macro_rules! attrs_of {
    ($out:expr) => {
        super::ObjectAttrs {
            content_type: $out.content_type().map(str::to_string),
            cache_control: $out.cache_control().map(str::to_string),
            content_encoding: $out.content_encoding().map(str::to_string),
            content_disposition: $out.content_disposition().map(str::to_string),
            content_language: $out.content_language().map(str::to_string),
            expires: $out.expires_string().map(str::to_string),
            tag_count: $out.tag_count().unwrap_or(0).max(0) as u32,
            user: $out
                .metadata()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        }
    };
}

impl S3Location {
    /// Builds the client; does not touch the network except to assume a role.
    pub async fn connect(cfg: S3Config, journal_dir: Option<std::path::PathBuf>) -> Result<Self> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(p) = &cfg.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &cfg.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &cfg.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        let mut base = loader.load().await;
        // S3-compatible servers take any Region; AWS needs the right one.
        if base.region().is_none() && cfg.endpoint_url.is_some() {
            base = base
                .into_builder()
                .region(aws_config::Region::new(DEFAULT_COMPATIBLE_REGION))
                .build();
        }
        if base.region().is_none() {
            return Err(LocationError::Config {
                location: cfg.url(),
                message: "no AWS Region configured; pass --region (or set AWS_REGION)".into(),
            });
        }
        // With a role, every client of this location (S3, and STS for the
        // caller identity) acts as the role.
        let sdk = match &cfg.role_arn {
            Some(arn) => {
                let provider = aws_config::sts::AssumeRoleProvider::builder(arn.clone())
                    .session_name(format!("syncmount-{}", std::process::id()))
                    .configure(&base)
                    .build()
                    .await;
                base.into_builder()
                    .credentials_provider(
                        aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                    )
                    .build()
            }
            None => base,
        };
        let mut builder = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS));
        // Any endpoint of our choosing is likely not AWS: path-style works everywhere.
        let path_style = cfg.endpoint_url.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        builder = builder
            .force_path_style(path_style)
            .interceptor(super::s3_settings::RequestMetrics);
        if cfg.expected_bucket_owner.is_some() || cfg.requester_pays {
            builder = builder.interceptor(super::s3_settings::BucketHeaders {
                expected_owner: cfg.expected_bucket_owner.clone(),
                requester_pays: cfg.requester_pays,
            });
        }
        let part_size = cfg
            .part_size
            .unwrap_or(DEFAULT_PART_SIZE)
            .max(5 * 1024 * 1024);
        let threshold = cfg
            .multipart_threshold
            .unwrap_or(DEFAULT_MULTIPART_THRESHOLD);
        Ok(S3Location {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            part_size,
            max_parts: cfg.max_parts.unwrap_or(MAX_PARTS).max(1),
            threshold,
            preserve_tags: cfg.object_tags == ObjectTags::Preserve,
            copy_threshold: cfg
                .multipart_copy_threshold
                .unwrap_or(MAX_SINGLE_COPY)
                .min(MAX_SINGLE_COPY),
            budget: Arc::new(Semaphore::new(budget_kib(part_size))),
            known: journal_dir.as_deref().and_then(|j| {
                let store = format!(
                    "{}|{}",
                    cfg.endpoint_url.as_deref().unwrap_or("aws"),
                    cfg.bucket
                );
                super::known_meta::KnownMeta::open(j.parent()?, &store)
            }),
            journal_dir,
            copy_refused: AtomicBool::new(false),
            uploads_unlisted: AtomicBool::new(false),
            principal: tokio::sync::OnceCell::new(),
            sdk,
            cfg,
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// An STS client with this location's credentials.
    pub fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk)
    }

    /// The region requests go to.
    pub fn region(&self) -> Option<String> {
        self.sdk.region().map(|r| r.to_string())
    }

    /// The caller's ARN, asked once (None when STS cannot tell, e.g. on an
    /// S3-compatible server without STS).
    pub async fn caller_arn(&self) -> Option<String> {
        self.principal
            .get_or_init(|| async {
                let ask = self.sts().get_caller_identity().send();
                match tokio::time::timeout(PRINCIPAL_TIMEOUT, ask).await {
                    Ok(Ok(out)) => out.arn().map(str::to_string),
                    _ => None,
                }
            })
            .await
            .clone()
    }

    pub(super) fn full_key(&self, key: &str) -> String {
        format!("{}{}", self.cfg.prefix, key)
    }

    /// Maps an SDK error to ours, naming the location, the S3 action and the key.
    pub(super) fn err<E>(
        &self,
        op: &'static str,
        key: &str,
        e: SdkError<E, HttpResponse>,
    ) -> LocationError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        if code.as_deref() == Some("NoSuchBucket") {
            return LocationError::Config {
                location: self.describe(),
                message: format!(
                    "{op}: bucket `{}` does not exist (NoSuchBucket); create it, or check the name, the endpoint and the account",
                    self.cfg.bucket
                ),
            };
        }
        // A HEAD's 404 has no body, so no code: a missing key all the same.
        if matches!(code.as_deref(), Some("NoSuchKey" | "NotFound"))
            || (status == Some(404) && code.is_none())
        {
            return LocationError::NotFound {
                location: self.describe(),
                key: key.to_string(),
            };
        }
        let transient = match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            _ => {
                matches!(status, Some(429 | 500..=599))
                    || matches!(
                        code.as_deref(),
                        Some("SlowDown" | "Throttling" | "RequestTimeout" | "InternalError")
                    )
            }
        };
        let credentials_failed =
            matches!(&e, SdkError::DispatchFailure(_)) && error_chain(&e).contains("credentials");
        if credentials_failed {
            return LocationError::Config {
                location: self.describe(),
                message: self.credentials_failure(&e),
            };
        }
        let message = match (code, e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c,
            // No S3 error code: a transport or parse failure; the causes say which.
            _ => {
                let detail = short(&error_chain(&e));
                match status {
                    Some(s) => format!("HTTP {s}: {detail}"),
                    None => detail,
                }
            }
        };
        // A refusal names the IAM action to grant, which is not always the
        // API call's name (CreateMultipartUpload needs s3:PutObject).
        let message = if status == Some(403) {
            format!("{message} (needs {})", iam_action(op))
        } else {
            message
        };
        let bucket_region = e
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_string);
        let hint = match (status, bucket_region) {
            (Some(301 | 400), Some(r)) if Some(r.as_str()) != self.sdk.region().map(|x| x.as_ref()) => format!(
                " (bucket `{}` is in {r}: set --region {r}, or region = \"{r}\" on the location)",
                self.cfg.bucket
            ),
            (Some(301), _) => format!(
                " (bucket `{}` is in another Region: set the location's region; `syncmount location check` tells which)",
                self.cfg.bucket
            ),
            _ => String::new(),
        };
        LocationError::Io {
            location: self.describe(),
            op,
            key: key.to_string(),
            message: format!("{message}{hint}"),
            transient,
        }
    }

    /// Why credentials could not be had, shortly, with the fix.
    fn credentials_failure(&self, e: &dyn std::error::Error) -> String {
        let cause = short(&error_chain(e));
        match &self.cfg.role_arn {
            Some(arn) => format!(
                "could not assume role {arn} ({cause}); the base credentials need sts:AssumeRole on it and its trust policy must name them: `syncmount policy transfer-role` prints one, `syncmount location check {} --role-arn {arn}` checks"
                , self.cfg.url()
            ),
            None => format!(
                "no usable credentials ({cause}); set AWS_PROFILE / --profile, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ),
        }
    }

    /// One GetObject, pinned to `if_match` (a changed object is `Changed`):
    /// the whole object with its metadata and checksum, or a byte range.
    async fn get_object(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        if_match: Option<&str>,
    ) -> Result<(ObjectInfo, Bytes)> {
        let res = self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .set_range(
                range
                    .as_ref()
                    .map(|r| format!("bytes={}-{}", r.start, r.end - 1)),
            )
            .set_if_match(if_match.map(str::to_string))
            // Only a whole object's checksum can be checked against its bytes.
            .set_checksum_mode(range.is_none().then_some(ChecksumMode::Enabled))
            .send()
            .await;
        let out = match res {
            Ok(o) => o,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                return Err(LocationError::Changed {
                    location: self.describe(),
                    key: key.to_string(),
                    expected: if_match.unwrap_or_default().to_string(),
                })
            }
            Err(e) => return Err(self.err("GetObject", key, e)),
        };
        // Some servers (s3s-fs) ignore If-Match on GET: the ETag of what was
        // sent tells as well, so a changed object is never mixed either way.
        if let (Some(want), Some(got)) = (if_match, out.e_tag()) {
            if want != got {
                return Err(LocationError::Changed {
                    location: self.describe(),
                    key: key.to_string(),
                    expected: want.to_string(),
                });
            }
        }
        let empty = HashMap::new();
        let info = ObjectInfo {
            size: out.content_length().unwrap_or(0).max(0) as u64,
            modified: out
                .last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok()),
            etag: out.e_tag().map(str::to_string),
            meta: PosixMeta::from_user_metadata(out.metadata().unwrap_or(&empty)),
            checksum: out.checksum_crc32_c().and_then(Checksum::from_header),
            attrs: attrs_of!(out),
        };
        let body = out.body.collect().await.map_err(|e| LocationError::Io {
            location: self.describe(),
            op: "GetObject",
            key: key.to_string(),
            message: format!("reading the body failed: {}", error_chain(&e)),
            transient: true,
        })?;
        Ok((info, body.into_bytes()))
    }

    /// HEAD of a directory marker known to exist, tried once: its
    /// metadata is optional, and a server that refuses it (s3s-fs) would
    /// otherwise cost the whole retry loop (seconds) on every lookup of the
    /// directory.
    async fn head_marker(&self, full_key: &str) -> Option<ObjectInfo> {
        let once = aws_sdk_s3::config::Builder::new()
            .retry_config(RetryConfig::standard().with_max_attempts(1));
        self.client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(full_key)
            .customize()
            .config_override(once)
            .send()
            .await
            .ok()
            .map(|h| self.info_from_head(&h))
    }

    pub(super) fn info_from_head(
        &self,
        h: &aws_sdk_s3::operation::head_object::HeadObjectOutput,
    ) -> ObjectInfo {
        let empty = HashMap::new();
        ObjectInfo {
            size: h.content_length().unwrap_or(0).max(0) as u64,
            modified: h
                .last_modified()
                .and_then(|t| SystemTime::try_from(*t).ok()),
            etag: h.e_tag().map(str::to_string),
            meta: PosixMeta::from_user_metadata(h.metadata().unwrap_or(&empty)),
            checksum: h.checksum_crc32_c().and_then(Checksum::from_header),
            attrs: attrs_of!(h),
        }
    }
}

/// The IAM action an S3 API call is authorised by.
pub(crate) fn iam_action(op: &str) -> &'static str {
    match op {
        "ListObjectsV2" | "HeadBucket" => "s3:ListBucket",
        "GetObject" | "HeadObject" => "s3:GetObject",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "DeleteObject" => "s3:DeleteObject",
        "GetObjectTagging" => "s3:GetObjectTagging",
        "CopyObject" | "UploadPartCopy" => {
            "s3:GetObject on the source and s3:PutObject on the destination (with tags: s3:GetObjectTagging and s3:PutObjectTagging; --object-tags none needs neither)"
        }
        _ => "s3:PutObject",
    }
}

/// At most a few hundred characters of an error text: SDK causes can carry
/// whole request dumps.
pub(crate) fn short(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// An error and its causes, `: `-joined (the SDK's top-level messages are
/// often just "streaming error").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[async_trait]
impl Location for S3Location {
    fn describe(&self) -> String {
        self.cfg.url()
    }

    fn place(&self) -> super::Place {
        super::Place::S3 {
            endpoint: self
                .cfg
                .endpoint_url
                .clone()
                .unwrap_or_else(|| "aws".into()),
            bucket: self.cfg.bucket.clone(),
            prefix: self.cfg.prefix.clone(),
        }
    }

    fn identity(&self) -> String {
        format!(
            "{} at {}",
            self.cfg.url(),
            self.cfg.endpoint_url.as_deref().unwrap_or("AWS")
        )
    }

    fn keys_are_paths(&self) -> bool {
        false
    }

    fn list(&self) -> BoxStream<'_, Result<Entry>> {
        self.list_sorted()
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let res = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        match res {
            Ok(h) => {
                let info = self.info_from_head(&h);
                if let (Some(k), Some(etag)) = (&self.known, &info.etag) {
                    // The time comes from the next listing, not from HEAD:
                    // some servers (rclone serve s3) list the file's mtime
                    // but answer HEAD with another time, so a HEAD's time
                    // would never match a listing and every `ls -l` would
                    // HEAD again.
                    k.remember(&self.full_key(key), etag, None, &info.meta)
                        .await;
                }
                Ok(Some(info))
            }
            Err(e) => match self.err("HeadObject", key, e) {
                LocationError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let (_, bytes) = self.get_object(key, Some(range.clone()), if_match).await?;
        if bytes.len() as u64 != range.end - range.start {
            return Err(LocationError::Io {
                location: self.describe(),
                op: "GetObject",
                key: key.to_string(),
                message: format!(
                    "asked for {} bytes, got {} (the object changed or is shorter)",
                    range.end - range.start,
                    bytes.len()
                ),
                transient: true,
            });
        }
        Ok(bytes)
    }

    async fn read_whole(&self, key: &str, if_match: Option<&str>) -> Result<(ObjectInfo, Bytes)> {
        self.get_object(key, None, if_match).await
    }

    async fn write(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let out = self.write_object(key, source, meta, mode).await;
        if let Some(k) = &self.known {
            match out.as_ref().ok().and_then(|o| o.etag.as_deref()) {
                Some(etag) => k.remember(&self.full_key(key), etag, None, meta).await,
                None => k.forget(&self.full_key(key)).await,
            }
        }
        out
    }

    async fn list_dir(&self, dir: &str, token: Option<String>) -> Result<super::DirPage> {
        let mut page = self.dir_page(dir, token).await?;
        if let Some(k) = &self.known {
            let mut files: Vec<&mut Entry> = page
                .items
                .iter_mut()
                .filter_map(|i| match i {
                    super::DirItem::File(e) if e.meta.is_none() && e.etag.is_some() => Some(e),
                    _ => None,
                })
                .collect();
            let full: Vec<String> = files.iter().map(|e| self.full_key(&e.key)).collect();
            let listed: Vec<_> = files
                .iter()
                .zip(&full)
                .map(|(e, f)| {
                    (
                        f.as_str(),
                        e.etag.as_deref().unwrap_or_default(),
                        e.modified,
                    )
                })
                .collect();
            let recalled = k.recall(&listed).await;
            for (e, meta) in files.iter_mut().zip(recalled) {
                e.meta = meta;
            }
        }
        Ok(page)
    }

    async fn stat_dir(&self, dir: &str) -> Result<Option<ObjectInfo>> {
        let full = self.full_key(dir);
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.cfg.bucket)
            .prefix(&full)
            .max_keys(1)
            .send()
            .await
            .map_err(|e| self.err("ListObjectsV2", dir, e))?;
        let Some(first) = out.contents().first() else {
            return Ok(None);
        };
        if first.key() == Some(full.as_str()) {
            // The marker may carry the directory's metadata; a server that
            // cannot HEAD a marker (s3s-fs answers 500) just gives the
            // defaults.
            if let Some(info) = self.head_marker(&full).await {
                return Ok(Some(info));
            }
        }
        Ok(Some(ObjectInfo::default()))
    }

    async fn set_meta(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        if let Some(k) = &self.known {
            // The ETag may stay: the next listing's LastModified decides.
            k.forget(&self.full_key(key)).await;
        }
        if key.ends_with('/') {
            // A marker is empty: writing it again with the new metadata is
            // the whole change (and creates it when the directory had none).
            return self.make_dir(key, meta).await;
        }
        self.replace_meta(key, meta).await
    }

    async fn make_dir(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .set_metadata(Some(meta.to_user_metadata()))
            .body(Bytes::new().into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("PutObject", key, e))
    }

    async fn copy_from(
        &self,
        src: &dyn Location,
        src_key: &str,
        info: &ObjectInfo,
        key: &str,
    ) -> Result<Option<WriteOutcome>> {
        let Some(src) = src.as_any().downcast_ref::<S3Location>() else {
            return Ok(None);
        };
        if let Some(k) = &self.known {
            k.forget(&self.full_key(key)).await;
        }
        self.server_side_copy(src, src_key, info, key).await
    }

    async fn tags(&self, key: &str) -> Result<Vec<(String, String)>> {
        let out = self
            .client
            .get_object_tagging()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("GetObjectTagging", key, e))?;
        Ok(out
            .tag_set()
            .iter()
            .map(|t| (t.key().to_string(), t.value().to_string()))
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        if let Some(k) = &self.known {
            k.forget(&self.full_key(key)).await;
        }
        self.client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("DeleteObject", key, e))
    }

    async fn stored_checksum(&self, key: &str) -> Result<Option<Checksum>> {
        Ok(self.stat(key).await?.and_then(|i| i.checksum))
    }

    async fn clean_leftovers(&self) -> Result<u64> {
        self.abort_journalled_uploads().await
    }

    async fn explain(&self, err: &LocationError) -> Option<String> {
        let LocationError::Io { message, .. } = err else {
            return None;
        };
        const REFUSED: [&str; 5] = [
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
        ];
        let code = REFUSED.iter().find(|c| message.starts_with(*c))?;
        let who = self
            .caller_arn()
            .await
            .unwrap_or_else(|| "(identity unknown: STS did not answer)".into());
        let mut check = format!("syncmount location check {} --write-probe", self.cfg.url());
        for (flag, v) in [
            ("--region", self.region()),
            ("--endpoint-url", self.cfg.endpoint_url.clone()),
            ("--profile", self.cfg.profile.clone()),
            ("--role-arn", self.cfg.role_arn.clone()),
        ] {
            if let Some(v) = v {
                check.push_str(&format!(" {flag} {v}"));
            }
        }
        let fix = if *code == "ExpiredToken" || *code == "InvalidToken" {
            "refresh the credentials (a new session token, `aws sso login`)".to_string()
        } else {
            format!("`{check}` shows what is missing; `syncmount policy …` prints the policies")
        };
        Some(format!("principal {who}; {fix}"))
    }

    fn archive_class(&self) -> Option<String> {
        self.cfg
            .storage_class
            .clone()
            .filter(|c| super::s3_settings::is_archive(c))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The byte budget in KiB permits; always room for two parts.
/// S3 accepts at most this many parts in one multipart upload (and parts
/// of at most 5 GiB: 10,000 of them reach S3's 5 TiB object limit).
pub const MAX_PARTS: u64 = 10_000;

const MIB: u64 = 1024 * 1024;

/// The part size for an object of `len` bytes: the configured size, or
/// larger (in whole MiB) when that would take more than `max_parts` parts.
pub fn part_size_for(len: u64, min_part: u64, max_parts: u64) -> u64 {
    let needed = len.div_ceil(max_parts.max(1)).div_ceil(MIB) * MIB;
    min_part.max(needed)
}

pub(super) fn budget_kib(part_size: u64) -> usize {
    let kib = DEFAULT_BYTE_BUDGET.max(part_size.saturating_mul(2)) / 1024;
    // A semaphore holds at most usize::MAX >> 3 permits.
    usize::try_from(kib).map_or(Semaphore::MAX_PERMITS, |k| k.min(Semaphore::MAX_PERMITS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_an_object_of_any_size_fits_in_s3s_part_limit() {
        let five = 5 * MIB;
        assert_eq!(
            part_size_for(1 << 30, five, MAX_PARTS),
            five,
            "small objects keep the configured size"
        );
        // 78 GiB in 8 MiB parts would be 9,984 parts: still the configured size.
        assert_eq!(part_size_for(78 << 30, 8 * MIB, MAX_PARTS), 8 * MIB);
        // 5 TiB, S3's largest object: 10,000 parts of 525 MiB (whole MiB).
        let tib5 = 5u64 << 40;
        let p = part_size_for(tib5, 8 * MIB, MAX_PARTS);
        assert_eq!(p, 525 * MIB);
        assert!(tib5.div_ceil(p) <= MAX_PARTS);
        assert!(p <= 5 << 30, "a part is at most 5 GiB");
        for len in [0, 1, five * 3 + 1, 22 * MIB, (1 << 40) + 12345] {
            for max in [1, 3, 10, MAX_PARTS] {
                let p = part_size_for(len, five, max);
                assert!(
                    len.div_ceil(p) <= max,
                    "{len} bytes, at most {max} parts: {p}"
                );
                assert!(p >= five && p.is_multiple_of(MIB));
            }
        }
    }

    #[test]
    fn urls_parse_into_bucket_and_slash_terminated_prefix() {
        let c = S3Config::from_url("s3://b/some/prefix/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("b", "some/prefix/")
        );
        let c = S3Config::from_url("s3://b").unwrap();
        assert_eq!(c.prefix, "");
        assert!(S3Config::from_url("s3:///x").is_none());
        assert!(S3Config::from_url("/local").is_none());
    }
}
