//! Running the runner as a child: its stderr lines stamped on arrival, and the
//! memory of its QEMU and device-emu children sampled while it runs.

use super::memory::{self, Peak};
use super::timeline::Stamped;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Interval between memory samples. VmHWM is the kernel's own high-water mark,
/// so a sample only misses growth in the last interval before a process exits.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// What one runner child did.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Wall time from spawn to exit, seconds.
    pub seconds: f64,
    /// Its stderr lines with their arrival times.
    pub lines: Vec<Stamped>,
    /// Peak memory of its QEMU and device-emu children.
    pub peak: Peak,
}

/// Runs the runner binary with `args` (plus `-v` and `--out out`), saving its
/// stderr to `out/runner.log`.
pub fn run_runner(args: &[String], out: &Path) -> Result<Finished> {
    let exe = std::env::current_exe().context("finding the runner's own binary")?;
    run(Command::new(exe), args, out)
}

/// Runs `cmd` (the runner, or a command that ends up running it) with the
/// runner's `args` plus `-v` and `--out out`, saving its stderr to
/// `out/runner.log`.
pub fn run(mut cmd: Command, args: &[String], out: &Path) -> Result<Finished> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    cmd.args(args)
        .arg("-v")
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut log = File::create(out.join("runner.log"))
        .with_context(|| format!("creating {}", out.join("runner.log").display()))?;
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let stderr = child.stderr.take().context("the runner's stderr")?;
    let (stop_tx, stop_rx) = channel::<()>();
    let sampler = std::thread::spawn(move || {
        let mut peak = Peak::default();
        loop {
            memory::sample_children(pid, &mut peak);
            match stop_rx.recv_timeout(SAMPLE_EVERY) {
                Err(RecvTimeoutError::Timeout) => continue,
                _ => return peak,
            }
        }
    });
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
        let at = start.elapsed().as_secs_f64();
        let _ = log.write_all(&buf);
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        buf.clear();
        lines.push(Stamped { at, line });
    }
    let status = child.wait().context("waiting for the runner")?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the memory sampler panicked"))?;
    Ok(Finished {
        code: status.code(),
        seconds,
        lines,
        peak,
    })
}
