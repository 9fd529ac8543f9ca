//! Writes into S3: single PUT, multipart upload, server-side copy.
//!
//! Every body is sent with its CRC32C, computed here while reading the source,
//! so the server rejects a corrupted body (BadDigest) instead of storing it.
//! A multipart upload is completed only when every part succeeded and is
//! aborted otherwise; it is journalled in the state directory from before
//! its creation until then (`journal.rs`, `sweep.rs`), so that after a crash (SIGKILL),
//! a lost answer or a cancel, a clean-up finds and aborts it: nothing
//! partial is ever visible and no debris is billed.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, MetadataDirective,
    ServerSideEncryption, StorageClass, TaggingDirective,
};
use bytes::Bytes;
use futures::stream::{StreamExt, TryStreamExt};

use super::s3::{part_size_for, S3Location};
use super::{
    composite_crc32c, part_ranges, ByteSource, Checksum, Location, LocationError, ObjectAttrs,
    ObjectInfo, PosixMeta, Result, WriteMode, WriteOutcome,
};
use journal::Intent;
use sweep::{Abort, Exchange, CREATE_TIMEOUT};

mod journal;
mod sweep;

/// Parts of one object uploaded at once; the global byte budget still caps the total.
const PART_CONCURRENCY: usize = 8;

/// One finished part: what CompleteMultipartUpload needs and, for a part
/// whose bytes we sent ourselves, its CRC32C and length.
struct PartDone {
    part: CompletedPart,
    sent: Option<(u32, u64)>,
}

/// The Content-Type a new object gets, from its name's extension (none
/// for names without a known one: the server's default applies).
fn content_type_for(key: &str) -> Option<String> {
    if key.ends_with('/') {
        return None;
    }
    mime_guess::from_path(key).first_raw().map(str::to_string)
}

/// The headers a new object is written with: the source object's (an S3
/// source's system metadata and user metadata, ours written anew over it),
/// else our POSIX metadata and a Content-Type from the name.
struct Headers {
    user: std::collections::HashMap<String, String>,
    attrs: ObjectAttrs,
    expires: Option<aws_smithy_types::DateTime>,
    tagging: Option<String>,
    stored: Stored,
}

/// How an object is stored: its storage class and encryption (the
/// location's settings for new objects; an object's own when it is
/// rewritten in place).
#[derive(Clone, Debug, Default)]
struct Stored {
    class: Option<StorageClass>,
    sse: Option<ServerSideEncryption>,
    kms_key: Option<String>,
}

fn headers(
    key: &str,
    meta: &PosixMeta,
    from: Option<&ObjectAttrs>,
    tags: &[(String, String)],
) -> Headers {
    let mut attrs = from.cloned().unwrap_or_default();
    let mut user: std::collections::HashMap<String, String> =
        std::mem::take(&mut attrs.user).into_iter().collect();
    user.extend(meta.to_user_metadata());
    if attrs.content_type.is_none() {
        attrs.content_type = content_type_for(key);
    }
    let expires = attrs.expires.as_deref().and_then(http_date);
    Headers {
        user,
        attrs,
        expires,
        tagging: tagging(tags),
        stored: Stored::default(),
    }
}

/// An `Expires` header's date.
fn http_date(s: &str) -> Option<aws_smithy_types::DateTime> {
    aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::HttpDate).ok()
}

/// Sets [`Headers`] on a PutObject or CreateMultipartUpload request.
macro_rules! with_headers {
    ($req:expr, $h:expr) => {{
        let h = $h;
        $req.set_metadata(Some(h.user))
            .set_content_type(h.attrs.content_type)
            .set_cache_control(h.attrs.cache_control)
            .set_content_encoding(h.attrs.content_encoding)
            .set_content_disposition(h.attrs.content_disposition)
            .set_content_language(h.attrs.content_language)
            .set_expires(h.expires)
            .set_tagging(h.tagging)
            .set_storage_class(h.stored.class)
            .set_server_side_encryption(h.stored.sse)
            .set_ssekms_key_id(h.stored.kms_key)
    }};
}

fn crc_header(crc: u32) -> String {
    Checksum::Crc32c(crc).to_header()
}

/// Percent-encodes a copy source (`bucket/key`), keeping `/` as is.
/// The source of a server-side copy: its `x-amz-copy-source`, and the
/// account that must own its bucket (`x-amz-source-expected-bucket-owner`).
struct CopySource {
    path: String,
    owner: Option<String>,
}

impl CopySource {
    fn of(loc: &S3Location, key: &str) -> CopySource {
        CopySource {
            path: encode_copy_source(&loc.cfg.bucket, &loc.full_key(key)),
            owner: loc.cfg.expected_bucket_owner.clone(),
        }
    }
}

fn encode_copy_source(bucket: &str, key: &str) -> String {
    format!("{bucket}/{}", percent_encode(key, b"-_.~/"))
}

/// `text` with every byte but ASCII letters, digits and `keep` as `%XX`.
fn percent_encode(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Tags as the `x-amz-tagging` header wants them (`k1=v1&k2=v2`, each part
/// URL-encoded); none for no tags.
fn tagging(tags: &[(String, String)]) -> Option<String> {
    let pairs: Vec<String> = tags
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                percent_encode(k, b"-_.~"),
                percent_encode(v, b"-_.~")
            )
        })
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("&"))
}

impl S3Location {
    /// How new objects are stored here (`storage_class`, `sse`).
    fn stored_new(&self) -> Stored {
        Stored {
            class: self.cfg.storage_class.as_deref().map(StorageClass::from),
            sse: self.cfg.sse.map(|s| s.header()),
            kms_key: self.cfg.sse_kms_key_id.clone(),
        }
    }

    /// `headers` for a new object of this location.
    fn new_headers(
        &self,
        key: &str,
        meta: &PosixMeta,
        from: Option<&ObjectAttrs>,
        tags: &[(String, String)],
    ) -> Headers {
        Headers {
            stored: self.stored_new(),
            ..headers(key, meta, from, tags)
        }
    }

    /// The tags a write from `source` carries: the source object's when
    /// `object_tags = preserve` and it has some.
    async fn tags_of(&self, source: &dyn ByteSource) -> Result<Vec<(String, String)>> {
        match source.attrs() {
            Some(a) if self.preserve_tags && a.tag_count > 0 => source.tags().await,
            _ => Ok(Vec::new()),
        }
    }

    pub(super) async fn write_object(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let out = if source.len() <= self.threshold {
            self.put_single(key, source.as_ref(), meta, mode).await?
        } else {
            self.put_multipart(key, source.clone(), meta, mode).await?
        };
        if let (Some(expected), Some(actual)) = (source.known_crc32c(), out.crc32c) {
            if expected != actual {
                // The object is already written with what we read; remove it
                // rather than leave bytes that differ from the source.
                let _ = self.delete(key).await;
                return Err(LocationError::ChecksumMismatch {
                    location: self.describe(),
                    key: key.to_string(),
                    expected: Checksum::Crc32c(expected).to_string(),
                    actual: Checksum::Crc32c(actual).to_string(),
                });
            }
        }
        Ok(out)
    }

    async fn acquire_budget(&self, bytes: u64) -> tokio::sync::SemaphorePermit<'_> {
        let kib = (bytes.div_ceil(1024) as usize).clamp(1, super::s3::budget_kib(self.part_size));
        // The semaphore is never closed, so acquiring cannot fail.
        self.budget
            .acquire_many(kib as u32)
            .await
            .expect("byte budget semaphore is never closed")
    }

    async fn put_single(
        &self,
        key: &str,
        source: &dyn ByteSource,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let len = source.len();
        let _permit = self.acquire_budget(len).await;
        let body = source.read_range(0..len).await?;
        let crc = crc32c::crc32c(&body);
        let req = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key));
        let tags = self.tags_of(source).await?;
        let res = with_headers!(req, self.new_headers(key, meta, source.attrs(), &tags))
            .checksum_crc32_c(crc_header(crc))
            .set_if_none_match((mode == WriteMode::CreateNew).then(|| "*".to_string()))
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.err("PutObject", key, e))?;
        Ok(WriteOutcome {
            bytes: len,
            crc32c: Some(crc),
            stored: Some(Checksum::Crc32c(crc)),
            reported: res.checksum_crc32_c().and_then(Checksum::from_header),
            etag: res.e_tag().map(str::to_string),
            mtime_ns: None,
            mode: None,
        })
    }

    async fn put_multipart(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let tags = self.tags_of(source.as_ref()).await?;
        let head = self.new_headers(key, meta, source.attrs(), &tags);
        self.multipart(key, head, source.len(), mode, |upload_id, number, range| {
            let source = source.clone();
            async move {
                let _permit = self.acquire_budget(range.end - range.start).await;
                let body = source.read_range(range).await?;
                self.upload_part(key, &upload_id, number, body).await
            }
        })
        .await
    }

    /// The lifecycle every multipart write shares: journal the intent,
    /// create the upload (with the metadata and CRC32C), run `send_part`
    /// for every part range in parallel, complete only when all succeeded,
    /// abort otherwise.
    async fn multipart<F, Fut>(
        &self,
        key: &str,
        head: Headers,
        size: u64,
        mode: WriteMode,
        send_part: F,
    ) -> Result<WriteOutcome>
    where
        F: Fn(String, i32, Range<u64>) -> Fut,
        Fut: std::future::Future<Output = Result<PartDone>>,
    {
        let full_key = self.full_key(key);
        let before = self.snapshot(&full_key).await;
        let mut intent = Intent::begin(
            self.journal_dir.as_deref(),
            &self.cfg.bucket,
            &full_key,
            before,
        );
        let upload_id = match self.create(key, head, &mut intent).await {
            Ok(id) => id,
            Err(e) => {
                intent.settle(true);
                return Err(e);
            }
        };
        let parts: Result<Vec<PartDone>> = futures::stream::iter(
            part_ranges(size, part_size_for(size, self.part_size, self.max_parts))
                .into_iter()
                .enumerate(),
        )
        .map(|(i, r)| send_part(upload_id.clone(), i as i32 + 1, r))
        .buffer_unordered(PART_CONCURRENCY)
        .try_collect()
        .await;
        let result = match parts {
            Ok(parts) => self.complete(key, &upload_id, parts, size, mode).await,
            Err(e) => Err(e),
        };
        let gone = result.is_ok() || self.abort(&full_key, &upload_id).await;
        intent.settle(gone);
        result
    }

    /// CreateMultipartUpload, its outcome recorded in `intent`: the id, and
    /// whether the create may have started uploads whose id we never learnt.
    async fn create(&self, key: &str, head: Headers, intent: &mut Intent) -> Result<String> {
        let exchange = Exchange::default();
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key));
        let send = with_headers!(req, head)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .customize()
            .interceptor(exchange.clone())
            .send();
        let no_id = |message: String, transient: bool| LocationError::Io {
            location: self.describe(),
            op: "CreateMultipartUpload",
            key: key.to_string(),
            message,
            transient,
        };
        let res = match tokio::time::timeout(CREATE_TIMEOUT, send).await {
            Ok(r) => r.map_err(|e| self.err("CreateMultipartUpload", key, e)),
            Err(_) => Err(no_id(
                format!("no answer within {} s", CREATE_TIMEOUT.as_secs()),
                true,
            )),
        };
        let id = res
            .as_ref()
            .ok()
            .and_then(|c| c.upload_id())
            .map(str::to_string);
        // A retried create may have started an upload with an earlier
        // attempt whose answer was lost; so may one that failed without a
        // clear refusal.
        let refused = matches!(&res, Err(e) if !e.is_transient());
        let clean = exchange.attempts() == 1 && (id.is_some() || refused);
        intent.created(id.as_deref(), clean, exchange.server_ms());
        res?;
        id.ok_or_else(|| no_id("the answer has no UploadId".into(), false))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<PartDone> {
        let crc = crc32c::crc32c(&body);
        let len = body.len() as u64;
        let out = self
            .client
            .upload_part()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .part_number(number)
            .checksum_crc32_c(crc_header(crc))
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.err("UploadPart", key, e))?;
        let part = CompletedPart::builder()
            .set_e_tag(out.e_tag().map(str::to_string))
            .part_number(number)
            .checksum_crc32_c(crc_header(crc))
            .build();
        Ok(PartDone {
            part,
            sent: Some((crc, len)),
        })
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        mut parts: Vec<PartDone>,
        len: u64,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        parts.sort_by_key(|p| p.part.part_number());
        // Parts we sent ourselves give the whole CRC32C and the composite.
        let sent: Option<Vec<(u32, u64)>> = parts.iter().map(|p| p.sent).collect();
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(parts.into_iter().map(|p| p.part).collect()))
            .build();
        let res = self
            .client
            .complete_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .upload_id(upload_id)
            .multipart_upload(done)
            .set_if_none_match((mode == WriteMode::CreateNew).then(|| "*".to_string()))
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        let whole = sent.as_ref().map(|s| {
            s.iter().fold(0u32, |acc, (c, l)| {
                crc32c::crc32c_combine(acc, *c, *l as usize)
            })
        });
        let composite =
            sent.map(|s| composite_crc32c(&s.iter().map(|(c, _)| *c).collect::<Vec<_>>()));
        Ok(WriteOutcome {
            bytes: len,
            crc32c: whole,
            stored: composite,
            reported: res.checksum_crc32_c().and_then(Checksum::from_header),
            etag: res.e_tag().map(str::to_string),
            mtime_ns: None,
            mode: None,
        })
    }

    /// Aborts a failed upload; false when that failed (the journal keeps it
    /// for the clean-up at the end of the run, or the next run).
    async fn abort(&self, full_key: &str, upload_id: &str) -> bool {
        match self.abort_upload(full_key, upload_id).await {
            Abort::Done | Abort::Gone => true,
            Abort::Failed(e) => {
                tracing::warn!(key = full_key, error = %e, "could not abort a failed upload; the clean-up retries");
                false
            }
        }
    }

    /// CopyObject / UploadPartCopy from another S3 location on the same
    /// endpoint, with this location's credentials. `None` when refused (the
    /// credentials cannot read the source): the caller streams instead.
    pub(super) async fn server_side_copy(
        &self,
        src: &S3Location,
        src_key: &str,
        info: &ObjectInfo,
        key: &str,
    ) -> Result<Option<WriteOutcome>> {
        if self.copy_refused.load(Ordering::Relaxed)
            || src.cfg.endpoint_url != self.cfg.endpoint_url
        {
            return Ok(None);
        }
        let source = CopySource::of(src, src_key);
        let res = if info.size > self.copy_threshold {
            // Unlike CopyObject, a multipart copy carries no metadata over:
            // the source's HEAD gives it (system metadata, user metadata),
            // GetObjectTagging its tags.
            let full = src.stat(src_key).await?.unwrap_or_else(|| info.clone());
            let tags = if self.preserve_tags && full.attrs.tag_count > 0 {
                src.tags(src_key).await?
            } else {
                Vec::new()
            };
            let head = self.new_headers(key, &full.meta, Some(&full.attrs), &tags);
            self.copy_multipart(&source, &full, head, key).await
        } else {
            self.copy_single(&source, info, key).await
        };
        match res {
            Err(LocationError::Io { ref message, .. }) if message.starts_with("AccessDenied") => {
                tracing::info!(src = %src.describe(), dst = %self.describe(), "server-side copy refused; streaming through this process instead");
                self.copy_refused.store(true, Ordering::Relaxed);
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// Rewrites an object's metadata in place (a copy onto itself with the
    /// metadata replaced), pinned to the ETag just read so a concurrent
    /// writer's content is never overwritten with stale metadata.
    pub(super) async fn replace_meta(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        let head = self
            .client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err("HeadObject", key, e))?;
        let mut info = self.info_from_head(&head);
        // A chmod (no type bits) keeps a link's or a device's type.
        info.meta = meta.merged_over(&info.meta);
        let source = CopySource::of(self, key);
        let in_parts = info.size > self.copy_threshold;
        // Its own tags stay, whatever `object_tags` says: CopyObject keeps
        // them, a part copy must be given them.
        let tags = if in_parts && info.attrs.tag_count > 0 {
            self.tags(key).await?
        } else {
            Vec::new()
        };
        // Its headers and other tools' metadata stay, ours is written anew;
        // its class and encryption are named, as a copy onto itself would
        // otherwise take the bucket's defaults.
        let h = Headers {
            stored: Stored {
                class: head.storage_class().cloned(),
                sse: head.server_side_encryption().cloned(),
                kms_key: head.ssekms_key_id().map(str::to_string),
            },
            ..headers(key, &info.meta, Some(&info.attrs), &tags)
        };
        if in_parts {
            return self
                .copy_multipart(&source, &info, h, key)
                .await
                .map(|_| ());
        }
        let req = self
            .client
            .copy_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .copy_source(&source.path)
            .set_expected_source_bucket_owner(source.owner.clone())
            .set_copy_source_if_match(info.etag.clone())
            .metadata_directive(MetadataDirective::Replace);
        with_headers!(req, h)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("CopyObject", key, e))
    }

    async fn copy_single(
        &self,
        source: &CopySource,
        info: &ObjectInfo,
        key: &str,
    ) -> Result<WriteOutcome> {
        let stored = self.stored_new();
        let out = self
            .client
            .copy_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .copy_source(&source.path)
            .set_expected_source_bucket_owner(source.owner.clone())
            .set_copy_source_if_match(info.etag.clone())
            // No checksum algorithm asked: S3 then keeps the source's checksum
            // (and moto would store a wrong value if one were asked).
            .metadata_directive(MetadataDirective::Copy)
            .set_storage_class(stored.class)
            .set_server_side_encryption(stored.sse)
            .set_ssekms_key_id(stored.kms_key)
            // Tags come along unless `object_tags = none` (COPY needs
            // s3:GetObjectTagging and s3:PutObjectTagging).
            .tagging_directive(if self.preserve_tags {
                TaggingDirective::Copy
            } else {
                TaggingDirective::Replace
            })
            .send()
            .await
            .map_err(|e| self.err("CopyObject", key, e))?;
        let stored = out
            .copy_object_result()
            .and_then(|r| r.checksum_crc32_c())
            .and_then(Checksum::from_header);
        Ok(WriteOutcome {
            bytes: info.size,
            crc32c: match stored {
                Some(Checksum::Crc32c(c)) => Some(c),
                _ => None,
            },
            stored,
            // The copy's answer is our only source for `stored`: not a confirmation.
            reported: None,
            etag: out
                .copy_object_result()
                .and_then(|r| r.e_tag())
                .map(str::to_string),
            mtime_ns: None,
            mode: None,
        })
    }

    async fn copy_multipart(
        &self,
        source: &CopySource,
        info: &ObjectInfo,
        head: Headers,
        key: &str,
    ) -> Result<WriteOutcome> {
        self.multipart(
            key,
            head,
            info.size,
            WriteMode::Replace,
            |upload_id, number, r| async move {
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.cfg.bucket)
                    .key(self.full_key(key))
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(&source.path)
                    .set_expected_source_bucket_owner(source.owner.clone())
                    .copy_source_range(format!("bytes={}-{}", r.start, r.end - 1))
                    .set_copy_source_if_match(info.etag.clone())
                    .send()
                    .await
                    .map_err(|e| self.err("UploadPartCopy", key, e))?;
                let res = out.copy_part_result();
                let part = CompletedPart::builder()
                    .set_e_tag(res.and_then(|r| r.e_tag()).map(str::to_string))
                    .set_checksum_crc32_c(
                        res.and_then(|r| r.checksum_crc32_c()).map(str::to_string),
                    )
                    .part_number(number)
                    .build();
                Ok(PartDone { part, sent: None })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(
            content_type_for("site/index.html").as_deref(),
            Some("text/html")
        );
        assert_eq!(
            content_type_for("a/b.JSON").as_deref(),
            Some("application/json")
        );
        assert_eq!(content_type_for("photo.jpg").as_deref(), Some("image/jpeg"));
        assert_eq!(content_type_for("README"), None);
        assert_eq!(content_type_for("data.no-such-ext"), None);
        assert_eq!(content_type_for("dir.html/"), None);
    }

    #[test]
    fn copy_source_is_percent_encoded_but_keeps_slashes() {
        assert_eq!(encode_copy_source("b", "a b/é+x"), "b/a%20b/%C3%A9%2Bx");
    }
}
