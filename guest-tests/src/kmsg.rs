//! Watching the kernel log (`/dev/kmsg`) for an oops while a test's child runs.
//!
//! A test that oopses the kernel often leaves its child stuck in the kernel, where
//! no signal reaches it: waiting out the test's deadline and the reaping grace then
//! costs seconds per oops for nothing, since the kernel has already said what
//! happened. The parent reads the log as the child runs and, once an oops report
//! appears, gives the child a short grace before it concludes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The starts of the messages that open a kernel oops report (the first line of
/// what `die()`, `page_fault_oops()`, `BUG()` and the GP handler print).
const OOPS_STARTS: [&str; 5] = [
    "Oops:",
    "BUG: ",
    "general protection fault",
    "kernel BUG at",
    "Unable to handle kernel",
];

/// Whether a kernel log message starts an oops report.
pub fn is_oops(message: &str) -> bool {
    OOPS_STARTS.iter().any(|s| message.starts_with(s))
}

/// The message of one `/dev/kmsg` record (`prio,seq,usec,flags[,...];message`,
/// then continuation lines that start with a space), without its header.
pub fn record_message(record: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(record).ok()?;
    let (_, rest) = text.split_once(';')?;
    Some(rest.lines().next().unwrap_or("").trim_end())
}

/// The kernel log, opened at its end: only records written after [`KernelLog::open`]
/// are read.
pub struct KernelLog {
    file: File,
}

impl KernelLog {
    /// Opens `path` (`/dev/kmsg`) for non-blocking reads from its end.
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Self { file })
    }

    /// The descriptor to poll: readable when a record arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Reads every record that arrived and returns the first oops line among them.
    pub fn next_oops(&mut self) -> io::Result<Option<String>> {
        // One read returns one record; a record longer than this is cut, which
        // keeps its first line.
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    if let Some(m) = record_message(&buf[..n]).filter(|m| is_oops(m)) {
                        return Ok(Some(m.to_owned()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                // EPIPE: records were overwritten before we read them; go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("Oops: Oops: 0000 [#1] SMP NOPTI", true)]
    #[case("BUG: unable to handle page fault for address: ffe0259530000028", true)]
    #[case("general protection fault, probably for non-canonical address", true)]
    #[case("kernel BUG at mm/huge_memory.c:2000!", true)]
    #[case(
        "mm/pgtable-generic.c:44: bad pud 000000006b9400c1(800000f8400002b7)",
        false
    )]
    #[case("WARNING: CPU: 0 PID: 1 at mm/memory.c:1 f", false)]
    #[case("bigbar: begin f6.munmap_pud_unaligned", false)]
    #[case("vfio-pci 0000:00:01.0: BUG: in a device name is not an oops", false)]
    fn oops_starts(#[case] message: &str, #[case] oops: bool) {
        assert_eq!(is_oops(message), oops);
    }

    #[rstest::rstest]
    #[case(
        b"6,1234,14893780,-;BUG: unable to handle page fault\n",
        Some("BUG: unable to handle page fault")
    )]
    #[case(
        b"4,17,1,c,caller=T109;Oops: 0000 [#1]\n SUBSYSTEM=x\n",
        Some("Oops: 0000 [#1]")
    )]
    #[case(b"6,1,2,-;\n", Some(""))]
    #[case(b"no header", None)]
    #[case(b"\xff\xfe;binary", None)]
    fn records(#[case] record: &[u8], #[case] message: Option<&str>) {
        assert_eq!(record_message(record), message);
    }

    #[test]
    fn a_plain_file_reads_from_its_end() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), b"6,1,1,-;Oops: before\n").unwrap();
        let mut log = KernelLog::open(tmp.path()).unwrap();
        assert_eq!(log.next_oops().unwrap(), None);
    }
}
