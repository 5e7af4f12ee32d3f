//! The emulated device's register BAR, reached with pread/pwrite on the VFIO
//! device fd (BAR 0 is trapped, so every access arrives at device-emu).

use protocol::regs::{self, Command, Status};

use crate::vfio::{RegionInfo, VfioDevice, VfioError};

/// Errors from the register interface.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// The region access itself failed.
    #[error("register access")]
    Vfio(#[from] VfioError),
    /// STATUS holds a value the ABI does not define.
    #[error("STATUS register holds unknown value {0:#x}")]
    UnknownStatus(u32),
    /// A command finished with a status other than the expected one.
    #[error(
        "{command:?} on BAR {bar} [{offset:#x}, +{length:#x}) stride {stride}: status {status:?}"
    )]
    Command {
        /// The command.
        command: Command,
        /// Its BAR argument.
        bar: u32,
        /// Its offset argument.
        offset: u64,
        /// Its length argument.
        length: u64,
        /// Its stride argument.
        stride: u64,
        /// The status it ended with.
        status: Status,
    },
}

/// The arguments of one command (the register ABI's own type).
pub use protocol::regs::CommandArgs as Args;

/// What a `Verify` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// `Ok` or `Mismatch` (other statuses are errors).
    pub status: Status,
    /// Words that did not hold their tag.
    pub mismatches: u64,
    /// BAR offset of the first mismatching word.
    pub first_offset: u64,
    /// The value found there.
    pub first_value: u64,
}

/// The register BAR of an open device.
pub struct Regs<'a> {
    dev: &'a VfioDevice,
    region: RegionInfo,
}

impl<'a> Regs<'a> {
    /// The register BAR of `dev`.
    pub fn new(dev: &'a VfioDevice) -> Result<Self, RegsError> {
        let region = dev.region_info(regs::REGS_BAR)?;
        Ok(Regs { dev, region })
    }

    /// The register BAR's region.
    pub fn region(&self) -> &RegionInfo {
        &self.region
    }

    /// Reads a 32-bit register.
    pub fn read32(&self, reg: u64) -> Result<u32, RegsError> {
        let mut b = [0u8; 4];
        self.dev.read(&self.region, reg, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a 32-bit register.
    pub fn write32(&self, reg: u64, value: u32) -> Result<(), RegsError> {
        Ok(self.dev.write(&self.region, reg, &value.to_le_bytes())?)
    }

    /// Reads a 64-bit register as two 4-byte halves, low first (the ABI allows it,
    /// and it does not depend on the host kernel's 8-byte MMIO support).
    pub fn read64(&self, reg: u64) -> Result<u64, RegsError> {
        let lo = self.read32(reg)?;
        let hi = self.read32(reg + 4)?;
        Ok(u64::from(hi) << 32 | u64::from(lo))
    }

    /// Writes a 64-bit register as two 4-byte halves, low first.
    pub fn write64(&self, reg: u64, value: u64) -> Result<(), RegsError> {
        self.write32(reg, value as u32)?;
        self.write32(reg + 4, (value >> 32) as u32)
    }

    /// Runs `command` with `args` and returns the status it ended with.
    pub fn run(&self, command: Command, args: &Args) -> Result<Status, RegsError> {
        self.write32(regs::ARG_BAR, args.bar)?;
        self.write64(regs::ARG_OFFSET, args.offset)?;
        self.write64(regs::ARG_LENGTH, args.length)?;
        self.write64(regs::ARG_STRIDE, args.stride)?;
        self.write64(regs::ARG_SEED, args.seed)?;
        self.write32(regs::COMMAND, command as u32)?;
        let raw = self.read32(regs::STATUS)?;
        Status::from_u32(raw).ok_or(RegsError::UnknownStatus(raw))
    }

    /// Runs `command` and fails unless it ends with `Status::Ok`.
    pub fn run_ok(&self, command: Command, args: &Args) -> Result<(), RegsError> {
        match self.run(command, args)? {
            Status::Ok => Ok(()),
            status => Err(command_error(command, args, status)),
        }
    }

    /// Runs `Verify` and reports its findings; statuses other than `Ok` and
    /// `Mismatch` are errors.
    pub fn verify(&self, args: &Args) -> Result<VerifyReport, RegsError> {
        let status = self.run(Command::Verify, args)?;
        if !matches!(status, Status::Ok | Status::Mismatch) {
            return Err(command_error(Command::Verify, args, status));
        }
        Ok(VerifyReport {
            status,
            mismatches: self.read64(regs::MISMATCHES)?,
            first_offset: self.read64(regs::FIRST_MISMATCH_OFFSET)?,
            first_value: self.read64(regs::FIRST_MISMATCH_VALUE)?,
        })
    }

    /// Releases the host memory behind `length` bytes at `offset` of `bar`.
    pub fn discard(&self, bar: u32, offset: u64, length: u64) -> Result<(), RegsError> {
        let args = Args {
            bar,
            offset,
            length,
            // Discard ignores stride and seed; give valid values anyway.
            stride: 8,
            seed: 0,
        };
        self.run_ok(Command::Discard, &args)
    }
}

fn command_error(command: Command, a: &Args, status: Status) -> RegsError {
    RegsError::Command {
        command,
        bar: a.bar,
        offset: a.offset,
        length: a.length,
        stride: a.stride,
        status,
    }
}
