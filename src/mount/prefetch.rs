//! Read-ahead: which blocks to fetch before the reader asks for them.
//!
//! Each open file keeps a window of blocks to fetch beyond the current read.
//! It starts small, doubles on every read that continues where the previous
//! one ended (or skips a little forward, as readers with their own buffers
//! do), up to [`MAX_WINDOW`], and drops back to nothing on a jump elsewhere:
//! a random reader then pays for exactly the blocks it touches, while a
//! sequential reader soon has many ranged GETs in flight at once.

/// Size of one cached block: small enough that a random 4 KiB read does not
/// pull much more than it needs, large enough that a GET's fixed cost is
/// small next to its transfer.
pub const BLOCK: u64 = 1024 * 1024;
/// Blocks fetched ahead once a reader is sequential: 32 MiB of ranged GETs
/// in flight per reader keeps a fast server busy; eight readers of this
/// window still fit in the default 512 MiB cache.
pub const MAX_WINDOW: u64 = 32;
/// Window after the first sequential step.
const FIRST_WINDOW: u64 = 2;
/// A forward skip of at most this many bytes still counts as sequential.
const FORWARD_SLACK: u64 = 16 * 1024 * 1024;
/// A step back of at most this many bytes (a re-read of the tail) does too.
const BACKWARD_SLACK: u64 = 1024 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadAhead {
    /// Where the last read ended; `None` before the first read.
    last_end: Option<u64>,
    window: u64,
}

impl ReadAhead {
    /// Records a read of `len` bytes at `offset` of a `size`-byte object and
    /// returns the blocks to fetch ahead of it (none past the end).
    pub fn on_read(&mut self, offset: u64, len: u64, size: u64) -> std::ops::Range<u64> {
        let sequential = match self.last_end {
            // The first read from the start looks like the beginning of a scan.
            None => offset == 0,
            Some(end) => {
                (offset >= end && offset - end <= FORWARD_SLACK)
                    || (offset < end && end - offset <= BACKWARD_SLACK)
            }
        };
        self.window = if sequential {
            (self.window * 2).clamp(FIRST_WINDOW, MAX_WINDOW)
        } else {
            0
        };
        let end = offset.saturating_add(len).min(size);
        self.last_end = Some(end);
        let blocks = size.div_ceil(BLOCK);
        let next = end.div_ceil(BLOCK);
        next.min(blocks)..(next + self.window).min(blocks)
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
            let ahead = r.on_read(off, 128 * 1024, size);
            windows.push(ahead.end - ahead.start);
            off += 128 * 1024;
        }
        assert_eq!(windows, vec![2, 4, 8, 16, 32, 32, 32, 32]);
    }

    #[test]
    fn a_jump_drops_the_window_and_fetches_nothing_ahead() {
        let mut r = ReadAhead::default();
        let size = 1024 * MIB;
        r.on_read(0, MIB, size);
        r.on_read(MIB, MIB, size);
        let ahead = r.on_read(500 * MIB, 4096, size);
        assert!(ahead.is_empty(), "{ahead:?}");
        // ... and reading on from there grows it again.
        let ahead = r.on_read(500 * MIB + 4096, 4096, size);
        assert_eq!(ahead.end - ahead.start, 2);
    }

    #[test]
    fn small_skips_forward_and_back_stay_sequential() {
        let mut r = ReadAhead::default();
        let size = 1024 * MIB;
        r.on_read(0, MIB, size);
        assert!(!r.on_read(MIB + 4 * MIB, MIB, size).is_empty());
        assert!(!r.on_read(5 * MIB, MIB, size).is_empty());
        assert!(r.on_read(100 * MIB, MIB, size).is_empty());
    }

    #[test]
    fn read_ahead_never_goes_past_the_end() {
        let mut r = ReadAhead::default();
        let size = 3 * MIB + 10;
        let ahead = r.on_read(0, MIB, size);
        assert_eq!(ahead, 1..3);
        for _ in 0..5 {
            r.on_read(0, MIB, size);
        }
        let ahead = r.on_read(MIB, 2 * MIB + 10, size);
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
}
