//! The log's writer: standard error, with the lines of a proxy worker batched until the
//! worker has nothing left to run.
//!
//! Each log line used to be its own `write(2)` on standard error. A proxy worker
//! (`runtime::workers`) instead appends its lines to a buffer of its own thread and writes
//! the buffer in one `write(2)` when its runtime is about to sleep (tokio's
//! `on_thread_park`), when the buffer passes [`FLUSH_AT`], and when the worker stops. Under
//! load a worker answers several calls per wake-up, so several lines share one system call;
//! with one call at a time it is still one write per call, made once the answer is sent.
//!
//! Lossless and bounded, on purpose: a payment's log line must not be dropped to save time.
//! There is no queue and no second thread; past [`FLUSH_AT`] the worker writes at once,
//! so a slow log pipe slows the worker (back-pressure), as an unbuffered write did. Any
//! other thread (start-up, the admin and reload runtime) writes each line at once, as
//! before. A line is never split: the buffer only ever holds whole lines. What can be lost
//! is what any buffer loses: the lines of a worker not yet written when the process is
//! killed with SIGKILL; a worker that stops normally, or panics, writes what it holds.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};

/// A worker writes its buffer at once when it holds this much.
pub const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    static BATCHING: Cell<bool> = const { Cell::new(false) };
    static BUFFER: RefCell<Lines> = const { RefCell::new(Lines(Vec::new())) };
}

/// Whole lines waiting for the next flush; written when the thread ends, even by a panic.
struct Lines(Vec<u8>);

impl Drop for Lines {
    fn drop(&mut self) {
        write_out(&mut self.0);
    }
}

fn write_out(buffer: &mut Vec<u8>) {
    if !buffer.is_empty() {
        // As with an unbuffered standard error, a failed write cannot be reported
        // anywhere else.
        let _ = write_stderr(buffer);
        buffer.clear();
    }
}

#[cfg(not(test))]
fn write_stderr(bytes: &[u8]) -> io::Result<()> {
    io::stderr().lock().write_all(bytes)
}

#[cfg(test)]
thread_local! {
    /// What the unit tests' "standard error" received, in order.
    static WRITTEN: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
fn write_stderr(bytes: &[u8]) -> io::Result<()> {
    WRITTEN.with(|written| written.borrow_mut().extend_from_slice(bytes));
    Ok(())
}

/// From now on this thread's log lines are batched until [`flush`] (a proxy worker).
pub fn batch_this_thread() {
    BATCHING.with(|batching| batching.set(true));
}

/// Writes this thread's batched lines, if any, and stops batching when `stop` is set.
pub fn flush() {
    let _ = BUFFER.try_with(|buffer| {
        if let Ok(mut buffer) = buffer.try_borrow_mut() {
            write_out(&mut buffer.0);
        }
    });
}

/// Writes this thread's batched lines and writes each line at once from now on.
pub fn stop_batching() {
    BATCHING.with(|batching| batching.set(false));
    flush();
}

/// The `tracing_subscriber` writer: standard error, batched on proxy workers.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    /// `tracing_subscriber` hands over one whole formatted line per call.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if BATCHING.try_with(Cell::get).unwrap_or(false) {
            let appended = BUFFER.try_with(|buffer| match buffer.try_borrow_mut() {
                Ok(mut buffer) => {
                    buffer.0.extend_from_slice(bytes);
                    if buffer.0.len() >= FLUSH_AT {
                        write_out(&mut buffer.0);
                    }
                    true
                }
                Err(_) => false,
            });
            if appended == Ok(true) {
                return Ok(());
            }
        }
        write_stderr(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batched_lines_wait_for_the_flush_and_others_do_not() {
        std::thread::spawn(|| {
            let written = || WRITTEN.with(|w| String::from_utf8(w.borrow().clone()).unwrap());
            let mut writer = LogWriter;
            writer.write_all(b"not batched\n").unwrap();
            assert_eq!(written(), "not batched\n");
            batch_this_thread();
            writer.write_all(b"one\n").unwrap();
            writer.write_all(b"two\n").unwrap();
            assert_eq!(written(), "not batched\n", "held until the flush");
            flush();
            assert_eq!(written(), "not batched\none\ntwo\n");
            let long = format!("{}\n", "x".repeat(FLUSH_AT));
            writer.write_all(long.as_bytes()).unwrap();
            assert!(
                written().ends_with(&long),
                "a full buffer is written at once"
            );
            writer.write_all(b"three\n").unwrap();
            stop_batching();
            assert!(written().ends_with("three\n"));
            writer.write_all(b"four\n").unwrap();
            assert!(
                written().ends_with("three\nfour\n"),
                "written at once again"
            );
        })
        .join()
        .unwrap();
    }
}
