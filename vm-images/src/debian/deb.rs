//! Unpacking .deb files into a directory (no maintainer scripts, no dpkg database).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{require_tool, run};
use crate::error::{IoContext, Result};

/// Extracts the file system contents of `deb` into `dest` with `dpkg-deb -x`.
pub fn extract(deb: &Path, dest: &Path) -> Result<()> {
    let dpkg_deb = require_tool("dpkg-deb", "dpkg")?;
    fs::create_dir_all(dest).at("creating directory", dest)?;
    run(Command::new(dpkg_deb).arg("-x").arg(deb).arg(dest))?;
    Ok(())
}

/// Extracts every .deb of `debs` into `dest`.
pub fn extract_all(debs: &[PathBuf], dest: &Path) -> Result<()> {
    debs.iter().try_for_each(|deb| extract(deb, dest))
}

/// The .deb files directly inside `dir`, sorted.
pub fn list_debs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let path = entry.at("listing", dir)?.path();
        if path.extension().is_some_and(|e| e == "deb") && path.is_file() {
            debs.push(path);
        }
    }
    debs.sort();
    Ok(debs)
}
