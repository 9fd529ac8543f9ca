//! The mount's errors, and the one place they become errnos.

use fuser::Errno;

use crate::location::LocationError;

use super::permission::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("already exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("the mount is read-only")]
    ReadOnly,
    #[error("name too long")]
    NameTooLong,
    #[error("{0}")]
    Invalid(String),
    /// A rename the mount refuses to do as one operation (too many objects).
    #[error("{0}")]
    Refused(String),
    #[error("unknown file handle")]
    BadHandle,
    /// A change of attributes the caller may not make.
    #[error(transparent)]
    NotPermitted(#[from] Refusal),
    #[error(transparent)]
    Store(#[from] LocationError),
    #[error("local staging: {0}")]
    Staging(#[from] std::io::Error),
}

impl FsError {
    pub fn errno(&self) -> Errno {
        match self {
            FsError::NotFound => Errno::ENOENT,
            FsError::Exists => Errno::EEXIST,
            FsError::NotDir => Errno::ENOTDIR,
            FsError::IsDir => Errno::EISDIR,
            FsError::NotEmpty => Errno::ENOTEMPTY,
            FsError::ReadOnly => Errno::EROFS,
            FsError::NameTooLong => Errno::ENAMETOOLONG,
            FsError::Invalid(_) => Errno::EINVAL,
            // EXDEV: `mv` then copies and deletes, one object at a time.
            FsError::Refused(_) => Errno::EXDEV,
            FsError::BadHandle => Errno::EBADF,
            // utimensat(2): setting times to now without the right to is EACCES.
            FsError::NotPermitted(Refusal::TouchNow | Refusal::Replace) => Errno::EACCES,
            FsError::NotPermitted(_) => Errno::EPERM,
            FsError::Store(e) => match e {
                LocationError::NotFound { .. } => Errno::ENOENT,
                LocationError::UnsafeKey { .. } => Errno::EINVAL,
                LocationError::FileDirClash { .. } => Errno::EEXIST,
                // A device made by a mount process that is not root.
                LocationError::Unsupported { .. } => Errno::EPERM,
                LocationError::Io { message, .. } if message.starts_with("AccessDenied") => {
                    Errno::EACCES
                }
                LocationError::Io { message, .. } if message.contains("No space left") => {
                    Errno::ENOSPC
                }
                _ => Errno::EIO,
            },
            FsError::Staging(e) if e.raw_os_error() == Some(libc::ENOSPC) => Errno::ENOSPC,
            FsError::Staging(_) => Errno::EIO,
        }
    }

    /// Whether the error is worth a log line (the store or staging failed,
    /// or the mount refused something); ENOENT and friends are ordinary.
    pub fn worth_logging(&self) -> bool {
        matches!(
            self,
            FsError::Store(_) | FsError::Staging(_) | FsError::Refused(_)
        ) && !matches!(self, FsError::Store(LocationError::NotFound { .. }))
    }
}

pub type FsResult<T> = std::result::Result<T, FsError>;
