//! Environment variables that hold rollwatch's secrets (the API token, the registry and
//! Prometheus `Authorization` values) and must not reach the commands rollwatch runs.
//!
//! Why a deny list and not `env_clear` plus an allow list: compose and ssh need whatever the
//! operator's environment gives them (PATH, HOME, DOCKER_*, COMPOSE_*, proxies, credential
//! helpers, SSH_AUTH_SOCK, XDG_*), and an allow list would break real set-ups silently. rollwatch's
//! own secrets are known by name: every `ROLLWATCH_*` variable, plus the names the configuration
//! points at (`controller.api_token_env`, a Prometheus source's `auth_header_env`), marked when
//! the configuration is loaded.

use std::collections::BTreeSet;
use std::sync::Mutex;

static MARKED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Names every variable with this prefix a secret.
pub const PREFIX: &str = "ROLLWATCH_";

/// Marks `name` as holding a secret.
pub fn mark(name: &str) {
    if let Ok(mut m) = MARKED.lock() {
        m.insert(name.to_string());
    }
}

/// Whether the variable `name` must be kept from child processes.
pub fn is_secret(name: &str) -> bool {
    name.starts_with(PREFIX) || MARKED.lock().is_ok_and(|m| m.contains(name))
}

/// Removes every secret variable of this process from `cmd`'s environment.
pub fn scrub(cmd: &mut tokio::process::Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_secret) {
            cmd.env_remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollwatch_variables_and_marked_names_are_secret() {
        assert!(is_secret("ROLLWATCH_API_TOKEN"));
        assert!(is_secret("ROLLWATCH_REGISTRY_AUTH"));
        assert!(!is_secret("MY_PROM_AUTH_FOR_TEST"));
        mark("MY_PROM_AUTH_FOR_TEST");
        assert!(is_secret("MY_PROM_AUTH_FOR_TEST"));
        assert!(!is_secret("PATH") && !is_secret("DOCKER_HOST"));
    }
}
