//! Argument and error types the command line shares with the layers below
//! it (the daemon, the mount command), kept here so that nothing below the
//! CLI imports from it; [`private`] makes the files and directories
//! syncmount keeps for itself.

use clap::Args;

pub mod private;

/// S3 connection settings that apply to both sides.
#[derive(Args, Debug, Clone, Default)]
pub struct SideArgs {
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub endpoint_url: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
}

/// An error that is the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The environment variable behind `--log-format`; children started by
/// this process (detached runners, `--daemonize`, detached mounts) inherit
/// it, so they log in the same format.
pub const LOG_FORMAT_ENV: &str = "SYNCMOUNT_LOG_FORMAT";

/// Whether this process logs JSON lines (`--log-format json`, or inherited
/// through [`LOG_FORMAT_ENV`]).
pub fn logs_json() -> bool {
    std::env::var(LOG_FORMAT_ENV).is_ok_and(|v| v == "json")
}

/// A message for the person at the terminal (`queued: …`, `started …`): a
/// plain line on stderr, or with `--log-format json` one JSON object per
/// line in the shape of the log lines, so that every line of stderr stays
/// JSON for a log shipper.
pub fn notice(message: impl std::fmt::Display) {
    say("INFO", &message.to_string());
}

/// An error that ends the command, on stderr as [`notice`] prints.
pub fn failure(message: impl std::fmt::Display) {
    say("ERROR", &message.to_string());
}

/// A summary meant to be read (an execution's counters): stderr in text
/// mode, where it always was; stdout with `--log-format json`, where it
/// cannot break the JSON lines of stderr.
pub fn summary(text: &str) {
    if logs_json() {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
}

fn say(level: &str, message: &str) {
    if !logs_json() {
        // Line by line: a message's own lines stay lines.
        for line in message.split('\n') {
            eprintln!("{}", Escaped(line));
        }
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (y, m, d, hh, mm, ss) = crate::location::meta::utc_fields(now.as_secs() as i64);
    let timestamp = format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:06}Z",
        now.subsec_micros()
    );
    for line in message.lines().filter(|l| !l.trim().is_empty()) {
        let json = serde_json::json!({
            "timestamp": timestamp,
            "level": level,
            "fields": { "message": line.trim_end() },
            "target": "syncmount",
        });
        eprintln!("{json}");
    }
}

/// Text from outside (a key, a path, an error naming them) as human output
/// and text logs show it: control characters (C0, DEL, C1) are written as
/// `\x1b` or `\u{9b}`, so a key from a bucket cannot recolour, move the
/// cursor, rewrite a line (CR) or forge a log line (LF). JSON output needs
/// none of this: JSON escapes them itself.
pub struct Escaped<'a>(pub &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match u32::from(c) {
                n @ 0..=0x7f => write!(f, "\\x{n:02x}")?,
                n => write!(f, "\\u{{{n:x}}}")?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        let shown = Escaped("a\x1b[31mred\r\n\x07\t\x7f\u{9b}é/ü b").to_string();
        assert_eq!(shown, "a\\x1b[31mred\\x0d\\x0a\\x07\\x09\\x7f\\u{9b}é/ü b");
        assert_eq!(Escaped("plain/key.txt").to_string(), "plain/key.txt");
    }
}
