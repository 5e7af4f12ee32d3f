//! What the running kernel can do, detected rather than assumed: huge pfnmap
//! support in vfio-pci, the THP policy that gates it (F3), the kernel release.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::model::{Behaviour, Orders};

/// The symbol of vfio-pci's huge fault handler (6.12 and later).
pub const HUGE_FAULT_SYMBOL: &str = "vfio_pci_mmap_huge_fault";

/// Errors from reading kernel interfaces.
#[derive(Debug, thiserror::Error)]
#[error("read {path}")]
pub struct KernelError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// `/sys/kernel/mm/transparent_hugepage/enabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThpMode {
    /// `[always]`.
    Always,
    /// `[madvise]`: huge only in VMAs with MADV_HUGEPAGE.
    Madvise,
    /// `[never]`.
    Never,
}

/// Parses the THP `enabled` file, where the active mode is in brackets.
pub fn parse_thp_mode(text: &str) -> Option<ThpMode> {
    let active = text.split_whitespace().find(|w| w.starts_with('['))?;
    match active.trim_matches(|c| c == '[' || c == ']') {
        "always" => Some(ThpMode::Always),
        "madvise" => Some(ThpMode::Madvise),
        "never" => Some(ThpMode::Never),
        _ => None,
    }
}

/// Whether a kallsyms line (`address type name [module]`) names a function of an
/// offset-aware placement hook for VFIO: a `get_mapping_order` file operation
/// (the series' v2, seed 004) or a `get_unmapped_area` hook (v1, seed 002) in a
/// vfio module or with vfio in its name. Returns the symbol name.
pub fn placement_symbol(line: &str) -> Option<&str> {
    let mut fields = line.split_whitespace();
    let name = fields.nth(2)?;
    let module = fields.next().unwrap_or("");
    let vfio = name.contains("vfio") || module.contains("vfio");
    let hook = name.contains("mapping_order") || name.contains("get_unmapped_area");
    (vfio && hook).then_some(name)
}

/// The placement hook symbols of a kallsyms listing.
pub fn placement_symbols(listing: impl BufRead) -> io::Result<Vec<String>> {
    Ok(scan_kallsyms(listing, "")?.placement)
}

/// The name under which a kallsyms listing has `symbol` (third field, any
/// module): the symbol itself or a compiler clone of it (`symbol.isra.0`,
/// `symbol.constprop.0`), which is the same code; a `.cold` part alone is not.
pub fn kallsyms_find(listing: impl BufRead, symbol: &str) -> io::Result<Option<String>> {
    Ok(scan_kallsyms(listing, symbol)?.symbol)
}

/// What one pass over a kallsyms listing found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KallsymsScan {
    /// The name of the symbol looked for (see [`kallsyms_find`]).
    pub symbol: Option<String>,
    /// The placement hook symbols (see [`placement_symbol`]).
    pub placement: Vec<String>,
}

/// Looks for `symbol` and the placement hooks in one pass: the kernel formats
/// /proc/kallsyms anew on every read, which takes about a second per pass for a
/// Debian kernel under TCG.
pub fn scan_kallsyms(listing: impl BufRead, symbol: &str) -> io::Result<KallsymsScan> {
    let mut scan = KallsymsScan::default();
    for line in listing.lines() {
        let line = line?;
        if let Some(name) = placement_symbol(&line) {
            scan.placement.push(name.to_owned());
        }
        if scan.symbol.is_some() || symbol.is_empty() {
            continue;
        }
        let Some(name) = line.split_whitespace().nth(2) else {
            continue;
        };
        let clone = name
            .strip_prefix(symbol)
            .is_some_and(|rest| rest.starts_with('.') && !rest.starts_with(".cold"));
        if name == symbol || clone {
            scan.symbol = Some(name.to_owned());
        }
    }
    Ok(scan)
}

/// Where the guest's init mounts tracefs, and its kprobe definitions file.
const TRACEFS_KPROBES: &str = "sys/kernel/tracing/kprobe_events";

/// The names the VFIO placement hooks have in the series' versions (v2:
/// `get_mapping_order`, seed 004 and kernel/patches/reference; v1:
/// `get_unmapped_area`, seed 002).
pub const PLACEMENT_HOOKS: [&str; 4] = [
    "vfio_device_fops_get_mapping_order",
    "vfio_pci_core_get_mapping_order",
    "vfio_device_get_unmapped_area",
    "vfio_pci_core_get_unmapped_area",
];

/// What the kernel said when asked to define a kprobe on a symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolProbe {
    /// The probe was defined (and removed again): the symbol exists.
    Present,
    /// `ENOENT` or `EINVAL` ("Invalid probed address or symbol", what 7.2
    /// answers for a missing name): no such symbol, or one kprobes refuse.
    Absent,
    /// Anything else (not probe-able, no permission, ...): no answer.
    Unknown,
}

/// Asks the kernel whether `symbol` exists by defining a kprobe on it in
/// `kprobe_events` (the kernel looks the name up by binary search) and
/// removing it at once.
pub fn probe_symbol(kprobe_events: &Path, symbol: &str) -> SymbolProbe {
    const EVENT: &str = "bigbar_lookup/sym";
    // The file is opened for each line: the kernel reports a failed
    // definition on the write, and a new open starts with no error pending.
    let open = || std::fs::OpenOptions::new().append(true).open(kprobe_events);
    let Ok(mut file) = open() else {
        return SymbolProbe::Unknown;
    };
    match std::io::Write::write_all(&mut file, format!("p:{EVENT} {symbol}\n").as_bytes()) {
        Ok(()) => {
            // A definition left behind costs nothing: nothing enables it.
            if let Ok(mut f) = open() {
                let _ = std::io::Write::write_all(&mut f, format!("-:{EVENT}\n").as_bytes());
            }
            SymbolProbe::Present
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => {
            SymbolProbe::Absent
        }
        Err(_) => SymbolProbe::Unknown,
    }
}

/// The huge fault handler and the placement hooks, looked up one name at a
/// time through kprobe definitions, or `None` when that cannot decide and
/// the whole of /proc/kallsyms must be read (a pass takes seconds on a
/// Debian kernel under TCG, milliseconds here). Only a handler found under
/// its own name decides: a kernel without it (6.1), or whose compiler
/// renamed it (`.isra.0`), is left to the full scan, which knows clones.
/// Once kprobes took the handler, a refused hook name is a missing one
/// (they are ordinary functions); the A tests' capability probe does not
/// rest on the symbols alone anyway (see `suite::place::capability`).
fn quick_lookup(kprobe_events: &Path) -> Option<KallsymsScan> {
    if probe_symbol(kprobe_events, HUGE_FAULT_SYMBOL) != SymbolProbe::Present {
        return None;
    }
    let mut placement = Vec::new();
    for hook in PLACEMENT_HOOKS {
        match probe_symbol(kprobe_events, hook) {
            SymbolProbe::Present => placement.push(hook.to_string()),
            SymbolProbe::Absent => {}
            SymbolProbe::Unknown => return None,
        }
    }
    Some(KallsymsScan {
        symbol: Some(HUGE_FAULT_SYMBOL.to_string()),
        placement,
    })
}

/// A system call the kernel configuration can leave out (`kernel/sys_ni.c` then
/// makes it return ENOSYS), with the option that brings it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionalSyscall {
    /// The system call, e.g. `madvise`.
    pub name: &'static str,
    /// The Kconfig option, without `CONFIG_`.
    pub option: &'static str,
}

/// `madvise`, compiled out without `CONFIG_ADVISE_SYSCALLS` (tinyconfig).
pub const MADVISE: OptionalSyscall = OptionalSyscall {
    name: "madvise",
    option: "ADVISE_SYSCALLS",
};

/// `memfd_create`, compiled out without `CONFIG_MEMFD_CREATE` (it needs tmpfs).
pub const MEMFD_CREATE: OptionalSyscall = OptionalSyscall {
    name: "memfd_create",
    option: "MEMFD_CREATE",
};

impl OptionalSyscall {
    /// The skip reason of a test that needs it: `madvise is not available
    /// (CONFIG_ADVISE_SYSCALLS)`.
    pub fn unavailable(&self) -> String {
        format!("{} is not available (CONFIG_{})", self.name, self.option)
    }

    /// Whether the call failed because the kernel lacks it.
    pub fn compiled_out(errno: nix::errno::Errno) -> bool {
        errno == nix::errno::Errno::ENOSYS
    }
}

/// Whether the kernel has `madvise`: a zero-length advice at address 0 succeeds
/// (it touches nothing) wherever the call exists.
fn probe_madvise() -> bool {
    // SAFETY: a zero-length range changes no mapping.
    let r = unsafe { libc::madvise(std::ptr::null_mut(), 0, libc::MADV_NORMAL) };
    !(r == -1 && OptionalSyscall::compiled_out(nix::errno::Errno::last()))
}

/// The capabilities relevant to BAR fault orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCaps {
    /// `uname -r`.
    pub release: String,
    /// The name under which kallsyms has `vfio_pci_mmap_huge_fault` (or a clone
    /// of it), if vfio-pci has it (must be read after vfio-pci loaded).
    pub huge_fault_symbol: Option<String>,
    /// The THP mode, when the kernel has THP.
    pub thp: Option<ThpMode>,
    /// `prctl(PR_GET_THP_DISABLE)` for this process.
    pub thp_disabled_by_prctl: bool,
    /// Whether the `madvise` system call exists ([`MADVISE`]).
    pub madvise: bool,
    /// Placement hook symbols of VFIO in kallsyms (see [`placement_symbol`]).
    pub placement_symbols: Vec<String>,
    /// The placement policy a kernel with the hook may expose as
    /// `/sys/module/kernel/parameters/mapping_order_policy` (`offset`, `size`, `off`).
    pub placement_policy: Option<String>,
}

/// Where a kernel with the placement hook may say which policy is in force.
pub const PLACEMENT_POLICY: &str = "sys/module/kernel/parameters/mapping_order_policy";

impl KernelCaps {
    /// Whether vfio-pci maps BARs with huge entries at fault time (6.12+).
    pub fn huge_pfnmap(&self) -> bool {
        self.huge_fault_symbol.is_some()
    }

    /// The skip reason of a test that needs `syscall`, if this kernel lacks it.
    /// Only the calls probed at detection are known to be missing; the others
    /// are found out when they fail ([`OptionalSyscall::compiled_out`]).
    pub fn need(&self, syscall: &OptionalSyscall) -> Option<String> {
        let present = *syscall != MADVISE || self.madvise;
        (!present).then(|| syscall.unavailable())
    }

    /// Detects the capabilities from `/proc` and `/sys` under `root` (normally `/`).
    pub fn detect(root: &Path) -> Result<Self, KernelError> {
        let kallsyms = root.join("proc/kallsyms");
        let err = |source| KernelError {
            path: kallsyms.clone(),
            source,
        };
        let KallsymsScan {
            symbol: huge_fault_symbol,
            placement: placement_symbols,
        } = match quick_lookup(&root.join(TRACEFS_KPROBES)) {
            Some(found) => found,
            None => {
                let file = File::open(&kallsyms).map_err(err)?;
                scan_kallsyms(BufReader::new(file), HUGE_FAULT_SYMBOL).map_err(err)?
            }
        };
        let thp_path = root.join("sys/kernel/mm/transparent_hugepage/enabled");
        let thp = std::fs::read_to_string(&thp_path)
            .ok()
            .and_then(|t| parse_thp_mode(&t));
        let release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(KernelCaps {
            release,
            huge_fault_symbol,
            thp,
            thp_disabled_by_prctl: nix::sys::prctl::get_thp_disable().unwrap_or(false),
            madvise: probe_madvise(),
            placement_symbols,
            placement_policy: std::fs::read_to_string(root.join(PLACEMENT_POLICY))
                .ok()
                .map(|s| s.trim().to_string()),
        })
    }

    /// The fault behaviour to expect for a VMA (which had `MADV_HUGEPAGE` applied
    /// when `madvised`), or why it cannot be predicted here.
    ///
    /// Without the huge handler the kernel is 6.1-like (whole-VMA remap). With it,
    /// x86-64 has PMD and PUD pfnmap; a THP mode of `never` is decided differently
    /// by 6.12 (4 KiB) and 7.2 (ignored), which the F3 tests pin down, so it is
    /// reported as unpredictable rather than guessed.
    pub fn fault_behaviour(&self, madvised: bool) -> Result<Behaviour, String> {
        if !self.huge_pfnmap() {
            return Ok(Behaviour::RemapWholeVma);
        }
        if self.thp_disabled_by_prctl {
            return Ok(Behaviour::HugeFault(Orders::NONE));
        }
        match self.thp {
            Some(ThpMode::Never) => {
                Err("transparent_hugepage/enabled is [never]: F3 decides, not these tests".into())
            }
            Some(ThpMode::Madvise) if !madvised => Ok(Behaviour::HugeFault(Orders::NONE)),
            None => Err("the kernel has no transparent_hugepage sysfs".into()),
            _ => Ok(Behaviour::HugeFault(arch_orders())),
        }
    }
}

/// The huge pfnmap orders of this architecture's Debian kernels.
fn arch_orders() -> Orders {
    if cfg!(target_arch = "x86_64") {
        // ARCH_SUPPORTS_PMD_PFNMAP and ARCH_SUPPORTS_PUD_PFNMAP are both y (docs/RULES.md).
        Orders::ALL_HUGE
    } else {
        // Unverified for other architectures: PMD is the common denominator.
        Orders::PMD_ONLY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_probe_without_tracefs_decides_nothing() {
        let t = tempfile::tempdir().unwrap();
        let events = t.path().join("kprobe_events");
        assert_eq!(probe_symbol(&events, "x"), SymbolProbe::Unknown);
        assert!(quick_lookup(&events).is_none());
    }

    #[test]
    fn accepted_definitions_are_removed_again() {
        let t = tempfile::tempdir().unwrap();
        let events = t.path().join("kprobe_events");
        std::fs::write(&events, "").unwrap();
        let found = quick_lookup(&events).expect("a file that takes every line");
        assert_eq!(found.symbol.as_deref(), Some(HUGE_FAULT_SYMBOL));
        assert_eq!(found.placement, PLACEMENT_HOOKS);
        let written = std::fs::read_to_string(&events).unwrap();
        assert_eq!(
            written.lines().filter(|l| l.starts_with("-:")).count(),
            1 + PLACEMENT_HOOKS.len()
        );
    }
    use rstest::rstest;

    #[rstest]
    #[case("[always] madvise never\n", Some(ThpMode::Always))]
    #[case("always [madvise] never\n", Some(ThpMode::Madvise))]
    #[case("always madvise [never]\n", Some(ThpMode::Never))]
    #[case("always madvise never\n", None)]
    #[case("", None)]
    fn thp_modes(#[case] text: &str, #[case] want: Option<ThpMode>) {
        assert_eq!(parse_thp_mode(text), want);
    }

    #[test]
    fn kallsyms_matches_whole_names_only() {
        let listing = "ffffffffc0a01000 t vfio_pci_mmap_huge_fault_x\t[vfio_pci_core]\n\
                       0000000000000000 T vfio_pci_core_mmap\t[vfio_pci_core]\n";
        assert!(kallsyms_find(listing.as_bytes(), HUGE_FAULT_SYMBOL)
            .unwrap()
            .is_none());
        let listing =
            format!("{listing}0000000000000000 t vfio_pci_mmap_huge_fault\t[vfio_pci_core]\n");
        assert!(kallsyms_find(listing.as_bytes(), HUGE_FAULT_SYMBOL)
            .unwrap()
            .is_some());
    }

    #[rstest]
    #[case::isra("vfio_pci_mmap_huge_fault.isra.0", true)]
    #[case::constprop("vfio_pci_mmap_huge_fault.constprop.0", true)]
    #[case::cold_part_only("vfio_pci_mmap_huge_fault.cold", false)]
    #[case::longer_name("vfio_pci_mmap_huge_fault_x.isra.0", false)]
    fn kallsyms_compiler_clones(#[case] name: &str, #[case] found: bool) {
        let listing = format!("ffffffffc0a01000 t {name}\t[vfio_pci_core]\n");
        assert_eq!(
            kallsyms_find(listing.as_bytes(), HUGE_FAULT_SYMBOL)
                .unwrap()
                .is_some(),
            found
        );
    }

    fn caps(huge: bool, thp: Option<ThpMode>, prctl: bool) -> KernelCaps {
        KernelCaps {
            release: "test".into(),
            huge_fault_symbol: huge.then(|| HUGE_FAULT_SYMBOL.to_string()),
            thp,
            thp_disabled_by_prctl: prctl,
            madvise: true,
            placement_symbols: Vec::new(),
            placement_policy: None,
        }
    }

    #[rstest]
    #[case(
        "ffffffffc0a01000 t vfio_pci_core_get_mapping_order\t[vfio_pci_core]",
        Some("vfio_pci_core_get_mapping_order")
    )]
    #[case(
        "ffffffffc0a01000 t get_mapping_order\t[vfio]",
        Some("get_mapping_order")
    )]
    #[case(
        "ffffffffc0a01000 T vfio_device_get_unmapped_area\t[vfio]",
        Some("vfio_device_get_unmapped_area")
    )]
    #[case("ffffffff81000000 T mm_get_unmapped_area", None)]
    #[case("ffffffff81000000 T thp_get_unmapped_area", None)]
    #[case("ffffffffc0a01000 t vfio_pci_mmap_huge_fault\t[vfio_pci_core]", None)]
    #[case("garbage", None)]
    fn placement_symbols_are_recognised(#[case] line: &str, #[case] want: Option<&str>) {
        assert_eq!(placement_symbol(line), want);
    }

    #[test]
    fn behaviour_follows_capabilities() {
        let huge = Behaviour::HugeFault(arch_orders());
        let none = Behaviour::HugeFault(Orders::NONE);
        assert_eq!(
            caps(false, Some(ThpMode::Always), false).fault_behaviour(true),
            Ok(Behaviour::RemapWholeVma)
        );
        assert_eq!(
            caps(true, Some(ThpMode::Always), false).fault_behaviour(false),
            Ok(huge)
        );
        assert_eq!(
            caps(true, Some(ThpMode::Madvise), false).fault_behaviour(true),
            Ok(huge)
        );
        assert_eq!(
            caps(true, Some(ThpMode::Madvise), false).fault_behaviour(false),
            Ok(none)
        );
        assert_eq!(
            caps(true, Some(ThpMode::Always), true).fault_behaviour(true),
            Ok(none)
        );
        assert!(caps(true, Some(ThpMode::Never), false)
            .fault_behaviour(true)
            .is_err());
        assert!(caps(true, None, false).fault_behaviour(true).is_err());
    }

    #[test]
    fn a_missing_syscall_names_its_option() {
        let mut c = caps(true, Some(ThpMode::Always), false);
        assert_eq!(c.need(&MADVISE), None);
        c.madvise = false;
        assert_eq!(
            c.need(&MADVISE).as_deref(),
            Some("madvise is not available (CONFIG_ADVISE_SYSCALLS)")
        );
        assert_eq!(
            MEMFD_CREATE.unavailable(),
            "memfd_create is not available (CONFIG_MEMFD_CREATE)"
        );
        assert!(OptionalSyscall::compiled_out(nix::errno::Errno::ENOSYS));
        assert!(!OptionalSyscall::compiled_out(nix::errno::Errno::EINVAL));
    }

    #[test]
    fn detect_reads_this_machine() {
        // The host kernel has /proc/kallsyms; the result depends on the host, the
        // point is that detection works on a real /proc.
        let c = KernelCaps::detect(Path::new("/")).unwrap();
        assert!(!c.release.is_empty());
        // Every distribution kernel has madvise.
        assert!(c.madvise);
    }
}
