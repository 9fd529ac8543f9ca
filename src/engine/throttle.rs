//! The bandwidth limit (`--bytes-per-second`): one token bucket shared by
//! every transfer of an execution; and the byte meter behind the progress line.
//!
//! A reader takes the bytes it is about to pass on; the balance may go
//! negative (a chunk is larger than a second's worth at low limits), and the
//! reader then sleeps until the debt is paid. The rate therefore holds on
//! average over any window longer than a chunk's worth of time.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::report::Counters;
use crate::location::{ByteSource, Result};

/// Read size under a bandwidth limit: small enough that the limit holds
/// smoothly at a few MB/s, large enough to keep requests efficient.
const THROTTLED_SLICE: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct Throttle {
    rate: f64,
    /// (bytes available, when it was last refilled)
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    pub fn new(bytes_per_second: u64) -> Arc<Throttle> {
        Arc::new(Throttle {
            rate: bytes_per_second.max(1) as f64,
            // Start empty: no initial burst above the limit.
            state: Mutex::new((0.0, Instant::now())),
        })
    }

    /// Waits until `n` bytes may pass.
    pub async fn take(&self, n: u64) {
        let wait = {
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            let now = Instant::now();
            // Idle time refills at most one second's worth.
            let refill = now.duration_since(st.1).as_secs_f64() * self.rate;
            st.0 = (st.0 + refill).min(self.rate) - n as f64;
            st.1 = now;
            (st.0 < 0.0).then(|| Duration::from_secs_f64(-st.0 / self.rate))
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

/// A [`ByteSource`] whose reads are counted as they pass (so progress moves
/// within a large file) and, with a limit, pass through a [`Throttle`].
pub struct MeteredSource {
    pub inner: Arc<dyn ByteSource>,
    pub throttle: Option<Arc<Throttle>>,
    pub counters: Arc<Counters>,
}

#[async_trait]
impl ByteSource for MeteredSource {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        let Some(t) = &self.throttle else {
            let data = self.inner.read_range(range).await?;
            Counters::add(&self.counters.bytes_transferred, data.len() as u64);
            return Ok(data);
        };
        // Limited: read in slices, each paid for before it is read, so the
        // rate holds within a chunk too and progress moves steadily.
        let mut out = bytes::BytesMut::with_capacity((range.end - range.start) as usize);
        for slice in crate::location::part_ranges(range.end - range.start, THROTTLED_SLICE) {
            let sub = range.start + slice.start..range.start + slice.end;
            t.take(sub.end - sub.start).await;
            let data = self.inner.read_range(sub).await?;
            Counters::add(&self.counters.bytes_transferred, data.len() as u64);
            out.extend_from_slice(&data);
        }
        Ok(out.freeze())
    }
    fn known_crc32c(&self) -> Option<u32> {
        self.inner.known_crc32c()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_over_many_takes() {
        let t = Throttle::new(1000);
        let start = Instant::now();
        for _ in 0..100 {
            t.take(100).await;
        }
        // 10,000 bytes at 1,000 B/s: 10 s (within the first take's debt).
        let secs = start.elapsed().as_secs_f64();
        assert!((9.8..=10.2).contains(&secs), "took {secs} s");
    }
}
