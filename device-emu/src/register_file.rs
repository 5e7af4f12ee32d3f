//! The register file behind the trapped register BAR 0 (ABI in [`crate::regs`]).
//!
//! Accesses are 4 or 8 bytes, naturally aligned. An 8-byte access is handled as
//! its two 4-byte halves, low half first, so 64-bit registers work either way.
//! Offsets that hold no register read as zero and ignore writes, as do writes to
//! read-only registers.

use crate::bar_memory::BarMemory;
use crate::commands::{self, Args};
use crate::regs::{self, Command, DmaFault, DmaStatus, Status};

/// An access the register BAR does not support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unsupported register BAR access of {len} bytes at offset {offset:#x} (only aligned 4- and 8-byte accesses inside the 4 KiB BAR)")]
pub struct BadAccess {
    /// Offset of the access.
    pub offset: u64,
    /// Length of the access.
    pub len: usize,
}

/// A copy the DMA engine was asked for: the DMA registers when `DmaCopy`
/// was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaJob {
    /// [`regs::DMA_SRC`].
    pub src: u64,
    /// [`regs::DMA_DST`].
    pub dst: u64,
    /// [`regs::DMA_LEN`].
    pub len: u64,
    /// [`regs::DMA_IRQ`].
    pub irq: u32,
}

/// What a register write asks of the rest of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the device must carry out the effect"]
pub enum Effect {
    /// Nothing.
    None,
    /// Raise this (index, vector), then report with [`RegisterFile::irq_raised`].
    RaiseIrq(u32, u32),
    /// Start this copy; report with [`RegisterFile::dma_finished`].
    StartDma(DmaJob),
}

/// Register state; [`RegisterFile::new`] is the reset state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterFile {
    bar_mask: u32,
    args: Args,
    status: Status,
    mismatches: u64,
    first_mismatch_offset: u64,
    first_mismatch_value: u64,
    scratch: u64,
    commands_done: u64,
    irq_index: u32,
    irq_vector: u32,
    dma: DmaJob,
    dma_status: DmaStatus,
    dma_error: DmaFault,
    dma_copies: u64,
}

/// Which half of a 64-bit register a 4-byte access touches.
#[derive(Clone, Copy)]
enum Half {
    Low,
    High,
}

impl Half {
    /// The half a 4-byte aligned access at `offset` touches.
    fn of(offset: u64) -> Self {
        if offset & 4 == 0 {
            Self::Low
        } else {
            Self::High
        }
    }

    fn get(self, value: u64) -> u32 {
        match self {
            Self::Low => value as u32,
            Self::High => (value >> 32) as u32,
        }
    }

    fn set(self, target: &mut u64, value: u32) {
        *target = match self {
            Self::Low => (*target & !0xffff_ffff) | u64::from(value),
            Self::High => (*target & 0xffff_ffff) | (u64::from(value) << 32),
        };
    }
}

impl RegisterFile {
    /// Reset state for a device whose memory BARs are `bar_mask`.
    pub fn new(bar_mask: u32) -> Self {
        Self {
            bar_mask,
            args: Args::default(),
            status: Status::Ok,
            mismatches: 0,
            first_mismatch_offset: 0,
            first_mismatch_value: 0,
            scratch: 0,
            commands_done: 0,
            irq_index: 0,
            irq_vector: 0,
            dma: DmaJob {
                src: 0,
                dst: 0,
                len: 0,
                irq: 0,
            },
            dma_status: DmaStatus::Idle,
            dma_error: DmaFault::None,
            dma_copies: 0,
        }
    }

    /// Records how a `RaiseIrq` went.
    pub fn irq_raised(&mut self, status: Status) {
        self.status = status;
    }

    /// Records the end of a copy: `Done` for `Ok`, else `Error` with the fault.
    pub fn dma_finished(&mut self, result: Result<(), DmaFault>) {
        (self.dma_status, self.dma_error) = match result {
            Ok(()) => (DmaStatus::Done, DmaFault::None),
            Err(fault) => (DmaStatus::Error, fault),
        };
        self.dma_copies = self.dma_copies.wrapping_add(1);
    }

    /// Reads `data.len()` (4 or 8) bytes at `offset`.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), BadAccess> {
        check(offset, data.len())?;
        for (i, half) in data.chunks_exact_mut(4).enumerate() {
            half.copy_from_slice(&self.read32(offset + 4 * i as u64).to_le_bytes());
        }
        Ok(())
    }

    /// Writes 4 or 8 bytes at `offset`; a write to [`regs::COMMAND`] runs a
    /// BAR command on `bars` before returning, and returns what the device
    /// must do for the others.
    pub fn write(
        &mut self,
        offset: u64,
        data: &[u8],
        bars: &[BarMemory],
    ) -> Result<Effect, BadAccess> {
        check(offset, data.len())?;
        let mut effect = Effect::None;
        for (i, half) in data.chunks_exact(4).enumerate() {
            let value = u32::from_le_bytes(half.try_into().expect("4 bytes"));
            // COMMAND is a 32-bit register: at most one half runs a command.
            if let Some(e) = self.write32(offset + 4 * i as u64, value, bars) {
                effect = e;
            }
        }
        Ok(effect)
    }

    /// The value of the 64-bit register at 8-byte aligned `base`, if any.
    fn value64(&self, base: u64) -> Option<u64> {
        Some(match base {
            regs::ARG_OFFSET => self.args.offset,
            regs::ARG_LENGTH => self.args.length,
            regs::ARG_STRIDE => self.args.stride,
            regs::ARG_SEED => self.args.seed,
            regs::SCRATCH => self.scratch,
            regs::MISMATCHES => self.mismatches,
            regs::FIRST_MISMATCH_OFFSET => self.first_mismatch_offset,
            regs::FIRST_MISMATCH_VALUE => self.first_mismatch_value,
            regs::COMMANDS_DONE => self.commands_done,
            regs::DMA_SRC => self.dma.src,
            regs::DMA_DST => self.dma.dst,
            regs::DMA_LEN => self.dma.len,
            regs::DMA_COPIES => self.dma_copies,
            _ => return None,
        })
    }

    /// The writable 64-bit register at 8-byte aligned `base`, if any.
    fn writable64(&mut self, base: u64) -> Option<&mut u64> {
        match base {
            regs::ARG_OFFSET => Some(&mut self.args.offset),
            regs::ARG_LENGTH => Some(&mut self.args.length),
            regs::ARG_STRIDE => Some(&mut self.args.stride),
            regs::ARG_SEED => Some(&mut self.args.seed),
            regs::SCRATCH => Some(&mut self.scratch),
            regs::DMA_SRC => Some(&mut self.dma.src),
            regs::DMA_DST => Some(&mut self.dma.dst),
            regs::DMA_LEN => Some(&mut self.dma.len),
            _ => None,
        }
    }

    fn read32(&self, offset: u64) -> u32 {
        match offset {
            regs::MAGIC => regs::MAGIC_VALUE,
            regs::VERSION => regs::ABI_VERSION,
            regs::BAR_MASK => self.bar_mask,
            regs::ARG_BAR => self.args.bar,
            regs::STATUS => self.status as u32,
            regs::IRQ_INDEX => self.irq_index,
            regs::IRQ_VECTOR => self.irq_vector,
            regs::DMA_IRQ => self.dma.irq,
            regs::DMA_STATUS => self.dma_status as u32,
            regs::DMA_ERROR => self.dma_error as u32,
            // COMMAND is write-only; other offsets are halves of 64-bit
            // registers or reserved.
            _ => self
                .value64(offset & !7)
                .map_or(0, |value| Half::of(offset).get(value)),
        }
    }

    fn write32(&mut self, offset: u64, value: u32, bars: &[BarMemory]) -> Option<Effect> {
        match offset {
            regs::ARG_BAR => self.args.bar = value,
            regs::IRQ_INDEX => self.irq_index = value,
            regs::IRQ_VECTOR => self.irq_vector = value,
            regs::DMA_IRQ => self.dma.irq = value,
            regs::COMMAND => return Some(self.run(value, bars)),
            _ => match self.writable64(offset & !7) {
                Some(reg) => Half::of(offset).set(reg, value),
                None => log::debug!("ignored write of {value:#x} to register offset {offset:#x}"),
            },
        }
        None
    }

    fn run(&mut self, code: u32, bars: &[BarMemory]) -> Effect {
        self.commands_done = self.commands_done.wrapping_add(1);
        match Command::from_u32(code) {
            Some(Command::RaiseIrq) => Effect::RaiseIrq(self.irq_index, self.irq_vector),
            Some(Command::DmaCopy) => self.start_dma(),
            _ => {
                self.run_bar_command(code, bars);
                Effect::None
            }
        }
    }

    /// Accepts a copy unless one is in flight (the engine has one channel).
    fn start_dma(&mut self) -> Effect {
        if self.dma_status == DmaStatus::Busy {
            self.status = Status::Busy;
            return Effect::None;
        }
        self.status = Status::Ok;
        self.dma_status = DmaStatus::Busy;
        self.dma_error = DmaFault::None;
        Effect::StartDma(self.dma)
    }

    fn run_bar_command(&mut self, code: u32, bars: &[BarMemory]) {
        let outcome = commands::execute(code, &self.args, bars);
        self.status = outcome.status;
        if let Some(v) = outcome.verify {
            self.mismatches = v.mismatches;
            (self.first_mismatch_offset, self.first_mismatch_value) = v.first.unwrap_or((0, 0));
        }
    }
}

fn check(offset: u64, len: usize) -> Result<(), BadAccess> {
    let ok = matches!(len, 4 | 8)
        && offset % len as u64 == 0
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= regs::REGS_SIZE);
    if ok {
        Ok(())
    } else {
        Err(BadAccess { offset, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::Command;
    use rstest::rstest;

    fn read(file: &RegisterFile, offset: u64, len: usize) -> u64 {
        let mut b = [0; 8];
        file.read(offset, &mut b[..len]).unwrap();
        u64::from_le_bytes(b)
    }

    fn write(
        file: &mut RegisterFile,
        offset: u64,
        len: usize,
        value: u64,
        bars: &[BarMemory],
    ) -> Effect {
        file.write(offset, &value.to_le_bytes()[..len], bars)
            .unwrap()
    }

    #[test]
    fn identification_registers() {
        let file = RegisterFile::new(0b10110);
        assert_eq!(read(&file, regs::MAGIC, 4), u64::from(regs::MAGIC_VALUE));
        assert_eq!(read(&file, regs::VERSION, 4), u64::from(regs::ABI_VERSION));
        assert_eq!(read(&file, regs::BAR_MASK, 4), 0b10110);
        // An 8-byte read of two 32-bit registers gives both.
        assert_eq!(
            read(&file, regs::MAGIC, 8),
            u64::from(regs::MAGIC_VALUE) | u64::from(regs::ABI_VERSION) << 32
        );
    }

    #[rstest]
    #[case::arg_offset(regs::ARG_OFFSET)]
    #[case::arg_length(regs::ARG_LENGTH)]
    #[case::arg_stride(regs::ARG_STRIDE)]
    #[case::arg_seed(regs::ARG_SEED)]
    #[case::scratch(regs::SCRATCH)]
    #[case::dma_src(regs::DMA_SRC)]
    #[case::dma_dst(regs::DMA_DST)]
    #[case::dma_len(regs::DMA_LEN)]
    fn wide_registers_take_whole_and_half_accesses(#[case] reg: u64) {
        let mut file = RegisterFile::new(0);
        let _ = write(&mut file, reg, 8, 0x1122_3344_5566_7788, &[]);
        assert_eq!(read(&file, reg, 8), 0x1122_3344_5566_7788);
        assert_eq!(read(&file, reg, 4), 0x5566_7788);
        assert_eq!(read(&file, reg + 4, 4), 0x1122_3344);
        let _ = write(&mut file, reg + 4, 4, 0xaabb_ccdd, &[]);
        let _ = write(&mut file, reg, 4, 0x0102_0304, &[]);
        assert_eq!(read(&file, reg, 8), 0xaabb_ccdd_0102_0304);
    }

    #[rstest]
    #[case::magic(regs::MAGIC, 4)]
    #[case::status(regs::STATUS, 4)]
    #[case::mismatches(regs::MISMATCHES, 8)]
    #[case::commands_done(regs::COMMANDS_DONE, 8)]
    #[case::dma_status(regs::DMA_STATUS, 4)]
    #[case::dma_error(regs::DMA_ERROR, 4)]
    #[case::dma_copies(regs::DMA_COPIES, 8)]
    #[case::reserved(0x800, 8)]
    fn read_only_registers_ignore_writes(#[case] reg: u64, #[case] len: usize) {
        let mut file = RegisterFile::new(0);
        let before = read(&file, reg, len);
        let _ = write(&mut file, reg, len, u64::MAX, &[]);
        assert_eq!(read(&file, reg, len), before);
    }

    #[rstest]
    #[case::byte(0, 1)]
    #[case::word(0, 2)]
    #[case::unaligned(2, 4)]
    #[case::unaligned_wide(4, 8)]
    #[case::past_end(4096, 4)]
    #[case::straddles_end(4092, 8)]
    #[case::wraps(u64::MAX - 3, 4)]
    fn bad_accesses_fail(#[case] offset: u64, #[case] len: usize) {
        let mut file = RegisterFile::new(0);
        assert_eq!(
            file.read(offset, &mut vec![0; len]),
            Err(BadAccess { offset, len })
        );
        assert_eq!(
            file.write(offset, &vec![0; len], &[]),
            Err(BadAccess { offset, len })
        );
    }

    #[test]
    fn commands_update_status_results_and_count() {
        let bars = [BarMemory::new(2, 1 << 20).unwrap()];
        let mut file = RegisterFile::new(0b100);
        let _ = write(&mut file, regs::ARG_BAR, 4, 2, &bars);
        let _ = write(&mut file, regs::ARG_LENGTH, 8, 1 << 20, &bars);
        let _ = write(&mut file, regs::ARG_STRIDE, 8, 4096, &bars);
        let _ = write(&mut file, regs::ARG_SEED, 8, 9, &bars);
        let _ = write(&mut file, regs::COMMAND, 4, Command::Fill as u64, &bars);
        assert_eq!(read(&file, regs::STATUS, 4), Status::Ok as u64);
        bars[0].write_at(8192, &[0xee; 8]).unwrap();
        let _ = write(&mut file, regs::COMMAND, 4, Command::Verify as u64, &bars);
        assert_eq!(read(&file, regs::STATUS, 4), Status::Mismatch as u64);
        assert_eq!(read(&file, regs::MISMATCHES, 8), 1);
        assert_eq!(read(&file, regs::FIRST_MISMATCH_OFFSET, 8), 8192);
        assert_eq!(
            read(&file, regs::FIRST_MISMATCH_VALUE, 8),
            0xeeee_eeee_eeee_eeee
        );
        let _ = write(&mut file, regs::COMMAND, 4, 77, &bars);
        assert_eq!(read(&file, regs::STATUS, 4), Status::BadCommand as u64);
        assert_eq!(read(&file, regs::COMMANDS_DONE, 8), 3);
        // COMMAND reads as zero.
        assert_eq!(read(&file, regs::COMMAND, 4), 0);
    }

    #[test]
    fn raise_irq_and_dma_copy_are_effects() {
        let mut file = RegisterFile::new(0);
        let _ = write(&mut file, regs::IRQ_INDEX, 4, 2, &[]);
        let _ = write(&mut file, regs::IRQ_VECTOR, 4, 5, &[]);
        let code = Command::RaiseIrq as u64;
        assert_eq!(
            write(&mut file, regs::COMMAND, 4, code, &[]),
            Effect::RaiseIrq(2, 5)
        );
        file.irq_raised(Status::IrqUnset);
        assert_eq!(read(&file, regs::STATUS, 4), Status::IrqUnset as u64);

        let _ = write(&mut file, regs::DMA_SRC, 8, 0x1000, &[]);
        let _ = write(&mut file, regs::DMA_DST, 8, 0x2000, &[]);
        let _ = write(&mut file, regs::DMA_LEN, 8, 64, &[]);
        let _ = write(
            &mut file,
            regs::DMA_IRQ,
            4,
            u64::from(regs::dma_irq(2, 1)),
            &[],
        );
        let code = Command::DmaCopy as u64;
        let job = DmaJob {
            src: 0x1000,
            dst: 0x2000,
            len: 64,
            irq: regs::dma_irq(2, 1),
        };
        assert_eq!(
            write(&mut file, regs::COMMAND, 4, code, &[]),
            Effect::StartDma(job)
        );
        assert_eq!(read(&file, regs::DMA_STATUS, 4), DmaStatus::Busy as u64);
        // A second copy while the first runs is refused.
        assert_eq!(write(&mut file, regs::COMMAND, 4, code, &[]), Effect::None);
        assert_eq!(read(&file, regs::STATUS, 4), Status::Busy as u64);
        file.dma_finished(Err(DmaFault::Unmapped));
        assert_eq!(read(&file, regs::DMA_STATUS, 4), DmaStatus::Error as u64);
        assert_eq!(read(&file, regs::DMA_ERROR, 4), DmaFault::Unmapped as u64);
        assert_eq!(read(&file, regs::DMA_COPIES, 8), 1);
        assert_eq!(read(&file, regs::COMMANDS_DONE, 8), 3);
    }
}
