//! `inject.*`: deliberate failures for testing whoever runs this binary (the
//! runner's fault-injection suite). Registered only with `--inject KIND`, and run
//! first, so that tests remain for a fresh guest after the failure.
//!
//! - `inject.panic`: panics the kernel through `/proc/sysrq-trigger`.
//! - `inject.hang`: stops this binary's main process, so the guest prints
//!   nothing more, as a hung kernel would look from outside.
//! - `inject.slow`: takes 40 s in its child without printing, then passes:
//!   longer than the runner's progress limit, so only the parent's heartbeats
//!   keep a slow but alive guest from being taken for a hung one.

use anyhow::Context;
use guest_tests::bail;
use guest_tests::fixture::Fixture;
use guest_tests::harness::TestCase;
use guest_tests::stop::TestResult;
use nix::sys::signal::{kill, Signal};
use std::time::Duration;

/// The failures `--inject` knows.
pub const KINDS: [&str; 3] = ["panic", "hang", "slow"];

/// How long `inject.slow` takes: more than the runner's default progress limit
/// (30 s), well under the test deadline.
const SLOW: Duration = Duration::from_secs(40);

/// The test for `kind` (one of [`KINDS`]).
pub fn test(kind: &str) -> Option<TestCase<Fixture>> {
    match kind {
        "panic" => Some(TestCase::new("inject.panic", panic)),
        "hang" => Some(TestCase::new("inject.hang", hang)),
        "slow" => Some(TestCase::new("inject.slow", slow)),
        _ => None,
    }
}

fn panic(_: &Fixture) -> TestResult {
    std::fs::write("/proc/sys/kernel/sysrq", "1").context("enabling sysrq")?;
    std::fs::write("/proc/sysrq-trigger", "c").context("writing c to /proc/sysrq-trigger")?;
    bail!("the kernel survived a sysrq crash")
}

fn hang(_: &Fixture) -> TestResult {
    // The harness waits for this child in the parent; stopping the parent
    // freezes the KTAP stream and leaves the child blocked in the harness's pipe.
    kill(nix::unistd::getppid(), Signal::SIGSTOP).context("stopping the harness")?;
    loop {
        nix::unistd::pause();
    }
}

fn slow(_: &Fixture) -> TestResult {
    // The child is silent; the harness's parent beats for it.
    std::thread::sleep(SLOW);
    Ok(())
}
