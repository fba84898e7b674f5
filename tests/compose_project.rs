//! The compose executor acts on exactly the watched containers: it runs as their compose
//! project (`-p`), wherever that name came from (`-p` at deploy time or `COMPOSE_PROJECT_NAME`),
//! can take the directory from their labels, and a rollback whose new container cannot start
//! brings the previous containers back with `.env` untouched.

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::*;

/// (state, to_tag, steps JSON) of the only rollback record, once it is finished.
fn finished_rollback(db: &Path) -> (String, String, String) {
    let rows = wait_for(
        Duration::from_secs(90),
        "a finished rollback record",
        || {
            let rows: Vec<(String, String, String)> = query(
                db,
                "SELECT state, to_tag, steps FROM rollbacks ORDER BY id",
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            );
            rows.iter()
                .all(|r| r.0 != "intent")
                .then_some(rows)
                .filter(|r| !r.is_empty())
        },
    );
    assert_eq!(rows.len(), 1, "one rollback record: {rows:?}");
    rows.into_iter().next().unwrap_or_default()
}

/// The app has exactly one container, in `d`'s own project, running `tag`'s image.
fn assert_only_container_runs(d: &ComposeDeployment, tag: &str) {
    let want = image_id(&format!("{}:{tag}", d.repository())).expect("image of the tag is local");
    let all = app_containers(&d.app);
    assert_eq!(all.len(), 1, "one container across all projects: {all:?}");
    assert_eq!(all[0].project, d.project, "no second project: {all:?}");
    assert_eq!(all[0].state, "running", "{all:?}");
    assert_eq!(all[0].image_id, want, "runs {tag}: {all:?}");
}

fn assert_env_tag(d: &ComposeDeployment, tag: &str) {
    let env = d.env_file();
    let tags: Vec<&str> = env
        .lines()
        .filter(|l| l.starts_with("IMAGE_TAG="))
        .collect();
    assert_eq!(tags, [format!("IMAGE_TAG={tag}")], "{env}");
}

#[test]
fn project_started_with_p_is_rolled_back_in_place_by_the_controller() {
    let (d, _controller) = {
        let app = app_with_images("cpp", &["v1.0.0", "v1.1.0"]);
        let d = ComposeDeployment::up_with_project_flag(&app, "staging", "backend", "v1.0.0");
        let config = d.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
        let c = Controller::start(&config, &[]);
        wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
        (d, c)
    };
    // v1.1.0 answers 503 on /health: the controller must roll it back.
    d.deploy("v1.1.0");
    let started = Instant::now();
    let (state, to_tag, _) = finished_rollback(&d.db());
    eprintln!("deploy to finished rollback: {:?}", started.elapsed());

    assert_eq!((state.as_str(), to_tag.as_str()), ("succeeded", "v1.0.0"));
    assert_only_container_runs(&d, "v1.0.0");
    assert_env_tag(&d, "v1.0.0");
    assert!(
        !d.env_file().contains("COMPOSE_PROJECT_NAME"),
        "rollwatch passes -p, it does not rename the project in .env"
    );
    wait_healthy_version(d.port, "v1.0.0");
}

#[test]
fn unset_dir_is_taken_from_the_labels_of_the_watched_containers() {
    let app = app_with_images("cpd", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up_with_project_flag(&app, "staging", "backend", "v1.1.0");
    let config = d.write_config_with_dir(&format!("{REGISTRY}/{app}"), "", false);

    let (text, _) = cli_rollback(&config, "v1.0.0", 0);
    assert!(
        text.contains("rolled back staging/backend from v1.1.0 to v1.0.0"),
        "{text}"
    );

    assert_only_container_runs(&d, "v1.0.0");
    assert_env_tag(&d, "v1.0.0");
    let (state, to_tag, _) = finished_rollback(&d.db());
    assert_eq!((state.as_str(), to_tag.as_str()), ("succeeded", "v1.0.0"));
    let output: Vec<String> = query(&d.db(), "SELECT output FROM rollbacks", |r| r.get(0));
    assert!(
        output[0].contains(&format!("-p {}", d.project))
            && output[0].contains(&format!("-f {}/docker-compose.yml", d.dir().display())),
        "ran as the labelled project with the labelled file: {}",
        output[0]
    );
}

#[test]
fn project_named_in_env_file_is_rolled_back_in_place() {
    let app = app_with_images("cpe", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    assert!(d.env_file().contains("COMPOSE_PROJECT_NAME="));
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");

    cli_rollback(&config, "v1.0.0", 0);

    assert_only_container_runs(&d, "v1.0.0");
    assert_env_tag(&d, "v1.0.0");
    let (state, to_tag, _) = finished_rollback(&d.db());
    assert_eq!((state.as_str(), to_tag.as_str()), ("succeeded", "v1.0.0"));
}

#[test]
fn rollback_whose_new_container_cannot_start_restores_the_previous_containers() {
    let app = app_with_images("cpf", &["v1.0.0"]);
    push_unstartable_image(&app, "backend", "v6.6.6");
    let d = ComposeDeployment::up_with_project_flag(&app, "staging", "backend", "v1.0.0");
    wait_healthy_version(d.port, "v1.0.0");
    let original = d.container().image_id;
    let env_before = std::fs::read(d.env_path()).expect("read .env");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");

    let started = Instant::now();
    let out = rollwatch(&config)
        .args(["rollback", "staging", "backend", "v6.6.6"])
        .assert()
        .code(1);
    eprintln!("failed rollback with restore: {:?}", started.elapsed());

    let all = app_containers(&app);
    assert_eq!(all.len(), 1, "nothing new left behind: {all:?}");
    assert_eq!(all[0].project, d.project, "{all:?}");
    assert_eq!(all[0].state, "running", "{all:?}");
    assert_eq!(all[0].image_id, original, "the original image runs again");
    assert_eq!(
        std::fs::read(d.env_path()).expect("read .env"),
        env_before,
        ".env byte-identical"
    );
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("v1.0.0 was brought back"),
        "the error says the previous tag is back: {stderr}"
    );
    wait_healthy_version(d.port, "v1.0.0");

    let (state, to_tag, steps) = finished_rollback(&d.db());
    assert_eq!((state.as_str(), to_tag.as_str()), ("failed", "v6.6.6"));
    let steps: serde_json::Value = serde_json::from_str(&steps).expect("steps JSON");
    let names: Vec<(&str, bool)> = steps
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| (s["name"].as_str().unwrap_or(""), s["ok"] == true))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        names,
        [("pull", true), ("up", false), ("restore", true)],
        "{steps}"
    );
}

#[test]
fn check_config_warns_when_the_directory_would_name_another_project() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("opt/shop/staging/backend");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join(".env"), "IMAGE_TAG=v1.0.0\n").expect(".env");
    let config = root.path().join("rollwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"[[targets]]
env = "staging"
role = "backend"
selector = {{ compose_project = "shop-staging-backend", compose_service = "backend" }}
health = {{ url = "http://127.0.0.1:9/health" }}
executor = {{ kind = "compose", dir = "{}", registry = "{REGISTRY}/shop" }}
"#,
            dir.display()
        ),
    )
    .expect("config");

    let out = rollwatch(&config).arg("check-config").assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("would use project \"backend\"")
            && stderr.contains("passes `-p shop-staging-backend`"),
        "{stderr}"
    );

    std::fs::write(
        dir.join(".env"),
        "COMPOSE_PROJECT_NAME=shop-staging-backend\nIMAGE_TAG=v1.0.0\n",
    )
    .expect(".env");
    let out = rollwatch(&config).arg("check-config").assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(!stderr.contains("warning"), "{stderr}");
}
