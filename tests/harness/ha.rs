//! Several `rollwatch run` on one PostgreSQL store (high availability): configs that differ
//! only in their instance name and API port, a compose wrapper that logs which instance ran
//! which compose command, and readers of the store's rows straight from PostgreSQL.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::postgres::PgCluster;
use super::*;

/// One deployment, one database, and the log of every compose call any instance made.
pub struct HaBed {
    pub d: ComposeDeployment,
    pub pg: PgCluster,
    /// `<instance> <compose arguments>`, one line per call.
    pub calls: PathBuf,
    /// `PATH` with the logging compose wrapper first.
    pub path: String,
    repository: String,
    watch: String,
}

/// One `rollwatch run` of the bed.
pub struct Instance {
    pub name: String,
    pub api_port: u16,
    pub config: PathBuf,
    pub c: Controller,
}

impl Instance {
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(self.api_port, &format!("{name}{{"), &[])
    }

    pub fn wait_metric(&self, name: &str, value: f64, within: Duration) {
        wait_for(within, &format!("{} {name} = {value}", self.name), || {
            (self.metric(name) == Some(value)).then_some(())
        });
    }

    pub fn pid(&self) -> String {
        self.c.child.id().to_string()
    }
}

impl HaBed {
    /// A deployment on v1.0.0 with v1.1.0 (bad: no /health) in its registry, a fresh
    /// PostgreSQL, and a compose wrapper running `gate` (shell) after logging each call.
    pub fn new(prefix: &str, gate: &str) -> HaBed {
        HaBed::with_watch(prefix, gate, FAST_WATCH)
    }

    /// The same with another `watch` table.
    pub fn with_watch(prefix: &str, gate: &str, watch: &str) -> HaBed {
        HaBed::build(prefix, gate, watch, &["v1.0.0", "v1.1.0"])
    }

    /// The same with these tags in the registry (v1.0.0 runs first).
    pub fn build(prefix: &str, gate: &str, watch: &str, tags: &[&str]) -> HaBed {
        let app = app_with_images(prefix, tags);
        let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
        let calls = d.root.path().join("compose-calls");
        let path = compose_wrapper(
            d.root.path(),
            &format!(
                "echo \"$HA_TEST_INSTANCE $*\" >> {calls}\n{gate}\nexec \"$REAL\" \"$@\"",
                calls = calls.display()
            ),
        );
        HaBed {
            watch: watch.to_string(),
            repository: format!("{REGISTRY}/{app}"),
            d,
            pg: PgCluster::start(),
            calls,
            path,
        }
    }

    /// A config of instance `name` on the shared database, with its own API port.
    pub fn config(&self, name: &str, api_port: u16) -> PathBuf {
        let base = self.d.write_config(&self.repository, &self.watch);
        let text = std::fs::read_to_string(&base).expect("read config");
        let text = text
            .replace(
                "store = \"rollwatch.db\"",
                &format!("store = \"{}\"\ninstance = \"{name}\"", self.pg.url()),
            )
            .replace(
                &format!("listen = \"127.0.0.1:{}\"", self.d.api_port),
                &format!("listen = \"127.0.0.1:{api_port}\""),
            );
        let path = self.d.root.path().join(format!("rollwatch-{name}.toml"));
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn start(&self, name: &str, env: &[(&str, &str)]) -> Instance {
        let api_port = free_port();
        let config = self.config(name, api_port);
        let mut all = vec![("PATH", self.path.as_str()), ("HA_TEST_INSTANCE", name)];
        all.extend_from_slice(env);
        Instance {
            name: name.into(),
            api_port,
            c: Controller::start(&config, &all),
            config,
        }
    }

    /// Starts `name` and waits until it leads.
    pub fn start_leader(&self, name: &str, env: &[(&str, &str)]) -> Instance {
        let i = self.start(name, env);
        i.wait_metric("rollwatch_leader", 1.0, Duration::from_secs(30));
        i
    }

    /// Compose calls as (instance, arguments).
    pub fn calls(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(i, a)| (i.to_string(), a.to_string()))
            .collect()
    }

    /// The instances that ran `up` (one entry per call).
    pub fn ups(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(_, a)| a.contains(" up "))
            .map(|(i, _)| i)
            .collect()
    }

    pub fn pulls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(_, a)| a.ends_with(" pull"))
            .map(|(i, _)| i)
            .collect()
    }

    fn client(&self) -> Option<::postgres::Client> {
        ::postgres::Client::connect(&self.pg.url(), ::postgres::NoTls).ok()
    }

    /// (id, state, from_tag, to_tag, epoch) of every rollback record, oldest first.
    pub fn rollbacks(&self) -> Vec<(i64, String, Option<String>, String, i64)> {
        let Some(mut c) = self.client() else {
            return Vec::new();
        };
        c.query(
            "SELECT id, state, from_tag, to_tag, epoch FROM rollbacks ORDER BY id",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
                .collect()
        })
        .unwrap_or_default()
    }

    /// (kind, tag, message) of every event, oldest first.
    pub fn events(&self) -> Vec<(String, Option<String>, String)> {
        let Some(mut c) = self.client() else {
            return Vec::new();
        };
        c.query("SELECT kind, tag, message FROM events ORDER BY id", &[])
            .map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn wait_event(&self, kind: &str, tag: &str, within: Duration) -> String {
        wait_for(within, &format!("event {kind} {tag}"), || {
            self.events()
                .into_iter()
                .find(|(k, t, _)| k == kind && t.as_deref() == Some(tag))
                .map(|(_, _, m)| m)
        })
    }

    pub fn wait_rollback(
        &self,
        state: &str,
        within: Duration,
    ) -> (i64, String, Option<String>, String, i64) {
        wait_for(within, &format!("a rollback record {state}"), || {
            self.rollbacks().into_iter().find(|r| r.1 == state)
        })
    }

    /// (holder, epoch) of a live lease; the holder is `<instance>:<pid>.<random>`.
    pub fn lease(&self) -> Option<(String, i64)> {
        let mut c = self.client()?;
        let row = c
            .query_opt(
                "SELECT holder, epoch FROM leader_lease WHERE expires_at > now()",
                &[],
            )
            .ok()??;
        Some((row.get(0), row.get(1)))
    }

    /// How long after `since` instance `name` held the lease (polled every 100 ms).
    pub fn wait_lease_of(&self, name: &str, since: Instant, within: Duration) -> Duration {
        wait_for(within, &format!("{name} to take the lease"), || {
            self.lease()
                .filter(|(h, _)| h.starts_with(&format!("{name}:")))
                .map(|_| since.elapsed())
        })
    }
}

impl Drop for HaBed {
    /// A failed test shows what ran and what was recorded.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!(
            "---- compose calls ----\n{}",
            std::fs::read_to_string(&self.calls).unwrap_or_default()
        );
        if let Some(mut c) = self.client() {
            if let Ok(rows) = c.query(
                "SELECT id, state, epoch, steps, output, error FROM rollbacks ORDER BY id",
                &[],
            ) {
                for r in rows {
                    let (id, state, epoch, steps, output, error): (
                        i64,
                        String,
                        i64,
                        String,
                        String,
                        Option<String>,
                    ) = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
                    eprintln!("---- rollback #{id} {state} epoch {epoch} error {error:?}\nsteps {steps}\n{output}");
                }
            }
        }
    }
}
