//! The sweep: finding and aborting the uploads a run started, even those
//! whose id it never learnt, and nobody else's.
//!
//! `clean_leftovers`, at the start and the end of every run, settles the
//! journal entries of dead processes and those released by live ones (a
//! cancelled write, an abort that failed): known ids are aborted, and the
//! key of an entry whose create may have started uploads we never learnt of
//! is swept: its open uploads are listed and those aborted that were not
//! open before the intent, are not in progress in a live process, and,
//! where the server's clock can tell, began before the create returned.
//! Another tool's upload is spared: for another key it is never listed; for
//! the same key it was open before our intent, or began after our create
//! ended (a server that reports no usable start times, like moto, is judged
//! by the first rule alone). A server that cannot list uploads (s3s-fs
//! answers NotImplemented; a principal without s3:ListBucketMultipartUploads
//! is refused) still gets every upload whose id was learnt aborted; the
//! rest is left to the bucket's AbortIncompleteMultipartUpload lifecycle
//! rule.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::super::local_files::pid_alive;
use super::super::s3::S3Location;
use super::super::{LocationError, Result};
use super::journal::{in_progress, now_ms, read, store, Entry};

/// How long one CreateMultipartUpload may take, its retries included. Any
/// upload it started began before then, which bounds what a sweep takes
/// for ours when the create never answered; a create that slow has failed.
pub(super) const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// The `Date` header counts whole seconds, as some servers' upload start
/// times do: server times are compared with this much slack.
const CLOCK_SLACK_MS: i64 = 2_000;
/// An entry whose sweep could not be done for this long (uploads not
/// listable, the bucket unreachable) is dropped with a warning: by then the
/// bucket's lifecycle rule is the remedy.
const KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// An open upload of a swept key, as ListMultipartUploads shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Listed {
    pub id: String,
    /// The server's start time (ms since the epoch), when it gives one.
    pub initiated_ms: Option<i64>,
}

/// Whether `upload`, open for `entry`'s key, may have been started by
/// `entry`'s CreateMultipartUpload, and by no upload in progress (`live`).
pub(super) fn started_by(entry: &Entry, upload: &Listed, live: &HashSet<String>) -> bool {
    let Some(before) = &entry.before else {
        return false;
    };
    if before.contains(&upload.id) || live.contains(&upload.id) {
        return false;
    }
    match (upload.initiated_ms, entry.listed_at_ms) {
        // It was not open when we listed, so it began after; a server
        // whose clock says otherwise keeps no usable start times (moto
        // reports one fixed date): the listing alone decides then.
        // Saturating: the times are the server's, whatever it says.
        (Some(t), Some(listed)) if t.saturating_add(CLOCK_SLACK_MS) >= listed => {
            let ended = entry
                .created_by_ms
                .unwrap_or(listed.saturating_add(CREATE_TIMEOUT.as_millis() as i64));
            t <= ended.saturating_add(CLOCK_SLACK_MS)
        }
        _ => true,
    }
}

/// The open uploads of one key, and the server's clock when it was asked.
pub(super) struct Listing {
    pub uploads: Vec<Listed>,
    pub server_ms: Option<i64>,
}

/// Why a key's uploads could not be listed.
pub(super) enum ListFailure {
    /// The server has no ListMultipartUploads (s3s-fs: NotImplemented).
    Unsupported(String),
    /// Not allowed (needs s3:ListBucketMultipartUploads).
    Refused(String),
    /// The bucket is gone, and its uploads with it.
    Gone,
    /// Anything else (after the SDK's retries): try again next time.
    Failed(LocationError),
}

/// How an abort ended.
pub(super) enum Abort {
    Done,
    /// The upload was already gone (completed, aborted, or the bucket deleted).
    Gone,
    Failed(LocationError),
}

/// Counts a request's attempts and keeps the `Date` of the last one's answer.
#[derive(Clone, Debug, Default)]
pub(super) struct Exchange(Arc<Mutex<(u32, Option<String>)>>);

impl Exchange {
    pub(super) fn attempts(&self) -> u32 {
        self.0.lock().map(|s| s.0).unwrap_or(0)
    }

    /// The server's clock at the last attempt's answer; `None` when that
    /// attempt got no answer or the answer had no (valid) `Date`.
    pub(super) fn server_ms(&self) -> Option<i64> {
        let date = self.0.lock().ok()?.1.clone()?;
        aws_smithy_types::DateTime::from_str(&date, aws_smithy_types::date_time::Format::HttpDate)
            .ok()?
            .to_millis()
            .ok()
    }
}

impl Intercept for Exchange {
    fn name(&self) -> &'static str {
        "syncmount-exchange"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let Ok(mut s) = self.0.lock() {
            *s = (s.0 + 1, None);
        }
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        ctx: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        let date = ctx.response().headers().get("date").map(str::to_string);
        if let Ok(mut s) = self.0.lock() {
            s.1 = date;
        }
        Ok(())
    }
}

/// An S3 error meaning the upload (or its whole bucket) no longer exists.
fn is_gone<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    matches!(e.code(), Some("NoSuchUpload" | "NoSuchBucket"))
        || e.raw_response().map(|r| r.status().as_u16()) == Some(404)
}

impl S3Location {
    /// Aborts one upload, retried like any request; an upload already gone is fine.
    pub(super) async fn abort_upload(&self, full_key: &str, upload_id: &str) -> Abort {
        let res = self
            .client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .send()
            .await;
        match res {
            Ok(_) => Abort::Done,
            Err(e) if is_gone(&e) => Abort::Gone,
            Err(e) => Abort::Failed(self.err("AbortMultipartUpload", full_key, e)),
        }
    }

    /// The open uploads of exactly `full_key` (every page), with the
    /// server's clock at the first page.
    pub(super) async fn uploads_of(
        &self,
        full_key: &str,
    ) -> std::result::Result<Listing, ListFailure> {
        let mut out = Listing {
            uploads: Vec::new(),
            server_ms: None,
        };
        let mut markers: (Option<String>, Option<String>) = (None, None);
        loop {
            let exchange = Exchange::default();
            let res = self
                .client
                .list_multipart_uploads()
                .bucket(&self.cfg.bucket)
                .prefix(full_key)
                .set_key_marker(markers.0.clone())
                .set_upload_id_marker(markers.1.clone())
                .customize()
                .interceptor(exchange.clone())
                .send()
                .await;
            let page = match res {
                Ok(p) => p,
                Err(e) => return Err(self.list_failure(full_key, e)),
            };
            out.server_ms = out.server_ms.or(exchange.server_ms());
            for u in page.uploads() {
                if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                    if k == full_key {
                        out.uploads.push(Listed {
                            id: id.to_string(),
                            initiated_ms: u.initiated().and_then(|t| t.to_millis().ok()),
                        });
                    }
                }
            }
            let next = (
                page.next_key_marker().map(str::to_string),
                page.next_upload_id_marker().map(str::to_string),
            );
            if page.is_truncated() != Some(true) || next == (None, None) || next == markers {
                return Ok(out);
            }
            markers = next;
        }
    }

    fn list_failure<E>(&self, key: &str, e: SdkError<E, HttpResponse>) -> ListFailure
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_string);
        if code.as_deref() == Some("NoSuchBucket") {
            return ListFailure::Gone;
        }
        let err = self.err("ListMultipartUploads", key, e);
        match (code.as_deref(), status) {
            (Some("NotImplemented"), _) | (_, Some(501)) => {
                ListFailure::Unsupported(err.to_string())
            }
            (Some("AccessDenied"), _) | (_, Some(403)) => ListFailure::Refused(err.to_string()),
            _ => ListFailure::Failed(err),
        }
    }

    /// The key's open uploads just before a create, for its intent; `None`
    /// without a journal, or when they cannot be listed here.
    pub(super) async fn snapshot(&self, full_key: &str) -> Option<Listing> {
        if self.journal_dir.is_none() || self.uploads_unlisted.load(Ordering::Relaxed) {
            return None;
        }
        match self.uploads_of(full_key).await {
            Ok(l) => Some(l),
            Err(ListFailure::Unsupported(m)) => {
                self.uploads_unlisted.store(true, Ordering::Relaxed);
                tracing::debug!(error = %m, "this server cannot list multipart uploads: only uploads whose id was learnt can be cleaned up after a crash");
                None
            }
            Err(ListFailure::Refused(m)) => {
                if !self.uploads_unlisted.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %m, "cannot list multipart uploads (needs s3:ListBucketMultipartUploads): an upload whose creation is interrupted cannot be found again; an AbortIncompleteMultipartUpload lifecycle rule on the bucket removes it");
                }
                None
            }
            Err(ListFailure::Gone) => None,
            Err(ListFailure::Failed(e)) => {
                tracing::debug!(key = full_key, error = %e, "could not list the key's open uploads before creating one");
                None
            }
        }
    }

    /// Settles the journal's entries for this bucket that no live process
    /// is writing: aborts their known uploads and sweeps their keys.
    /// Returns how many uploads were aborted.
    pub(in crate::location) async fn abort_journalled_uploads(&self) -> Result<u64> {
        let Some(dir) = &self.journal_dir else {
            return Ok(0);
        };
        let mut stale: Vec<(PathBuf, Entry, Entry)> = read(dir)
            .into_iter()
            .filter(|(_, e)| e.bucket == self.cfg.bucket && (e.released || !pid_alive(e.pid)))
            .map(|(p, e)| (p, e.clone(), e))
            .collect();
        let mut aborted = 0;
        for (_, _, e) in stale.iter_mut() {
            let Some(id) = e.upload_id.clone() else {
                continue;
            };
            match self.abort_upload(&e.key, &id).await {
                Abort::Done => {
                    aborted += 1;
                    e.upload_id = None;
                }
                Abort::Gone => e.upload_id = None,
                Abort::Failed(err) => {
                    tracing::warn!(key = e.key, upload_id = id, error = %err, "could not abort an interrupted upload; the next run retries")
                }
            }
        }
        let keys: BTreeSet<String> = stale
            .iter()
            .filter(|(_, _, e)| e.sweep)
            .map(|(_, _, e)| e.key.clone())
            .collect();
        for key in keys {
            let mut entries: Vec<&mut Entry> = stale
                .iter_mut()
                .filter(|(_, _, e)| e.sweep && e.key == key)
                .map(|(_, _, e)| e)
                .collect();
            aborted += self.sweep(dir, &key, &mut entries).await;
        }
        let now = now_ms();
        for (path, was, e) in stale {
            let expired = e
                .since_ms
                .is_some_and(|t| now.saturating_sub(t) > KEEP_FOR.as_millis() as u64);
            if e.settled() {
                let _ = std::fs::remove_file(&path);
            } else if expired {
                tracing::warn!(key = e.key, "giving up on an interrupted upload's clean-up after a week; an AbortIncompleteMultipartUpload lifecycle rule on the bucket removes what is left");
                let _ = std::fs::remove_file(&path);
            } else if e != was {
                let _ = store(&path, &e);
            }
        }
        Ok(aborted)
    }

    /// Lists `key`'s open uploads and aborts those `entries` may have
    /// started; their sweeps are done unless something failed. Returns how
    /// many uploads were aborted.
    async fn sweep(&self, dir: &Path, key: &str, entries: &mut [&mut Entry]) -> u64 {
        let done = |entries: &mut [&mut Entry]| entries.iter_mut().for_each(|e| e.sweep = false);
        if entries.iter().all(|e| e.before.is_none()) {
            // Without the listing from before the create, another tool's
            // upload of the key cannot be told from ours: leave both.
            tracing::debug!(key, "an interrupted create cannot be swept: its key's uploads were not listed before it");
            done(entries);
            return 0;
        }
        if in_progress(dir, &self.cfg.bucket).1.contains(key) {
            tracing::debug!(
                key,
                "a live process is creating an upload of this key; swept next time"
            );
            return 0;
        }
        let listing = match self.uploads_of(key).await {
            Ok(l) => l,
            Err(ListFailure::Gone) => {
                done(entries);
                return 0;
            }
            Err(ListFailure::Unsupported(m)) => {
                tracing::debug!(key, error = %m, "cannot list multipart uploads here; an upload whose id was never learnt stays");
                done(entries);
                return 0;
            }
            Err(ListFailure::Refused(m)) => {
                tracing::warn!(key, error = %m, "cannot look for an interrupted upload (needs s3:ListBucketMultipartUploads); the next run tries again");
                return 0;
            }
            Err(ListFailure::Failed(e)) => {
                tracing::warn!(key, error = %e, "cannot look for an interrupted upload; the next run tries again");
                return 0;
            }
        };
        // Read again after listing: an upload a live process began before
        // the listing was journalled (as an intent at least) by now.
        let (live, creating) = in_progress(dir, &self.cfg.bucket);
        if creating.contains(key) {
            return 0;
        }
        let mut aborted = 0;
        let mut failed = false;
        for u in &listing.uploads {
            if !entries.iter().any(|e| started_by(e, u, &live)) {
                continue;
            }
            match self.abort_upload(key, &u.id).await {
                Abort::Done => {
                    tracing::info!(
                        key,
                        upload_id = u.id,
                        "aborted an upload whose id was never learnt"
                    );
                    aborted += 1;
                }
                Abort::Gone => {}
                Abort::Failed(e) => {
                    tracing::warn!(key, upload_id = u.id, error = %e, "could not abort an interrupted upload; the next run retries");
                    failed = true;
                }
            }
        }
        if !failed {
            done(entries);
        }
        aborted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(before: &[&str], listed: Option<i64>, created: Option<i64>) -> Entry {
        Entry {
            pid: 1,
            bucket: "b".into(),
            key: "k".into(),
            before: Some(before.iter().map(|s| s.to_string()).collect()),
            listed_at_ms: listed,
            created_by_ms: created,
            sweep: true,
            ..Entry::default()
        }
    }

    fn upload(id: &str, initiated: Option<i64>) -> Listed {
        Listed {
            id: id.into(),
            initiated_ms: initiated,
        }
    }

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn an_upload_open_before_the_intent_or_in_progress_is_never_ours() {
        let e = intent(&["old"], Some(T), Some(T + 100));
        let none = HashSet::new();
        assert!(!started_by(&e, &upload("old", Some(T + 50)), &none));
        let live: HashSet<String> = ["busy".to_string()].into();
        assert!(!started_by(&e, &upload("busy", Some(T + 50)), &live));
        assert!(started_by(&e, &upload("new", Some(T + 50)), &live));
    }

    #[test]
    fn without_a_listing_from_before_nothing_is_ours() {
        let mut e = intent(&[], Some(T), Some(T + 100));
        e.before = None;
        assert!(!started_by(&e, &upload("x", Some(T + 50)), &HashSet::new()));
    }

    #[test]
    fn an_upload_begun_after_the_create_ended_is_another_tools() {
        let e = intent(&[], Some(T), Some(T + 1_000));
        let none = HashSet::new();
        assert!(started_by(&e, &upload("a", Some(T + 1_000)), &none));
        // The slack covers whole-second clocks.
        assert!(started_by(
            &e,
            &upload("b", Some(T + 1_000 + CLOCK_SLACK_MS)),
            &none
        ));
        assert!(!started_by(
            &e,
            &upload("c", Some(T + 1_001 + CLOCK_SLACK_MS)),
            &none
        ));
        assert!(!started_by(&e, &upload("d", Some(T + 3_600_000)), &none));
    }

    #[test]
    fn a_create_that_never_answered_is_bounded_by_its_timeout() {
        let e = intent(&[], Some(T), None);
        let none = HashSet::new();
        let limit = T + CREATE_TIMEOUT.as_millis() as i64 + CLOCK_SLACK_MS;
        assert!(started_by(&e, &upload("a", Some(limit)), &none));
        assert!(!started_by(&e, &upload("b", Some(limit + 1)), &none));
    }

    #[test]
    fn start_times_from_before_the_listing_are_not_believed() {
        // moto reports every upload as begun on 2010-11-10: the listing decides.
        let e = intent(&["old"], Some(T), Some(T + 100));
        let none = HashSet::new();
        let moto = 1_289_422_113_000;
        assert!(started_by(&e, &upload("new", Some(moto)), &none));
        assert!(!started_by(&e, &upload("old", Some(moto)), &none));
        // No times at all: the same.
        assert!(started_by(&e, &upload("new", None), &none));
        let mut no_date = e.clone();
        no_date.listed_at_ms = None;
        assert!(started_by(&no_date, &upload("new", Some(T + 1)), &none));
    }
}
