//! `runner export-kselftest`: the guest-tests binary in the kselftest install
//! layout, so kernel CI (LAVA, KernelCI, tuxrun) runs it like any selftest.
//!
//! Layout (as `make -C tools/testing/selftests install` produces):
//! `kselftest-list.txt` (`collection:test` lines), `<collection>/<test>`,
//! `<collection>/settings` (`timeout=`), and `run_kselftest.sh`. The run script
//! here is bigbar's own small POSIX sh (busybox compatible) that honours the
//! list and the timeout and prints KTAP with the test's output nested, the way
//! the kernel's runner does. With `--kernel-runner` the kernel's own
//! `run_kselftest.sh` and `kselftest/` helpers replace it
//! ([`install_kernel_runner`]), as `make install` would lay them out.

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
    # The test's output is indented through sed; the status of a pipeline is
    # sed's, so the test's own status comes back on fd 3 (POSIX sh has no pipefail).
    exec 4>&1
    rc=$( { { (cd "$BASE_DIR/$dir" && exec timeout "$timeout" "./$name") 2>&1; echo $? >&3; } \
        | sed 's/^/# /' >&4; } 3>&1 )
    exec 4>&-
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

/// The kernel's run script and the helpers it sources, relative to
/// `tools/testing/selftests`.
const KERNEL_RUNNER_FILES: [&str; 4] = [
    "run_kselftest.sh",
    "kselftest/runner.sh",
    "kselftest/ktap_helpers.sh",
    "kselftest/prefix.pl",
];

/// Copies the kernel's `run_kselftest.sh` and `kselftest/` helpers from
/// `selftests` (a source tree's `tools/testing/selftests`) into the exported
/// `dir`, replacing bigbar's script: kernel CI runs the layout with those.
pub fn install_kernel_runner(selftests: &Path, dir: &Path) -> Result<()> {
    let helpers = dir.join("kselftest");
    std::fs::create_dir_all(&helpers).with_context(|| format!("creating {}", helpers.display()))?;
    for file in KERNEL_RUNNER_FILES {
        let (from, to) = (selftests.join(file), dir.join(file));
        let text = std::fs::read_to_string(&from)
            .with_context(|| format!("reading the kernel's {}", from.display()))?;
        write(&to, &text, 0o755)?;
    }
    Ok(())
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

    /// Puts an executable `text` at `path` through a child process. Had this
    /// multi-threaded test process held the file open for writing, a fork by a
    /// concurrent test could inherit that fd for a moment, and executing the file
    /// would then fail with ETXTBSY (seen in CI with another such test).
    fn install_executable(path: &Path, text: &str) {
        use std::io::Write;
        let mut writer = Command::new("sh")
            .args([
                "-c",
                "cat > \"$1.new\" && chmod 755 \"$1.new\" && mv -f \"$1.new\" \"$1\"",
            ])
            .arg("sh")
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writer
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        assert!(writer.wait().unwrap().success());
    }

    /// Exports `script` as the test binary, with `timeout` seconds in `settings`.
    fn export_fake(script: &str, timeout: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("install");
        export(Path::new("/bin/true"), &out).unwrap();
        // The exported copy was written by this process: replace it.
        install_executable(
            &out.join("bigbar/guest-tests"),
            &format!("#!/bin/sh\n{script}"),
        );
        std::fs::write(out.join("bigbar/settings"), format!("timeout={timeout}\n")).unwrap();
        dir
    }

    /// Runs the exported run script through `sh`: reading it needs no exec of a
    /// file this process wrote.
    fn run_script(dir: &tempfile::TempDir, args: &[&str]) -> (Option<i32>, String) {
        let run = Command::new("sh")
            .arg(dir.path().join("install/run_kselftest.sh"))
            .args(args)
            .output()
            .unwrap();
        (
            run.status.code(),
            String::from_utf8_lossy(&run.stdout).into_owned(),
        )
    }

    #[test]
    fn layout_and_list() {
        let dir = export_fake("exit 0\n", 5);
        let out = dir.path().join("install");
        assert_eq!(
            std::fs::read_to_string(out.join("kselftest-list.txt")).unwrap(),
            "bigbar:guest-tests\n"
        );
        let plain = tempfile::tempdir().unwrap();
        export(Path::new("/bin/true"), plain.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(plain.path().join("bigbar/settings")).unwrap(),
            format!("timeout={TIMEOUT_SECS}\n")
        );
        let mode = std::fs::metadata(plain.path().join("run_kselftest.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            run_script(&dir, &["-l"]),
            (Some(0), "bigbar:guest-tests\n".into())
        );
        let (code, _) = run_script(&dir, &["--bogus"]);
        assert_eq!(code, Some(2));
    }

    /// The run script's verdict follows the binary's exit status (kselftest's
    /// codes: 0 pass, 4 skip, anything else a failure) and its timeout, and the
    /// binary's own KTAP comes out nested as `# ` lines.
    #[rstest::rstest]
    #[case::pass("exit 0", "ok 1 selftests: bigbar: guest-tests\n", 0)]
    #[case::fail("exit 1", "not ok 1 selftests: bigbar: guest-tests # exit=1\n", 1)]
    #[case::skip("exit 4", "ok 1 selftests: bigbar: guest-tests # SKIP\n", 0)]
    #[case::crash(
        "kill -SEGV $$",
        "not ok 1 selftests: bigbar: guest-tests # exit=139\n",
        1
    )]
    #[case::hang(
        "exec sleep 60",
        "not ok 1 selftests: bigbar: guest-tests # TIMEOUT 1 seconds\n",
        1
    )]
    fn verdict_follows_the_binary(#[case] end: &str, #[case] last: &str, #[case] code: i32) {
        let dir = export_fake(&format!("echo 'TAP version 13'\necho '1..1'\n{end}\n"), 1);
        let (status, text) = run_script(&dir, &[]);
        assert!(
            text.starts_with("TAP version 13\n1..1\n# selftests: bigbar: guest-tests\n# TAP version 13\n# 1..1\n"),
            "{text}"
        );
        assert!(text.ends_with(last), "{text}");
        assert_eq!(status, Some(code), "{text}");
    }
}
