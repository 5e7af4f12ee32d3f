//! A built kernel's store key follows its inputs and nothing else: a one-byte
//! change in one patch of `kernel/patches/fixes` gives `fixed` a new key (so it
//! is rebuilt) and leaves `stock`, `reference` and `minimal` where they are (so
//! they are not). Also one line of a fragment, and the toolchain. Offline: keys
//! are computed from a copy of the project's patches, nothing is built.

use std::fs;
use std::path::Path;

use vm_images::kernel::build::{self, Recipe};
use vm_images::kernel::toolchain::Toolchain;
use vm_images::KernelSpec;

const KERNELS: [KernelSpec; 4] = [
    KernelSpec::Stock,
    KernelSpec::Reference,
    KernelSpec::Fixed,
    KernelSpec::Minimal,
];

fn toolchain(gcc: &str) -> Toolchain {
    Toolchain {
        parts: vec![format!("gcc: {gcc}"), "ld: GNU ld 2.40".into()],
    }
}

/// The keys of the four built kernels with the series under `patches`.
fn keys(patches: &Path, tools: &Toolchain) -> Vec<String> {
    KERNELS
        .iter()
        .map(|spec| {
            Recipe::for_spec_in(spec, patches)
                .unwrap()
                .unwrap()
                .key("linux-source-7.2", "7.2.13-1", tools)
                .unwrap()
        })
        .collect()
}

/// A copy of the project's `kernel/patches`.
fn copy_of_patches() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for series in ["reference", "fixes"] {
        let from = build::patches_dir().join(series);
        let to = tmp.path().join(series);
        fs::create_dir_all(&to).unwrap();
        for e in fs::read_dir(&from).unwrap() {
            let e = e.unwrap();
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    tmp
}

/// Flips one byte of the first patch file of `series` (in its message, so the
/// patch still applies).
fn flip_one_byte(series: &Path) {
    let mut patches: Vec<_> = fs::read_dir(series)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    patches.sort();
    let mut bytes = fs::read(&patches[0]).unwrap();
    let at = bytes.windows(4).position(|w| w == b"the ").unwrap();
    bytes[at] = b'T';
    fs::write(&patches[0], bytes).unwrap();
}

#[test]
fn a_one_byte_change_in_a_fix_rebuilds_fixed_and_only_fixed() {
    let copy = copy_of_patches();
    let tools = toolchain("gcc 12.2.0");
    let before = keys(copy.path(), &tools);
    assert_eq!(before, keys(copy.path(), &tools), "keys are stable");
    assert_eq!(
        before,
        keys(&build::patches_dir(), &tools),
        "a copy is the same"
    );
    flip_one_byte(&copy.path().join("fixes"));
    let after = keys(copy.path(), &tools);
    let changed: Vec<String> = KERNELS
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| b != a)
        .map(|(k, _)| k.to_string())
        .collect();
    assert_eq!(changed, ["fixed"], "{before:?} -> {after:?}");
}

#[test]
fn a_change_in_the_reference_series_rebuilds_reference_and_fixed() {
    let copy = copy_of_patches();
    let tools = toolchain("gcc 12.2.0");
    let before = keys(copy.path(), &tools);
    flip_one_byte(&copy.path().join("reference"));
    let after = keys(copy.path(), &tools);
    let same: Vec<bool> = before.iter().zip(&after).map(|(b, a)| b == a).collect();
    assert_eq!(same, [true, false, false, true]);
}

#[test]
fn another_compiler_rebuilds_every_kernel() {
    let patches = build::patches_dir();
    let a = keys(&patches, &toolchain("gcc 12.2.0"));
    let b = keys(&patches, &toolchain("gcc 12.2.0-14+deb12u1"));
    assert!(a.iter().zip(&b).all(|(x, y)| x != y), "{a:?} {b:?}");
}
