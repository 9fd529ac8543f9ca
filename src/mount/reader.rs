//! One open file's reads: the blocks a read touches, and the read-ahead
//! window streamed in front of a sequential reader.
//!
//! Each handle opened for reading has its own [`Reader`], pinned to the
//! version seen at open. A read asks [`ReadAhead`] whether it continues a
//! sequential scan; if so, the blocks of the window in front of it that this
//! handle has not asked for yet are fetched now, in order, each as one task
//! (through the shared block cache, so readers of one block share its GET)
//! holding one permit of the mount's [`Budget`] until the reader has passed
//! the block. A block is asked for once per handle: the window remembers
//! what is in flight or done, so a read only adds the blocks that entered
//! the window since the last one. Backpressure comes from the window itself:
//! nothing is fetched more than a window ahead of the reader's position.
//!
//! A jump outside the window resets it: the blocks not needed by the read
//! are let go (fetches in flight finish into the cache in the background,
//! holding their permit until then, and nobody waits for them) and a random
//! reader gets only the blocks it touches. The blocks a read needs that are
//! not in the window come straight from the cache (memory, disk or a GET).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::location::{Location, LocationError, Result};
use crate::lock;

use tokio::sync::OwnedSemaphorePermit;

pub use super::cache::Pinned;
use super::cache::{clone_error, read_error, BlockCache, Want};
#[cfg(test)]
use super::prefetch::MAX_WINDOW;
use super::prefetch::{blocks_of, Budget, ReadAhead, BLOCK};

/// The most blocks one read-ahead GET asks for (8 MiB).
pub const MAX_RUN: u64 = 8;

/// The smallest request of a random read (and its alignment).
pub const RANDOM_REQUEST: u64 = 64 * 1024;

/// A block fetched (or being fetched) ahead of the reader.
type Fetch = Shared<BoxFuture<'static, std::result::Result<Bytes, Arc<LocationError>>>>;

struct Slot {
    fetch: Fetch,
    /// Its share of the budget, held by the slot and by the fetch: released
    /// once the reader passed the block and the fetch ended.
    _permit: Arc<tokio::sync::OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Window {
    ahead: ReadAhead,
    slots: BTreeMap<u64, Slot>,
    /// Blocks below this one were issued (or passed) since the last reset.
    issued_to: u64,
    /// Counted among the budget's sequential readers.
    sequential: bool,
    /// Blocks this handle fetched ahead in all (for tests).
    issued: u64,
}

pub struct Reader {
    object: Arc<Pinned>,
    loc: Arc<dyn Location>,
    blocks: Arc<BlockCache>,
    budget: Arc<Budget>,
    window: Mutex<Window>,
}

impl Reader {
    pub fn new(
        object: Pinned,
        loc: Arc<dyn Location>,
        blocks: Arc<BlockCache>,
        budget: Arc<Budget>,
    ) -> Reader {
        Reader {
            object: Arc::new(object),
            loc,
            blocks,
            budget,
            window: Mutex::default(),
        }
    }

    /// Up to `len` bytes at `offset` (fewer at the end of the object).
    pub async fn read(&self, offset: u64, len: u32) -> Result<Vec<u8>> {
        let size = self.object.size;
        let needed = blocks_of(offset, u64::from(len), size);
        let Some(slots) = self.plan(offset, u64::from(len), &needed) else {
            return self.read_random(offset, len, needed).await;
        };
        let got =
            futures::future::try_join_all(needed.clone().zip(slots).map(|(i, slot)| async move {
                match slot {
                    Some(fetch) => {
                        self.blocks.served_ahead();
                        fetch.await.map_err(|e| clone_error(&e))
                    }
                    None => self.block(i).await,
                }
            }))
            .await;
        let got = match got {
            Ok(got) => got,
            Err(e) => {
                // A failed fetch is not kept: the next read asks again.
                lock(&self.window).slots.retain(|i, _| !needed.contains(i));
                return Err(e);
            }
        };
        let end = offset.saturating_add(u64::from(len)).min(size);
        Ok(copy_out(offset, end, needed.zip(got)))
    }

    /// Blocks in front of the reader now (0 for a random reader).
    pub fn window(&self) -> u64 {
        lock(&self.window).ahead.window()
    }

    /// Blocks fetched ahead by this handle since it was opened.
    pub fn issued(&self) -> u64 {
        lock(&self.window).issued
    }

    /// Blocks this handle holds ahead (in flight or waiting for the reader).
    pub fn held(&self) -> usize {
        lock(&self.window).slots.len()
    }

    /// Records the read, moves the window and issues its new blocks;
    /// returns, per needed block, the window's fetch of it if there is one,
    /// or `None` for a random read (one that continues no scan).
    fn plan(&self, offset: u64, len: u64, needed: &Range<u64>) -> Option<Vec<Option<Fetch>>> {
        let mut w = lock(&self.window);
        let ahead = w
            .ahead
            .on_read(offset, len, self.object.size, self.budget.share());
        // A reader with nothing left ahead (a small file, or the end of a
        // large one) takes no share of the budget from the others.
        let sequential = w.ahead.window() > 0 && !ahead.is_empty();
        if sequential != w.sequential {
            self.budget.set_sequential(sequential);
            w.sequential = sequential;
        }
        if sequential {
            // Blocks the reader has passed are done with.
            w.slots.retain(|i, _| *i >= needed.start);
        } else {
            // A jump: keep only what this read needs; the rest is let go.
            w.slots.retain(|i, _| needed.contains(i));
            w.issued_to = 0;
        }
        // The new blocks of the window go out in runs, one GET each: runs
        // of up to a quarter of the window (at most MAX_RUN blocks), cut at
        // multiples of their length so that readers of one file at the same
        // window size ask for the same runs and share them.
        // The window's end moves a block at a time as the reader advances:
        // a run is issued once it is whole (its blocks are all in the
        // window), except at the end of the object, so a steady reader
        // still has between 3/4 of its window and all of it in flight.
        let run_len = (w.ahead.window() / 4).clamp(1, MAX_RUN);
        let limit = if ahead.end >= self.object.size.div_ceil(BLOCK) {
            ahead.end
        } else {
            ahead.end / run_len * run_len
        };
        let mut i = w.issued_to.max(ahead.start);
        let mut run: Vec<(u64, OwnedSemaphorePermit)> = Vec::new();
        while i < limit {
            if w.slots.contains_key(&i) {
                self.issue(&mut w, std::mem::take(&mut run));
                i += 1;
                w.issued_to = i;
                continue;
            }
            let Some(permit) = self.budget.take() else {
                break;
            };
            run.push((i, permit));
            i += 1;
            if i.is_multiple_of(run_len) {
                self.issue(&mut w, std::mem::take(&mut run));
                w.issued_to = i;
            }
        }
        if !run.is_empty() {
            w.issued_to = i;
            self.issue(&mut w, run);
        }
        // A random read (the ReadAhead saw no scan) that the window holds
        // nothing of gets its own small request.
        let slots: Vec<Option<Fetch>> = needed
            .clone()
            .map(|i| w.slots.get(&i).map(|s| s.fetch.clone()))
            .collect();
        if w.ahead.window() == 0 && slots.iter().all(Option::is_none) {
            return None;
        }
        Some(slots)
    }

    /// A read that continues no scan: served from the block cache when it
    /// holds every block the read touches, otherwise by one ranged GET of
    /// the bytes asked for, widened to [`RANDOM_REQUEST`] boundaries (not
    /// whole blocks: a 4 KiB read costs 64 KiB, not 1 MiB) and not cached
    /// (the kernel's page cache keeps what was read).
    async fn read_random(&self, offset: u64, len: u32, needed: Range<u64>) -> Result<Vec<u8>> {
        let o = &self.object;
        let end = offset.saturating_add(u64::from(len)).min(o.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut cached = Vec::new();
        for i in needed.clone() {
            match self.blocks.cached(o, i, Want::Read).await {
                Some(b) => cached.push(b),
                None => break,
            }
        }
        if cached.len() as u64 == needed.end - needed.start {
            return Ok(copy_out(offset, end, needed.zip(cached)));
        }
        let from = offset / RANDOM_REQUEST * RANDOM_REQUEST;
        let to = end
            .div_ceil(RANDOM_REQUEST)
            .saturating_mul(RANDOM_REQUEST)
            .min(o.size);
        let got = self
            .blocks
            .fetch_uncached(&self.loc, &o.key, from..to, o.if_match.as_deref())
            .await?;
        let skip = (offset - from) as usize;
        let take = (end - offset) as usize;
        got.get(skip..skip + take)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                read_error(
                    "read",
                    &o.key,
                    format!("asked for bytes {from}..{to}, got {} bytes", got.len()),
                )
            })
    }

    /// Starts fetching a run of consecutive blocks ahead of the reader, now,
    /// with one GET; each block gets its slot.
    fn issue(&self, w: &mut Window, run: Vec<(u64, OwnedSemaphorePermit)>) {
        let (Some(&(first, _)), Some(&(last, _))) = (run.first(), run.last()) else {
            return;
        };
        let permits: Vec<Arc<OwnedSemaphorePermit>> =
            run.into_iter().map(|(_, p)| Arc::new(p)).collect();
        let held = permits.clone();
        let (object, loc, blocks) = (self.object.clone(), self.loc.clone(), self.blocks.clone());
        let task = tokio::spawn(async move {
            let got = blocks
                .blocks(&loc, &object, first..last + 1, Want::Ahead)
                .await;
            drop(held);
            got.into_iter()
                .map(|b| b.map_err(Arc::new))
                .collect::<Vec<_>>()
        });
        let key = self.object.key.clone();
        let all = async move {
            task.await
                .map_err(|e| Arc::new(read_error("read ahead", &key, e.to_string())))
        }
        .boxed()
        .shared();
        for ((k, index), permit) in (first..=last).enumerate().zip(permits) {
            let all = all.clone();
            let object = self.object.clone();
            let fetch = async move {
                match all.await {
                    Ok(blocks) => blocks.get(k).cloned().unwrap_or_else(|| {
                        Err(Arc::new(read_error(
                            "read ahead",
                            &object.key,
                            format!("block {index} missing from its run"),
                        )))
                    }),
                    Err(e) => Err(e),
                }
            };
            w.slots.insert(
                index,
                Slot {
                    fetch: fetch.boxed().shared(),
                    _permit: permit,
                },
            );
            w.issued += 1;
        }
    }

    async fn block(&self, index: u64) -> Result<Bytes> {
        self.blocks
            .block(&self.loc, &self.object, index, Want::Read)
            .await
    }
}

/// Bytes `offset..end` of the object out of its blocks `(index, bytes)`.
fn copy_out(offset: u64, end: u64, blocks: impl Iterator<Item = (u64, Bytes)>) -> Vec<u8> {
    let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
    for (i, b) in blocks {
        let start = i * BLOCK;
        let from = offset.max(start) - start;
        let to = (end.min(start + b.len() as u64)).saturating_sub(start);
        if from < to {
            out.extend_from_slice(&b[from as usize..to as usize]);
        }
    }
    out
}

impl Drop for Reader {
    fn drop(&mut self) {
        if lock(&self.window).sequential {
            self.budget.set_sequential(false);
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
