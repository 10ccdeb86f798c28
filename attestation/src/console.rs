//! Output of umbra's command-line tools that survives a closed or full
//! stdout/stderr: `umbra-attest verify ... | head -c1` or `> /dev/full` must
//! keep the verdict's exit code, where `println!` would panic (Rust ignores
//! SIGPIPE, so a write to a closed pipe is an error, and the macros panic
//! on it). Write errors are dropped: the reader went away or the disk is
//! full, and the exit code still says what happened.

use std::io::Write;

/// Writes `text` and a newline to stdout, ignoring write errors.
pub fn out_line(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
}

/// Writes `text` to stdout without a newline (a line updated in place),
/// ignoring write errors.
pub fn out_text(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `text` and a newline to stderr, ignoring write errors.
pub fn err_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

/// `println!` that never panics on a closed or full stdout.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::console::out_line(&format!($($arg)*))
    };
}

/// `eprintln!` that never panics on a closed or full stderr.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::console::err_line(&format!($($arg)*))
    };
}
