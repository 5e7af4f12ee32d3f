//! The reader threads of the guest's serial ports: each forwards the lines of
//! its socket as events and logs them.

use super::Event;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::mpsc::Sender;

/// Listens on a serial socket and forwards each received line as an event.
pub(super) fn serve(
    listener: UnixListener,
    name: &'static str,
    log: File,
    events: Sender<Event>,
    boot: usize,
    make: fn(usize, String) -> Event,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("serial-{name}"))
        .spawn(move || {
            let mut log = log;
            if let Ok((stream, _)) = listener.accept() {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let _ = log.write_all(&buf);
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    buf.clear();
                    if events.send(make(boot, line)).is_err() {
                        return;
                    }
                }
            }
            let _ = events.send(Event::StreamClosed(boot));
        });
    if let Err(e) = spawned {
        eprintln!("bigbar: cannot read serial port {name}: {e}");
    }
}
