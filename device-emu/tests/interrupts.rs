//! Interrupts over a real socket: the device raises MSI and MSI-X vectors
//! through the client's eventfds, `DATA_NONE | ACTION_TRIGGER` signals them,
//! and MSI-X masking (advertised as `VFIO_IRQ_INFO_MASKABLE`) holds a
//! trigger pending, in the PBA, until the vector is unmasked.

mod common;

use std::os::fd::{AsFd, AsRawFd};

use common::*;
use device_emu::layout::BarLayout;
use device_emu::regs::{self, Command, Status};
use nix::sys::eventfd::{EfdFlags, EventFd};
use rstest::rstest;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_MASKABLE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
    VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX,
};
use vfio_user::Client;

const M: u64 = 1 << 20;
/// Where BAR 1's PBA is in the default layout (table at 2 MiB).
const PBA: u64 = 2 * M + 2048;

/// A non-blocking eventfd registered as the trigger of `index` `vector`.
fn install(client: &mut Client, index: u32, vector: u32) -> EventFd {
    let efd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK).unwrap();
    let flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
    client
        .set_irqs(index, flags, vector, 1, &[efd.as_fd().as_raw_fd()])
        .unwrap();
    efd
}

/// The eventfd's counter (reading resets it); 0 when nothing was signalled.
fn signals(efd: &EventFd) -> u64 {
    efd.read().unwrap_or(0)
}

/// Asks the device to raise `index` `vector`; returns the command status.
fn raise(client: &mut Client, index: u32, vector: u32) -> Status {
    write32(client, REGS, regs::IRQ_INDEX, index);
    write32(client, REGS, regs::IRQ_VECTOR, vector);
    write32(client, REGS, regs::COMMAND, Command::RaiseIrq as u32);
    Status::from_u32(read32(client, REGS, regs::STATUS)).unwrap()
}

fn none(client: &mut Client, action: u32, index: u32, vector: u32) {
    let flags = VFIO_IRQ_SET_DATA_NONE | action;
    client.set_irqs(index, flags, vector, 1, &[]).unwrap();
}

#[rstest]
#[case::msix_first(VFIO_PCI_MSIX_IRQ_INDEX, 0)]
#[case::msix_last(VFIO_PCI_MSIX_IRQ_INDEX, 7)]
#[case::msi(VFIO_PCI_MSI_IRQ_INDEX, 0)]
fn the_device_raises_a_vector_through_its_eventfd(#[case] index: u32, #[case] vector: u32) {
    let running = Running::start(BarLayout::default());
    let mut client = running.client();
    assert_eq!(raise(&mut client, index, vector), Status::IrqUnset);
    let efd = install(&mut client, index, vector);
    assert_eq!(raise(&mut client, index, vector), Status::Ok);
    assert_eq!(signals(&efd), 1);
    assert_eq!(raise(&mut client, index, vector), Status::Ok);
    assert_eq!(raise(&mut client, index, vector), Status::Ok);
    assert_eq!(signals(&efd), 2);
    assert_eq!(raise(&mut client, index, 8), Status::BadIrq);
}

/// `DATA_NONE | ACTION_TRIGGER` on an installed eventfd signals it (it used
/// to be answered OK and do nothing).
#[test]
fn data_none_trigger_signals_the_installed_eventfd() {
    let running = Running::start(BarLayout::default());
    let mut client = running.client();
    let efd = install(&mut client, VFIO_PCI_MSIX_IRQ_INDEX, 2);
    let other = install(&mut client, VFIO_PCI_MSIX_IRQ_INDEX, 3);
    none(
        &mut client,
        VFIO_IRQ_SET_ACTION_TRIGGER,
        VFIO_PCI_MSIX_IRQ_INDEX,
        2,
    );
    assert_eq!(signals(&efd), 1);
    assert_eq!(signals(&other), 0, "only the addressed vector");
}

#[test]
fn a_masked_msix_vector_is_held_pending_until_unmasked() {
    let running = Running::start(BarLayout::default());
    let mut client = running.client();
    let info = client.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap();
    assert_ne!(info.flags & VFIO_IRQ_INFO_MASKABLE, 0, "MSI-X is maskable");
    let msi = client.get_irq_info(VFIO_PCI_MSI_IRQ_INDEX).unwrap();
    assert_eq!(msi.flags & VFIO_IRQ_INFO_MASKABLE, 0);

    let efd = install(&mut client, VFIO_PCI_MSIX_IRQ_INDEX, 5);
    none(
        &mut client,
        VFIO_IRQ_SET_ACTION_MASK,
        VFIO_PCI_MSIX_IRQ_INDEX,
        5,
    );
    assert_eq!(raise(&mut client, VFIO_PCI_MSIX_IRQ_INDEX, 5), Status::Ok);
    none(
        &mut client,
        VFIO_IRQ_SET_ACTION_TRIGGER,
        VFIO_PCI_MSIX_IRQ_INDEX,
        5,
    );
    assert_eq!(signals(&efd), 0, "masked: nothing delivered");
    assert_eq!(read32(&mut client, 1, PBA), 1 << 5, "pending in the PBA");

    none(
        &mut client,
        VFIO_IRQ_SET_ACTION_UNMASK,
        VFIO_PCI_MSIX_IRQ_INDEX,
        5,
    );
    assert_eq!(signals(&efd), 1, "delivered once on unmask");
    assert_eq!(read32(&mut client, 1, PBA), 0);
    assert_eq!(raise(&mut client, VFIO_PCI_MSIX_IRQ_INDEX, 5), Status::Ok);
    assert_eq!(signals(&efd), 1, "unmasked again");
}
