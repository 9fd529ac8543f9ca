//! What of a file's metadata gives privileges on this host, and whether it
//! is written: setuid/setgid bits and device nodes. Whoever can write a
//! bucket chooses its objects' metadata, so a `sync` run as root that
//! restored it as it stands would make setuid-root programs and
//! `/dev/mem`-style nodes for them. Neither is written unless the task asks
//! (DataSync's `PreserveDevices` defaults to NONE; setuid/setgid follow the
//! same rule), whoever runs it.
//!
//! [`unprivileged`] is the one decision, a pure function over the metadata
//! and the task's choice; every path that writes a local file or special
//! file asks it and reports what it took away.

use super::meta::{FileKind, PosixMeta};

/// Set-user-ID and set-group-ID.
pub const SETID_BITS: u32 = 0o6000;

/// DataSync's `PreserveDevices`: whether character and block devices are
/// recreated at the destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PreserveDevices {
    /// Not created; reported as skipped.
    #[default]
    None,
    /// Created with their numbers (root only: mknod needs CAP_MKNOD).
    Preserve,
}

/// Whether setuid and setgid bits are restored on written files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PreserveSetid {
    /// Cleared; each file that had them is reported.
    #[default]
    None,
    /// Restored as stored.
    Preserve,
}

/// What a task allows to be written with privileges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    pub devices: PreserveDevices,
    pub setid: PreserveSetid,
}

impl Privileges {
    /// Everything preserved (root's own writes through a mount, tests).
    pub const ALL: Privileges = Privileges {
        devices: PreserveDevices::Preserve,
        setid: PreserveSetid::Preserve,
    };
}

/// The decision for one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unprivileged {
    /// Write it with `meta`; `dropped` says what was taken away, if anything.
    Write {
        meta: PosixMeta,
        dropped: Option<String>,
    },
    /// Do not create it (a device the task did not ask for); the reason.
    Refuse(String),
}

/// The metadata to write for `meta` under `p`: a device is refused unless
/// devices are preserved; setuid/setgid bits are cleared unless preserved.
pub fn unprivileged(meta: &PosixMeta, p: Privileges) -> Unprivileged {
    let kind = meta.kind();
    if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice)
        && p.devices == PreserveDevices::None
    {
        return Unprivileged::Refuse(format!(
            "a {} is not created (preserve_devices = \"none\"; set it to \"preserve\" to create devices)",
            kind.name()
        ));
    }
    let kept = as_written(meta, p);
    let dropped = meta.mode.unwrap_or(0) & !kept.mode.unwrap_or(0) & SETID_BITS;
    Unprivileged::Write {
        meta: kept,
        dropped: (dropped != 0).then(|| {
            format!(
                "{} dropped (preserve_setid = \"none\")",
                setid_names(dropped)
            )
        }),
    }
}

/// `meta` with the setuid/setgid bits `p` does not keep taken off: what a
/// written file gets, and what a comparison with one should expect.
pub fn as_written(meta: &PosixMeta, p: Privileges) -> PosixMeta {
    let mut kept = *meta;
    if p.setid == PreserveSetid::None {
        kept.mode = meta.mode.map(|m| m & !SETID_BITS);
    }
    kept
}

fn setid_names(bits: u32) -> &'static str {
    match (bits & 0o4000 != 0, bits & 0o2000 != 0) {
        (true, true) => "setuid and setgid bits",
        (true, false) => "setuid bit",
        _ => "setgid bit",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::meta::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG};

    fn with_mode(mode: u32) -> PosixMeta {
        PosixMeta {
            mode: Some(mode),
            ..Default::default()
        }
    }

    fn written(u: Unprivileged) -> (Option<u32>, Option<String>) {
        match u {
            Unprivileged::Write { meta, dropped } => (meta.mode, dropped),
            Unprivileged::Refuse(why) => panic!("refused: {why}"),
        }
    }

    #[test]
    fn devices_are_refused_by_default_and_made_when_preserved() {
        for t in [S_IFCHR, S_IFBLK] {
            let m = PosixMeta {
                rdev: Some(0x0101),
                ..with_mode(t | 0o666)
            };
            let refused = unprivileged(&m, Privileges::default());
            assert!(matches!(refused, Unprivileged::Refuse(ref why) if why.contains("device")));
            assert_eq!(
                written(unprivileged(&m, Privileges::ALL)).0,
                Some(t | 0o666)
            );
        }
    }

    #[test]
    fn setid_bits_are_cleared_by_default_and_named() {
        let (mode, dropped) = written(unprivileged(
            &with_mode(S_IFREG | 0o4755),
            Privileges::default(),
        ));
        assert_eq!(mode, Some(S_IFREG | 0o755));
        assert_eq!(
            dropped.as_deref(),
            Some("setuid bit dropped (preserve_setid = \"none\")")
        );
        let (mode, dropped) = written(unprivileged(
            &with_mode(S_IFDIR | 0o2775),
            Privileges::default(),
        ));
        assert_eq!(mode, Some(S_IFDIR | 0o775));
        assert!(dropped.is_some_and(|d| d.starts_with("setgid bit")));
        let (_, dropped) = written(unprivileged(&with_mode(0o6755), Privileges::default()));
        assert!(dropped.is_some_and(|d| d.starts_with("setuid and setgid bits")));
    }

    #[test]
    fn setid_bits_stay_when_preserved() {
        let p = Privileges {
            setid: PreserveSetid::Preserve,
            ..Default::default()
        };
        assert_eq!(
            written(unprivileged(&with_mode(S_IFREG | 0o6755), p)),
            (Some(S_IFREG | 0o6755), None)
        );
    }

    #[test]
    fn ordinary_files_and_the_sticky_bit_pass_unchanged() {
        for m in [
            with_mode(S_IFREG | 0o644),
            with_mode(S_IFDIR | 0o1777),
            with_mode(S_IFIFO | 0o600),
            PosixMeta::default(),
        ] {
            assert_eq!(
                unprivileged(&m, Privileges::default()),
                Unprivileged::Write {
                    meta: m,
                    dropped: None
                }
            );
        }
    }
}
