//! What every fetch needs: the cache, the refresh policy, the mirror, progress reports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::cache::Cache;
use crate::error::Result;

/// The record naming a category's current entry (a key, or what the key is made from).
const CURRENT_RECORD: &str = "current";

/// Environment variable naming the Debian mirror.
pub const MIRROR_ENV: &str = "BIGBAR_DEBIAN_MIRROR";
/// The Debian mirror used when [`MIRROR_ENV`] is unset.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// When to ask the Debian archive for newer versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refresh {
    /// Use what the cache holds as current; go to the network only when it holds nothing.
    /// A warm cache is used without running apt at all.
    #[default]
    IfMissing,
    /// Resolve the newest version in the archive (`apt-get update`), fetching it if it
    /// is not cached yet.
    Always,
}

/// Shared context of all fetches of one run.
pub struct Fetcher<'a> {
    cache: &'a Cache,
    refresh: Refresh,
    mirror: String,
    progress: &'a dyn Fn(&str),
    /// Suites already updated by this fetcher, so a run updates each at most once.
    updated: Mutex<BTreeSet<String>>,
}

/// A progress callback that ignores everything.
pub fn quiet(_: &str) {}

impl<'a> Fetcher<'a> {
    /// A fetcher with [`Refresh::IfMissing`], the mirror from `$BIGBAR_DEBIAN_MIRROR`
    /// (default [`DEFAULT_MIRROR`]) and no progress output.
    pub fn new(cache: &'a Cache) -> Self {
        let mirror = std::env::var(MIRROR_ENV)
            .ok()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| DEFAULT_MIRROR.to_owned());
        Self {
            cache,
            refresh: Refresh::default(),
            mirror,
            progress: &quiet,
            updated: Mutex::new(BTreeSet::new()),
        }
    }

    /// Sets the refresh policy.
    pub fn refresh(mut self, refresh: Refresh) -> Self {
        self.refresh = refresh;
        self
    }

    /// Sets the Debian mirror URL.
    pub fn mirror(mut self, mirror: impl Into<String>) -> Self {
        self.mirror = mirror.into().trim_end_matches('/').to_owned();
        self
    }

    /// Sets a callback that receives one line per stage ("apt-get update sid", ...).
    pub fn progress(mut self, progress: &'a dyn Fn(&str)) -> Self {
        self.progress = progress;
        self
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        self.cache
    }

    /// The refresh policy.
    pub fn refresh_policy(&self) -> Refresh {
        self.refresh
    }

    /// The Debian mirror URL.
    pub fn mirror_url(&self) -> &str {
        &self.mirror
    }

    /// Reports a stage.
    pub fn report(&self, message: &str) {
        (self.progress)(message);
    }

    /// Under [`Refresh::IfMissing`], the current entry of `category`: the record's
    /// value and the entry its key (`key_of(value)`) names, when that entry is
    /// complete and undamaged. Touches no network; `None` means fetch.
    pub fn warm_entry(
        &self,
        category: &[&str],
        key_of: impl Fn(&str) -> String,
    ) -> Result<Option<(String, PathBuf)>> {
        self.current_entry(category, key_of, Cache::existing)
    }

    /// Like [`Fetcher::warm_entry`], but the entry is only known to have been
    /// complete when made ([`Cache::made`]): for reading its records.
    pub fn warm_entry_made(
        &self,
        category: &[&str],
        key_of: impl Fn(&str) -> String,
    ) -> Result<Option<(String, PathBuf)>> {
        self.current_entry(category, key_of, Cache::made)
    }

    /// The current record of `category` and the entry `find` gives for it.
    fn current_entry(
        &self,
        category: &[&str],
        key_of: impl Fn(&str) -> String,
        find: impl Fn(&Cache, &[&str], &str) -> Result<Option<PathBuf>>,
    ) -> Result<Option<(String, PathBuf)>> {
        if self.refresh != Refresh::IfMissing {
            return Ok(None);
        }
        let Some(current) = self.cache.read_record(category, CURRENT_RECORD)? else {
            return Ok(None);
        };
        let entry = find(self.cache, category, &key_of(&current))?;
        Ok(entry.map(|e| (current, e)))
    }

    /// Records `value` as what names the current entry of `category`.
    pub fn set_current(&self, category: &[&str], value: &str) -> Result<()> {
        self.cache.write_record(category, CURRENT_RECORD, value)
    }

    /// Records that `suite` was updated; returns false if it already was in this run.
    pub(crate) fn mark_updated(&self, suite: &str) -> bool {
        let mut updated = self.updated.lock().unwrap_or_else(|e| e.into_inner());
        updated.insert(suite.to_owned())
    }

    /// Whether `suite` was updated in this run.
    pub(crate) fn was_updated(&self, suite: &str) -> bool {
        let updated = self.updated.lock().unwrap_or_else(|e| e.into_inner());
        updated.contains(suite)
    }
}
