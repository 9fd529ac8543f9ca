//! What POSIX metadata each S3 object version carries, remembered in the
//! state directory (`known-meta.db`) so that listing a mounted directory
//! with `ls -l` needs no HEAD per object.
//!
//! A row holds, per object (endpoint, bucket and full key), the version it
//! describes — ETag and LastModified — and the metadata stored with it.
//! Rows come from what an S3 location learns anyway: every HEAD (`stat`)
//! and every write of its own (which knows what it stored and the ETag it
//! got back). The LastModified of a row is learnt from the first listing
//! that shows the same ETag, never from HEAD: some servers (rclone serve s3)
//! list a time that their HEAD does not answer, and a row must match the
//! listings it is compared with. A listed object whose ETag and
//! LastModified match a row gets the row's metadata; anything else (an
//! unknown object, or one rewritten since, even with the same bytes: a
//! metadata rewrite keeps a single-part ETag but changes LastModified)
//! costs one HEAD, as before. Deletes and metadata rewrites forget the row.
//!
//! Servers that list no ETags (s3s-fs) get nothing from it: every listed
//! object costs its HEAD there, as before.
//!
//! Limits: LastModified has whole seconds, so another client rewriting only
//! an object's metadata within the second of the version remembered here
//! goes unseen until the object changes again (as in the pair cache); and
//! a metadata-only rewrite between a HEAD (or a write) and the next listing
//! is taken for the version remembered.
//!
//! It is a cache: a store that cannot be opened or read only costs HEADs.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::meta::PosixMeta;

/// Bumped whenever the table's columns change.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS known_meta (
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    modified_ms INTEGER,
    mode INTEGER,
    uid INTEGER,
    gid INTEGER,
    mtime_ns TEXT,
    rdev TEXT,
    ctime_ns TEXT,
    PRIMARY KEY (store, key)
) WITHOUT ROWID;
";

/// An ETag without the quotes some servers leave out of their listings.
fn bare(etag: &str) -> &str {
    etag.trim_matches('"')
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(i64::MAX)
}

/// One request to the store's thread.
enum Op {
    Remember {
        key: String,
        etag: String,
        modified_ms: Option<i64>,
        meta: PosixMeta,
    },
    Forget {
        key: String,
    },
    Recall {
        listed: Vec<(String, String, Option<i64>)>,
    },
}

struct Job {
    op: Op,
    /// What a recall found (empty for the other operations), sent once the
    /// batch holding the job is committed.
    done: tokio::sync::oneshot::Sender<Vec<Option<PosixMeta>>>,
}

/// The store of one bucket. Its SQLite connection lives on a thread of its
/// own, never on the async runtime: each call queues a job and awaits its
/// answer, and the thread runs whatever is queued in one transaction, so
/// many concurrent HEADs or writes (a `sync` at concurrency 64) cost one
/// commit, not one each. A call returns once its change is committed.
#[derive(Debug)]
pub struct KnownMeta {
    jobs: std::sync::mpsc::Sender<Job>,
}

/// Jobs run in one transaction at most (a bound on a commit's latency).
const MAX_BATCH: usize = 512;

impl KnownMeta {
    /// The store in `state_dir` for the bucket `store` names; `None` (and a
    /// log line) when it cannot be opened.
    pub fn open(state_dir: &Path, store: &str) -> Option<KnownMeta> {
        let path = state_dir.join("known-meta.db");
        let open = || -> rusqlite::Result<Connection> {
            crate::shared::private::prepare_sqlite(&path)?;
            let conn = Connection::open(&path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // A cache: a table of another layout is dropped, not migrated.
            let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if version != SCHEMA_VERSION {
                conn.execute_batch("DROP TABLE IF EXISTS known_meta")?;
                conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        if let Err(e) = crate::shared::private::create_dir(state_dir) {
            tracing::warn!(dir = %state_dir.display(), error = %e, "no remembered metadata: cannot make the state directory");
            return None;
        }
        let conn = match open() {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "no remembered metadata: the store cannot be opened");
                return None;
            }
        };
        let (jobs, queue) = std::sync::mpsc::channel();
        let store = store.to_string();
        let spawned = std::thread::Builder::new()
            .name("known-meta".into())
            .spawn(move || serve(conn, &store, &queue));
        match spawned {
            Ok(_) => Some(KnownMeta { jobs }),
            Err(e) => {
                tracing::warn!(error = %e, "no remembered metadata: no thread for its store");
                None
            }
        }
    }

    async fn run(&self, op: Op) -> Vec<Option<PosixMeta>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        if self.jobs.send(Job { op, done }).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// `key` (the full key) is at version `etag` (and `modified`, when
    /// known) with `meta`.
    pub async fn remember(
        &self,
        key: &str,
        etag: &str,
        modified: Option<SystemTime>,
        meta: &PosixMeta,
    ) {
        self.run(Op::Remember {
            key: key.to_string(),
            etag: bare(etag).to_string(),
            modified_ms: modified.map(ms),
            meta: *meta,
        })
        .await;
    }

    /// Nothing is known of `key` any more.
    pub async fn forget(&self, key: &str) {
        self.run(Op::Forget {
            key: key.to_string(),
        })
        .await;
    }

    /// The metadata of each listed `(full key, etag, modified)`, where a
    /// row describes that very version.
    pub async fn recall(
        &self,
        listed: &[(&str, &str, Option<SystemTime>)],
    ) -> Vec<Option<PosixMeta>> {
        let listed: Vec<_> = listed
            .iter()
            .map(|(k, e, m)| (k.to_string(), bare(e).to_string(), m.map(ms)))
            .collect();
        let n = listed.len();
        let mut got = self.run(Op::Recall { listed }).await;
        got.resize(n, None);
        got
    }
}

/// The store's thread: runs queued jobs in batches until every sender is gone.
fn serve(mut conn: Connection, store: &str, queue: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let answers = match run_batch(&mut conn, store, &batch) {
            Ok(answers) => answers,
            Err(e) => {
                tracing::debug!(error = %e, "remembered metadata: a batch failed");
                Vec::new()
            }
        };
        let mut answers = answers.into_iter();
        for job in batch {
            let _ = job.done.send(answers.next().unwrap_or_default());
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    store: &str,
    batch: &[Job],
) -> rusqlite::Result<Vec<Vec<Option<PosixMeta>>>> {
    let tx = conn.transaction()?;
    let mut answers = Vec::with_capacity(batch.len());
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO known_meta VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut delete =
            tx.prepare_cached("DELETE FROM known_meta WHERE store = ?1 AND key = ?2")?;
        let mut get = tx.prepare_cached(
            "SELECT etag, modified_ms, mode, uid, gid, mtime_ns, rdev, ctime_ns FROM known_meta WHERE store = ?1 AND key = ?2",
        )?;
        let mut adopt = tx.prepare_cached(
            "UPDATE known_meta SET modified_ms = ?3 WHERE store = ?1 AND key = ?2 AND modified_ms IS NULL",
        )?;
        for job in batch {
            match &job.op {
                Op::Remember {
                    key,
                    etag,
                    modified_ms,
                    meta,
                } => {
                    put.execute(params![
                        store,
                        key,
                        etag,
                        modified_ms,
                        meta.mode,
                        meta.uid,
                        meta.gid,
                        meta.mtime_ns.map(|n| n.to_string()),
                        meta.rdev.map(|n| n.to_string()),
                        meta.ctime_ns.map(|n| n.to_string()),
                    ])?;
                    answers.push(Vec::new());
                }
                Op::Forget { key } => {
                    delete.execute(params![store, key])?;
                    answers.push(Vec::new());
                }
                Op::Recall { listed } => {
                    let mut out = Vec::with_capacity(listed.len());
                    for (key, etag, listed_ms) in listed {
                        let row = get
                            .query_row(params![store, key], |r| {
                                Ok((
                                    r.get::<_, String>(0)?,
                                    r.get::<_, Option<i64>>(1)?,
                                    PosixMeta {
                                        mode: r.get(2)?,
                                        uid: r.get(3)?,
                                        gid: r.get(4)?,
                                        mtime_ns: r
                                            .get::<_, Option<String>>(5)?
                                            .and_then(|s| s.parse().ok()),
                                        rdev: r
                                            .get::<_, Option<String>>(6)?
                                            .and_then(|s| s.parse().ok()),
                                        ctime_ns: r
                                            .get::<_, Option<String>>(7)?
                                            .and_then(|s| s.parse().ok()),
                                    },
                                ))
                            })
                            .optional()?;
                        out.push(match row {
                            // Whole seconds: HEAD's Last-Modified has no
                            // more, some servers' listings do.
                            Some((e, Some(m), meta))
                                if e == *etag && Some(m / 1000) == listed_ms.map(|l| l / 1000) =>
                            {
                                Some(meta)
                            }
                            Some((e, None, meta)) if e == *etag => {
                                // Written here: the first listing of that
                                // ETag tells its LastModified.
                                if let Some(m) = listed_ms {
                                    adopt.execute(params![store, key, m])?;
                                }
                                Some(meta)
                            }
                            _ => None,
                        });
                    }
                    answers.push(out);
                }
            }
        }
    }
    tx.commit()?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: u32) -> PosixMeta {
        PosixMeta {
            mtime_ns: Some(1_700_000_000_123_456_789),
            mode: Some(mode),
            uid: Some(1000),
            gid: Some(100),
            rdev: (mode & 0o170000 == 0o020000).then_some(0x0103),
            ctime_ns: Some(1_700_000_001_000_000_007),
        }
    }

    #[tokio::test]
    async fn only_the_remembered_version_is_recalled_and_a_write_learns_its_time_once() {
        let dir = tempfile::tempdir().expect("dir");
        let k = KnownMeta::open(dir.path(), "ep|bucket").expect("open");
        let t1 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let t2 = t1 + Duration::from_secs(1);
        k.remember("p/a", "\"e1\"", Some(t1), &meta(0o100600)).await;
        k.remember("p/b", "\"e2\"", None, &meta(0o020644)).await;
        let got = k
            .recall(&[
                ("p/a", "e1", Some(t1)),
                ("p/a", "\"e1\"", Some(t2)),
                ("p/a", "\"other\"", Some(t1)),
                ("p/c", "\"e1\"", Some(t1)),
                ("p/b", "\"e2\"", Some(t2)),
            ])
            .await;
        assert_eq!(got[0], Some(meta(0o100600)));
        let listed_ms = t1 + Duration::from_millis(250);
        assert_eq!(
            k.recall(&[("p/a", "e1", Some(listed_ms))]).await,
            vec![Some(meta(0o100600))],
            "a listing with milliseconds"
        );
        assert_eq!(got[1], None, "rewritten since (same ETag, new time)");
        assert_eq!(got[2], None, "another ETag");
        assert_eq!(got[3], None, "never seen");
        assert_eq!(got[4], Some(meta(0o020644)), "written here");
        // The written row took the first listing's time: a later time is a rewrite.
        assert_eq!(k.recall(&[("p/b", "\"e2\"", Some(t1))]).await, vec![None]);
        assert_eq!(
            k.recall(&[("p/b", "\"e2\"", Some(t2))]).await,
            vec![Some(meta(0o020644))]
        );
        // Durable, per bucket, and forgotten on delete.
        drop(k);
        let again = KnownMeta::open(dir.path(), "ep|bucket").expect("reopen");
        assert_eq!(
            again.recall(&[("p/a", "\"e1\"", Some(t1))]).await,
            vec![Some(meta(0o100600))]
        );
        let other = KnownMeta::open(dir.path(), "ep|other").expect("other bucket");
        assert_eq!(
            other.recall(&[("p/a", "\"e1\"", Some(t1))]).await,
            vec![None]
        );
        again.forget("p/a").await;
        assert_eq!(
            again.recall(&[("p/a", "\"e1\"", Some(t1))]).await,
            vec![None]
        );
    }
}
