//! How a command ends: the process exit codes (a contract: scripts depend on them, and
//! `freshcache --help` lists them) and [`CliError`], a failure carrying the code that goes with
//! it. A leaf: the command line and the benchmark scenarios both end with these.

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: refused by a guard.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: bad input.
pub const EXIT_BAD_INPUT: u8 = 4;
/// Exit code: a backend is unavailable.
pub const EXIT_UNAVAILABLE: u8 = 5;
/// Exit code: the configuration is wrong.
pub const EXIT_CONFIG: u8 = 6;

/// A failure with the exit code that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// One line: what happened and what to do.
    pub message: String,
}

impl CliError {
    /// A failure with a code.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
