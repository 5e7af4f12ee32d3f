//! Building the two programs a run needs from this workspace: the host-side
//! `device-emu` server and the static `guest-tests` binary for the initramfs.
//!
//! Both are built by invoking cargo (as an xtask would), because the guest
//! binary needs its own target and RUSTFLAGS (`+crt-static`) that must not leak
//! into the host build scripts and proc macros.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The target triple the guest binary is built for (no musl target is available here;
/// glibc with `+crt-static` gives a static binary).
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Paths of the built programs.
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// The vfio-user server for the host.
    pub device_emu: PathBuf,
    /// The static test binary for the guest.
    pub guest_tests: PathBuf,
}

/// Builds both programs in release mode and returns their paths.
pub fn build(workspace: &Path) -> Result<Artefacts> {
    let device_emu = cargo_build(workspace, "device-emu", "device-emu", &[], &[])?;
    let guest_tests = build_guest(workspace)?;
    Ok(Artefacts {
        device_emu,
        guest_tests,
    })
}

/// Builds only the static guest test binary.
pub fn build_guest(workspace: &Path) -> Result<PathBuf> {
    cargo_build(
        workspace,
        "guest-tests",
        "guest-tests",
        &["--target", GUEST_TARGET],
        &[(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            // Without debug info the binary is 2.4 MB instead of 13 MB: a smaller
            // initramfs for the guest to unpack (0.35 s less under TCG); symbol
            // names stay for backtraces.
            "-C target-feature=+crt-static -C strip=debuginfo",
        )],
    )
}

/// One line of cargo's JSON message stream; only artifact messages matter here.
#[derive(Deserialize)]
struct Message {
    reason: String,
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Target {
    name: String,
}

/// Runs `cargo build --release -p PACKAGE` and returns the path of binary `bin`.
fn cargo_build(
    workspace: &Path,
    package: &str,
    bin: &str,
    extra_args: &[&str],
    envs: &[(&str, &str)],
) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .args(["-p", package, "--bin", bin])
        .args(extra_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // When the runner itself runs under `cargo test`/`cargo run`, cargo exports
    // variables describing *that* build; they must not steer this one.
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} to build {package}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        bail!("building {package} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    find_executable(&stdout, bin)
        .with_context(|| format!("cargo built {package} but reported no executable {bin}"))
}

/// Finds the executable of binary target `bin` in cargo's JSON messages.
fn find_executable(messages: &str, bin: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<Message>(l).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter(|m| m.target.as_ref().is_some_and(|t| t.name == bin))
        .find_map(|m| m.executable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_found_among_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"name":"nix"},"executable":null}
not json
{"reason":"compiler-artifact","target":{"name":"guest-tests"},"executable":"/t/guest-tests"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            find_executable(msgs, "guest-tests"),
            Some(PathBuf::from("/t/guest-tests"))
        );
        assert_eq!(find_executable(msgs, "device-emu"), None);
    }
}
