//! SIGINT and SIGTERM, routed to the event channels of the guests being
//! supervised (a matrix boots several at once).

use super::Event;
use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

/// The channels of the guests being supervised (a matrix boots several at once):
/// where SIGINT and SIGTERM go, each under the id of its [`SignalRoute`].
static SIGNAL_ROUTES: Mutex<Vec<(u64, Sender<Event>)>> = Mutex::new(Vec::new());
/// The id of the next [`SignalRoute`].
static NEXT_ROUTE: AtomicU64 = AtomicU64::new(0);
/// Set once a signal was forwarded to a guest's channel.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether the one signal thread of the process runs.
static SIGNAL_THREAD: Mutex<bool> = Mutex::new(false);

/// Whether SIGINT or SIGTERM interrupted a guest (a matrix then stops).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn routes() -> std::sync::MutexGuard<'static, Vec<(u64, Sender<Event>)>> {
    SIGNAL_ROUTES.lock().unwrap_or_else(|e| e.into_inner())
}

/// While alive, SIGINT and SIGTERM become [`Event::Signal`] on its channel.
///
/// Dropping it stops the routing to its channel; with no channel left, the
/// signals take their default action (the process ends), so an interrupt during
/// a later kernel build or download is not swallowed.
pub struct SignalRoute(u64);

impl Drop for SignalRoute {
    fn drop(&mut self) {
        routes().retain(|(id, _)| *id != self.0);
    }
}

/// Creates the event channel of one guest and routes SIGINT/SIGTERM into it
/// (and into those of the other guests running) until the returned
/// [`SignalRoute`] is dropped.
///
/// signal-hook's handlers, once installed, stay for the life of the process, so
/// one thread (installed on first use) owns them and either forwards a signal to
/// the routed channels or emulates its default action.
pub fn event_channel() -> Result<(Sender<Event>, Receiver<Event>, SignalRoute)> {
    install_signal_thread()?;
    let (tx, rx) = channel();
    let id = NEXT_ROUTE.fetch_add(1, Ordering::SeqCst);
    routes().push((id, tx.clone()));
    Ok((tx, rx, SignalRoute(id)))
}

fn install_signal_thread() -> Result<()> {
    let mut running = SIGNAL_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    if *running {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let senders: Vec<Sender<Event>> =
                    routes().iter().map(|(_, tx)| tx.clone()).collect();
                let delivered = senders
                    .iter()
                    .filter(|tx| tx.send(Event::Signal(sig)).is_ok())
                    .count();
                if delivered > 0 {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                } else {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
            }
        })
        .context("starting the signal thread")?;
    *running = true;
    Ok(())
}
