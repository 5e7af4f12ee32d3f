//! Interrupt state: the eventfds a client registered with `SET_IRQS`, which
//! vectors it masked, and which triggers are held pending behind a mask.
//!
//! The device raises a vector by writing 1 to its trigger eventfd, as the
//! kernel's vfio-pci does. A trigger of a masked vector is held pending and
//! delivered when the vector is unmasked (the PCI rule for MSI-X's Pending
//! Bit Array). Only indices whose `GET_IRQ_INFO` reports
//! `VFIO_IRQ_INFO_MASKABLE` accept masking ([`Interrupts::maskable`]), so
//! what the device advertises and what it accepts cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One vector of one interrupt index: (VFIO index, vector).
pub type Vector = (u32, u32);

/// What raising a vector did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Its eventfd was signalled.
    Signalled,
    /// It is masked: the trigger is pending until it is unmasked.
    Pending,
    /// No eventfd is registered for it: the trigger is lost.
    NoEventfd,
}

/// Eventfds, masks and pending triggers of every interrupt index.
#[derive(Debug, Default)]
pub struct Interrupts {
    triggers: BTreeMap<Vector, File>,
    masked: BTreeSet<Vector>,
    pending: BTreeSet<Vector>,
}

/// The vectors a `SET_IRQS` addresses: `count` 0 means all of the index.
fn covered(index: u32, start: u32, count: u32) -> impl Fn(&Vector) -> bool {
    move |&(i, v)| i == index && (count == 0 || (v >= start && v - start < count))
}

impl Interrupts {
    /// Whether masking `index` is supported: INTx and MSI-X (MSI here has no
    /// per-vector mask bits, error and request interrupts are not maskable
    /// in vfio-pci either).
    pub fn maskable(index: u32) -> bool {
        use vfio_bindings::bindings::vfio::{VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX};
        index == VFIO_PCI_INTX_IRQ_INDEX || index == VFIO_PCI_MSIX_IRQ_INDEX
    }

    /// Number of registered trigger eventfds.
    pub fn eventfds(&self) -> usize {
        self.triggers.len()
    }

    /// Whether `vector` has a trigger held behind its mask.
    pub fn is_pending(&self, vector: Vector) -> bool {
        self.pending.contains(&vector)
    }

    /// Replaces the trigger eventfds of vectors `start..` of `index` with
    /// `fds`; without descriptors, the vectors' eventfds are removed.
    pub fn set_eventfds(&mut self, index: u32, start: u32, count: u32, fds: Vec<File>) {
        let covered = covered(index, start, count);
        self.triggers.retain(|v, _| !covered(v));
        for (vector, fd) in (start..).zip(fds) {
            self.triggers.insert((index, vector), fd);
        }
    }

    /// Disables every vector of `index` (`SET_IRQS` with `DATA_NONE`,
    /// `ACTION_TRIGGER` and a count of 0): eventfds, masks and pending
    /// triggers go.
    pub fn disable(&mut self, index: u32) {
        let covered = covered(index, 0, 0);
        self.triggers.retain(|v, _| !covered(v));
        self.masked.retain(|v| !covered(v));
        self.pending.retain(|v| !covered(v));
    }

    /// Raises `vector`: signals it, or holds it pending while it is masked.
    pub fn trigger(&mut self, vector: Vector) -> io::Result<Delivery> {
        if self.masked.contains(&vector) {
            self.pending.insert(vector);
            return Ok(Delivery::Pending);
        }
        match self.triggers.get(&vector) {
            Some(fd) => signal(fd).map(|()| Delivery::Signalled),
            None => Ok(Delivery::NoEventfd),
        }
    }

    /// Masks vectors `start..start + count` of `index`.
    pub fn mask(&mut self, index: u32, start: u32, count: u32) {
        self.masked
            .extend((start..start + count).map(|v| (index, v)));
    }

    /// Unmasks vectors `start..start + count` of `index`, delivering the
    /// triggers they held.
    pub fn unmask(&mut self, index: u32, start: u32, count: u32) -> io::Result<()> {
        for vector in (start..start + count).map(|v| (index, v)) {
            self.masked.remove(&vector);
            if self.pending.remove(&vector) {
                self.trigger(vector)?;
            }
        }
        Ok(())
    }

    /// Drops every eventfd, mask and pending trigger (a new client).
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Adds 1 to an eventfd's counter.
///
/// The client may have handed over a blocking eventfd whose counter is at
/// its maximum, where a write would block the server for good; such an
/// eventfd is not writable, the signal is dropped (the counter already says
/// "interrupt") and logged.
fn signal(fd: &File) -> io::Result<()> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    let ready = poll(&mut fds, PollTimeout::ZERO)?;
    if ready == 0 {
        log::warn!("interrupt eventfd is full; signal dropped");
        return Ok(());
    }
    let mut writer = fd;
    writer.write_all(&1u64.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use rstest::rstest;

    const MSIX: u32 = 2;

    fn eventfd() -> (File, EventFd) {
        let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
        let dup = File::from(efd.as_fd().try_clone_to_owned().unwrap());
        (dup, efd)
    }

    fn count(efd: &EventFd) -> u64 {
        efd.read().unwrap_or(0)
    }

    #[rstest]
    #[case::unmasked(false, Delivery::Signalled, 1)]
    #[case::masked(true, Delivery::Pending, 0)]
    fn trigger_signals_unless_masked(
        #[case] masked: bool,
        #[case] delivery: Delivery,
        #[case] signals: u64,
    ) {
        let mut irqs = Interrupts::default();
        let (fd, efd) = eventfd();
        irqs.set_eventfds(MSIX, 3, 1, vec![fd]);
        if masked {
            irqs.mask(MSIX, 3, 1);
        }
        assert_eq!(irqs.trigger((MSIX, 3)).unwrap(), delivery);
        assert_eq!(count(&efd), signals);
        assert_eq!(irqs.is_pending((MSIX, 3)), masked);
    }

    #[test]
    fn unmask_delivers_what_the_mask_held_once() {
        let mut irqs = Interrupts::default();
        let (fd, efd) = eventfd();
        irqs.set_eventfds(MSIX, 0, 1, vec![fd]);
        irqs.mask(MSIX, 0, 1);
        irqs.trigger((MSIX, 0)).unwrap();
        irqs.trigger((MSIX, 0)).unwrap();
        assert_eq!(count(&efd), 0);
        irqs.unmask(MSIX, 0, 1).unwrap();
        assert_eq!(count(&efd), 1, "pending is one bit, not a counter");
        irqs.unmask(MSIX, 0, 1).unwrap();
        assert_eq!(count(&efd), 0);
    }

    #[test]
    fn no_eventfd_and_disable() {
        let mut irqs = Interrupts::default();
        assert_eq!(irqs.trigger((MSIX, 1)).unwrap(), Delivery::NoEventfd);
        let (fd, _efd) = eventfd();
        irqs.set_eventfds(MSIX, 1, 1, vec![fd]);
        irqs.mask(MSIX, 1, 1);
        irqs.trigger((MSIX, 1)).unwrap();
        irqs.disable(MSIX);
        assert_eq!(irqs.eventfds(), 0);
        assert!(!irqs.is_pending((MSIX, 1)));
        assert_eq!(irqs.trigger((MSIX, 1)).unwrap(), Delivery::NoEventfd);
    }

    #[test]
    fn a_full_blocking_eventfd_does_not_block() {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::empty()).unwrap();
        efd.write(u64::MAX - 1).unwrap();
        let fd = File::from(efd.as_fd().try_clone_to_owned().unwrap());
        signal(&fd).unwrap();
    }
}
