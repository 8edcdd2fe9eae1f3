//! The guards on operator actions, enforced here, below any UI, so a console bug or a script
//! cannot get around them. What each action is and where it is refused is the registry's
//! ([`crate::model::ops`]); this module turns its answer into the instance's error, and says who
//! is acting, for the audit log.

use serde::Serialize;

use super::InstanceError;
use crate::model::environment::Environment;
use crate::model::ops::{self, Action, Refusal};

/// Whether `action` may run, and if not, the error that says why.
pub fn refusal(action: Action, env: Environment, read_only: bool) -> Option<InstanceError> {
    ops::refusal(action, env, read_only).map(|r| match r {
        Refusal::Environment(why) => InstanceError::Refused(why.to_string()),
        Refusal::ReadOnly(action) => InstanceError::ReadOnly(action.name().to_string()),
    })
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

tokio::task_local! {
    /// Who is acting in the task running an operator action on someone's behalf (the sidecar's
    /// operator endpoints); the instance's own operator otherwise.
    static ACTOR: Operator;
}

/// Runs `action` with its audit records naming `actor` instead of this process's user: for an
/// instance acting on a request (an HTTP call), whose caller is not the process's user.
pub async fn acting_as<F: std::future::Future>(actor: Operator, action: F) -> F::Output {
    ACTOR.scope(actor, action).await
}

/// The operator acting now: the task's [`acting_as`] actor, or `own`.
pub(super) fn actor_or(own: &Operator) -> Operator {
    ACTOR
        .try_with(Operator::clone)
        .unwrap_or_else(|_| own.clone())
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
    fn refusals_become_the_instance_errors() {
        assert!(matches!(
            refusal(Action::SimulatePartial, Environment::Production, false),
            Some(InstanceError::Refused(_))
        ));
        assert!(matches!(
            refusal(Action::Warm, Environment::Production, true),
            Some(InstanceError::ReadOnly(name)) if name == "warm"
        ));
        assert!(refusal(Action::Invalidate, Environment::Production, false).is_none());
    }
}
