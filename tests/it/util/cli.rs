//! A subcommand of the real binary, run to completion within a time limit.

use super::{binary_command, child_exit, WAIT_LIMIT};
use std::ffi::OsString;
use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};

/// Builder: `Cli::new().arg("sign").arg("--path").arg(p).env(k, v).run()`.
pub struct Cli {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    /// Standard output is a pipe whose reader is gone before the binary starts
    /// (`linepay-sidecar … | head -0`): every write to it fails with `EPIPE`.
    stdout_closed: bool,
}

#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Default for Cli {
    fn default() -> Self {
        Self::new()
    }
}

impl Cli {
    pub fn new() -> Cli {
        Cli {
            args: Vec::new(),
            env: Vec::new(),
            stdout_closed: false,
        }
    }

    /// Runs it with a standard output nobody reads (see [`Cli::stdout_closed`]'s field);
    /// [`CliOutput::stdout`] is then empty.
    pub fn stdout_closed(mut self) -> Cli {
        self.stdout_closed = true;
        self
    }

    /// `linepay-sidecar check --config FILE`: validate a file without starting.
    pub fn check_config(path: impl Into<OsString>) -> Cli {
        Cli::new().arg("check").arg("--config").arg(path)
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Cli {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cli {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs the binary with only the `LINEPAY_*` variables given here; kills it and
    /// panics if it runs longer than the harness's wait limit.
    pub fn run(self) -> CliOutput {
        let mut command = binary_command();
        command.args(&self.args).stderr(Stdio::piped());
        if self.stdout_closed {
            let (reader, writer) = std::io::pipe().expect("a pipe");
            drop(reader);
            command.stdout(writer);
        } else {
            command.stdout(Stdio::piped());
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start linepay-sidecar: {error}"));
        let mut guard = ChildGuard(child);
        let stdout = guard.0.stdout.take().map(read_all);
        let stderr = guard.0.stderr.take().map(read_all);

        let status = child_exit(&mut guard.0, WAIT_LIMIT).unwrap_or_else(|| {
            panic!(
                "linepay-sidecar {:?} still running after {WAIT_LIMIT:?}",
                self.args
            )
        });
        let join = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
            reader
                .and_then(|reader| reader.join().ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default()
        };
        CliOutput {
            status,
            stdout: join(stdout),
            stderr: join(stderr),
        }
    }
}

fn read_all(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        bytes
    })
}

/// Kills the child if the test panics while it runs.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
