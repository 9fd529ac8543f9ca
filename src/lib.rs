//! syncmount: a self-hosted AWS DataSync. Locations (S3 bucket + prefix, local
//! directory), one diff-and-copy engine, tasks with guarded executions and
//! their history, a daemon running schedules, and (with issue 3) FUSE mounts.
//! Layers point down only: `cli → daemon → task → engine → location`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod location;
pub mod mount;
pub mod policy;
pub mod preflight;
pub mod task;
