//! The vfio-user socket: created safely, then serving one client at a time,
//! refusing any second client while one is connected.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{shutdown, Shutdown};

use crate::bar_memory::MemoryError;
use crate::device::Device;
use crate::layout::BarLayout;
use crate::session::{Limits, Recorder, Session};
use crate::transport::SocketTransport;
use crate::wire::{flags, Header, Reply, HEADER_SIZE};

/// How long a client that stopped reading our replies may block a send.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused second client gets to send its first header (to which
/// it gets an `EBUSY` reply).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Refusals answered at once; further concurrent connections are closed
/// without a reply, so that a flood cannot pile up threads.
const MAX_REFUSING: usize = 4;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket path exists already (a stale socket, another server, or a
    /// symbolic link, which is never followed).
    #[error("socket path {0} already exists; remove it or choose another path")]
    SocketExists(PathBuf),
    /// The socket's directory is not safe: a symbolic link, not this user's,
    /// or open to the group or others in any way (mode & 0o077 != 0).
    #[error(
        "socket directory {dir} {reason}; use a directory only this user can enter (mode 0700)"
    )]
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding the socket or setting its mode failed.
    #[error("creating the vfio-user socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Setting up the BAR memory failed.
    #[error("setting up the BAR memory")]
    Memory(#[from] MemoryError),
    /// Restoring power-on state for a new client failed.
    #[error("restoring the device's power-on state")]
    PowerOn(#[source] std::io::Error),
    /// Accepting a connection failed; the socket is unusable.
    #[error("accepting a client on {path}")]
    Accept {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The socket file this server created, identified by device and inode so
/// that it is removed only while it is still ours.
#[derive(Clone, Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket unless something else has taken its path.
    pub fn remove_if_ours(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_socket() && m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    log::warn!("removing socket {}: {e}", self.path.display());
                }
            }
            Ok(_) => log::warn!(
                "not removing {}: it is no longer the socket this server created",
                self.path.display()
            ),
            Err(_) => {}
        }
    }
}

/// Refuses `dir` unless it is a real directory (not a symbolic link) owned
/// by this user that no other user can enter, list or write (no permission
/// bit for group or others: `mode & 0o077 == 0`).
///
/// The socket's own mode 0600 already keeps others from connecting, but a
/// directory they can enter lets them watch the socket appear, race its
/// removal or (if writable) pre-empt its path; a 0700 directory (what the
/// runner creates for each run) rules all of that out.
pub fn check_private_dir(dir: &Path) -> Result<(), ServerError> {
    let unsafe_dir = |reason: String| ServerError::UnsafeDirectory {
        dir: dir.to_owned(),
        reason,
    };
    let meta =
        std::fs::symlink_metadata(dir).map_err(|e| unsafe_dir(format!("cannot be read: {e}")))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("is not a directory".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.uid() != me {
        return Err(unsafe_dir(format!(
            "(mode {mode:04o}) is owned by uid {}, not by uid {me}",
            meta.uid()
        )));
    }
    if mode & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {mode:04o}: other users can write to it"
        )));
    }
    if mode & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "has mode {mode:04o}: other users can enter or list it"
        )));
    }
    Ok(())
}

/// Creates the listening socket at `path` with mode 0600, in a private
/// directory, never over an existing path.
fn bind_private(path: &Path) -> Result<(UnixListener, SocketFile), ServerError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    check_private_dir(dir)?;
    // symlink_metadata sees dangling links too; bind(2) would also refuse an
    // existing path (EADDRINUSE) and never follows a link.
    if path.symlink_metadata().is_ok() {
        return Err(ServerError::SocketExists(path.to_owned()));
    }
    let bind_error = |source| ServerError::Bind {
        path: path.to_owned(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => ServerError::SocketExists(path.to_owned()),
        _ => bind_error(e),
    })?;
    // The directory is private, so nobody can reach the socket between bind
    // and chmod; the mode makes it private on its own as well.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    let meta = path.symlink_metadata().map_err(bind_error)?;
    let socket = SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((listener, socket))
}

/// A bound vfio-user socket and the device it serves.
///
/// Once [`EmuServer::bind`] returns, clients can connect. Dropping the server
/// removes the socket file (if it is still the one it created).
pub struct EmuServer {
    listener: UnixListener,
    device: Device,
    socket: SocketFile,
    limits: Limits,
    record: Option<PathBuf>,
}

impl EmuServer {
    /// Creates the device for `layout` and binds the socket at `path`, which
    /// must not exist and whose directory must be private to this user.
    pub fn bind(path: &Path, layout: BarLayout) -> Result<Self, ServerError> {
        let (listener, socket) = bind_private(path)?;
        // From here on, dropping `server` removes the socket.
        let device = Device::new(layout).inspect_err(|_| socket.remove_if_ours())?;
        Ok(Self {
            listener,
            device,
            socket,
            limits: Limits::default(),
            record: None,
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// The socket file (to remove it from a signal handler).
    pub fn socket(&self) -> &SocketFile {
        &self.socket
    }

    /// The device (for inspection between connections).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Changes the per-connection time limits.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Records every message clients send, one file per connection in `dir`.
    pub fn record_to(&mut self, dir: PathBuf) {
        self.record = Some(dir);
    }

    /// Serves clients one after another, each with a freshly powered-on
    /// device; a client connecting while another is served is refused.
    /// Returns only when the socket fails or the device cannot be reset.
    pub fn serve_forever(&mut self) -> Result<Infallible, ServerError> {
        let Self {
            listener,
            device,
            socket,
            limits,
            record,
        } = self;
        let (to_server, from_acceptor) = mpsc::sync_channel::<UnixStream>(0);
        let (done, done_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let acceptor = s.spawn(|| accept_loop(listener, to_server, done_rx, socket.path()));
            let mut clients = 0u64;
            let result = loop {
                let Ok(stream) = from_acceptor.recv() else {
                    break acceptor.join().expect("the acceptor does not panic");
                };
                clients += 1;
                let served = serve(device, stream, *limits, record.as_deref(), clients);
                // The acceptor may be waiting for this before it hands over
                // the next client; it outlives this loop, so sending works.
                let _ = done.send(());
                if let Err(e) = served {
                    break e;
                }
            };
            // Wake the acceptor (accept fails on a shut-down listener) so the
            // scope can end.
            let _ = shutdown(listener.as_raw_fd(), Shutdown::Both);
            Err(result)
        })
    }
}

impl Drop for EmuServer {
    fn drop(&mut self) {
        self.socket.remove_if_ours();
    }
}

/// Serves one client to the end.
fn serve(
    device: &mut Device,
    stream: UnixStream,
    limits: Limits,
    record: Option<&Path>,
    n: u64,
) -> Result<(), ServerError> {
    device.power_on().map_err(ServerError::PowerOn)?;
    log::info!("client {n} connected");
    let transport = match SocketTransport::new(stream, WRITE_TIMEOUT) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("client {n}: setting up the connection: {e}");
            return Ok(());
        }
    };
    let mut session = Session::new(device, transport, limits);
    if let Some(dir) = record {
        let name = format!("conn-{}-{n}.bin", std::process::id());
        match Recorder::create(dir, &name) {
            Ok(r) => session.record_with(r),
            Err(e) => log::warn!("not recording client {n} to {}: {e}", dir.display()),
        }
    }
    let end = session.run();
    log::info!(
        "client {n} gone ({end:?}) after {} messages, {} rejected",
        session.messages,
        session.rejected
    );
    Ok(())
}

/// Accepts clients: hands one to the server at a time, refuses the others.
/// Returns the error that ended it.
///
/// A connection that arrives while the served client has already hung up
/// (QEMU restarting) waits until the server has finished with the old one,
/// rather than being refused: the acceptor keeps a duplicate of the served
/// connection to tell the two cases apart.
fn accept_loop(
    listener: &UnixListener,
    to_server: mpsc::SyncSender<UnixStream>,
    done: mpsc::Receiver<()>,
    path: &Path,
) -> ServerError {
    let accept_error = |source| ServerError::Accept {
        path: path.to_owned(),
        source,
    };
    let mut served: Option<UnixStream> = None;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return accept_error(e),
        };
        while done.try_recv().is_ok() {
            served = None;
        }
        if served.as_ref().is_some_and(hung_up) && done.recv().is_ok() {
            served = None;
        }
        if served.is_some() {
            log::warn!(
                "refusing a second client on {}: another client is connected and only one is served at a time",
                path.display()
            );
            refuse(stream);
            continue;
        }
        match stream.try_clone() {
            Ok(dup) => served = Some(dup),
            Err(e) => {
                log::warn!("dropping a new client: duplicating its socket: {e}");
                continue;
            }
        }
        if to_server.send(stream).is_err() {
            return accept_error(std::io::Error::other("the server stopped"));
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ECONNABORTED | Errno::EINTR)
    )
}

/// Whether the peer of `stream` has closed the connection.
fn hung_up(stream: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    // POLLHUP is reported without being asked for, once the peer is gone.
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

static REFUSING: AtomicUsize = AtomicUsize::new(0);

/// Answers the refused client's first command with `EBUSY`, then closes the
/// connection; in a thread of its own so the served client is not delayed.
fn refuse(stream: UnixStream) {
    if REFUSING.fetch_add(1, Ordering::SeqCst) >= MAX_REFUSING {
        REFUSING.fetch_sub(1, Ordering::SeqCst);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("refuse".into())
        .spawn(move || {
            answer_busy(stream);
            REFUSING.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        REFUSING.fetch_sub(1, Ordering::SeqCst);
    }
}

fn answer_busy(mut stream: UnixStream) {
    let mut head = [0; HEADER_SIZE];
    let read = stream
        .set_read_timeout(Some(REFUSAL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(REFUSAL_TIMEOUT)))
        .and_then(|()| stream.read_exact(&mut head));
    if read.is_err() {
        return;
    }
    let header = Header::parse(&head);
    if header.kind() == flags::TYPE_COMMAND {
        let _ = stream.write_all(&Reply::error(&header, Errno::EBUSY as i32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_peer_is_seen_as_hung_up() {
        let (a, b) = UnixStream::pair().unwrap();
        assert!(!hung_up(&a));
        let dup = a.try_clone().unwrap();
        drop(b);
        assert!(hung_up(&a));
        assert!(hung_up(&dup));
    }
}
