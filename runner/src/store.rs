//! `bigbar cache`: what the artefact store holds, and making room in it; and
//! the warning a run prints when the store has grown past the user's limit.

use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use vm_images::cache::{human_size, parse_size, Entry, Eviction};
use vm_images::Cache;

/// The variable (and `--cache-warn-size`) that sets the size past which a run
/// warns that the store is large.
pub const WARN_ENV: &str = "BIGBAR_CACHE_WARN_SIZE";

/// Arguments of `bigbar cache`.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: CacheAction,
    /// The store [default: $XDG_CACHE_HOME/bigbar, else ~/.cache/bigbar].
    #[arg(long, env = vm_images::cache::CACHE_ENV, global = true)]
    pub cache: Option<PathBuf>,
}

/// The actions of `bigbar cache`.
#[derive(Subcommand, Debug, Clone)]
pub enum CacheAction {
    /// Every entry: kind, size, last use, what made it; least recently used first.
    List,
    /// The store's location and total size, per kind.
    Du,
    /// Evict least recently used entries until the store holds at most SIZE
    /// (never an entry a running bigbar uses).
    Gc {
        /// The size to shrink to: bytes, or a number with K, M, G or T.
        #[arg(long, value_name = "SIZE", value_parser = size_arg)]
        max_size: u64,
    },
    /// Evict every entry no running bigbar uses, what interrupted builds left,
    /// and the package lists no apt run holds.
    Clean,
}

/// clap's parser for sizes (`20G`, `500M`).
pub fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

/// Runs `bigbar cache ...`.
pub fn run(args: &CacheArgs) -> Result<u8> {
    let cache = Cache::new(crate::places::cache(args.cache.as_deref())?);
    match &args.action {
        CacheAction::List => print!("{}", list_table(&cache.entries()?, now())),
        CacheAction::Du => {
            let entries = cache.entries()?;
            print!("{}", du_table(cache.root(), &entries));
            println!(
                "{:>9}  besides: apt's package lists, locks, records",
                human_size(cache.other_bytes(&entries)?)
            );
        }
        CacheAction::Gc { max_size } => print!("{}", eviction_text(&cache.gc(*max_size)?)),
        CacheAction::Clean => print!("{}", eviction_text(&cache.clean()?)),
    }
    Ok(crate::cli::EXIT_OK)
}

/// Warns on stderr when the store at `root` holds more than `limit` bytes.
pub fn warn_if_large(root: &Path, limit: u64) {
    let Ok(total) = Cache::new(root).total_bytes() else {
        return;
    };
    if total > limit {
        eprintln!(
            "bigbar: warning: the store {} holds {}, more than {} (${WARN_ENV} or \
             --cache-warn-size); `bigbar cache list` shows what, `bigbar cache gc \
             --max-size SIZE` evicts the least recently used",
            root.display(),
            human_size(total),
            human_size(limit)
        );
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `list`'s table, its columns as wide as their widest cell.
fn list_table(entries: &[Entry], now: u64) -> String {
    let width = |cell: fn(&Entry) -> usize, header: &str| {
        entries.iter().map(cell).fold(header.len(), usize::max)
    };
    let kind_w = width(|e| e.kind.len(), "kind");
    let key_w = width(|e| e.key.len(), "entry");
    let mut out = format!(
        "{:<kind_w$}  {:<key_w$}  {:>9}  {:>9}  made by\n",
        "kind", "entry", "size", "last used"
    );
    for e in entries {
        out += &format!(
            "{:<kind_w$}  {:<key_w$}  {:>9}  {:>9}  {}\n",
            e.kind,
            e.key,
            human_size(e.bytes),
            age(now.saturating_sub(e.last_used)),
            e.made_by.as_deref().unwrap_or("(not recorded)")
        );
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    out += &format!("{} entries, {}\n", entries.len(), human_size(total));
    out
}

/// `du`'s table: the root, then the total of each kind.
fn du_table(root: &Path, entries: &[Entry]) -> String {
    let mut kinds: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
    for e in entries {
        let k = kinds.entry(e.kind.as_str()).or_default();
        k.0 += 1;
        k.1 += e.bytes;
    }
    let mut out = format!("store {}\n", root.display());
    for (kind, (count, bytes)) in &kinds {
        out += &format!("{:>9}  {kind} ({count})\n", human_size(*bytes));
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    out += &format!("{:>9}  total\n", human_size(total));
    out
}

/// What `gc` or `clean` did.
fn eviction_text(pass: &Eviction) -> String {
    let mut out = String::new();
    for e in &pass.removed {
        out += &format!("evicted {}/{} ({})\n", e.kind, e.key, human_size(e.bytes));
    }
    for e in &pass.in_use {
        out += &format!("kept {}/{}: in use\n", e.kind, e.key);
    }
    let freed: u64 = pass.removed.iter().map(|e| e.bytes).sum();
    out += &format!(
        "{} evicted, {} freed; the store holds {}\n",
        pass.removed.len(),
        human_size(freed),
        human_size(pass.bytes_after)
    );
    out
}

/// An age for people: `40 s`, `12 min`, `5 h`, `3 d`.
fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn entry(kind: &str, key: &str, bytes: u64, last_used: u64) -> Entry {
        Entry {
            path: PathBuf::from("/s").join(kind).join(key),
            kind: kind.into(),
            key: key.into(),
            bytes,
            last_used,
            made_by: Some("bigbar --kernel fixed (in /src)".into()),
        }
    }

    #[test]
    fn list_shows_each_entry_and_the_total() {
        let t = list_table(
            &[
                entry("kernel/built", "fixed-7.2-ab", 30 << 20, 10_000 - 7200),
                entry("qemu/debian-sid", "1_11.1", 300 << 20, 10_000 - 30),
            ],
            10_000,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].contains("kernel/built") && lines[1].contains("30 MiB"));
        assert!(lines[1].contains("2 h") && lines[1].contains("--kernel fixed"));
        assert!(lines[2].contains("30 s"), "{t}");
        assert_eq!(lines[3], "2 entries, 330 MiB");
    }

    #[test]
    fn du_totals_per_kind() {
        let t = du_table(
            Path::new("/s"),
            &[
                entry("kernel/built", "a", 1 << 20, 0),
                entry("kernel/built", "b", 1 << 20, 0),
                entry("qemu", "c", 4 << 20, 0),
            ],
        );
        assert!(t.contains("2.0 MiB  kernel/built (2)"), "{t}");
        assert!(t.contains("6.0 MiB  total"), "{t}");
    }

    #[rstest]
    #[case(5, "5 s")]
    #[case(600, "10 min")]
    #[case(7200, "2 h")]
    #[case(3 * 86_400, "3 d")]
    fn ages(#[case] s: u64, #[case] text: &str) {
        assert_eq!(age(s), text);
    }

    #[test]
    fn a_bad_size_names_itself() {
        let e = size_arg("12X").unwrap_err();
        assert!(e.contains("12X") && e.contains("K, M, G or T"), "{e}");
    }
}
