//! `task list` and `task disable|enable`: the configured tasks with the
//! state of their schedules (task::schedule_state) and last execution.

use serde_json::json;

use super::task::{open_history, print_json};
use super::UsageError;
use crate::task::execution::Context;
use crate::task::history::History;
use crate::task::schedule::utc;
use crate::task::schedule_state::DisabledBy;

pub(super) fn list(ctx: &Context, json: bool) -> anyhow::Result<i32> {
    let history = open_history(&ctx.state_dir)?;
    let mut rows = Vec::new();
    for t in ctx.config.task.iter().map(|t| t.get_ref()) {
        let last = history.for_task(&t.name, 1)?.into_iter().next();
        let state = history.schedule_state(&t.name)?;
        let disabled = state.disabled();
        rows.push(json!({
            "Name": t.name,
            "Source": t.source,
            "Destination": t.destination,
            "Direction": if t.is_two_way() { "TWO_WAY" } else { "ONE_WAY" },
            "Schedule": t.schedule,
            "ScheduleStatus": if disabled.is_some() { "DISABLED" } else { "ENABLED" },
            "DisabledBy": disabled.map(|d| d.disabled_by),
            "DisabledReason": disabled.and_then(|d| d.reason.clone()),
            "DisabledMs": disabled.map(|d| d.disabled_ms),
            "AutoDisableAfter": t.auto_disable_after(),
            "LogLevel": t.options.log_level().as_str(),
            "Queueing": t.options.queueing(),
            "LastExecutionId": last.as_ref().map(|r| r.execution_id.clone()),
            "LastStatus": last.as_ref().map(|r| r.status),
        }));
    }
    if json {
        print_json(&rows)?;
    } else {
        for (t, r) in ctx.config.task.iter().zip(&rows) {
            let t = t.get_ref();
            println!(
                "{}  {} {} {}  schedule: {}{}  last: {} {}",
                t.name,
                t.source,
                if t.is_two_way() { "⇄" } else { "→" },
                t.destination,
                t.schedule.as_deref().unwrap_or("none"),
                disabled_note(r),
                r["LastExecutionId"].as_str().unwrap_or("-"),
                r["LastStatus"].as_str().unwrap_or(""),
            );
        }
    }
    Ok(0)
}

/// ` (DISABLED by USER at …: reason)` for a disabled schedule of `task list`.
fn disabled_note(row: &serde_json::Value) -> String {
    let Some(by) = row["DisabledBy"].as_str() else {
        return String::new();
    };
    let at = row["DisabledMs"].as_u64().map(utc).unwrap_or_default();
    match row["DisabledReason"].as_str() {
        Some(why) => format!(" (DISABLED by {by} at {at}: {why})"),
        None => format!(" (DISABLED by {by} at {at})"),
    }
}

/// What `task disable` (with its reason) and `task enable` do.
pub(super) enum ScheduleChange<'a> {
    Disable(Option<&'a str>),
    Enable,
}

pub(super) fn set_schedule(
    ctx: &Context,
    name: &str,
    change: ScheduleChange<'_>,
) -> anyhow::Result<i32> {
    let Some(task) = ctx.config.task(name) else {
        return Err(UsageError(format!("no task named `{name}` in the config file")).into());
    };
    let history = History::open(&ctx.state_dir)?;
    match change {
        ScheduleChange::Disable(reason) => {
            history.disable_schedule(name, DisabledBy::User, reason)?;
            println!("schedule of task `{name}` disabled; `task start {name}` still runs it");
        }
        ScheduleChange::Enable => {
            if history.enable_schedule(name)? {
                println!("schedule of task `{name}` enabled");
            } else {
                println!("schedule of task `{name}` was not disabled");
            }
        }
    }
    if task.schedule.is_none() {
        crate::shared::notice(format_args!(
            "note: task `{name}` has no schedule in the config file"
        ));
    }
    Ok(0)
}
