//! What each file operation does to the location, as async functions over
//! keys: the FUSE adapter (`fs.rs`) maps inodes and handles to these and
//! their errors to errnos. No S3 or file logic lives here either — only
//! `Location` calls.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};

use crate::location::{key, move_key, DirItem, FileKind, Location, ObjectInfo, PosixMeta};

use super::cache::{Attr, BlockCache, MetaCache};
use super::error::{FsError, FsResult};
use super::inode::{name_of, parent_of};
use super::permission::{may_access, Caller, Refusal, WRITE};
use super::prefetch::Budget;
use super::write::Staged;

/// Objects moved at once when a directory is renamed.
const RENAME_CONCURRENCY: usize = 16;

/// Settings of one mount.
#[derive(Clone, Debug)]
pub struct MountSettings {
    pub read_only: bool,
    pub metadata_ttl: Duration,
    /// Owner, group and permission bits for objects without metadata.
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
    /// Where files being written are staged.
    pub staging_dir: std::path::PathBuf,
    /// A directory rename moving more objects than this is refused.
    pub max_rename_objects: u64,
    /// Files show what the listing says (size, LastModified) with the
    /// default owner and modes: no HEAD per file for stored metadata.
    pub listing_attributes: bool,
}

pub struct Core {
    pub loc: Arc<dyn Location>,
    pub settings: MountSettings,
    pub meta: MetaCache,
    pub blocks: Arc<BlockCache>,
    /// The read-ahead memory all open files share.
    pub budget: Arc<Budget>,
    /// This mount's counters in the process's metrics.
    pub metrics: MountMetrics,
    /// Files open for writing, by key.
    staged: Mutex<HashMap<String, Arc<Staged>>>,
    /// Directories made through this mount: they exist even where the store
    /// does not list empty directory markers.
    made_dirs: Mutex<HashSet<String>>,
    /// Directories made here within the TTL, with every name added to them
    /// here since: a lookup of any other name in them is a miss without
    /// asking the store (as a cached negative entry would be), which keeps
    /// `cp -r` into a new directory at one request per file.
    known: moka::sync::Cache<String, Arc<Mutex<HashSet<String>>>>,
    /// Keys hidden because they cannot be names, each logged once.
    hidden: Mutex<HashSet<String>>,
}

use crate::lock;
use crate::metrics::MountMetrics;

/// The path form of a key (no trailing slash), as caches index it.
fn path_of(key: &str) -> &str {
    key.strip_suffix('/').unwrap_or(key)
}

impl Core {
    pub fn new(
        loc: Arc<dyn Location>,
        settings: MountSettings,
        blocks: BlockCache,
        budget: Budget,
        metrics: MountMetrics,
    ) -> Core {
        let ttl = settings.metadata_ttl.max(Duration::from_millis(1));
        Core {
            loc,
            meta: MetaCache::new(settings.metadata_ttl),
            settings,
            blocks: Arc::new(blocks.with_metrics(metrics.clone())),
            budget: Arc::new(budget),
            metrics,
            staged: Mutex::new(HashMap::new()),
            made_dirs: Mutex::new(HashSet::new()),
            known: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(ttl)
                .build(),
            hidden: Mutex::new(HashSet::new()),
        }
    }

    /// Refuses changes on a read-only mount.
    pub(super) fn check_writable(&self) -> FsResult<()> {
        self.writable()
    }

    /// `key` was just written as a new entry: caches forget what they knew.
    pub(super) fn created(&self, key: &str) {
        self.invalidate(key);
        self.note(key, true);
    }

    fn writable(&self) -> FsResult<()> {
        if self.settings.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Checks a name given by the kernel for a new entry.
    pub fn check_name(name: &str) -> FsResult<()> {
        match key::check_key(name) {
            Ok(()) if !name.contains('/') => Ok(()),
            Err(key::UnsafeReason::ComponentTooLong(_)) | Err(key::UnsafeReason::TooLong(_)) => {
                Err(FsError::NameTooLong)
            }
            _ => Err(FsError::Invalid(format!("`{name}` cannot be a key"))),
        }
    }

    /// Whether a listed name can be shown; a key that cannot be a path is
    /// hidden and logged once.
    pub fn showable(&self, key: &str) -> bool {
        let name = name_of(key);
        let ok = !name.is_empty() && Self::check_name(name).is_ok();
        if !ok && lock(&self.hidden).insert(key.to_string()) {
            tracing::warn!(location = %self.loc.describe(), key, "key hidden in the mount: it cannot be a file name (see SEMANTICS.md)");
        }
        ok
    }

    pub fn now_meta(&self, mode: u32, uid: u32, gid: u32) -> PosixMeta {
        let now = crate::location::meta::system_time_to_ns(SystemTime::now());
        PosixMeta {
            mtime_ns: Some(now),
            mode: Some(mode),
            uid: Some(uid),
            gid: Some(gid),
            rdev: None,
            ctime_ns: Some(now),
        }
    }

    /// The attributes shown for stored metadata.
    pub fn attr_of(
        &self,
        is_dir: bool,
        size: u64,
        modified: Option<SystemTime>,
        meta: &PosixMeta,
        etag: Option<String>,
    ) -> Attr {
        let default = if is_dir {
            self.settings.dir_mode
        } else {
            self.settings.file_mode
        };
        let mtime = meta.mtime().or(modified).unwrap_or(SystemTime::UNIX_EPOCH);
        Attr {
            is_dir,
            size: if is_dir { 0 } else { size },
            mtime,
            ctime: meta.ctime().unwrap_or(mtime),
            perm: (meta.mode.unwrap_or(default) & 0o7777) as u16,
            uid: meta.uid.unwrap_or(self.settings.uid),
            gid: meta.gid.unwrap_or(self.settings.gid),
            etag,
            kind: if is_dir { FileKind::Dir } else { meta.kind() },
            rdev: meta.rdev.unwrap_or(0),
        }
    }

    fn attr_of_info(&self, is_dir: bool, info: &ObjectInfo) -> Attr {
        let none = PosixMeta::default();
        let meta = match self.settings.listing_attributes {
            true => &none,
            false => &info.meta,
        };
        self.attr_of(is_dir, info.size, info.modified, meta, info.etag.clone())
    }

    pub fn root_attr(&self) -> Attr {
        self.attr_of(true, 0, None, &PosixMeta::default(), None)
    }

    pub fn staged(&self, key: &str) -> Option<Arc<Staged>> {
        lock(&self.staged).get(key).cloned()
    }

    pub fn staged_attr(&self, s: &Staged) -> Attr {
        self.attr_of(false, s.size(), None, &s.meta(), None)
    }

    /// What stands at `path` (a key without trailing slash): a directory
    /// shadows a file of the same name.
    pub async fn probe(&self, path: &str) -> FsResult<Option<Attr>> {
        if path.is_empty() {
            return Ok(Some(self.root_attr()));
        }
        if let Some(s) = self.staged(path) {
            return Ok(Some(self.staged_attr(&s)));
        }
        if let Some(found) = self.meta.get(path) {
            return Ok(found);
        }
        if let Some(names) = self.known.get(parent_of(path)) {
            if !lock(&names).contains(path) {
                return Ok(None);
            }
        }
        self.probe_store(path).await
    }

    /// [`probe`](Self::probe)'s question put to the store, its answer kept
    /// in the metadata cache.
    async fn probe_store(&self, path: &str) -> FsResult<Option<Attr>> {
        let dir_key = format!("{path}/");
        // Both questions at once; once the directory answers yes, the file's
        // answer is not awaited: a server that keeps keys as files (s3s-fs)
        // fails a HEAD of a directory's name with a 500 that the client
        // would retry for seconds.
        let file = std::pin::pin!(self.loc.stat(path));
        let dir = std::pin::pin!(self.loc.stat_dir(&dir_key));
        let (dir, file) = match futures::future::select(dir, file).await {
            futures::future::Either::Left((dir, file)) => match dir? {
                Some(info) => (Some(info), Ok(None)),
                None if lock(&self.made_dirs).contains(&dir_key) => (None, Ok(None)),
                None => (None, file.await),
            },
            futures::future::Either::Right((file, dir)) => (dir.await?, file),
        };
        let found = match dir {
            Some(info) => Some(self.attr_of_info(true, &info)),
            None if lock(&self.made_dirs).contains(&dir_key) => Some(self.root_attr()),
            None => file?.map(|info| self.attr_of_info(false, &info)),
        };
        self.meta.put(path, found.clone());
        Ok(found)
    }

    /// What the store holds at `key` now, the caches aside (and put in
    /// them): a file or a directory.
    async fn stored(&self, key: &str) -> FsResult<Option<Attr>> {
        let found = self.probe_store(key).await?;
        if found.is_some() {
            self.note(key, true);
        }
        Ok(found)
    }

    /// `path` now exists (or no longer does) in its directory, as far as a
    /// directory made here knows.
    fn note(&self, path: &str, present: bool) {
        if let Some(names) = self.known.get(parent_of(path)) {
            let mut names = lock(&names);
            if present {
                names.insert(path.to_string());
            } else {
                names.remove(path);
            }
        }
    }

    /// A listing of `dir` was asked of the store: what it shows wins.
    pub fn listed(&self, dir: &str) {
        self.known.invalidate(dir);
    }

    /// Forgets everything the caches hold (a change in unknown places).
    pub fn invalidate_all(&self) {
        self.meta.forget_all();
        self.blocks.forget_all();
        self.known.invalidate_all();
    }

    /// Forgets what the caches know of `key` (after a change through the
    /// mount, or one the daemon reports).
    pub fn invalidate(&self, key: &str) {
        self.meta.forget(path_of(key));
        self.blocks.forget_key(path_of(key));
    }

    // ---- reads ----

    /// Opens `key` for reading: the attributes (and version) it is pinned to.
    /// The open is of a file the kernel looked up, so one HEAD answers it;
    /// only when that finds nothing does the full probe (is it a directory
    /// now, or gone?) run.
    pub async fn open_read(&self, key: &str) -> FsResult<Attr> {
        if let Some(info) = self.loc.stat(key).await? {
            let a = self.attr_of_info(false, &info);
            self.meta.put(key, Some(a.clone()));
            return Ok(a);
        }
        match self.probe(key).await? {
            Some(a) if a.is_dir => Err(FsError::IsDir),
            Some(a) => Ok(a),
            None => Err(FsError::NotFound),
        }
    }

    // ---- writes ----

    /// Opens `key` for writing: a staged copy shared by every writer of the
    /// key, filled with the current content unless truncated.
    pub async fn open_write(&self, key: &str, truncate: bool) -> FsResult<Arc<Staged>> {
        self.writable()?;
        if let Some(s) = self.staged(key).filter(|s| s.add_handle()) {
            if truncate {
                let s2 = s.clone();
                tokio::task::spawn_blocking(move || s2.truncate(0))
                    .await
                    .map_err(|e| FsError::Staging(std::io::Error::other(e.to_string())))??;
            }
            return Ok(s);
        }
        let attr = self.open_read(key).await?;
        let meta = PosixMeta {
            mtime_ns: Some(crate::location::meta::system_time_to_ns(attr.mtime)),
            mode: Some(libc::S_IFREG | u32::from(attr.perm)),
            uid: Some(attr.uid),
            gid: Some(attr.gid),
            rdev: None,
            ctime_ns: Some(crate::location::meta::system_time_to_ns(attr.ctime)),
        };
        let staged = Arc::new(Staged::create(&self.settings.staging_dir, key, meta)?);
        if !truncate {
            staged
                .fill_from(&self.loc, key, attr.size, attr.etag.as_deref())
                .await?;
        }
        lock(&self.staged).insert(key.to_string(), staged.clone());
        Ok(staged)
    }

    /// Creates (or truncates) `key` as a new staged file for `caller`.
    /// An exclusive create (`O_EXCL`) asks the store itself when the cache
    /// says the name is free: another client may have made it within the
    /// metadata TTL, and it must then be EEXIST, not replaced. A name that
    /// turns out to exist is replaced only by a caller who may write it.
    pub async fn create(
        &self,
        key: &str,
        meta: PosixMeta,
        exclusive: bool,
        caller: Caller,
    ) -> FsResult<(Arc<Staged>, Attr)> {
        self.writable()?;
        let found = match self.probe(key).await? {
            None if exclusive && self.staged(key).is_none() => self.stored(key).await?,
            found => found,
        };
        match found {
            Some(a) if a.is_dir => return Err(FsError::IsDir),
            Some(_) if exclusive => return Err(FsError::Exists),
            Some(a) if !may_access(&a, caller, WRITE) => {
                return Err(FsError::NotPermitted(Refusal::Replace))
            }
            _ => {}
        }
        let staged = Arc::new(Staged::create(&self.settings.staging_dir, key, meta)?);
        if found.is_none() {
            staged.set_created_by(Some(caller));
        }
        if let Some(old) = lock(&self.staged).insert(key.to_string(), staged.clone()) {
            // An earlier writer's content is replaced by the new file.
            old.mark_unlinked();
            staged.set_created_by(None);
        }
        self.note(key, true);
        self.invalidate(key);
        let attr = self.staged_attr(&staged);
        Ok((staged, attr))
    }

    /// Uploads a staged file if it changed (close and fsync).
    pub async fn commit(&self, staged: &Staged) -> FsResult<()> {
        let key = staged.key();
        let mut res = staged.upload(&self.loc).await.map_err(FsError::from);
        if let (Err(_), Some(caller)) = (&res, staged.created_by()) {
            res = self.replace_found(staged, caller, res).await;
        }
        if res.is_err() {
            self.metrics.upload_failures.inc();
        }
        self.invalidate(&key);
        res
    }

    /// The upload of a file `caller` made under a free name failed: when
    /// another client made that name meanwhile, what is there now is
    /// replaced only for a caller who may write it (EACCES otherwise, the
    /// object left alone); any other failure stands.
    async fn replace_found(
        &self,
        staged: &Staged,
        caller: Caller,
        failed: FsResult<()>,
    ) -> FsResult<()> {
        let key = staged.key();
        self.invalidate(&key);
        match self.probe_store(&key).await? {
            None => failed,
            Some(a) if a.is_dir => Err(FsError::IsDir),
            Some(a) if !may_access(&a, caller, WRITE) => {
                tracing::warn!(key = %key, uid = caller.uid, "another client made this name while it was written: not replaced (no write permission)");
                Err(FsError::NotPermitted(Refusal::Replace))
            }
            Some(_) => {
                staged.set_created_by(None);
                staged.upload(&self.loc).await.map_err(FsError::from)
            }
        }
    }

    /// Uploads every open file with unsaved changes (before unmounting);
    /// returns the keys whose upload failed.
    pub async fn commit_all(&self) -> Vec<String> {
        let all: Vec<Arc<Staged>> = lock(&self.staged).values().cloned().collect();
        let mut failed = Vec::new();
        for s in all {
            if let Err(e) = self.commit(&s).await {
                tracing::warn!(key = %s.key(), error = %e, "upload of an open file at unmount failed");
                failed.push(s.key());
            }
        }
        failed
    }

    /// The last handle of a staged file closed.
    pub async fn release(&self, staged: &Arc<Staged>) -> FsResult<()> {
        if !staged.drop_handle() {
            return Ok(());
        }
        let res = if staged.upload_failed() {
            // The flush of this close (or an fsync) already failed and
            // returned EIO; uploading again now, after the caller was told
            // the data was not saved, would make it appear behind its back.
            tracing::warn!(key = %staged.key(), "closed after a failed upload: the unsaved content is dropped");
            Ok(())
        } else {
            self.commit(staged).await
        };
        let key = staged.key();
        let mut map = lock(&self.staged);
        if map.get(&key).is_some_and(|s| Arc::ptr_eq(s, staged)) {
            map.remove(&key);
        }
        res
    }

    /// chmod, chown, utimens and truncate of `key`.
    pub async fn set_attr(
        &self,
        key: &str,
        is_dir: bool,
        change: PosixMeta,
        size: Option<u64>,
    ) -> FsResult<Attr> {
        self.writable()?;
        if key.is_empty() {
            // The root has no object to carry metadata (its attributes are
            // --dir-mode, --uid, --gid): the change is accepted and not
            // kept, as `rsync -a` and `cp -a` into the mountpoint set them.
            return Ok(self.root_attr());
        }
        let path = path_of(key);
        let current = self.probe(path).await?.ok_or(FsError::NotFound)?;
        let merged = PosixMeta {
            mtime_ns: change
                .mtime_ns
                .or(Some(crate::location::meta::system_time_to_ns(
                    current.mtime,
                ))),
            // A link's or a device's type stays with its new mode and owner.
            mode: Some(
                (if is_dir {
                    libc::S_IFDIR
                } else {
                    current.kind.type_bits()
                }) | change.mode.unwrap_or(u32::from(current.perm)) & 0o7777,
            ),
            uid: change.uid.or(Some(current.uid)),
            gid: change.gid.or(Some(current.gid)),
            rdev: (current.rdev != 0).then_some(current.rdev),
            // Every change through setattr is a change of the inode.
            ctime_ns: Some(crate::location::meta::system_time_to_ns(SystemTime::now())),
        };
        let meta_changed = change.mode.is_some()
            || change.uid.is_some()
            || change.gid.is_some()
            || change.mtime_ns.is_some();
        if is_dir {
            if meta_changed {
                self.loc.set_meta(key, &merged).await?;
            }
        } else if let Some(staged) = self.staged(key) {
            if let Some(n) = size {
                let s = staged.clone();
                tokio::task::spawn_blocking(move || s.truncate(n))
                    .await
                    .map_err(|e| FsError::Staging(std::io::Error::other(e.to_string())))??;
            }
            if meta_changed {
                if staged.is_dirty() {
                    staged.set_meta(merged);
                } else {
                    // Already uploaded: change the stored object's metadata
                    // rather than uploading the content again.
                    self.loc.set_meta(key, &merged).await?;
                    staged.set_saved_meta(merged);
                }
            }
        } else if let Some(n) = size {
            // Truncating a closed file: stage, cut, upload.
            let staged = self.open_write(key, n == 0).await?;
            let s = staged.clone();
            let res = async {
                tokio::task::spawn_blocking(move || s.truncate(n))
                    .await
                    .map_err(|e| FsError::Staging(std::io::Error::other(e.to_string())))??;
                if meta_changed {
                    staged.set_meta(merged);
                }
                self.commit(&staged).await
            }
            .await;
            let released = self.release(&staged).await;
            res.and(released)?;
        } else if meta_changed {
            self.loc.set_meta(key, &merged).await?;
        }
        self.invalidate(key);
        self.probe(path).await?.ok_or(FsError::NotFound)
    }

    // ---- directories ----

    pub async fn mkdir(&self, key: &str, meta: PosixMeta) -> FsResult<Attr> {
        self.writable()?;
        if self.probe(path_of(key)).await?.is_some() {
            return Err(FsError::Exists);
        }
        self.loc.make_dir(key, &meta).await?;
        lock(&self.made_dirs).insert(key.to_string());
        self.invalidate(key);
        self.note(path_of(key), true);
        self.known.insert(key.to_string(), Arc::default());
        Ok(self.attr_of(true, 0, None, &meta, None))
    }

    /// Whether the directory `dir` has anything in it (listed or staged).
    async fn has_children(&self, dir: &str) -> FsResult<bool> {
        if lock(&self.staged).keys().any(|k| k.starts_with(dir)) {
            return Ok(true);
        }
        let page = self.loc.list_dir(dir, None).await?;
        Ok(!page.items.is_empty())
    }

    pub async fn rmdir(&self, dir: &str) -> FsResult<()> {
        self.writable()?;
        match self.probe(path_of(dir)).await? {
            None => return Err(FsError::NotFound),
            Some(a) if !a.is_dir => return Err(FsError::NotDir),
            _ => {}
        }
        if self.has_children(dir).await? {
            return Err(FsError::NotEmpty);
        }
        self.loc.delete_only(dir).await?;
        lock(&self.made_dirs).remove(dir);
        self.keep_ancestors(dir);
        self.invalidate(dir);
        self.note(path_of(dir), false);
        self.known.invalidate(dir);
        Ok(())
    }

    /// On S3 a directory without a marker exists only through the keys
    /// below it: once its last one is removed through the mount, it would
    /// vanish before `rm -r` gets to remove it (ENOENT). The directories
    /// above a removed key stay here, as made ones, until removed.
    fn keep_ancestors(&self, key: &str) {
        if self.loc.keys_are_paths() {
            return;
        }
        let mut made = lock(&self.made_dirs);
        let mut dir = parent_of(key);
        while !dir.is_empty() {
            made.insert(dir.to_string());
            dir = parent_of(dir);
        }
    }

    pub async fn unlink(&self, key: &str) -> FsResult<()> {
        self.writable()?;
        let staged = lock(&self.staged).remove(key);
        match self.probe(key).await? {
            Some(a) if a.is_dir => return Err(FsError::IsDir),
            None if staged.is_none() => return Err(FsError::NotFound),
            _ => {}
        }
        if let Some(s) = staged {
            s.mark_unlinked();
        }
        self.loc.delete_only(key).await?;
        self.keep_ancestors(key);
        self.invalidate(key);
        self.meta.put(key, None);
        self.note(key, false);
        Ok(())
    }

    /// rename(2) of a file or directory; `no_replace` for RENAME_NOREPLACE.
    /// Returns whether the source was a directory.
    pub async fn rename(&self, from: &str, to: &str, no_replace: bool) -> FsResult<bool> {
        self.writable()?;
        let src = self.probe(from).await?.ok_or(FsError::NotFound)?;
        if let Some(dst) = self.probe(to).await? {
            if no_replace {
                return Err(FsError::Exists);
            }
            match (src.is_dir, dst.is_dir) {
                (false, true) => return Err(FsError::IsDir),
                (true, false) => return Err(FsError::NotDir),
                (true, true) => {
                    let d = format!("{to}/");
                    if self.has_children(&d).await? {
                        return Err(FsError::NotEmpty);
                    }
                    self.loc.delete_only(&d).await?;
                }
                (false, false) => {}
            }
        }
        if src.is_dir {
            self.rename_dir(&format!("{from}/"), &format!("{to}/"))
                .await?;
            self.meta.forget_all();
            self.known.invalidate_all();
        } else {
            self.rename_file(from, to).await?;
            self.note(from, false);
            self.note(to, true);
        }
        self.keep_ancestors(from);
        self.invalidate(from);
        self.invalidate(to);
        Ok(src.is_dir)
    }

    async fn rename_file(&self, from: &str, to: &str) -> FsResult<()> {
        let staged = lock(&self.staged).remove(from);
        if let Some(s) = &staged {
            if let Some(old) = lock(&self.staged).insert(to.to_string(), s.clone()) {
                old.mark_unlinked();
            }
            s.set_key(to);
            if s.is_dirty() {
                // Not uploaded yet: it goes up under the new name on close;
                // an older stored version under the old name goes now.
                self.loc.delete_only(from).await?;
                return Ok(());
            }
        }
        move_key(&self.loc, from, to).await?;
        Ok(())
    }

    async fn rename_dir(&self, from: &str, to: &str) -> FsResult<()> {
        // Staged files below move with the directory.
        {
            let mut map = lock(&self.staged);
            let moving: Vec<String> = map
                .keys()
                .filter(|k| k.starts_with(from))
                .cloned()
                .collect();
            for k in moving {
                if let Some(s) = map.remove(&k) {
                    let nk = format!("{to}{}", &k[from.len()..]);
                    s.set_key(&nk);
                    map.insert(nk, s);
                }
            }
        }
        {
            let mut made = lock(&self.made_dirs);
            let moving: Vec<String> = made
                .iter()
                .filter(|k| k.starts_with(from))
                .cloned()
                .collect();
            for k in moving {
                made.remove(&k);
                made.insert(format!("{to}{}", &k[from.len()..]));
            }
        }
        if self.loc.rename_native(from, to).await? {
            return Ok(());
        }
        let keys = self.keys_below(from).await?;
        let moves = futures::stream::iter(keys.into_iter().map(|k| {
            let nk = format!("{to}{}", &k[from.len()..]);
            async move { move_key(&self.loc, &k, &nk).await }
        }))
        .buffer_unordered(RENAME_CONCURRENCY);
        moves.try_collect::<Vec<()>>().await?;
        Ok(())
    }

    /// Every key below `dir` (its marker included), refusing past the
    /// configured maximum: a rename of a large tree is many copies, not one
    /// atomic step, and should be a deliberate `cp` + `rm`.
    async fn keys_below(&self, dir: &str) -> FsResult<Vec<String>> {
        let max = self.settings.max_rename_objects;
        let mut keys = Vec::new();
        let mut dirs = vec![dir.to_string()];
        while let Some(d) = dirs.pop() {
            let mut token = None;
            loop {
                let page = self.loc.list_dir(&d, token).await?;
                // A marker is listed with its directory's content: no HEAD
                // per directory to know whether it has one.
                if page.marker {
                    keys.push(d.clone());
                }
                for item in page.items {
                    match item {
                        DirItem::File(e) => keys.push(e.key),
                        DirItem::Dir(k) => dirs.push(k),
                    }
                    if keys.len() as u64 > max {
                        let msg = format!(
                            "rename of directory `{}` refused: it holds more than {max} objects (the --max-rename-objects limit); copy and delete it instead",
                            path_of(dir)
                        );
                        tracing::warn!("{msg}");
                        return Err(FsError::Refused(msg));
                    }
                }
                token = page.next;
                if token.is_none() {
                    break;
                }
            }
        }
        // Markers go last, so a failure part-way leaves the tree visible.
        keys.sort_by_key(|k| k.ends_with('/'));
        Ok(keys)
    }

    /// Staged files directly in `dir` that a listing may not show yet.
    pub fn staged_in(&self, dir: &str) -> Vec<(String, Attr)> {
        lock(&self.staged)
            .iter()
            .filter(|(k, _)| parent_of(k) == dir)
            .map(|(k, s)| (k.clone(), self.staged_attr(s)))
            .collect()
    }

    /// Directories made here (directly in `dir`) that a listing may not show.
    pub fn made_in(&self, dir: &str) -> Vec<String> {
        lock(&self.made_dirs)
            .iter()
            .filter(|k| parent_of(k) == dir)
            .cloned()
            .collect()
    }

    /// Attributes for a page of listed files: local listings carry them;
    /// for S3 the POSIX metadata needs a HEAD per object, done concurrently
    /// and cached, so `ls -l` costs one round of parallel requests per page.
    pub async fn attrs_for(&self, files: &[crate::location::Entry]) -> Vec<Attr> {
        let one = |e: &crate::location::Entry| {
            let e = e.clone();
            async move {
                if self.settings.listing_attributes {
                    let none = PosixMeta::default();
                    return self.attr_of(false, e.size, e.modified, &none, e.etag.clone());
                }
                if let Some(m) = &e.meta {
                    // Local listings carry it; S3 ones where the state
                    // directory remembers this version's metadata.
                    let a = self.attr_of(false, e.size, e.modified, m, e.etag.clone());
                    self.meta.put(&e.key, Some(a.clone()));
                    return a;
                }
                if let Some(Some(a)) = self.meta.get(&e.key) {
                    return a;
                }
                match self.loc.stat(&e.key).await {
                    Ok(Some(info)) => {
                        let a = self.attr_of_info(false, &info);
                        self.meta.put(&e.key, Some(a.clone()));
                        a
                    }
                    _ => self.attr_of(
                        false,
                        e.size,
                        e.modified,
                        &PosixMeta::default(),
                        e.etag.clone(),
                    ),
                }
            }
        };
        futures::stream::iter(files.iter().map(one))
            .buffered(HEAD_CONCURRENCY)
            .collect()
            .await
    }
}

/// HEADs in flight while listing a directory with attributes.
const HEAD_CONCURRENCY: usize = 32;
