//! Work that must wait until a whole pass has been seen (deletions held
//! behind the mass-delete guard), kept in a file as one JSON line per item
//! so memory does not grow with it. The file is removed when the spool is
//! dropped; a killed execution's spool is overwritten by the next one.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::stream::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub struct Spool<T> {
    path: PathBuf,
    out: Mutex<Option<BufWriter<File>>>,
    len: AtomicU64,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Spool<T> {
    /// A new, empty spool at `path` (an old file there is replaced).
    pub fn create(path: PathBuf) -> Result<Self, String> {
        let file = crate::shared::private::create_file(&path)
            .map_err(|e| format!("cannot create `{}`: {e}", path.display()))?;
        Ok(Spool {
            path,
            out: Mutex::new(Some(BufWriter::new(file))),
            len: AtomicU64::new(0),
            _items: PhantomData,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many items were pushed.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `item`; the error names the file.
    pub fn push(&self, item: &T) -> Result<(), String> {
        let mut out = crate::lock(&self.out);
        let written = match out.as_mut() {
            Some(w) => serde_json::to_string(item)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(w, "{line}")),
            None => Err(std::io::Error::other("the spool was already read")),
        };
        written
            .map_err(|e| format!("cannot keep pending work in `{}`: {e}", self.path.display()))?;
        self.len.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Ends writing and runs `f` on every item in order, `concurrency` at a
    /// time. An item that cannot be read back ends the reading with an
    /// error naming the file (the items before it have run).
    pub async fn for_each<F, Fut>(&self, concurrency: usize, f: F) -> Result<(), String>
    where
        F: FnMut(T) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let at =
            |e: &dyn std::fmt::Display| format!("pending work in `{}`: {e}", self.path.display());
        if let Some(mut w) = crate::lock(&self.out).take() {
            w.flush().map_err(|e| at(&e))?;
        }
        if self.is_empty() {
            return Ok(());
        }
        let file = File::open(&self.path).map_err(|e| at(&e))?;
        let mut bad = None;
        let items = BufReader::new(file).lines().map_while(|line| {
            let item = line
                .map_err(|e| e.to_string())
                .and_then(|l| serde_json::from_str::<T>(&l).map_err(|e| e.to_string()));
            match item {
                Ok(i) => Some(i),
                Err(e) => {
                    bad = Some(e);
                    None
                }
            }
        });
        futures::stream::iter(items)
            .for_each_concurrent(concurrency.max(1), f)
            .await;
        match bad {
            Some(e) => Err(at(&e)),
            None => Ok(()),
        }
    }
}

impl<T> Drop for Spool<T> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_come_back_in_order_and_the_file_goes_with_the_spool() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.jsonl");
        let spool = Spool::<String>::create(path.clone()).expect("create");
        for k in ["a", "b\nwith a newline", "c"] {
            spool.push(&k.to_string()).expect("push");
        }
        assert_eq!(spool.len(), 3);
        let seen = Mutex::new(Vec::new());
        spool
            .for_each(1, |k| {
                crate::lock(&seen).push(k);
                async {}
            })
            .await
            .expect("read back");
        assert_eq!(
            seen.into_inner().expect("lock"),
            ["a", "b\nwith a newline", "c"]
        );
        assert!(
            spool.push(&"late".to_string()).is_err(),
            "a read spool takes no more"
        );
        drop(spool);
        assert!(!path.exists(), "the spool file is removed");
    }

    #[tokio::test]
    async fn a_damaged_line_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.jsonl");
        let spool = Spool::<String>::create(path.clone()).expect("create");
        spool.push(&"a".to_string()).expect("push");
        spool.for_each(1, |_| async {}).await.expect("flushes");
        std::fs::write(&path, "\"a\"\nnot json\n\"c\"\n").expect("damage");
        let seen = Mutex::new(0);
        let e = spool
            .for_each(1, |_| {
                *crate::lock(&seen) += 1;
                async {}
            })
            .await
            .expect_err("a damaged line");
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert_eq!(*crate::lock(&seen), 1, "the item before it ran");
    }
}
