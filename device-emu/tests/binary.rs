//! The `device-emu` binary: readiness signals, command-line errors, shutdown on
//! signals, and host memory use with a 512 GiB BAR.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use device_emu::regs::{self, Status};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};

const M: u64 = 1 << 20;
const G: u64 = 1 << 30;

fn device_emu() -> Command {
    Command::new(env!("CARGO_BIN_EXE_device-emu"))
}

/// Clears close-on-exec on `fd`; runs in the child between fork and exec.
fn keep_across_exec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: `fd` is the pipe's write end, open in the parent at fork time and
    // therefore in the child.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

/// Starts the binary with `--ready-fd` on a pipe and waits for the byte.
fn start_with_ready_fd(socket: &Path, bars: &str) -> Child {
    // Close-on-exec, so that children other tests spawn do not hold it open.
    let (reader, writer) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let fd = writer.as_raw_fd();
    let mut command = device_emu();
    command
        .arg("--socket")
        .arg(socket)
        .args(["--bars", bars, "--ready-fd", &fd.to_string()])
        .stderr(Stdio::inherit());
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe.
    unsafe { command.pre_exec(move || keep_across_exec(fd)) };
    let child = command.spawn().unwrap();
    drop(writer);
    let mut byte = Vec::new();
    File::from(reader).take(1).read_to_end(&mut byte).unwrap();
    assert_eq!(byte, b"R", "device-emu exited before it was ready");
    assert!(socket.exists());
    child
}

/// Resident set size of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

#[test]
fn a_512_gib_bar_costs_only_what_is_touched_and_sigterm_stops_a_busy_server() {
    let dir = private_dir();
    let socket = dir.path().join("big.sock");
    let mut child = start_with_ready_fd(&socket, "1=64M:32:msix@2M,2=512G");
    let mut client = vfio_user::Client::new(&socket).unwrap();
    assert_eq!(client.region(2).unwrap().size, 512 * G);

    let at_end = Cmd {
        bar: 2,
        offset: 512 * G - 8 * M,
        length: 8 * M,
        stride: 8,
        seed: 11,
    };
    let sparse = Cmd {
        bar: 2,
        offset: 0,
        length: 512 * G,
        stride: G,
        seed: 12,
    };
    for cmd in [at_end, sparse] {
        assert_eq!(run(&mut client, regs::Command::Fill, cmd), Status::Ok);
        assert_eq!(run(&mut client, regs::Command::Verify, cmd), Status::Ok);
    }
    let memfd = allocated(&region_file(&client, 2));
    // 8 MiB dense plus 512 words a page (or a 2 MiB huge page) each.
    assert!(memfd <= 8 * M + 512 * 2 * M, "memfd holds {memfd} bytes");
    assert!(memfd >= 8 * M, "memfd holds {memfd} bytes");
    let resident = rss(child.id());
    assert!(resident < 64 * M, "device-emu RSS {resident} bytes");
    eprintln!(
        "512 GiB BAR: device-emu RSS {} KiB, memfd {} KiB",
        resident >> 10,
        memfd >> 10
    );

    // SIGTERM while a client is connected (the server is blocked in recv).
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!socket.exists(), "socket left behind");
}

#[test]
fn listening_line_then_sigint_while_idle() {
    let dir = private_dir();
    let socket = dir.path().join("idle.sock");
    let mut child = device_emu()
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "warn"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert_eq!(
        line,
        format!("device-emu: listening on {}\n", socket.display())
    );
    // A client can connect and leave; the server keeps serving.
    drop(vfio_user::Client::new(&socket).unwrap());
    let mut client = vfio_user::Client::new(&socket).unwrap();
    assert_eq!(read32(&mut client, REGS, regs::MAGIC), regs::MAGIC_VALUE);
    drop(client);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?} signal {:?}",
        status.signal()
    );
    assert!(!socket.exists(), "socket left behind");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(!rest.contains("ERROR"), "{rest}");
}

/// Runs the binary to completion; returns its exit code and stderr.
fn run_to_end(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = device_emu().args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_existing_socket_path_is_an_error() {
    let dir = private_dir();
    let socket = dir.path().join("taken.sock");
    std::fs::write(&socket, b"").unwrap();
    let (code, stderr) = run_to_end(&["--socket".as_ref(), socket.as_os_str()]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
    assert!(socket.exists(), "someone else's file must stay");
}

#[test]
fn a_bad_layout_is_an_error_naming_the_entry() {
    let dir = private_dir();
    let socket = dir.path().join("never.sock");
    let (code, stderr) = run_to_end(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--bars".as_ref(),
        "1=64M:32,0=4K".as_ref(),
    ]);
    assert_eq!(code, Some(2), "clap's usage error code");
    assert!(
        stderr.contains("`0=4K`") && stderr.contains("register BAR"),
        "{stderr}"
    );
    assert!(!socket.exists());
}

#[test]
fn a_closed_ready_fd_is_an_error() {
    let dir = private_dir();
    let socket = dir.path().join("never.sock");
    // The child inherits only 0, 1 and 2: std opens everything else CLOEXEC.
    let closed = "987";
    let (code, stderr) = run_to_end(&[
        "--socket".as_ref(),
        socket.as_os_str(),
        "--ready-fd".as_ref(),
        closed.as_ref(),
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not an open file descriptor"), "{stderr}");
    assert!(!socket.exists());
}

#[test]
fn a_socket_directory_others_can_enter_is_an_error_naming_it_and_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let base = private_dir();
    let open = base.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = open.join("never.sock");
    let (code, stderr) = run_to_end(&["--socket".as_ref(), socket.as_os_str()]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "socket directory {} has mode 0755",
            open.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("mode 0700"), "{stderr}");
    assert!(!socket.exists());
}
