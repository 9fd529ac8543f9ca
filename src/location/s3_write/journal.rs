//! The journal of multipart uploads: one small JSON file per upload in the
//! state directory, written before the upload exists and removed once it is
//! completed or aborted, so that every upload a run starts can be found.
//!
//! S3 gives an upload no mark of its maker, so ours are told apart by what
//! is journalled around their creation. Before CreateMultipartUpload, an
//! *intent* is written (fsynced and renamed into place): the bucket and
//! key, the uploads of that key already open at that moment (one
//! ListMultipartUploads of the key) and the server's clock then (its `Date`
//! header). The id is added when the create answers. Once the upload is
//! completed or aborted the entry is removed, unless the create may have
//! started an upload we never learnt of: it was retried (an earlier attempt
//! may have reached the server and lost its answer), failed in a way that
//! does not rule that out, or was interrupted (SIGKILL, a dropped future).
//! Such an entry stays for a *sweep* of its key (`sweep.rs`). A write that
//! is dropped, or whose abort failed, releases its entry to the clean-up.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::super::local_files::pid_alive;
use super::sweep::Listing;

/// One upload's journal entry. Entries written before intents existed have
/// only `pid`, `bucket`, `key` and `upload_id`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) pid: u32,
    pub(super) bucket: String,
    pub(super) key: String,
    /// Known once CreateMultipartUpload answered.
    #[serde(default)]
    pub(super) upload_id: Option<String>,
    /// When the intent was written (this machine's clock, ms since the
    /// epoch), for ageing only.
    #[serde(default)]
    pub(super) since_ms: Option<u64>,
    /// The key's uploads open just before our create; `None` when they
    /// could not be listed, and then no sweep can tell ours apart.
    #[serde(default)]
    pub(super) before: Option<Vec<String>>,
    /// The server's clock when `before` was listed (ms since the epoch).
    #[serde(default)]
    pub(super) listed_at_ms: Option<i64>,
    /// The server's clock when the create's last attempt was answered.
    #[serde(default)]
    pub(super) created_by_ms: Option<i64>,
    /// The create may have started uploads whose id we never learnt.
    #[serde(default)]
    pub(super) sweep: bool,
    /// No longer being written, though its process may live on.
    #[serde(default)]
    pub(super) released: bool,
}

impl Entry {
    /// Nothing left to do: no upload to abort, no key to sweep.
    pub(super) fn settled(&self) -> bool {
        self.upload_id.is_none() && !self.sweep
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Writes an entry so that a reader sees the old or the new one whole,
/// and a crash (even of the machine) keeps it.
pub(super) fn store(path: &Path, entry: &Entry) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = crate::shared::private::create_file(&tmp)?;
    f.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

/// The pid a journal file name starts with (`PID-RANDOM.json`).
fn pid_of(path: &Path) -> Option<u32> {
    path.file_name()?.to_str()?.split('-').next()?.parse().ok()
}

/// Every entry in `dir`; temp files of dead writers are removed.
pub(super) fn read(dir: &Path) -> Vec<(PathBuf, Entry)> {
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
pub(super) fn in_progress(dir: &Path, bucket: &str) -> (HashSet<String>, HashSet<String>) {
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
        let written = crate::shared::private::create_dir(dir).and_then(|()| store(&path, &entry));
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

#[cfg(test)]
mod tests {
    use super::super::sweep::Listed;
    use super::*;

    const T: i64 = 1_700_000_000_000;

    fn only_entry(dir: &Path) -> Option<Entry> {
        let all = read(dir);
        assert!(all.len() <= 1, "{all:?}");
        all.into_iter().next().map(|(_, e)| e)
    }

    fn listing(ids: &[&str]) -> Listing {
        Listing {
            uploads: ids
                .iter()
                .map(|i| Listed {
                    id: i.to_string(),
                    initiated_ms: None,
                })
                .collect(),
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
