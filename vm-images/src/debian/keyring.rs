//! Which keys apt trusts for a suite.
//!
//! The trust root is the host's `debian-archive-keyring`. When a suite is signed by a
//! key the host does not have yet (sid moves to new keys before old releases learn
//! them), the newest `debian-archive-keyring` package is fetched through a suite the
//! host's keyring *does* verify, so every step stays signature-checked. Signature
//! checking is never turned off.

use std::fs;
use std::path::{Path, PathBuf};

use super::{deb, Archive, Suite};
use crate::cache::key_from_version;
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;

/// The host keyring installed by Debian's `debian-archive-keyring` package.
pub const HOST_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Suites tried, in order, to fetch a newer keyring: stable releases whose keys an
/// older host keyring already has.
pub const BOOTSTRAP_SUITES: [&str; 2] = ["trixie", "bookworm-backports"];

/// Names of the keyring inside the package, newest layout first.
const PACKAGE_KEYRINGS: [&str; 2] = [
    "usr/share/keyrings/debian-archive-keyring.pgp",
    "usr/share/keyrings/debian-archive-keyring.gpg",
];

/// The host keyring path.
pub fn host_keyring() -> PathBuf {
    PathBuf::from(HOST_KEYRING)
}

/// Name of the record that remembers a fetched keyring for a suite.
fn record_name(suite: &Suite) -> String {
    format!("{suite}.keyring")
}

/// The keyring to use for `suite`: one fetched earlier for it, else the host's.
pub fn for_suite(fetcher: &Fetcher<'_>, suite: &Suite) -> Result<PathBuf> {
    if let Some(path) = fetcher.cache().read_record(&["apt"], &record_name(suite))? {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
    }
    let host = host_keyring();
    if !host.is_file() {
        return Err(Error::NoKeyring { path: host });
    }
    Ok(host)
}

/// Remembers that `suite` is verified with `keyring`.
pub fn remember(fetcher: &Fetcher<'_>, suite: &Suite, keyring: &Path) -> Result<()> {
    fetcher
        .cache()
        .write_record(&["apt"], &record_name(suite), &keyring.to_string_lossy())
}

/// Fetches the newest `debian-archive-keyring` through the first of
/// [`BOOTSTRAP_SUITES`] the host keyring verifies; returns its keyring file.
pub fn bootstrap(fetcher: &Fetcher<'_>) -> Result<PathBuf> {
    let mut last_error = None;
    for name in BOOTSTRAP_SUITES {
        let suite = Suite::new(name)?;
        match fetch_through(fetcher, &suite) {
            Ok(path) => return Ok(path),
            Err(e) => {
                fetcher.report(&format!("cannot fetch the keyring through {suite}: {e}"));
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or(Error::NoKeyring {
        path: host_keyring(),
    }))
}

/// Fetches `debian-archive-keyring` from `suite`, verified with the host keyring.
fn fetch_through(fetcher: &Fetcher<'_>, suite: &Suite) -> Result<PathBuf> {
    let host = host_keyring();
    if !host.is_file() {
        return Err(Error::NoKeyring { path: host });
    }
    let archive = Archive::open_with_keyring(fetcher, suite, Some(host))?;
    archive.update()?;
    let package = "debian-archive-keyring";
    let version = archive.candidate(package)?;
    let entry =
        fetcher
            .cache()
            .get_or_create(&["keyrings"], &key_from_version(&version), |dir| {
                let debs = archive
                    .download(&[(package.to_owned(), version.clone())], &dir.join("debs"))?;
                let root = dir.join("root");
                deb::extract_all(&debs, &root)?;
                let found = find_keyring(&root).ok_or_else(|| Error::MissingFromPackage {
                    what: "archive keyring",
                    package: format!("{package} {version}"),
                    looked_for: PACKAGE_KEYRINGS.join(", "),
                })?;
                let dest = dir.join("debian-archive-keyring.gpg");
                fs::copy(&found, &dest).at("copying keyring to", &dest)?;
                for sub in [root, dir.join("debs")] {
                    fs::remove_dir_all(&sub).at("removing", sub)?;
                }
                Ok(())
            })?;
    Ok(entry.join("debian-archive-keyring.gpg"))
}

/// The package's keyring inside an extracted tree: a regular file, never a symlink
/// (an absolute symlink would lead back to the host's keyring).
fn find_keyring(root: &Path) -> Option<PathBuf> {
    PACKAGE_KEYRINGS
        .iter()
        .map(|rel| root.join(rel))
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_regular_keyring_and_ignores_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("usr/share/keyrings");
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(HOST_KEYRING, dir.join("debian-archive-keyring.pgp")).unwrap();
        assert_eq!(find_keyring(tmp.path()), None);
        fs::write(dir.join("debian-archive-keyring.gpg"), b"k").unwrap();
        assert_eq!(
            find_keyring(tmp.path()),
            Some(dir.join("debian-archive-keyring.gpg"))
        );
    }
}
