//! The FUSE adapter: `fuser::Filesystem` over [`Core`]. It maps inode numbers
//! and file handles to keys and staged files, runs each operation on the
//! tokio runtime (fuser calls us from several threads at once), and turns
//! errors into errnos in one place (`FsError::errno`). No S3 or file logic.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::location::{DirItem, Entry, FileKind, LocationError, PosixMeta};

use super::cache::Attr;
use super::core::Core;
use super::error::{FsError, FsResult};
use super::inode::{child_key, InodeTable, ROOT};
use super::permission::{may_access, may_set_attr, AttrChange, Caller};
use super::prefetch::BLOCK;
use super::reader::{Pinned, Reader};
use super::write::Staged;

/// Largest write the kernel sends at once (fewer, larger requests).
const MAX_WRITE: u32 = 1024 * 1024;

/// A directory being listed: the current page and where the next starts.
struct DirHandle {
    key: String,
    /// Entries of the current page, the first being entry number `base`.
    page: Vec<(String, bool, Option<Attr>)>,
    base: u64,
    next: Option<String>,
    started: bool,
    done: bool,
    /// Staged files and made directories of this directory seen in the listing.
    seen_local: Vec<String>,
    /// Files held back from the pages already read: a directory of the same
    /// name (which shadows them) sorts after everything between `x` and
    /// `x/`, so it may come on a later page.
    held: Vec<Entry>,
}

enum Handle {
    Read(Arc<Reader>),
    Write(Arc<Staged>),
    Dir(Arc<tokio::sync::Mutex<DirHandle>>),
}

pub struct MountFs {
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    inodes: Arc<Mutex<InodeTable>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// The version each inode was last opened at: the kernel may keep its
    /// page cache when it has not changed.
    opened_versions: Mutex<HashMap<u64, String>>,
}

use crate::lock;

impl MountFs {
    pub fn new(core: Arc<Core>, rt: tokio::runtime::Handle) -> MountFs {
        MountFs {
            core,
            rt,
            inodes: Arc::new(Mutex::new(InodeTable::default())),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opened_versions: Mutex::new(HashMap::new()),
        }
    }

    /// The inode table, shared with the [`Mounted`](super::Mounted) handle
    /// so it can tell the kernel which inodes to forget.
    pub fn inodes(&self) -> Arc<Mutex<InodeTable>> {
        self.inodes.clone()
    }

    fn ttl(&self) -> Duration {
        self.core.settings.metadata_ttl
    }

    fn key_of(&self, ino: INodeNo) -> FsResult<(String, bool)> {
        lock(&self.inodes)
            .get(ino.0)
            .map(|n| (n.key.clone(), n.is_dir))
            .ok_or(FsError::NotFound)
    }

    /// The key of `name` in directory `parent` (no trailing slash).
    fn child(&self, parent: INodeNo, name: &OsStr) -> FsResult<String> {
        let (dir, is_dir) = self.key_of(parent)?;
        if !is_dir {
            return Err(FsError::NotDir);
        }
        let name = name
            .to_str()
            .ok_or_else(|| FsError::Invalid("names must be UTF-8".into()))?;
        Core::check_name(name)?;
        Ok(child_key(&dir, name, false))
    }

    fn file_attr(&self, ino: u64, a: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.ctime,
            crtime: a.mtime,
            kind: if a.is_dir {
                FileType::Directory
            } else {
                file_type(a.kind)
            },
            perm: a.perm,
            nlink: if a.is_dir { 2 } else { 1 },
            uid: a.uid,
            gid: a.gid,
            // The kernel's dev_t from the FUSE protocol's 32-bit form.
            rdev: a.rdev as u32,
            blksize: BLOCK as u32,
            flags: 0,
        }
    }

    /// Counts a lookup of `key` and gives its attributes to the kernel.
    fn entry(&self, key: &str, a: &Attr) -> FileAttr {
        let full = if a.is_dir {
            format!("{key}/")
        } else {
            key.to_string()
        };
        let ino = lock(&self.inodes).remember(&full, a.is_dir);
        self.file_attr(ino, a)
    }

    /// Makes `name` in `parent` with `make` (given its key) and answers
    /// with the new entry, or the errno of `op`'s failure.
    fn new_entry(
        &self,
        op: &str,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        make: impl FnOnce(&str) -> FsResult<Attr>,
    ) {
        let res = self.child(parent, name).and_then(|key| {
            let a = make(&key)?;
            Ok(self.entry(&key, &a))
        });
        match res {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(self.fail(op, &name.to_string_lossy(), &e)),
        }
    }

    fn add_handle(&self, h: Handle) -> FileHandle {
        if !matches!(h, Handle::Dir(_)) {
            self.core.metrics.handles.inc();
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, h);
        FileHandle(fh)
    }

    fn staged_of(&self, fh: FileHandle) -> FsResult<Arc<Staged>> {
        match lock(&self.handles).get(&fh.0) {
            Some(Handle::Write(s)) => Ok(s.clone()),
            _ => Err(FsError::BadHandle),
        }
    }

    fn fail(&self, op: &str, what: &str, e: &FsError) -> Errno {
        if e.worth_logging() {
            tracing::warn!(op, key = what, error = %e, "mount operation failed");
        }
        e.errno()
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Fills the directory handle's page so that entry `index` is in it,
    /// fetching pages as needed. False when the listing ended before it.
    async fn page_for(&self, d: &mut DirHandle, index: u64, plus: bool) -> FsResult<bool> {
        if index < d.base {
            // A rewind: list again from the start.
            *d = DirHandle::new(d.key.clone());
        }
        while index >= d.base + d.page.len() as u64 {
            if d.done {
                return Ok(false);
            }
            d.base += d.page.len() as u64;
            d.page = self.next_page(d, plus).await?;
        }
        Ok(true)
    }

    async fn next_page(
        &self,
        d: &mut DirHandle,
        plus: bool,
    ) -> FsResult<Vec<(String, bool, Option<Attr>)>> {
        if d.started && d.next.is_none() {
            d.done = true;
            // The listing ended: add what this mount made that it did not show.
            let mut local: Vec<(String, bool, Option<Attr>)> = Vec::new();
            for (k, a) in self.core.staged_in(&d.key) {
                if !d.seen_local.contains(&k) {
                    local.push((super::inode::name_of(&k).to_string(), false, Some(a)));
                }
            }
            for k in self.core.made_in(&d.key) {
                if !d.seen_local.contains(&k) {
                    local.push((super::inode::name_of(&k).to_string(), true, None));
                }
            }
            return Ok(local);
        }
        d.started = true;
        self.core.listed(&d.key);
        let page = self.core.loc.list_dir(&d.key, d.next.take()).await?;
        d.next = page.next;
        let dirs: std::collections::HashSet<String> = page
            .items
            .iter()
            .filter_map(|i| match i {
                DirItem::Dir(k) => Some(k.trim_end_matches('/').to_string()),
                _ => None,
            })
            .collect();
        let staged: Vec<String> = self
            .core
            .staged_in(&d.key)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let made = self.core.made_in(&d.key);
        // A file whose `name/` sorts after this page's last key may still be
        // shadowed by a directory on a later page: hold it until then.
        let last = page.items.last().map(|i| i.key().to_string());
        let may_follow = |e: &Entry| match (&d.next, &last) {
            (Some(_), Some(last)) => format!("{}/", e.key).as_str() > last.as_str(),
            _ => false,
        };
        let mut candidates = std::mem::take(&mut d.held);
        let mut files = Vec::new();
        let mut out = Vec::new();
        for item in page.items {
            let key = item.key().to_string();
            if !self.core.showable(&key) {
                continue;
            }
            match item {
                DirItem::Dir(k) => {
                    if made.contains(&k) {
                        d.seen_local.push(k.clone());
                    }
                    out.push((super::inode::name_of(&k).to_string(), true, None));
                }
                DirItem::File(e) => candidates.push(e),
            }
        }
        for e in candidates {
            if dirs.contains(&e.key) {
                // A directory shadows a file of the same name.
                continue;
            }
            if may_follow(&e) {
                d.held.push(e);
                continue;
            }
            if staged.contains(&e.key) {
                d.seen_local.push(e.key.clone());
            }
            out.push((super::inode::name_of(&e.key).to_string(), false, None));
            files.push((out.len() - 1, e));
        }
        if plus {
            let entries: Vec<_> = files.iter().map(|(_, e)| e.clone()).collect();
            let attrs = self.core.attrs_for(&entries).await;
            for ((i, e), a) in files.iter().zip(attrs) {
                // A file being written here shows its staged size.
                let a = match self.core.staged(&e.key) {
                    Some(_) => None,
                    None => Some(a),
                };
                out[*i].2 = a;
            }
        }
        Ok(out)
    }

    fn readdir_common(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(u64, u64, &str, FileType, Option<&Attr>) -> bool,
    ) -> FsResult<()> {
        let dir = match lock(&self.handles).get(&fh.0) {
            Some(Handle::Dir(d)) => d.clone(),
            _ => return Err(FsError::BadHandle),
        };
        let (dir_key, _) = self.key_of(ino)?;
        // Offsets: 1 is ".", 2 is "..", entry i of the listing is i + 3.
        let mut next = offset;
        if next == 0 {
            if add(ino.0, 1, ".", FileType::Directory, None) {
                return Ok(());
            }
            next = 1;
        }
        if next == 1 {
            if add(ROOT, 2, "..", FileType::Directory, None) {
                return Ok(());
            }
            next = 2;
        }
        self.run(async {
            let mut d = dir.lock().await;
            let mut index = next - 2;
            loop {
                if !self.page_for(&mut d, index, plus).await? {
                    return Ok(());
                }
                let (name, is_dir, attr) = d.page[(index - d.base) as usize].clone();
                let key = child_key(&dir_key, &name, is_dir);
                // Without attributes (a plain readdir of a listing that has
                // none) the entry's type is a file's or a directory's.
                let unknown = || {
                    self.core
                        .attr_of(is_dir, 0, None, &PosixMeta::default(), None)
                };
                let attr = match attr {
                    Some(a) => a,
                    None if !plus => unknown(),
                    None => match self.core.probe(key.trim_end_matches('/')).await {
                        Ok(Some(a)) => a,
                        _ => unknown(),
                    },
                };
                let kind = if is_dir {
                    FileType::Directory
                } else {
                    file_type(attr.kind)
                };
                let child_ino = if plus {
                    lock(&self.inodes).remember(&key, is_dir)
                } else {
                    lock(&self.inodes).ino_of(&key).unwrap_or(u64::MAX)
                };
                if add(child_ino, index + 3, &name, kind, Some(&attr)) {
                    if plus {
                        lock(&self.inodes).forget(child_ino, 1);
                    }
                    return Ok(());
                }
                index += 1;
            }
        })
    }
}

impl DirHandle {
    fn new(key: String) -> DirHandle {
        DirHandle {
            key,
            page: Vec::new(),
            base: 0,
            next: None,
            started: false,
            done: false,
            seen_local: Vec::new(),
            held: Vec::new(),
        }
    }
}

/// The FUSE file type of a stored kind.
fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

/// The user `req` comes from, for the permission checks.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// The metadata of a file or directory (`kind`) made now by `req`'s caller.
fn new_meta(core: &Core, req: &Request, kind: u32, mode: u32, umask: u32) -> PosixMeta {
    core.now_meta(kind | (mode & !umask & 0o7777), req.uid(), req.gid())
}

fn meta_change(
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<TimeOrNow>,
) -> PosixMeta {
    let t = mtime.map(|t| match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    });
    PosixMeta {
        mtime_ns: t.map(crate::location::meta::system_time_to_ns),
        mode: mode.map(|m| m & 0o7777),
        uid,
        gid,
        rdev: None,
        ctime_ns: None,
    }
}

impl Filesystem for MountFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.set_max_write(MAX_WRITE);
        // The kernel's default of 12 background requests (its own
        // read-ahead among them) in flight would leave most of the 16
        // worker threads idle during a sequential read.
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res =
            self.child(parent, name)
                .and_then(|key| match self.run(self.core.probe(&key))? {
                    Some(a) => Ok(self.entry(&key, &a)),
                    None => Err(FsError::NotFound),
                });
        match res {
            Ok(attr) => reply.entry(&self.ttl(), &attr, Generation(0)),
            Err(e) => reply.error(self.fail("lookup", &name.to_string_lossy(), &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if lock(&self.inodes).forget(ino.0, nlookup) {
            // The kernel dropped the inode, and its cached pages with it.
            lock(&self.opened_versions).remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        // fstat of a file open for writing: what it holds now, also once
        // its name is gone (unlinked while open).
        if let Some(staged) = fh.and_then(|fh| self.staged_of(fh).ok()) {
            let a = self.core.staged_attr(&staged);
            reply.attr(&self.ttl(), &self.file_attr(ino.0, &a));
            return;
        }
        let res = self.key_of(ino).and_then(|(key, _)| {
            self.run(self.core.probe(key.trim_end_matches('/')))?
                .ok_or(FsError::NotFound)
        });
        match res {
            Ok(a) => reply.attr(&self.ttl(), &self.file_attr(ino.0, &a)),
            Err(e) => reply.error(self.fail("getattr", "", &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let times = [atime, mtime];
        let asked = AttrChange {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size: size.is_some(),
            time_given: times
                .iter()
                .any(|t| matches!(t, Some(TimeOrNow::SpecificTime(_)))),
            time_now: times.iter().any(|t| matches!(t, Some(TimeOrNow::Now))),
        };
        let res = self.key_of(ino).and_then(|(key, is_dir)| {
            // The kernel checked against the attributes it holds; the
            // store's current ones decide (another client may have changed
            // the owner or mode within the TTL).
            let current = self
                .run(self.core.probe(key.trim_end_matches('/')))?
                .ok_or(FsError::NotFound)?;
            may_set_attr(&current, caller(req), &asked)?;
            let change =
                self.core
                    .allowed(&key, caller(req), meta_change(mode, uid, gid, mtime))?;
            self.run(self.core.set_attr(&key, is_dir, change, size))
        });
        match res {
            Ok(a) => reply.attr(&self.ttl(), &self.file_attr(ino.0, &a)),
            Err(e) => reply.error(self.fail("setattr", "", &e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.new_entry("mkdir", parent, name, reply, |key| {
            let meta = new_meta(&self.core, req, libc::S_IFDIR, mode, umask);
            let meta = self.core.allowed(key, caller(req), meta)?;
            self.run(self.core.mkdir(&format!("{key}/"), meta))
        })
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.new_entry("symlink", parent, link_name, reply, |key| {
            // A link's own mode is always 0777; its target is data.
            let meta = new_meta(&self.core, req, libc::S_IFLNK, 0o777, 0);
            self.run(self.core.symlink(key, target.as_os_str().as_bytes(), meta))
        })
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self
            .key_of(ino)
            .and_then(|(key, _)| self.run(self.core.readlink(&key)));
        match res {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", "", &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        self.new_entry("mknod", parent, name, reply, |key| {
            let kind = FileKind::of_mode(mode);
            let mut meta = new_meta(&self.core, req, kind.type_bits(), mode, umask);
            if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
                meta.rdev = Some(u64::from(rdev));
            }
            let meta = self.core.allowed(key, caller(req), meta)?;
            self.run(self.core.mknod(key, meta))
        })
    }

    /// Hard links: S3 has no way to give one object two names that change
    /// together, so link(2) is refused with EPERM, link(2)'s errno for a
    /// file system that does not support hard links (README, SEMANTICS.md).
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.child(parent, name).and_then(|key| {
            self.run(self.core.unlink(&key))?;
            lock(&self.inodes).unlink(&key);
            Ok(())
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("unlink", &name.to_string_lossy(), &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.child(parent, name).and_then(|key| {
            let dir = format!("{key}/");
            self.run(self.core.rmdir(&dir))?;
            lock(&self.inodes).unlink(&dir);
            Ok(())
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("rmdir", &name.to_string_lossy(), &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let res = (|| {
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(FsError::Invalid("RENAME_EXCHANGE is not supported".into()));
            }
            let from = self.child(parent, name)?;
            let to = self.child(newparent, newname)?;
            let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
            let was_dir = self.run(self.core.rename(&from, &to, no_replace))?;
            let (f, t) = if was_dir {
                (format!("{from}/"), format!("{to}/"))
            } else {
                (from, to)
            };
            lock(&self.inodes).rename(&f, &t);
            Ok(())
        })();
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("rename", &name.to_string_lossy(), &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.key_of(ino).and_then(|(key, is_dir)| {
            if is_dir {
                return Err(FsError::IsDir);
            }
            let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
            let truncate = flags.0 & libc::O_TRUNC != 0;
            if write {
                let staged = self.run(self.core.open_write(&key, truncate))?;
                lock(&self.opened_versions).remove(&ino.0);
                return Ok((self.add_handle(Handle::Write(staged)), FopenFlags::empty()));
            }
            if let Some(staged) = self.core.staged(&key) {
                staged.add_handle();
                return Ok((self.add_handle(Handle::Write(staged)), FopenFlags::empty()));
            }
            // Close-to-open: the version a reader is pinned to is the
            // store's current one, not what a lookup cached up to a TTL ago
            // (pinned to that, every GET of a since-changed object fails).
            let cached = self.core.meta.get(&key).flatten();
            self.core.meta.forget(&key);
            let a = self.run(self.core.open_read(&key))?;
            // The kernel may hold the older attributes (its size bounds
            // cached reads) until the TTL ends: read around its cache.
            let kernel_stale =
                cached.is_some_and(|c| c.etag != a.etag || c.size != a.size || c.mtime != a.mtime);
            let version = a.etag.clone().unwrap_or_else(|| {
                let t = a
                    .mtime
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                format!("{}-{}", a.size, t.as_nanos())
            });
            // Unchanged since the last open: the kernel's cached pages are still right.
            let keep =
                lock(&self.opened_versions).insert(ino.0, version.clone()) == Some(version.clone());
            let pinned = Pinned {
                key,
                version,
                if_match: a.etag.clone(),
                size: a.size,
            };
            let c = &self.core;
            let h = Reader::new(pinned, c.loc.clone(), c.blocks.clone(), c.budget.clone());
            let flags = if kernel_stale {
                FopenFlags::FOPEN_DIRECT_IO
            } else if keep {
                FopenFlags::FOPEN_KEEP_CACHE
            } else {
                FopenFlags::empty()
            };
            Ok((self.add_handle(Handle::Read(Arc::new(h))), flags))
        });
        match res {
            Ok((fh, flags)) => reply.opened(fh, flags),
            Err(e) => reply.error(self.fail("open", "", &e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let res = self.child(parent, name).and_then(|key| {
            let meta = new_meta(&self.core, req, libc::S_IFREG, mode, umask);
            let meta = self.core.allowed(&key, caller(req), meta)?;
            let exclusive = flags & libc::O_EXCL != 0;
            let (staged, a) = self.run(self.core.create(&key, meta, exclusive, caller(req)))?;
            let attr = self.entry(&key, &a);
            lock(&self.opened_versions).remove(&attr.ino.0);
            Ok((attr, self.add_handle(Handle::Write(staged))))
        });
        match res {
            Ok((attr, fh)) => {
                reply.created(&self.ttl(), &attr, Generation(0), fh, FopenFlags::empty())
            }
            Err(e) => reply.error(self.fail("create", &name.to_string_lossy(), &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let handle = match lock(&self.handles).get(&fh.0) {
            Some(Handle::Read(h)) => Ok(Handle::Read(h.clone())),
            Some(Handle::Write(s)) => Ok(Handle::Write(s.clone())),
            _ => Err(FsError::BadHandle),
        };
        let res = handle.and_then(|h| match h {
            Handle::Read(h) => self.run(h.read(offset, size)).map_err(FsError::from),
            Handle::Write(s) => s.read_at(offset, size).map_err(FsError::from),
            Handle::Dir(_) => Err(FsError::IsDir),
        });
        match res {
            Ok(data) => reply.data(&data),
            // The object was deleted after the open: for the open file that
            // is a change like any other (EIO), and ENOENT is no read(2) error.
            Err(FsError::Store(LocationError::NotFound { key, .. })) => {
                tracing::warn!(
                    key,
                    "an open file's object was deleted from the store; reads fail"
                );
                reply.error(Errno::EIO)
            }
            Err(e) => reply.error(self.fail("read", "", &e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self
            .staged_of(fh)
            .and_then(|s| s.write_at(offset, data).map_err(FsError::from));
        match res {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(self.fail("write", "", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let staged = self.staged_of(fh).ok();
        let res = match staged {
            Some(s) => self.run(self.core.commit(&s)),
            None => Ok(()),
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("flush (upload on close)", "", &e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self
            .staged_of(fh)
            .and_then(|s| self.run(self.core.commit(&s)));
        match res {
            Ok(()) | Err(FsError::BadHandle) => reply.ok(),
            Err(e) => reply.error(self.fail("fsync (upload)", "", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let h = lock(&self.handles).remove(&fh.0);
        if matches!(h, Some(Handle::Read(_) | Handle::Write(_))) {
            self.core.metrics.handles.dec();
        }
        if let Some(Handle::Write(s)) = h {
            if let Err(e) = self.run(self.core.release(&s)) {
                // Nobody is left to tell: the error was returned by the
                // flush before, or is logged now.
                tracing::warn!(key = %s.key(), error = %e, "upload at release failed; the stored object was not changed");
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.key_of(ino) {
            Ok((key, true)) => {
                let h = Handle::Dir(Arc::new(tokio::sync::Mutex::new(DirHandle::new(key))));
                reply.opened(self.add_handle(h), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e.errno()),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.readdir_common(ino, fh, offset, false, |ino, off, name, kind, _| {
            reply.add(INodeNo(ino), off, kind, name)
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdir", "", &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.ttl();
        let dir_attr = self.core.root_attr();
        let res = self.readdir_common(ino, fh, offset, true, |child, off, name, _, attr| {
            let a = attr.unwrap_or(&dir_attr);
            reply.add(
                INodeNo(child),
                off,
                name,
                &ttl,
                &self.file_attr(child, a),
                Generation(0),
            )
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdirplus", "", &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A bucket has no fixed size: report plenty of room, as other S3
        // file systems do, so tools that check free space proceed.
        const BLOCKS: u64 = 1 << 40;
        reply.statfs(BLOCKS, BLOCKS, BLOCKS, 1 << 32, 1 << 32, 4096, 255, 4096);
    }

    /// access(2). Under `default_permissions` (always set by `mount`) the
    /// kernel answers it itself from the attributes we show, with the
    /// caller's full credentials, and never sends it; this is the same
    /// decision for a kernel that would, never a blanket yes.
    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let res = self.key_of(ino).and_then(|(key, _)| {
            self.run(self.core.probe(key.trim_end_matches('/')))?
                .ok_or(FsError::NotFound)
        });
        match res {
            Ok(a) if may_access(&a, caller(req), mask.bits() as u32) => reply.ok(),
            Ok(_) => reply.error(Errno::EACCES),
            Err(e) => reply.error(self.fail("access", "", &e)),
        }
    }
}
