//! Command output, written so that a reader going away cannot crash rollwatch. `println!`
//! panics with a backtrace when stdout is a closed pipe (`rollwatch history | head -1`);
//! `outln!` returns the write error instead, and `main` ends a listing quietly with exit 0 when
//! that error is a broken pipe, as ripgrep does. Commands that act (rollback, wait, the demo)
//! print with `tell!`, which drops write errors: a half-read pipe must never abort a rollback
//! half-way or turn its exit code into a success.

/// `println!` that returns `std::io::Result<()>` instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        #[allow(unused_imports)]
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// `println!` for commands that act: the line is dropped if stdout is gone.
macro_rules! tell {
    ($($arg:tt)*) => {{
        let _ = outln!($($arg)*);
    }};
}

/// `eprintln!` that drops the line if stderr is gone, instead of panicking.
macro_rules! errln {
    ($($arg:tt)*) => {{
        #[allow(unused_imports)]
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Whether the command stopped because whoever read its output went away.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        use anyhow::Context;
        let err: anyhow::Result<()> =
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("printing history");
        assert!(is_broken_pipe(&err.unwrap_err()));
        let other = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&other));
    }
}
