//! Debian's kernel source (`linux-source-<version>`), unpacked once into the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::cache::key_from_version;
use crate::command::{require_tool, run};
use crate::debian::{deb, Archive, Suite};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;

/// The metapackage that depends on the newest `linux-source-<version>`.
pub const SOURCE_METAPACKAGE: &str = "linux-source";

/// The suite whose kernel source is built: the newest release Debian has.
pub fn source_suite() -> Suite {
    Suite::sid()
}

const CATEGORY: [&str; 2] = ["kernel-source", "debian-sid"];
const ENTRY_INFO: &str = "source.json";

/// An unpacked kernel source tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSource {
    /// The Debian package, e.g. `linux-source-7.2`.
    pub package: String,
    /// Its Debian version, e.g. `7.2.13-1`.
    pub version: String,
    /// The top of the tree (holds the kernel's `Makefile`).
    pub tree: PathBuf,
}

impl KernelSource {
    /// `package version`, as messages and the patch series' `based-on` write it.
    pub fn name(&self) -> String {
        format!("{} {}", self.package, self.version)
    }
}

/// The package and version of the source to build: with [`Refresh::IfMissing`] the
/// cached current one (no network), else what sid offers now.
pub fn resolve_version(fetcher: &Fetcher<'_>) -> Result<(String, String)> {
    if let Some(source) = cached_current(fetcher)? {
        return Ok((source.package, source.version));
    }
    let archive = Archive::open(fetcher, &source_suite())?;
    resolve_in(&archive)
}

/// The cached current source, when the refresh policy allows using it. Its
/// record of package and version is all this reads: checking its tree (96 000
/// files) took 0.3 s of every run of an already built kernel, and a build
/// checks it anyway through [`obtain`]. An unreadable record is no current
/// source.
fn cached_current(fetcher: &Fetcher<'_>) -> Result<Option<KernelSource>> {
    match fetcher.warm_entry_made(&CATEGORY, str::to_owned)? {
        Some((_, entry)) => Ok(read_info(&entry).ok()),
        None => Ok(None),
    }
}

/// Follows `linux-source` to the versioned source package.
fn resolve_in(archive: &Archive<'_>) -> Result<(String, String)> {
    let meta_version = archive.candidate(SOURCE_METAPACKAGE)?;
    let package = archive
        .depends(SOURCE_METAPACKAGE, &meta_version)?
        .into_iter()
        .find(|d| d.starts_with("linux-source-"))
        .ok_or_else(|| Error::Parse {
            what: format!("Depends of {SOURCE_METAPACKAGE} {meta_version}"),
            detail: "no linux-source-<version> package".into(),
        })?;
    let version = archive.candidate(&package)?;
    Ok((package, version))
}

/// The entry's record of itself, with the tree's path made absolute.
fn read_info(entry: &Path) -> Result<KernelSource> {
    let path = entry.join(ENTRY_INFO);
    let text = fs::read_to_string(&path).at("reading", &path)?;
    let mut info: KernelSource = serde_json::from_str(&text).map_err(|e| Error::CacheEntry {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    info.tree = entry.join(&info.tree);
    Ok(info)
}

/// The source tree of `package` at `version`, downloaded and unpacked if not cached.
pub fn obtain(fetcher: &Fetcher<'_>, package: &str, version: &str) -> Result<KernelSource> {
    let cache = fetcher.cache();
    let key = key_from_version(&format!("{package}_{version}"));
    let entry = match cache.existing(&CATEGORY, &key)? {
        Some(entry) => entry,
        None => {
            let archive = Archive::open(fetcher, &source_suite())?;
            cache.get_or_create(&CATEGORY, &key, |dir| {
                fill_entry(fetcher, &archive, package, version, dir)
            })?
        }
    };
    fetcher.set_current(&CATEGORY, &key)?;
    load_entry(&entry)
}

/// Downloads the .deb, unpacks the tarball it carries, and drops both.
fn fill_entry(
    fetcher: &Fetcher<'_>,
    archive: &Archive<'_>,
    package: &str,
    version: &str,
    dir: &Path,
) -> Result<()> {
    let tar = require_tool("tar", "tar")?;
    require_tool("xz", "xz-utils")?;
    let debs = archive.download(
        &[(package.to_owned(), version.to_owned())],
        &dir.join("deb"),
    )?;
    let unpacked = dir.join("deb/root");
    deb::extract_all(&debs, &unpacked)?;
    let tarball = find_tarball(&unpacked.join("usr/src"), package)?;
    fetcher.report(&format!("unpacking {}", tarball.display()));
    run(Command::new(tar)
        .arg("-xJf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir))?;
    let top = dir.join(package);
    if !top.join("Makefile").is_file() {
        return Err(Error::MissingFromPackage {
            what: "kernel source tree",
            package: format!("{package} {version}"),
            looked_for: top.join("Makefile").display().to_string(),
        });
    }
    fs::remove_dir_all(dir.join("deb")).at("removing", dir.join("deb"))?;
    let info = KernelSource {
        package: package.to_owned(),
        version: version.to_owned(),
        tree: PathBuf::from(package),
    };
    let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Parse {
        what: "kernel source record".into(),
        detail: e.to_string(),
    })?;
    fs::write(dir.join(ENTRY_INFO), json).at("writing", dir.join(ENTRY_INFO))
}

/// `usr/src/<package>.tar.xz` as Debian ships it.
fn find_tarball(usr_src: &Path, package: &str) -> Result<PathBuf> {
    let path = usr_src.join(format!("{package}.tar.xz"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingFromPackage {
            what: "kernel source tarball",
            package: package.to_owned(),
            looked_for: path.display().to_string(),
        })
    }
}

fn load_entry(entry: &Path) -> Result<KernelSource> {
    let info = read_info(entry)?;
    if !info.tree.join("Makefile").is_file() {
        return Err(Error::CacheEntry {
            path: entry.to_owned(),
            detail: format!("{} has no Makefile", info.tree.display()),
        });
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cache;

    /// A cache whose current kernel source is `linux-source-7.2 7.2.13-1`.
    fn cache_with_source() -> (tempfile::TempDir, Cache, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        let key = key_from_version("linux-source-7.2_7.2.13-1");
        let entry = cache
            .get_or_create(&CATEGORY, &key, |d| {
                fs::create_dir_all(d.join("linux")).unwrap();
                fs::write(d.join("linux/Makefile"), "VERSION = 7\n").unwrap();
                let info = KernelSource {
                    package: "linux-source-7.2".into(),
                    version: "7.2.13-1".into(),
                    tree: "linux".into(),
                };
                fs::write(d.join(ENTRY_INFO), serde_json::to_string(&info).unwrap()).unwrap();
                Ok(())
            })
            .unwrap();
        Fetcher::new(&cache).set_current(&CATEGORY, &key).unwrap();
        (dir, cache, entry)
    }

    #[test]
    fn the_current_version_is_read_from_the_record_alone() {
        let (_dir, cache, entry) = cache_with_source();
        // A damaged tree does not change which version is current (no network
        // is asked); obtaining the tree for a build finds the damage.
        fs::write(entry.join("linux/Makefile"), "").unwrap();
        let fetcher = Fetcher::new(&cache);
        assert_eq!(
            resolve_version(&fetcher).unwrap(),
            ("linux-source-7.2".to_string(), "7.2.13-1".to_string())
        );
        assert_eq!(
            cache
                .existing(&CATEGORY, &key_from_version("linux-source-7.2_7.2.13-1"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn an_unreadable_record_is_no_current_source() {
        let (_dir, cache, entry) = cache_with_source();
        fs::write(entry.join(ENTRY_INFO), "{").unwrap();
        assert_eq!(cached_current(&Fetcher::new(&cache)).unwrap(), None);
    }
}
