//! Tasks and their executions: guards that keep overlapping executions
//! apart (`guard.rs`), the execution lifecycle (`execution.rs`), its record
//! in SQLite (`history.rs`), who is still running (`liveness.rs`) and
//! schedules (`schedule.rs`) and whether they are enabled
//! (`schedule_state.rs`), completion hooks (`hooks.rs`), and what the
//! daemon prunes from the history (`retention.rs`).

pub mod error;
pub mod execution;
pub mod guard;
pub mod history;
pub mod hooks;
pub mod liveness;
pub mod plan;
pub mod retention;
pub mod s3_lock;
pub mod schedule;
pub mod schedule_state;
