//! Where an instance runs: production, staging or development (`--env`). The guards on operator
//! actions (in the instance) and the console's colours are decided by it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where an instance runs. Every command and the console share it (`--env`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Real users: no simulations, no strategy switches.
    Production,
    /// Testers: everything, with confirmations.
    Staging,
    /// A developer's machine.
    #[default]
    Development,
}

impl Environment {
    /// The name as written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Staging => "staging",
            Environment::Development => "development",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "production" | "prod" => Ok(Self::Production),
            "staging" | "stage" => Ok(Self::Staging),
            "development" | "dev" => Ok(Self::Development),
            other => Err(format!(
                "unknown environment `{}`; expected production, staging or development",
                other.escape_default()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_parse() {
        assert_eq!("prod".parse::<Environment>(), Ok(Environment::Production));
        assert!("qa".parse::<Environment>().unwrap_err().contains("staging"));
    }
}
