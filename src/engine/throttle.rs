//! The bandwidth limit (`--bytes-per-second`): one token bucket shared by
//! every transfer of an execution.
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

use crate::location::{ByteSource, Result};

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

/// A [`ByteSource`] whose reads pass through a [`Throttle`].
pub struct ThrottledSource {
    pub inner: Arc<dyn ByteSource>,
    pub throttle: Arc<Throttle>,
}

#[async_trait]
impl ByteSource for ThrottledSource {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    async fn read_range(&self, range: Range<u64>) -> Result<Bytes> {
        let data = self.inner.read_range(range).await?;
        self.throttle.take(data.len() as u64).await;
        Ok(data)
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
