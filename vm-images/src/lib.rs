//! Obtains, caches and assembles what a bigbar run boots.
//!
//! - [`Cache`]: the on-disk cache (atomic entries, per-entry locks).
//! - [`Fetcher`]: cache + refresh policy + Debian mirror + progress callback.
//! - [`debian`]: private apt configuration per suite, .deb download and unpacking.
//! - [`qemu`]: a QEMU with the vfio-user client (host's or Debian sid's).
//! - [`kernel`]: guest kernels: `debian:<suite>` with the vfio modules in load order, and
//!   `stock` / `reference` built from Debian's `linux-source` ([`kernel::build`]), with
//!   build tools the host lacks fetched from its own release ([`kernel::build_tools`]).
//! - [`busybox`]: Debian's static busybox.
//! - [`kselftests`]: external kselftest programs (bigbar's kernel reproducers, and
//!   the kernel's own VFIO selftests built from its tree),
//!   compiled statically against the kernel source.
//! - [`initramfs`]: the guest's initramfs (newc cpio).
//! - [`chromium`]: Debian's headless Chromium of the host's release, which the
//!   tests render `report.html` with.
//!
//! Store layout (below the root: `$BIGBAR_CACHE`, else `$XDG_CACHE_HOME/bigbar`,
//! else `~/.cache/bigbar`; see [`cache::default_root`]):
//!
//! ```text
//! apt/<suite>/                  private apt tree (sources, lists, state, apt.conf)
//! apt/<suite>.lock              held while apt runs for the suite
//! apt/<suite>.keyring           keyring fetched for the suite, if the host's failed
//! keyrings/<version>/           a fetched debian-archive-keyring
//! qemu/debian-sid/<version>/    prefix/ (unpacked closure) + qemu.json
//! kernel/debian-<suite>/<release>_<version>/  vmlinuz, config, modules/, kernel.json
//! kernel-source/debian-sid/<package>_<version>/  unpacked linux-source tree + source.json
//! kernel/built/<stock|reference>-<version>-<hash>/  bzImage, config, System.map,
//!                               build.log, kernel.json, build.json
//! kernel/built/build.lock       held while a kernel builds (one build at a time)
//! build-tools/<distro>-<codename>/<packages>-<hash>/  prefix/ (bison, flex, m4,
//!                               libelf-dev the host lacks), pkgconfig/, tools.json
//! build-tools/<distro>-<codename>/<packages>.current  the entry used while not refreshing
//! busybox/debian-<suite>/<version>/busybox
//! chromium/debian-<codename>/<version>/prefix/  chromium-headless-shell's closure, unpacked
//! kselftests/<collection>/<package>_<version>-<hash>/<collection>/  compiled programs
//! <category>/current            the entry used while the cache is not refreshed
//! <category...>/<key>.lock       held while the entry is made
//! <category...>/<key>.use        shared-locked by each process using the entry; its
//!                               mtime is the last use (`bigbar cache gc`)
//! <entry>/.bigbar-entry.json     its size and what made it
//! ```
//!
//! With [`Refresh::IfMissing`] a warm cache is used without running apt; with
//! [`Refresh::Always`] apt resolves the suite's current versions and only new
//! versions are downloaded.

pub mod busybox;
pub mod cache;
pub mod chromium;
mod command;
pub mod debian;
pub mod error;
pub mod fetch;
pub mod initramfs;
pub mod kernel;
pub mod kselftests;
pub mod launch;
pub mod manifest;
pub mod qemu;

pub use cache::Cache;
pub use error::{Error, Result};
pub use fetch::{Fetcher, Refresh};
pub use initramfs::InitramfsSpec;
pub use kernel::{Kernel, KernelSpec};
pub use qemu::Qemu;
