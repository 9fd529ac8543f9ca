//! File/directory clashes in a listing bound for a local destination.
//!
//! A bucket may hold both `a` and `a/b`; a directory cannot. As the mount
//! does, the directory wins: the file `a` is skipped and reported. In byte
//! order `a` comes before `a/b`, with keys such as `a-x` or `a.b` possibly in
//! between, so a file is held back until a later key shows whether it is also
//! a directory prefix. Everything after a held key is held too, to keep the
//! order. The hold is bounded: past [`MAX_HELD`] keys the oldest is let go
//! unchecked (a later write of it then fails with a clash error instead).

use std::collections::VecDeque;

use futures::stream::{BoxStream, StreamExt};

use crate::location::{Entry, LocationError};

/// Keys held back at most; bounds memory on adversarial listings.
const MAX_HELD: usize = 10_000;

type Item = Result<Entry, LocationError>;

/// What a newly arrived key means for a held one.
#[derive(Debug, PartialEq, Eq)]
enum Relation {
    /// The new key is under the held key as a directory: a clash.
    Inside,
    /// Keys between the held key and its `held/` range: keep waiting.
    Between,
    /// Past every key the held one could prefix: release it.
    Past,
}

fn relation(held: &str, new: &str) -> Relation {
    match new.strip_prefix(held) {
        Some(rest) => match rest.as_bytes().first() {
            Some(b'/') => Relation::Inside,
            Some(b) if *b < b'/' => Relation::Between,
            _ => Relation::Past,
        },
        None => Relation::Past,
    }
}

pub struct ClashFilter<'a> {
    inner: BoxStream<'a, Item>,
    held: VecDeque<Item>,
    out: VecDeque<Item>,
    done: bool,
}

impl<'a> ClashFilter<'a> {
    pub fn wrap(inner: BoxStream<'a, Item>) -> BoxStream<'a, Item> {
        let state = ClashFilter {
            inner,
            held: VecDeque::new(),
            out: VecDeque::new(),
            done: false,
        };
        futures::stream::unfold(state, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        })
        .boxed()
    }

    async fn next_item(&mut self) -> Option<Item> {
        loop {
            if let Some(x) = self.out.pop_front() {
                return Some(x);
            }
            if self.done {
                return self.held.pop_front();
            }
            match self.inner.next().await {
                None => self.done = true,
                Some(item) => self.accept(item),
            }
        }
    }

    fn accept(&mut self, item: Item) {
        if let Ok(e) = &item {
            self.mark_clashes(&e.key);
            self.release_passed(&e.key);
        }
        let holdable = matches!(&item, Ok(e) if !e.is_dir_marker());
        if holdable || !self.held.is_empty() {
            self.held.push_back(item);
            if self.held.len() > MAX_HELD {
                self.release_front();
            }
        } else {
            self.out.push_back(item);
        }
    }

    /// Turns every held file that `key` proves to be a directory into a skip.
    fn mark_clashes(&mut self, key: &str) {
        for h in self.held.iter_mut() {
            let clash = matches!(h, Ok(e) if !e.is_dir_marker() && relation(&e.key, key) == Relation::Inside);
            if clash {
                if let Ok(e) = h {
                    *h = Err(LocationError::FileDirClash {
                        location: "source".into(),
                        key: e.key.clone(),
                    });
                }
            }
        }
    }

    /// Releases held items from the front while they can no longer clash.
    fn release_passed(&mut self, key: &str) {
        while let Some(front) = self.held.front() {
            let waiting = matches!(front, Ok(e) if !e.is_dir_marker() && relation(&e.key, key) == Relation::Between);
            if waiting {
                return;
            }
            self.release_front();
        }
    }

    fn release_front(&mut self) {
        if let Some(x) = self.held.pop_front() {
            self.out.push_back(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(k: &str) -> Item {
        Ok(Entry {
            key: k.into(),
            size: 1,
            modified: None,
            etag: None,
            meta: None,
        })
    }

    async fn run(keys: &[&str]) -> Vec<String> {
        let s = futures::stream::iter(keys.iter().map(|k| entry(k)).collect::<Vec<_>>()).boxed();
        ClashFilter::wrap(s)
            .map(|i| match i {
                Ok(e) => e.key,
                Err(LocationError::FileDirClash { key, .. }) => format!("CLASH {key}"),
                Err(e) => format!("ERR {e}"),
            })
            .collect()
            .await
    }

    #[tokio::test]
    async fn a_file_that_is_also_a_directory_prefix_is_skipped_and_order_is_kept() {
        let out = run(&["a", "a-x", "a.b", "a/b", "a0", "b"]).await;
        assert_eq!(out, vec!["CLASH a", "a-x", "a.b", "a/b", "a0", "b"]);
    }

    #[tokio::test]
    async fn nested_clashes_are_all_found() {
        let out = run(&["a", "a-x", "a-x/y", "a/b"]).await;
        assert_eq!(out, vec!["CLASH a", "CLASH a-x", "a-x/y", "a/b"]);
    }

    #[tokio::test]
    async fn listings_without_clashes_pass_through_unchanged() {
        let keys = ["a b", "a-b", "a.b", "a/b", "a/c/", "a0", "é"];
        assert_eq!(run(&keys).await, keys.to_vec());
    }

    #[test]
    fn relation_compares_bytes_after_the_prefix() {
        assert_eq!(relation("a", "a/b"), Relation::Inside);
        assert_eq!(relation("a", "a-b"), Relation::Between);
        assert_eq!(relation("a", "a0"), Relation::Past);
        assert_eq!(relation("a", "b"), Relation::Past);
    }
}
