//! The `device-emu` binary: serves one emulated device on a vfio-user socket
//! until SIGTERM or SIGINT.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use device_emu::layout::{BarLayout, DEFAULT_SPEC};
use device_emu::server::{EmuServer, SocketFile};
use nix::fcntl::{fcntl, FcntlArg};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Environment variable naming a directory to record every client message in
/// (one file per connection, in the fuzz corpus format of
/// `device_emu::transport`).
const RECORD_ENV: &str = "BIGBAR_DEVICE_RECORD";

/// vfio-user server emulating a PCI device with large memfd-backed BARs.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Path of the vfio-user socket to create (must not exist; its directory
    /// must belong to this user and be closed to others, mode 0700).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// BAR layout: comma-separated INDEX=SIZE[:32][:np][:msix@OFFSET] entries.
    #[arg(long, value_name = "SPEC", default_value = DEFAULT_SPEC)]
    bars: BarLayout,
    /// Log filter (env_logger syntax: error, warn, info, debug, trace, or
    /// module=level lists).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,
    /// Inherited file descriptor to write one byte to (and close) once the
    /// socket accepts connections.
    #[arg(long, value_name = "FD")]
    ready_fd: Option<RawFd>,
}

/// Logs to stderr, each line stamped with the seconds since the device started
/// (the runner keeps this log beside the guest's console, whose kernel clock
/// also counts from its start). A clock of its own rather than env_logger's
/// wall-clock stamps, whose `humantime` feature alone would double the
/// embedded build's dependencies.
fn init_logging(filters: &str) {
    let start = Instant::now();
    env_logger::Builder::new()
        .parse_filters(filters)
        .format(move |out, record| {
            writeln!(
                out,
                "[{:10.3} {:5} {}] {}",
                start.elapsed().as_secs_f64(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .init();
}

fn main() -> Result<()> {
    let args = Args::parse();
    init_logging(&args.log_level);
    let ready = args.ready_fd.map(take_ready_fd).transpose()?;

    // Install the handler before the socket exists, so that no signal can
    // leave it behind; it removes the socket only once we created it.
    let bound: Arc<OnceLock<SocketFile>> = Arc::default();
    spawn_signal_handler(Arc::clone(&bound))?;

    let mut server = EmuServer::bind(&args.socket, args.bars.clone())
        .with_context(|| format!("starting the device with BAR layout {}", args.bars))?;
    bound
        .set(server.socket().clone())
        .expect("the socket is bound once");
    if let Some(dir) = std::env::var_os(RECORD_ENV) {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating the {RECORD_ENV} directory {}", dir.display()))?;
        log::info!("recording client messages to {}", dir.display());
        server.record_to(dir);
    }
    log::info!("BAR layout {}", args.bars);
    eprintln!("device-emu: listening on {}", args.socket.display());
    if let Some(mut ready) = ready {
        ready
            .write_all(b"R")
            .context("writing the readiness byte to --ready-fd")?;
    }
    let error = match server.serve_forever() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(error).context("vfio-user server stopped")
}

/// Takes ownership of the inherited readiness descriptor after checking that it
/// is open.
fn take_ready_fd(fd: RawFd) -> Result<File> {
    if fd < 0 {
        bail!("--ready-fd {fd}: not a file descriptor");
    }
    // SAFETY: F_GETFD only queries descriptor flags; it fails with EBADF if
    // `fd` is not open and has no other effect.
    let flags = unsafe { fcntl(std::os::fd::BorrowedFd::borrow_raw(fd), FcntlArg::F_GETFD) };
    flags.with_context(|| format!("--ready-fd {fd} is not an open file descriptor"))?;
    // SAFETY: `fd` is open (checked above), was inherited for us to use, and
    // nothing else in this process owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Shuts down on SIGTERM or SIGINT: removes the socket and exits with 0.
///
/// The main thread blocks inside `vfio_user::Server::run` (in accept or recv)
/// and that crate offers no way to interrupt it, so the signal thread ends the
/// process itself. Nothing needs flushing: the device state lives in memfds
/// that vanish with the process.
fn spawn_signal_handler(bound: Arc<OnceLock<SocketFile>>) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                log::info!("signal {signal}: shutting down");
                if let Some(socket) = bound.get() {
                    socket.remove_if_ours();
                }
                std::process::exit(0);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
