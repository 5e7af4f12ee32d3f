//! F3: the THP policy gates huge faults of BAR mappings.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use guest_tests::fixture::Fixture;
use guest_tests::isolate::diag;
use guest_tests::kernel::{ThpMode, MADVISE};
use guest_tests::model::{self, Behaviour, Orders, PMD};
use guest_tests::stop::{skip_if, Stop, TestResult};
use guest_tests::{bail, ensure, skip};
use nix::sys::mman::MmapAdvise;

use super::check::{bar_of, expect_plan, need_huge, place, placement, touch, Data};

/// A PMD-congruent range of two blocks: 2 faults huge, 1024 at 4 KiB.
const LEN: u64 = 2 * PMD;

/// Maps the test range, applies `advice`, and checks the count for `orders`.
fn check_with(fx: &Fixture, advice: &[MmapAdvise], orders: Orders, what: &str) -> TestResult {
    need_huge(fx)?;
    skip_if(fx.caps.need(&MADVISE).filter(|_| !advice.is_empty()))?;
    let bar = bar_of(fx, LEN)?;
    let mut data = Data::new(fx, bar, 0, LEN)?;
    let map = place(fx, bar, 0, LEN, PMD, 0)?;
    for a in advice {
        map.advise(*a).with_context(|| format!("madvise {a:?}"))?;
    }
    let plan = model::plan(&placement(bar, 0, &map), Behaviour::HugeFault(orders))?;
    expect_plan(&map, &plan, what)?;
    data.check(&map, 0)?;
    Ok(())
}

/// f3.madv_nohugepage: MADV_NOHUGEPAGE gives 4 KiB entries only.
pub fn madv_nohugepage(fx: &Fixture) -> TestResult {
    check_with(
        fx,
        &[MmapAdvise::MADV_NOHUGEPAGE],
        Orders::NONE,
        "MADV_NOHUGEPAGE",
    )
}

/// f3.madv_hugepage: MADV_HUGEPAGE allows huge entries (whatever sysfs says,
/// unless it says never on a kernel that obeys it: then skipped).
pub fn madv_hugepage(fx: &Fixture) -> TestResult {
    match fx.caps.fault_behaviour(true) {
        Ok(Behaviour::HugeFault(orders)) => {
            check_with(fx, &[MmapAdvise::MADV_HUGEPAGE], orders, "MADV_HUGEPAGE")
        }
        Ok(Behaviour::RemapWholeVma) => {
            need_huge(fx)?;
            skip!("the kernel maps BARs whole at mmap: no huge fault to allow")
        }
        Err(why) => Err(Stop::Skip(why)),
    }
}

/// f3.prctl_thp_disable: PR_SET_THP_DISABLE gives 4 KiB entries only, even with
/// MADV_HUGEPAGE. (The test runs in its own child, so the setting dies with it.)
pub fn prctl_thp_disable(fx: &Fixture) -> TestResult {
    need_huge(fx)?;
    nix::sys::prctl::set_thp_disable(true).context("prctl(PR_SET_THP_DISABLE)")?;
    // Without madvise the prctl is still checked, just not against the advice.
    let advice: &[MmapAdvise] = match fx.caps.need(&MADVISE) {
        None => &[MmapAdvise::MADV_HUGEPAGE],
        Some(why) => {
            diag(&format!("checked without MADV_HUGEPAGE: {why}"));
            &[]
        }
    };
    check_with(fx, advice, Orders::NONE, "PR_SET_THP_DISABLE")
}

const THP_ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";

/// Restores the THP mode when dropped.
/// Teardown of `f3.sysfs_enabled`, in the parent: puts back the THP mode the
/// fixture found, in case the child was killed before its own restore ran.
pub fn restore_thp_mode(fx: &Fixture) {
    let mode = match fx.caps.thp {
        Some(ThpMode::Always) => "always",
        Some(ThpMode::Madvise) => "madvise",
        Some(ThpMode::Never) => "never",
        None => return,
    };
    let path = PathBuf::from("/").join(THP_ENABLED);
    if let Err(e) = fs::write(&path, mode) {
        eprintln!("# restoring {} to {mode}: {e}", path.display());
    }
}

struct RestoreThp {
    path: PathBuf,
    mode: String,
}

impl Drop for RestoreThp {
    fn drop(&mut self) {
        if let Err(e) = fs::write(&self.path, &self.mode) {
            diag(&format!(
                "restoring {} to {}: {e}",
                self.path.display(),
                self.mode
            ));
        }
    }
}

fn active_mode(text: &str) -> Option<String> {
    let w = text.split_whitespace().find(|w| w.starts_with('['))?;
    Some(w.trim_matches(|c| c == '[' || c == ']').to_string())
}

/// Faults for the test range under the current sysfs mode, with or without
/// MADV_HUGEPAGE.
fn count_under(fx: &Fixture, madvise: bool) -> Result<(u64, u64, u64)> {
    let bar = fx.smallest_bar_of(LEN).context("no BAR")?;
    let _data = Data::new(fx, bar, 0, LEN)?;
    let map = place(fx, bar, 0, LEN, PMD, 0)?;
    if madvise {
        map.advise(MmapAdvise::MADV_HUGEPAGE)?;
    }
    let p = placement(bar, 0, &map);
    let huge = model::plan(&p, Behaviour::HugeFault(Orders::ALL_HUGE))?.faults;
    let small = model::plan(&p, Behaviour::HugeFault(Orders::NONE))?.faults;
    Ok((touch(&map)?, huge, small))
}

/// f3.sysfs_enabled: `transparent_hugepage/enabled` either gates BAR mappings
/// (6.12: `never` gives 4 KiB, `madvise` needs MADV_HUGEPAGE) or is ignored for
/// them (7.2); which one is detected from `never`, and `madvise` must agree.
pub fn sysfs_enabled(fx: &Fixture) -> TestResult {
    need_huge(fx)?;
    // The `madvise` mode cannot be checked without the call it is about.
    skip_if(fx.caps.need(&MADVISE))?;
    bar_of(fx, LEN)?;
    let path = PathBuf::from("/").join(THP_ENABLED);
    let Ok(text) = fs::read_to_string(&path) else {
        skip!("{} is not readable", path.display());
    };
    let mode = active_mode(&text).context("no active THP mode")?;
    if fs::write(&path, "never").is_err() {
        skip!("cannot write {}", path.display());
    }
    let _restore = RestoreThp {
        path: path.clone(),
        mode,
    };
    let (never, huge, small) = count_under(fx, false)?;
    let obeys = if never == small {
        true
    } else if never == huge {
        false
    } else {
        bail!("THP never: counted {never} faults, neither {small} (obeyed) nor {huge} (ignored)");
    };
    diag(&format!(
        "THP never: {never} faults: the kernel {} the sysfs setting for BAR mappings",
        if obeys { "obeys" } else { "ignores" }
    ));
    fs::write(&path, "madvise").context("setting THP madvise")?;
    let (plain, _, _) = count_under(fx, false)?;
    let (advised, _, _) = count_under(fx, true)?;
    let want_plain = if obeys { small } else { huge };
    diag(&format!(
        "THP madvise: {plain} faults without MADV_HUGEPAGE, {advised} with"
    ));
    ensure!(
        plain == want_plain,
        "THP madvise without MADV_HUGEPAGE: expected {want_plain} (consistent with never), counted {plain}"
    );
    ensure!(
        advised == huge,
        "THP madvise with MADV_HUGEPAGE: expected {huge}, counted {advised}"
    );
    fs::write(&path, "always").context("setting THP always")?;
    let (always, _, _) = count_under(fx, false)?;
    ensure!(
        always == huge,
        "THP always: expected {huge}, counted {always}"
    );
    Ok(())
}
