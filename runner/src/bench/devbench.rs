//! device-emu on the host: resident memory when idle, and register round trips
//! over its vfio-user socket with the `vfio_user` crate's client (the same
//! protocol QEMU speaks, without a guest in the way).

use super::memory::{self, Kind};
use crate::session::Event;
use anyhow::{bail, Context, Result};
use protocol::regs;
use std::path::Path;
use std::time::Instant;
use vfio_user::Client;

/// What one device start measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSample {
    /// VmRSS right after the socket listens, KiB.
    pub idle_rss_kib: u64,
    /// Mean round trip of a 4-byte register read, µs.
    pub read_us: f64,
    /// Mean round trip of an 8-byte register write, µs.
    pub write_us: f64,
}

/// Starts `binary` with `bars`, reads its idle memory, then times `accesses`
/// register reads and writes through a vfio-user client.
pub fn measure(binary: &Path, bars: &str, accesses: u32) -> Result<DeviceSample> {
    let dir = crate::kernel_run::private_run_dir("bigbar-bench-")?;
    let socket = dir.path().join("device.sock");
    let (tx, _rx) = std::sync::mpsc::channel::<Event>();
    let dev = crate::device_emu::start(binary, &socket, bars, &dir.path().join("device.log"), tx)?;
    let idle = own_device_rss().context("reading device-emu's memory")?;
    let result = round_trips(&socket, accesses);
    dev.stop();
    let (read_us, write_us) = result?;
    Ok(DeviceSample {
        idle_rss_kib: idle,
        read_us,
        write_us,
    })
}

/// VmRSS of this process's device-emu child.
fn own_device_rss() -> Result<u64> {
    let me = std::process::id();
    let task = format!("/proc/{me}/task");
    for t in std::fs::read_dir(&task).with_context(|| format!("reading {task}"))? {
        let children = std::fs::read_to_string(t?.path().join("children")).unwrap_or_default();
        for pid in children.split_whitespace().filter_map(|w| w.parse().ok()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if memory::classify(&cmdline) == Some(Kind::Device) {
                if let Some(st) = memory::read_status(pid) {
                    return Ok(st.rss_kib);
                }
            }
        }
    }
    bail!("no device-emu child found under /proc/{me}")
}

/// Mean read and write round trips in µs over `n` accesses each.
fn round_trips(socket: &Path, n: u32) -> Result<(f64, f64)> {
    let mut client = Client::new(socket)
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e:?}", socket.display()))?;
    let mut word = [0u8; 4];
    let start = Instant::now();
    for _ in 0..n {
        client
            .region_read(regs::REGS_BAR, regs::MAGIC, &mut word)
            .map_err(|e| anyhow::anyhow!("reading MAGIC: {e:?}"))?;
    }
    let read = start.elapsed().as_secs_f64();
    if u32::from_le_bytes(word) != regs::MAGIC_VALUE {
        bail!("MAGIC read {:#010x}", u32::from_le_bytes(word));
    }
    let start = Instant::now();
    for i in 0..u64::from(n) {
        client
            .region_write(regs::REGS_BAR, regs::SCRATCH, &i.to_le_bytes())
            .map_err(|e| anyhow::anyhow!("writing SCRATCH: {e:?}"))?;
    }
    let write = start.elapsed().as_secs_f64();
    let per = |t: f64| t * 1e6 / f64::from(n.max(1));
    Ok((per(read), per(write)))
}
