//! What a complete cache entry held when it was made, to detect damage later.
//!
//! The downloads themselves are verified by apt against the hashes in Debian's
//! package indices; this guards what was unpacked from them afterwards (a file
//! truncated by a full disk, deleted or rewritten by hand). It records each
//! regular file's size: cheap enough to check on every run over the ~300 MB QEMU
//! prefix, and it catches truncation and removal. Symbolic links are not followed.

use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The manifest's file name inside an entry.
pub const FILE: &str = ".bigbar-manifest";

/// Records every regular file below `entry` with its size.
pub fn write(entry: &Path) -> Result<()> {
    let mut lines = Vec::new();
    for item in walkdir::WalkDir::new(entry).sort_by_file_name() {
        let item = item.map_err(std::io::Error::from).at("walking", entry)?;
        if !item.file_type().is_file() || item.file_name() == FILE {
            continue;
        }
        let size = item
            .metadata()
            .map_err(std::io::Error::from)
            .at("reading metadata of", item.path())?
            .len();
        let rel = item.path().strip_prefix(entry).unwrap_or(item.path());
        lines.push(format!("{size}\t{}", rel.display()));
    }
    let path = entry.join(FILE);
    fs::write(&path, lines.join("\n") + "\n").at("writing", &path)
}

/// What is wrong with `entry`, if anything. An entry without a manifest (made by
/// an older bigbar) is taken as it is.
pub fn check(entry: &Path) -> Result<Option<String>> {
    let path = entry.join(FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).at("reading", &path),
    };
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some((size, rel)) = line.split_once('\t') else {
            return Ok(Some(format!("its manifest has a bad line `{line}`")));
        };
        let want: u64 = match size.parse() {
            Ok(n) => n,
            Err(_) => return Ok(Some(format!("its manifest has a bad size in `{line}`"))),
        };
        match fs::symlink_metadata(entry.join(rel)) {
            Ok(m) if m.is_file() && m.len() == want => {}
            Ok(m) if m.is_file() => {
                return Ok(Some(format!(
                    "{rel} has {} bytes, {want} expected",
                    m.len()
                )))
            }
            Ok(_) => return Ok(Some(format!("{rel} is no longer a regular file"))),
            Err(_) => return Ok(Some(format!("{rel} is missing"))),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intact_truncated_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/bin")).unwrap();
        fs::write(dir.path().join("usr/bin/qemu"), vec![1u8; 1000]).unwrap();
        fs::write(dir.path().join("kernel.json"), "{}").unwrap();
        std::os::unix::fs::symlink("qemu", dir.path().join("usr/bin/link")).unwrap();
        write(dir.path()).unwrap();
        assert_eq!(check(dir.path()).unwrap(), None);

        fs::write(dir.path().join("usr/bin/qemu"), vec![1u8; 10]).unwrap();
        assert_eq!(
            check(dir.path()).unwrap().as_deref(),
            Some("usr/bin/qemu has 10 bytes, 1000 expected")
        );
        fs::remove_file(dir.path().join("usr/bin/qemu")).unwrap();
        assert_eq!(
            check(dir.path()).unwrap().as_deref(),
            Some("usr/bin/qemu is missing")
        );
    }

    #[test]
    fn no_manifest_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(dir.path()).unwrap(), None);
    }
}
