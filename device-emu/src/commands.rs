//! Execution of the register BAR's commands (see [`crate::regs`]) on the BAR
//! memory: argument checks, then `Fill`, `Verify` or `Discard`.

use crate::bar_memory::{BarMemory, VerifyOutcome};
use crate::regs::{Command, Status};

/// Granularity of `Discard` (a host page: a hole cannot be smaller).
pub const DISCARD_ALIGN: u64 = 4096;
/// Size and alignment of a tagged word.
pub const WORD: u64 = 8;

/// The argument registers at the time of the command.
pub use crate::regs::CommandArgs as Args;

/// What a command leaves in the status and result registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The new [`crate::regs::STATUS`].
    pub status: Status,
    /// The `Verify` result; `None` leaves the result registers as they were.
    pub verify: Option<VerifyOutcome>,
}

impl CommandOutcome {
    fn status(status: Status) -> Self {
        Self {
            status,
            verify: None,
        }
    }
}

/// Runs the BAR command whose code was written to [`crate::regs::COMMAND`]
/// (the register file hands `RaiseIrq` and `DmaCopy` to the device; here they
/// are unknown codes).
pub fn execute(code: u32, args: &Args, bars: &[BarMemory]) -> CommandOutcome {
    let bar_command = Command::from_u32(code)
        .filter(|c| matches!(c, Command::Fill | Command::Verify | Command::Discard));
    let Some(command) = bar_command else {
        log::warn!("unknown command code {code}");
        return CommandOutcome::status(Status::BadCommand);
    };
    let Some(bar) = bars.iter().find(|b| u32::from(b.index()) == args.bar) else {
        log::warn!("{command:?}: BAR {} is not a memory BAR", args.bar);
        return CommandOutcome::status(Status::BadBar);
    };
    if let Err(why) = check_range(command, args, bar.size()) {
        log::warn!("{command:?} on BAR {}: bad range {args:?}: {why}", args.bar);
        return CommandOutcome::status(Status::BadRange);
    }
    let result = match command {
        Command::Fill => bar
            .fill(args.offset, args.length, args.stride, args.seed)
            .map(|()| CommandOutcome::status(Status::Ok)),
        Command::Verify => bar
            .verify(args.offset, args.length, args.stride, args.seed)
            .map(|v| CommandOutcome {
                status: if v.mismatches == 0 {
                    Status::Ok
                } else {
                    Status::Mismatch
                },
                verify: Some(v),
            }),
        Command::Discard => bar
            .discard(args.offset, args.length)
            .map(|()| CommandOutcome::status(Status::Ok)),
        Command::RaiseIrq | Command::DmaCopy => unreachable!("filtered out above"),
    };
    log::debug!("{command:?} {args:?}: {result:?}");
    result.unwrap_or_else(|e| {
        log::error!("{command:?} on BAR {} failed: {e}", args.bar);
        CommandOutcome::status(Status::HostError)
    })
}

/// Checks offset, length and stride against the command's alignment rules and
/// the BAR size, without overflowing.
fn check_range(command: Command, args: &Args, bar_size: u64) -> Result<(), &'static str> {
    let align = match command {
        Command::Fill | Command::Verify => {
            if args.stride < WORD || args.stride % WORD != 0 {
                return Err("stride is not a non-zero multiple of 8");
            }
            WORD
        }
        Command::Discard => DISCARD_ALIGN,
        Command::RaiseIrq | Command::DmaCopy => return Err("not a BAR command"),
    };
    if args.offset % align != 0 || args.length % align != 0 {
        return Err("offset or length unaligned");
    }
    match args.offset.checked_add(args.length) {
        Some(end) if end <= bar_size => Ok(()),
        _ => Err("range ends past the BAR"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const SIZE: u64 = 1 << 20;

    fn args(bar: u32, offset: u64, length: u64, stride: u64) -> Args {
        Args {
            bar,
            offset,
            length,
            stride,
            seed: 5,
        }
    }

    #[rstest]
    #[case::unknown_command(0, args(1, 0, 8, 8), Status::BadCommand)]
    #[case::raise_irq_is_not_a_bar_command(4, args(1, 0, 8, 8), Status::BadCommand)]
    #[case::dma_copy_is_not_a_bar_command(5, args(1, 0, 8, 8), Status::BadCommand)]
    #[case::register_bar(1, args(0, 0, 8, 8), Status::BadBar)]
    #[case::absent_bar(1, args(3, 0, 8, 8), Status::BadBar)]
    #[case::huge_bar_index(1, args(u32::MAX, 0, 8, 8), Status::BadBar)]
    #[case::zero_stride(1, args(1, 0, 8, 0), Status::BadRange)]
    #[case::odd_stride(2, args(1, 0, 8, 12), Status::BadRange)]
    #[case::unaligned_offset(1, args(1, 4, 8, 8), Status::BadRange)]
    #[case::unaligned_length(1, args(1, 0, 12, 8), Status::BadRange)]
    #[case::past_end(1, args(1, SIZE - 8, 16, 8), Status::BadRange)]
    #[case::offset_past_end(2, args(1, SIZE, 8, 8), Status::BadRange)]
    #[case::overflow(1, args(1, u64::MAX - 7, 16, 8), Status::BadRange)]
    #[case::discard_unaligned(3, args(1, 8, 4096, 0), Status::BadRange)]
    #[case::discard_overflow(3, args(1, 4096, u64::MAX - 4095, 0), Status::BadRange)]
    #[case::fill_whole(1, args(1, 0, SIZE, 8), Status::Ok)]
    #[case::empty(2, args(1, SIZE, 0, 8), Status::Ok)]
    #[case::discard_whole(3, args(1, 0, SIZE, 0), Status::Ok)]
    fn statuses(#[case] code: u32, #[case] args: Args, #[case] status: Status) {
        let bars = [BarMemory::new(1, SIZE).unwrap()];
        assert_eq!(execute(code, &args, &bars).status, status);
    }

    #[test]
    fn verify_after_discard_reports_zeros() {
        let bars = [BarMemory::new(1, SIZE).unwrap()];
        let a = args(1, 0, SIZE, 64);
        assert_eq!(execute(Command::Fill as u32, &a, &bars).status, Status::Ok);
        assert_eq!(
            execute(Command::Verify as u32, &a, &bars).status,
            Status::Ok
        );
        let d = args(1, 8192, 4096, 0);
        assert_eq!(
            execute(Command::Discard as u32, &d, &bars).status,
            Status::Ok
        );
        let outcome = execute(Command::Verify as u32, &a, &bars);
        assert_eq!(outcome.status, Status::Mismatch);
        let v = outcome.verify.unwrap();
        assert_eq!(v.mismatches, 4096 / 64);
        assert_eq!(v.first, Some((8192, 0)));
    }
}
