//! From a running Docker host to watched: `rollwatch init` finds three compose projects named
//! the three ways teams name them (`-p`, `COMPOSE_PROJECT_NAME`, the directory), the file it
//! writes passes `check-config --probe`, and `rollwatch run` with it rolls back a bad deploy
//! of each. A target pointed at the wrong directory fails the pre-flight, named.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::*;

/// `rollwatch init --yes` over the containers carrying `label` only (other tests run beside
/// this one): (stdout, stderr).
fn init(label: &str, out: &Path) -> (String, String) {
    let o = assert_cmd::Command::new(env!("CARGO_BIN_EXE_rollwatch"))
        .args(["init", "--yes", "--label", label])
        .arg("--write")
        .arg(out)
        .timeout(Duration::from_secs(120))
        .output()
        .expect("run rollwatch init");
    let (stdout, stderr) = (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "init failed:\n{stdout}\n{stderr}");
    (stdout, stderr)
}

/// `check-config --probe`: (exit code, stdout, stderr).
fn probe(config: &Path) -> (i32, String, String) {
    let o = rollwatch(config)
        .args(["check-config", "--probe"])
        .output()
        .expect("run check-config --probe");
    (
        o.status.code().unwrap_or(-1),
        stdout(&o),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The probe table's rows for one target: (check, result, detail). The table starts at its
/// `TARGET` header, after check-config's listing of the targets.
fn rows<'a>(table: &'a str, target: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    table
        .lines()
        .skip_while(|l| !l.starts_with("TARGET"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == target).then_some(())?;
            let check = words.next()?;
            let result = words.next()?;
            let detail = l
                .split_once(&format!(" {result} "))
                .map_or("", |(_, d)| d.trim());
            Some((check, result, detail))
        })
        .collect()
}

#[test]
fn init_writes_a_config_that_passes_the_probe_and_rolls_back_each_project() {
    let app = app_with_images("onb", &["v1.0.0", "v1.1.0"]);
    push_app_images(&app, "frontend", &["v1.0.0", "v1.1.0"]);
    let flag = ComposeDeployment::up_with_project_flag(&app, "staging", "backend", "v1.0.0");
    let env_file = ComposeDeployment::up(&app, "staging", "frontend", "v1.0.0");
    let plain = ComposeDeployment::up_plain(&app, "production", "backend", "v1.0.0");
    let all = [&flag, &env_file, &plain];
    for d in all {
        wait_healthy_version(d.port, "v1.0.0");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rollwatch.toml");
    let (_, said) = init(&format!("rollwatch.test.app={app}"), &config);
    eprintln!("{said}");
    let written = std::fs::read_to_string(&config).expect("init wrote the file");
    assert!(said.contains("wrote 3 target(s)"), "{said}");
    for d in all {
        assert!(
            written.contains(&format!("compose_project = \"{}\"", d.project)),
            "project {} of {}/{} in:\n{written}",
            d.project,
            d.env,
            d.role
        );
        assert!(
            written.contains(&format!("url = \"http://127.0.0.1:{}/health\"", d.port)),
            "health URL of {}/{} in:\n{written}",
            d.env,
            d.role
        );
        assert!(
            written.contains(&format!("dir = \"{}\"", d.dir().display())),
            "{written}"
        );
    }
    let check = rollwatch(&config)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let listed = stdout(&check);
    for id in ["staging/backend", "staging/frontend", "production/backend"] {
        assert!(listed.contains(id), "{id} in:\n{listed}");
    }

    // Made fit for a test: its own API port, and a watch window that promotes in 3 s instead
    // of the default 5 minutes. Nothing else of what init wrote is touched.
    let api_port = free_port();
    let tuned = written
        .replace("127.0.0.1:9860", &format!("127.0.0.1:{api_port}"))
        .replace("[[targets]]\n", &format!("[[targets]]\n{FAST_WATCH}\n"));
    std::fs::write(&config, &tuned).expect("write tuned config");

    let (code, table, err) = probe(&config);
    assert_eq!(code, 0, "probe failed:\n{table}\n{err}");
    for id in ["staging/backend", "staging/frontend", "production/backend"] {
        let checks = rows(&table, id);
        let names: Vec<&str> = checks.iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            ["containers", "health", "registry", "compose@local"],
            "{table}"
        );
        assert!(checks.iter().all(|c| c.1 == "ok"), "{table}");
    }

    // A fourth target watching the frontend's containers but pointed at another directory.
    let wrong = format!(
        "{tuned}\n[[targets]]\nenv = \"production\"\nrole = \"frontend\"\nselector = {{ compose_project = \"{}\", compose_service = \"frontend\" }}\nhealth = {{ url = \"http://127.0.0.1:{}/health\" }}\nexecutor = {{ kind = \"compose\", dir = \"{}\", registry = \"{REGISTRY}/{app}\" }}\n",
        env_file.project,
        env_file.port,
        plain.dir().display()
    );
    let wrong_config = dir.path().join("wrong.toml");
    std::fs::write(&wrong_config, wrong).expect("write wrong config");
    let (code, table, err) = probe(&wrong_config);
    eprintln!("{table}\n{err}");
    assert_eq!(code, 1, "{table}\n{err}");
    let failed: Vec<(&str, &str, &str)> = [
        "staging/backend",
        "staging/frontend",
        "production/backend",
        "production/frontend",
    ]
    .into_iter()
    .flat_map(|id| rows(&table, id))
    .filter(|r| r.1 != "ok")
    .collect();
    assert_eq!(failed.len(), 1, "only the wrong directory fails:\n{table}");
    assert_eq!(failed[0].0, "compose@local", "{table}");
    assert!(
        failed[0].2.contains(&env_file.dir().display().to_string())
            && failed[0].2.contains(&plain.dir().display().to_string()),
        "names both directories: {}",
        failed[0].2
    );
    assert!(err.contains("production/frontend compose@local"), "{err}");

    // The file init wrote, running: a bad deploy of each project is rolled back in place.
    let db = dir.path().join("rollwatch.db");
    let _controller = Controller::start(&config, &[]);
    wait_for(
        Duration::from_secs(60),
        "v1.0.0 promoted on all three",
        || {
            let promoted = events(&db)
                .iter()
                .filter(|(k, t, _)| k == "promoted" && t.as_deref() == Some("v1.0.0"))
                .count();
            (promoted >= 3).then_some(())
        },
    );
    for d in all {
        d.deploy("v1.1.0");
    }
    let rolled = wait_for(Duration::from_secs(120), "three finished rollbacks", || {
        let rows = rollback_rows(&db);
        (rows.len() >= 3 && rows.iter().all(|r| r.0 != "intent")).then_some(rows)
    });
    assert_eq!(rolled.len(), 3, "{rolled:?}");
    for r in &rolled {
        assert_eq!(
            (r.0.as_str(), r.4.as_str()),
            ("succeeded", "v1.0.0"),
            "{rolled:?}"
        );
    }
    for d in all {
        d.assert_runs("v1.0.0");
        assert!(
            d.env_file().contains("IMAGE_TAG=v1.0.0\n"),
            "{}",
            d.env_file()
        );
        assert_eq!(
            project_containers(&d.project).len(),
            1,
            "no second project beside {}",
            d.project
        );
    }
}

#[test]
fn a_docker_run_container_gets_a_docker_target_and_what_init_cannot_tell_is_named() {
    let app = app_with_images("onr", &["v1.0.0"]);
    let c = RunContainer::start(&app, "v1.0.0", &[], &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("rollwatch.toml");
    let (_, said) = init(&format!("rollwatch.test={app}"), &config);
    assert!(said.contains("1 field(s) left commented"), "{said}");
    let written = std::fs::read_to_string(&config).expect("init wrote the file");
    assert!(
        written.contains(&format!(
            "executor = {{ kind = \"docker\", image = \"{}\" }}",
            c.repository()
        )),
        "{written}"
    );
    assert!(
        written.contains(&format!("labels = {{ \"rollwatch.test\" = \"{app}\" }}")),
        "{written}"
    );
    assert!(
        written.contains(&format!("http://127.0.0.1:{}/health", c.port)),
        "{written}"
    );

    // `<app>-backend` names no environment: the file says so, and check-config names the field.
    let check = rollwatch(&config)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert_eq!(check.status.code(), Some(2));
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("missing field `env`"), "{err}");

    let fixed: String = written
        .lines()
        .map(|l| {
            if l.starts_with("# env = ") {
                "env = \"production\"".to_string()
            } else {
                l.replace("127.0.0.1:9860", &format!("127.0.0.1:{}", free_port()))
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, fixed).expect("write fixed config");
    let (code, table, err) = probe(&config);
    assert_eq!(code, 0, "{table}\n{err}");
    let checks = rows(&table, "production/backend");
    let names: Vec<&str> = checks.iter().map(|c| c.0).collect();
    assert_eq!(
        names,
        ["containers", "health", "registry", "docker"],
        "{table}"
    );
}

/// `rollwatch init` on a terminal (`script` gives it one): each target is asked about, and an
/// edit changes what is written.
#[test]
fn on_a_terminal_init_asks_per_target_and_takes_edits() {
    let app = app_with_images("oni", &["v1.0.0"]);
    let c = RunContainer::start(&app, "v1.0.0", &[], &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("asked.toml");
    let command = format!(
        "{} init --label rollwatch.test={app} --write {}",
        env!("CARGO_BIN_EXE_rollwatch"),
        config.display()
    );
    // Edit: env production, role api, health kept; then accept.
    let o = assert_cmd::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .write_stdin("e\nproduction\napi\n\na\n")
        .timeout(Duration::from_secs(120))
        .output()
        .expect("run init under script");
    let said = stdout(&o);
    assert!(o.status.success(), "{said}");
    assert!(said.contains("[a]ccept, [s]kip or [e]dit?"), "{said}");
    let written = std::fs::read_to_string(&config).expect("init wrote the file");
    assert!(
        written.contains("env = \"production\"\nrole = \"api\"\n"),
        "{written}"
    );
    assert!(
        written.contains(&format!("http://127.0.0.1:{}/health", c.port)),
        "{written}"
    );

    // Skipping the only target writes nothing.
    let skipped = dir.path().join("skipped.toml");
    let command = command.replace(
        &config.display().to_string(),
        &skipped.display().to_string(),
    );
    let o = assert_cmd::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .write_stdin("s\n")
        .timeout(Duration::from_secs(120))
        .output()
        .expect("run init under script");
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("nothing written"), "{}", stdout(&o));
    assert!(!skipped.exists());
}
