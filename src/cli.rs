//! What both binaries do last: print the report (stdout) or the error (stderr) and give the exit
//! code, without panicking when whoever reads the output has gone (`… | head -1`).

use std::fmt::Display;
use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// Prints `result`'s report and succeeds, or prints its error and fails. A reader that closed
/// the pipe early wanted no more of the report: the run's work is done and written, so that is
/// still a success; any other failure to print is an error.
pub fn finish<E: Display>(result: std::result::Result<String, E>) -> ExitCode {
    match result {
        Ok(report) => match writeln!(std::io::stdout().lock(), "{report}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Err(e) => fail(format_args!("cannot print the report: {e}")),
        },
        Err(e) => fail(e),
    }
}

/// Prints `error: <message>` to stderr (if stderr is there to take it) and fails.
pub fn fail(message: impl Display) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "error: {message}");
    ExitCode::FAILURE
}
