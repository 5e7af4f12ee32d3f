//! Child processes that never outlive the runner.
//!
//! Each child is put in its own process group (so a Ctrl-C on the terminal
//! reaches only the runner, which then stops the children in order and reports
//! it) and gets `PR_SET_PDEATHSIG` (so even a runner killed with SIGKILL takes
//! its children with it). A [`Supervised`] handle kills its child on drop.

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc::Sender;

/// A child process that a waiter thread reaps; the exit is sent as an event.
#[derive(Debug)]
pub struct Supervised {
    pid: Pid,
}

impl Supervised {
    /// Spawns `cmd` as a supervised child. When it exits, `on_exit(status)` is
    /// sent on `events`.
    pub fn spawn<E: Send + 'static>(
        name: &'static str,
        cmd: &mut Command,
        events: Sender<E>,
        on_exit: impl FnOnce(ExitStatus) -> E + Send + 'static,
    ) -> Result<Self> {
        // SAFETY: the closure runs in the forked child before exec and calls only
        // async-signal-safe functions (setpgid, prctl); it touches no locks or
        // allocations of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = Pid::from_raw(child.id() as i32);
        std::thread::Builder::new()
            .name(format!("wait-{name}"))
            .spawn(move || {
                if let Ok(status) = child.wait() {
                    let _ = events.send(on_exit(status));
                }
            })
            .context("spawning a waiter thread")?;
        Ok(Self { pid })
    }

    /// Sends `sig` to the child's process group (it is the group leader).
    pub fn signal(&self, sig: Signal) {
        // ESRCH (already gone) is fine: the waiter thread has reaped it.
        let _ = kill(Pid::from_raw(-self.pid.as_raw()), sig);
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}
