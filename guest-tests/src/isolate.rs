//! Running a piece of code in a forked child, so that a crash (SIGBUS from a BAR
//! access, a panic, an abort) or a hang costs one result instead of the run.
//!
//! The child reports through a pipe: diagnostics and a final message, one record
//! per line. The parent waits on the pipe and on a pidfd (which becomes readable
//! when the child exits) with a deadline, so no signal handling is involved and
//! the code also works in a multi-threaded process such as `cargo test`.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, setpgid, ForkResult, Pid};

use crate::kmsg::KernelLog;

/// How long the parent waits for a killed child to be reaped before giving up on it
/// (a task stuck in the kernel cannot be killed; it must not stall the whole run).
/// A killable child dies within milliseconds of SIGKILL; the grace only decides
/// whether a timed-out test is reported as stuck in the kernel.
const REAP_GRACE: Duration = Duration::from_secs(3);

/// How long a child may still run after the kernel reported an oops while it ran,
/// and how long a SIGKILL then has to end it. A child the oops did not concern
/// ends or exits in this time (a killed one, mappings and all, within a few
/// milliseconds even under TCG); one the oops left in the kernel never does, so
/// every kernel with the oops pays both graces once per run.
const OOPS_GRACE: Duration = Duration::from_millis(200);

/// Write end of the report pipe in a child, or -1 outside of one.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Failures of the isolation machinery itself (not of the code it runs).
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// A system call the parent needs failed.
    #[error("{what} failed")]
    Sys {
        /// The call that failed.
        what: &'static str,
        /// The error it returned.
        #[source]
        source: Errno,
    },
    /// The process has other threads, and the caller did not vouch for its bodies
    /// with [`Threads::Any`].
    #[error(
        "cannot fork a test child: the process has {count} threads, and a lock one of \
         them holds would stay locked in the child forever"
    )]
    Threaded {
        /// The number of threads found in /proc/self/task.
        count: usize,
    },
}

fn sys(what: &'static str) -> impl FnOnce(Errno) -> IsolateError {
    move |source| IsolateError::Sys { what, source }
}

/// The kind of a record the child sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A diagnostic line, shown as `# ...` whatever the outcome.
    Diag,
    /// A line of the final message (reason for a failure or a skip).
    Message,
}

/// One line the child reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// What the line is.
    pub kind: RecordKind,
    /// The text, without newline.
    pub text: String,
}

/// How the child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(Signal),
    /// It outlived its deadline and was killed.
    TimedOut,
    /// It outlived its deadline and could not even be reaped after SIGKILL.
    Unkillable,
}

/// Everything the parent learned about one child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// How it ended.
    pub end: End,
    /// What it reported, in order.
    pub records: Vec<Record>,
    /// Time from fork to end.
    pub elapsed: Duration,
    /// The first line of an oops the kernel reported while the child ran, when
    /// the parent watched the kernel log ([`Watch::kernel_log`]).
    pub kernel_oops: Option<String>,
}

/// Sends a diagnostic line: through the report pipe in a child, to stdout as a
/// `# ` line otherwise. Multi-line text becomes several records.
pub fn diag(text: &str) {
    send(RecordKind::Diag, text);
}

/// Sends (part of) the final message of a child.
pub fn message(text: &str) {
    send(RecordKind::Message, text);
}

fn send(kind: RecordKind, text: &str) {
    let fd = REPORT_FD.load(Ordering::Relaxed);
    let tag = match kind {
        RecordKind::Diag => 'D',
        RecordKind::Message => 'M',
    };
    let mut buf = String::new();
    for line in text.lines() {
        if fd < 0 {
            buf.push_str("# ");
        } else {
            buf.push(tag);
        }
        buf.push_str(line);
        buf.push('\n');
    }
    if fd < 0 {
        let mut out = io::stdout().lock();
        // Diagnostics are best effort: a closed stdout must not turn into a failure.
        let _ = out.write_all(buf.as_bytes()).and_then(|()| out.flush());
    } else {
        write_all_raw(fd, buf.as_bytes());
    }
}

/// Writes to a raw fd without std's buffering, retrying on EINTR and short writes.
fn write_all_raw(fd: RawFd, mut bytes: &[u8]) {
    // SAFETY: `fd` is the report pipe's write end, owned by this child for its whole
    // life (see `run_child`); the borrow does not outlive this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            // The parent is gone: nothing left to report to.
            Err(_) => return,
        }
    }
}

/// Called by the waiting parent every `every` while the child runs, with the
/// time since the fork: whoever watches the parent from outside (the runner,
/// through the KTAP stream) then tells a long test from a dead machine.
pub struct Heartbeat<'a> {
    /// Interval between two calls.
    pub every: Duration,
    /// What to do at each beat.
    pub beat: &'a mut dyn FnMut(Duration),
}

/// Runs `body` in a forked child and waits at most `timeout` for it.
///
/// `body` returns the child's exit status. It may call [`diag`] and [`message`].
/// The child gets its own process group (so a timeout kills everything it forked)
/// and no core dumps (a dump of a process mapping 16 GiB BARs helps nobody).
pub fn run<B: FnOnce() -> i32>(timeout: Duration, body: B) -> Result<Finished, IsolateError> {
    run_watched(timeout, Watch::default(), body)
}

/// A promise that the bodies run in forked children are safe to run even though
/// other threads exist: see [`ForkAnyway::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkAnyway(());

impl ForkAnyway {
    /// The promise.
    ///
    /// # Safety
    /// Every body run with it must take no lock that another thread of the
    /// process may hold at the moment of the fork (Rust's panic and stdout locks,
    /// a `Mutex` of the caller's): the child has only the forking thread, so such
    /// a lock is never released there. glibc makes its own allocator safe across
    /// fork. Within [`run_watched`], a body that panics (the harness's do) is a
    /// risk only while another thread panics at the same time.
    pub unsafe fn new() -> Self {
        Self(())
    }
}

/// Which processes [`run_watched`] forks from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threads {
    /// Only a single-threaded one (the guest binary): checked in /proc/self/task
    /// before each fork.
    #[default]
    Single,
    /// Any, on the caller's promise.
    Any(ForkAnyway),
}

/// The number of threads of this process.
fn thread_count() -> Result<usize, IsolateError> {
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| IsolateError::Sys {
        what: "reading /proc/self/task",
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    Ok(tasks.count())
}

/// What the parent does besides waiting, while the child runs.
#[derive(Default)]
pub struct Watch<'a> {
    /// Which processes may fork the child.
    pub threads: Threads,
    /// Called at intervals while the child runs.
    pub heartbeat: Option<Heartbeat<'a>>,
    /// The kernel log: once it reports an oops, the child has [`OOPS_GRACE`] to
    /// end before it is killed, instead of its whole deadline.
    pub kernel_log: Option<&'a mut KernelLog>,
}

/// [`run`], doing what `watch` says while the parent waits for the child.
pub fn run_watched<B: FnOnce() -> i32>(
    timeout: Duration,
    watch: Watch<'_>,
    body: B,
) -> Result<Finished, IsolateError> {
    if watch.threads == Threads::Single {
        let count = thread_count()?;
        if count != 1 {
            return Err(IsolateError::Threaded { count });
        }
    }
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
    // Anything buffered in stdout would otherwise be written twice.
    let _ = io::stdout().flush();
    let started = Instant::now();
    // SAFETY: the child only runs `run_child`, which sets up its report pipe, runs
    // `body` and leaves through `_exit` without returning into the caller's frames.
    // The process was just seen single-threaded (no lock can be held by another
    // thread), or the caller promised with `ForkAnyway` that `body` takes none.
    match unsafe { fork() }.map_err(sys("fork"))? {
        ForkResult::Child => {
            drop(read_end);
            run_child(write_end, body)
        }
        ForkResult::Parent { child } => {
            drop(write_end);
            // Also done by the child; doing it here too closes the race with a kill.
            let _ = setpgid(child, child);
            let waiting = Waiting {
                child,
                started,
                deadline: started + timeout,
            };
            wait_child(&waiting, read_end, watch)
        }
    }
}

fn run_child<B: FnOnce() -> i32>(report: OwnedFd, body: B) -> ! {
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    default_fault_signals();
    // Leaked on purpose: the fd must stay open until `_exit`.
    REPORT_FD.store(report.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(report);
    let status = body();
    // SAFETY: `_exit` ends the process without running the parent's atexit
    // handlers or flushing buffers copied from the parent; it is always safe.
    unsafe { libc::_exit(status) }
}

/// Restores the default action of the fault signals and unblocks every signal.
///
/// Rust's runtime handles SIGSEGV and SIGBUS to detect stack overflows; its handler
/// swallows a signal that is not a real fault (such as one from `raise`), and the
/// parent may have blocked signals. A child must die the plain way.
fn default_fault_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGBUS, Signal::SIGSEGV] {
        // SAFETY: installing SIG_DFL involves no handler code, so none of
        // sigaction's handler safety conditions apply.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, IsolateError> {
    // nix has no wrapper for pidfd_open (Linux 5.3); the raw system call is simple.
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(IsolateError::Sys {
            what: "pidfd_open",
            source: Errno::last(),
        });
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The child a parent waits for.
struct Waiting {
    child: Pid,
    started: Instant,
    deadline: Instant,
}

/// When the next beat is due, and the beat itself.
struct Beats<'a> {
    next: Instant,
    heartbeat: Heartbeat<'a>,
}

impl Beats<'_> {
    /// Beats if one is due (at most once: a parent that overslept several
    /// intervals is alive now, and one beat says so).
    fn beat_if_due(&mut self, started: Instant) {
        let now = Instant::now();
        if now >= self.next {
            (self.heartbeat.beat)(now - started);
            self.next = now + self.heartbeat.every;
        }
    }
}

fn wait_child(w: &Waiting, pipe: OwnedFd, watch: Watch<'_>) -> Result<Finished, IsolateError> {
    let (child, started) = (w.child, w.started);
    let pidfd = pidfd_open(child)?;
    let mut beats = watch.heartbeat.map(|h| Beats {
        next: started + h.every,
        heartbeat: h,
    });
    let mut kernel_log = watch.kernel_log;
    let mut oops: Option<(Instant, String)> = None;
    let mut reader = RecordReader::default();
    let mut pipe_open = true;
    let end = loop {
        if let Some(end) = reap(child, WaitPidFlag::WNOHANG)? {
            break end;
        }
        if let Some(b) = beats.as_mut() {
            b.beat_if_due(started);
        }
        let now = Instant::now();
        let deadline = match &oops {
            Some((at, _)) => w.deadline.min(*at + OOPS_GRACE),
            None => w.deadline,
        };
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            let grace = if oops.is_some() {
                OOPS_GRACE
            } else {
                REAP_GRACE
            };
            break kill_and_reap(child, &pidfd, grace);
        }
        let wait = match &beats {
            Some(b) => left.min(b.next.saturating_duration_since(now)),
            None => left,
        };
        let watching = kernel_log.as_deref().filter(|_| oops.is_none());
        let ready = poll_once(&pidfd, pipe_open.then_some(&pipe), watching, wait)?;
        if ready.pipe {
            pipe_open = reader.fill(&pipe)? != Got::Eof;
        }
        if ready.kernel_log {
            if let Some(log) = kernel_log.as_deref_mut() {
                // A log that cannot be read is no reason to fail the test.
                if let Ok(Some(line)) = log.next_oops() {
                    oops = Some((Instant::now(), line));
                }
            }
        }
    };
    // Whatever the child wrote before it ended is still in the pipe. Grandchildren may
    // hold the write end open, so read only what is there (non-blocking).
    reader.drain(&pipe)?;
    Ok(Finished {
        end,
        records: reader.finish(),
        elapsed: started.elapsed(),
        kernel_oops: oops.map(|(_, line)| line),
    })
}

/// Which of the polled descriptors became ready.
struct Ready {
    pipe: bool,
    kernel_log: bool,
}

/// Polls the child's pidfd, its report pipe and the kernel log for at most `wait`.
fn poll_once(
    pidfd: &OwnedFd,
    pipe: Option<&OwnedFd>,
    kernel_log: Option<&KernelLog>,
    wait: Duration,
) -> Result<Ready, IsolateError> {
    let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let pipe_at = pipe.map(|p| {
        fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    let log_at = kernel_log.map(|l| {
        fds.push(PollFd::new(l.fd(), PollFlags::POLLIN));
        fds.len() - 1
    });
    match nix::poll::poll(&mut fds, poll_timeout(wait)) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => return Err(sys("poll")(e)),
    }
    let is_ready = |at: Option<usize>| {
        at.and_then(|i| fds[i].revents())
            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
    };
    Ok(Ready {
        pipe: is_ready(pipe_at),
        kernel_log: is_ready(log_at),
    })
}

fn poll_timeout(left: Duration) -> PollTimeout {
    // Round up so the loop does not spin in the last millisecond.
    let ms = left.as_millis().saturating_add(1);
    PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}

fn reap(child: Pid, flags: WaitPidFlag) -> Result<Option<End>, IsolateError> {
    loop {
        match waitpid(child, Some(flags)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(End::Exited(code))),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(End::Signaled(sig))),
            Ok(WaitStatus::StillAlive) => return Ok(None),
            // Stopped/continued: not an end.
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(sys("waitpid")(e)),
        }
    }
}

fn kill_and_reap(child: Pid, pidfd: &OwnedFd, grace: Duration) -> End {
    let _ = killpg(child, Signal::SIGKILL);
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let _ = nix::poll::poll(&mut fds, poll_timeout(grace));
    match reap(child, WaitPidFlag::WNOHANG) {
        Ok(Some(_)) => End::TimedOut,
        _ => End::Unkillable,
    }
}

/// What one read of the report pipe gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    Data,
    Nothing,
    Eof,
}

/// Splits the pipe's byte stream into records.
#[derive(Default)]
struct RecordReader {
    pending: Vec<u8>,
    records: Vec<Record>,
}

impl RecordReader {
    /// Reads what is available now.
    fn fill(&mut self, pipe: &OwnedFd) -> Result<Got, IsolateError> {
        let mut buf = [0u8; 4096];
        let got = loop {
            match nix::unistd::read(pipe, &mut buf) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        match got {
            Ok(0) => Ok(Got::Eof),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                self.split();
                Ok(Got::Data)
            }
            Err(Errno::EAGAIN) => Ok(Got::Nothing),
            Err(e) => Err(sys("read report pipe")(e)),
        }
    }

    /// Reads until the pipe is empty or closed, without blocking.
    fn drain(&mut self, pipe: &OwnedFd) -> Result<(), IsolateError> {
        nix::fcntl::fcntl(pipe, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(sys("fcntl O_NONBLOCK"))?;
        while self.fill(pipe)? == Got::Data {}
        Ok(())
    }

    fn split(&mut self) {
        while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            self.push(&line[..line.len() - 1]);
        }
    }

    fn push(&mut self, line: &[u8]) {
        let (kind, text) = match line.split_first() {
            Some((b'M', rest)) => (RecordKind::Message, rest),
            Some((b'D', rest)) => (RecordKind::Diag, rest),
            _ => (RecordKind::Diag, line),
        };
        self.records.push(Record {
            kind,
            text: String::from_utf8_lossy(text).into_owned(),
        });
    }

    fn finish(mut self) -> Vec<Record> {
        if !self.pending.is_empty() {
            // A child that died mid-line: keep what it managed to say.
            let line = std::mem::take(&mut self.pending);
            self.push(&line);
        }
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(20);

    /// `cargo test` runs tests on several threads.
    fn any_process() -> Threads {
        // SAFETY: these bodies write to the report pipe, allocate and exit; none
        // panics or takes a lock another test thread could hold.
        Threads::Any(unsafe { ForkAnyway::new() })
    }

    /// [`run`] from the multi-threaded test process.
    fn run<B: FnOnce() -> i32>(timeout: Duration, body: B) -> Result<Finished, IsolateError> {
        let watch = Watch {
            threads: any_process(),
            ..Watch::default()
        };
        run_watched(timeout, watch, body)
    }

    #[test]
    fn a_multi_threaded_process_is_refused_without_a_promise() {
        let err = super::run(T, || 0).unwrap_err();
        assert!(
            matches!(err, IsolateError::Threaded { count } if count > 1),
            "{err}"
        );
    }

    fn texts(f: &Finished, kind: RecordKind) -> Vec<String> {
        f.records
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.text.clone())
            .collect()
    }

    #[test]
    fn exit_status_and_records_arrive() {
        let f = run(T, || {
            diag("first\nsecond");
            message("why");
            3
        })
        .unwrap();
        assert_eq!(f.end, End::Exited(3));
        assert_eq!(texts(&f, RecordKind::Diag), ["first", "second"]);
        assert_eq!(texts(&f, RecordKind::Message), ["why"]);
    }

    #[test]
    fn signal_is_reported() {
        let f = run(T, || {
            diag("about to fault");
            nix::sys::signal::raise(Signal::SIGBUS).unwrap();
            0
        })
        .unwrap();
        assert_eq!(f.end, End::Signaled(Signal::SIGBUS));
        assert_eq!(texts(&f, RecordKind::Diag), ["about to fault"]);
    }

    #[test]
    fn hang_times_out() {
        // Long enough for a loaded CI host to schedule the child before the
        // deadline, so its diagnostic is there to check.
        let f = run(Duration::from_secs(2), || {
            diag("hanging");
            loop {
                nix::unistd::pause();
            }
        })
        .unwrap();
        assert_eq!(f.end, End::TimedOut);
        assert!(f.elapsed >= Duration::from_secs(2));
        assert_eq!(texts(&f, RecordKind::Diag), ["hanging"]);
    }

    #[test]
    fn the_parent_beats_while_the_child_runs() {
        let mut beats = Vec::new();
        let mut record = |t: Duration| beats.push(t);
        let heartbeat = Heartbeat {
            every: Duration::from_millis(100),
            beat: &mut record,
        };
        // The child outlives several intervals, then its deadline.
        let f = run_watched(Duration::from_millis(550), beating(heartbeat), || loop {
            nix::unistd::pause();
        })
        .unwrap();
        assert_eq!(f.end, End::TimedOut);
        assert!(beats.len() >= 2, "{beats:?}");
        assert!(beats.len() <= 6, "{beats:?}");
        assert!(beats
            .windows(2)
            .all(|w| w[1] - w[0] >= Duration::from_millis(100)));
        assert!(beats[0] >= Duration::from_millis(100), "{beats:?}");
    }

    #[test]
    fn a_quick_child_gets_no_beat() {
        let mut count = 0;
        let mut record = |_: Duration| count += 1;
        let heartbeat = Heartbeat {
            every: Duration::from_secs(20),
            beat: &mut record,
        };
        let f = run_watched(T, beating(heartbeat), || 0).unwrap();
        assert_eq!(f.end, End::Exited(0));
        assert_eq!(count, 0);
    }

    #[test]
    fn large_output_does_not_block_the_child() {
        // More than a pipe buffer (64 KiB): the parent must read while waiting.
        let f = run(T, || {
            for i in 0..5000 {
                diag(&format!("line {i} {}", "x".repeat(40)));
            }
            0
        })
        .unwrap();
        assert_eq!(f.end, End::Exited(0));
        assert_eq!(f.records.len(), 5000);
        assert!(f.records[4999].text.starts_with("line 4999 "));
    }

    #[test]
    fn partial_last_line_is_kept() {
        let mut r = RecordReader::default();
        r.pending.extend_from_slice(b"Dwhole\nMhal");
        r.split();
        let recs = r.finish();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[1],
            Record {
                kind: RecordKind::Message,
                text: "hal".into()
            }
        );
    }

    fn beating(heartbeat: Heartbeat<'_>) -> Watch<'_> {
        Watch {
            threads: any_process(),
            heartbeat: Some(heartbeat),
            kernel_log: None,
        }
    }

    #[test]
    fn an_oops_in_the_kernel_log_ends_the_wait_early() {
        use std::io::Write as _;
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let mut log = KernelLog::open(tmp.path()).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(tmp.path())
            .unwrap();
        file.write_all(b"1,9,9,-;BUG: unable to handle page fault for address: 1\n")
            .unwrap();
        let watch = Watch {
            threads: any_process(),
            heartbeat: None,
            kernel_log: Some(&mut log),
        };
        let f = run_watched(T, watch, || loop {
            std::thread::sleep(Duration::from_millis(50));
        })
        .unwrap();
        assert_eq!(f.end, End::TimedOut);
        assert_eq!(
            f.kernel_oops.as_deref(),
            Some("BUG: unable to handle page fault for address: 1")
        );
        assert!(f.elapsed < Duration::from_secs(5), "{:?}", f.elapsed);
    }
}
