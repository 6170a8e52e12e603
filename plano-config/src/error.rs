//! Configuration problems. Validation collects every problem before giving up, so a user
//! fixes a config in one pass instead of one error per run.

use std::fmt;
use std::path::PathBuf;

/// Where in the file a problem is, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
}

/// One problem, with the key path it belongs to (`model_providers[2].base_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path; empty for problems with the document as a whole.
    pub path: String,
    pub message: String,
    pub location: Option<Location>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            if let Some(file) = &loc.file {
                write!(f, "{}:", file.display())?;
            }
            write!(f, "{}:{}: ", loc.line, loc.column)?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a config. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
