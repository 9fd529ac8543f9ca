//! The one diff-and-copy engine: a streaming merge of two sorted listings into
//! actions, run by bounded-concurrency transfer workers, then verified.

pub mod base;
pub mod clash;
pub mod diff;
pub mod filter;
pub mod report;
pub mod run;
pub mod state;
pub mod three_way;
pub mod throttle;
pub mod transfer;
pub mod two_way;
