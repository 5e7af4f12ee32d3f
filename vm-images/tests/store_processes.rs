//! The store between processes, as two CI clones, two test binaries or a user's
//! run and a test meet in it: two processes that need one entry make it once
//! (the second waits on the lock, then uses it); a process killed while
//! making an entry leaves nothing that looks complete, and the next one makes
//! it again and says why; `gc` never evicts an entry another process uses.
//!
//! The processes are this test binary run again as `child` (ignored unless
//! `STORE_CHILD_ROOT` is set). They are synchronised on what they do, never on
//! time: a child says on stdout where it is, waits inside its fill on a FIFO
//! the test writes to, and the test sees a child blocked on the entry's lock
//! in `/proc/locks`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use vm_images::Cache;

const ROOT: &str = "STORE_CHILD_ROOT";
/// Set: the fill does not wait on the FIFO.
const NO_WAIT: &str = "STORE_CHILD_NO_WAIT";
/// Set: the child only uses the complete entry `k/v`, until the FIFO is written.
const USE_ONLY: &str = "STORE_CHILD_USE_ONLY";

/// Run as a child: makes (or finds) the entry `k/v` of the store at `$ROOT`.
#[test]
#[ignore = "a child of the tests below"]
fn child() {
    let Some(root) = std::env::var_os(ROOT).map(PathBuf::from) else {
        return;
    };
    println!("REQUESTING");
    std::io::stdout().flush().unwrap();
    let cache = Cache::new(root.join("store"));
    if std::env::var_os(USE_ONLY).is_some() {
        assert!(cache.existing(&["k"], "v").unwrap().is_some());
        println!("USING");
        std::io::stdout().flush().unwrap();
        wait_for_go(&root);
        return;
    }
    let path = cache
        .get_or_create(&["k"], "v", |dir| {
            let mut log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join("fills.log"))
                .unwrap();
            writeln!(log, "{}", std::process::id()).unwrap();
            fs::write(dir.join("half"), "made before the wait").unwrap();
            println!("FILLING");
            std::io::stdout().flush().unwrap();
            if std::env::var_os(NO_WAIT).is_none() {
                wait_for_go(&root);
            }
            fs::write(dir.join("done"), "complete").unwrap();
            Ok(())
        })
        .unwrap();
    println!("ENTRY {}", path.display());
}

/// Blocks until the test writes the FIFO `go`.
fn wait_for_go(root: &Path) {
    let mut go = String::new();
    fs::File::open(root.join("go"))
        .unwrap()
        .read_to_string(&mut go)
        .unwrap();
}

/// A child process on the store at `root`, its stdout piped.
fn spawn(root: &Path, wait: bool) -> (Child, BufReader<ChildStdout>) {
    spawn_with(root, wait, &[])
}

/// [`spawn`] with extra environment variables set.
fn spawn_with(root: &Path, wait: bool, env: &[&str]) -> (Child, BufReader<ChildStdout>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    for var in env {
        cmd.env(var, "1");
    }
    cmd.args(["--exact", "child", "--include-ignored", "--nocapture"])
        .env(ROOT, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !wait {
        cmd.env(NO_WAIT, "1");
    }
    let mut child = cmd.spawn().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, out)
}

/// Reads the child's stdout up to the line starting with `word`; returns it.
fn until(out: &mut BufReader<ChildStdout>, word: &str) -> String {
    for line in out.by_ref().lines() {
        let line = line.unwrap();
        if line.starts_with(word) {
            return line;
        }
    }
    panic!("the child ended before saying {word}");
}

/// Waits until `/proc/locks` shows process `pid` blocked on a lock.
fn until_blocked(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let blocked = format!(" {pid} ");
    loop {
        let locks = fs::read_to_string("/proc/locks").unwrap();
        if locks
            .lines()
            .any(|l| l.contains("->") && l.contains(&blocked))
        {
            return;
        }
        assert!(Instant::now() < deadline, "{pid} never blocked:\n{locks}");
        std::thread::yield_now();
    }
}

/// A store root with the FIFO the children's fills wait on.
fn root() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    nix::unistd::mkfifo(&tmp.path().join("go"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    tmp
}

fn fills(root: &Path) -> usize {
    fs::read_to_string(root.join("fills.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn two_processes_that_need_one_entry_make_it_once() {
    let tmp = root();
    let (mut a, mut a_out) = spawn(tmp.path(), true);
    until(&mut a_out, "FILLING");
    let (b, mut b_out) = spawn(tmp.path(), true);
    until(&mut b_out, "REQUESTING");
    until_blocked(b.id());
    // Release A's fill; B then finds the complete entry.
    fs::write(tmp.path().join("go"), "go").unwrap();
    let a_entry = until(&mut a_out, "ENTRY");
    let b_entry = until(&mut b_out, "ENTRY");
    assert!(a.wait().unwrap().success());
    let b = b.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&b.stderr);
    assert!(b.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for another process that is making"),
        "{stderr}"
    );
    assert_eq!(a_entry, b_entry);
    assert_eq!(fills(tmp.path()), 1, "the entry was made twice");
    let entry = PathBuf::from(a_entry.trim_start_matches("ENTRY "));
    assert_eq!(fs::read_to_string(entry.join("done")).unwrap(), "complete");
}

#[test]
fn a_killed_fill_is_not_reused_and_the_next_run_says_why() {
    let tmp = root();
    let (mut a, mut a_out) = spawn(tmp.path(), true);
    until(&mut a_out, "FILLING");
    a.kill().unwrap();
    a.wait().unwrap();
    let cache = Cache::new(tmp.path().join("store"));
    assert_eq!(cache.existing(&["k"], "v").unwrap(), None, "half an entry");

    let (b, mut b_out) = spawn(tmp.path(), false);
    let entry = until(&mut b_out, "ENTRY");
    let out = b.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was interrupted") && stderr.contains("making it again"),
        "{stderr}"
    );
    assert_eq!(fills(tmp.path()), 2);
    let entry = PathBuf::from(entry.trim_start_matches("ENTRY "));
    assert_eq!(fs::read_to_string(entry.join("done")).unwrap(), "complete");
    let left: Vec<String> = fs::read_dir(tmp.path().join("store/k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".partial-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn gc_never_evicts_what_another_process_uses() {
    let tmp = root();
    // Made by a child, so that this process pins nothing.
    let (a, mut a_out) = spawn(tmp.path(), false);
    until(&mut a_out, "ENTRY");
    assert!(a.wait_with_output().unwrap().status.success());
    let cache = Cache::new(tmp.path().join("store"));
    let (mut user, mut user_out) = spawn_with(tmp.path(), true, &[USE_ONLY]);
    until(&mut user_out, "USING");
    let pass = cache.gc(0).unwrap();
    assert!(pass.removed.is_empty(), "{pass:?}");
    let kept: Vec<&str> = pass.in_use.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(kept, ["v"]);
    assert!(tmp.path().join("store/k/v/done").is_file());
    // Once the user is gone, the entry goes.
    fs::write(tmp.path().join("go"), "go").unwrap();
    assert!(user.wait().unwrap().success());
    let pass = cache.gc(0).unwrap();
    let removed: Vec<&str> = pass.removed.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(removed, ["v"]);
    assert!(!tmp.path().join("store/k/v").exists());
}
