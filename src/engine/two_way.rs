//! A two-way execution: keeps side A and side B equal in both directions
//! without losing an edit.
//!
//! Three sorted streams are merged in one pass: A's listing, B's listing and
//! the base (what each key looked like on both sides when they last agreed,
//! [`super::base`]). A key both sides still show as recorded is done without
//! a request. Every other key goes to a worker (bounded concurrency), which
//! settles what each side did (a HEAD where a listing cannot tell), decides
//! ([`super::three_way::decide`]) and acts: copies and conflict resolutions
//! at once, deletions only after the pass, once the mass-delete guard has
//! seen how many there are (they wait in a spool file, so memory does not
//! grow with them). The base moves per key only after that key's copy or
//! delete succeeded and was verified.
//!
//! Before writing over a side's version or deleting it, the worker looks at
//! it again: one changed since it was listed is left for the next run
//! (reported), so an edit made during the run is not overwritten (the
//! window left is the one copy or delete itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::stream::{BoxStream, Peekable, StreamExt};
use tokio::sync::watch;

use super::base::{Base, BaseError, BaseRow};
use super::clash::ClashFilter;
use super::diff::{
    decide_with_info, head, meta_to_write, per_key_error, refusal, CopyReason, Head,
};
use super::filter::Filter;
use super::report::{Counters, ExecutionSummary, ObjectRecord, PhaseDurations, Report, Status};
use super::run::{conclude, ms, summary, verify_whole, Clock, ExecutionRequest, TaskOptions};
use super::spool::Spool;
use super::three_way::{
    conflict_name, conflicted_key, decide, fingerprint, listed_state, matches_base, mtime_of,
    winner, ConflictPolicy, Decision, Side, SideState, TwoWayOptions,
};
use super::throttle::Throttle;
use super::transfer::{info_of, with_retries, Transfer, VerifyMode};
use crate::location::meta::system_time_to_ns;
use crate::location::{Checksum, Entry, Location, LocationError, ObjectInfo};

/// What a side holds under a conflict name.
enum Held {
    Nothing,
    /// The losing version itself.
    This,
    Other,
    /// It could not be looked at (why): nothing is overwritten unseen.
    Unknown(String),
}

/// One key that needs a worker.
struct Item {
    key: String,
    a: Option<Entry>,
    b: Option<Entry>,
    base: Option<BaseRow>,
    /// Closed when this item's worker is done (dropped with the item): a
    /// key listed on both sides and changed may be a conflict, whose
    /// resolution writes `KEY.conflict-…` names.
    _done: Option<watch::Sender<()>>,
    /// For a conflict-copy name: closed when the worker of the key it is a
    /// copy of is done (that worker may write this name).
    after: Option<watch::Receiver<()>>,
}

/// A deletion waiting for the mass-delete guard.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingDelete {
    key: String,
    on_b: bool,
    size: u64,
    etag: Option<String>,
    modified_s: Option<i64>,
    mtime_ns: Option<String>,
    mode: Option<u32>,
    reason: String,
}

impl PendingDelete {
    fn listed(&self) -> Entry {
        Entry {
            key: self.key.clone(),
            size: self.size,
            modified: self
                .modified_s
                .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.max(0) as u64)),
            etag: self.etag.clone(),
            meta: self.mtime_ns.as_ref().map(|n| crate::location::PosixMeta {
                mtime_ns: n.parse().ok(),
                mode: self.mode,
                ..Default::default()
            }),
        }
    }
}

/// Counts seen by the merge, for the guards.
#[derive(Default)]
struct Seen {
    listed_a: AtomicU64,
    listed_b: AtomicU64,
    deletes_a: AtomicU64,
    deletes_b: AtomicU64,
}

impl Seen {
    fn listed(&self, side: Side) {
        Counters::add(
            match side {
                Side::A => &self.listed_a,
                Side::B => &self.listed_b,
            },
            1,
        );
    }
}

/// Everything the workers of one two-way execution share.
struct Pair {
    a: Arc<dyn Location>,
    b: Arc<dyn Location>,
    base: Arc<Base>,
    report: Arc<Report>,
    counters: Arc<Counters>,
    throttle: Option<Arc<Throttle>>,
    verify: VerifyMode,
    dry_run: bool,
    policy: ConflictPolicy,
    seen: Seen,
    /// The deletions waiting for the guard (none in a dry run).
    spool: Option<Spool<PendingDelete>>,
    /// The first error that must end the execution (a base that cannot
    /// be written, a spool that cannot be written).
    fatal: Mutex<Option<String>>,
    /// Conflict names this execution writes: their own keys are left to
    /// the next run (see `Item::after`).
    conflict_names: Mutex<std::collections::HashSet<String>>,
    privileges: crate::location::privilege::Privileges,
}

fn record(key: &str, action: &'static str, result: &'static str, reason: String) -> ObjectRecord {
    ObjectRecord {
        key: key.to_string(),
        action,
        result,
        bytes: 0,
        reason: Some(reason),
        error: None,
        checksum: None,
        verified: false,
        kind: None,
        dropped: None,
    }
}

fn copy_action(to: Side) -> &'static str {
    match to {
        Side::B => "copy-a-to-b",
        Side::A => "copy-b-to-a",
    }
}

/// Whether what a side holds now is still what its listing showed.
fn still_as_listed(listed: Option<&Entry>, now: Option<&ObjectInfo>) -> bool {
    let (e, i) = match (listed, now) {
        (None, None) => return true,
        (Some(e), Some(i)) => (e, i),
        _ => return false,
    };
    let secs = |t: std::time::SystemTime| system_time_to_ns(t).div_euclid(1_000_000_000);
    let same = |a: Option<String>, b: Option<String>| a.zip(b).is_none_or(|(a, b)| a == b);
    let local = e.meta.map(|m| (m.mtime_ns, m.mode));
    e.size == i.size
        && same(e.etag.clone(), i.etag.clone())
        && same(
            e.modified.map(|t| secs(t).to_string()),
            i.modified.map(|t| secs(t).to_string()),
        )
        && local
            .is_none_or(|(t, m)| t == i.meta.mtime_ns && m.is_none_or(|m| Some(m) == i.meta.mode))
}

impl Pair {
    fn loc(&self, side: Side) -> &Arc<dyn Location> {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn transfer(&self, from: Side, to: Side) -> Transfer {
        Transfer {
            src: self.loc(from).clone(),
            dst: self.loc(to).clone(),
            counters: self.counters.clone(),
            report: self.report.clone(),
            throttle: self.throttle.clone(),
            verify: self.verify,
            dry_run: self.dry_run,
            cache: None,
            privileges: self.privileges,
        }
    }

    fn fail_fatally(&self, e: impl ToString) {
        crate::lock(&self.fatal).get_or_insert(e.to_string());
    }

    fn base_write(&self, r: Result<(), BaseError>) {
        if let Err(e) = r {
            self.fail_fatally(e);
        }
    }

    async fn explain(&self, e: &LocationError) -> String {
        super::transfer::explain_with(e, &[self.a.as_ref(), self.b.as_ref()]).await
    }

    fn failed(&self, key: &str, action: &'static str, reason: String, error: String) {
        Counters::add(&self.counters.files_failed, 1);
        let mut r = record(key, action, "failed", reason);
        r.error = Some(error);
        self.report.record(r);
    }

    /// What `side` did to the key since the base, with its stored metadata
    /// when it had to be read.
    async fn settle(
        &self,
        side: Side,
        entry: Option<&Entry>,
        base: Option<&BaseRow>,
    ) -> Result<(SideState, Option<ObjectInfo>), LocationError> {
        if let Some(s) = listed_state(entry, base, side) {
            return Ok((s, None));
        }
        let (Some(e), Some(b)) = (entry, base) else {
            return Ok((SideState::Changed, None));
        };
        let loc = self.loc(side).as_ref();
        let info = with_retries(|| info_of(loc, e)).await?;
        let state = if matches_base(&info, b) {
            SideState::Unchanged
        } else {
            SideState::Changed
        };
        Ok((state, Some(info)))
    }

    async fn info(
        &self,
        side: Side,
        e: &Entry,
        known: Option<ObjectInfo>,
    ) -> Result<ObjectInfo, LocationError> {
        match known {
            Some(i) => Ok(i),
            None => {
                let loc = self.loc(side).as_ref();
                with_retries(|| info_of(loc, e)).await
            }
        }
    }

    async fn run(&self, mut item: Item) {
        let key = item.key.clone();
        if let Some(mut after) = item.after.take() {
            // Never sent: returns once the sender is dropped.
            let _ = after.changed().await;
            if crate::lock(&self.conflict_names).contains(&key) {
                // Its versions on both sides are the ones just written; the
                // next run records them (a conflict copy is first seen so).
                Counters::add(&self.counters.files_skipped, 1);
                let why = "a conflict copy this execution wrote; recorded by the next run";
                return self
                    .report
                    .record(record(&key, "skip", "skipped", why.into()));
            }
        }
        let settled = futures::try_join!(
            self.settle(Side::A, item.a.as_ref(), item.base.as_ref()),
            self.settle(Side::B, item.b.as_ref(), item.base.as_ref()),
        );
        let ((sa, ia), (sb, ib)) = match settled {
            Ok(s) => s,
            Err(LocationError::NotFound { location, .. }) => {
                // Gone since it was listed: the next run sees what is left.
                let side = if location == self.a.describe() {
                    Side::A
                } else {
                    Side::B
                };
                return self.left_for_next_run(&key, side, "skip");
            }
            Err(e) => {
                let why = self.explain(&e).await;
                return self.failed(&key, "skip", "cannot tell what changed".into(), why);
            }
        };
        match decide(sa, sb) {
            Decision::Nothing => self.unchanged(&item),
            Decision::Forget => {
                if !self.dry_run {
                    self.base_write(self.base.forget(&key));
                }
            }
            Decision::Copy {
                from,
                reason,
                conflict,
            } => {
                if conflict {
                    Counters::add(&self.counters.files_conflicted, 1);
                }
                let (entry, info) = match from {
                    Side::A => (item.a.as_ref(), ia),
                    Side::B => (item.b.as_ref(), ib),
                };
                let Some(entry) = entry else { return };
                let target = match from {
                    Side::A => item.b.as_ref(),
                    Side::B => item.a.as_ref(),
                };
                self.copy_over(from, entry, info, target, reason).await;
            }
            Decision::Delete { on, reason } => {
                let listed = match on {
                    Side::A => item.a.as_ref(),
                    Side::B => item.b.as_ref(),
                };
                if let Some(e) = listed {
                    self.plan_delete(on, e, reason);
                }
            }
            Decision::Compare => self.compare(item, ia, ib).await,
        }
    }

    /// Both sides as recorded (fingerprints maybe refreshed): nothing to do.
    fn unchanged(&self, item: &Item) {
        Counters::add(&self.counters.files_skipped, 1);
        let (Some(base), Some(a), Some(b)) = (&item.base, &item.a, &item.b) else {
            return;
        };
        let fresh = BaseRow {
            a_fp: fingerprint(a),
            b_fp: fingerprint(b),
            ..base.clone()
        };
        if fresh != *base && !self.dry_run {
            self.base_write(self.base.record(&fresh));
        }
    }

    /// Copies `from`'s version over the other side's (`target`, as listed),
    /// after checking the target is still as listed; records the base.
    async fn copy_over(
        &self,
        from: Side,
        entry: &Entry,
        info: Option<ObjectInfo>,
        target: Option<&Entry>,
        reason: &str,
    ) {
        let to = from.other();
        let action = copy_action(to);
        let mut r = record(&entry.key, action, "ok", reason.to_string());
        r.bytes = entry.size;
        Counters::add(&self.counters.estimated_files, 1);
        Counters::add(&self.counters.estimated_bytes, entry.size);
        if self.dry_run {
            r.result = "dry-run";
            return self.report.record(r);
        }
        if !self.unchanged_since_listed(to, &entry.key, target).await {
            return self.left_for_next_run(&entry.key, to, action);
        }
        let meta = meta_to_write(entry, info.as_ref());
        match self
            .transfer(from, to)
            .copy_to(entry, info, &entry.key)
            .await
        {
            Ok((out, verified, dropped)) => {
                self.copied(to, out.bytes, verified);
                r.checksum = out.stored.map(|c| c.to_string());
                r.verified = verified;
                r.dropped = dropped;
                self.record_copied(from, entry, &meta, out.crc32c).await;
                self.report.record(r);
            }
            Err(LocationError::Unsupported { message, .. }) => {
                super::transfer::skipped_unsupported(&self.counters, &mut r, message);
                self.report.record(r);
            }
            Err(e) => {
                if !self
                    .unchanged_since_listed(from, &entry.key, Some(entry))
                    .await
                {
                    // Changed or gone while we copied it (an editor's temp
                    // file, a busy folder): not an error; the next run sees it.
                    return self.left_for_next_run(&entry.key, from, action);
                }
                let why = self.explain(&e).await;
                self.failed(&entry.key, action, reason.to_string(), why);
            }
        }
    }

    /// The base after `entry` was copied from side `from` to the other:
    /// the source as listed, the copy as its side will list it and as it
    /// was stored (looked at once now; when that fails, what was written).
    async fn record_copied(
        &self,
        from: Side,
        entry: &Entry,
        meta: &crate::location::PosixMeta,
        crc32c: Option<u32>,
    ) {
        let from_fp = fingerprint(entry);
        let (to_fp, stored) = self.fingerprint_now(from.other(), &entry.key).await;
        let (a_fp, b_fp) = match from {
            Side::A => (from_fp, to_fp),
            Side::B => (to_fp, from_fp),
        };
        // The copy's own metadata is the agreed version's: a server-side
        // copy keeps what the source stored, which the listing did not show.
        let row = match stored {
            Some(i) => BaseRow {
                key: entry.key.clone(),
                a_fp,
                b_fp,
                size: i.size,
                mtime_ns: mtime_of(&i),
                mode: i.meta.mode,
                uid: i.meta.uid,
                gid: i.meta.gid,
                crc32c: crc32c.or(match i.checksum {
                    Some(Checksum::Crc32c(c)) => Some(c),
                    _ => None,
                }),
            },
            None => BaseRow {
                key: entry.key.clone(),
                a_fp,
                b_fp,
                size: entry.size,
                mtime_ns: meta.mtime_ns,
                mode: meta.mode,
                uid: meta.uid,
                gid: meta.gid,
                crc32c,
            },
        };
        self.base_write(self.base.record(&row));
    }

    /// What `side` holds for `key` now (a stat), with the fingerprint its
    /// listing will show (a listing without ETags matches it too, see
    /// `three_way::listed_state`).
    async fn fingerprint_now(&self, side: Side, key: &str) -> (Option<String>, Option<ObjectInfo>) {
        let loc = self.loc(side).as_ref();
        let Ok(Some(info)) = with_retries(|| loc.stat(key)).await else {
            return (None, None);
        };
        let (etag, meta) = if loc.keys_are_paths() {
            (None, Some(info.meta))
        } else {
            (info.etag.clone(), None)
        };
        let fp = fingerprint(&Entry {
            key: key.to_string(),
            size: info.size,
            modified: info.modified,
            etag,
            meta,
        });
        (fp, Some(info))
    }

    fn copied(&self, to: Side, bytes: u64, verified: bool) {
        let c = &self.counters;
        Counters::add(&c.files_transferred, 1);
        Counters::add(&c.bytes_written, bytes);
        Counters::add(
            match to {
                Side::B => &c.files_transferred_a_to_b,
                Side::A => &c.files_transferred_b_to_a,
            },
            1,
        );
        if verified {
            Counters::add(&c.files_verified, 1);
        }
    }

    /// Whether `side` still holds what it listed for `key` (a marker has
    /// no content to lose, and some servers cannot HEAD one).
    async fn unchanged_since_listed(&self, side: Side, key: &str, listed: Option<&Entry>) -> bool {
        if key.ends_with('/') {
            return true;
        }
        let loc = self.loc(side).as_ref();
        match with_retries(|| loc.stat(key)).await {
            Ok(now) => still_as_listed(listed, now.as_ref()),
            Err(_) => false,
        }
    }

    fn left_for_next_run(&self, key: &str, side: Side, action: &'static str) {
        Counters::add(&self.counters.files_skipped, 1);
        let why = format!(
            "changed on side {} while this execution ran; left for the next one",
            side.letter()
        );
        tracing::info!(key, "{why}");
        self.report.record(record(key, action, "skipped", why));
    }

    fn plan_delete(&self, on: Side, listed: &Entry, reason: &str) {
        let action = match on {
            Side::A => "delete-a",
            Side::B => "delete-b",
        };
        Counters::add(
            match on {
                Side::A => &self.seen.deletes_a,
                Side::B => &self.seen.deletes_b,
            },
            1,
        );
        if self.dry_run {
            return self
                .report
                .record(record(&listed.key, action, "dry-run", reason.to_string()));
        }
        let pending = PendingDelete {
            key: listed.key.clone(),
            on_b: on == Side::B,
            size: listed.size,
            etag: listed.etag.clone(),
            modified_s: listed
                .modified
                .map(|t| system_time_to_ns(t).div_euclid(1_000_000_000) as i64),
            mtime_ns: listed.meta.and_then(|m| m.mtime_ns).map(|n| n.to_string()),
            mode: listed.meta.and_then(|m| m.mode),
            reason: reason.to_string(),
        };
        let written = match &self.spool {
            Some(spool) => spool.push(&pending),
            None => Err("no spool for the pending deletions".into()),
        };
        if let Err(e) = written {
            self.fail_fatally(e);
        }
    }

    /// Both sides changed (or were created): equal content is recorded,
    /// different content is a conflict.
    async fn compare(&self, item: Item, ia: Option<ObjectInfo>, ib: Option<ObjectInfo>) {
        let (Some(a), Some(b)) = (item.a.as_ref(), item.b.as_ref()) else {
            return;
        };
        let infos = futures::try_join!(self.info(Side::A, a, ia), self.info(Side::B, b, ib));
        let (ia, ib) = match infos {
            Ok(i) => i,
            Err(e) => {
                let why = self.explain(&e).await;
                return self.failed(&item.key, "conflict", "changed on both sides".into(), why);
            }
        };
        // Both changed since an agreed version: look-alikes (same size and
        // mtime) are compared by their bytes, as two edits may keep both.
        let strict = item.base.is_some();
        if self.same_content(&item.key, &ia, &ib, strict).await {
            Counters::add(&self.counters.files_skipped, 1);
            if !self.dry_run {
                self.base_write(self.base.record(&BaseRow {
                    key: item.key.clone(),
                    a_fp: fingerprint(a),
                    b_fp: fingerprint(b),
                    size: ia.size,
                    mtime_ns: mtime_of(&ia),
                    // Each from whichever side knows it (an S3 object a
                    // plain PUT wrote has no mode or owner).
                    mode: ia.meta.mode.or(ib.meta.mode),
                    uid: ia.meta.uid.or(ib.meta.uid),
                    gid: ia.meta.gid.or(ib.meta.gid),
                    crc32c: None,
                }));
            }
            let why = "equal on both sides".to_string();
            return self.report.record(record(&item.key, "record", "ok", why));
        }
        Counters::add(&self.counters.files_conflicted, 1);
        self.conflict(a, b, ia, ib).await;
    }

    /// Equal checksums are equal content; so are equal sizes and times,
    /// unless `strict`; equal sizes otherwise are compared by CRC32C before
    /// calling it a conflict.
    async fn same_content(
        &self,
        key: &str,
        ia: &ObjectInfo,
        ib: &ObjectInfo,
        strict: bool,
    ) -> bool {
        if key.ends_with('/') {
            return true;
        }
        let by_checksum = matches!(
            (ia.checksum, ib.checksum),
            (Some(Checksum::Crc32c(_)), Some(Checksum::Crc32c(_)))
        );
        // Content only: metadata differences are the merge's business.
        let content = decide_with_info(ia, ib).filter(|r| *r != CopyReason::MetadataDiffers);
        match content {
            None if by_checksum || !strict => return true,
            None | Some(CopyReason::MtimeDiffers) => {}
            Some(_) => return false,
        }
        // Same size, other times: common on a first run over trees copied
        // by a tool that kept no mtime. Compare the bytes' CRC32C (the
        // store's own when it keeps a whole-object one, else read) rather
        // than make conflict copies of equal files.
        let (a, b) = futures::join!(
            content_crc32c(self.a.as_ref(), key, ia),
            content_crc32c(self.b.as_ref(), key, ib),
        );
        matches!((a, b), (Some(x), Some(y)) if x == y)
    }

    /// Different changes on both sides, settled by the policy.
    async fn conflict(&self, a: &Entry, b: &Entry, ia: ObjectInfo, ib: ObjectInfo) {
        let w = winner(self.policy, &ia, &ib);
        let l = w.other();
        let (we, wi, le, li) = match w {
            Side::A => (a, ia, b, ib),
            Side::B => (b, ib, a, ia),
        };
        let key = &we.key;
        // keep-both: the name the losing version is kept under, and the
        // sides that still need it written there.
        let kept = match self.policy {
            ConflictPolicy::KeepBoth => match self.conflict_copy_name(key, l, &li).await {
                Ok(k) => Some(k),
                Err(why) => {
                    return self.failed(key, "conflict", "changed on both sides".into(), why)
                }
            },
            _ => None,
        };
        let reason = match &kept {
            Some((name, _)) => format!(
                "changed on both sides: {}'s version keeps the name, {}'s is kept on both sides as `{name}`",
                side_name(w),
                side_name(l)
            ),
            None => format!(
                "changed on both sides: {}'s version wins ({:?}); {}'s is overwritten",
                side_name(w),
                self.policy,
                side_name(l)
            ),
        };
        tracing::warn!(key = %key, "{reason}");
        let mut r = record(key, "conflict", "ok", reason.clone());
        if self.dry_run {
            r.result = "dry-run";
            return self.report.record(r);
        }
        if !self.unchanged_since_listed(l, key, Some(le)).await {
            return self.left_for_next_run(key, l, "conflict");
        }
        if let Some((name, write)) = &kept {
            crate::lock(&self.conflict_names).insert(name.clone());
            // The losing version first goes to its conflict name on both
            // sides; only then is its name overwritten.
            for &to in write {
                match self
                    .transfer(l, to)
                    .copy_to(le, Some(li.clone()), name)
                    .await
                {
                    Ok((out, verified, _)) => self.copied(to, out.bytes, verified),
                    Err(e) => {
                        let why = self.explain(&e).await;
                        return self.failed(key, "conflict", reason, why);
                    }
                }
            }
        }
        let meta = meta_to_write(we, Some(&wi));
        match self.transfer(w, l).copy_to(we, Some(wi), key).await {
            Ok((out, verified, dropped)) => {
                self.copied(l, out.bytes, verified);
                r.dropped = dropped;
                self.record_copied(w, we, &meta, out.crc32c).await;
                self.report.record(r);
            }
            Err(e) => {
                let why = self.explain(&e).await;
                self.failed(key, "conflict", reason, why);
            }
        }
    }

    /// The name the losing version `li` of `key` (on side `l`) is kept under
    /// on both sides: [`conflict_name`] of its own mtime or, where a side
    /// holds another version under that name (an earlier conflict's copy:
    /// S3 times are whole seconds), the first later millisecond whose name
    /// is free on both sides or holds this version (written by a resolution
    /// a killed run began); with the sides that still need it written.
    async fn conflict_copy_name(
        &self,
        key: &str,
        l: Side,
        li: &ObjectInfo,
    ) -> Result<(String, Vec<Side>), String> {
        let t = mtime_of(li);
        let tries = if t.is_some() { CONFLICT_NAME_TRIES } else { 1 };
        for bump in 0..tries {
            let name = conflict_name(key, l, t.map(|t| t + i128::from(bump) * 1_000_000));
            let mut write = Vec::new();
            let mut taken = false;
            for to in [l, l.other()] {
                match self.under_name(to, &name, (l, key, li)).await {
                    Held::This => {}
                    Held::Nothing => write.push(to),
                    Held::Other => {
                        taken = true;
                        break;
                    }
                    Held::Unknown(why) => return Err(why),
                }
            }
            if !taken {
                return Ok((name, write));
            }
        }
        Err(format!(
            "the conflict names of `{key}` from `{}` on are all taken by other versions",
            conflict_name(key, l, t)
        ))
    }

    /// What `side` holds under `name`, against the version `of` (side, key,
    /// what it stores): the same version has the same size, and the same
    /// ETag, or else the same mtime and CRC32C.
    async fn under_name(&self, side: Side, name: &str, of: (Side, &str, &ObjectInfo)) -> Held {
        let (from, key, info) = of;
        let loc = self.loc(side).as_ref();
        let now = match with_retries(|| loc.stat(name)).await {
            Ok(Some(now)) => now,
            Ok(None) => return Held::Nothing,
            Err(e) => return Held::Unknown(self.explain(&e).await),
        };
        let same = now.size == info.size
            && match (&now.etag, &info.etag) {
                (Some(x), Some(y)) => x == y,
                _ => {
                    let same_time = matches!(
                        (mtime_of(&now), mtime_of(info)),
                        (Some(x), Some(y)) if x == y
                    );
                    same_time && {
                        let (x, y) = futures::join!(
                            content_crc32c(loc, name, &now),
                            content_crc32c(self.loc(from).as_ref(), key, info),
                        );
                        matches!((x, y), (Some(x), Some(y)) if x == y)
                    }
                }
            };
        if same {
            Held::This
        } else {
            Held::Other
        }
    }

    /// Runs the deletions the spool holds (the guard has allowed them).
    async fn run_deletes(&self, concurrency: usize) -> Result<(), String> {
        match &self.spool {
            Some(spool) => spool.for_each(concurrency, |p| self.delete(p)).await,
            None => Ok(()),
        }
    }

    async fn delete(&self, p: PendingDelete) {
        let on = if p.on_b { Side::B } else { Side::A };
        let action = if p.on_b { "delete-b" } else { "delete-a" };
        let listed = p.listed();
        if !self.unchanged_since_listed(on, &p.key, Some(&listed)).await {
            return self.left_for_next_run(&p.key, on, action);
        }
        let loc = self.loc(on).as_ref();
        match with_retries(|| loc.delete(&p.key)).await {
            Ok(()) => {
                let c = &self.counters;
                Counters::add(&c.files_deleted, 1);
                Counters::add(
                    if p.on_b {
                        &c.files_deleted_b
                    } else {
                        &c.files_deleted_a
                    },
                    1,
                );
                self.base_write(self.base.forget(&p.key));
                self.report.record(record(&p.key, action, "ok", p.reason));
            }
            Err(e) => {
                let why = self.explain(&e).await;
                self.failed(&p.key, action, p.reason, why);
            }
        }
    }

    /// The mass-delete guard: `Err` names the numbers when a side would
    /// lose more than `max_delete` allows.
    fn check_deletes(&self, opts: &TaskOptions) -> Result<(), String> {
        if opts.force {
            return Ok(());
        }
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (side, deletes, listed) in [
            (Side::A, g(&self.seen.deletes_a), g(&self.seen.listed_a)),
            (Side::B, g(&self.seen.deletes_b), g(&self.seen.listed_b)),
        ] {
            if deletes > 0 && !opts.max_delete.allows(deletes, listed) {
                return Err(format!(
                    "refused: {deletes} of the {listed} keys on side {} ({}) would be deleted, more than max_delete = {} allows; nothing was deleted (copies were made). If this is deliberate, run again with --force (a task: --override force=true) or a larger max_delete",
                    side.letter().to_ascii_uppercase(),
                    self.loc(side).describe(),
                    opts.max_delete
                ));
            }
        }
        Ok(())
    }
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::A => "side A",
        Side::B => "side B",
    }
}

type Listing<'a> = Peekable<BoxStream<'a, Result<Entry, LocationError>>>;
type BaseStream = Peekable<BoxStream<'static, Result<BaseRow, BaseError>>>;

/// Bytes read per request while checksumming a version that has no
/// whole-object checksum stored.
const CHECKSUM_CHUNK: u64 = 8 * 1024 * 1024;

/// The CRC32C of a version's bytes: the store's own whole-object checksum,
/// else computed by reading it (pinned to the ETag seen), chunk by chunk.
/// `None` when it cannot be had.
async fn content_crc32c(loc: &dyn Location, key: &str, info: &ObjectInfo) -> Option<u32> {
    if let Some(Checksum::Crc32c(c)) = info.checksum {
        return Some(c);
    }
    if info.size == 0 {
        return Some(0);
    }
    if let Ok(Some(Checksum::Crc32c(c))) = with_retries(|| loc.stored_checksum(key)).await {
        return Some(c);
    }
    let mut crc = 0u32;
    for r in crate::location::part_ranges(info.size, CHECKSUM_CHUNK) {
        let etag = info.etag.as_deref();
        let chunk = with_retries(|| loc.read_range(key, r.clone(), etag))
            .await
            .ok()?;
        crc = crc32c::crc32c_append(crc, &chunk);
    }
    Some(crc)
}

/// One step of the merge.
enum Step {
    Work(Box<Item>),
    Refused { key: String, why: String },
    Fatal(String),
    Nothing,
    End,
}

/// How many later milliseconds a conflict copy's name may move to when its
/// own is taken by another version.
const CONFLICT_NAME_TRIES: u32 = 100;

/// How many keys `Merge::resolving` holds before the finished ones are
/// dropped.
const RESOLVING_PRUNE: usize = 1024;

struct Merge<'a> {
    a: Listing<'a>,
    b: Listing<'a>,
    base: BaseStream,
    filter: Filter,
    keys_are_paths: bool,
    /// Keys whose workers may still write conflict copies: the end of each
    /// worker (pruned once closed, so it holds about `concurrency` keys).
    resolving: std::collections::HashMap<String, watch::Receiver<()>>,
}

impl Merge<'_> {
    async fn base_head(&mut self) -> Result<Option<String>, String> {
        match std::pin::Pin::new(&mut self.base).peek().await {
            None => Ok(None),
            Some(Ok(r)) => Ok(Some(r.key.clone())),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    async fn next(&mut self, pair: &Pair) -> Step {
        let (ha, hb) = (head(&mut self.a).await, head(&mut self.b).await);
        for (h, l) in [(&ha, &mut self.a), (&hb, &mut self.b)] {
            if let Head::Fatal = h {
                return match l.next().await {
                    Some(Err(e)) => Step::Fatal(pair.explain(&e).await),
                    _ => Step::Nothing,
                };
            }
        }
        let hbase = match self.base_head().await {
            Ok(h) => h,
            Err(e) => return Step::Fatal(e),
        };
        let key_of = |h: &Head| match h {
            Head::Key(k) => Some(k.clone()),
            _ => None,
        };
        let Some(key) = [key_of(&ha), key_of(&hb), hbase.clone()]
            .into_iter()
            .flatten()
            .min_by(|x, y| x.as_bytes().cmp(y.as_bytes()))
        else {
            return Step::End;
        };
        let ia = if key_of(&ha).as_deref() == Some(&key) {
            self.a.next().await
        } else {
            None
        };
        let ib = if key_of(&hb).as_deref() == Some(&key) {
            self.b.next().await
        } else {
            None
        };
        let base = if hbase.as_deref() == Some(&key) {
            self.base.next().await.and_then(Result::ok)
        } else {
            None
        };
        if !self.filter.selects(&key) {
            return Step::Nothing;
        }
        let refused = [&ia, &ib].into_iter().find_map(|i| {
            i.as_ref()
                .and_then(|r| r.as_ref().err())
                .and_then(per_key_error)
        });
        if let Some((_, why)) = refused {
            return Step::Refused { key, why };
        }
        let (a, b) = (ia.and_then(Result::ok), ib.and_then(Result::ok));
        if a.is_some() {
            pair.seen.listed(Side::A);
        }
        if b.is_some() {
            pair.seen.listed(Side::B);
        }
        if a.is_some() || b.is_some() {
            if let Some(why) = refusal(&key, self.keys_are_paths) {
                return Step::Refused { key, why };
            }
        }
        let unchanged = [(a.as_ref(), Side::A), (b.as_ref(), Side::B)]
            .into_iter()
            .all(|(e, s)| {
                base.is_some() && listed_state(e, base.as_ref(), s) == Some(SideState::Unchanged)
            });
        if unchanged {
            Counters::add(&pair.counters.files_skipped, 1);
            return Step::Nothing;
        }
        let after = conflicted_key(&key).and_then(|k| self.resolving.get(k).cloned());
        let done = (a.is_some() && b.is_some()).then(|| {
            if self.resolving.len() >= RESOLVING_PRUNE {
                self.resolving.retain(|_, rx| rx.has_changed().is_ok());
            }
            let (tx, rx) = watch::channel(());
            self.resolving.insert(key.clone(), rx);
            tx
        });
        Step::Work(Box::new(Item {
            key,
            a,
            b,
            base,
            _done: done,
            after,
        }))
    }

    /// Whether a side lists nothing while the base holds keys (an unmounted
    /// disk, a wrong prefix, a listing that shows nothing).
    async fn empty_side(&mut self) -> Result<Option<Side>, String> {
        if self.base_head().await?.is_none() {
            return Ok(None);
        }
        for side in [Side::A, Side::B] {
            let l = match side {
                Side::A => &mut self.a,
                Side::B => &mut self.b,
            };
            if matches!(head(l).await, Head::End) {
                return Ok(Some(side));
            }
        }
        Ok(None)
    }
}

/// A listing with the filter applied (errors pass: they name their key).
fn filtered<'a>(
    s: BoxStream<'a, Result<Entry, LocationError>>,
    filter: &Filter,
) -> BoxStream<'a, Result<Entry, LocationError>> {
    let f = filter.clone();
    s.filter(move |i| {
        futures::future::ready(match i {
            Ok(e) => f.selects(&e.key),
            Err(_) => true,
        })
    })
    .boxed()
}

/// Runs one two-way execution of sides `a` and `b`.
pub async fn execute(
    a: Arc<dyn Location>,
    b: Arc<dyn Location>,
    req: ExecutionRequest,
    opts: TwoWayOptions,
) -> ExecutionSummary {
    let launching_ms = ms(req.launched.elapsed());
    let fail = |detail: String| {
        let mut s = summary(&req, &a, &b, Status::Error, PhaseDurations::default(), None);
        s.error_detail = Some(detail);
        s
    };
    let Some(state_dir) = req.state_dir.clone() else {
        return fail("a two-way execution needs a state directory for its base".into());
    };
    let report = match Report::new(req.report_path.as_deref(), req.echo_dry_run) {
        Ok(r) => Arc::new(r),
        Err(e) => return fail(format!("cannot create the report file: {e}")),
    };
    let (path, swapped) = Base::path_for(&state_dir, &a.identity(), &b.identity());
    let base = match Base::open(&path, swapped, req.options.dry_run) {
        Ok(b) => Arc::new(b),
        Err(e) => return fail(e.to_string()),
    };
    // One per pair: the guards let one execution of a pair run at a time,
    // and a killed execution's spool is simply started anew.
    let spool = if req.options.dry_run {
        None
    } else {
        match Spool::create(path.with_extension("deletes.jsonl")) {
            Ok(s) => Some(s),
            Err(e) => return fail(e),
        }
    };
    let pair = Pair {
        a: a.clone(),
        b: b.clone(),
        base: base.clone(),
        report: report.clone(),
        counters: req.counters.clone(),
        throttle: req.options.bytes_per_second.map(Throttle::new),
        verify: req.options.verify_mode,
        dry_run: req.options.dry_run,
        policy: opts.conflict_policy,
        seen: Seen::default(),
        spool,
        fatal: Mutex::new(None),
        conflict_names: Mutex::default(),
        privileges: req.options.privileges,
    };
    let clock = Clock {
        start: Instant::now(),
        first_action: Mutex::new(None),
        on_phase: req.on_phase.clone(),
    };
    clock.phase(Status::Preparing);
    if !req.options.dry_run {
        for side in [&a, &b] {
            if let Err(e) = side.clean_leftovers().await {
                tracing::warn!(error = %e, "could not clean leftovers of earlier runs");
            }
        }
    }
    let outcome = transfer_phase(&pair, &req, &clock).await;
    let transfer_end = Instant::now();
    clock.phase(Status::Verifying);
    let mut fatal = outcome.err();
    if let Err(e) = base.commit() {
        fatal.get_or_insert(e.to_string());
    }
    if !req.options.dry_run {
        for side in [&a, &b] {
            let _ = side.clean_leftovers().await;
        }
    }
    let cancelled = req.cancel.load(Ordering::Relaxed);
    if fatal.is_none()
        && !cancelled
        && !req.options.dry_run
        && req.options.verify_mode == VerifyMode::PointInTimeConsistent
    {
        let t = pair.transfer(Side::A, Side::B);
        if let Err(e) = verify_whole(&t, &req).await {
            fatal = Some(e);
        }
    }
    let end = Instant::now();
    let first = crate::lock(&clock.first_action).unwrap_or(transfer_end);
    let phases = PhaseDurations {
        launching_ms,
        preparing_ms: ms(first.saturating_duration_since(clock.start)),
        transferring_ms: ms(transfer_end.saturating_duration_since(first)),
        verifying_ms: ms(end - transfer_end),
        total_ms: ms(req.launched.elapsed()),
    };
    conclude(&req, &a, &b, &report, fatal, phases)
}

/// The merge and its workers, then the guarded deletions.
async fn transfer_phase(pair: &Pair, req: &ExecutionRequest, clock: &Clock) -> Result<(), String> {
    let opts = &req.options;
    let filter = req.filter.clone();
    let (a_paths, b_paths) = (pair.a.keys_are_paths(), pair.b.keys_are_paths());
    let wrap = |s, other_is_local: bool| {
        let s = filtered(s, &filter);
        if other_is_local {
            ClashFilter::wrap(s)
        } else {
            s
        }
    };
    let base_stream = {
        let f = filter.clone();
        pair.base
            .stream()
            .filter(move |r| {
                futures::future::ready(match r {
                    Ok(row) => f.selects(&row.key),
                    Err(_) => true,
                })
            })
            .boxed()
    };
    let mut merge = Merge {
        a: wrap(pair.a.list(), b_paths).peekable(),
        b: wrap(pair.b.list(), a_paths).peekable(),
        base: base_stream.peekable(),
        filter: filter.clone(),
        keys_are_paths: a_paths || b_paths,
        resolving: Default::default(),
    };
    if !opts.force {
        if let Some(side) = merge.empty_side().await? {
            return Err(format!(
                "refused: side {} ({}) lists no keys while the base of this pair holds some; an unmounted disk, a wrong prefix or a listing without permission looks like this. Nothing was changed. If the side was emptied on purpose, run again with --force (a task: --override force=true)",
                side.letter().to_ascii_uppercase(),
                pair.loc(side).describe()
            ));
        }
    }
    let fatal: Mutex<Option<String>> = Mutex::new(None);
    let fatal_ref = &fatal;
    let items = futures::stream::unfold(merge, move |mut m| async move {
        loop {
            if req.cancel.load(Ordering::Relaxed) {
                return None;
            }
            match m.next(pair).await {
                Step::Work(item) => return Some((*item, m)),
                Step::Refused { key, why } => {
                    tracing::warn!(key = %key, reason = %why, "skipped");
                    Counters::add(&pair.counters.files_skipped, 1);
                    pair.report.record(record(&key, "skip", "skipped", why));
                }
                Step::Fatal(e) => {
                    crate::lock(fatal_ref).get_or_insert(e);
                    return None;
                }
                Step::Nothing => {}
                Step::End => return None,
            }
        }
    });
    let concurrency = req.options.concurrency.max(1);
    items
        .for_each_concurrent(concurrency, |item| async {
            clock.action_started();
            pair.run(item).await
        })
        .await;
    if let Some(e) = crate::lock(&fatal).take() {
        return Err(e);
    }
    if let Some(e) = crate::lock(&pair.fatal).take() {
        return Err(e);
    }
    if req.cancel.load(Ordering::Relaxed) || req.options.dry_run {
        return Ok(());
    }
    pair.check_deletes(opts)?;
    pair.run_deletes(concurrency).await?;
    match crate::lock(&pair.fatal).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::three_way::tests::{file, file_info};

    #[test]
    fn a_version_changed_since_listing_is_noticed() {
        let e = file("k", 10, 3);
        let mut now = file_info(3, 10);
        assert!(still_as_listed(Some(&e), Some(&now)));
        assert!(!still_as_listed(None, Some(&now)), "appeared");
        assert!(!still_as_listed(Some(&e), None), "vanished");
        now.meta.mtime_ns = Some(11);
        assert!(!still_as_listed(Some(&e), Some(&now)), "touched");
        now.meta.mtime_ns = Some(10);
        now.size = 4;
        assert!(!still_as_listed(Some(&e), Some(&now)), "grew");
    }

    #[test]
    fn a_pending_delete_round_trips_what_was_listed() {
        let e = file("k", 1_700_000_000_123_456_789, 3);
        let p = PendingDelete {
            key: e.key.clone(),
            on_b: true,
            size: e.size,
            etag: None,
            modified_s: None,
            mtime_ns: e.meta.and_then(|m| m.mtime_ns).map(|n| n.to_string()),
            mode: Some(0o100644),
            reason: "deleted-on-a".into(),
        };
        let back: PendingDelete =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        let listed = back.listed();
        assert_eq!((&listed.key, listed.size), (&e.key, e.size));
        let times = |x: &Entry| x.meta.map(|m| (m.mtime_ns, m.mode));
        assert_eq!(times(&listed), times(&e), "what the re-check compares");
    }
}
