//! Runs one action of the diff: copy (server-side when both ends allow it,
//! else streamed through a [`ByteSource`]), delete, or the metadata check
//! that settles whether a same-size object changed. Transient failures are
//! retried with backoff and jitter; what still fails is recorded for that
//! object and the execution goes on with the others.

use std::sync::Arc;
use std::time::Duration;

use super::diff::{decide_with_info, meta_to_write, Action, CopyReason, SkipReason};
use super::report::{Counters, ObjectRecord, Report};
use super::state::{fingerprint, source_fingerprint, PairCache};
use super::throttle::{MeteredSource, Throttle};
use crate::location::privilege::{unprivileged, Privileges, Unprivileged};
use crate::location::{
    ByteSource, Checksum, Entry, FileKind, Location, LocationError, LocationSource, ObjectAttrs,
    ObjectInfo, PosixMeta, WithAttrs, WriteMode, WriteOutcome,
};

/// Tries per object for transient failures, on top of the SDK's own retries
/// (those cover one request; this one more try covers a body cut off
/// mid-stream or a multipart transfer that lost a part). Kept at two because
/// the attempts multiply: 5 SDK attempts x 2 is already 10 requests.
const OBJECT_ATTEMPTS: u32 = 2;
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Objects up to this size whose metadata the listing lacks are read whole
/// in one GET (body and metadata together) instead of a HEAD and a GET.
const WHOLE_READ_MAX: u64 = 8 * 1024 * 1024;

/// What a copy wrote: the kind of file, and the privileged metadata it
/// dropped (see [`Transfer::allowed`]).
type Written = (FileKind, Option<String>);

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyMode {
    /// Verify every transferred file, then compare the whole source and
    /// destination once the transfer is done.
    PointInTimeConsistent,
    /// Verify every transferred file against the checksum computed while it was sent.
    OnlyFilesTransferred,
    None,
}

/// What every worker shares for one execution.
pub struct Transfer {
    pub src: Arc<dyn Location>,
    pub dst: Arc<dyn Location>,
    pub counters: Arc<Counters>,
    pub report: Arc<Report>,
    pub throttle: Option<Arc<Throttle>>,
    pub verify: VerifyMode,
    pub dry_run: bool,
    /// What earlier executions of this pair saw as equal (saves HEADs).
    pub cache: Option<Arc<PairCache>>,
    /// Setuid/setgid bits and devices written to a local destination.
    pub privileges: Privileges,
}

fn record(key: &str, action: &'static str, result: &'static str) -> ObjectRecord {
    ObjectRecord {
        key: key.to_string(),
        action,
        result,
        bytes: 0,
        reason: None,
        error: None,
        checksum: None,
        verified: false,
        kind: None,
        dropped: None,
    }
}

impl Transfer {
    /// Runs one action and records its outcome.
    pub async fn run(&self, action: Action) {
        let c = &self.counters;
        match action {
            Action::Skip { key, reason } => {
                if let SkipReason::Refused(why) = &reason {
                    tracing::warn!(key = %key, reason = %why, "skipped");
                }
                Counters::add(&c.files_skipped, 1);
                let mut r = record(&key, "skip", "skipped");
                r.reason = Some(reason.to_string());
                self.report.record(r);
            }
            Action::Delete { dst } => self.delete(&dst).await,
            Action::Check { src, dst } => self.check(src, dst).await,
            Action::Copy { src, reason, .. } => self.copy(&src, None, reason).await,
        }
    }

    async fn delete(&self, dst: &Entry) {
        let mut r = record(&dst.key, "delete", "ok");
        r.reason = Some("not at source".into());
        if self.dry_run {
            r.result = "dry-run";
        } else {
            match with_retries(|| self.dst.delete(&dst.key)).await {
                Ok(()) => {
                    Counters::add(&self.counters.files_deleted, 1);
                    if let Some(c) = &self.cache {
                        c.forget(&dst.key);
                    }
                }
                Err(e) => {
                    Counters::add(&self.counters.files_failed, 1);
                    r.result = "failed";
                    r.error = Some(self.explain(&e).await);
                }
            }
        }
        self.report.record(r);
    }

    /// Same size, metadata unknown on one side: ask the pair cache, else
    /// look (HEAD), then copy or skip.
    async fn check(&self, src: Entry, dst: Entry) {
        if self.cache.as_ref().is_some_and(|c| c.unchanged(&src, &dst)) {
            self.skip_unchanged(&src.key);
            return;
        }
        match self.infos(&src, &dst).await {
            Ok((si, di)) => match decide_with_info(&self.as_written(&si), &di) {
                None => {
                    if let Some(c) = &self.cache {
                        c.record(&src.key, source_fingerprint(&src), fingerprint(&dst));
                    }
                    self.skip_unchanged(&src.key);
                }
                Some(reason) => self.copy(&src, Some(si), reason).await,
            },
            Err(e) => {
                Counters::add(&self.counters.files_failed, 1);
                let mut r = record(&src.key, "copy", "failed");
                r.error = Some(self.explain(&e).await);
                self.report.record(r);
            }
        }
    }

    /// Same content, other metadata: the destination's metadata is
    /// rewritten (a chmod/chown/utimens locally, a copy onto itself on S3),
    /// counted as transferred with 0 bytes.
    async fn rewrite_meta(&self, src: &Entry, info: Option<ObjectInfo>, mut r: ObjectRecord) {
        let info = match info {
            Some(i) => Ok(Some(i)),
            None if src.meta.is_some() => Ok(None),
            None => info_of(self.src.as_ref(), src).await.map(Some),
        };
        let meta = match info.and_then(|i| self.allowed(&src.key, meta_to_write(src, i.as_ref()))) {
            Ok((meta, dropped)) => {
                r.dropped = dropped;
                meta
            }
            Err(LocationError::Unsupported { message, .. }) => {
                skipped_unsupported(&self.counters, &mut r, message);
                return self.report.record(r);
            }
            Err(e) => {
                self.fail(&mut r, &e).await;
                return self.report.record(r);
            }
        };
        match with_retries(|| self.dst.set_meta(&src.key, &meta)).await {
            Ok(()) => {
                Counters::add(&self.counters.files_transferred, 1);
                if let Some(c) = &self.cache {
                    // What the rewrite left is seen by the next listing.
                    c.forget(&src.key);
                }
            }
            Err(e) => {
                self.fail(&mut r, &e).await;
            }
        }
        self.report.record(r);
    }

    /// Marks `r` failed with `e`, counted.
    async fn fail(&self, r: &mut ObjectRecord, e: &LocationError) {
        Counters::add(&self.counters.files_failed, 1);
        r.result = "failed";
        r.error = Some(self.explain(e).await);
    }

    fn skip_unchanged(&self, key: &str) {
        Counters::add(&self.counters.files_skipped, 1);
        let mut r = record(key, "skip", "skipped");
        r.reason = Some(SkipReason::Unchanged.to_string());
        self.report.record(r);
    }

    async fn copy(&self, src: &Entry, info: Option<ObjectInfo>, reason: CopyReason) {
        let only_meta = reason == CopyReason::MetadataDiffers;
        Counters::add(&self.counters.estimated_files, 1);
        if !only_meta {
            Counters::add(&self.counters.estimated_bytes, src.size);
        }
        let action = if src.is_dir_marker() { "mkdir" } else { "copy" };
        let mut r = record(&src.key, action, "ok");
        r.reason = Some(format!("{reason:?}"));
        r.bytes = if only_meta { 0 } else { src.size };
        if self.dry_run {
            r.result = "dry-run";
            self.report.record(r);
            return;
        }
        if only_meta {
            return self.rewrite_meta(src, info, r).await;
        }
        match self.copy_kind_to(src, info, &src.key).await {
            Ok((out, verified, (kind, dropped))) => {
                r.dropped = dropped;
                Counters::add(&self.counters.files_transferred, 1);
                Counters::add(&self.counters.bytes_written, out.bytes);
                if verified {
                    Counters::add(&self.counters.files_verified, 1);
                }
                self.count_kind(kind, &mut r);
                r.checksum = out.stored.map(|c| c.to_string());
                r.verified = verified;
                if let Some(c) = &self.cache {
                    c.record(
                        &src.key,
                        source_fingerprint(src),
                        fingerprint(&out.as_listed(&src.key)),
                    );
                }
            }
            Err(LocationError::Unsupported { message, .. }) => {
                skipped_unsupported(&self.counters, &mut r, message)
            }
            Err(e) => {
                self.fail(&mut r, &e).await;
            }
        }
        self.report.record(r);
    }

    /// Counts a link or special file among the transferred, and names its
    /// kind in its report line.
    fn count_kind(&self, kind: FileKind, r: &mut ObjectRecord) {
        let counter = match kind {
            FileKind::Symlink => &self.counters.symlinks_transferred,
            k if k.is_special() => &self.counters.special_files_transferred,
            _ => return,
        };
        Counters::add(counter, 1);
        r.kind = Some(kind.name());
    }

    /// Copies `src` to `dst_key` at the destination (retried on transient
    /// failures), then verifies what was written; `true` when verified.
    pub async fn copy_to(
        &self,
        src: &Entry,
        info: Option<ObjectInfo>,
        dst_key: &str,
    ) -> Result<(WriteOutcome, bool, Option<String>), LocationError> {
        let (out, verified, (_, dropped)) = self.copy_kind_to(src, info, dst_key).await?;
        Ok((out, verified, dropped))
    }

    /// [`copy_to`](Self::copy_to), also saying what kind of file was copied
    /// and what privileged metadata was dropped.
    async fn copy_kind_to(
        &self,
        src: &Entry,
        info: Option<ObjectInfo>,
        dst_key: &str,
    ) -> Result<(WriteOutcome, bool, Written), LocationError> {
        let (out, kind) = with_retries(|| self.copy_once(src, info.clone(), dst_key)).await?;
        let (out, verified) = self.verify_written(dst_key, out).await?;
        Ok((out, verified, kind))
    }

    async fn copy_once(
        &self,
        src: &Entry,
        info: Option<ObjectInfo>,
        dst_key: &str,
    ) -> Result<(WriteOutcome, Written), LocationError> {
        if src.is_dir_marker() {
            let info = match (&info, src.meta) {
                (Some(_), _) | (None, Some(_)) => info,
                (None, None) => self.src.stat(&src.key).await?,
            };
            let (meta, dropped) = self.allowed(dst_key, meta_to_write(src, info.as_ref()))?;
            self.dst.make_dir(dst_key, &meta).await?;
            let out = WriteOutcome {
                bytes: 0,
                crc32c: None,
                stored: None,
                reported: None,
                etag: None,
                mtime_ns: None,
                mode: None,
            };
            return Ok((out, (FileKind::Dir, dropped)));
        }
        let listed = ObjectInfo {
            size: src.size,
            modified: src.modified,
            etag: src.etag.clone(),
            ..Default::default()
        };
        // A server-side copy moves no bytes through this machine, so the
        // bandwidth limit does not apply to it.
        let as_listed = info.as_ref().unwrap_or(&listed);
        if let Some(out) = self
            .dst
            .copy_from(self.src.as_ref(), &src.key, as_listed, dst_key)
            .await?
        {
            // The copy keeps the object's metadata, whatever it says.
            let kind = info
                .as_ref()
                .map(|i| i.meta)
                .or(src.meta)
                .unwrap_or_default();
            return Ok((out, (kind.kind(), None)));
        }
        let (info, source) = match (info, src.meta) {
            (Some(i), _) => {
                let s = self.source_for(src, &i);
                (i, s)
            }
            (None, Some(m)) => {
                let i = ObjectInfo { meta: m, ..listed };
                (i.clone(), self.source_for(src, &i))
            }
            // Metadata unknown: a small object comes with it in one GET.
            (None, None) if src.size <= WHOLE_READ_MAX => {
                let (i, body) = self.src.read_whole(&src.key, src.etag.as_deref()).await?;
                let whole = Arc::new(crate::location::MemorySource(body));
                (i, self.metered(whole))
            }
            (None, None) => {
                let i = info_of(self.src.as_ref(), src).await?;
                (i.clone(), self.source_for(src, &i))
            }
        };
        let (meta, dropped) = self.allowed(dst_key, meta_to_write(src, Some(&info)))?;
        // An S3 source's headers and user metadata go along (S3 → S3).
        let source: Arc<dyn ByteSource> = if info.attrs == ObjectAttrs::default() {
            source
        } else {
            Arc::new(WithAttrs {
                inner: source,
                attrs: info.attrs,
                origin: Some((self.src.clone(), src.key.clone())),
            })
        };
        let out = self
            .dst
            .write(dst_key, source, &meta, WriteMode::Replace)
            .await?;
        Ok((out, (meta.kind(), dropped)))
    }

    /// The source's `info` as a copy here would write it (without the
    /// setuid/setgid bits a local destination does not keep), to compare.
    fn as_written(&self, info: &ObjectInfo) -> ObjectInfo {
        let mut i = info.clone();
        if self.dst.keys_are_paths() {
            i.meta = crate::location::privilege::as_written(&i.meta, self.privileges);
        }
        i
    }

    /// What of `meta` may be written at a destination that makes local
    /// files (setuid/setgid bits and devices only as the task allows),
    /// with what was dropped, logged per key; a refused device is
    /// `Unsupported` (reported as skipped). Other destinations keep it all.
    fn allowed(
        &self,
        key: &str,
        meta: PosixMeta,
    ) -> Result<(PosixMeta, Option<String>), LocationError> {
        if !self.dst.keys_are_paths() {
            return Ok((meta, None));
        }
        match unprivileged(&meta, self.privileges) {
            Unprivileged::Write { meta, dropped } => {
                if let Some(d) = &dropped {
                    tracing::warn!(key = %key, "{d}");
                }
                Ok((meta, dropped))
            }
            Unprivileged::Refuse(message) => Err(LocationError::Unsupported {
                location: self.dst.describe(),
                key: key.to_string(),
                message,
            }),
        }
    }

    /// The error, with what its location can add (principal, fix command).
    pub async fn explain(&self, e: &LocationError) -> String {
        explain_with(e, &[self.src.as_ref(), self.dst.as_ref()]).await
    }

    fn metered(&self, inner: Arc<dyn ByteSource>) -> Arc<dyn ByteSource> {
        Arc::new(MeteredSource {
            inner,
            throttle: self.throttle.clone(),
            counters: self.counters.clone(),
        })
    }

    fn source_for(&self, src: &Entry, info: &ObjectInfo) -> Arc<dyn ByteSource> {
        let plain: Arc<dyn ByteSource> = Arc::new(LocationSource {
            location: self.src.clone(),
            key: src.key.clone(),
            size: src.size,
            etag: info.etag.clone().or_else(|| src.etag.clone()),
            crc32c: match info.checksum {
                Some(Checksum::Crc32c(c)) => Some(c),
                _ => None,
            },
        });
        self.metered(plain)
    }

    /// Compares the checksum the destination reports for what it stored
    /// (from its answer to the write, else by asking it) with the one
    /// computed from the bytes as they were sent.
    async fn verify_written(
        &self,
        key: &str,
        out: WriteOutcome,
    ) -> Result<(WriteOutcome, bool), LocationError> {
        if self.verify == VerifyMode::None || key.ends_with('/') {
            return Ok((out, false));
        }
        // What the store said about what it stored, in its answer to the
        // write; else ask it (a HEAD, or reading a local file back).
        let actual = match out.reported {
            Some(c) => Some(c),
            None => with_retries(|| self.dst.stored_checksum(key)).await?,
        };
        // Compare only what the store reports in the form we wrote: a
        // multipart object's checksum is composite on S3, and a server that
        // reports a full-object form for it (moto does) is not comparable.
        let expected = match (actual, out.stored) {
            (Some(Checksum::Crc32c(_)), Some(Checksum::Crc32c(_)) | None) => {
                out.crc32c.map(Checksum::Crc32c)
            }
            (
                Some(Checksum::Crc32cComposite { .. }),
                Some(c @ Checksum::Crc32cComposite { .. }),
            ) => Some(c),
            _ => None,
        };
        match (expected, actual) {
            (Some(e), Some(a)) if e != a => Err(LocationError::ChecksumMismatch {
                location: self.dst.describe(),
                key: key.to_string(),
                expected: e.to_string(),
                actual: a.to_string(),
            }),
            (Some(_), Some(_)) => Ok((out, true)),
            // Nothing comparable is kept by the store (some servers): unverified.
            _ => Ok((out, false)),
        }
    }
}

impl Transfer {
    /// Whether a same-size pair still differs once stored metadata is read.
    /// A failure to read counts as a difference.
    pub async fn differs(&self, src: &Entry, dst: &Entry) -> bool {
        !matches!(self.infos(src, dst).await, Ok((si, di)) if decide_with_info(&si, &di).is_none())
    }

    /// Both sides' stored metadata, fetched at once (a HEAD where the
    /// listing did not carry it).
    async fn infos(
        &self,
        src: &Entry,
        dst: &Entry,
    ) -> Result<(ObjectInfo, ObjectInfo), LocationError> {
        futures::try_join!(
            with_retries(|| info_of(self.src.as_ref(), src)),
            with_retries(|| info_of(self.dst.as_ref(), dst)),
        )
    }
}

/// A key its destination cannot hold for this user (a device as non-root):
/// reported and skipped with the reason, not failed.
pub fn skipped_unsupported(counters: &Counters, r: &mut ObjectRecord, message: String) {
    tracing::warn!(key = %r.key, "{message}");
    Counters::add(&counters.files_skipped, 1);
    r.action = "skip";
    r.result = "skipped";
    r.bytes = 0;
    r.reason = Some(message);
}

/// An error as text, followed by what the location it names can add.
pub async fn explain_with(e: &LocationError, locations: &[&dyn Location]) -> String {
    let text = e.to_string();
    for loc in locations {
        if text.starts_with(&loc.describe()) {
            if let Some(more) = loc.explain(e).await {
                return format!("{text} ({more})");
            }
        }
    }
    text
}

/// Stored metadata of a listed entry: the listing's when it has it, else a `stat`.
pub async fn info_of(loc: &dyn Location, e: &Entry) -> Result<ObjectInfo, LocationError> {
    if let Some(m) = e.meta {
        return Ok(ObjectInfo {
            size: e.size,
            modified: e.modified,
            etag: e.etag.clone(),
            meta: m,
            ..Default::default()
        });
    }
    loc.stat(&e.key)
        .await?
        .ok_or_else(|| LocationError::NotFound {
            location: loc.describe(),
            key: e.key.clone(),
        })
}

/// Runs `f` again on transient errors, with exponential backoff and full jitter.
pub async fn with_retries<T, F, Fut>(mut f: F) -> Result<T, LocationError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, LocationError>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if e.is_transient() && attempt + 1 < OBJECT_ATTEMPTS => {
                let cap = BACKOFF_BASE * 2u32.pow(attempt);
                let wait = cap.mul_f64(rand::random::<f64>());
                tracing::debug!(error = %e, ?wait, "transient failure, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
