//! The mount's caches.
//!
//! - Metadata: what a lookup found for a path (a file's attributes, a
//!   directory, or nothing — a negative entry), kept for the metadata TTL.
//! - Data: 1 MiB blocks keyed by key + ETag + block number, weighted by their
//!   bytes, so a changed object can never be served from an older version's
//!   blocks. Concurrent requests for one block share one ranged GET (a
//!   table of the blocks in flight; read-ahead asks for a run of blocks
//!   with one GET, and a block in flight is never asked for again). With a
//!   cache directory, blocks evicted from memory stay on disk (each with its
//!   CRC32C, checked on every read) up to the disk cache's size. The disk
//!   tier's file I/O runs on tokio's blocking threads, never on the runtime
//!   threads that the FUSE threads wait on; a block is one file, written
//!   and read back without copying its bytes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::location::{FileKind, Location, LocationError, Result};
use crate::metrics::MountMetrics;

use super::prefetch::BLOCK;

/// What the mount shows for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub is_dir: bool,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits (no file type).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// The version a reader is pinned to (S3); `None` for local files.
    pub etag: Option<String>,
    /// What the stored mode's type bits say (a directory when `is_dir`).
    pub kind: FileKind,
    /// Device number of a character or block device.
    pub rdev: u64,
    /// Last change of data or metadata (the mtime where none is stored).
    pub ctime: SystemTime,
}

/// Paths to what a lookup found: `None` is a negative entry.
pub struct MetaCache {
    entries: moka::sync::Cache<String, Option<Attr>>,
}

impl MetaCache {
    pub fn new(ttl: Duration) -> MetaCache {
        MetaCache {
            entries: moka::sync::Cache::builder()
                // Enough for the entries of a few large directory listings.
                .max_capacity(1_000_000)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// `Some(found)` when the path is cached (found may be a negative entry).
    pub fn get(&self, path: &str) -> Option<Option<Attr>> {
        self.entries.get(path)
    }

    pub fn put(&self, path: &str, attr: Option<Attr>) {
        self.entries.insert(path.to_string(), attr);
    }

    pub fn forget(&self, path: &str) {
        self.entries.invalidate(path);
    }

    pub fn forget_all(&self) {
        self.entries.invalidate_all();
    }
}

/// Which block of which version of which object.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct BlockId {
    key: Arc<str>,
    version: Arc<str>,
    index: u64,
}

/// Who asks for a block: a reader, or read-ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Read,
    Ahead,
}

/// What a handle reads and its blocks belong to: one version of one object.
#[derive(Clone, Debug)]
pub struct Pinned {
    pub key: String,
    /// Cache version: the ETag, or size + mtime where there is none.
    pub version: String,
    /// The ETag every GET is pinned to, where the store has one.
    pub if_match: Option<String>,
    pub size: u64,
}

impl Pinned {
    fn block_id(&self, index: u64) -> BlockId {
        BlockId {
            key: Arc::from(self.key.as_str()),
            version: Arc::from(self.version.as_str()),
            index,
        }
    }
}

/// A read that could not be served, for `key` (transient: asking again may
/// succeed).
pub(super) fn read_error(op: &'static str, key: &str, message: String) -> LocationError {
    LocationError::Io {
        location: String::new(),
        op,
        key: key.to_string(),
        message,
        transient: true,
    }
}

/// A block being fetched, shared by everyone who asks for it meanwhile.
type Pending = Shared<BoxFuture<'static, std::result::Result<Bytes, Arc<LocationError>>>>;

pub struct BlockCache {
    memory: moka::future::Cache<BlockId, Bytes>,
    disk: Option<DiskCache>,
    in_flight: Arc<std::sync::Mutex<std::collections::HashMap<BlockId, Pending>>>,
    metrics: MountMetrics,
}

impl BlockCache {
    pub fn new(memory_bytes: u64, disk: Option<(PathBuf, u64)>) -> std::io::Result<BlockCache> {
        let disk = match disk {
            Some((dir, size)) => Some(DiskCache::new(dir, size)?),
            None => None,
        };
        Ok(BlockCache {
            memory: moka::future::Cache::builder()
                .max_capacity(memory_bytes)
                .weigher(|_, v: &Bytes| u32::try_from(v.len()).unwrap_or(u32::MAX))
                // LRU, not moka's default TinyLFU admission: TinyLFU turns a
                // block just fetched (seen once) away once the cache is full
                // of blocks read more often, so read-ahead fetched blocks
                // that were thrown away before their reader came.
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .support_invalidation_closures()
                .build(),
            disk,
            in_flight: Arc::default(),
            metrics: MountMetrics::default(),
        })
    }

    /// Counts hits, misses and fetched bytes into `metrics`.
    pub fn with_metrics(mut self, metrics: MountMetrics) -> BlockCache {
        self.metrics = metrics;
        self
    }

    /// Block `index` of object `o`, from memory, disk or one ranged GET
    /// (pinned with its ETag where the store can). A block asked for by
    /// read-ahead ([`Want::Ahead`]) and already there is not counted as a
    /// hit: nobody read it yet.
    pub async fn block(
        &self,
        loc: &Arc<dyn Location>,
        o: &Pinned,
        index: u64,
        want: Want,
    ) -> Result<Bytes> {
        let mut got = self.blocks(loc, o, index..index + 1, want).await;
        got.pop().unwrap_or_else(|| {
            Err(read_error(
                "read",
                &o.key,
                format!("block {index}: nothing fetched"),
            ))
        })
    }

    /// Blocks `run` of object `o`, each from memory or disk where it is
    /// there, or from the fetch already in flight for it (another reader's),
    /// and the rest by one ranged GET per stretch of consecutive missing
    /// blocks (fewer, larger requests for read-ahead: less work per byte for
    /// the store and the client). No block is fetched twice at once.
    pub async fn blocks(
        &self,
        loc: &Arc<dyn Location>,
        o: &Pinned,
        run: std::ops::Range<u64>,
        want: Want,
    ) -> Vec<Result<Bytes>> {
        enum Source {
            Have(Bytes),
            Wait(Pending),
            /// Its fetch ended between asking memory and taking the lock.
            Landed,
        }
        // What memory and disk hold (awaited before the in-flight table is
        // locked: it is never held across an await).
        let mut sources: Vec<Option<Source>> = Vec::with_capacity((run.end - run.start) as usize);
        for index in run.clone() {
            sources.push(self.cached(o, index, want).await.map(Source::Have));
        }
        {
            let mut flying = crate::lock(&self.in_flight);
            let mut missing: Vec<u64> = Vec::new();
            for (index, source) in run.clone().zip(sources.iter_mut()) {
                if source.is_some() {
                    continue;
                }
                let id = o.block_id(index);
                if let Some(p) = flying.get(&id) {
                    if want == Want::Read {
                        self.metrics.memory_hits.inc();
                    }
                    *source = Some(Source::Wait(p.clone()));
                } else if self.memory.contains_key(&id) {
                    // A fetch puts its block in memory before it leaves the
                    // table.
                    *source = Some(Source::Landed);
                } else {
                    missing.push(index);
                }
            }
            for stretch in missing.chunk_by(|a, b| b == &(a + 1)) {
                let (Some(&first), Some(&last)) = (stretch.first(), stretch.last()) else {
                    continue;
                };
                for (index, pending) in
                    (first..=last).zip(self.fetch_stretch(loc, o, first..last + 1))
                {
                    flying.insert(o.block_id(index), pending.clone());
                    sources[(index - run.start) as usize] = Some(Source::Wait(pending));
                }
            }
        }
        let mut out = Vec::with_capacity(sources.len());
        for (index, source) in run.zip(sources) {
            out.push(match source {
                Some(Source::Have(b)) => Ok(b),
                Some(Source::Wait(p)) => p.await.map_err(|e| clone_error(&e)),
                Some(Source::Landed) => match self.memory.get(&o.block_id(index)).await {
                    Some(b) => Ok(b),
                    // Evicted again in between: asked for once more.
                    None => Box::pin(self.block(loc, o, index, want)).await,
                },
                None => Err(read_error(
                    "read",
                    &o.key,
                    format!("block {index}: nothing fetched"),
                )),
            });
        }
        out
    }

    /// One GET of blocks `stretch`, as one shared future per block that ends
    /// with the block in memory (and on disk) and out of the in-flight table.
    fn fetch_stretch(
        &self,
        loc: &Arc<dyn Location>,
        o: &Pinned,
        stretch: std::ops::Range<u64>,
    ) -> Vec<Pending> {
        let first = stretch.start * BLOCK;
        let end = (stretch.end * BLOCK).min(o.size);
        let whole = {
            let (loc, key, if_match) = (loc.clone(), o.key.clone(), o.if_match.clone());
            let metrics = self.metrics.clone();
            metrics.misses.inc_by(stretch.end - stretch.start);
            async move {
                let b = loc
                    .read_range(&key, first..end, if_match.as_deref())
                    .await
                    .map_err(Arc::new)?;
                metrics.fetched.inc_by(b.len() as u64);
                Ok::<_, Arc<LocationError>>(b)
            }
            .boxed()
            .shared()
        };
        stretch
            .map(|index| {
                let id = o.block_id(index);
                let whole = whole.clone();
                let (memory, disk, flying) = (
                    self.memory.clone(),
                    self.disk.clone(),
                    self.in_flight.clone(),
                );
                let size = o.size;
                async move {
                    let got = whole.await.and_then(|all| {
                        let from = (index * BLOCK - first) as usize;
                        let to = (((index + 1) * BLOCK).min(size) - first) as usize;
                        // A block of a longer run gets its own copy: a
                        // slice would keep the whole run's buffer alive for
                        // as long as any one of its blocks stays cached, and
                        // the cache's size would no longer bound memory.
                        all.get(from..to)
                            .map(|b| {
                                if all.len() as u64 > BLOCK {
                                    Bytes::copy_from_slice(b)
                                } else {
                                    all.slice(from..to)
                                }
                            })
                            .ok_or_else(|| {
                                Arc::new(read_error(
                                    "read",
                                    &id.key,
                                    format!("asked for bytes {first}..{end}, got {}", all.len()),
                                ))
                            })
                    });
                    if let Ok(b) = &got {
                        memory.insert(id.clone(), b.clone()).await;
                        // moka evicts in batches, late: without this the
                        // memory tier holds well over --cache-size until
                        // its next housekeeping.
                        memory.run_pending_tasks().await;
                        if let Some(d) = disk {
                            d.put_blocking(id.clone(), b.clone()).await;
                        }
                    }
                    // A failed fetch is not kept: the next read asks again.
                    crate::lock(&flying).remove(&id);
                    got
                }
                .boxed()
                .shared()
            })
            .collect()
    }

    /// Block `index` of object `o` if memory or disk holds it (a block
    /// found on disk goes back into memory), without fetching it; counted as
    /// a hit when a reader asked ([`Want::Read`]).
    pub async fn cached(&self, o: &Pinned, index: u64, want: Want) -> Option<Bytes> {
        let id = o.block_id(index);
        let demand = want == Want::Read;
        if let Some(b) = self.memory.get(&id).await {
            if demand {
                self.metrics.memory_hits.inc();
            }
            return Some(b);
        }
        let b = self.disk.as_ref()?.clone().get_blocking(id.clone()).await?;
        if demand {
            self.metrics.disk_hits.inc();
        }
        self.memory.insert(id, b.clone()).await;
        // moka evicts in batches, late: without this the memory tier holds
        // well over --cache-size until its next housekeeping.
        self.memory.run_pending_tasks().await;
        Some(b)
    }

    /// Bytes `range` of `key`, fetched now and kept nowhere (a random
    /// reader's small request; counted as a miss).
    pub async fn fetch_uncached(
        &self,
        loc: &Arc<dyn Location>,
        key: &str,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        self.metrics.misses.inc();
        let b = loc.read_range(key, range, if_match).await?;
        self.metrics.fetched.inc_by(b.len() as u64);
        Ok(b)
    }

    /// A reader was served a block its read-ahead fetched: a memory hit.
    pub fn served_ahead(&self) {
        self.metrics.memory_hits.inc();
    }

    /// Drops every cached block (the store changed in unknown places).
    pub fn forget_all(&self) {
        self.memory.invalidate_all();
    }

    /// Drops every cached block of `key` (all versions): after a write
    /// through the mount, nothing old is served even without an ETag.
    pub fn forget_key(&self, key: &str) {
        let key = key.to_string();
        let _ = self
            .memory
            .invalidate_entries_if(move |id, _| &*id.key == key.as_str());
    }
}

/// A shared error, rebuilt for each waiter.
pub(super) fn clone_error(e: &LocationError) -> LocationError {
    match e {
        LocationError::NotFound { location, key } => LocationError::NotFound {
            location: location.clone(),
            key: key.clone(),
        },
        LocationError::Changed {
            location,
            key,
            expected,
        } => LocationError::Changed {
            location: location.clone(),
            key: key.clone(),
            expected: expected.clone(),
        },
        other => LocationError::Io {
            location: String::new(),
            op: "read",
            key: String::new(),
            message: other.to_string(),
            transient: other.is_transient(),
        },
    }
}

/// Blocks as files named by a hash of their id, each followed by its CRC32C;
/// the oldest go when the directory is over its size. Cheap to clone (for
/// the blocking threads).
#[derive(Clone)]
struct DiskCache {
    dir: Arc<PathBuf>,
    index: moka::sync::Cache<String, u64>,
}

impl DiskCache {
    fn new(dir: PathBuf, size: u64) -> std::io::Result<DiskCache> {
        let dir = dir.join("blocks");
        // Blocks of an earlier run may belong to versions that changed since;
        // they are keyed by ETag so they would be safe, but their sizes are
        // not in the index: start empty.
        let _ = std::fs::remove_dir_all(&dir);
        crate::shared::private::own_dir(&dir)?;
        let evict_dir = dir.clone();
        let index = moka::sync::Cache::builder()
            .max_capacity(size)
            .weigher(|_, len: &u64| u32::try_from(*len).unwrap_or(u32::MAX))
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .eviction_listener(move |name: Arc<String>, _, _| {
                let _ = std::fs::remove_file(evict_dir.join(name.as_str()));
            })
            .build();
        Ok(DiskCache {
            dir: Arc::new(dir),
            index,
        })
    }

    fn name(id: &BlockId) -> String {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(id);
        format!("{h:016x}-{}", id.index)
    }

    /// [`get`](Self::get) on a blocking thread.
    async fn get_blocking(self, id: BlockId) -> Option<Bytes> {
        tokio::task::spawn_blocking(move || self.get(&id))
            .await
            .ok()
            .flatten()
    }

    /// [`put`](Self::put) on a blocking thread.
    async fn put_blocking(self, id: BlockId, body: Bytes) {
        let _ = tokio::task::spawn_blocking(move || self.put(&id, &body)).await;
    }

    fn get(&self, id: &BlockId) -> Option<Bytes> {
        let name = Self::name(id);
        self.index.get(&name)?;
        let mut raw = std::fs::read(self.dir.join(&name)).ok()?;
        let body_len = raw.len().checked_sub(4)?;
        let want = u32::from_be_bytes(raw[body_len..].try_into().ok()?);
        if crc32c::crc32c(&raw[..body_len]) != want {
            tracing::warn!(file = %self.dir.join(&name).display(), "disk cache block failed its checksum; fetching again");
            self.index.invalidate(&name);
            return None;
        }
        raw.truncate(body_len);
        Some(Bytes::from(raw))
    }

    fn put(&self, id: &BlockId, body: &Bytes) {
        use std::io::Write;
        let name = Self::name(id);
        let path: &Path = &self.dir;
        let tmp = path.join(format!(".{name}.tmp"));
        let crc = crc32c::crc32c(body).to_be_bytes();
        let written = crate::shared::private::create_file(&tmp).and_then(|mut f| {
            f.write_all(body)?;
            f.write_all(&crc)
        });
        if written.is_ok() && std::fs::rename(&tmp, path.join(&name)).is_ok() {
            self.index.insert(name, body.len() as u64 + 4);
            // Evict now, not when moka gets round to it: the directory must
            // stay within its size.
            self.index.run_pending_tasks();
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::memory::MemoryLocation;

    /// Key `k` at version `v1`, `size` bytes.
    fn object(size: u64) -> Pinned {
        Pinned {
            key: "k".into(),
            version: "v1".into(),
            if_match: None,
            size,
        }
    }

    /// A full cache of blocks read twice each still keeps a block fetched
    /// once (a read-ahead block): its next read costs no GET.
    #[tokio::test]
    async fn a_block_fetched_into_a_full_cache_is_kept_for_its_reader() {
        let memory = Arc::new(MemoryLocation::new("cache"));
        let size = 8 * BLOCK;
        memory.insert("k", vec![0u8; size as usize]);
        let loc: Arc<dyn Location> = memory.clone();
        let cache = BlockCache::new(3 * BLOCK, None).expect("cache");
        for _ in 0..2 {
            for i in 0..3 {
                cache
                    .block(&loc, &object(size), i, Want::Read)
                    .await
                    .expect("a block");
            }
        }
        assert_eq!(memory.counts().gets, 3, "three GETs fill it");
        cache
            .block(&loc, &object(size), 3, Want::Read)
            .await
            .expect("block 3");
        cache.memory.run_pending_tasks().await;
        cache
            .block(&loc, &object(size), 3, Want::Read)
            .await
            .expect("block 3 again");
        assert_eq!(
            memory.counts().gets,
            4,
            "block 3 was fetched once and served from the cache the second time"
        );
        assert!(
            cache.memory.weighted_size() <= 3 * BLOCK,
            "the cache stays within its size: {}",
            cache.memory.weighted_size()
        );
    }

    /// Blocks evicted from a one-block memory tier are read back from disk
    /// (one file per block, its I/O on blocking threads, which a
    /// current-thread runtime still serves); a corrupt file is fetched again.
    #[tokio::test(flavor = "current_thread")]
    async fn blocks_come_back_from_the_disk_tier_and_a_corrupt_one_is_fetched_again() {
        let memory = Arc::new(MemoryLocation::new("disk"));
        let size = 4 * BLOCK;
        let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        memory.insert("k", body.clone());
        let loc: Arc<dyn Location> = memory.clone();
        let dir = tempfile::tempdir().expect("a temp dir");
        let metrics = MountMetrics::default();
        let cache = BlockCache::new(BLOCK, Some((dir.path().to_path_buf(), 64 * BLOCK)))
            .expect("cache")
            .with_metrics(metrics.clone());
        let read_all = || async {
            for i in 0..4 {
                let b = cache
                    .block(&loc, &object(size), i, Want::Read)
                    .await
                    .expect("a block");
                let at = (i * BLOCK) as usize;
                assert!(b[..] == body[at..at + BLOCK as usize], "block {i}");
            }
        };
        read_all().await;
        let files = || {
            std::fs::read_dir(dir.path().join("blocks"))
                .expect("the blocks directory")
                .map(|e| e.expect("an entry").path())
                .collect::<Vec<_>>()
        };
        assert_eq!(files().len(), 4, "one file per block");
        read_all().await;
        assert_eq!(memory.counts().gets, 4, "the second pass fetched nothing");
        assert!(metrics.disk_hits.get() >= 3, "{}", metrics.disk_hits.get());
        for p in files() {
            let mut raw = std::fs::read(&p).expect("a block file");
            raw[10] ^= 0xff;
            std::fs::write(&p, raw).expect("corrupt it");
        }
        read_all().await;
        assert!(memory.counts().gets >= 7, "{}", memory.counts().gets);
    }
}
