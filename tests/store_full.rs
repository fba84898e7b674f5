//! A store that cannot be written (its disk full) must stop rollwatch from acting rather than
//! let it act without a record: the rollback is refused before anything runs, counted, and the
//! bad version keeps running until the store takes writes again; then the retry rolls back with
//! its record. The store lives on a 4 MiB tmpfs this test mounts and fills.

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::*;

/// A small tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("rw-small-disk")
            .tempdir()
            .expect("mount point")
            .keep();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=4m",
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        SmallDisk(dir)
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        let _ = std::process::Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.filler().display()))
            .output();
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove the filler");
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn refused_rollbacks(api_port: u16) -> f64 {
    let text = http_get(api_port, "/metrics")
        .map(|r| r.1)
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("rollwatch_rollbacks_total{") && l.contains("result=\"refused\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn store_config(config: &Path, store: &Path) {
    let text = std::fs::read_to_string(config).expect("config").replace(
        "store = \"rollwatch.db\"",
        &format!("store = \"{}\"", store.display()),
    );
    std::fs::write(config, text).expect("config");
}

#[test]
fn a_full_store_refuses_the_rollback_and_the_retry_acts_once_it_takes_writes() {
    let disk = SmallDisk::mount();
    let db = disk.0.join("rollwatch.db");
    let app = app_with_images("full", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let watch = r#"watch = { interval = "500ms", failures = 2, grace = "1s", bake = "3s", cooldown = "0s" }"#;
    let config = d.write_config(&format!("{REGISTRY}/{app}"), watch);
    store_config(&config, &db);
    let c = Controller::start(&config, &[]);
    wait_event(&db, "promoted", "v1.0.0", Duration::from_secs(60));

    disk.fill();
    d.deploy("v1.1.0");
    // The verdict comes, the rollback cannot write its intent: refused, nothing run.
    wait_for(Duration::from_secs(60), "a refused rollback", || {
        (refused_rollbacks(d.api_port) >= 1.0).then_some(())
    });
    d.assert_runs("v1.1.0");
    let rows = rollback_rows(&db);
    assert!(
        rows.is_empty(),
        "no record could be written, so none exists: {rows:?}"
    );
    // Counted first, then reported with its event.
    wait_for(
        Duration::from_secs(10),
        "the log saying why, loudly",
        || {
            c.log_text()
                .lines()
                .any(|l| {
                    l.contains(" WARN ")
                        && l.contains(
                            "rollback refused: store query failed: database or disk is full",
                        )
                })
                .then_some(())
        },
    );

    // Room again: the next retry writes its intent first, then rolls back.
    disk.free();
    let (state, trigger, _, from, to) = wait_rollback(&db, "succeeded");
    assert_eq!(
        (
            state.as_str(),
            trigger.as_str(),
            from.as_deref(),
            to.as_str()
        ),
        ("succeeded", "health", Some("v1.1.0"), "v1.0.0")
    );
    d.assert_runs("v1.0.0");
    drop(c);
}
