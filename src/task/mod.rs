//! Tasks and their executions. So far: the guards that keep overlapping
//! executions apart (`guard.rs`); task definitions, history and schedules
//! come with issue 4.

pub mod guard;
