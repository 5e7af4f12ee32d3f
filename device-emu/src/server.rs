//! The vfio-user socket: binds it, then serves one client after another.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use crate::bar_memory::MemoryError;
use crate::device::Device;
use crate::layout::BarLayout;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket path exists already (a stale socket or another server).
    #[error("socket path {0} already exists; remove it or choose another path")]
    SocketExists(PathBuf),
    /// Binding the socket failed.
    #[error("binding the vfio-user socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: vfio_user::Error,
    },
    /// Setting up the BAR memory failed.
    #[error("setting up the BAR memory")]
    Memory(#[from] MemoryError),
    /// Restoring power-on state for a new client failed.
    #[error("restoring the device's power-on state")]
    PowerOn(#[source] std::io::Error),
    /// A connection failed (the client is gone; the next one can be served).
    #[error("serving a client on {path}")]
    Connection {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: vfio_user::Error,
    },
    /// Accepting a connection failed; the socket is unusable.
    #[error("accepting a client on {path}")]
    Accept {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: vfio_user::Error,
    },
}

/// A bound vfio-user socket and the device it serves.
///
/// Once [`EmuServer::bind`] returns, clients can connect (they queue until
/// served). Dropping the server removes the socket file.
pub struct EmuServer {
    server: vfio_user::Server,
    device: Device,
    path: PathBuf,
}

impl EmuServer {
    /// Creates the device for `layout` and binds the socket at `path`, which
    /// must not exist.
    pub fn bind(path: &Path, layout: BarLayout) -> Result<Self, ServerError> {
        if path.exists() || path.symlink_metadata().is_ok() {
            return Err(ServerError::SocketExists(path.to_owned()));
        }
        let device = Device::new(layout)?;
        // Resettable: the client may send DEVICE_RESET (see `Device::reset_state`).
        let server = vfio_user::Server::new(path, true, device.irqs(), device.regions()).map_err(
            |source| ServerError::Bind {
                path: path.to_owned(),
                source,
            },
        )?;
        Ok(Self {
            server,
            device,
            path: path.to_owned(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device (for inspection between connections).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Waits for a client, gives it a freshly powered-on device and serves it
    /// until it disconnects.
    pub fn serve_one(&mut self) -> Result<(), ServerError> {
        self.device.power_on().map_err(ServerError::PowerOn)?;
        log::info!("waiting for a client on {}", self.path.display());
        self.server
            .run(&mut self.device)
            .map_err(|source| match source {
                vfio_user::Error::SocketAccept(_) => ServerError::Accept {
                    path: self.path.clone(),
                    source,
                },
                source => ServerError::Connection {
                    path: self.path.clone(),
                    source,
                },
            })?;
        log::info!("client disconnected");
        Ok(())
    }

    /// Serves clients one after another. Returns only when the socket itself
    /// fails; a connection that ends in an error is logged and the next client
    /// is served.
    pub fn serve_forever(&mut self) -> Result<Infallible, ServerError> {
        loop {
            match self.serve_one() {
                Ok(()) => {}
                Err(e @ ServerError::Connection { .. }) => {
                    log::warn!("{}", crate::error_chain(&e));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
