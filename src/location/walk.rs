//! The blocking directory walk behind [`LocalLocation::list`]: keys in S3's
//! byte order. Each directory's children are read and sorted by name, a
//! directory compared as `name/`, then visited depth first from an explicit
//! stack; entries go out through a bounded channel as they are found, so
//! memory is bounded by the directories on the current path. Symlinks and
//! special files are listed as keys (from `lstat`: a link is never followed,
//! its size is its target's length), our temp files left out (and
//! remembered when their writer is dead).
//!
//! The walk never goes by name from `/`: each frame keeps its directory's
//! descriptor and a child directory is opened from it with
//! `openat(O_DIRECTORY|O_NOFOLLOW)`, so a directory swapped for a link
//! between being listed and being entered is reported, never followed.
//!
//! [`LocalLocation::list`]: super::local::LocalLocation

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::dirfd::{self, Found, Root};
use super::key;
use super::local_files::{meta_of, pid_alive, temp_owner, TEMP_PREFIX, TEMP_SUFFIX};
use super::{Entry, LocationError, Result};

/// A dead writer's temp file: its directory (relative to the root) and name.
pub(super) type Leftover = (PathBuf, OsString);

/// The blocking directory walk behind [`LocalLocation::list`].
pub(super) struct Walker {
    pub(super) root: Arc<Root>,
    pub(super) location: String,
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Entry>>,
    pub(super) leftovers: Arc<Mutex<Vec<Leftover>>>,
}

/// One child of a directory, with the name it sorts by (`name/` for directories).
struct Child {
    sort_key: Vec<u8>,
    name: OsString,
    meta: Found,
}

/// A directory being visited: its relative path, its descriptor, and its
/// remaining children, reversed.
struct Frame {
    rel: PathBuf,
    fd: OwnedFd,
    children: Vec<Child>,
}

impl Walker {
    pub(super) fn run(self) {
        let mut stack: Vec<Frame> = Vec::new();
        let top = self
            .root
            .dir(Path::new(""))
            .and_then(|fd| Ok((self.children(&fd, Path::new(""))?, fd)));
        match top {
            Ok((children, fd)) => stack.push(Frame {
                rel: PathBuf::new(),
                fd,
                children,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                let _ = self.send(Err(self.err("list", "", e)));
                return;
            }
        }
        while let Some(frame) = stack.last_mut() {
            let Some(child) = frame.children.pop() else {
                stack.pop();
                continue;
            };
            let rel = frame.rel.join(&child.name);
            let alive = if !child.meta.is_dir() {
                self.send_entry(&rel, &child.meta, false)
            } else {
                match self.enter(&frame.fd, &child, &rel) {
                    Err(e) => self.send(Err(self.err("list", &rel.to_string_lossy(), e))),
                    Ok((_, children)) if children.is_empty() => {
                        self.send_entry(&rel, &child.meta, true)
                    }
                    Ok((fd, children)) => {
                        stack.push(Frame { rel, fd, children });
                        true
                    }
                }
            };
            if !alive {
                return;
            }
        }
    }

    /// Opens child directory `child` of `parent` (never through a link)
    /// and reads its children.
    fn enter(
        &self,
        parent: &OwnedFd,
        child: &Child,
        rel: &Path,
    ) -> io::Result<(OwnedFd, Vec<Child>)> {
        let fd = dirfd::open_child_dir(parent.as_fd(), &child.name, rel)?;
        let children = self.children(&fd, rel)?;
        Ok((fd, children))
    }

    fn send_entry(&self, rel: &Path, m: &Found, is_dir: bool) -> bool {
        let entry = key::relpath_to_key(rel, is_dir)
            .map(|key| Entry {
                key,
                size: super::special::listed_size(m),
                modified: m.modified(),
                etag: None,
                meta: Some(meta_of(m)),
            })
            .map_err(|reason| LocationError::UnsafeKey {
                location: self.location.clone(),
                key: rel.to_string_lossy().into_owned(),
                reason,
            });
        self.send(entry)
    }

    fn send(&self, item: Result<Entry>) -> bool {
        self.tx.blocking_send(item).is_ok()
    }

    fn err(&self, op: &'static str, key: &str, e: io::Error) -> LocationError {
        LocationError::Io {
            location: self.location.clone(),
            op,
            key: key.to_string(),
            message: e.to_string(),
            transient: false,
        }
    }

    /// A directory's children sorted in S3 order, reversed for popping;
    /// our temp files are left out (and remembered when their writer is dead).
    fn children(&self, dir: &OwnedFd, rel: &Path) -> io::Result<Vec<Child>> {
        let mut out = Vec::new();
        for name in dirfd::read_names(dirfd::readable(dir.as_fd())?)? {
            if let Some(pid) = temp_owner(name.as_bytes()) {
                if !pid_alive(pid) {
                    if let Ok(mut l) = self.leftovers.lock() {
                        l.push((rel.to_path_buf(), name));
                    }
                }
                continue;
            }
            let meta = match dirfd::stat_at(dir.as_fd(), &name) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut sort_key = name.as_bytes().to_vec();
            if meta.is_dir() {
                sort_key.push(b'/');
            }
            out.push(Child {
                sort_key,
                name,
                meta,
            });
        }
        out.sort_by(|a, b| b.sort_key.cmp(&a.sort_key));
        Ok(out)
    }
}

/// Entries of one directory read per page: a directory of 100k files is
/// paged rather than answered at once.
const DIR_PAGE: usize = 1000;

/// One page of a local directory, in byte order of the keys (a directory
/// sorts as `name/`), resuming after the key `token`. Our temp files are left
/// out; symbolic links and special files are listed as the walk lists them.
pub(super) fn list_dir_page(
    dir_fd: OwnedFd,
    dir: &str,
    token: Option<String>,
) -> io::Result<super::DirPage> {
    let mut items = Vec::new();
    for name in dirfd::read_names(dirfd::readable(dir_fd.as_fd())?)? {
        let Some(utf8) = name.to_str() else { continue };
        if utf8.starts_with(TEMP_PREFIX) && utf8.ends_with(TEMP_SUFFIX) {
            continue;
        }
        let m = match dirfd::stat_at(dir_fd.as_fd(), &name) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let item = if m.is_dir() {
            super::DirItem::Dir(format!("{dir}{utf8}/"))
        } else {
            super::DirItem::File(Entry {
                key: format!("{dir}{utf8}"),
                size: super::special::listed_size(&m),
                modified: m.modified(),
                etag: None,
                meta: Some(meta_of(&m)),
            })
        };
        if token.as_deref().is_some_and(|t| item.key() <= t) {
            continue;
        }
        items.push(item);
    }
    items.sort_by(|a, b| a.key().cmp(b.key()));
    let next = (items.len() > DIR_PAGE).then(|| items[DIR_PAGE - 1].key().to_string());
    items.truncate(DIR_PAGE);
    Ok(super::DirPage {
        items,
        next,
        marker: false,
    })
}
