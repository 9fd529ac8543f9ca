//! The inode table: which key each inode number stands for, and how many
//! times the kernel has been told about it (its lookup count).
//!
//! Keys are relative to the location root: `""` is the root, a directory is
//! `a/b/` (with the slash), a file `a/b`. An inode lives while the kernel
//! holds references to it (lookups not yet forgotten); a rename moves the key
//! of the inode and of everything below it, so open handles and cached
//! dentries keep working.

use std::collections::HashMap;

/// The root directory's inode number (FUSE's fixed value).
pub const ROOT: u64 = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub key: String,
    pub is_dir: bool,
    lookups: u64,
}

#[derive(Debug)]
pub struct InodeTable {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<String, u64>,
    next: u64,
}

impl Default for InodeTable {
    fn default() -> Self {
        let mut t = InodeTable {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            next: ROOT + 1,
        };
        t.nodes.insert(
            ROOT,
            Node {
                key: String::new(),
                is_dir: true,
                lookups: 1,
            },
        );
        t.by_key.insert(String::new(), ROOT);
        t
    }
}

/// The key of `name` inside the directory key `dir` (`""` or ending in `/`).
pub fn child_key(dir: &str, name: &str, is_dir: bool) -> String {
    if is_dir {
        format!("{dir}{name}/")
    } else {
        format!("{dir}{name}")
    }
}

/// The name of a key (its last component, without a trailing slash).
pub fn name_of(key: &str) -> &str {
    let k = key.strip_suffix('/').unwrap_or(key);
    k.rsplit('/').next().unwrap_or(k)
}

/// The directory key a key lives in.
pub fn parent_of(key: &str) -> &str {
    let k = key.strip_suffix('/').unwrap_or(key);
    match k.rfind('/') {
        Some(i) => &k[..=i],
        None => "",
    }
}

impl InodeTable {
    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The inode of `key`, made if needed, with one more lookup counted
    /// (every reply that hands an entry to the kernel counts one).
    /// A key that changed between file and directory gets a new inode.
    pub fn remember(&mut self, key: &str, is_dir: bool) -> u64 {
        if let Some(&ino) = self.by_key.get(key) {
            if let Some(n) = self.nodes.get_mut(&ino) {
                n.lookups += 1;
                return ino;
            }
        }
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(
            ino,
            Node {
                key: key.to_string(),
                is_dir,
                lookups: 1,
            },
        );
        self.by_key.insert(key.to_string(), ino);
        ino
    }

    pub fn ino_of(&self, key: &str) -> Option<u64> {
        self.by_key.get(key).copied()
    }

    /// The kernel forgot `n` lookups of `ino`; at zero the inode goes.
    /// Returns whether the inode is gone (its last lookup forgotten).
    pub fn forget(&mut self, ino: u64, n: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(node) = self.nodes.get_mut(&ino) else {
            return false;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups > 0 {
            return false;
        }
        let key = node.key.clone();
        self.nodes.remove(&ino);
        if self.by_key.get(&key) == Some(&ino) {
            self.by_key.remove(&key);
        }
        true
    }

    /// `from` (and, for a directory, everything below it) is now `to`.
    /// Whatever stood at `to` before loses its key.
    pub fn rename(&mut self, from: &str, to: &str) {
        let moved: Vec<(u64, String)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.key == from || (from.ends_with('/') && n.key.starts_with(from)))
            .map(|(&ino, n)| (ino, format!("{to}{}", &n.key[from.len()..])))
            .collect();
        for (_, new_key) in &moved {
            self.by_key.remove(new_key);
        }
        for (ino, new_key) in moved {
            if let Some(n) = self.nodes.get_mut(&ino) {
                if self.by_key.get(&n.key) == Some(&ino) {
                    self.by_key.remove(&n.key);
                }
                n.key = new_key.clone();
                self.by_key.insert(new_key, ino);
            }
        }
    }

    /// `key` is gone: its inode stays for whoever holds it, but a new lookup
    /// of the name makes a fresh one.
    pub fn unlink(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// Every inode but the root, with its key (for kernel invalidations).
    pub fn entries(&self) -> Vec<(u64, String)> {
        self.nodes
            .iter()
            .filter(|(&ino, _)| ino != ROOT)
            .map(|(&ino, n)| (ino, n.key.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compose_and_split() {
        assert_eq!(child_key("", "a", true), "a/");
        assert_eq!(child_key("a/", "b", false), "a/b");
        assert_eq!(name_of("a/b/"), "b");
        assert_eq!(name_of("a/b"), "b");
        assert_eq!(name_of("top"), "top");
        assert_eq!(parent_of("a/b/"), "a/");
        assert_eq!(parent_of("a/b"), "a/");
        assert_eq!(parent_of("a"), "");
        assert_eq!(parent_of("a/"), "");
    }

    #[test]
    fn an_inode_lives_until_the_kernel_forgets_every_lookup() {
        let mut t = InodeTable::default();
        let a = t.remember("a", false);
        assert_eq!(t.remember("a", false), a);
        t.forget(a, 1);
        assert_eq!(t.get(a).map(|n| n.key.as_str()), Some("a"));
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert!(t.ino_of("a").is_none());
        assert_ne!(t.remember("a", false), a, "a forgotten inode is not reused");
        t.forget(ROOT, 100);
        assert!(t.get(ROOT).is_some(), "the root is never forgotten");
    }

    #[test]
    fn renaming_a_directory_moves_every_inode_below_it() {
        let mut t = InodeTable::default();
        let d = t.remember("d/", true);
        let f = t.remember("d/f", false);
        let g = t.remember("d/e/g", false);
        let other = t.remember("dx", false);
        let victim = t.remember("n/f", false);
        t.rename("d/", "n/");
        assert_eq!(t.get(d).unwrap().key, "n/");
        assert_eq!(t.get(f).unwrap().key, "n/f");
        assert_eq!(t.get(g).unwrap().key, "n/e/g");
        assert_eq!(t.get(other).unwrap().key, "dx");
        assert_eq!(t.ino_of("n/f"), Some(f));
        assert_eq!(t.ino_of("d/f"), None);
        // The replaced inode keeps its (stale) key but is no longer found by it.
        assert_eq!(t.get(victim).unwrap().key, "n/f");
    }
}
