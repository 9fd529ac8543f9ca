//! Schedules: when a task runs by itself. Two forms, as in DataSync and
//! EventBridge: `rate(15 minutes)` (also `second(s)`, `hour(s)`, `day(s)`)
//! and cron expressions, either AWS's six fields `cron(min hour
//! day-of-month month day-of-week year)` (day-of-week 1-7 = SUN-SAT, one of
//! the two day fields `?`) or the classic five fields `min hour dom month
//! dow` (day-of-week 0-7, 0 and 7 = Sunday). Fields take `*`, `?`, numbers,
//! names (`JAN`, `MON`), ranges `a-b`, steps `*/n` / `a-b/n` / `a/n`, and
//! lists `a,b`. Times are UTC. Pure: [`Schedule::next_after`] is plain
//! arithmetic over Unix seconds.

use crate::config::units::MAX_DURATION;
use crate::location::meta::{civil_from_days, utc_fields};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    Rate(Duration),
    Cron(Box<Cron>),
}

/// Which values each field allows (bit n set: value n allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// 0 = Sunday.
    days_of_week: u64,
    /// Years 1970..2100 as offsets from 1970; all when unrestricted.
    years: Option<u128>,
    /// Both day fields restricted: a day matches if either does (classic cron).
    day_or: bool,
    dom_any: bool,
    dow_any: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("schedule `{expr}`: {message}; expected rate(N minutes|hours|days) or cron(min hour day-of-month month day-of-week year)")]
pub struct ScheduleError {
    pub expr: String,
    pub message: String,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
/// How far ahead a cron expression is searched for its next time.
const SEARCH_DAYS: i64 = 366 * 8;

impl Schedule {
    pub fn parse(expr: &str) -> Result<Schedule, ScheduleError> {
        let err = |message: String| ScheduleError {
            expr: expr.to_string(),
            message,
        };
        let t = expr.trim();
        if let Some(inner) = t.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            return parse_rate(inner).map(Schedule::Rate).map_err(err);
        }
        if let Some(inner) = t.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            return parse_cron(inner, true)
                .map(|c| Schedule::Cron(Box::new(c)))
                .map_err(err);
        }
        if t.split_whitespace().count() == 5 {
            return parse_cron(t, false)
                .map(|c| Schedule::Cron(Box::new(c)))
                .map_err(err);
        }
        Err(err(
            "not a rate(…), a cron(…) or a five-field cron expression".into(),
        ))
    }

    /// The first time strictly after `t` (Unix seconds) when it fires.
    pub fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            Schedule::Rate(d) => t.checked_add(i64::try_from(d.as_secs()).ok()?),
            Schedule::Cron(c) => c.next_after(t),
        }
    }
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let mut parts = inner.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("a rate is a number and a unit".into());
    };
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{n}` is not a positive whole number"))?;
    let secs = match unit {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => return Err(format!("unknown unit `{other}`")),
    };
    let total = n.checked_mul(secs).filter(|t| *t <= MAX_DURATION.as_secs());
    total.map(Duration::from_secs).ok_or_else(|| {
        format!(
            "rate `{inner}` is too long: at most {} days",
            MAX_DURATION.as_secs() / 86_400
        )
    })
}

/// Parses one field into a bit set over `lo..=hi`.
fn field(text: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(i as u32 + name_base);
        }
        s.parse::<u32>()
            .ok()
            .filter(|v| (lo..=hi).contains(v))
            .ok_or_else(|| format!("`{s}` is not a value between {lo} and {hi}"))
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step `{s}` is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        if a > b {
            return Err(format!("range `{range}` runs backwards"));
        }
        bits |= (a..=b)
            .step_by(step as usize)
            .fold(0, |acc, v| acc | 1 << v);
    }
    Ok(bits)
}

fn parse_cron(text: &str, aws: bool) -> Result<Cron, String> {
    let f: Vec<&str> = text.split_whitespace().collect();
    let want = if aws { 6 } else { 5 };
    if f.len() != want {
        return Err(format!("{} fields, expected {want}", f.len()));
    }
    let special = |part: &str| {
        let p = part.to_ascii_uppercase();
        p.contains('#')
            || p == "L"
            || p == "LW"
            || ((p.ends_with('L') || p.ends_with('W')) && p[..p.len() - 1].parse::<u32>().is_ok())
    };
    if let Some(bad) = f.iter().find(|x| x.split(',').any(special)) {
        return Err(format!("`{bad}`: L, W and # are not supported"));
    }
    let minutes = field(f[0], 0, 59, &[], 0)?;
    let hours = field(f[1], 0, 23, &[], 0)?;
    let days_of_month = field(f[2], 1, 31, &[], 0)?;
    let months = field(f[3], 1, 12, &MONTHS, 1)?;
    let (dom_any, dow_any) = (matches!(f[2], "*" | "?"), matches!(f[4], "*" | "?"));
    let days_of_week = if aws {
        // AWS: 1-7 = SUN-SAT; shift to 0-6.
        field(f[4], 1, 7, &DAYS, 1)? >> 1
    } else {
        let b = field(f[4], 0, 7, &DAYS, 0)?;
        (b | (b >> 7)) & 0x7f
    };
    if aws && (f[2] == "?") == (f[4] == "?") {
        return Err("exactly one of day-of-month and day-of-week must be `?`".into());
    }
    let years = if aws && f[5] != "*" {
        let bits = field_years(f[5])?;
        Some(bits)
    } else {
        None
    };
    Ok(Cron {
        minutes,
        hours,
        days_of_month,
        months,
        days_of_week,
        years,
        day_or: !aws && !dom_any && !dow_any,
        dom_any,
        dow_any,
    })
}

/// Years 1970..=2097 as a bit set of offsets (u128 is wide enough).
fn field_years(text: &str) -> Result<u128, String> {
    let mut bits = 0u128;
    for part in text.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let year = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|y| (1970..2098).contains(y))
                .ok_or_else(|| format!("year `{s}` is not between 1970 and 2097"))
        };
        for y in year(a)?..=year(b)? {
            bits |= 1 << (y - 1970);
        }
    }
    Ok(bits)
}

impl Cron {
    fn day_matches(&self, y: i64, m: u32, d: u32, dow: u32) -> bool {
        if self.months & (1 << m) == 0 {
            return false;
        }
        if let Some(years) = self.years {
            if !(1970..2098).contains(&y) || years & (1 << (y - 1970)) == 0 {
                return false;
            }
        }
        let dom = self.days_of_month & (1 << d) != 0;
        let dow = self.days_of_week & (1 << dow) != 0;
        if self.day_or {
            dom || dow
        } else {
            (self.dom_any || dom) && (self.dow_any || dow)
        }
    }

    fn next_after(&self, t: i64) -> Option<i64> {
        let start = t.div_euclid(60) * 60 + 60;
        let first_day = start.div_euclid(86_400);
        for day in first_day..first_day + SEARCH_DAYS {
            let (y, m, d) = civil_from_days(day);
            // 1970-01-01 was a Thursday (4).
            let dow = (day + 4).rem_euclid(7) as u32;
            if !self.day_matches(y, m, d, dow) {
                continue;
            }
            let from = if day == first_day {
                start - day * 86_400
            } else {
                0
            };
            for minute_of_day in (from / 60)..1440 {
                let (h, mi) = (minute_of_day / 60, minute_of_day % 60);
                if self.hours & (1 << h) != 0 && self.minutes & (1 << mi) != 0 {
                    return Some(day * 86_400 + minute_of_day * 60);
                }
            }
        }
        None
    }
}

/// `2026-11-24T13:05:07Z` for a time in epoch milliseconds.
pub fn utc(ms: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc_fields((ms / 1000) as i64);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(y: i64, m: i64, d: i64, h: i64, mi: i64) -> i64 {
        // days_from_civil, the inverse of civil_from_days.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * 86_400 + h * 3600 + mi * 60
    }

    fn next(expr: &str, from: i64) -> i64 {
        Schedule::parse(expr).unwrap().next_after(from).unwrap()
    }

    #[test]
    fn rates_add_their_period() {
        assert_eq!(next("rate(15 minutes)", 100), 100 + 900);
        assert_eq!(next("rate(1 hour)", 0), 3600);
        assert_eq!(next("rate(2 days)", 0), 2 * 86_400);
        assert_eq!(next("rate(3 seconds)", 7), 10);
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in [-1000, 0, 59, 60, 365, 11_016, 19_000, 20_000, 47_482] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(at(y, m as i64, d as i64, 0, 0), day * 86_400, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn aws_cron_expressions_fire_at_the_next_matching_minute() {
        // Noon UTC every day.
        let t = at(2026, 11, 24, 13, 5);
        assert_eq!(next("cron(0 12 * * ? *)", t), at(2026, 11, 25, 12, 0));
        // Every 15 minutes.
        assert_eq!(next("cron(0/15 * * * ? *)", t), at(2026, 11, 24, 13, 15));
        // 2026-11-24 is a Tuesday: next Sunday or Wednesday at 12:00.
        assert_eq!(next("cron(0 12 ? * SUN,WED *)", t), at(2026, 11, 25, 12, 0));
        // AWS day 1 is Sunday.
        assert_eq!(next("cron(30 6 ? * 1 *)", t), at(2026, 11, 29, 6, 30));
        // The last day of February in a leap year, only in 2028.
        assert_eq!(next("cron(0 0 29 FEB ? 2028)", t), at(2028, 2, 29, 0, 0));
        // Weekdays 9-17.
        assert_eq!(
            next("cron(0 9-17 ? * MON-FRI *)", at(2026, 11, 28, 18, 0)),
            at(2026, 11, 30, 9, 0)
        );
    }

    #[test]
    fn five_field_cron_uses_classic_rules() {
        let t = at(2026, 11, 24, 13, 5);
        assert_eq!(next("*/10 * * * *", t), at(2026, 11, 24, 13, 10));
        // 0 and 7 are both Sunday.
        assert_eq!(next("0 0 * * 7", t), at(2026, 11, 29, 0, 0));
        assert_eq!(next("0 0 * * 0", t), at(2026, 11, 29, 0, 0));
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(next("0 0 1 * MON", t), at(2026, 11, 30, 0, 0));
        // The minute boundary itself is not "after".
        assert_eq!(
            next("* * * * *", at(2026, 1, 1, 0, 0)),
            at(2026, 1, 1, 0, 1)
        );
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        for (expr, why) in [
            ("rate(0 minutes)", "positive"),
            ("rate(5 fortnights)", "unknown unit"),
            ("rate(minutes)", "number and a unit"),
            ("cron(0 12 * * * *)", "exactly one"),
            ("cron(0 12 ? * *)", "5 fields"),
            ("cron(61 * * * ? *)", "`61`"),
            ("cron(0 0 L * ? *)", "not supported"),
            ("cron(0 0 5-1 * ? *)", "backwards"),
            ("cron(0 0 ? * FOO *)", "`FOO`"),
            ("every day", "not a rate"),
            ("rate(106751991167300 days)", "too long"),
            ("rate(18446744073709551615 seconds)", "too long"),
            ("rate(3651 days)", "too long"),
        ] {
            let e = Schedule::parse(expr).unwrap_err().to_string();
            assert!(e.contains(why), "{expr}: {e}");
            assert!(e.contains(expr), "{expr}: {e}");
        }
    }

    #[test]
    fn utc_formats_epoch_milliseconds() {
        assert_eq!(
            utc(at(2026, 11, 24, 13, 5) as u64 * 1000 + 7_999),
            "2026-11-24T13:05:07Z"
        );
    }

    #[test]
    fn an_impossible_date_never_fires() {
        assert_eq!(
            Schedule::parse("cron(0 0 30 FEB ? *)")
                .unwrap()
                .next_after(0),
            None
        );
    }

    #[test]
    fn the_longest_rate_still_gives_a_next_time() {
        assert_eq!(next("rate(3650 days)", 0), 3650 * 86_400);
        let far = Schedule::parse("rate(1 day)").unwrap();
        assert_eq!(far.next_after(i64::MAX), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_expressions_never_panic(
            expr in "(rate\\(|cron\\()?[-0-9a-zA-Z ,*/?#L]{0,40}\\)?",
            now in 0i64..8_000_000_000,
        ) {
            if let Ok(s) = Schedule::parse(&expr) {
                let _ = s.next_after(now);
            }
        }

        #[test]
        fn arbitrary_rates_are_bounded(n in proptest::num::u64::ANY, unit in "seconds|minutes|hours|days") {
            if let Ok(Schedule::Rate(d)) = Schedule::parse(&format!("rate({n} {unit})")) {
                proptest::prop_assert!(d <= MAX_DURATION);
            }
        }
    }
}
