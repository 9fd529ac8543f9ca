//! Guards across hosts (`lock = "s3"`): the registry of running executions
//! as one JSON object in a bucket (`PREFIX/syncmount-guards.json`), changed
//! only by conditional writes — `If-None-Match: *` to create it, `If-Match:
//! ETAG` to change it — so two hosts that read the same version cannot both
//! write theirs: the loser gets 412 and tries again on the new version.
//! Each claim carries a lease (an expiry time) that its holder renews every
//! third of the lease; a claim past its expiry is ignored and dropped by the
//! next writer, so a crashed host blocks the others for one lease at most.
//! The conflict rule is the local registry's ([`super::guard::conflicts`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};

use super::guard::{conflicts, Claim, GuardError};
use crate::engine::report::epoch_ms;
use crate::location::s3::S3Location;

/// The registry object's name under the lock location's prefix.
pub const REGISTRY_KEY: &str = "syncmount-guards.json";
/// How often a queued execution looks again.
const POLL: Duration = Duration::from_millis(500);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Registry {
    claims: Vec<Entry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    claim: Claim,
    host: String,
    expires_ms: u64,
}

/// The registry object of one lock location.
pub struct S3Registry {
    loc: S3Location,
    key: String,
    lease: Duration,
}

fn s3_err(what: &str, e: impl std::fmt::Display) -> GuardError {
    GuardError::Io {
        path: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// What a write of a new registry version came to.
enum Written {
    Yes,
    /// Someone else wrote first (412) or created it meanwhile (409).
    Lost,
}

impl S3Registry {
    pub fn new(loc: S3Location, lease: Duration) -> S3Registry {
        let key = format!("{}{REGISTRY_KEY}", loc.config().prefix);
        S3Registry { loc, key, lease }
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.loc.config().bucket, self.key)
    }

    /// The current version and its ETag (none when there is no object yet).
    async fn read(&self) -> Result<(Registry, Option<String>), GuardError> {
        let got = self
            .loc
            .client()
            .get_object()
            .bucket(&self.loc.config().bucket)
            .key(&self.key)
            .send()
            .await;
        match got {
            Ok(out) => {
                let etag = out.e_tag().map(str::to_string);
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| s3_err(&self.url(), e))?;
                // A registry this version cannot read is not an empty one:
                // overwriting it would drop other hosts' live claims.
                let reg = serde_json::from_slice(&body.into_bytes()).map_err(|e| {
                    s3_err(
                        &self.url(),
                        format!("the lock object is not a registry this version can read ({e}); remove it once no execution of these tasks runs anywhere"),
                    )
                })?;
                Ok((reg, etag))
            }
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                Ok((Registry::default(), None))
            }
            Err(e) => Err(s3_err(&self.url(), crate::location::s3::error_chain(&e))),
        }
    }

    async fn write(&self, reg: &Registry, etag: Option<&str>) -> Result<Written, GuardError> {
        let body = serde_json::to_vec(reg).map_err(|e| s3_err(&self.url(), e))?;
        let mut put = self
            .loc
            .client()
            .put_object()
            .bucket(&self.loc.config().bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(body));
        put = match etag {
            Some(t) => put.if_match(t),
            None => put.if_none_match("*"),
        };
        match put.send().await {
            Ok(_) => Ok(Written::Yes),
            Err(e)
                if matches!(
                    e.raw_response().map(|r| r.status().as_u16()),
                    Some(412 | 409)
                ) =>
            {
                Ok(Written::Lost)
            }
            Err(e) => Err(s3_err(&self.url(), crate::location::s3::error_chain(&e))),
        }
    }

    /// Reads, changes with `f` (after dropping expired claims) and writes
    /// back, again on a fresh version when another writer came first. `f`
    /// returns false to leave the registry as it is.
    async fn update<T>(
        &self,
        mut f: impl FnMut(&mut Registry) -> (bool, T),
    ) -> Result<T, GuardError> {
        loop {
            let (mut reg, etag) = self.read().await?;
            let now = epoch_ms();
            reg.claims.retain(|e| e.expires_ms > now);
            let (change, out) = f(&mut reg);
            if !change {
                return Ok(out);
            }
            if let Written::Yes = self.write(&reg, etag.as_deref()).await? {
                return Ok(out);
            }
        }
    }

    fn expiry(&self) -> u64 {
        epoch_ms() + self.lease.as_millis() as u64
    }

    /// One attempt: Ok(None) when taken, Ok(Some(holder)) when a live
    /// conflicting claim is there.
    async fn try_take(&self, claim: &Claim) -> Result<Option<Claim>, GuardError> {
        let (host, expires_ms) = (hostname(), self.expiry());
        self.update(
            |reg| match reg.claims.iter().find(|e| conflicts(claim, &e.claim)) {
                Some(holder) => (false, Some(holder.claim.clone())),
                None => {
                    reg.claims.push(Entry {
                        claim: claim.clone(),
                        host: host.clone(),
                        expires_ms,
                    });
                    (true, None)
                }
            },
        )
        .await
    }

    /// Extends our lease; false when our claim is gone (it expired and
    /// someone else dropped it): the guard is lost.
    async fn renew(&self, id: &str) -> Result<bool, GuardError> {
        let expires_ms = self.expiry();
        self.update(
            |reg| match reg.claims.iter_mut().find(|e| e.claim.execution_id == id) {
                Some(e) => {
                    e.expires_ms = expires_ms;
                    (true, true)
                }
                None => (false, false),
            },
        )
        .await
    }

    async fn release(&self, id: &str) -> Result<(), GuardError> {
        self.update(|reg| {
            let before = reg.claims.len();
            reg.claims.retain(|e| e.claim.execution_id != id);
            (reg.claims.len() != before, ())
        })
        .await
    }
}

/// A claim held in the S3 registry, renewed in the background until
/// [`S3Guard::release`].
pub struct S3Guard {
    registry: Arc<S3Registry>,
    id: String,
    renewer: tokio::task::JoinHandle<()>,
    lost: Arc<AtomicBool>,
}

impl S3Guard {
    /// Whether the lease was lost while held (the execution was stopped
    /// for it, not cancelled by anyone).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Where the lock lives, for messages.
    pub fn url(&self) -> String {
        self.registry.url()
    }

    /// Removes the claim (a failure only leaves it to expire).
    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.registry.release(&self.id).await {
            tracing::warn!(execution_id = %self.id, error = %e, "cannot release the S3 lock; it expires with its lease");
        }
    }
}

/// Takes `claim` in the S3 registry: when a conflicting execution (on any
/// host) holds one, waits (`queue`, telling `on_wait` once) or fails naming
/// it. While held, the lease is renewed; if it is ever lost, `stop` is set
/// (the execution should stop: another host may now run) and the guard
/// says so ([`S3Guard::lost`]).
pub async fn acquire(
    registry: Arc<S3Registry>,
    claim: Claim,
    queue: bool,
    on_wait: impl Fn(&Claim),
    stop: Arc<AtomicBool>,
) -> Result<S3Guard, GuardError> {
    let mut told = false;
    loop {
        match registry.try_take(&claim).await? {
            None => break,
            Some(holder) if !queue => {
                return Err(GuardError::Busy {
                    what: format!(
                        "{} → {} (S3 lock {})",
                        holder.source,
                        holder.destination,
                        registry.url()
                    ),
                    execution_id: holder.execution_id,
                    pid: holder.pid,
                })
            }
            Some(holder) => {
                if !told {
                    on_wait(&holder);
                    told = true;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
    let (r, id) = (registry.clone(), claim.execution_id.clone());
    let lost = Arc::new(AtomicBool::new(false));
    let lost_flag = lost.clone();
    let every = registry.lease / 3;
    let renewer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            match r.renew(&id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(execution_id = %id, "the S3 lock's lease was lost; stopping");
                    lost_flag.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(execution_id = %id, error = %e, "cannot renew the S3 lock; trying again")
                }
            }
        }
    });
    Ok(S3Guard {
        registry,
        id: claim.execution_id,
        renewer,
        lost,
    })
}
