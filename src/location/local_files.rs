//! What a local directory's files tell: our temporary files' names and the
//! process that owns one, whether that process still runs, and a file's
//! POSIX metadata. Shared by the local location and its walk (which cleans
//! up the temporary files of dead writers) and by the upload journal.

use std::ffi::OsString;
use std::fs;

use super::dirfd::Found;
use super::meta::{FileKind, PosixMeta};

/// Prefix of our temp files; they are never listed as keys.
pub(super) const TEMP_PREFIX: &str = ".syncmount-";
pub(super) const TEMP_SUFFIX: &str = ".tmp";

pub(super) fn temp_name() -> OsString {
    let r: u64 = rand::random();
    format!("{TEMP_PREFIX}{}-{r:016x}{TEMP_SUFFIX}", std::process::id()).into()
}

/// The pid in one of our temp file names, if it is one.
pub(super) fn temp_owner(name: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(name).ok()?;
    let rest = s.strip_prefix(TEMP_PREFIX)?.strip_suffix(TEMP_SUFFIX)?;
    rest.split_once('-')?.0.parse().ok()
}

/// Whether process `pid` still runs. A zombie (killed, not yet reaped by
/// its parent — slow when that is a container's init) is dead: it can no
/// longer write anything.
pub(super) fn pid_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the command name `(…)`.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

pub(super) fn meta_of(m: &Found) -> PosixMeta {
    let rdev = matches!(m.kind(), FileKind::CharDevice | FileKind::BlockDevice).then_some(m.rdev);
    PosixMeta {
        mtime_ns: Some(m.mtime_ns),
        mode: Some(m.mode),
        uid: Some(m.uid),
        gid: Some(m.gid),
        rdev,
        // Shown by a mount of the directory; never written elsewhere
        // (meta_to_write drops it).
        ctime_ns: Some(m.ctime_ns),
    }
}
