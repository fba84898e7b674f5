//! A target is one `env` × `role` (e.g. `staging/backend`): the unit rollwatch watches and rolls
//! back. This module owns its identity and how its containers are recognised; it never talks to
//! Docker itself.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The environments the deploy pipeline knows; each has its own fallback branch tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Env {
    Staging,
    Production,
}

impl Env {
    pub fn as_str(self) -> &'static str {
        match self {
            Env::Staging => "staging",
            Env::Production => "production",
        }
    }

    /// The branch whose image is the last resort when no known-good tag exists (runbook default).
    pub fn default_fallback_tag(self) -> &'static str {
        match self {
            Env::Staging => "develop",
            Env::Production => "main",
        }
    }

    pub fn parse(s: &str) -> Option<Env> {
        match s {
            "staging" => Some(Env::Staging),
            "production" => Some(Env::Production),
            _ => None,
        }
    }
}

impl fmt::Display for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `staging/backend`: the key of every record, metric and lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetId {
    pub env: Env,
    pub role: String,
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.env, self.role)
    }
}

/// Which containers belong to a target. Compose labels are the common case; any label set works
/// for containers started by `docker run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A canary target's: the containers are those of the projects `<compose_project>-blue`
    /// and `-green` (its two slots), not of `compose_project` itself. Set from the strategy.
    #[serde(skip)]
    pub slots: bool,
}

/// The suffixes of a canary target's two slot projects.
const SLOT_SUFFIXES: [&str; 2] = ["-blue", "-green"];

impl Selector {
    /// All label pairs a container must carry, compose shorthands included.
    pub fn required_labels(&self) -> BTreeMap<String, String> {
        let mut all = self.labels.clone();
        // Two slot projects cannot be one label filter: they are told apart by `matches`.
        if let Some(p) = self.compose_project.as_ref().filter(|_| !self.slots) {
            all.insert("com.docker.compose.project".into(), p.clone());
        }
        if let Some(s) = &self.compose_service {
            all.insert("com.docker.compose.service".into(), s.clone());
        }
        all
    }

    /// Whether a container with these labels belongs to the target. Called for every target
    /// against every container of a shared engine listing, so it allocates nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let has = |key: &str, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|v| labels.get(key).is_some_and(|l| l == v))
        };
        let project = match (&self.compose_project, self.slots) {
            (Some(p), true) => labels
                .get("com.docker.compose.project")
                .and_then(|l| l.strip_prefix(p.as_str()))
                .is_some_and(|suffix| SLOT_SUFFIXES.contains(&suffix)),
            _ => has("com.docker.compose.project", &self.compose_project),
        };
        project
            && has("com.docker.compose.service", &self.compose_service)
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Docker API `label` filter values (`key=value`), so listing is done by the engine.
    pub fn docker_label_filters(&self) -> Vec<String> {
        self.required_labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_selector_matches_only_its_project_and_service() {
        let sel = Selector {
            compose_project: Some("shop-staging-backend".into()),
            compose_service: Some("backend".into()),
            ..Selector::default()
        };
        let mut labels = BTreeMap::new();
        labels.insert(
            "com.docker.compose.project".to_string(),
            "shop-staging-backend".to_string(),
        );
        labels.insert(
            "com.docker.compose.service".to_string(),
            "backend".to_string(),
        );
        assert!(sel.matches(&labels));
        labels.insert(
            "com.docker.compose.service".to_string(),
            "frontend".to_string(),
        );
        assert!(!sel.matches(&labels));
    }

    #[test]
    fn a_canary_selector_matches_both_slot_projects_and_nothing_else() {
        let sel = Selector {
            compose_project: Some("shop".into()),
            slots: true,
            ..Selector::default()
        };
        let with = |project: &str| {
            BTreeMap::from([(
                "com.docker.compose.project".to_string(),
                project.to_string(),
            )])
        };
        assert!(sel.matches(&with("shop-blue")));
        assert!(sel.matches(&with("shop-green")));
        for other in ["shop", "shop-red", "shopx-blue", "blue"] {
            assert!(!sel.matches(&with(other)), "{other}");
        }
        assert!(
            sel.docker_label_filters().is_empty(),
            "two projects are no one label filter"
        );
    }
}
