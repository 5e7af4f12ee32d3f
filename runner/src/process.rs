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
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Makes the child `cmd` starts receive SIGKILL when the runner dies, however
/// it dies (`PR_SET_PDEATHSIG`): no QEMU or device-emu outlives a killed runner.
/// The one place every child of the runner gets this.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl, which is async-signal-safe; it touches no locks or allocations
    // of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
}

/// A child process that a waiter thread reaps; the exit is sent as an event.
#[derive(Debug)]
pub struct Supervised {
    pid: Pid,
    /// Set by the waiter thread once the child is reaped: a reaped child's
    /// process group number may be reused, so it is never signalled again.
    exited: Arc<(Mutex<bool>, Condvar)>,
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
        // setpgid, which is async-signal-safe; it touches no locks or
        // allocations of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                Ok(())
            });
        }
        die_with_parent(cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = Pid::from_raw(child.id() as i32);
        let exited = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&exited);
        std::thread::Builder::new()
            .name(format!("wait-{name}"))
            .spawn(move || {
                let status = child.wait();
                let (lock, cvar) = &*flag;
                *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
                cvar.notify_all();
                if let Ok(status) = status {
                    let _ = events.send(on_exit(status));
                }
            })
            .context("spawning a waiter thread")?;
        Ok(Self { pid, exited })
    }

    /// Sends `sig` to the child's process group (it is the group leader), unless
    /// the child was already reaped.
    pub fn signal(&self, sig: Signal) {
        let (lock, _) = &*self.exited;
        let exited = lock.lock().unwrap_or_else(|e| e.into_inner());
        if !*exited {
            // ESRCH is fine: the child died and is about to be reaped.
            let _ = kill(Pid::from_raw(-self.pid.as_raw()), sig);
        }
    }

    /// Asks the child to end with SIGTERM and waits up to `grace` for it, so it
    /// can clean up (device-emu removes its socket); it is killed after that.
    pub fn terminate(self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        let (lock, cvar) = &*self.exited;
        let exited = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cvar.wait_timeout_while(exited, grace, |exited| !*exited);
        // Dropping `self` kills whatever is left.
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}
