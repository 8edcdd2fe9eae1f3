//! The guards on operator actions: which environment refuses what, and read-only mode. They are
//! enforced here, below any UI, so a console bug or a script cannot get around them.

use serde::Serialize;

use super::InstanceError;
use crate::model::environment::Environment;

/// An operator action an instance carries out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Bump table versions by hand.
    Invalidate,
    /// Load hot keys ahead of need.
    Warm,
    /// Run an ETL batch with failing tables.
    SimulatePartial,
    /// Change the engine's strategy.
    SwitchStrategy,
    /// Run the ETL simulator (`etl run`): made-up data into the warehouse.
    RunEtl,
    /// Complete an ETL batch (`etl-complete`): bump what the update log confirms.
    EtlComplete,
    /// Create the demo schema and data in an empty warehouse (`warehouse init`).
    InitWarehouse,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 7] = [
        Action::Invalidate,
        Action::Warm,
        Action::SimulatePartial,
        Action::SwitchStrategy,
        Action::RunEtl,
        Action::EtlComplete,
        Action::InitWarehouse,
    ];

    /// The action's name in commands and the event log.
    pub fn name(self) -> &'static str {
        match self {
            Action::Invalidate => "invalidate",
            Action::Warm => "warm",
            Action::SimulatePartial => "simulate-partial",
            Action::SwitchStrategy => "switch-strategy",
            Action::RunEtl => "etl-run",
            Action::EtlComplete => "etl-complete",
            Action::InitWarehouse => "warehouse-init",
        }
    }

    /// Whether it needs a typed confirmation: it makes users miss or changes how they are served.
    /// The ETL's own steps are run by jobs, which answer no prompts; they are guarded by
    /// environment and read-only mode instead.
    pub fn dangerous(self) -> bool {
        !matches!(
            self,
            Action::Warm | Action::RunEtl | Action::EtlComplete | Action::InitWarehouse
        )
    }

    /// Why `env` refuses the action outright, if it does.
    pub fn refused_in(self, env: Environment) -> Option<&'static str> {
        match (self, env) {
            (Action::SimulatePartial, Environment::Production) => {
                Some("partial updates are simulated in staging and development, not in production")
            }
            (Action::SwitchStrategy, Environment::Production) => {
                Some("switching strategy is a demo feature, not in production")
            }
            (Action::InitWarehouse, Environment::Production) => Some(
                "the demo schema and data are for staging and development, not a production warehouse",
            ),
            (Action::RunEtl, Environment::Production) => Some(
                "the ETL simulator loads made-up data: staging and development only; in production the real ETL loads, then runs `freshcache etl-complete`",
            ),
            _ => None,
        }
    }
}

/// Whether `action` may run, and if not, the error that says why.
pub fn refusal(action: Action, env: Environment, read_only: bool) -> Option<InstanceError> {
    if let Some(why) = action.refused_in(env) {
        return Some(InstanceError::Refused(why.to_string()));
    }
    if read_only {
        return Some(InstanceError::ReadOnly(action.name().to_string()));
    }
    None
}

/// Who is acting, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// The OS user.
    pub user: String,
    /// The host.
    pub host: String,
}

impl Operator {
    /// The user running this process, on this host.
    pub fn current() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(user_from_passwd)
            .unwrap_or_else(|| {
                // SAFETY: getuid has no preconditions and cannot fail.
                format!("uid {}", unsafe { libc::getuid() })
            });
        Self {
            user: user.chars().filter(|c| !c.is_control()).take(64).collect(),
            host: crate::model::events::hostname(),
        }
    }
}

/// The login name of the process's user, from the password database.
fn user_from_passwd() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call and `buf` is as long as told;
    // on success `result` points at `pwd`, whose strings live in `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::getuid(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside `buf`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_refuses_simulations_and_read_only_refuses_every_change() {
        assert!(matches!(
            refusal(Action::SimulatePartial, Environment::Production, false),
            Some(InstanceError::Refused(_))
        ));
        assert!(refusal(Action::SimulatePartial, Environment::Staging, false).is_none());
        assert!(refusal(Action::Invalidate, Environment::Production, false).is_none());
        assert!(matches!(
            refusal(Action::RunEtl, Environment::Production, false),
            Some(InstanceError::Refused(_))
        ));
        assert!(refusal(Action::EtlComplete, Environment::Production, false).is_none());
        for a in Action::ALL {
            assert!(
                refusal(a, Environment::Development, true).is_some(),
                "{a:?}"
            );
        }
        assert!(!Action::Warm.dangerous() && Action::Invalidate.dangerous());
    }
}
