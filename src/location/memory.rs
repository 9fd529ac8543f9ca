//! A location held in memory, for fast tests of the layers above (the
//! mount's read path, caches and prefetcher) without a server.
//!
//! It behaves like a bucket: keys are not paths (`a` and `a/b` may both
//! exist), a directory exists while a key starts with it, every write gets a
//! new ETag, and a read pinned with `if_match` to an older one fails with
//! [`LocationError::Changed`]. It counts what it is asked (GETs and their
//! ranges and bytes, HEADs, LISTs, PUTs, deletes, and the most GET bytes in
//! flight at once), and can be told to answer slowly or to fail: one latency
//! for every request, a delay and a failure chosen per ranged GET.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::{
    ByteSource, Checksum, DirItem, DirPage, Entry, Location, LocationError, ObjectInfo, Place,
    PosixMeta, Result, WriteMode, WriteOutcome,
};
use crate::lock;

/// Keys per listing page, as S3 sends at most.
const PAGE: usize = 1000;

/// Decides something per ranged GET: key and range in, answer out.
type PerGet<T> = Arc<dyn Fn(&str, &Range<u64>) -> T + Send + Sync>;

struct Stored {
    body: Bytes,
    meta: PosixMeta,
    etag: String,
    modified: SystemTime,
}

/// What the location was asked, so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub gets: u64,
    pub get_bytes: u64,
    pub heads: u64,
    pub lists: u64,
    pub puts: u64,
    pub put_bytes: u64,
    pub deletes: u64,
    /// The most bytes of ranged GETs in flight at one moment.
    pub max_get_bytes_in_flight: u64,
}

#[derive(Default)]
struct Faults {
    latency: Duration,
    get_delay: Option<PerGet<Duration>>,
    get_fails: Option<PerGet<bool>>,
}

pub struct MemoryLocation {
    name: String,
    objects: Mutex<BTreeMap<String, Stored>>,
    counts: Mutex<Counts>,
    /// Every ranged GET, in the order asked.
    ranges: Mutex<Vec<(String, Range<u64>)>>,
    in_flight: AtomicU64,
    faults: Mutex<Faults>,
    next_version: AtomicU64,
}

impl std::fmt::Debug for MemoryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLocation")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Takes a GET's bytes out of the in-flight count when it ends, answered
/// or dropped.
struct InFlight<'a>(&'a AtomicU64, u64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

impl MemoryLocation {
    /// An empty location described as `memory://NAME`.
    pub fn new(name: &str) -> MemoryLocation {
        MemoryLocation {
            name: name.to_string(),
            objects: Mutex::default(),
            counts: Mutex::default(),
            ranges: Mutex::default(),
            in_flight: AtomicU64::new(0),
            faults: Mutex::default(),
            next_version: AtomicU64::new(1),
        }
    }

    /// Stores `body` at `key` without counting a request (test setup).
    pub fn insert(&self, key: &str, body: impl Into<Bytes>) -> String {
        self.store(key, body.into(), PosixMeta::default())
    }

    fn store(&self, key: &str, body: Bytes, meta: PosixMeta) -> String {
        let n = self.next_version.fetch_add(1, Ordering::SeqCst);
        let etag = format!("\"{:08x}-{n}\"", crc32c::crc32c(&body));
        let stored = Stored {
            body,
            meta,
            etag: etag.clone(),
            modified: SystemTime::now(),
        };
        lock(&self.objects).insert(key.to_string(), stored);
        etag
    }

    /// Every request waits this long before it is answered.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.faults).latency = latency;
    }

    /// Ranged GETs wait as long as `delay` says (on top of the latency).
    pub fn delay_gets(
        &self,
        delay: impl Fn(&str, &Range<u64>) -> Duration + Send + Sync + 'static,
    ) {
        lock(&self.faults).get_delay = Some(Arc::new(delay));
    }

    /// Ranged GETs for which `fails` says yes fail (after their delay) with
    /// a permanent I/O error.
    pub fn fail_gets(&self, fails: impl Fn(&str, &Range<u64>) -> bool + Send + Sync + 'static) {
        lock(&self.faults).get_fails = Some(Arc::new(fails));
    }

    pub fn counts(&self) -> Counts {
        lock(&self.counts).clone()
    }

    /// The ranged GETs asked so far, in order.
    pub fn get_ranges(&self) -> Vec<(String, Range<u64>)> {
        lock(&self.ranges).clone()
    }

    fn count(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut lock(&self.counts));
    }

    async fn wait(&self, extra: Duration) {
        let latency = lock(&self.faults).latency + extra;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    fn not_found(&self, key: &str) -> LocationError {
        LocationError::NotFound {
            location: self.describe(),
            key: key.to_string(),
        }
    }

    fn io_err(&self, op: &'static str, key: &str, message: &str) -> LocationError {
        LocationError::Io {
            location: self.describe(),
            op,
            key: key.to_string(),
            message: message.to_string(),
            transient: false,
        }
    }

    fn info_of(s: &Stored) -> ObjectInfo {
        ObjectInfo {
            size: s.body.len() as u64,
            modified: Some(s.modified),
            etag: Some(s.etag.clone()),
            meta: s.meta,
            checksum: Some(Checksum::Crc32c(crc32c::crc32c(&s.body))),
            attrs: Default::default(),
        }
    }

    fn entry_of(key: &str, s: &Stored) -> Entry {
        Entry {
            key: key.to_string(),
            size: s.body.len() as u64,
            modified: Some(s.modified),
            etag: Some(s.etag.clone()),
            meta: None,
        }
    }

    /// The body of `key` at `range`, as a GET pinned to `if_match` sees it.
    fn slice(&self, key: &str, range: &Range<u64>, if_match: Option<&str>) -> Result<Bytes> {
        let objects = lock(&self.objects);
        let s = objects.get(key).ok_or_else(|| self.not_found(key))?;
        if let Some(expected) = if_match {
            if expected != s.etag {
                return Err(LocationError::Changed {
                    location: self.describe(),
                    key: key.to_string(),
                    expected: expected.to_string(),
                });
            }
        }
        let len = s.body.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(self.io_err(
                "read",
                key,
                &format!("range {range:?} is outside the object's {len} bytes"),
            ));
        }
        Ok(s.body.slice(range.start as usize..range.end as usize))
    }
}

#[async_trait]
impl Location for MemoryLocation {
    fn describe(&self) -> String {
        format!("memory://{}", self.name)
    }

    fn place(&self) -> Place {
        Place::S3 {
            endpoint: "memory".into(),
            bucket: self.name.clone(),
            prefix: String::new(),
        }
    }

    fn keys_are_paths(&self) -> bool {
        false
    }

    fn list(&self) -> BoxStream<'_, Result<Entry>> {
        let entries: Vec<Result<Entry>> = lock(&self.objects)
            .iter()
            .map(|(k, s)| Ok(Self::entry_of(k, s)))
            .collect();
        let pages = entries.len().div_ceil(PAGE).max(1) as u64;
        self.count(|c| c.lists += pages);
        Box::pin(futures::stream::iter(entries))
    }

    async fn stat(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.count(|c| c.heads += 1);
        self.wait(Duration::ZERO).await;
        Ok(lock(&self.objects).get(key).map(Self::info_of))
    }

    async fn stat_dir(&self, dir: &str) -> Result<Option<ObjectInfo>> {
        self.count(|c| c.lists += 1);
        self.wait(Duration::ZERO).await;
        let objects = lock(&self.objects);
        let first = objects.range(dir.to_string()..).next();
        Ok(match first {
            Some((k, s)) if k == dir => Some(Self::info_of(s)),
            Some((k, _)) if k.starts_with(dir) => Some(ObjectInfo::default()),
            _ => None,
        })
    }

    async fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        let len = range.end.saturating_sub(range.start);
        self.count(|c| c.gets += 1);
        lock(&self.ranges).push((key.to_string(), range.clone()));
        let now = self.in_flight.fetch_add(len, Ordering::SeqCst) + len;
        let _in_flight = InFlight(&self.in_flight, len);
        self.count(|c| c.max_get_bytes_in_flight = c.max_get_bytes_in_flight.max(now));
        let (delay, fails) = {
            let f = lock(&self.faults);
            let delay = f.get_delay.as_ref().map(|d| d(key, &range));
            let fails = f.get_fails.as_ref().is_some_and(|f| f(key, &range));
            (delay.unwrap_or_default(), fails)
        };
        self.wait(delay).await;
        if fails {
            return Err(self.io_err("read", key, "injected failure"));
        }
        let body = self.slice(key, &range, if_match)?;
        self.count(|c| c.get_bytes += body.len() as u64);
        Ok(body)
    }

    async fn write(
        &self,
        key: &str,
        source: Arc<dyn ByteSource>,
        meta: &PosixMeta,
        mode: WriteMode,
    ) -> Result<WriteOutcome> {
        let body = source.read_range(0..source.len()).await?;
        self.count(|c| {
            c.puts += 1;
            c.put_bytes += body.len() as u64;
        });
        self.wait(Duration::ZERO).await;
        if mode == WriteMode::CreateNew && lock(&self.objects).contains_key(key) {
            return Err(self.io_err("write", key, "the key exists (If-None-Match: *)"));
        }
        let crc = crc32c::crc32c(&body);
        let bytes = body.len() as u64;
        let etag = self.store(key, body, *meta);
        Ok(WriteOutcome {
            bytes,
            crc32c: Some(crc),
            stored: Some(Checksum::Crc32c(crc)),
            reported: Some(Checksum::Crc32c(crc)),
            etag: Some(etag),
            mtime_ns: None,
            mode: None,
        })
    }

    async fn list_dir(&self, dir: &str, token: Option<String>) -> Result<DirPage> {
        self.count(|c| c.lists += 1);
        self.wait(Duration::ZERO).await;
        let objects = lock(&self.objects);
        let start = token.unwrap_or_else(|| dir.to_string());
        let mut page = DirPage::default();
        let below = objects
            .range(start..)
            .take_while(|(k, _)| k.starts_with(dir));
        for (k, s) in below {
            let rest = &k[dir.len()..];
            if rest.is_empty() {
                page.marker = true;
                continue;
            }
            let item = match rest.find('/') {
                Some(i) => DirItem::Dir(format!("{dir}{}", &rest[..=i])),
                None => DirItem::File(Self::entry_of(k, s)),
            };
            if page.items.last() == Some(&item) {
                // One more key below a sub-directory already listed.
                continue;
            }
            if page.items.len() == PAGE {
                page.next = Some(k.clone());
                break;
            }
            page.items.push(item);
        }
        Ok(page)
    }

    async fn set_meta(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        self.count(|c| c.puts += 1);
        self.wait(Duration::ZERO).await;
        let body = match lock(&self.objects).get(key) {
            Some(s) => s.body.clone(),
            None => return Err(self.not_found(key)),
        };
        self.store(key, body, *meta);
        Ok(())
    }

    async fn make_dir(&self, key: &str, meta: &PosixMeta) -> Result<()> {
        self.count(|c| c.puts += 1);
        self.wait(Duration::ZERO).await;
        self.store(key, Bytes::new(), *meta);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.count(|c| c.deletes += 1);
        self.wait(Duration::ZERO).await;
        lock(&self.objects).remove(key);
        Ok(())
    }

    async fn stored_checksum(&self, key: &str) -> Result<Option<Checksum>> {
        self.count(|c| c.heads += 1);
        self.wait(Duration::ZERO).await;
        Ok(lock(&self.objects)
            .get(key)
            .map(|s| Checksum::Crc32c(crc32c::crc32c(&s.body))))
    }

    async fn clean_leftovers(&self) -> Result<u64> {
        Ok(0)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::MemorySource;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn it_reads_writes_lists_and_counts_like_a_bucket() {
        let m = MemoryLocation::new("t");
        let first = m.insert("a/b", &b"hello world"[..]);
        m.insert("a/c/d", &b"x"[..]);
        m.insert("z", &b""[..]);
        let got = m.read_range("a/b", 6..11, Some(&first)).await.unwrap();
        assert_eq!(&got[..], b"world");
        let dir = m.list_dir("a/", None).await.unwrap();
        let keys: Vec<&str> = dir.items.iter().map(DirItem::key).collect();
        assert_eq!(keys, vec!["a/b", "a/c/"]);
        assert!(m.stat_dir("a/c/").await.unwrap().is_some());
        assert!(m.stat_dir("q/").await.unwrap().is_none());
        let all: Vec<Entry> = m.list().try_collect().await.unwrap();
        assert_eq!(all.len(), 3);
        let src = Arc::new(MemorySource(Bytes::from_static(b"new")));
        let out = m
            .write("a/b", src, &PosixMeta::default(), WriteMode::Replace)
            .await
            .unwrap();
        assert_ne!(out.etag.as_deref(), Some(first.as_str()));
        let stale = m.read_range("a/b", 0..3, Some(&first)).await;
        assert!(
            matches!(stale, Err(LocationError::Changed { .. })),
            "{stale:?}"
        );
        assert_eq!(m.stat("a/b").await.unwrap().unwrap().size, 3);
        let c = m.counts();
        assert_eq!(
            (c.gets, c.get_bytes, c.heads, c.lists, c.puts, c.put_bytes),
            (2, 5, 1, 4, 1, 3)
        );
        assert_eq!(
            m.get_ranges(),
            vec![("a/b".into(), 6..11), ("a/b".into(), 0..3)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn injected_delays_and_failures_apply_per_get() {
        let m = MemoryLocation::new("t");
        m.insert("k", vec![7u8; 100]);
        m.delay_gets(|_, r| Duration::from_secs(r.start));
        m.fail_gets(|_, r| r.start == 50);
        let t = tokio::time::Instant::now();
        assert_eq!(m.read_range("k", 10..20, None).await.unwrap().len(), 10);
        assert_eq!(t.elapsed(), Duration::from_secs(10));
        let err = m.read_range("k", 50..60, None).await.unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        let both = futures::future::join(
            m.read_range("k", 5..35, None),
            m.read_range("k", 1..41, None),
        )
        .await;
        assert!(both.0.is_ok() && both.1.is_ok());
        assert_eq!(m.counts().max_get_bytes_in_flight, 70);
    }
}
