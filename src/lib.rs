//! syncmount: a self-hosted AWS DataSync. Locations (S3 bucket + prefix, local
//! directory), one diff-and-copy engine, and (later) FUSE mounts and a daemon.
//! Layers point down only: `cli → engine → location`.

pub mod cli;
pub mod config;
pub mod engine;
pub mod location;
pub mod mount;
pub mod policy;
pub mod preflight;
pub mod task;
