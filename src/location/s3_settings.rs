//! Per-location S3 settings beyond where the bucket is: the storage class
//! and server-side encryption of the objects written there, requester pays,
//! and the account that must own the bucket (`x-amz-expected-bucket-owner`
//! on every request, so a bucket someone else re-created under the same
//! name is refused rather than written).

use aws_sdk_s3::types::{ServerSideEncryption, StorageClass};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Server-side encryption of the objects written (`sse`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    #[value(name = "aes256", alias = "AES256")]
    Aes256,
    /// SSE-KMS, with `sse_kms_key_id` or the account's default key.
    #[value(name = "aws:kms")]
    AwsKms,
}

impl Sse {
    pub fn parse(s: &str) -> Result<Sse, String> {
        match s.to_ascii_lowercase().as_str() {
            "aes256" => Ok(Sse::Aes256),
            "aws:kms" => Ok(Sse::AwsKms),
            _ => Err(format!("sse `{s}` is not one of: aes256, aws:kms")),
        }
    }

    pub fn header(self) -> ServerSideEncryption {
        match self {
            Sse::Aes256 => ServerSideEncryption::Aes256,
            Sse::AwsKms => ServerSideEncryption::AwsKms,
        }
    }
}

/// Storage classes whose objects cannot be read back without a restore.
const ARCHIVE_CLASSES: [&str; 2] = ["GLACIER", "DEEP_ARCHIVE"];

/// `class` in S3's spelling (`STANDARD_IA`), checked against the classes S3
/// knows; the error lists them.
pub fn storage_class(class: &str) -> Result<String, String> {
    let upper = class.to_ascii_uppercase();
    let known = StorageClass::values();
    if known.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "storage class `{class}` is not one of: {}",
            known.join(", ")
        ))
    }
}

/// Whether objects of `class` must be restored before they can be read.
pub fn is_archive(class: &str) -> bool {
    ARCHIVE_CLASSES.contains(&class)
}

/// A 12-digit AWS account id.
pub fn account_id(id: &str) -> Result<String, String> {
    if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.to_string())
    } else {
        Err(format!(
            "expected_bucket_owner `{id}` is not an AWS account id (12 digits)"
        ))
    }
}

/// Adds the bucket-wide headers to every request of a location's client.
#[derive(Debug)]
pub struct BucketHeaders {
    pub expected_owner: Option<String>,
    pub requester_pays: bool,
}

impl Intercept for BucketHeaders {
    fn name(&self) -> &'static str {
        "syncmount-bucket-headers"
    }

    fn modify_before_signing(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let headers = ctx.request_mut().headers_mut();
        if let Some(owner) = &self.expected_owner {
            headers.insert("x-amz-expected-bucket-owner", owner.clone());
        }
        if self.requester_pays {
            headers.insert("x-amz-request-payer", "requester");
        }
        Ok(())
    }
}

/// Counts every attempt of every request of a location's client in the
/// process's metrics, by operation and HTTP status.
#[derive(Debug)]
pub struct RequestMetrics;

impl Intercept for RequestMetrics {
    fn name(&self) -> &'static str {
        "syncmount-request-metrics"
    }

    fn read_after_attempt(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg.load::<Metadata>().map_or("unknown", |m| m.name());
        let status = ctx.response().map(|r| r.status().as_u16());
        crate::metrics::global().s3_attempt(operation, status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_errors_name_the_value() {
        assert_eq!(storage_class("standard_ia").as_deref(), Ok("STANDARD_IA"));
        let e = storage_class("COLD").expect_err("not a class");
        assert!(e.contains("`COLD`") && e.contains("DEEP_ARCHIVE"), "{e}");
        assert!(is_archive("GLACIER") && is_archive("DEEP_ARCHIVE"));
        assert!(!is_archive("GLACIER_IR"));
        assert_eq!(Sse::parse("AES256"), Ok(Sse::Aes256));
        assert_eq!(Sse::parse("aws:kms"), Ok(Sse::AwsKms));
        assert!(Sse::parse("kms").expect_err("not sse").contains("`kms`"));
        assert!(account_id("123456789012").is_ok());
        assert!(account_id("12345678901x")
            .expect_err("not digits")
            .contains("`12345678901x`"));
    }
}
