//! The base of a two-way pair: what each key looked like on both sides when
//! they were last known equal.
//!
//! One row per key: each side's fingerprint as its listing showed it then
//! (`None` when not known yet, e.g. just after we wrote it) and the agreed
//! version's identity (size, mtime, mode, owner, CRC32C when known). A side whose
//! listing still shows the recorded fingerprint is unchanged without a
//! request; one whose fingerprint moved is compared by identity before it
//! counts as changed.
//!
//! Unlike the one-way pair cache this is not a cache: it decides deletions.
//! So it is durable (SQLite in WAL mode with `synchronous=FULL`: a committed
//! row survives a crash), rows are written only after the key's copy or
//! delete succeeded and was verified, and commits are batched (a lagging base
//! only costs a comparison on the next run, never a wrong decision). It is
//! read as a stream in key order, one page at a time (keyset pagination: no
//! long read transaction, memory bounded by the page), never loaded whole.
//! A missing base is an empty one: every key is then "new" on the sides
//! that have it, and new keys are never deleted.
//!
//! One file per unordered pair of locations: `A⇄B` and `B⇄A` share it; rows
//! are kept in the pair's canonical order (by identity) and swapped on the
//! way in and out for the other order.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use rusqlite::{params, Connection};

/// The agreed version of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BaseRow {
    pub key: String,
    /// Side A's fingerprint when both were equal (`None`: not known).
    pub a_fp: Option<String>,
    pub b_fp: Option<String>,
    pub size: u64,
    pub mtime_ns: Option<i128>,
    /// Permission bits and file type, when known.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub crc32c: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("two-way base `{path}`: {message}")]
pub struct BaseError {
    pub path: String,
    pub message: String,
}

/// Rows read per page while streaming.
const PAGE: usize = 1000;
/// Rows written per commit at most, and the longest a written row waits
/// for its commit: fewer fsyncs, and a crash loses at most this much of
/// the base's progress (which the next run re-learns by comparing).
const COMMIT_ROWS: usize = 1000;
const COMMIT_EVERY: Duration = Duration::from_secs(1);
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

struct Writer {
    conn: Connection,
    pending: usize,
    since: Instant,
}

/// The base of one pair, open for one execution.
pub struct Base {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// The caller's A is the file's second side.
    swapped: bool,
    read_only: bool,
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Base").field("path", &self.path).finish()
    }
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS base (
            key TEXT PRIMARY KEY, first_fp TEXT, second_fp TEXT,
            size INTEGER NOT NULL, mtime_ns TEXT, mode INTEGER, uid INTEGER, gid INTEGER,
            crc32c INTEGER
         ) WITHOUT ROWID;",
    )?;
    Ok(conn)
}

impl Base {
    /// The base file of the pair of locations with these identities, and
    /// whether `a` is the file's second side.
    pub fn path_for(state_dir: &Path, a: &str, b: &str) -> (PathBuf, bool) {
        let swapped = a > b;
        let (first, second) = if swapped { (b, a) } else { (a, b) };
        let h1 = crc32c::crc32c(format!("{first}\n{second}").as_bytes());
        let h2 = crc32c::crc32c(format!("two-way\n{second}\n{first}").as_bytes());
        let path = state_dir
            .join("bases")
            .join(format!("{h1:08x}{h2:08x}.sqlite"));
        (path, swapped)
    }

    /// Opens (creating) the base. A damaged base is an error, never
    /// silently replaced: the user decides (deleting it is safe: it only
    /// costs comparisons and conflict copies, never a deletion).
    pub fn open(path: &Path, swapped: bool, read_only: bool) -> Result<Base, BaseError> {
        let err = |e: rusqlite::Error| BaseError {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            crate::shared::private::create_dir(dir).map_err(|e| BaseError {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        crate::shared::private::prepare_db(path).map_err(|e| BaseError {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let conn = open_conn(path).map_err(err)?;
        let ok: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(err)?;
        if ok != "ok" {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
                Some(format!(
                    "{ok}; delete the file to start the pair anew (safe: no key is ever deleted for lack of a base)"
                )),
            )));
        }
        if !read_only {
            conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        }
        Ok(Base {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer {
                conn,
                pending: 0,
                since: Instant::now(),
            }),
            swapped,
            read_only,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> BaseError {
        BaseError {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Records the agreed version of `row.key` (sides in the caller's order).
    pub fn record(&self, row: &BaseRow) -> Result<(), BaseError> {
        if self.read_only {
            return Ok(());
        }
        let (first, second) = if self.swapped {
            (&row.b_fp, &row.a_fp)
        } else {
            (&row.a_fp, &row.b_fp)
        };
        let mut w = crate::lock(&self.writer);
        w.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO base (key, first_fp, second_fp, size, mtime_ns, mode, uid, gid, crc32c)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    row.key,
                    first,
                    second,
                    row.size as i64,
                    row.mtime_ns.map(|n| n.to_string()),
                    row.mode,
                    row.uid,
                    row.gid,
                    row.crc32c
                ])
            })
            .map_err(|e| self.err(e))?;
        self.wrote(&mut w)
    }

    /// Forgets `key`: it is gone from both sides.
    pub fn forget(&self, key: &str) -> Result<(), BaseError> {
        if self.read_only {
            return Ok(());
        }
        let mut w = crate::lock(&self.writer);
        w.conn
            .prepare_cached("DELETE FROM base WHERE key = ?1")
            .and_then(|mut st| st.execute(params![key]))
            .map_err(|e| self.err(e))?;
        self.wrote(&mut w)
    }

    fn wrote(&self, w: &mut Writer) -> Result<(), BaseError> {
        w.pending += 1;
        if w.pending >= COMMIT_ROWS || w.since.elapsed() >= COMMIT_EVERY {
            Self::commit_locked(w).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    fn commit_locked(w: &mut Writer) -> rusqlite::Result<()> {
        w.conn.execute_batch("COMMIT; BEGIN IMMEDIATE")?;
        w.pending = 0;
        w.since = Instant::now();
        Ok(())
    }

    /// Makes every recorded row durable (the end of an execution).
    pub fn commit(&self) -> Result<(), BaseError> {
        if self.read_only {
            return Ok(());
        }
        let mut w = crate::lock(&self.writer);
        Self::commit_locked(&mut w).map_err(|e| self.err(e))
    }

    /// Every row in key (byte) order, read a page at a time on a
    /// connection of its own, sides in the caller's order.
    pub fn stream(&self) -> BoxStream<'static, Result<BaseRow, BaseError>> {
        let path = self.path.clone();
        let swapped = self.swapped;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<BaseRow, BaseError>>(PAGE);
        tokio::task::spawn_blocking(move || {
            let send_err = |e: rusqlite::Error| {
                let _ = tx.blocking_send(Err(BaseError {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }));
            };
            let conn = match Connection::open_with_flags(
                &path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|c| c.busy_timeout(BUSY_TIMEOUT).map(|_| c))
            {
                Ok(c) => c,
                Err(e) => return send_err(e),
            };
            // No key is empty, so "" is before the first one.
            let mut after = String::new();
            loop {
                match read_page(&conn, &after, swapped) {
                    Ok(rows) if rows.is_empty() => return,
                    Ok(rows) => {
                        after = rows.last().map(|r| r.key.clone()).unwrap_or_default();
                        for r in rows {
                            if tx.blocking_send(Ok(r)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => return send_err(e),
                }
            }
        });
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        if !self.read_only {
            if let Ok(w) = self.writer.lock() {
                let _ = w.conn.execute_batch("COMMIT");
            }
        }
    }
}

fn read_page(conn: &Connection, after: &str, swapped: bool) -> rusqlite::Result<Vec<BaseRow>> {
    // `key > ?1` alone lets SQLite seek the primary key: each page costs its
    // own rows (`?1 IS NULL OR key > ?1` scanned from the first row: quadratic).
    let mut st = conn.prepare_cached(
        "SELECT key, first_fp, second_fp, size, mtime_ns, mode, uid, gid, crc32c FROM base
         WHERE key > ?1 ORDER BY key LIMIT ?2",
    )?;
    let rows = st.query_map(params![after, PAGE as i64], |r| {
        let (first, second): (Option<String>, Option<String>) = (r.get(1)?, r.get(2)?);
        let (a_fp, b_fp) = if swapped {
            (second, first)
        } else {
            (first, second)
        };
        Ok(BaseRow {
            key: r.get(0)?,
            a_fp,
            b_fp,
            size: r.get::<_, i64>(3)? as u64,
            mtime_ns: r.get::<_, Option<String>>(4)?.and_then(|s| s.parse().ok()),
            mode: r.get(5)?,
            uid: r.get(6)?,
            gid: r.get(7)?,
            crc32c: r.get(8)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn row(key: &str, a: &str, b: &str) -> BaseRow {
        BaseRow {
            key: key.into(),
            a_fp: Some(a.into()),
            b_fp: Some(b.into()),
            size: 3,
            mtime_ns: Some(1_700_000_000_123_456_789),
            mode: Some(0o100644),
            uid: Some(1000),
            gid: None,
            crc32c: Some(7),
        }
    }

    async fn all(base: &Base) -> Vec<BaseRow> {
        base.stream().map(|r| r.unwrap()).collect().await
    }

    #[tokio::test]
    async fn rows_stream_back_in_byte_order_across_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (path, swapped) = Base::path_for(dir.path(), "a", "b");
        let base = Base::open(&path, swapped, false).unwrap();
        let mut keys: Vec<String> = (0..2500).map(|i| format!("k{i}")).collect();
        keys.extend(["a-b".into(), "a/b".into(), "é".into(), "z".into()]);
        for k in &keys {
            base.record(&row(k, "fa", "fb")).unwrap();
        }
        base.commit().unwrap();
        let got: Vec<String> = all(&base).await.into_iter().map(|r| r.key).collect();
        keys.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
        assert_eq!(got, keys);
    }

    #[tokio::test]
    async fn the_other_order_of_the_pair_sees_the_same_rows_swapped() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, s1) = Base::path_for(dir.path(), "s3://x", "/local");
        let (p2, s2) = Base::path_for(dir.path(), "/local", "s3://x");
        assert_eq!(p1, p2, "one file per unordered pair");
        assert_ne!(s1, s2);
        {
            let b = Base::open(&p1, s1, false).unwrap();
            b.record(&row("k", "fp-of-s3", "fp-of-local")).unwrap();
        }
        let b = Base::open(&p2, s2, false).unwrap();
        let rows = all(&b).await;
        assert_eq!(rows[0].a_fp.as_deref(), Some("fp-of-local"));
        assert_eq!(rows[0].b_fp.as_deref(), Some("fp-of-s3"));
        assert_eq!(rows[0].mtime_ns, Some(1_700_000_000_123_456_789));
    }

    #[tokio::test]
    async fn committed_rows_survive_and_forgotten_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let (path, swapped) = Base::path_for(dir.path(), "a", "b");
        {
            let b = Base::open(&path, swapped, false).unwrap();
            b.record(&row("x", "1", "2")).unwrap();
            b.record(&row("y", "1", "2")).unwrap();
            b.commit().unwrap();
            b.forget("x").unwrap();
        }
        let b = Base::open(&path, swapped, false).unwrap();
        let keys: Vec<String> = all(&b).await.into_iter().map(|r| r.key).collect();
        assert_eq!(keys, vec!["y".to_string()]);
    }

    #[tokio::test]
    async fn a_dry_run_base_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, swapped) = Base::path_for(dir.path(), "a", "b");
        Base::open(&path, swapped, true)
            .unwrap()
            .record(&row("x", "1", "2"))
            .unwrap();
        let b = Base::open(&path, swapped, false).unwrap();
        assert!(all(&b).await.is_empty());
    }

    #[test]
    fn a_damaged_base_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sqlite");
        std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
        let e = Base::open(&path, false, false).unwrap_err().to_string();
        assert!(e.contains("b.sqlite"), "{e}");
    }
}
