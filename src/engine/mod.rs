//! The one diff-and-copy engine: a streaming merge of two sorted listings into
//! actions, run by bounded-concurrency transfer workers, then verified.

pub mod base;
pub mod clash;
pub mod diff;
pub mod filter;
pub mod report;
pub mod run;
pub mod spool;
pub mod state;
pub mod three_way;
pub mod throttle;
pub mod transfer;
pub mod two_way;

use std::sync::Arc;

use crate::location::Location;

/// Runs one task execution from `src` to `dst`: one-way, or two-way (the
/// two locations are sides A and B) when the options say so.
pub async fn execute(
    src: Arc<dyn Location>,
    dst: Arc<dyn Location>,
    req: run::ExecutionRequest,
) -> report::ExecutionSummary {
    match req.options.two_way {
        Some(tw) => two_way::execute(src, dst, req, tw).await,
        None => run::execute_one_way(src, dst, req).await,
    }
}
