//! The artefact store: one per user, shared by every clone, the installed
//! `bigbar` and the tests; complete entries appear atomically, under a lock.
//!
//! Layout: `<root>/<category...>/<key>` is a complete entry (a directory),
//! `<root>/<category...>/<key>.lock` serialises its creation,
//! `<root>/<category...>/<key>.use` marks it in use and last used (see `pin.rs`), and
//! `<root>/<category...>/.partial-<key>-*` are entries being filled. An entry is
//! filled in a temporary directory next to its final place and renamed into place
//! only once complete, so an interrupted fetch never looks complete.
//!
//! Keys are content addresses: each kind of entry hashes every input that changes
//! its bytes into its key (see [`KeyHasher`]), so an unchanged input finds its
//! entry and a changed one makes a new entry beside the old.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::manifest;

pub mod inventory;
mod pin;

pub use inventory::{disk_usage, human_size, parse_size, Entry, EntryRecord, Eviction};

/// Environment variable that overrides the cache root.
pub const CACHE_ENV: &str = "BIGBAR_CACHE";

/// The user's store: `$BIGBAR_CACHE`, else `$XDG_CACHE_HOME/bigbar` (when that
/// is absolute, as the XDG specification demands), else `$HOME/.cache/bigbar`.
pub fn default_root() -> Result<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    resolve_root(var(CACHE_ENV), var("XDG_CACHE_HOME"), var("HOME"))
}

/// [`default_root`] from the three variables' values.
fn resolve_root(
    bigbar: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf> {
    if let Some(dir) = bigbar {
        return Ok(dir.into());
    }
    if let Some(dir) = xdg.map(PathBuf::from).filter(|d| d.is_absolute()) {
        return Ok(dir.join("bigbar"));
    }
    match home {
        Some(home) => Ok(PathBuf::from(home).join(".cache/bigbar")),
        None => Err(Error::InvalidInput {
            what: "environment",
            value: "HOME unset".into(),
            reason: format!(
                "with neither ${CACHE_ENV}, an absolute $XDG_CACHE_HOME nor $HOME \
                 there is no default store; give --cache DIR (or ${CACHE_ENV})"
            ),
        }),
    }
}

/// Prefix of directories being filled.
const PARTIAL_PREFIX: &str = ".partial-";

/// A cache rooted at one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    root: PathBuf,
}

/// An exclusive advisory lock on a lock file, released on drop.
#[derive(Debug)]
pub struct CacheLock {
    file: File,
    path: PathBuf,
}

/// Opens (creating, never truncating) a file that only carries locks.
pub(crate) fn open_lock_file(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at("opening lock file", path)
}

impl CacheLock {
    /// Blocks until the lock file at `path` is locked exclusively.
    pub fn acquire(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at("creating directory", parent)?;
        }
        let file = open_lock_file(path)?;
        // Called through the trait: std's inherent `File::lock` is newer than our MSRV.
        fs4::FileExt::lock(&file).at("locking", path)?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// [`CacheLock::acquire`], first saying on stderr what it waits for
    /// (`waiting()`) when another process holds the lock: a kernel build can
    /// hold it for minutes.
    pub fn acquire_saying(path: &Path, waiting: impl FnOnce() -> String) -> Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).at("creating directory", parent)?;
        }
        if let Some(lock) = Self::try_acquire(path)? {
            return Ok(lock);
        }
        eprintln!("bigbar: {}", waiting());
        Self::acquire(path)
    }

    /// Locks the lock file at `path` if no one holds it; `None` if one does.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>> {
        let file = open_lock_file(path)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => Ok(Some(Self {
                file,
                path: path.to_owned(),
            })),
            Err(fs4::TryLockError::WouldBlock) => Ok(None),
            Err(fs4::TryLockError::Error(e)) => Err(e).at("locking", path),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first is only tidier.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

impl Cache {
    /// A cache rooted at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The user's store ([`default_root`]).
    pub fn user() -> Result<Self> {
        default_root().map(Self::new)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a category, e.g. `["kernel", "debian-sid"]`.
    pub fn category_dir(&self, category: &[&str]) -> PathBuf {
        category.iter().fold(self.root.clone(), |p, c| p.join(c))
    }

    /// Locks the named lock file inside a category.
    pub fn lock(&self, category: &[&str], name: &str) -> Result<CacheLock> {
        let name = checked_key(name)?;
        CacheLock::acquire(&self.category_dir(category).join(format!("{name}.lock")))
    }

    /// The path of a complete, undamaged entry, if it exists. A damaged one reads
    /// as absent, so the caller fetches it again (through [`Cache::get_or_create`],
    /// which replaces it).
    /// A found entry is pinned (see `pin.rs`) until the process exits.
    pub fn existing(&self, category: &[&str], key: &str) -> Result<Option<PathBuf>> {
        let Some(path) = self.made(category, key)? else {
            return Ok(None);
        };
        if manifest::check(&path)?.is_some() {
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// The path of an entry that was complete when it was made, without checking
    /// it for later damage: for reading an entry's small records where its bulk
    /// is not used (the kernel source's version, without statting its 96 000
    /// files). Whoever uses the bulk goes through [`Cache::existing`] or
    /// [`Cache::get_or_create`].
    /// A found entry is pinned, as by [`Cache::existing`].
    pub fn made(&self, category: &[&str], key: &str) -> Result<Option<PathBuf>> {
        let dir = self.category_dir(category);
        let path = dir.join(checked_key(key)?);
        if !path.is_dir() {
            return Ok(None);
        }
        // Pinned before the second look, so an eviction is either over (the
        // entry is gone) or waits for this process to end.
        pin::pin(&path)?;
        Ok(path.is_dir().then_some(path))
    }

    /// Returns the complete entry `key` of `category`, creating it with `fill` if absent.
    ///
    /// `fill` receives an empty temporary directory inside the category; when it returns
    /// `Ok` the directory is renamed to the entry's final path. The entry's lock is held
    /// throughout, so concurrent callers wait and then find the complete entry. The
    /// entry is pinned until the process exits.
    pub fn get_or_create(
        &self,
        category: &[&str],
        key: &str,
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let key = checked_key(key)?;
        let dir = self.category_dir(category);
        let path = dir.join(key);
        let lock_path = dir.join(format!("{key}.lock"));
        let _lock = CacheLock::acquire_saying(&lock_path, || {
            format!(
                "waiting for another process that is making {}",
                path.display()
            )
        })?;
        pin::pin(&path)?;
        if path.is_dir() {
            match manifest::check(&path)? {
                None => return Ok(path),
                Some(problem) => set_aside_damaged(&path, &dir, key, &problem)?,
            }
        }
        if remove_stale_partials(&dir, key)? > 0 {
            eprintln!(
                "bigbar: an earlier making of {} was interrupted (killed, or its disk \
                 filled) before it was complete; making it again",
                path.display()
            );
        }
        let partial = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{key}-"))
            .tempdir_in(&dir)
            .at("creating temporary directory in", &dir)?;
        fill(partial.path())?;
        manifest::write(partial.path())?;
        write_entry_record(partial.path())?;
        let filled = partial.keep();
        fs::rename(&filled, &path).at("renaming complete cache entry into", &path)?;
        Ok(path)
    }

    /// Reads a small text record (e.g. which version is current) of a category.
    pub fn read_record(&self, category: &[&str], name: &str) -> Result<Option<String>> {
        let path = self.category_dir(category).join(checked_key(name)?);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at("reading", path),
        }
    }

    /// Replaces a small text record atomically (write to a temporary file, then rename).
    pub fn write_record(&self, category: &[&str], name: &str, value: &str) -> Result<()> {
        let dir = self.category_dir(category);
        let path = dir.join(checked_key(name)?);
        fs::create_dir_all(&dir).at("creating directory", &dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL_PREFIX}{name}-"))
            .tempfile_in(&dir)
            .at("creating temporary file in", &dir)?;
        writeln!(tmp, "{value}").at("writing", tmp.path().to_owned())?;
        // Temporary files are private (0600); a shared cache should be readable by all.
        set_readable(tmp.as_file(), tmp.path())?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .at("replacing", &path)?;
        Ok(())
    }
}

/// Makes a file created by `tempfile` (mode 0600) readable by everyone (0644).
pub(crate) fn set_readable(file: &File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .at("setting permissions of", path)
}

/// Writes the [`EntryRecord`] of the complete entry being made at `dir`.
fn write_entry_record(dir: &Path) -> Result<()> {
    let record = EntryRecord::now(dir)?;
    let path = dir.join(inventory::RECORD);
    let json = serde_json::to_string_pretty(&record).map_err(|e| Error::Parse {
        what: format!("record {}", path.display()),
        detail: e.to_string(),
    })?;
    fs::write(&path, json).at("writing", &path)
}

/// Moves a damaged entry out of the way (it is removed with the stale partials)
/// so it can be filled again; says so on stderr, since a refetch costs time.
fn set_aside_damaged(path: &Path, dir: &Path, key: &str, problem: &str) -> Result<()> {
    eprintln!(
        "bigbar: cache entry {} is damaged ({problem}); fetching it again",
        path.display()
    );
    let aside = dir.join(format!(
        "{PARTIAL_PREFIX}{key}-damaged-{}",
        std::process::id()
    ));
    fs::rename(path, &aside).at("moving a damaged cache entry aside", path)
}

/// Removes directories left by a fill that was interrupted (killed, power loss);
/// how many there were, not counting entries set aside (damaged or evicted).
fn remove_stale_partials(dir: &Path, key: &str) -> Result<usize> {
    let prefix = format!("{PARTIAL_PREFIX}{key}-");
    let mut interrupted = 0;
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            let path = entry.path();
            if path.is_dir() {
                fs::remove_dir_all(&path).at("removing stale partial entry", &path)?;
                // Not fills: entries set aside as damaged, or evicted by gc.
                let set_aside = name.contains("-damaged-") || name.contains("-evicted-");
                interrupted += usize::from(!set_aside);
            }
        }
    }
    Ok(interrupted)
}

/// Accepts a key usable as a single file name that cannot clash with partial entries.
fn checked_key(key: &str) -> Result<&str> {
    let ok_chars = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c));
    if key.is_empty() || key.starts_with('.') || !ok_chars {
        return Err(Error::InvalidInput {
            what: "cache key",
            value: key.to_owned(),
            reason: "must be non-empty, not start with '.', and use only ASCII letters, digits and . _ + ~ -".into(),
        });
    }
    Ok(key)
}

/// The hash part of a cache key: SHA-256 over parts, each preceded by its
/// length, so that moving bytes from one part to the next changes the key.
#[derive(Default)]
pub struct KeyHasher(sha2::Sha256);

impl KeyHasher {
    /// Adds one part.
    pub fn part(&mut self, bytes: &[u8]) {
        use sha2::Digest;
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    /// `<prefix>-<16 hex digits of the digest>`.
    pub fn key(self, prefix: &str) -> String {
        use sha2::Digest;
        let hex: String = self.0.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{prefix}-{hex}")
    }
}

/// Turns a Debian version (which may contain ':' for an epoch) into a cache key.
pub fn key_from_version(version: &str) -> String {
    version.replace(':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn entry_is_created_once_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let mut calls = 0;
        let path = cache
            .get_or_create(&["a", "b"], "v1", |dir| {
                calls += 1;
                fs::write(dir.join("f"), "x").map_err(|e| Error::Initramfs(e.to_string()))
            })
            .unwrap();
        assert_eq!(path, tmp.path().join("a/b/v1"));
        assert_eq!(fs::read_to_string(path.join("f")).unwrap(), "x");
        let again = cache
            .get_or_create(&["a", "b"], "v1", |_| panic!("must not refill"))
            .unwrap();
        assert_eq!(again, path);
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_damaged_entry_is_filled_again() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let fill = |dir: &Path| {
            fs::write(dir.join("vmlinuz"), vec![7u8; 4096])
                .map_err(|e| Error::Initramfs(e.to_string()))
        };
        let path = cache.get_or_create(&["k"], "v", fill).unwrap();
        // Truncated, as a full disk or an interrupted copy leaves it.
        fs::write(path.join("vmlinuz"), b"short").unwrap();
        assert_eq!(cache.existing(&["k"], "v").unwrap(), None);
        let again = cache.get_or_create(&["k"], "v", fill).unwrap();
        assert_eq!(fs::read(again.join("vmlinuz")).unwrap().len(), 4096);
        assert!(cache.existing(&["k"], "v").unwrap().is_some());
        let names: Vec<String> = fs::read_dir(tmp.path().join("k"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "damaged copy left behind: {names:?}");
    }

    #[test]
    fn failed_fill_leaves_no_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let err = cache
            .get_or_create(&["k"], "v", |dir| {
                fs::write(dir.join("half"), "x").unwrap();
                Err(Error::Initramfs("boom".into()))
            })
            .unwrap_err();
        assert!(matches!(err, Error::Initramfs(_)));
        assert_eq!(cache.existing(&["k"], "v").unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(tmp.path().join("k"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut leftovers = leftovers;
        leftovers.sort();
        assert_eq!(leftovers, ["v.lock", "v.use"]);
    }

    #[test]
    fn stale_partial_from_killed_fill_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let stale = tmp.path().join("k/.partial-v-abc");
        fs::create_dir_all(&stale).unwrap();
        cache.get_or_create(&["k"], "v", |_| Ok(())).unwrap();
        assert!(!stale.exists());
        assert!(tmp.path().join("k/v").is_dir());
    }

    #[test]
    fn concurrent_creators_fill_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let fills = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (root, fills, barrier) = (root.clone(), fills.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Cache::new(root)
                        .get_or_create(&["c"], "k", |dir| {
                            fills.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            fs::write(dir.join("done"), "1").unwrap();
                            Ok(())
                        })
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().join("done").is_file());
        }
        assert_eq!(fills.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn records_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        assert_eq!(cache.read_record(&["q"], "current").unwrap(), None);
        cache.write_record(&["q"], "current", "1_11.1").unwrap();
        cache.write_record(&["q"], "current", "1_11.2").unwrap();
        assert_eq!(
            cache.read_record(&["q"], "current").unwrap().as_deref(),
            Some("1_11.2")
        );
    }

    #[test]
    fn bad_keys_are_rejected() {
        for key in ["", ".hidden", "a/b", "1:2", "a b"] {
            assert!(checked_key(key).is_err(), "{key:?} accepted");
        }
        assert_eq!(key_from_version("1:11.1.3+ds-1"), "1_11.1.3+ds-1");
        assert!(checked_key(&key_from_version("1:11.1.3+ds-1")).is_ok());
    }

    #[rstest::rstest]
    #[case::bigbar_cache_wins(Some("/b"), Some("/x"), Some("/h"), "/b")]
    #[case::xdg(None, Some("/x"), Some("/h"), "/x/bigbar")]
    #[case::relative_xdg_ignored(None, Some("rel"), Some("/h"), "/h/.cache/bigbar")]
    #[case::home(None, None, Some("/h"), "/h/.cache/bigbar")]
    fn the_store_is_per_user(
        #[case] bigbar: Option<&str>,
        #[case] xdg: Option<&str>,
        #[case] home: Option<&str>,
        #[case] root: &str,
    ) {
        let os = |v: Option<&str>| v.map(std::ffi::OsString::from);
        assert_eq!(
            resolve_root(os(bigbar), os(xdg), os(home)).unwrap(),
            PathBuf::from(root)
        );
    }

    #[test]
    fn no_home_asks_for_a_store() {
        let e = resolve_root(None, Some("rel".into()), None).unwrap_err();
        assert!(e.to_string().contains("--cache"), "{e}");
    }
}
