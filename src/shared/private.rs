//! Files and directories only their owner may read: everything syncmount
//! keeps for itself (the state directory and what is in it, staging files
//! of writes through a mount, the disk cache). They name every key synced,
//! hold the content of files the mount refuses to others, and the control
//! socket starts tasks as the daemon's user, so none of it may depend on
//! the umask of whoever started the process.
//!
//! Directories are made 0700 and files 0600 at creation (`mkdir`/`open`
//! with that mode: no window in which they are wider; the umask can only
//! narrow them). A file that already exists wider (left by an older
//! version) is narrowed when it is opened again; an existing directory is
//! left as it is, with a warning, since its owner may have widened it on
//! purpose.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory syncmount makes for itself.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file syncmount writes for itself.
pub const FILE_MODE: u32 = 0o600;

/// Makes `dir` and any missing parent, each 0700.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Makes `dir` (a directory only syncmount uses: staging, cache blocks)
/// 0700, narrowing it when it exists wider.
pub fn own_dir(dir: &Path) -> io::Result<()> {
    create_dir(dir)?;
    if std::fs::metadata(dir)?.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes the state directory `dir` 0700 when missing; when it exists with
/// access for others, logs a warning naming it (and leaves it).
pub fn create_state_dir(dir: &Path) -> io::Result<()> {
    create_dir(dir)?;
    let mode = std::fs::metadata(dir)?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            "the state directory {} is mode {mode:04o}: other users may read what it holds (run `chmod 700 {}`)",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Options that create a file 0600 (`OpenOptions` otherwise as usual).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// `File::create`, 0600: a new file, or an existing one emptied (and
/// narrowed to 0600 when wider).
pub fn create_file(path: &Path) -> io::Result<File> {
    let f = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    narrow(&f)?;
    Ok(f)
}

/// Opens `path` for appending, made 0600 when new (narrowed when wider).
pub fn append_file(path: &Path) -> io::Result<File> {
    let f = options().append(true).create(true).open(path)?;
    narrow(&f)?;
    Ok(f)
}

/// `std::fs::write`, 0600.
pub fn write_file(path: &Path, body: impl AsRef<[u8]>) -> io::Result<()> {
    use std::io::Write;
    create_file(path)?.write_all(body.as_ref())
}

/// Makes sure the SQLite database `path` exists 0600 before SQLite opens
/// it: SQLite creates its files 0644 but gives the `-wal`, `-shm` and
/// `-journal` files the database's own mode. Companions left wider by an
/// older version are narrowed too.
pub fn prepare_db(path: &Path) -> io::Result<()> {
    narrow(
        &options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?,
    )?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match OpenOptions::new().write(true).open(&name) {
            Ok(f) => narrow(&f)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// [`prepare_db`], its failure as SQLite's "cannot open" (for code that
/// opens the database in a `rusqlite::Result`).
pub fn prepare_sqlite(path: &Path) -> rusqlite::Result<()> {
    prepare_db(path).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("{}: {e}", path.display())),
        )
    })
}

/// Takes others' and the group's bits off an open file.
fn narrow(f: &File) -> io::Result<()> {
    let mode = f.metadata()?.mode() & 0o7777;
    if mode & 0o077 != 0 {
        f.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn directories_and_files_are_private_and_wider_files_are_narrowed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode_of(&d.path().join("a")), 0o700);
        assert_eq!(mode_of(&dir), 0o700);
        let f = dir.join("f");
        write_file(&f, b"x").unwrap();
        assert_eq!(mode_of(&f), 0o600);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        append_file(&f).unwrap();
        assert_eq!(mode_of(&f), 0o600);
        let db = dir.join("h.db");
        std::fs::write(dir.join("h.db-wal"), b"").unwrap();
        std::fs::set_permissions(dir.join("h.db-wal"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        prepare_db(&db).unwrap();
        assert_eq!(mode_of(&db), 0o600);
        assert_eq!(mode_of(&dir.join("h.db-wal")), 0o600);
    }
}
