//! What the store holds, and making room: `bigbar cache list`, `du`, `gc`, `clean`.
//!
//! An entry is a directory holding a manifest ([`crate::manifest::FILE`]); its
//! kind is the category path above it (`kernel/built`, `qemu/debian-sid`). Sizes
//! are disk usage (allocated blocks, each hard-linked inode once), which is what
//! a full disk is made of; an entry records its size when it is made
//! ([`EntryRecord`]) so a run can total the store without walking 100 000 files.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{pin, Cache, PARTIAL_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::manifest;

/// The record's file name inside an entry.
pub const RECORD: &str = ".bigbar-entry.json";

/// How deep categories nest below the root (`kernel/built/<key>` is depth 3).
const MAX_DEPTH: usize = 4;

/// What an entry says of itself: written when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    /// Disk usage in bytes when it was made.
    pub bytes: u64,
    /// Seconds since the epoch when it was made.
    pub made_at: u64,
    /// The command line and directory of the process that made it.
    pub made_by: String,
}

impl EntryRecord {
    /// The record of an entry being made now, at `dir`, by this process.
    pub(crate) fn now(dir: &Path) -> Result<Self> {
        let args: Vec<String> = std::env::args().collect();
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "?".into());
        Ok(Self {
            bytes: disk_usage(dir)?,
            made_at: unix_seconds(SystemTime::now()),
            made_by: format!("{} (in {cwd})", args.join(" ")),
        })
    }

    /// Reads the record of `entry`, if it has a readable one.
    fn read(entry: &Path) -> Option<Self> {
        let text = fs::read_to_string(entry.join(RECORD)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// One complete entry of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry directory.
    pub path: PathBuf,
    /// Its category path, e.g. `kernel/built`.
    pub kind: String,
    /// Its key (the directory name).
    pub key: String,
    /// Disk usage in bytes (from its record, else measured).
    pub bytes: u64,
    /// Seconds since the epoch of its last use.
    pub last_used: u64,
    /// What made it, when recorded.
    pub made_by: Option<String>,
}

/// What an eviction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// Entries removed, oldest use first.
    pub removed: Vec<Entry>,
    /// Entries kept because a process uses them, or one is making them.
    pub in_use: Vec<Entry>,
    /// Bytes the store's entries take after the pass.
    pub bytes_after: u64,
}

impl Cache {
    /// Every complete entry, least recently used first.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let mut found = Vec::new();
        if self.root().is_dir() {
            collect(self.root(), self.root(), 1, &mut found)?;
        }
        found.sort_by(|a: &Entry, b| (a.last_used, &a.path).cmp(&(b.last_used, &b.path)));
        Ok(found)
    }

    /// The bytes all entries take.
    pub fn total_bytes(&self) -> Result<u64> {
        Ok(self.entries()?.iter().map(|e| e.bytes).sum())
    }

    /// Evicts least recently used entries until the rest take at most
    /// `max_bytes`; never one a process uses or is making.
    pub fn gc(&self, max_bytes: u64) -> Result<Eviction> {
        let entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut pass = Eviction::default();
        for entry in entries {
            if total <= max_bytes {
                break;
            }
            if evict(&entry)? {
                total -= entry.bytes;
                pass.removed.push(entry);
            } else {
                pass.in_use.push(entry);
            }
        }
        pass.bytes_after = total;
        Ok(pass)
    }

    /// Evicts every entry no process uses, what interrupted fills left, and
    /// the private apt trees (package lists, fetched again when needed) that
    /// no apt run holds.
    pub fn clean(&self) -> Result<Eviction> {
        let pass = self.gc(0)?;
        if self.root().is_dir() {
            remove_partials(self.root(), 1)?;
            remove_idle_apt_trees(&self.category_dir(&["apt"]))?;
        }
        Ok(pass)
    }

    /// Bytes below the root that are none of `entries` (what
    /// [`Cache::entries`] returned): apt's package lists, locks, records,
    /// partial fills. Walks the whole store.
    pub fn other_bytes(&self, entries: &[Entry]) -> Result<u64> {
        if !self.root().is_dir() {
            return Ok(0);
        }
        let listed: u64 = entries.iter().map(|e| e.bytes).sum();
        Ok(disk_usage(self.root())?.saturating_sub(listed))
    }
}

/// Walks `dir` (at `depth` below the root) for entries.
fn collect(root: &Path, dir: &Path, depth: usize, found: &mut Vec<Entry>) -> Result<()> {
    for item in fs::read_dir(dir).at("listing", dir)? {
        let item = item.at("listing", dir)?;
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        if name.starts_with('.') || !item.file_type().at("reading", &path)?.is_dir() {
            continue;
        }
        if path.join(manifest::FILE).is_file() {
            found.push(describe(root, &path, name)?);
        } else if depth < MAX_DEPTH {
            collect(root, &path, depth + 1, found)?;
        }
    }
    Ok(())
}

/// The [`Entry`] at `path`.
fn describe(root: &Path, path: &Path, key: String) -> Result<Entry> {
    let kind = path
        .parent()
        .and_then(|p| p.strip_prefix(root).ok())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let record = EntryRecord::read(path);
    let bytes = match &record {
        Some(r) => r.bytes,
        None => disk_usage(path)?,
    };
    Ok(Entry {
        path: path.to_owned(),
        kind,
        key,
        bytes,
        last_used: pin::last_used(path).map_or(0, unix_seconds),
        made_by: record.map(|r| r.made_by),
    })
}

/// Removes `entry` if nobody uses or makes it; `false` if somebody does.
fn evict(entry: &Entry) -> Result<bool> {
    let Some(_unused) = pin::try_unused(&entry.path)? else {
        return Ok(false);
    };
    let lock_path = entry.path.with_file_name(format!("{}.lock", entry.key));
    let Some(_making) = super::CacheLock::try_acquire(&lock_path)? else {
        return Ok(false);
    };
    // Renamed first, so that no reader finds a half-removed entry complete.
    let aside = entry.path.with_file_name(format!(
        "{PARTIAL_PREFIX}{}-evicted-{}",
        entry.key,
        std::process::id()
    ));
    fs::rename(&entry.path, &aside).at("moving an evicted entry aside", &entry.path)?;
    fs::remove_dir_all(&aside).at("removing evicted entry", &aside)?;
    Ok(true)
}

/// Removes every partial directory below `dir` whose fill is not under way.
fn remove_partials(dir: &Path, depth: usize) -> Result<()> {
    for item in fs::read_dir(dir).at("listing", dir)? {
        let item = item.at("listing", dir)?;
        let path = item.path();
        if !item.file_type().at("reading", &path)?.is_dir() {
            continue;
        }
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(PARTIAL_PREFIX) {
            if partial_is_idle(dir, rest)? {
                fs::remove_dir_all(&path).at("removing partial entry", &path)?;
            }
        } else if !path.join(manifest::FILE).is_file() && depth < MAX_DEPTH {
            remove_partials(&path, depth + 1)?;
        }
    }
    Ok(())
}

/// Removes each `apt/<suite>/` tree whose lock (`apt/<suite>.lock`) no apt
/// run holds.
fn remove_idle_apt_trees(apt: &Path) -> Result<()> {
    if !apt.is_dir() {
        return Ok(());
    }
    for item in fs::read_dir(apt).at("listing", apt)? {
        let item = item.at("listing", apt)?;
        let path = item.path();
        if !item.file_type().at("reading", &path)?.is_dir() {
            continue;
        }
        let lock = apt.join(format!("{}.lock", item.file_name().to_string_lossy()));
        if let Some(_held) = super::CacheLock::try_acquire(&lock)? {
            fs::remove_dir_all(&path).at("removing apt tree", &path)?;
        }
    }
    Ok(())
}

/// Whether no process is filling the partial directory `.partial-<rest>`: no
/// entry lock whose key starts it is held.
fn partial_is_idle(dir: &Path, rest: &str) -> Result<bool> {
    for item in fs::read_dir(dir).at("listing", dir)? {
        let name = item.at("listing", dir)?.file_name();
        let name = name.to_string_lossy();
        let Some(key) = name.strip_suffix(".lock") else {
            continue;
        };
        if rest.starts_with(&format!("{key}-"))
            && super::CacheLock::try_acquire(&dir.join(&*name))?.is_none()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Disk usage of everything below `dir`: allocated blocks, each inode once.
pub fn disk_usage(dir: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut bytes = 0;
    for item in walkdir::WalkDir::new(dir) {
        let item = item.map_err(std::io::Error::from).at("walking", dir)?;
        let meta = item
            .metadata()
            .map_err(std::io::Error::from)
            .at("reading metadata of", item.path())?;
        if seen.insert((meta.dev(), meta.ino())) {
            bytes += meta.blocks() * 512;
        }
    }
    Ok(bytes)
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Parses a size as `gc --max-size` and the warning threshold take it: bytes,
/// or a number with K, M, G or T (powers of 1024, an optional `iB`/`B`).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = |reason: &str| Error::InvalidInput {
        what: "size",
        value: text.to_owned(),
        reason: reason.into(),
    };
    let t = text.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: f64 = number
        .parse()
        .map_err(|_| bad("must start with a number, e.g. 20G or 500M"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(bad("the unit must be K, M, G or T (powers of 1024)")),
    };
    Ok((number * (1u64 << shift) as f64) as u64)
}

/// A size for people: `1.5 GiB`, `312 MiB`, `4 KiB`, `12 B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::time::Duration;

    /// An entry of `bytes` bytes in `kind`, last used `age` seconds ago.
    fn entry(cache: &Cache, kind: &[&str], key: &str, bytes: usize, age: u64) -> PathBuf {
        let path = cache
            .get_or_create(kind, key, |dir| {
                fs::write(dir.join("data"), vec![1u8; bytes]).unwrap();
                Ok(())
            })
            .unwrap();
        let used = SystemTime::now() - Duration::from_secs(age);
        let f = fs::OpenOptions::new()
            .write(true)
            .open(pin::use_file(&path))
            .unwrap();
        f.set_modified(used).unwrap();
        path
    }

    fn store(tmp: &Path) -> Cache {
        Cache::new(tmp.join("store"))
    }

    #[test]
    fn gc_evicts_least_recently_used_first_and_keeps_an_entry_in_use() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = store(tmp.path());
        let old = entry(&cache, &["kernel", "built"], "old", 64 << 10, 3000);
        let busy = entry(&cache, &["qemu"], "busy", 64 << 10, 2000);
        let mid = entry(&cache, &["kernel", "built"], "mid", 64 << 10, 1000);
        let new = entry(&cache, &["busybox"], "new", 64 << 10, 10);
        // Making an entry pins it in this process: release all but `busy`.
        for p in [&old, &mid, &new] {
            pin::unpin(p);
        }
        let listed: Vec<String> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(listed, ["old", "busy", "mid", "new"]);
        let total = cache.total_bytes().unwrap();
        let each = total / 4;
        let pass = cache.gc(total - each).unwrap();
        let removed: Vec<&str> = pass.removed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(removed, ["old"]);
        assert!(!old.exists() && busy.exists() && mid.exists() && new.exists());
        let pass = cache.gc(each).unwrap();
        let removed: Vec<&str> = pass.removed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(removed, ["mid", "new"]);
        assert_eq!(pass.in_use.len(), 1);
        assert_eq!(pass.in_use[0].key, "busy");
        assert!(busy.exists());
        assert_eq!(pass.bytes_after, each);
        let kinds: Vec<String> = cache
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["qemu"]);
    }

    #[test]
    fn entries_record_who_made_them_and_their_size() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = store(tmp.path());
        entry(&cache, &["k"], "v", 100 << 10, 0);
        let e = &cache.entries().unwrap()[0];
        assert_eq!((e.kind.as_str(), e.key.as_str()), ("k", "v"));
        assert!(e.bytes >= 100 << 10, "{}", e.bytes);
        assert!(e.made_by.as_deref().unwrap().contains("(in "), "{e:?}");
    }

    #[test]
    fn clean_removes_idle_partials_and_apt_trees() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = store(tmp.path());
        let stale = tmp.path().join("store/k/.partial-v-abc");
        fs::create_dir_all(&stale).unwrap();
        let (idle, busy) = (
            tmp.path().join("store/apt/sid/lists"),
            tmp.path().join("store/apt/bookworm/lists"),
        );
        fs::create_dir_all(&idle).unwrap();
        fs::create_dir_all(&busy).unwrap();
        fs::write(idle.join("Packages"), vec![0u8; 8192]).unwrap();
        assert!(cache.other_bytes(&cache.entries().unwrap()).unwrap() >= 8192);
        let _apt_runs = cache.lock(&["apt"], "bookworm").unwrap();
        cache.clean().unwrap();
        assert!(!stale.exists());
        assert!(!idle.exists() && busy.exists());
    }

    #[rstest]
    #[case("0", 0)]
    #[case("512", 512)]
    #[case("4K", 4096)]
    #[case("20G", 20 << 30)]
    #[case("1.5GiB", 3 << 29)]
    #[case("300MB", 300 << 20)]
    fn sizes_parse(#[case] text: &str, #[case] bytes: u64) {
        assert_eq!(parse_size(text).unwrap(), bytes);
    }

    #[rstest]
    #[case("")]
    #[case("G")]
    #[case("12X")]
    #[case("-1G")]
    fn bad_sizes_are_refused(#[case] text: &str) {
        let e = parse_size(text).unwrap_err().to_string();
        assert!(e.contains(text) && e.contains("size"), "{e}");
    }

    #[rstest]
    #[case(12, "12 B")]
    #[case(4096, "4.0 KiB")]
    #[case(312 << 20, "312 MiB")]
    #[case(3 << 29, "1.5 GiB")]
    fn sizes_print(#[case] bytes: u64, #[case] text: &str) {
        assert_eq!(human_size(bytes), text);
    }
}
