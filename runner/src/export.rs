//! `runner export-kselftest`: the guest-tests binary in the kselftest install
//! layout, so kernel CI (LAVA, KernelCI, tuxrun) runs it like any selftest.
//!
//! Layout (as `make -C tools/testing/selftests install` produces):
//! `kselftest-list.txt` (`collection:test` lines), `<collection>/<test>`,
//! `<collection>/settings` (`timeout=`), and `run_kselftest.sh`. The run script
//! here is bigbar's own small POSIX sh (busybox compatible) that honours the
//! list and the timeout and prints KTAP with the test's output nested, the way
//! the kernel's runner does; the kernel's own script is not copied.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The kselftest collection name.
pub const COLLECTION: &str = "bigbar";
/// The test's executable name.
pub const TEST: &str = "guest-tests";
/// Whole-binary timeout in seconds; each guest test also has its own limit.
pub const TIMEOUT_SECS: u32 = 1800;

const RUN_SCRIPT: &str = r##"#!/bin/sh
# bigbar's run_kselftest.sh: runs the tests in kselftest-list.txt, printing KTAP.
# Usage: run_kselftest.sh [-l|--list] [-t collection:test]...
BASE_DIR=$(cd "$(dirname "$0")" && pwd)
LIST="$BASE_DIR/kselftest-list.txt"
selected=""
while [ $# -gt 0 ]; do
    case "$1" in
        -l|--list) cat "$LIST"; exit 0 ;;
        -t|--test) selected="$selected $2"; shift ;;
        *) echo "usage: $0 [-l] [-t collection:test]..." >&2; exit 2 ;;
    esac
    shift
done
tests=""
for t in $(cat "$LIST"); do
    if [ -z "$selected" ] || echo " $selected " | grep -q " $t "; then tests="$tests $t"; fi
done
total=$(echo $tests | wc -w)
echo "TAP version 13"
echo "1..$total"
n=0; rc_all=0
for t in $tests; do
    n=$((n + 1))
    dir=${t%%:*}; name=${t#*:}
    timeout=45
    if [ -f "$BASE_DIR/$dir/settings" ]; then
        timeout=$(sed -n 's/^timeout=//p' "$BASE_DIR/$dir/settings")
    fi
    echo "# selftests: $dir: $name"
    (cd "$BASE_DIR/$dir" && timeout "$timeout" "./$name" 2>&1 | sed 's/^/# /'; exit $?)
    rc=$?
    case $rc in
        0) echo "ok $n selftests: $dir: $name" ;;
        4) echo "ok $n selftests: $dir: $name # SKIP" ;;
        124) echo "not ok $n selftests: $dir: $name # TIMEOUT $timeout seconds"; rc_all=1 ;;
        *) echo "not ok $n selftests: $dir: $name # exit=$rc"; rc_all=1 ;;
    esac
done
exit $rc_all
"##;

/// Writes the kselftest layout for the static binary `guest_tests` into `dir`.
pub fn export(guest_tests: &Path, dir: &Path) -> Result<()> {
    let coll = dir.join(COLLECTION);
    std::fs::create_dir_all(&coll).with_context(|| format!("creating {}", coll.display()))?;
    let bin = coll.join(TEST);
    std::fs::copy(guest_tests, &bin)
        .with_context(|| format!("copying {} to {}", guest_tests.display(), bin.display()))?;
    write(
        &coll.join("settings"),
        &format!("timeout={TIMEOUT_SECS}\n"),
        0o644,
    )?;
    write(
        &dir.join("kselftest-list.txt"),
        &format!("{COLLECTION}:{TEST}\n"),
        0o644,
    )?;
    write(&dir.join("run_kselftest.sh"), RUN_SCRIPT, 0o755)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Exports a shell script standing in for the binary and runs the layout's
    /// own run script on the host.
    #[test]
    fn layout_and_run_script() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'TAP version 13'\necho '1..1'\necho 'ok 1 x'\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join("install");
        export(&fake, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("kselftest-list.txt")).unwrap(),
            "bigbar:guest-tests\n"
        );
        assert!(std::fs::read_to_string(out.join("bigbar/settings"))
            .unwrap()
            .starts_with("timeout="));
        let run = Command::new(out.join("run_kselftest.sh")).output().unwrap();
        let text = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{text}");
        assert!(text.contains("1..1\n# selftests: bigbar: guest-tests\n# TAP version 13"));
        assert!(
            text.ends_with("ok 1 selftests: bigbar: guest-tests\n"),
            "{text}"
        );
        let list = Command::new(out.join("run_kselftest.sh"))
            .arg("-l")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&list.stdout),
            "bigbar:guest-tests\n"
        );
    }
}
