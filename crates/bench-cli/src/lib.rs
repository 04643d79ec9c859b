//! What the command-line tools (`bench`, `sweep`, `plot`, `bench-sim`) share, so none of them
//! depends on another's binary crate: the flags of a run and their validation ([`args`]),
//! SIGINT and SIGTERM ([`signal`]), logging to stderr ([`log`]), and the body of `main`
//! ([`main_with`]) that maps an outcome to the exit code contract:
//!
//! | code | when |
//! | --- | --- |
//! | 0 | success |
//! | 1 | a runtime failure (every request failed, a sweep cell failed, an error) |
//! | 2 | a usage error: a flag, file or value that cannot be used, before anything ran |
//! | 130, 143 | stopped by SIGINT or SIGTERM, after what was measured was written |

pub mod args;
pub mod log;
pub mod signal;

pub use args::{parse_duration, CommonArgs, Shape, UsageError};

use std::process::ExitCode;

/// The body of a command's `main`: logging, a multi-threaded runtime, `run`, and the exit code.
/// Usage errors ([`UsageError`] anywhere in the chain) exit 2, other errors 1, printed with the
/// whole chain.
pub fn main_with<T>(
    run: impl std::future::Future<Output = anyhow::Result<T>>,
    exit_code: impl FnOnce(&T) -> ExitCode,
) -> ExitCode {
    log::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run) {
        Ok(outcome) => exit_code(&outcome),
        Err(e) => error_exit(&e),
    }
}

/// Prints `e` with its whole chain and returns its exit code: 2 for a usage error, else 1.
pub fn error_exit(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {}", chain(e));
    if e.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::from(1)
    }
}

/// The error and its causes, each said once: a cause whose text a context already contains
/// (`--tokenizer X: cannot read X` over `cannot read X`) is not repeated.
pub fn chain(e: &anyhow::Error) -> String {
    let mut out: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.iter().any(|o| o.contains(&text)) {
            out.push(text);
        }
    }
    out.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_said_is_not_said_again() {
        let io = std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "Address already in use (os error 98)",
        );
        let e = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:8000: Address already in use (os error 98)");
        assert_eq!(
            chain(&e),
            "cannot listen on 127.0.0.1:8000: Address already in use (os error 98)"
        );
        let e = anyhow::anyhow!("no tokenizer.json in the folder").context("--tokenizer /x");
        assert_eq!(chain(&e), "--tokenizer /x: no tokenizer.json in the folder");
    }
}
