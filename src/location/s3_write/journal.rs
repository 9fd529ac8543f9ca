//! The journal of multipart uploads, and the sweep that finds every upload
//! a run started, even one whose id it never learnt.
//!
//! S3 gives an upload no mark of its maker, so ours are told apart by what
//! is journalled around their creation. Before CreateMultipartUpload, an
//! *intent* is written to the state directory (one small JSON file per
//! upload, fsynced and renamed into place): the bucket and key, the uploads
//! of that key already open at that moment (one ListMultipartUploads of the
//! key) and the server's clock then (its `Date` header). The id is added when
//! the create answers. Once the upload is completed or aborted the entry is
//! removed, unless the create may have started an upload we never learnt
//! of: it was retried (an earlier attempt may have reached the server and
//! lost its answer), failed in a way that does not rule that out, or was
//! interrupted (SIGKILL, a dropped future). Such an entry asks for a *sweep*
//! of its key: list the key's open uploads and abort those that were not
//! open before the intent, are not in progress in a live process, and,
//! where the server's clock can tell, began before the create returned.
//! Another tool's upload is spared: for another key it is never listed; for
//! the same key it was open before our intent, or began after our create
//! ended (a server that reports no usable start times, like moto, is judged
//! by the first rule alone).
//!
//! `clean_leftovers`, at the start and the end of every run, settles the
//! entries of dead processes and those released by live ones (a cancelled
//! write, an abort that failed): known ids are aborted, keys swept. A
//! server that cannot list uploads (s3s-fs answers NotImplemented; a
//! principal without s3:ListBucketMultipartUploads is refused) still gets
//! every upload whose id was learnt aborted; the rest is left to the
//! bucket's AbortIncompleteMultipartUpload lifecycle rule.

use std::collections::{BTreeSet, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use serde::{Deserialize, Serialize};

use super::super::local::pid_alive;
use super::super::s3::S3Location;
use super::super::{LocationError, Result};

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

/// One upload's journal entry. Entries written before intents existed have
/// only `pid`, `bucket`, `key` and `upload_id`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Entry {
    pid: u32,
    bucket: String,
    key: String,
    /// Known once CreateMultipartUpload answered.
    #[serde(default)]
    upload_id: Option<String>,
    /// When the intent was written (this machine's clock, ms since the
    /// epoch), for ageing only.
    #[serde(default)]
    since_ms: Option<u64>,
    /// The key's uploads open just before our create; `None` when they
    /// could not be listed, and then no sweep can tell ours apart.
    #[serde(default)]
    before: Option<Vec<String>>,
    /// The server's clock when `before` was listed (ms since the epoch).
    #[serde(default)]
    listed_at_ms: Option<i64>,
    /// The server's clock when the create's last attempt was answered.
    #[serde(default)]
    created_by_ms: Option<i64>,
    /// The create may have started uploads whose id we never learnt.
    #[serde(default)]
    sweep: bool,
    /// No longer being written, though its process may live on.
    #[serde(default)]
    released: bool,
}

impl Entry {
    /// Nothing left to do: no upload to abort, no key to sweep.
    fn settled(&self) -> bool {
        self.upload_id.is_none() && !self.sweep
    }
}

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
        (Some(t), Some(listed)) if t + CLOCK_SLACK_MS >= listed => {
            let ended = entry
                .created_by_ms
                .unwrap_or(listed + CREATE_TIMEOUT.as_millis() as i64);
            t <= ended + CLOCK_SLACK_MS
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

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes an entry so that a reader sees the old or the new one whole,
/// and a crash (even of the machine) keeps it.
fn store(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// The pid a journal file name starts with (`PID-RANDOM.json`).
fn pid_of(path: &Path) -> Option<u32> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

/// Every entry in `dir`; temp files of dead writers are removed.
fn read(dir: &Path) -> Vec<(PathBuf, Entry)> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in read.flatten().map(|de| de.path()) {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let entry = std::fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Entry>(&b).ok());
                if let Some(entry) = entry {
                    out.push((path, entry));
                }
            }
            Some("tmp") if pid_of(&path).is_some_and(|p| !pid_alive(p)) => {
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
    out
}

/// The uploads live processes are writing into `bucket`: their ids, and
/// the keys of those whose create has not answered yet.
fn in_progress(dir: &Path, bucket: &str) -> (HashSet<String>, HashSet<String>) {
    let mut ids = HashSet::new();
    let mut creating = HashSet::new();
    for (_, e) in read(dir) {
        if e.bucket != bucket || e.released || !pid_alive(e.pid) {
            continue;
        }
        match e.upload_id {
            Some(id) => ids.insert(id),
            None => creating.insert(e.key),
        };
    }
    (ids, creating)
}

/// A multipart write's journal entry, from before its create until the
/// upload is completed or aborted. Dropped before that (the write was
/// cancelled), the entry is released for the next clean-up.
pub(super) struct Intent {
    path: Option<PathBuf>,
    entry: Entry,
    done: bool,
}

impl Intent {
    /// Journals the intent to create an upload of `key`; `before` is the
    /// key's listing just taken, if any. Without a journal (or when it
    /// cannot be written) nothing is recorded.
    pub(super) fn begin(
        dir: Option<&Path>,
        bucket: &str,
        key: &str,
        before: Option<Listing>,
    ) -> Intent {
        let entry = Entry {
            pid: std::process::id(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            since_ms: Some(now_ms()),
            listed_at_ms: before.as_ref().and_then(|l| l.server_ms),
            before: before.map(|l| l.uploads.into_iter().map(|u| u.id).collect()),
            // Until the create answers, it may have started anything.
            sweep: true,
            ..Entry::default()
        };
        let Some(dir) = dir else {
            return Intent {
                path: None,
                entry,
                done: false,
            };
        };
        let name = format!("{}-{:016x}.json", entry.pid, rand::random::<u64>());
        let path = dir.join(name);
        let written = std::fs::create_dir_all(dir).and_then(|()| store(&path, &entry));
        let path = match written {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot journal a multipart upload; a crash would leave it behind");
                None
            }
        };
        Intent {
            path,
            entry,
            done: false,
        }
    }

    /// Records the create's outcome: the id when it answered with one, the
    /// server's clock at its last answer, and whether it certainly started
    /// no other upload (`clean`: one attempt, answered with an id or a
    /// clear refusal).
    pub(super) fn created(&mut self, id: Option<&str>, clean: bool, server_ms: Option<i64>) {
        self.entry.upload_id = id.map(str::to_string);
        self.entry.created_by_ms = server_ms;
        self.entry.sweep = !clean;
        self.save();
    }

    /// The write is over; `upload_gone` when its upload was completed or
    /// aborted (or never created). What is left (an upload to abort, a key
    /// to sweep) stays journalled, released for the next clean-up.
    pub(super) fn settle(mut self, upload_gone: bool) {
        self.done = true;
        if upload_gone {
            self.entry.upload_id = None;
        }
        if self.entry.settled() {
            if let Some(p) = &self.path {
                let _ = std::fs::remove_file(p);
            }
        } else {
            self.entry.released = true;
            self.save();
        }
    }

    fn save(&self) {
        if let Some(p) = &self.path {
            if let Err(e) = store(p, &self.entry) {
                tracing::warn!(path = %p.display(), error = %e, "cannot update the multipart upload journal");
            }
        }
    }
}

impl Drop for Intent {
    fn drop(&mut self) {
        if !self.done {
            self.entry.released = true;
            self.save();
        }
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

    fn only_entry(dir: &Path) -> Option<Entry> {
        let all = read(dir);
        assert!(all.len() <= 1, "{all:?}");
        all.into_iter().next().map(|(_, e)| e)
    }

    fn listing(ids: &[&str]) -> Listing {
        Listing {
            uploads: ids.iter().map(|i| upload(i, None)).collect(),
            server_ms: Some(T),
        }
    }

    #[test]
    fn a_clean_create_leaves_no_entry_once_the_upload_is_settled() {
        let d = tempfile::tempdir().unwrap();
        let mut i = Intent::begin(Some(d.path()), "b", "p/k", Some(listing(&["x"])));
        let e = only_entry(d.path()).expect("the intent is journalled before the create");
        assert_eq!((e.upload_id, e.sweep, e.released), (None, true, false));
        assert_eq!(e.before, Some(vec!["x".to_string()]));
        assert_eq!(e.listed_at_ms, Some(T));
        i.created(Some("u1"), true, Some(T + 5));
        let e = only_entry(d.path()).unwrap();
        assert_eq!((e.upload_id.as_deref(), e.sweep), (Some("u1"), false));
        i.settle(true);
        assert_eq!(only_entry(d.path()), None);
    }

    #[test]
    fn a_retried_create_keeps_its_intent_for_a_sweep() {
        let d = tempfile::tempdir().unwrap();
        let mut i = Intent::begin(Some(d.path()), "b", "p/k", Some(listing(&[])));
        i.created(Some("u2"), false, Some(T + 5));
        i.settle(true);
        let e = only_entry(d.path()).expect("kept for the sweep");
        assert_eq!(
            (e.upload_id, e.sweep, e.released, e.created_by_ms),
            (None, true, true, Some(T + 5))
        );
    }

    #[test]
    fn a_failed_abort_or_a_dropped_write_is_released_for_the_next_clean_up() {
        let d = tempfile::tempdir().unwrap();
        let mut i = Intent::begin(Some(d.path()), "b", "k", None);
        i.created(Some("u3"), true, None);
        i.settle(false);
        let e = only_entry(d.path()).unwrap();
        assert_eq!((e.upload_id.as_deref(), e.released), (Some("u3"), true));
        let _ = std::fs::remove_dir_all(d.path());

        let d = tempfile::tempdir().unwrap();
        let i = Intent::begin(Some(d.path()), "b", "k", None);
        drop(i);
        let e = only_entry(d.path()).unwrap();
        assert_eq!((e.upload_id, e.sweep, e.released), (None, true, true));
    }

    #[test]
    fn entries_of_older_versions_still_name_their_upload() {
        let old = r#"{"pid":7,"bucket":"b","key":"k","upload_id":"u"}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(e.upload_id.as_deref(), Some("u"));
        assert!(!e.sweep && !e.released && e.before.is_none());
    }

    #[test]
    fn temp_files_of_dead_writers_are_removed_and_never_read() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(format!("{}-1.tmp", u32::MAX - 1));
        let mine = d.path().join(format!("{}-2.tmp", std::process::id()));
        std::fs::write(&dead, b"{").unwrap();
        std::fs::write(&mine, b"{").unwrap();
        assert!(read(d.path()).is_empty());
        assert!(!dead.exists() && mine.exists());
    }
}
