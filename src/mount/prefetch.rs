//! Read-ahead: which blocks to fetch before the reader asks for them, and
//! how much memory all open files' read-ahead may hold.
//!
//! Each open file keeps a window of blocks to fetch beyond the current read.
//! It starts small, doubles on every read that continues where the previous
//! one ended (or skips a little forward, as readers with their own buffers
//! do), up to [`MAX_WINDOW`] or the file's share of the [`Budget`], and drops
//! back to nothing on a jump elsewhere: a random reader then pays for exactly
//! the blocks it touches, while a sequential reader soon has many ranged GETs
//! in flight at once. The reader in `reader.rs` issues the window's blocks.
//!
//! The budget: half of `--cache-size` (whole blocks) is for read-ahead, the
//! other half is the memory block cache, so the two together stay within
//! `--cache-size`. Every block a window fetched and its reader has not passed
//! yet (in flight or waiting) holds one permit of the budget. The files
//! reading sequentially share it equally, each at most [`MAX_WINDOW`] and at
//! least [`MIN_SHARE`] blocks; a window only grows into free permits, so when
//! more files read than the budget has room for, the last ones get no
//! read-ahead (only the blocks they read) until others pass their blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Size of one cached block: small enough that a random 4 KiB read does not
/// pull much more than it needs, large enough that a GET's fixed cost is
/// small next to its transfer.
pub const BLOCK: u64 = 1024 * 1024;
/// Blocks fetched ahead once a reader is sequential: 32 MiB of ranged GETs
/// in flight per reader keeps a fast server busy; eight readers get this
/// window from the default 512 MiB cache's budget (256 blocks).
pub const MAX_WINDOW: u64 = 32;
/// Window after the first sequential step.
const FIRST_WINDOW: u64 = 2;
/// The smallest share of the budget a sequential reader is given: one block
/// being read while the next one arrives.
pub const MIN_SHARE: u64 = 2;
/// A forward skip of at most this many bytes still counts as sequential.
const FORWARD_SLACK: u64 = 16 * 1024 * 1024;
/// A step back of at most this many bytes (a re-read of the tail) does too.
const BACKWARD_SLACK: u64 = 1024 * 1024;

/// A run of contiguous reads that started elsewhere than at offset 0 counts
/// as a scan once it covered this much: a random reader's large read (which
/// the kernel splits into contiguous 128 KiB requests) is not mistaken for
/// one, so a 1 MiB random read costs about 1 MiB, not a window more.
pub const SCAN_AFTER: u64 = 2 * 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadAhead {
    /// Where the last read ended; `None` before the first read.
    last_end: Option<u64>,
    /// Where the current run of contiguous reads started.
    run_start: u64,
    window: u64,
}

impl ReadAhead {
    /// Records a read of `len` bytes at `offset` of a `size`-byte object and
    /// returns the blocks to fetch ahead of it (none past the end), at most
    /// `max` (the reader's share of the budget).
    pub fn on_read(&mut self, offset: u64, len: u64, size: u64, max: u64) -> std::ops::Range<u64> {
        let contiguous = match self.last_end {
            None => false,
            Some(end) => {
                // A skip forward stays contiguous within the slack or the
                // window already fetched (the blocks skipped are let go).
                (offset >= end && offset - end <= FORWARD_SLACK.max(self.window * BLOCK))
                    || (offset < end && end - offset <= BACKWARD_SLACK)
            }
        };
        if !contiguous {
            self.run_start = offset;
        }
        let end = offset.saturating_add(len).min(size);
        // A read from the start looks like the beginning of a scan; a run
        // from elsewhere becomes one after SCAN_AFTER bytes.
        let sequential = self.run_start == 0 || end.saturating_sub(self.run_start) >= SCAN_AFTER;
        self.window = if sequential {
            (self.window * 2).max(FIRST_WINDOW).min(max.min(MAX_WINDOW))
        } else {
            0
        };
        self.last_end = Some(end);
        let blocks = size.div_ceil(BLOCK);
        let next = end.div_ceil(BLOCK);
        next.min(blocks)..(next + self.window).min(blocks)
    }

    /// Blocks ahead of the reader now; 0 for a random reader.
    pub fn window(&self) -> u64 {
        self.window
    }
}

/// The read-ahead memory of every open file of one mount (see the module's
/// header for the rule).
#[derive(Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    blocks: u64,
    /// Files reading sequentially now.
    sequential: AtomicU64,
    /// The most permits held at once (for tests and the curious).
    peak: AtomicU64,
}

impl Budget {
    /// Splits `cache_bytes` between read-ahead (the returned budget) and the
    /// memory block cache (the returned byte count).
    pub fn split(cache_bytes: u64) -> (Budget, u64) {
        let budget = Budget::new(cache_bytes / 2 / BLOCK);
        let memory = cache_bytes - budget.blocks * BLOCK;
        (budget, memory)
    }

    /// A budget of `blocks` blocks.
    pub fn new(blocks: u64) -> Budget {
        let permits = usize::try_from(blocks)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(permits)),
            blocks: permits as u64,
            sequential: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        }
    }

    /// The window a sequential reader may have now (itself counted).
    pub fn share(&self) -> u64 {
        let n = self.sequential.load(Ordering::Relaxed).max(1);
        (self.blocks / n).clamp(MIN_SHARE, MAX_WINDOW)
    }

    /// A reader starts (`true`) or stops reading sequentially.
    pub fn set_sequential(&self, on: bool) {
        if on {
            self.sequential.fetch_add(1, Ordering::Relaxed);
        } else {
            self.sequential.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Files reading sequentially now.
    pub fn sequential(&self) -> u64 {
        self.sequential.load(Ordering::Relaxed)
    }

    /// Room for one more block ahead, if there is any.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.peak.fetch_max(self.in_use(), Ordering::Relaxed);
        Some(permit)
    }

    /// Blocks held by windows now.
    pub fn in_use(&self) -> u64 {
        self.blocks - self.permits.available_permits() as u64
    }

    /// The most blocks windows held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

/// The blocks a read of `len` bytes at `offset` touches.
pub fn blocks_of(offset: u64, len: u64, size: u64) -> std::ops::Range<u64> {
    let end = offset.saturating_add(len).min(size);
    if end <= offset {
        return 0..0;
    }
    offset / BLOCK..end.div_ceil(BLOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_sequential_reader_gets_a_growing_window_up_to_the_maximum() {
        let mut r = ReadAhead::default();
        let size = 1024 * MIB;
        let mut windows = Vec::new();
        let mut off = 0;
        for _ in 0..8 {
            let ahead = r.on_read(off, 128 * 1024, size, MAX_WINDOW);
            windows.push(ahead.end - ahead.start);
            off += 128 * 1024;
        }
        assert_eq!(windows, vec![2, 4, 8, 16, 32, 32, 32, 32]);
    }

    #[test]
    fn a_jump_drops_the_window_and_fetches_nothing_ahead() {
        let mut r = ReadAhead::default();
        let size = 1024 * MIB;
        r.on_read(0, MIB, size, MAX_WINDOW);
        r.on_read(MIB, MIB, size, MAX_WINDOW);
        let ahead = r.on_read(500 * MIB, 4096, size, MAX_WINDOW);
        assert!(ahead.is_empty(), "{ahead:?}");
        // ... and reading on from there grows it again once the run is a
        // scan (SCAN_AFTER bytes), not before.
        let mut off = 500 * MIB + 4096;
        while off + 128 * 1024 - 500 * MIB < SCAN_AFTER {
            let ahead = r.on_read(off, 128 * 1024, size, MAX_WINDOW);
            assert!(ahead.is_empty(), "at {off}: {ahead:?}");
            off += 128 * 1024;
        }
        let ahead = r.on_read(off, 128 * 1024, size, MAX_WINDOW);
        assert_eq!(ahead.end - ahead.start, 2);
    }

    #[test]
    fn a_large_random_read_split_by_the_kernel_fetches_nothing_ahead() {
        let mut r = ReadAhead::default();
        let size = 1024 * MIB;
        for at in [700 * MIB + 12_288, 40 * MIB, 333 * MIB] {
            // 1 MiB as eight 128 KiB requests.
            for k in 0..8 {
                let ahead = r.on_read(at + k * 128 * 1024, 128 * 1024, size, MAX_WINDOW);
                assert!(ahead.is_empty(), "{at} + {k}: {ahead:?}");
            }
        }
    }

    #[test]
    fn small_skips_forward_and_back_stay_sequential() {
        let mut r = ReadAhead::default();
        let size = 1024 * MIB;
        r.on_read(0, MIB, size, MAX_WINDOW);
        assert!(!r.on_read(MIB + 4 * MIB, MIB, size, MAX_WINDOW).is_empty());
        assert!(!r.on_read(5 * MIB, MIB, size, MAX_WINDOW).is_empty());
        assert!(r.on_read(100 * MIB, MIB, size, MAX_WINDOW).is_empty());
    }

    #[test]
    fn read_ahead_never_goes_past_the_end() {
        let mut r = ReadAhead::default();
        let size = 3 * MIB + 10;
        let ahead = r.on_read(0, MIB, size, MAX_WINDOW);
        assert_eq!(ahead, 1..3);
        for _ in 0..5 {
            r.on_read(0, MIB, size, MAX_WINDOW);
        }
        let ahead = r.on_read(MIB, 2 * MIB + 10, size, MAX_WINDOW);
        assert!(ahead.is_empty(), "{ahead:?}");
    }

    #[test]
    fn a_read_touches_the_blocks_it_spans() {
        assert_eq!(blocks_of(0, 1, 10 * MIB), 0..1);
        assert_eq!(blocks_of(MIB - 1, 2, 10 * MIB), 0..2);
        assert_eq!(blocks_of(MIB, MIB, 10 * MIB), 1..2);
        assert_eq!(blocks_of(9 * MIB, 4 * MIB, 9 * MIB + 5), 9..10);
        assert_eq!(blocks_of(20 * MIB, 4096, 10 * MIB), 0..0);
    }

    #[test]
    fn the_cache_size_is_split_between_the_cache_and_the_windows() {
        let (budget, memory) = Budget::split(512 * MIB);
        assert_eq!((budget.blocks(), memory), (256, 256 * MIB));
        let (budget, memory) = Budget::split(3 * MIB + 5);
        assert_eq!((budget.blocks(), memory), (1, 2 * MIB + 5));
        let (budget, memory) = Budget::split(MIB);
        assert_eq!((budget.blocks(), memory), (0, MIB));
    }

    #[test]
    fn sequential_readers_share_the_budget_equally_within_bounds() {
        let b = Budget::new(64);
        assert_eq!(b.share(), MAX_WINDOW, "one reader: the largest window");
        for _ in 0..4 {
            b.set_sequential(true);
        }
        assert_eq!(b.share(), 16);
        for _ in 0..60 {
            b.set_sequential(true);
        }
        assert_eq!(b.share(), MIN_SHARE, "never below two blocks");
        let held: Vec<_> = (0..64).map(|_| b.take().expect("a permit")).collect();
        assert!(b.take().is_none(), "no permit past the budget");
        assert_eq!((b.in_use(), b.peak()), (64, 64));
        drop(held);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn the_window_stays_within_the_readers_share() {
        let mut r = ReadAhead::default();
        let mut off = 0;
        for _ in 0..8 {
            let ahead = r.on_read(off, MIB, 1024 * MIB, 5);
            assert!(ahead.end - ahead.start <= 5, "{ahead:?}");
            off += MIB;
        }
        assert_eq!(r.window(), 5);
    }
}
