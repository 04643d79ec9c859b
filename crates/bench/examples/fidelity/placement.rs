//! Where and how the processes run: each on its own core when `taskset` exists, and ahead of the
//! machine's other work when the niceness can be raised.
//!
//! Both matter for the tail. A client pinned to a core shares it with whatever else the kernel
//! puts there; a kernel thread or a daemon that takes the core for 10-15 ms leaves a client that
//! needs ~70% of it (1,000 streams) more than a token gap behind, and events then share a read
//! (docs/performance.md). At niceness -10 the scheduler gives the benchmark ~90% of a contended
//! core instead of half, and such runs became rare. Raising it needs root or CAP_SYS_NICE;
//! without, everything runs at the default priority and the header says so.

use std::path::Path;
use std::process::{Command, Stdio};

/// Whether to pin to cores and raise the niceness.
pub struct Placement {
    pin: bool,
    nice: bool,
}

/// The niceness the benchmark's processes get when it can be raised.
const NICENESS: &str = "-10";

impl Placement {
    pub fn here() -> Self {
        let pin = Command::new("taskset").arg("--version").output().is_ok();
        // `nice -n -10 nice` prints the niceness it ran at: -10 only when raising was allowed.
        let nice = Command::new("nice")
            .args(["-n", NICENESS, "nice"])
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == NICENESS);
        Self { pin, nice }
    }

    pub fn describe(&self) -> String {
        let cores = if self.pin {
            "pinned to cores 0 and 1"
        } else {
            "not pinned: no taskset"
        };
        let nice = if self.nice {
            format!("at niceness {NICENESS}")
        } else {
            "at the default priority: raising it needs root or CAP_SYS_NICE".into()
        };
        format!("{cores}, {nice}")
    }

    /// A command that runs `program` on `core`, as this placement allows.
    pub fn command(&self, core: u32, program: &Path) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if self.pin {
            argv.extend(["taskset".into(), "-c".into(), core.to_string().into()]);
        }
        if self.nice {
            argv.extend(["nice".into(), "-n".into(), NICENESS.into()]);
        }
        argv.push(program.into());
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }
}
