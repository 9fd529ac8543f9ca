//! The reader and its window over an in-memory location, in tokio's paused
//! time: latencies are virtual, so "did not wait" is measured exactly.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::location::memory::MemoryLocation;

const MIB: u64 = 1024 * 1024;
const READ: u32 = 128 * 1024;

/// Bytes that differ at every offset of every block.
fn body(len: u64, seed: u64) -> Vec<u8> {
    (0..len)
        .map(|i| ((i.wrapping_add(seed) * 2_654_435_761) >> 13) as u8)
        .collect()
}

struct Setup {
    memory: Arc<MemoryLocation>,
    blocks: Arc<BlockCache>,
    budget: Arc<Budget>,
}

impl Setup {
    /// A cache of `cache` bytes and a read-ahead budget of `budget` blocks.
    fn new(cache: u64, budget: u64) -> Setup {
        Setup {
            memory: Arc::new(MemoryLocation::new("reads")),
            blocks: Arc::new(BlockCache::new(cache, None).expect("a cache")),
            budget: Arc::new(Budget::new(budget)),
        }
    }

    fn put(&self, key: &str, body: &[u8]) -> Pinned {
        let etag = self.memory.insert(key, body.to_vec());
        Pinned {
            key: key.to_string(),
            version: etag.clone(),
            if_match: Some(etag),
            size: body.len() as u64,
        }
    }

    fn reader(&self, p: &Pinned) -> Reader {
        let loc: Arc<dyn Location> = self.memory.clone();
        Reader::new(p.clone(), loc, self.blocks.clone(), self.budget.clone())
    }
}

/// Reads `r` from `from` to the end in `READ`-byte reads, checking every
/// byte; returns the window after each read.
async fn read_to_end(r: &Reader, want: &[u8], from: u64) -> Vec<u64> {
    let mut windows = Vec::new();
    let mut off = from;
    loop {
        let got = r.read(off, READ).await.expect("a sequential read");
        if got.is_empty() {
            break;
        }
        assert!(
            got[..] == want[off as usize..off as usize + got.len()],
            "wrong bytes at {off}"
        );
        off += got.len() as u64;
        windows.push(r.window());
    }
    assert_eq!(off, want.len() as u64, "read to the end");
    windows
}

#[tokio::test(start_paused = true)]
async fn a_sequential_read_gets_each_block_once_in_order_with_a_growing_window() {
    let s = Setup::new(64 * MIB, 256);
    s.memory.set_latency(Duration::from_millis(5));
    let want = body(40 * MIB + 123, 1);
    let r = s.reader(&s.put("k", &want));
    let windows = read_to_end(&r, &want, 0).await;
    let c = s.memory.counts();
    assert_eq!(c.get_bytes, want.len() as u64, "each byte fetched once");
    assert_eq!(
        r.issued(),
        40,
        "every block but the first asked for ahead, once"
    );
    // In the order of the file, each GET where the previous one ended, and
    // larger ones as the window grows (runs of up to MAX_RUN blocks).
    let ranges: Vec<_> = s.memory.get_ranges().into_iter().map(|(_, r)| r).collect();
    let mut at = 0;
    for r in &ranges {
        assert_eq!(r.start, at, "GETs in the order of the file: {ranges:?}");
        assert!(r.end - r.start <= MAX_RUN * BLOCK, "{r:?}");
        at = r.end;
    }
    assert_eq!(at, want.len() as u64);
    assert!(
        ranges.iter().any(|r| r.end - r.start == MAX_RUN * BLOCK),
        "no GET of a whole run: {ranges:?}"
    );
    // 2 + 4 + 8 single blocks while the window grows (runs of 1 and 2),
    // then runs of 4 and 8: far fewer GETs than blocks.
    assert!(c.gets <= 16, "{} GETs for 41 blocks: {ranges:?}", c.gets);
    let mut grown = windows.clone();
    grown.dedup();
    assert_eq!(
        grown[..5],
        [2, 4, 8, 16, 32],
        "the window doubles: {windows:?}"
    );
    assert!(windows.iter().all(|w| *w <= MAX_WINDOW), "{windows:?}");
}

#[tokio::test(start_paused = true)]
async fn a_seek_resets_the_window_and_does_not_wait_for_the_fetches_it_left() {
    let s = Setup::new(256 * MIB, 256);
    // The window's blocks past 8 MiB answer after a minute; the rest at once.
    s.memory.delay_gets(|_, r| match r.start / BLOCK {
        8..=60 => Duration::from_secs(60),
        _ => Duration::from_millis(10),
    });
    let want = body(100 * MIB, 2);
    let r = s.reader(&s.put("k", &want));
    let mut off = 0;
    while off < 4 * MIB {
        r.read(off, READ).await.expect("a read");
        off += u64::from(READ);
    }
    assert!(r.window() >= 16, "sequential by now: {}", r.window());
    assert!(s.budget.in_use() > 8, "slow blocks in flight ahead");

    let before = Instant::now();
    let got = r
        .read(80 * MIB + 5, 4096)
        .await
        .expect("the read after the seek");
    assert_eq!(got[..], want[(80 * MIB + 5) as usize..][..4096]);
    assert!(
        before.elapsed() < Duration::from_secs(1),
        "the read after the seek waited {:?} for the old window",
        before.elapsed()
    );
    assert_eq!((r.window(), r.held()), (0, 0), "the window is reset");

    // Reading on from there grows a new window from its first size, once
    // the run is a scan.
    let mut on = 80 * MIB + 5 + 4096;
    while r.window() == 0 {
        on += r.read(on, READ).await.expect("read on").len() as u64;
    }
    assert_eq!(r.window(), 2);
    assert!(on - (80 * MIB + 5) >= super::super::prefetch::SCAN_AFTER);
    // The fetches let go still end, into the cache, and give their
    // budget back (only the new window's blocks stay held).
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.budget.in_use() > r.held() as u64 {
        assert!(Instant::now() < deadline, "permits never came back");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let c = s.memory.counts();
    assert!(c.gets <= 61 + 3, "{} GETs", c.gets);
}

#[tokio::test(start_paused = true)]
async fn random_small_reads_cost_one_small_get_each_and_nothing_ahead() {
    let s = Setup::new(256 * MIB, 256);
    s.memory.set_latency(Duration::from_millis(5));
    let want = body(64 * MIB, 3);
    let r = s.reader(&s.put("k", &want));
    let mut asked = 0u64;
    for i in 0..20u64 {
        let block = (i * 37 + 11) % 64;
        // One read inside a 64 KiB piece, one across two pieces.
        let off = block * BLOCK
            + if i % 2 == 0 {
                1000
            } else {
                RANDOM_REQUEST - 100
            };
        let got = r.read(off, 4096).await.expect("a random read");
        assert!(
            got[..] == want[off as usize..off as usize + 4096],
            "block {block}"
        );
        asked += 4096;
    }
    let c = s.memory.counts();
    assert_eq!(c.gets, 20, "one GET per read");
    assert_eq!(
        c.get_bytes,
        10 * RANDOM_REQUEST + 10 * 2 * RANDOM_REQUEST,
        "each read widened to 64 KiB pieces, no more"
    );
    assert!(c.get_bytes <= 2 * 20 * RANDOM_REQUEST.max(asked / 20));
    assert_eq!((r.issued(), r.window()), (0, 0), "no read-ahead");
    for (_, range) in s.memory.get_ranges() {
        assert_eq!(range.start % RANDOM_REQUEST, 0, "{range:?} is not aligned");
    }
}

#[tokio::test(start_paused = true)]
async fn a_random_read_of_cached_blocks_fetches_nothing() {
    let s = Setup::new(256 * MIB, 256);
    let want = body(8 * MIB, 5);
    let p = s.put("k", &want);
    read_to_end(&s.reader(&p), &want, 0).await;
    let after_scan = s.memory.counts();
    assert_eq!(after_scan.get_bytes, 8 * MIB);
    let r = s.reader(&p);
    for off in [5 * MIB + 7, 2 * MIB - 10, 7 * MIB] {
        let got = r.read(off, 4096).await.expect("a random read");
        assert!(got[..] == want[off as usize..][..got.len()]);
    }
    assert_eq!(
        s.memory.counts().gets,
        after_scan.gets,
        "served from the block cache"
    );
}

#[tokio::test(start_paused = true)]
async fn a_skip_forward_within_the_window_keeps_it() {
    let s = Setup::new(256 * MIB, 256);
    s.memory.set_latency(Duration::from_millis(5));
    let want = body(100 * MIB, 6);
    let r = s.reader(&s.put("k", &want));
    let mut off = 0;
    while r.window() < MAX_WINDOW {
        off += r.read(off, READ).await.expect("a read").len() as u64;
    }
    // 20 MiB forward: past the 16 MiB slack, inside the 32-block window.
    let to = off + 20 * MIB;
    let got = r.read(to, READ).await.expect("the read after the skip");
    assert!(got[..] == want[to as usize..][..READ as usize]);
    assert_eq!(r.window(), MAX_WINDOW, "still sequential");
    // No byte fetched twice: the GETs do not overlap, and they cover no
    // more than the blocks up to the read after the skip and one window.
    let mut ranges: Vec<_> = s.memory.get_ranges().into_iter().map(|(_, r)| r).collect();
    ranges.sort_by_key(|r| r.start);
    for pair in ranges.windows(2) {
        assert!(pair[0].end <= pair[1].start, "overlap: {pair:?}");
    }
    let c = s.memory.counts();
    assert!(
        c.get_bytes <= ((to + u64::from(READ)).div_ceil(BLOCK) + MAX_WINDOW) * BLOCK,
        "{} bytes fetched",
        c.get_bytes
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_sequential_readers_share_the_budget_and_never_exceed_it() {
    const BUDGET: u64 = 8;
    const READERS: u64 = 4;
    let s = Setup::new(256 * MIB, BUDGET);
    s.memory.set_latency(Duration::from_millis(20));
    let objects: Vec<(Vec<u8>, Pinned)> = (0..READERS)
        .map(|n| {
            let want = body(24 * MIB, 10 + n);
            let p = s.put(&format!("f{n}"), &want);
            (want, p)
        })
        .collect();
    let readers: Vec<Reader> = objects.iter().map(|(_, p)| s.reader(p)).collect();
    futures::future::join_all(
        readers
            .iter()
            .zip(&objects)
            .map(|(r, (want, _))| read_to_end(r, want, 0)),
    )
    .await;
    assert!(
        s.budget.peak() <= BUDGET,
        "windows held {} blocks at once, over the budget of {BUDGET}",
        s.budget.peak()
    );
    // In flight at the store: the windows' blocks plus at most the one
    // block each reader is reading outside its window.
    let c = s.memory.counts();
    assert!(
        c.max_get_bytes_in_flight <= (BUDGET + READERS) * BLOCK,
        "{} bytes of GETs in flight at once",
        c.max_get_bytes_in_flight
    );
    for (n, r) in readers.iter().enumerate() {
        assert!(r.issued() > 0, "reader {n} had no window of its own");
    }
    assert_eq!(c.gets, READERS * 24, "each block once");
    assert_eq!(
        s.budget.sequential(),
        0,
        "readers at their end take no share"
    );
    drop(readers);
    assert_eq!(s.budget.in_use(), 0, "closed readers hold nothing");
}

#[tokio::test(start_paused = true)]
async fn a_failed_get_reaches_the_reader_as_an_error_and_a_later_read_asks_again() {
    let s = Setup::new(256 * MIB, 256);
    s.memory.set_latency(Duration::from_millis(5));
    s.memory.fail_gets(|_, r| r.start == 5 * BLOCK);
    let want = body(16 * MIB, 4);
    let r = s.reader(&s.put("k", &want));
    let mut off = 0;
    let err = loop {
        let read = tokio::time::timeout(Duration::from_secs(60), r.read(off, READ));
        match read.await.expect("a read that fails must not hang") {
            Ok(got) => off += got.len() as u64,
            Err(e) => break e,
        }
    };
    assert_eq!(off, 5 * MIB, "the error comes with the failed block");
    assert!(err.to_string().contains("injected failure"), "{err}");
    // A random reader of that block gets the error too.
    let other = s.reader(&s.put("k2", &want));
    assert!(other.read(5 * MIB + 77, 10).await.is_err());
    // Once the store answers again, the same read succeeds.
    s.memory.fail_gets(|_, _| false);
    let got = r.read(off, READ).await.expect("the read asked again");
    assert!(got[..] == want[off as usize..][..READ as usize]);
}
