//! What the daemons of one test binary log (info and up), for the lines said only once. Call
//! `capture()` first in every test of the binary: the first subscriber installed wins, and the
//! test daemon's own then stays out.

use std::sync::{Mutex, OnceLock};

/// The captured log text, installing the capture on first use.
pub fn capture() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("rollcache=info"))
            .with_ansi(false)
            .with_writer(move || Captured(buf))
            .init();
        buf
    })
}

struct Captured(&'static Mutex<Vec<u8>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many captured lines contain `containing`.
pub fn lines(containing: &str) -> usize {
    let logs = capture().lock().expect("log buffer");
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains(containing))
        .count()
}
