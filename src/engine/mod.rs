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
    if let Some(why) = unverifiable(&src, &dst, &req.options) {
        let mut s = run::summary(
            &req,
            &src,
            &dst,
            report::Status::Error,
            report::PhaseDurations::default(),
            None,
        );
        s.error_detail = Some(why);
        return s;
    }
    match req.options.two_way {
        Some(tw) => two_way::execute(src, dst, req, tw).await,
        None => run::execute_one_way(src, dst, req).await,
    }
}

/// POINT_IN_TIME_CONSISTENT reads back what it wrote: not possible into an
/// archive storage class (DataSync refuses it the same way).
fn unverifiable(
    src: &Arc<dyn Location>,
    dst: &Arc<dyn Location>,
    opts: &run::TaskOptions,
) -> Option<String> {
    if opts.verify_mode != transfer::VerifyMode::PointInTimeConsistent {
        return None;
    }
    let written: &[&Arc<dyn Location>] = if opts.two_way.is_some() {
        &[src, dst]
    } else {
        &[dst]
    };
    written.iter().find_map(|loc| {
        loc.archive_class().map(|class| {
            format!(
                "verify mode POINT_IN_TIME_CONSISTENT cannot be used when writing to {} with storage class {class}: its objects cannot be read back without a restore; use --verify-mode only-files-transferred or none (verify_mode = \"ONLY_FILES_TRANSFERRED\" or \"NONE\")",
                loc.describe()
            )
        })
    })
}
