//! Builds the two programs the runner carries inside its own binary: the host-side
//! `device-emu` server and the static `guest-tests` binary for the initramfs.
//!
//! Why embedded, and why here: an installed `bigbar` (`cargo install --path
//! runner`) must work from any directory, with no cargo and no workspace at run
//! time, and the guest binary needs its own RUSTFLAGS (`+crt-static`), which one
//! cargo invocation cannot give one crate of the runner's build and not the
//! others. So this script runs a second cargo on the workspace, into a target
//! directory of its own (sharing the outer one would deadlock on its lock), and
//! the runner `include_bytes!`es the results (`src/artefacts.rs`), writing them
//! into the cache when a run needs them. Every run, in the workspace or
//! installed, then uses the same programs, built from the same sources as the
//! runner itself.
//! The alternatives were weaker: finding the programs at run time depends on
//! where cargo put them, and building them at run time needs the workspace.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target triple both programs are built for (no musl target is available
/// here; glibc with `+crt-static` gives static binaries).
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .parent()
        .expect("the runner lives in the bigbar workspace");
    // Everything the two programs are built from; cargo scans directories whole.
    for input in [
        "Cargo.toml",
        "Cargo.lock",
        "protocol/Cargo.toml",
        "protocol/src",
        "device-emu/Cargo.toml",
        "device-emu/src",
        "guest-tests/Cargo.toml",
        "guest-tests/src",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(input).display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    // OUT_DIR is <target>/[<triple>/]<profile>/build/runner-<hash>/out: the
    // nested target directory sits in the profile directory, so that `cargo
    // check`, `clippy`, `build` and `test` share one nested build and the
    // outer `cargo clean` removes it.
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let nested = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is deep inside the target directory")
        .join("bigbar-embedded");

    // One cargo invocation for both programs, so that the dependencies they
    // share (protocol, nix, libc, clap, serde, ...) compile once: the guest
    // binary's static flags apply to the device too, which is harmless for a
    // host program that needs no NSS and makes it run on any glibc. Debug info
    // is off (symbol names stay for backtraces): it is most of the build's
    // codegen and of the binaries' size (4 MB instead of 23 MB for the device,
    // 2.4 MB instead of 13 MB for the guest binary the initramfs unpacks, 0.35 s
    // less under TCG), and the runner carries both. Measured on 2 cores: 53 s
    // for this build against 72 s for two builds with debug info.
    let built = cargo_build(
        workspace,
        &nested,
        &[
            "-p",
            "device-emu",
            "--bin",
            "device-emu",
            "-p",
            "guest-tests",
            "--bin",
            "guest-tests",
            "--target",
            TARGET,
        ],
        &[
            ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
            (
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=debuginfo",
            ),
        ],
    )
    .join(TARGET)
    .join("release");
    let device_emu = built.join("device-emu");
    let guest_tests = built.join("guest-tests");

    for (name, path) in [("DEVICE_EMU", &device_emu), ("GUEST_TESTS", &guest_tests)] {
        println!("cargo:rustc-env=BIGBAR_EMBEDDED_{name}={}", path.display());
        println!(
            "cargo:rustc-env=BIGBAR_EMBEDDED_{name}_KEY={:016x}",
            content_hash(path)
        );
    }
}

/// Runs `cargo build --release ARGS` on the workspace into `target_dir` and
/// returns `target_dir`.
fn cargo_build(
    workspace: &Path,
    target_dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(args);
    // The outer build's settings must not steer this one: `cargo clippy` sets a
    // workspace wrapper, and flags or a target meant for the runner would
    // change (and rebuild) the programs.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cargo:?} to build {args:?}: {e}"));
    assert!(status.success(), "building {args:?} failed ({status})");
    target_dir.to_path_buf()
}

/// A hash of the file's contents, naming its cache entry: a program that
/// changes gets a new entry, so runs of two runner builds never share one.
fn content_hash(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    // SipHash with fixed keys: deterministic, and only compared with itself.
    let mut h = DefaultHasher::new();
    h.write(&bytes);
    h.finish()
}
