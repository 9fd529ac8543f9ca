//! Guards: two executions never run at once when one's destination overlaps
//! the other's source or destination (this covers the same task twice, A→B
//! with B→A, and two tasks writing into one prefix). Executions that only
//! read the same source run side by side.
//!
//! The registry is a directory in the state directory: one file per running
//! execution, holding what it reads and writes, on which that execution holds
//! an exclusive `flock` for as long as it runs. A crashed holder's lock is
//! released by the kernel, so its file is seen as stale and removed: a
//! SIGKILLed execution never blocks the next one. The registry is scanned
//! and joined under a second lock (`.registry`), so no one can take a file
//! that is being created for a stale one.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::location::Place;

/// How often a queued execution looks again.
const POLL: Duration = Duration::from_millis(200);

/// What an execution reads and writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub execution_id: String,
    pub pid: u32,
    pub source: Place,
    pub destination: Place,
    /// A two-way execution writes its source too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub two_way: bool,
}

impl Claim {
    /// The places the execution writes.
    fn writes(&self) -> impl Iterator<Item = &Place> {
        std::iter::once(&self.destination).chain(self.two_way.then_some(&self.source))
    }

    /// Every place the execution reads or writes.
    fn touches(&self) -> [&Place; 2] {
        [&self.source, &self.destination]
    }
}

/// Whether two executions may not run at the same time: one writes where
/// the other reads or writes. A two-way execution writes both its sides,
/// so `A⇄B` and `B⇄A` are the same lock, whatever the argument order.
pub fn conflicts(a: &Claim, b: &Claim) -> bool {
    let hits = |x: &Claim, y: &Claim| {
        x.writes()
            .any(|w| y.touches().iter().any(|p| w.overlaps(p)))
    };
    hits(a, b) || hits(b, a)
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("execution {execution_id} (pid {pid}) is running on an overlapping location ({what}); wait for it, or let the start queue behind it (`sync` without --no-queue; a task with queueing = true)")]
    Busy {
        execution_id: String,
        pid: u32,
        what: String,
    },
    #[error("guard registry `{path}`: {source}")]
    Io { path: String, source: io::Error },
}

/// A held claim: the registry file, locked; released (and removed) on drop.
#[derive(Debug)]
pub struct Guard {
    file: Option<File>,
    path: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Remove while still holding the lock, so nobody sees it as stale.
        let _ = fs::remove_file(&self.path);
        self.file.take();
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> GuardError + '_ {
    move |source| GuardError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Locks `f` exclusively (without waiting when `exclusive_nonblocking`);
/// false when someone else holds it.
pub(crate) fn flock(f: &File, exclusive_nonblocking: bool) -> io::Result<bool> {
    let op = if exclusive_nonblocking {
        libc::LOCK_EX | libc::LOCK_NB
    } else {
        libc::LOCK_EX
    };
    // SAFETY: a valid open file descriptor; flock has no other preconditions.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Live claims in the registry; stale ones (their holder is gone) are removed.
fn live_claims(dir: &Path) -> io::Result<Vec<Claim>> {
    let mut out = Vec::new();
    for de in fs::read_dir(dir)? {
        let path = de?.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(f) = File::open(&path) else { continue };
        if flock(&f, true)? {
            // Nobody holds it: a crashed execution's leftover.
            let _ = fs::remove_file(&path);
            continue;
        }
        if let Ok(claim) = fs::read(&path)
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<Claim>(&b).map_err(|_| ()))
        {
            out.push(claim);
        }
    }
    Ok(out)
}

/// The registry lock: held while the claims are scanned and joined.
fn lock_registry(dir: &Path) -> Result<File, GuardError> {
    crate::shared::private::create_dir(dir).map_err(io_err(dir))?;
    let reg_path = dir.join(".registry");
    let registry = crate::shared::private::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&reg_path)
        .map_err(io_err(&reg_path))?;
    flock(&registry, false).map_err(io_err(&reg_path))?;
    Ok(registry)
}

/// The first live claim that conflicts with `claim` (registry lock held).
fn conflicting(dir: &Path, claim: &Claim) -> Result<Option<Claim>, GuardError> {
    Ok(live_claims(dir)
        .map_err(io_err(dir))?
        .into_iter()
        .find(|c| conflicts(claim, c)))
}

/// One attempt: `Ok(Ok(guard))` when taken, `Ok(Err(holder))` when a
/// conflicting execution runs.
fn try_acquire(dir: &Path, claim: &Claim) -> Result<Result<Guard, Claim>, GuardError> {
    let _registry = lock_registry(dir)?;
    if let Some(holder) = conflicting(dir, claim)? {
        return Ok(Err(holder));
    }
    let path = dir.join(format!("{}.json", claim.execution_id));
    let file = crate::shared::private::create_file(&path).map_err(io_err(&path))?;
    flock(&file, false).map_err(io_err(&path))?;
    let body = serde_json::to_vec(claim).map_err(|e| GuardError::Io {
        path: path.display().to_string(),
        source: io::Error::other(e),
    })?;
    fs::write(&path, body).map_err(io_err(&path))?;
    Ok(Ok(Guard {
        file: Some(file),
        path,
    }))
    // The registry lock is released when `_registry` drops here.
}

/// The running execution `claim` would conflict with, if any (without
/// taking anything): how `task start` refuses at once when queueing is off.
pub fn holder(state_dir: &Path, claim: &Claim) -> Result<Option<Claim>, GuardError> {
    let dir = state_dir.join("locks");
    let _registry = lock_registry(&dir)?;
    conflicting(&dir, claim)
}

/// Takes the guard for `claim` in the registry under `state_dir`. When a
/// conflicting execution runs: waits for it (`queue`, telling `on_wait`
/// once) or fails naming it.
pub async fn acquire(
    state_dir: &Path,
    claim: Claim,
    queue: bool,
    on_wait: impl Fn(&Claim),
) -> Result<Guard, GuardError> {
    let dir = state_dir.join("locks");
    let mut told = false;
    loop {
        let (d, c) = (dir.clone(), claim.clone());
        let attempt = tokio::task::spawn_blocking(move || try_acquire(&d, &c))
            .await
            .map_err(|e| GuardError::Io {
                path: dir.display().to_string(),
                source: io::Error::other(e.to_string()),
            })??;
        match attempt {
            Ok(guard) => return Ok(guard),
            Err(holder) if !queue => {
                return Err(GuardError::Busy {
                    what: format!("{} → {}", holder.source, holder.destination),
                    execution_id: holder.execution_id,
                    pid: holder.pid,
                })
            }
            Err(holder) => {
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(bucket: &str, prefix: &str) -> Place {
        Place::S3 {
            endpoint: "aws".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    fn claim(id: &str, src: Place, dst: Place) -> Claim {
        Claim {
            execution_id: id.into(),
            pid: 1,
            source: src,
            destination: dst,
            two_way: false,
        }
    }

    #[test]
    fn a_two_way_claim_conflicts_with_readers_of_either_side_in_any_order() {
        let two = |id: &str, a: Place, b: Place| Claim {
            two_way: true,
            ..claim(id, a, b)
        };
        let a_b = two("1", s3("a", ""), s3("b", ""));
        assert!(conflicts(&a_b, &two("2", s3("b", ""), s3("a", ""))), "B⇄A");
        assert!(
            conflicts(&a_b, &claim("3", s3("a", ""), s3("c", ""))),
            "a reader of A"
        );
        assert!(
            conflicts(&claim("3", s3("a", ""), s3("c", "")), &a_b),
            "either order"
        );
        assert!(
            conflicts(&a_b, &claim("4", s3("c", ""), s3("a", "x/"))),
            "a writer into A"
        );
        assert!(!conflicts(&a_b, &claim("5", s3("c", ""), s3("d", ""))));
        assert!(
            !conflicts(
                &claim("6", s3("a", ""), s3("c", "")),
                &claim("7", s3("a", ""), s3("d", ""))
            ),
            "one-way readers of one source still share it"
        );
    }

    #[test]
    fn the_opposite_direction_and_a_shared_destination_conflict_but_shared_sources_do_not() {
        let a_b = claim("1", s3("a", ""), s3("b", "x/"));
        assert!(
            conflicts(&a_b, &claim("2", s3("b", "x/"), s3("a", ""))),
            "B→A"
        );
        assert!(
            conflicts(&a_b, &claim("3", s3("c", ""), s3("b", "x/y/"))),
            "nested destination"
        );
        assert!(conflicts(&a_b, &a_b.clone()), "the same task twice");
        assert!(
            !conflicts(&a_b, &claim("4", s3("a", ""), s3("c", ""))),
            "same source, other destination"
        );
        assert!(
            !conflicts(&a_b, &claim("5", s3("d", ""), s3("b", "xy/"))),
            "disjoint prefixes of one bucket"
        );
        let local = |p: &str| Place::Local(p.into());
        assert!(conflicts(
            &claim("6", local("/a"), local("/b")),
            &claim("7", local("/b/c"), local("/z"))
        ));
        assert!(!conflicts(
            &claim("6", local("/a"), local("/b")),
            &claim("7", local("/a"), local("/bc"))
        ));
    }

    #[tokio::test]
    async fn a_conflicting_claim_is_refused_until_the_guard_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let first = claim("e1", s3("a", ""), s3("b", ""));
        let g = acquire(d.path(), first, false, |_| {}).await.unwrap();
        let err = acquire(
            d.path(),
            claim("e2", s3("b", ""), s3("a", "")),
            false,
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("e1"), "{err}");
        drop(g);
        acquire(
            d.path(),
            claim("e3", s3("b", ""), s3("a", "")),
            false,
            |_| {},
        )
        .await
        .unwrap();
    }

    #[test]
    fn a_claim_file_nobody_holds_is_stale_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("locks");
        fs::create_dir_all(&dir).unwrap();
        let dead = claim("dead", s3("a", ""), s3("b", ""));
        fs::write(dir.join("dead.json"), serde_json::to_vec(&dead).unwrap()).unwrap();
        assert!(live_claims(&dir).unwrap().is_empty());
        assert!(!dir.join("dead.json").exists());
    }
}
