//! The one diff-and-copy engine: a streaming merge of two sorted listings into
//! actions, run by bounded-concurrency transfer workers, then verified.

pub mod clash;
pub mod diff;
pub mod filter;
pub mod report;
pub mod run;
pub mod state;
pub mod throttle;
pub mod transfer;
