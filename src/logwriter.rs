//! Where log lines go: standard error, written through a duplicate of its descriptor
//! rather than `std::io::Stderr`.
//!
//! `Stderr` serialises every write on one process-wide lock. With a proxy worker per core
//! each writing its call's line, the workers queued on that lock under load: `strace -f`
//! counted about 0.5 `futex` calls per call at `wrk -c64` (a lock wait, then a wake-up of
//! the other worker), each a context switch (issue 20). A line is already formatted whole
//! before it is written, and one `write(2)` of it is atomic on a pipe (up to `PIPE_BUF`,
//! 4 KiB) and, on a file, never overlaps another writer's line (Linux serialises the
//! file position of one open file), so no lock of ours is needed: each worker writes its
//! line with its own system call, as before, and none waits for the other.
//!
//! The duplicate shares the open file (same pipe or file, same offset, same flags), so the
//! bytes and their order are what `Stderr` wrote. If the descriptor cannot be duplicated
//! (standard error closed), lines go through `Stderr`, which drops them silently as before.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use tracing_subscriber::fmt::MakeWriter;

/// The log's standard error: a duplicate of descriptor 2 when there is one.
pub(crate) struct StderrLines {
    duplicate: Option<File>,
}

impl StderrLines {
    pub(crate) fn new() -> StderrLines {
        let duplicate = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(File::from);
        StderrLines { duplicate }
    }
}

/// One line's writer, borrowed from [`StderrLines`].
pub(crate) struct LineWriter<'a>(Option<&'a File>);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0 {
            Some(mut file) => file.write(buf),
            None => io::stderr().write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.0 {
            Some(mut file) => file.write_all(buf),
            None => io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for StderrLines {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self.duplicate.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_goes_to_the_same_open_file_as_standard_error() {
        // The duplicate is of descriptor 2: same device and inode as what `Stderr` writes to.
        let lines = StderrLines::new();
        let file = lines
            .duplicate
            .as_ref()
            .expect("the test runner has a stderr");
        let ours = file.metadata().expect("fstat of the duplicate");
        let theirs = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .and_then(|file| file.metadata())
            .expect("fstat of standard error");
        use std::os::unix::fs::MetadataExt;
        assert_eq!((ours.dev(), ours.ino()), (theirs.dev(), theirs.ino()));
        lines.make_writer().write_all(b"").expect("an empty write");
    }
}
