//! Starting `device-emu` and waiting until its socket accepts connections.

use crate::process::Supervised;
use crate::session::Event;
use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;

/// The file descriptor number the child sees its readiness pipe as.
const READY_FD: i32 = 3;
/// How long the server may take to start listening (it only creates memfds).
const READY_TIMEOUT_MS: u16 = 30_000;

/// How long a device server may take to exit after SIGTERM.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A running device server.
#[derive(Debug)]
pub struct Device {
    /// The supervised process (killed when dropped).
    process: Supervised,
}

impl Device {
    /// Asks the server to shut down cleanly (it removes its socket and exits),
    /// and kills it if it has not within a few seconds.
    pub fn stop(self) {
        self.process.terminate(STOP_GRACE);
    }
}

/// Starts `binary` serving `bars` on `socket`, logging to `log`, and returns
/// once the socket is listening.
pub fn start(
    binary: &Path,
    socket: &Path,
    bars: &str,
    log: &Path,
    events: Sender<Event>,
) -> Result<Device> {
    let (ready_r, ready_w) = nix::unistd::pipe().context("creating the readiness pipe")?;
    let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(binary);
    cmd.arg("--socket")
        .arg(socket)
        .args(["--bars", bars, "--ready-fd", &READY_FD.to_string()])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let write_raw = ready_w.as_raw_fd();
    let hook = move || {
        // SAFETY: dup2 on two fd numbers; `write_raw` is open in the child
        // (inherited from the parent), and dup2 is async-signal-safe.
        if unsafe { nix::libc::dup2(write_raw, READY_FD) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec and only calls dup2;
    // it takes no locks and allocates nothing.
    unsafe {
        cmd.pre_exec(hook);
    }
    let sock = socket.to_path_buf();
    let process = Supervised::spawn("device-emu", &mut cmd, events, move |s| {
        Event::DeviceExited(sock, s)
    })?;
    // Only the child may hold the write end now, so its exit reads as EOF.
    drop(ready_w);
    wait_ready(ready_r, log)?;
    Ok(Device { process })
}

/// Waits for the one byte device-emu writes once it listens; EOF means it died.
fn wait_ready(ready: OwnedFd, log: &Path) -> Result<()> {
    let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
    let n =
        poll(&mut fds, PollTimeout::from(READY_TIMEOUT_MS)).context("waiting for device-emu")?;
    if n == 0 {
        bail!(
            "device-emu did not start listening within {} s; log: {}",
            READY_TIMEOUT_MS / 1000,
            log.display()
        );
    }
    let mut byte = [0u8; 1];
    let got = File::from(ready).read(&mut byte).unwrap_or(0);
    if got == 0 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!(
            "device-emu exited before it was ready:\n{}",
            tail(&text, 20)
        );
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
