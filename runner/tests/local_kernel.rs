//! End to end: `--kernel PATH` with a kernel built by the project (`stock`,
//! cached after its first build), laid out as a developer's build directory;
//! and a configuration without vfio-pci refused before boot, the option named.

mod common;

use common::{built_kernel, results, runner};
use std::path::{Path, PathBuf};

/// The stock kernel's image and config, built (or taken from the cache) by the runner.
fn stock_kernel() -> (PathBuf, PathBuf, String) {
    let (image, release) = built_kernel("stock");
    let config = image.with_file_name("config");
    assert!(
        config.is_file(),
        "{} has no config beside it",
        image.display()
    );
    (image, config, release)
}

/// A build directory as `make O=dir` leaves it, as far as bigbar reads one.
fn build_dir(image: &Path, config_text: &str, release: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("arch/x86/boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(image, boot.join("bzImage")).unwrap();
    std::fs::write(dir.path().join(".config"), config_text).unwrap();
    std::fs::create_dir_all(dir.path().join("include/config")).unwrap();
    std::fs::write(dir.path().join("include/config/kernel.release"), release).unwrap();
    dir
}

#[test]
fn a_build_directory_boots_and_a_config_without_vfio_is_refused() {
    let (image, config, release) = stock_kernel();
    let config_text = std::fs::read_to_string(&config).unwrap();

    let good = build_dir(&image, &config_text, &release);
    let out = tempfile::tempdir().unwrap();
    let st = runner()
        .arg("--kernel")
        .arg(good.path())
        .args(["--filter", "fault_order.*", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let v = results(out.path());
    assert_eq!(v["runs"][0]["kernel"]["release"], release.as_str());
    assert_eq!(v["runs"][0]["tests"].as_array().unwrap().len(), 3, "{v}");

    let without: String = config_text
        .lines()
        .filter(|l| !l.starts_with("CONFIG_VFIO_PCI="))
        .map(|l| format!("{l}\n"))
        .collect();
    let bad = build_dir(&image, &without, &release);
    let out = tempfile::tempdir().unwrap();
    let refused = runner()
        .arg("--kernel")
        .arg(bad.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("CONFIG_VFIO_PCI (binding the device to vfio-pci"),
        "{stderr}"
    );
    assert!(
        !out.path().join("console.log").exists(),
        "refused kernels are not booted"
    );
}
