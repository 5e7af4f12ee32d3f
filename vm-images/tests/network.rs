//! Tests that reach Debian's archive (deb.debian.org or `$BIGBAR_DEBIAN_MIRROR`).
//!
//! Ignored by default so `cargo test -p vm-images` stays offline; run them with
//! `cargo test -p vm-images --test network -- --ignored`. They use the user's
//! store (`$BIGBAR_CACHE`, else `~/.cache/bigbar`); a warm one makes them fast.

use std::time::Instant;

use vm_images::debian::{keyring, Archive, Suite};
use vm_images::{busybox, kernel, qemu, Cache, Fetcher, KernelSpec, Refresh};

/// The cache to use and the temporary directory keeping it alive, if any.
fn test_cache() -> (Cache, Option<tempfile::TempDir>) {
    (Cache::user().expect("a store"), None)
}

fn progress(message: &str) {
    eprintln!("  .. {message}");
}

#[test]
#[ignore = "needs Debian's archive"]
fn sid_artefacts_are_fetched_then_reused_offline() {
    let (cache, _tmp) = test_cache();
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let t = Instant::now();
    let q = qemu::obtain_debian(&fetcher, &Suite::sid()).unwrap();
    let spec: KernelSpec = "debian:sid".parse().unwrap();
    let k = kernel::obtain(&fetcher, &spec).unwrap();
    let b = busybox::obtain(&fetcher, &Suite::sid()).unwrap();
    eprintln!("first obtain: {:.1?}", t.elapsed());

    assert!(q.version >= qemu::MIN_VERSION);
    assert!(q.has_device(qemu::REQUIRED_DEVICE).unwrap());
    assert!(k.image.is_file() && k.config.as_ref().is_some_and(|c| c.is_file()));
    let names: Vec<String> = k
        .modules
        .iter()
        .map(|m| m.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|m| m.starts_with(n) && m[n.len()..].starts_with(".ko"))
            .unwrap_or_else(|| panic!("{n} not in {names:?}"))
    };
    assert!(pos("vfio") < pos("vfio-pci-core"));
    assert!(pos("irqbypass") < pos("vfio-pci-core"));
    assert!(pos("vfio-pci-core") < pos("vfio-pci"));
    assert!(pos("vfio") < pos("vfio_iommu_type1"));
    busybox::check_static(&b.binary).unwrap();

    // A warm cache answers without apt: an unreachable mirror would make apt fail.
    let offline = Fetcher::new(&cache).mirror("http://127.0.0.1:9/debian");
    let t = Instant::now();
    let q2 = qemu::obtain_debian(&offline, &Suite::sid()).unwrap();
    let k2 = kernel::obtain(&offline, &spec).unwrap();
    let b2 = busybox::obtain(&offline, &Suite::sid()).unwrap();
    eprintln!("warm obtain: {:.1?}", t.elapsed());
    assert_eq!((q2.binary, q2.version), (q.binary, q.version));
    assert_eq!(k2, k);
    assert_eq!(b2, b);

    // Refreshing does go to the archive: with the unreachable mirror it must fail.
    let refreshing = Fetcher::new(&cache)
        .mirror("http://127.0.0.1:9/debian")
        .refresh(Refresh::Always);
    assert!(kernel::obtain(&refreshing, &spec).is_err());
}

#[test]
#[ignore = "needs Debian's archive"]
fn fetched_keyring_verifies_sid() {
    let (cache, _tmp) = test_cache();
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let fetched = keyring::bootstrap(&fetcher).unwrap();
    assert_ne!(fetched, keyring::host_keyring());
    let sid = Archive::open_with_keyring(&fetcher, &Suite::sid(), Some(fetched.clone())).unwrap();
    sid.update().unwrap();
    assert!(!sid.candidate("busybox-static").unwrap().is_empty());
    assert_eq!(sid.keyring(), fetched);
}

#[test]
#[ignore = "needs Debian's archive"]
fn unknown_package_is_a_clear_error() {
    let (cache, _tmp) = test_cache();
    let fetcher = Fetcher::new(&cache);
    let sid = Archive::open(&fetcher, &Suite::sid()).unwrap();
    let err = sid
        .candidate("bigbar-no-such-package")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`bigbar-no-such-package`") && err.contains("sid"),
        "{err}"
    );
}
