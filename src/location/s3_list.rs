//! Listing a bucket + prefix as one stream sorted in byte order.
//!
//! A flat ListObjectsV2 is strictly sequential (each page needs the previous
//! page's token), which caps a large bucket at one page per round trip. The
//! default walk therefore lists directory by directory with `delimiter=/`:
//! one level's keys and sub-prefixes come back merged in byte order, and a
//! sub-prefix `a/` is replaced, in place, by the walk of `a/` — which is
//! exactly where its keys stand in the flat order, since every key under
//! `a/` sorts after `a/` and before the next sibling. The first pages of the
//! next [`PREFETCH`] sibling directories are fetched concurrently while the
//! current one streams, so memory stays bounded by prefetch × depth pages.
//!
//! Keys are asked URL-encoded (XML 1.0 cannot carry NUL and other control
//! characters) and decoded here; a server that ignores the request sends
//! them as they are, and says so by leaving out the encoding type.

use std::time::SystemTime;

use aws_sdk_s3::types::EncodingType;
use futures::stream::{BoxStream, StreamExt};

use super::s3::{ListMode, S3Location};
use super::{DirItem, DirPage, Entry, Location, LocationError, Result};

/// Sibling directories whose first page is fetched ahead.
const PREFETCH: usize = 8;

/// One item of a listing level, in byte order.
enum Item {
    Key(Entry),
    /// A sub-prefix (full key, ending in `/`).
    Dir(String),
}

/// One page: its items and the token for the next one.
type Page = (Vec<Item>, Option<String>);

impl S3Location {
    pub(super) fn list_sorted(&self) -> BoxStream<'_, Result<Entry>> {
        let prefix = self.cfg.prefix.clone();
        let tree = self.cfg.list_mode == ListMode::Tree;
        let first = async move { self.page(&prefix, tree, None).await };
        let walk = futures::stream::once(first)
            .map(move |page| self.level(self.cfg.prefix.clone(), tree, page))
            .flatten()
            .boxed();
        ensure_sorted(self.describe(), walk)
    }

    /// One page of one directory level (for a mount's readdir).
    pub(super) async fn dir_page(&self, dir: &str, token: Option<String>) -> Result<DirPage> {
        let prefix = format!("{}{dir}", self.cfg.prefix);
        let (items, next) = self.page(&prefix, true, token).await?;
        let marker = items
            .iter()
            .any(|item| matches!(item, Item::Key(e) if e.key == dir));
        let items = items
            .into_iter()
            .filter_map(|item| match item {
                Item::Key(e) if e.key == dir => None,
                Item::Key(e) => Some(DirItem::File(e)),
                Item::Dir(p) => p
                    .strip_prefix(&self.cfg.prefix)
                    .map(|k| DirItem::Dir(k.to_string())),
            })
            .collect();
        Ok(DirPage {
            items,
            next,
            marker,
        })
    }

    /// The whole walk below `prefix`, given its first page.
    fn level(
        &self,
        prefix: String,
        tree: bool,
        first: Result<Page>,
    ) -> BoxStream<'_, Result<Entry>> {
        enum Next {
            First(Result<Page>),
            Token(Option<String>),
        }
        let pages = futures::stream::unfold(Some(Next::First(first)), move |state| {
            let prefix = prefix.clone();
            async move {
                let page = match state? {
                    Next::First(p) => p,
                    Next::Token(None) => return None,
                    Next::Token(Some(t)) => self.page(&prefix, tree, Some(t)).await,
                };
                match page {
                    Ok((items, token)) => Some((Ok(items), Some(Next::Token(token)))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        let items = pages.flat_map(|page| match page {
            Ok(items) => futures::stream::iter(items.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter([Err(e)]).boxed(),
        });
        items
            .map(move |item| async move {
                match item {
                    Ok(Item::Key(e)) => futures::stream::once(async { Ok(e) }).boxed(),
                    Ok(Item::Dir(p)) => {
                        let first = self.page(&p, tree, None).await;
                        self.level(p, tree, first)
                    }
                    Err(e) => futures::stream::once(async { Err(e) }).boxed(),
                }
            })
            .buffered(PREFETCH)
            .flatten()
            .boxed()
    }

    /// One ListObjectsV2 page below `prefix`, keys and sub-prefixes merged.
    async fn page(&self, prefix: &str, tree: bool, token: Option<String>) -> Result<Page> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.cfg.bucket)
            .prefix(prefix)
            .set_delimiter(tree.then(|| "/".to_string()))
            .set_continuation_token(token)
            .encoding_type(EncodingType::Url)
            .send()
            .await
            .map_err(|e| {
                self.err(
                    "ListObjectsV2",
                    prefix.strip_prefix(&self.cfg.prefix).unwrap_or(prefix),
                    e,
                )
            })?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let decode = |raw: &str| {
            if encoded {
                url_decode(raw)
            } else {
                Some(raw.to_string())
            }
        };
        let keys = out.contents().iter().filter_map(|o| {
            let full = decode(o.key()?)?;
            let key = full.strip_prefix(&self.cfg.prefix)?;
            (!key.is_empty()).then(|| Entry {
                key: key.to_string(),
                size: o.size().unwrap_or(0).max(0) as u64,
                modified: o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok()),
                etag: o.e_tag().map(str::to_string),
                meta: None,
            })
        });
        let dirs = out
            .common_prefixes()
            .iter()
            .filter_map(|p| decode(p.prefix()?))
            // A server that echoes the prefix itself would loop forever.
            .filter(|p| p.len() > prefix.len());
        let items = merge(
            keys.map(Item::Key).collect(),
            dirs.map(Item::Dir).collect(),
            &self.cfg.prefix,
        );
        let token = out
            .next_continuation_token()
            .filter(|_| out.is_truncated() == Some(true))
            .map(str::to_string);
        Ok((items, token))
    }
}

/// Merges a page's keys and sub-prefixes (each sorted) into byte order.
fn merge(keys: Vec<Item>, dirs: Vec<Item>, root: &str) -> Vec<Item> {
    let sort_key = |i: &Item| -> Vec<u8> {
        match i {
            Item::Key(e) => format!("{root}{}", e.key).into_bytes(),
            Item::Dir(p) => p.clone().into_bytes(),
        }
    };
    let mut out: Vec<Item> = keys.into_iter().chain(dirs).collect();
    out.sort_by_cached_key(sort_key);
    out
}

/// Decodes a key of a listing asked with `encoding-type=url` (form
/// encoding: `+` is a space). `None` when the result is not UTF-8.
pub(super) fn url_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Checks that a listing really is sorted: the merge-join depends on it, and
/// a server that returns keys out of order would otherwise cause wrong deletes.
pub(crate) fn ensure_sorted<'a>(
    location: String,
    s: BoxStream<'a, Result<Entry>>,
) -> BoxStream<'a, Result<Entry>> {
    let mut last: Option<String> = None;
    s.map(move |item| {
        let e = item?;
        if let Some(prev) = &last {
            if prev.as_bytes() >= e.key.as_bytes() {
                return Err(LocationError::Io {
                    location: location.clone(),
                    op: "ListObjectsV2",
                    key: e.key.clone(),
                    message: format!("listing is not in byte order (`{prev}` came before it); refusing to compare"),
                    transient: false,
                });
            }
        }
        last = Some(e.key.clone());
        Ok(e)
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_encoded_listing_keys_are_decoded() {
        assert_eq!(
            url_decode("a+b%2Bc%00d%C3%A9").as_deref(),
            Some("a b+c\0dé")
        );
        assert_eq!(url_decode("plain/key").as_deref(), Some("plain/key"));
        assert_eq!(url_decode("bad%zz"), None);
        assert_eq!(url_decode("%FF"), None);
    }

    fn key(k: &str) -> Item {
        Item::Key(Entry {
            key: k.into(),
            size: 0,
            modified: None,
            etag: None,
            meta: None,
        })
    }

    fn names(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Key(e) => e.key.clone(),
                Item::Dir(p) => format!("DIR {p}"),
            })
            .collect()
    }

    #[test]
    fn keys_and_sub_prefixes_merge_in_flat_byte_order() {
        let merged = merge(
            vec![key("a-b"), key("a.b"), key("a0")],
            vec![Item::Dir("p/a/".into()), Item::Dir("p/b/".into())],
            "p/",
        );
        assert_eq!(
            names(&merged),
            vec!["a-b", "a.b", "DIR p/a/", "a0", "DIR p/b/"]
        );
    }
}
