//! `--shell`'s boot: the console on this terminal instead of a socket.

use super::args::launch_args;
use super::GuestConfig;
use anyhow::{Context, Result};
use std::path::Path;
use std::process::{Command, ExitStatus};
use vm_images::launch::SerialSink;

/// Boots the guest with its console on this terminal (for `--shell`) and
/// waits for QEMU to exit. The KTAP port goes to `ktap.log` in `run_dir`.
pub fn interactive(cfg: &GuestConfig, mut qemu_cmd: Command, run_dir: &Path) -> Result<ExitStatus> {
    // signal=off: Ctrl-C goes to the guest's shell, not to QEMU.
    let console = SerialSink::Stdio { signal: false };
    let ktap = SerialSink::File(run_dir.join("ktap.log"));
    let args = launch_args(cfg, console, Some(ktap)).args();
    // QEMU stays in the terminal's process group (it reads the console from
    // it) but dies with the runner.
    crate::process::die_with_parent(&mut qemu_cmd);
    qemu_cmd
        .args(args)
        .status()
        .context("running QEMU with the console on this terminal")
}
