//! A "sentinel" tree outside every location a test syncs or mounts: root's
//! private files and a root 0700 directory, with their content, owner and
//! mode recorded, so a test can show that nothing outside the root was
//! read, written, chowned or deleted (`assert_unchanged`).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The content of the secret files: a test also checks it never reached a
/// bucket.
pub const SECRET: &[u8] = b"root's secret, never to leave the sentinel tree\n";

/// What one entry looked like: mode, owner, group, size, content, and for
/// a directory its names.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    content: Vec<u8>,
}

pub struct Sentinel {
    dir: tempfile::TempDir,
    before: BTreeMap<PathBuf, Seen>,
}

impl Sentinel {
    /// `secret` (0600), `public` (0644), `closed/` (0700) holding
    /// `closed/inner` (0600) and `closed/sub/` (0700), all root's.
    pub fn new() -> Sentinel {
        let dir = super::tempdir();
        let root = dir.path();
        std::fs::create_dir_all(root.join("closed/sub")).expect("sentinel dirs");
        for (rel, mode) in [
            ("secret", 0o600),
            ("public", 0o644),
            ("closed/inner", 0o600),
        ] {
            std::fs::write(root.join(rel), SECRET).expect("sentinel file");
            chmod(&root.join(rel), mode);
        }
        chmod(&root.join("closed/sub"), 0o700);
        chmod(&root.join("closed"), 0o700);
        // Other users reach the tree's top (as an attacker would see /etc).
        chmod(root, 0o755);
        let before = snapshot(root);
        Sentinel { dir, before }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Panics naming what changed since [`Sentinel::new`].
    #[track_caller]
    pub fn assert_unchanged(&self, what: &str) {
        let now = snapshot(self.dir.path());
        for (path, seen) in &self.before {
            assert_eq!(
                now.get(path),
                Some(seen),
                "{what}: sentinel {} changed",
                path.display()
            );
        }
        let added: Vec<_> = now
            .keys()
            .filter(|p| !self.before.contains_key(*p))
            .collect();
        assert!(
            added.is_empty(),
            "{what}: appeared in the sentinel tree: {added:?}"
        );
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let content = if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&p)
                .expect("read sentinel dir")
                .map(|e| e.expect("entry").path())
                .collect();
            names.sort();
            let listing = names
                .iter()
                .map(|n| n.to_string_lossy().into_owned() + "\n")
                .collect::<String>();
            todo.extend(names);
            listing.into_bytes()
        } else if m.file_type().is_symlink() {
            std::fs::read_link(&p)
                .expect("readlink")
                .into_os_string()
                .into_encoded_bytes()
        } else {
            std::fs::read(&p).expect("read sentinel file")
        };
        out.insert(
            p,
            Seen {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                content,
            },
        );
    }
    out
}
