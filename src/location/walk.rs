//! The blocking directory walk behind [`LocalLocation::list`]: keys in S3's
//! byte order. Each directory's children are read and sorted by name, a
//! directory compared as `name/`, then visited depth first from an explicit
//! stack; entries go out through a bounded channel as they are found, so
//! memory is bounded by the directories on the current path. Symlinks and
//! special files are listed as keys (from `lstat`: a link is never followed,
//! its size is its target's length), our temp files left out (and
//! remembered when their writer is dead).
//!
//! [`LocalLocation::list`]: super::local::LocalLocation

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::key;
use super::local_files::{meta_of, pid_alive, temp_owner};
use super::{Entry, LocationError, Result};

/// The blocking directory walk behind [`LocalLocation::list`].
pub(super) struct Walker {
    pub(super) root: PathBuf,
    pub(super) location: String,
    pub(super) tx: tokio::sync::mpsc::Sender<Result<Entry>>,
    pub(super) leftovers: Arc<Mutex<Vec<PathBuf>>>,
}

/// One child of a directory, with the name it sorts by (`name/` for directories).
struct Child {
    sort_key: Vec<u8>,
    name: OsString,
    meta: fs::Metadata,
}

impl Walker {
    pub(super) fn run(self) {
        // Each frame: a directory's relative path and its remaining children, reversed.
        let mut stack: Vec<(PathBuf, Vec<Child>)> = Vec::new();
        match self.children(Path::new("")) {
            Ok(c) => stack.push((PathBuf::new(), c)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e) => {
                let _ = self.send(Err(self.err("list", "", e)));
                return;
            }
        }
        while let Some((dir, children)) = stack.last_mut() {
            let Some(child) = children.pop() else {
                stack.pop();
                continue;
            };
            let rel = dir.join(&child.name);
            if !self.visit(rel, child, &mut stack) {
                return;
            }
        }
    }

    /// Handles one child; false when the consumer has gone away.
    fn visit(&self, rel: PathBuf, child: Child, stack: &mut Vec<(PathBuf, Vec<Child>)>) -> bool {
        let ft = child.meta.file_type();
        if ft.is_dir() {
            return match self.children(&rel) {
                Ok(c) if c.is_empty() => self.send_entry(&rel, &child.meta, true),
                Ok(c) => {
                    stack.push((rel, c));
                    true
                }
                Err(e) => self.send(Err(self.err("list", &rel.to_string_lossy(), e))),
            };
        }
        self.send_entry(&rel, &child.meta, false)
    }

    fn send_entry(&self, rel: &Path, m: &fs::Metadata, is_dir: bool) -> bool {
        let entry = key::relpath_to_key(rel, is_dir)
            .map(|key| Entry {
                key,
                size: super::special::listed_size(m),
                modified: m.modified().ok(),
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
    fn children(&self, rel: &Path) -> io::Result<Vec<Child>> {
        let dir = self.root.join(rel);
        let mut out = Vec::new();
        for de in fs::read_dir(&dir)? {
            let de = de?;
            let name = de.file_name();
            if let Some(pid) = temp_owner(name.as_bytes()) {
                if !pid_alive(pid) {
                    if let Ok(mut l) = self.leftovers.lock() {
                        l.push(dir.join(&name));
                    }
                }
                continue;
            }
            let meta = match de.metadata() {
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
