//! What the last executions between the same two locations saw as equal.
//!
//! When sizes agree and the listings cannot settle "changed or not" (an S3
//! listing carries no POSIX mtime), settling it costs a HEAD per object. This
//! cache remembers, per key, a fingerprint of each side (ETag + size for an
//! object, mtime + size for a file) at the moment both were known equal —
//! after a copy, or after a check. If both listings still show those same
//! fingerprints, nothing changed on either side since, and no request is
//! needed. Any change to either side changes its fingerprint, so a stale
//! record can only cost a HEAD, never hide a change.
//!
//! It lives in SQLite (one file per source/destination pair in the state
//! directory), so its memory does not grow with the number of keys. It is a
//! cache: written without fsync, and deleting it is always safe.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use crate::location::Entry;

/// A side's identity as a listing shows it: the ETag, else the file's mtime
/// and permission bits (a chmod is a change), else LastModified (some
/// servers list no ETags); always with the size.
pub fn fingerprint(e: &Entry) -> Option<String> {
    if let Some(etag) = &e.etag {
        return Some(format!("etag:{etag}:{}", e.size));
    }
    if let Some(m) = e.meta {
        if let Some(ns) = m.mtime_ns {
            return Some(match m.mode {
                Some(mode) => format!("mtime:{ns}:{}:{:o}", e.size, mode & 0o7777),
                None => format!("mtime:{ns}:{}", e.size),
            });
        }
    }
    let t = crate::location::meta::system_time_to_ns(e.modified?);
    Some(format!("modified:{t}:{}", e.size))
}

/// A source's fingerprint: as [`fingerprint`], with LastModified beside an
/// ETag, because rewriting an object's metadata in place keeps a single-part
/// ETag (a destination's written objects are fingerprinted without it: a
/// PUT's answer does not tell it).
pub fn source_fingerprint(e: &Entry) -> Option<String> {
    let fp = fingerprint(e)?;
    match (&e.etag, e.modified) {
        (Some(_), Some(t)) => Some(format!(
            "{fp}:{}",
            crate::location::meta::system_time_to_ns(t).div_euclid(1_000_000_000)
        )),
        _ => Some(fp),
    }
}

#[derive(Debug)]
pub struct PairCache {
    conn: Mutex<Connection>,
    /// Dry runs read but never write.
    read_only: bool,
}

/// Waits this long for another process holding the file.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl PairCache {
    /// The cache file of one source/destination pair under `state_dir`.
    pub fn path_for(state_dir: &Path, src: &str, dst: &str) -> PathBuf {
        let a = crc32c::crc32c(format!("{src}\n{dst}").as_bytes());
        let b = crc32c::crc32c(format!("{dst}\n{src}").as_bytes());
        state_dir
            .join("pairs")
            .join(format!("{a:08x}{b:08x}.sqlite"))
    }

    /// Opens the cache; a damaged file (a crash without fsync can leave one)
    /// is deleted and made anew, which is always safe for a cache.
    pub fn open(path: &Path, read_only: bool) -> rusqlite::Result<PairCache> {
        if let Some(dir) = path.parent() {
            let _ = crate::shared::private::create_dir(dir);
        }
        match Self::open_checked(path, read_only) {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "pair cache damaged; starting it anew");
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
                Self::open_checked(path, read_only)
            }
        }
    }

    fn open_checked(path: &Path, read_only: bool) -> rusqlite::Result<PairCache> {
        if !read_only {
            crate::shared::private::prepare_sqlite(path)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // A cache: losing the last writes to a crash only costs HEADs later.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
             CREATE TABLE IF NOT EXISTS pairs (key TEXT PRIMARY KEY, src TEXT NOT NULL, dst TEXT NOT NULL) WITHOUT ROWID;",
        )?;
        // Damage past the first page shows only when read: check the
        // structure once here rather than fail every lookup silently.
        let ok: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(ok),
            ));
        }
        Ok(PairCache {
            conn: Mutex::new(conn),
            read_only,
        })
    }

    /// True when both sides still show the fingerprints recorded as equal.
    pub fn unchanged(&self, src: &Entry, dst: &Entry) -> bool {
        let (Some(s), Some(d)) = (source_fingerprint(src), fingerprint(dst)) else {
            return false;
        };
        let Ok(conn) = self.conn.lock() else {
            return false;
        };
        let row: Option<(String, String)> = conn
            .prepare_cached("SELECT src, dst FROM pairs WHERE key = ?1")
            .and_then(|mut st| {
                st.query_row(params![src.key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .unwrap_or(None);
        row == Some((s, d))
    }

    /// Records that `src` and `dst` (as listed, or as just written) are equal.
    pub fn record(&self, key: &str, src: Option<String>, dst: Option<String>) {
        if self.read_only {
            return;
        }
        let Ok(conn) = self.conn.lock() else { return };
        let res = match (src, dst) {
            (Some(s), Some(d)) => conn
                .prepare_cached("INSERT OR REPLACE INTO pairs (key, src, dst) VALUES (?1, ?2, ?3)")
                .and_then(|mut st| st.execute(params![key, s, d])),
            // Not fingerprintable: forget whatever was known.
            _ => conn
                .prepare_cached("DELETE FROM pairs WHERE key = ?1")
                .and_then(|mut st| st.execute(params![key])),
        };
        if let Err(e) = res {
            tracing::debug!(error = %e, "pair cache write failed (only costs a HEAD later)");
        }
    }

    pub fn forget(&self, key: &str) {
        self.record(key, None, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::PosixMeta;

    fn object(key: &str, etag: &str, size: u64) -> Entry {
        Entry {
            key: key.into(),
            size,
            modified: None,
            etag: Some(etag.into()),
            meta: None,
        }
    }

    fn file(key: &str, ns: i128, size: u64) -> Entry {
        let meta = PosixMeta {
            mtime_ns: Some(ns),
            ..Default::default()
        };
        Entry {
            key: key.into(),
            size,
            modified: None,
            etag: None,
            meta: Some(meta),
        }
    }

    #[test]
    fn a_recorded_pair_is_unchanged_until_either_side_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PairCache::open(&dir.path().join("c.sqlite"), false).unwrap();
        let (f, o) = (file("k", 5, 3), object("k", "\"e1\"", 3));
        assert!(!cache.unchanged(&f, &o), "nothing recorded yet");
        cache.record("k", fingerprint(&f), fingerprint(&o));
        assert!(cache.unchanged(&f, &o));
        assert!(!cache.unchanged(&file("k", 6, 3), &o), "file touched");
        assert!(
            !cache.unchanged(&f, &object("k", "\"e2\"", 3)),
            "object rewritten"
        );
        cache.forget("k");
        assert!(!cache.unchanged(&f, &o));
    }

    #[test]
    fn a_dry_run_cache_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let (f, o) = (file("k", 5, 3), object("k", "\"e1\"", 3));
        PairCache::open(&path, true)
            .unwrap()
            .record("k", fingerprint(&f), fingerprint(&o));
        assert!(!PairCache::open(&path, false).unwrap().unchanged(&f, &o));
    }

    #[test]
    fn a_damaged_cache_file_is_started_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let cache = PairCache::open(&path, false).unwrap();
        let (f, o) = (file("k", 5, 3), object("k", "\"e1\"", 3));
        cache.record("k", fingerprint(&f), fingerprint(&o));
        assert!(cache.unchanged(&f, &o));
    }

    #[test]
    fn pairs_get_distinct_files_per_direction() {
        let d = Path::new("/s");
        assert_ne!(
            PairCache::path_for(d, "a", "b"),
            PairCache::path_for(d, "b", "a")
        );
        assert_eq!(
            PairCache::path_for(d, "a", "b"),
            PairCache::path_for(d, "a", "b")
        );
    }
}
