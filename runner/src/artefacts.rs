//! The two programs a run needs from this workspace: the host-side `device-emu`
//! server and the static `guest-tests` binary for the initramfs.
//!
//! Both are built by the runner's build script (`runner/build.rs`, which says
//! why) and carried inside the runner's own binary; a run writes them into the
//! cache (`programs/<name>-<hash>/<name>`, once per content) and starts them
//! from there. So an installed `bigbar` needs neither cargo nor the workspace.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use vm_images::Cache;

/// One program carried inside the runner.
struct Embedded {
    /// Its file name.
    name: &'static str,
    /// Its contents.
    bytes: &'static [u8],
    /// A hash of the contents computed by the build script, naming the entry.
    key: &'static str,
}

const DEVICE_EMU: Embedded = Embedded {
    name: "device-emu",
    bytes: include_bytes!(env!("BIGBAR_EMBEDDED_DEVICE_EMU")),
    key: env!("BIGBAR_EMBEDDED_DEVICE_EMU_KEY"),
};

const GUEST_TESTS: Embedded = Embedded {
    name: "guest-tests",
    bytes: include_bytes!(env!("BIGBAR_EMBEDDED_GUEST_TESTS")),
    key: env!("BIGBAR_EMBEDDED_GUEST_TESTS_KEY"),
};

/// Paths of the programs, ready to run.
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// The vfio-user server for the host.
    pub device_emu: PathBuf,
    /// The static test binary for the guest.
    pub guest_tests: PathBuf,
}

/// Writes both programs into `cache` (unless there already) and returns their paths.
///
/// Call it before the run starts threads that spawn children: a child forked
/// while a program is being written would inherit the open file and make its
/// exec fail with ETXTBSY. Later calls find the entries and write nothing.
pub fn unpack(cache: &Cache) -> Result<Artefacts> {
    Ok(Artefacts {
        device_emu: unpack_one(cache, &DEVICE_EMU)?,
        guest_tests: unpack_one(cache, &GUEST_TESTS)?,
    })
}

/// Writes only the static guest test binary into `cache`, and returns its path.
pub fn guest(cache: &Cache) -> Result<PathBuf> {
    unpack_one(cache, &GUEST_TESTS)
}

/// The cache entry of one program, filled on first use.
fn unpack_one(cache: &Cache, program: &Embedded) -> Result<PathBuf> {
    let key = format!("{}-{}", program.name, program.key);
    let entry = cache
        .get_or_create(&["programs"], &key, |dir| {
            let path = dir.join(program.name);
            write_executable(&path, program.bytes).map_err(|source| vm_images::Error::Io {
                action: "writing",
                path,
                source,
            })
        })
        .with_context(|| format!("writing {} into the cache", program.name))?;
    Ok(entry.join(program.name))
}

/// Writes `bytes` to a new file at `path` with mode 0755.
fn write_executable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_unpacked_once_and_runnable() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let a = unpack(&cache).unwrap();
        let b = unpack(&cache).unwrap();
        assert_eq!(a.guest_tests, b.guest_tests);
        assert_eq!(std::fs::read(&a.device_emu).unwrap(), DEVICE_EMU.bytes);
        let out = std::process::Command::new(&a.guest_tests)
            .arg("--list")
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("fault_order.pud_aligned"));
        let out = std::process::Command::new(&a.device_emu)
            .arg("--version")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("device-emu "));
    }
}
