//! Many targets on one engine share one container view: 200 targets on 40 real containers, one
//! bad deploy among them, exactly that one rolled back and no other target touched.

mod harness;

use std::collections::BTreeSet;
use std::time::Duration;

use harness::*;

/// Compose projects of 13 demo services each: 39 shared containers, about five targets each.
const PROJECTS: usize = 3;
const SERVICES: usize = 13;

/// Brings up the shared projects; returns (project, service, port) per container and the
/// project directories (kept alive by the returned temp dir).
fn shared_containers(app: &str) -> (tempfile::TempDir, Vec<(String, String, u16)>) {
    let root = tempfile::tempdir().expect("temp dir");
    let mut all = Vec::new();
    for p in 0..PROJECTS {
        let project = format!("{app}-shared{p}");
        let dir = root.path().join(&project);
        std::fs::create_dir_all(&dir).expect("project dir");
        let mut body = String::from("version: \"3.7\"\nservices:\n");
        for s in 0..SERVICES {
            let service = format!("svc{s:02}");
            let port = free_port();
            body.push_str(&format!(
                "  {service}:\n    image: {REGISTRY}/demo/backend:v1.0.0\n    network_mode: host\n    labels:\n      rollwatch.test.app: {app}\n    environment:\n      DEMO_PORT: \"{port}\"\n"
            ));
            all.push((project.clone(), service, port));
        }
        std::fs::write(dir.join("docker-compose.yml"), body).expect("compose file");
        let out = std::process::Command::new("docker-compose")
            .args(["-p", &project, "up", "-d"])
            .current_dir(&dir)
            .output()
            .expect("docker-compose up");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (root, all)
}

#[test]
fn two_hundred_targets_on_forty_containers_roll_back_only_the_bad_deploy() {
    let app = app_with_images("sc", &["v1.0.0", "v1.1.0"]);
    let bad = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let (_shared_root, shared) = shared_containers(&app);
    for (_, _, port) in &shared {
        wait_for(Duration::from_secs(30), "shared container healthy", || {
            health(*port).filter(|b| b.contains("v1.0.0"))
        });
    }

    // The bad deploy's own target (staging/backend) plus 199 on the 39 shared containers.
    let config = bad.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    let mut text = std::fs::read_to_string(&config).expect("config");
    let mut ids = BTreeSet::from(["staging/backend".to_string()]);
    for n in 0..199 {
        let (project, service, port) = &shared[n % shared.len()];
        let env = if n % 2 == 0 { "staging" } else { "production" };
        let role = format!("r{n:03}");
        ids.insert(format!("{env}/{role}"));
        text.push_str(&format!(
            "\n[[targets]]\nenv = \"{env}\"\nrole = \"{role}\"\nselector = {{ compose_project = \"{project}\", compose_service = \"{service}\" }}\nhealth = {{ url = \"http://127.0.0.1:{port}/health\", timeout = \"1s\" }}\nexecutor = {{ kind = \"compose\", registry = \"{REGISTRY}/demo\", image = \"{REGISTRY}/demo/backend\" }}\n{FAST_WATCH}\n"
        ));
    }
    assert_eq!(ids.len(), 200);
    std::fs::write(&config, text).expect("write config");

    let db = bad.db();
    let _controller = Controller::start(&config, &[]);
    wait_for(Duration::from_secs(90), "all 200 targets promoted", || {
        let promoted: BTreeSet<String> =
            query(&db, "SELECT env || '/' || role FROM known_good", |r| {
                r.get(0)
            })
            .into_iter()
            .collect();
        (promoted == ids).then_some(())
    });

    bad.deploy("v1.1.0");
    let rows = wait_for(Duration::from_secs(60), "a finished rollback", || {
        let rows = rollback_rows(&db);
        (!rows.is_empty() && rows.iter().all(|r| r.0 != "intent")).then_some(rows)
    });
    // Time for any wrong verdict elsewhere to show: several watch windows of every target.
    std::thread::sleep(Duration::from_secs(8));
    let targets: Vec<String> = query(
        &db,
        "SELECT env || '/' || role FROM rollbacks ORDER BY id",
        |r| r.get(0),
    );
    assert_eq!(
        targets,
        ["staging/backend"],
        "only the bad deploy: {rows:?}"
    );
    assert_eq!(rows[0].0, "succeeded", "{rows:?}");
    assert_eq!(rows[0].4, "v1.0.0", "{rows:?}");
    bad.assert_runs("v1.0.0");
    let regressed: Vec<String> = query(
        &db,
        "SELECT env || '/' || role FROM events WHERE kind IN ('regressed', 'withheld', 'unhealthy')",
        |r| r.get(0),
    );
    assert!(
        regressed.iter().all(|t| t == "staging/backend"),
        "no other target judged bad: {regressed:?}"
    );
    for (_, _, port) in &shared {
        assert!(health(*port).is_some_and(|b| b.contains("v1.0.0")));
    }
}
