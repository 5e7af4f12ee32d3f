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

/// The cached current source, when the refresh policy allows using it.
fn cached_current(fetcher: &Fetcher<'_>) -> Result<Option<KernelSource>> {
    match fetcher.warm_entry(&CATEGORY, str::to_owned)? {
        Some((_, entry)) => load_entry(&entry).map(Some),
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
    let path = entry.join(ENTRY_INFO);
    let text = fs::read_to_string(&path).at("reading", &path)?;
    let mut info: KernelSource = serde_json::from_str(&text).map_err(|e| Error::CacheEntry {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    info.tree = entry.join(&info.tree);
    if !info.tree.join("Makefile").is_file() {
        return Err(Error::CacheEntry {
            path: entry.to_owned(),
            detail: format!("{} has no Makefile", info.tree.display()),
        });
    }
    Ok(info)
}
