//! Who may do what to a file, decided from its shown mode, owner and group
//! (pure: no I/O, unit-tested here).
//!
//! The mount is made with `default_permissions`, so the kernel checks every
//! open, lookup, create and attribute change against the attributes we show
//! before asking us. These functions are the file system's own answer to
//! the same questions: `access` uses [`may_access`] (the kernel does not send
//! it under `default_permissions`, but a refusal must never depend on a
//! mount option alone), and `setattr` checks [`may_set_attr`] against the
//! attributes the store holds now, which may be newer than the kernel's.
//!
//! The caller is the request's uid and primary gid (FUSE does not pass the
//! supplementary groups); root is uid 0. Capabilities other than root's are
//! not considered.

use super::cache::Attr;

/// Read, write and search/execute permission (as `R_OK`, `W_OK`, `X_OK`).
pub const READ: u32 = 4;
pub const WRITE: u32 = 2;
pub const EXEC: u32 = 1;

/// Set-user-ID and set-group-ID: the bits the kernel asks to clear when
/// someone other than the owner writes the file.
const SETID_BITS: u32 = 0o6000;

/// The user a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    fn is_root(self) -> bool {
        self.uid == 0
    }

    fn owns(self, a: &Attr) -> bool {
        self.uid == a.uid
    }
}

/// Whether `caller` may access `a` for `mask` (a combination of [`READ`],
/// [`WRITE`], [`EXEC`]; 0 asks whether the file exists). POSIX classes: the
/// owner's bits if the caller owns it, else the group's if the caller's
/// group is its group, else the others'. Root may read and write anything,
/// and search/execute a directory, or a file with at least one x bit.
pub fn may_access(a: &Attr, caller: Caller, mask: u32) -> bool {
    let mask = mask & (READ | WRITE | EXEC);
    let perm = u32::from(a.perm);
    if caller.is_root() {
        return mask & EXEC == 0 || a.is_dir || perm & 0o111 != 0;
    }
    let class = if caller.owns(a) {
        perm >> 6
    } else if caller.gid == a.gid {
        perm >> 3
    } else {
        perm
    } & 0o7;
    class & mask == mask
}

/// A change of attributes (`chmod`, `chown`, `utimens`, `truncate`), as
/// `setattr` receives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttrChange {
    /// New permission bits (no file type).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// New size: the kernel has checked write permission (truncate(2) or
    /// an open for writing) before it sends one.
    pub size: bool,
    /// A time set to a given value (`touch -d`, `utimensat` with times).
    pub time_given: bool,
    /// A time set to now (`touch`, `utimensat` with `UTIME_NOW`).
    pub time_now: bool,
}

/// Why a change is refused: EPERM, but EACCES for times set to now (as
/// utimensat(2) answers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("only root may give a file to another owner")]
    Chown,
    #[error("only root or the owner may change a file's group")]
    Chgrp,
    #[error("only root or the owner may change a file's mode")]
    Chmod,
    #[error("only root or the owner may set a file's times")]
    SetTimes,
    #[error("only root, the owner or a user who may write may set a file's times to now")]
    TouchNow,
    #[error("only a user who may write a file may replace it")]
    Replace,
}

/// Whether `caller` may make `change` to a file whose attributes are `a`;
/// the rules of chown(2), chmod(2) and utimensat(2):
/// - only root gives a file to another user (the owner "giving" it to
///   themselves is allowed, as chown(2) allows it);
/// - root or the owner changes the group (chown(2) also wants the owner to
///   belong to the new group; the kernel checks that with the full group
///   list, which we do not have);
/// - root or the owner changes the mode; anyone may clear only the set-ID
///   bits (the kernel does so when someone else writes the file);
/// - root or the owner sets times to given values; to now, also anyone who
///   may write the file; a truncation sets them to now whoever does it.
pub fn may_set_attr(a: &Attr, caller: Caller, change: &AttrChange) -> Result<(), Refusal> {
    if caller.is_root() {
        return Ok(());
    }
    let owner = caller.owns(a);
    if change.uid.is_some_and(|uid| !(owner && uid == a.uid)) {
        return Err(Refusal::Chown);
    }
    if change.gid.is_some_and(|gid| !owner && gid != a.gid) {
        return Err(Refusal::Chgrp);
    }
    if let Some(mode) = change.mode {
        let current = u32::from(a.perm) & 0o7777;
        let clears_setid_only = mode & 0o7777 == current & !SETID_BITS;
        if !owner && !clears_setid_only {
            return Err(Refusal::Chmod);
        }
    }
    if change.time_given && !owner {
        return Err(Refusal::SetTimes);
    }
    if change.time_now && !change.size && !owner && !may_access(a, caller, WRITE) {
        return Err(Refusal::TouchNow);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const ROOT: Caller = Caller { uid: 0, gid: 0 };
    const OWNER: Caller = Caller {
        uid: 1000,
        gid: 1000,
    };
    const GROUP_MEMBER: Caller = Caller { uid: 1001, gid: 50 };
    const OTHER: Caller = Caller {
        uid: 65534,
        gid: 65534,
    };

    fn file(perm: u16) -> Attr {
        Attr {
            is_dir: false,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            perm,
            uid: 1000,
            gid: 50,
            etag: None,
            kind: crate::location::FileKind::File,
            rdev: 0,
            ctime: SystemTime::UNIX_EPOCH,
        }
    }

    fn dir(perm: u16) -> Attr {
        Attr {
            is_dir: true,
            kind: crate::location::FileKind::Dir,
            ..file(perm)
        }
    }

    #[test]
    fn each_class_gets_its_own_bits_and_only_those() {
        let a = file(0o640);
        assert!(may_access(&a, OWNER, READ | WRITE));
        assert!(!may_access(&a, OWNER, EXEC));
        assert!(may_access(&a, GROUP_MEMBER, READ));
        assert!(!may_access(&a, GROUP_MEMBER, WRITE));
        assert!(!may_access(&a, GROUP_MEMBER, READ | WRITE));
        assert!(!may_access(&a, OTHER, READ));
        assert!(may_access(&file(0o604), OTHER, READ));
        // The owner's class decides for the owner even when the others' is wider.
        assert!(!may_access(&file(0o067), OWNER, READ));
        assert!(!may_access(&file(0o607), GROUP_MEMBER, READ));
    }

    #[test]
    fn existence_is_no_permission() {
        assert!(may_access(&file(0), OTHER, 0));
        assert!(may_access(&file(0), OWNER, 0));
    }

    #[test]
    fn root_reads_and_writes_anything_and_executes_only_what_someone_may() {
        assert!(may_access(&file(0), ROOT, READ | WRITE));
        assert!(!may_access(&file(0o644), ROOT, EXEC));
        assert!(may_access(&file(0o001), ROOT, EXEC));
        assert!(may_access(&file(0o100), ROOT, READ | WRITE | EXEC));
        assert!(may_access(&dir(0), ROOT, READ | WRITE | EXEC));
    }

    #[test]
    fn directories_need_x_to_be_searched_and_w_to_change() {
        assert!(may_access(&dir(0o755), OTHER, READ | EXEC));
        assert!(!may_access(&dir(0o755), OTHER, WRITE | EXEC));
        assert!(may_access(&dir(0o777), OTHER, WRITE | EXEC));
        assert!(!may_access(&dir(0o744), OTHER, EXEC));
    }

    #[test]
    fn only_root_gives_a_file_away() {
        let to = |uid| AttrChange {
            uid: Some(uid),
            ..Default::default()
        };
        let a = file(0o644);
        assert_eq!(may_set_attr(&a, ROOT, &to(5)), Ok(()));
        assert_eq!(may_set_attr(&a, OWNER, &to(5)), Err(Refusal::Chown));
        assert_eq!(may_set_attr(&a, OWNER, &to(1000)), Ok(()));
        assert_eq!(may_set_attr(&a, OTHER, &to(65534)), Err(Refusal::Chown));
        assert_eq!(may_set_attr(&a, OTHER, &to(1000)), Err(Refusal::Chown));
    }

    #[test]
    fn the_owner_and_root_change_the_group_others_do_not() {
        let to = |gid| AttrChange {
            gid: Some(gid),
            ..Default::default()
        };
        let a = file(0o666);
        assert_eq!(may_set_attr(&a, OWNER, &to(1000)), Ok(()));
        assert_eq!(may_set_attr(&a, ROOT, &to(7)), Ok(()));
        assert_eq!(
            may_set_attr(&a, GROUP_MEMBER, &to(1001)),
            Err(Refusal::Chgrp)
        );
        // Naming the current group changes nothing.
        assert_eq!(may_set_attr(&a, OTHER, &to(50)), Ok(()));
    }

    #[test]
    fn the_owner_and_root_chmod_others_only_clear_set_id_bits() {
        let to = |mode| AttrChange {
            mode: Some(mode),
            ..Default::default()
        };
        let a = file(0o600);
        assert_eq!(may_set_attr(&a, OWNER, &to(0o666)), Ok(()));
        assert_eq!(may_set_attr(&a, ROOT, &to(0o666)), Ok(()));
        assert_eq!(may_set_attr(&a, OTHER, &to(0o666)), Err(Refusal::Chmod));
        assert_eq!(may_set_attr(&a, GROUP_MEMBER, &to(0o600)), Ok(()));
        let setuid = file(0o4777);
        assert_eq!(may_set_attr(&setuid, OTHER, &to(0o777)), Ok(()));
        assert_eq!(
            may_set_attr(&setuid, OTHER, &to(0o4775)),
            Err(Refusal::Chmod)
        );
    }

    #[test]
    fn given_times_are_the_owners_now_is_also_the_writers() {
        let given = AttrChange {
            time_given: true,
            ..Default::default()
        };
        let now = AttrChange {
            time_now: true,
            ..Default::default()
        };
        let truncate = AttrChange {
            size: true,
            time_now: true,
            ..Default::default()
        };
        let shared = file(0o666);
        assert_eq!(may_set_attr(&shared, OWNER, &given), Ok(()));
        assert_eq!(may_set_attr(&shared, ROOT, &given), Ok(()));
        assert_eq!(may_set_attr(&shared, OTHER, &given), Err(Refusal::SetTimes));
        assert_eq!(may_set_attr(&shared, OTHER, &now), Ok(()));
        let private = file(0o644);
        assert_eq!(may_set_attr(&private, OTHER, &now), Err(Refusal::TouchNow));
        assert_eq!(may_set_attr(&private, OWNER, &now), Ok(()));
        // ftruncate of a descriptor opened for writing before a chmod.
        assert_eq!(may_set_attr(&private, OTHER, &truncate), Ok(()));
    }

    #[test]
    fn one_refused_part_refuses_the_whole_change() {
        let change = AttrChange {
            mode: Some(0o600),
            uid: Some(0),
            ..Default::default()
        };
        assert_eq!(
            may_set_attr(&file(0o644), OWNER, &change),
            Err(Refusal::Chown)
        );
    }
}
