//! syncmount: a self-hosted AWS DataSync. Locations (S3 bucket + prefix, local
//! directory), one diff-and-copy engine, tasks with guarded executions and
//! their history, a daemon running schedules, and FUSE mounts.
//! Layers point down only: `cli → daemon → task → engine → location`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod location;
pub mod metrics;
pub mod mount;
pub mod policy;
pub mod preflight;
pub mod shared;
pub mod task;

/// Locks `m`, taking the data of a holder that panicked as it is (every
/// lock here guards plain state that a panic cannot leave half-changed
/// in a way the next holder could not use).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
