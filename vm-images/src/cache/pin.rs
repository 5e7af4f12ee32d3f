//! Which entries are in use, and when each was last used.
//!
//! Beside each entry `<key>` lies `<key>.use`. A process that uses the entry
//! holds a shared `flock` on it and sets its modification time, which is the
//! entry's "last used" time; `gc` and `clean` evict an entry only while they
//! hold an exclusive lock on it, so they never remove what a live process uses.
//!
//! Pins last until the process exits: what an entry holds is handed on by path
//! (to QEMU, to make, into an initramfs) long after the lookup, so no guard
//! scope short of the process would be honest. The kernel drops the locks
//! with the process, however it ends, so a crashed run pins nothing.
//!
//! The `.use` and `.lock` files are never deleted: a process blocked on a lock
//! of an unlinked file would hold a pin nobody else can see.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::error::{IoContext, Result};

/// The suffix of an entry's use file.
pub(crate) const USE_SUFFIX: &str = ".use";

/// The use files this process holds a shared lock on, by path.
static PINNED: Mutex<Option<HashMap<PathBuf, File>>> = Mutex::new(None);

/// The use file of the entry at `entry`.
pub(crate) fn use_file(entry: &Path) -> PathBuf {
    let mut name = entry.file_name().unwrap_or_default().to_owned();
    name.push(USE_SUFFIX);
    entry.with_file_name(name)
}

/// Opens (creating) the use file of `entry`; its directory must exist.
fn open(entry: &Path) -> Result<(PathBuf, File)> {
    let path = use_file(entry);
    let file = super::open_lock_file(&path)?;
    Ok((path, file))
}

/// Marks `entry` in use by this process until it exits, and used now.
///
/// Blocks while an eviction of the entry holds it; the caller checks after
/// this returns that the entry still exists.
pub(crate) fn pin(entry: &Path) -> Result<()> {
    let mut pinned = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    let map = pinned.get_or_insert_with(HashMap::new);
    let path = use_file(entry);
    if !map.contains_key(&path) {
        let (path, file) = open(entry)?;
        fs4::FileExt::lock_shared(&file).at("locking (shared)", &path)?;
        map.insert(path.clone(), file);
    }
    let file = &map[&path];
    file.set_modified(SystemTime::now())
        .at("marking as used", &path)
}

/// Drops this process's pin of `entry`, as if the process that used it had ended.
#[cfg(test)]
pub(crate) fn unpin(entry: &Path) {
    let mut pinned = PINNED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = pinned.as_mut() {
        map.remove(&use_file(entry));
    }
}

/// When `entry` was last used: its use file's time, else (never pinned) the
/// entry's own.
pub(crate) fn last_used(entry: &Path) -> Option<SystemTime> {
    std::fs::metadata(use_file(entry))
        .or_else(|_| std::fs::metadata(entry))
        .and_then(|m| m.modified())
        .ok()
}

/// An exclusive hold on an entry's use file: no process uses the entry while
/// it lives.
#[derive(Debug)]
pub(crate) struct Unused {
    file: File,
}

impl Drop for Unused {
    fn drop(&mut self) {
        // Closing releases the lock too; unlocking first is only tidier.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// An exclusive hold on `entry`'s use file, or `None` when a process (this one
/// included) uses it.
pub(crate) fn try_unused(entry: &Path) -> Result<Option<Unused>> {
    let (path, file) = open(entry)?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(Unused { file })),
        Err(fs4::TryLockError::WouldBlock) => Ok(None),
        Err(fs4::TryLockError::Error(e)) => Err(e).at("locking", &path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_entry_cannot_be_held_unused() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        pin(&a).unwrap();
        pin(&a).unwrap();
        assert!(try_unused(&a).unwrap().is_none());
        let held = try_unused(&b).unwrap();
        assert!(held.is_some());
        assert!(try_unused(&b).unwrap().is_none(), "exclusive while held");
        drop(held);
        assert!(try_unused(&b).unwrap().is_some());
        assert_eq!(use_file(&a), tmp.path().join("a.use"));
    }
}
