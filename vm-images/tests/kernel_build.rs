//! Builds the `stock` and `reference` kernels from Debian sid's `linux-source`.
//!
//! Ignored by default: they need Debian's archive the first time and take minutes
//! (a cold build is about 4 minutes per kernel on 2 cores). Run them with
//! `cargo test -p vm-images --test kernel_build -- --ignored --test-threads 1`.
//! They use the user's store (`$BIGBAR_CACHE`, else `~/.cache/bigbar`); a warm one
//! makes them take seconds.

use std::time::Instant;

use vm_images::kernel::build;
use vm_images::kernel::kconfig::{self, Value};
use vm_images::kernel::patches::Series;
use vm_images::kernel::source;
use vm_images::{kernel, Cache, Fetcher, KernelSpec};

fn test_cache() -> (Cache, Option<tempfile::TempDir>) {
    (Cache::user().expect("a store"), None)
}

fn progress(message: &str) {
    eprintln!("  .. {message}");
}

/// The patch series applies, hunk for hunk and without fuzz, to the source Debian
/// ships now (what `reference` builds from).
#[test]
#[ignore = "needs Debian's archive (or a warm cache)"]
fn reference_series_applies_to_current_debian_source() {
    let (cache, _tmp) = test_cache();
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let (package, version) = source::resolve_version(&fetcher).unwrap();
    let src = source::obtain(&fetcher, &package, &version).unwrap();
    let series = Series::read(&build::reference_patches()).unwrap();
    let based_on = series.based_on.clone().unwrap();
    if based_on != src.name() {
        eprintln!(
            "note: series based on {based_on}, applying to {}",
            src.name()
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("src");
    let status = std::process::Command::new("cp")
        .arg("-al")
        .arg(&src.tree)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(status.success());
    series.apply(&tree, &src.name(), &progress).unwrap();
    let mmap = std::fs::read_to_string(tree.join("mm/mmap.c")).unwrap();
    assert!(mmap.contains("mapping_order_policy"));
    // Hard links were replaced, not written through: the cached source is intact.
    let pristine = std::fs::read_to_string(src.tree.join("mm/mmap.c")).unwrap();
    assert!(!pristine.contains("mapping_order_policy"));
}

/// Builds both kernels (or finds them cached), checks what they are, and that a
/// second obtain answers from the cache without the network.
#[test]
#[ignore = "needs Debian's archive (or a warm cache) and minutes of build time"]
fn stock_and_reference_build_then_come_from_the_cache() {
    let (cache, _tmp) = test_cache();
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let fragment_path = build::default_fragment();
    let fragment = kconfig::parse(
        &std::fs::read_to_string(&fragment_path).unwrap(),
        &fragment_path,
    )
    .unwrap();
    let mut built = Vec::new();
    for spec in [KernelSpec::Stock, KernelSpec::Reference] {
        let t = Instant::now();
        let k = kernel::obtain(&fetcher, &spec).unwrap();
        eprintln!("{spec}: {} in {:.1?}", k.release, t.elapsed());
        assert_eq!(k.spec, spec);
        assert!(k.modules.is_empty(), "everything is built in");
        assert!(
            k.release.ends_with(&format!("-bigbar-{spec}")),
            "{}",
            k.release
        );
        let image = std::fs::read(&k.image).unwrap();
        // The x86 boot protocol's "HdrS" magic at 0x202.
        assert_eq!(
            &image[0x202..0x206],
            b"HdrS",
            "{} is no bzImage",
            k.image.display()
        );
        let config_path = k.config.clone().unwrap();
        let config = kconfig::parse(
            &std::fs::read_to_string(&config_path).unwrap(),
            &config_path,
        )
        .unwrap();
        assert!(kconfig::mismatches(&fragment, &config).is_empty());
        assert_eq!(config.get("MODULES"), Some(&Value::NotSet));
        built.push(k);
    }
    assert_ne!(built[0].image, built[1].image);

    let offline = Fetcher::new(&cache).mirror("http://127.0.0.1:9/debian");
    let t = Instant::now();
    for k in &built {
        assert_eq!(&kernel::obtain(&offline, &k.spec).unwrap(), k);
    }
    eprintln!("warm obtain of both: {:.1?}", t.elapsed());
}
