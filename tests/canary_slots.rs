//! The canary slots as real compose projects beside the live one: a new version starts as
//! `<project>-green` on its own port from the same directory and compose file while the live
//! project keeps serving, and is removed again; compose files whose slots could not run side by
//! side (a `container_name`, a port not taken from `${APP_PORT}`) are refused before anything
//! starts, naming why.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::*;
use rollwatch::canary::slots::{SlotError, SlotSite};
use rollwatch::rollback::{CommandRunner, LocalRunner};
use rollwatch::traffic::Slot;

fn site(d: &ComposeDeployment) -> SlotSite {
    SlotSite {
        dir: d.dir(),
        project: d.project.clone(),
        env_file: ".env".into(),
        registry: format!("{REGISTRY}/{}", d.app),
        compose: vec!["docker-compose".into()],
        port_var: "APP_PORT".into(),
        ports: [free_port(), free_port()],
    }
}

fn runner() -> Arc<dyn CommandRunner> {
    Arc::new(LocalRunner::new(Duration::from_secs(120)))
}

#[tokio::test]
async fn a_new_version_runs_as_the_green_slot_beside_the_live_project_and_is_removed() {
    let app = app_with_images("slot", &["v1.0.0", "v1.0.1"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    wait_healthy_version(d.port, "v1.0.0");
    let s = site(&d);
    let r = runner();
    s.check(&r)
        .await
        .expect("the harness's compose file can run twice");
    let green_port = s.port_of(Slot::Green);
    s.start(&r, Slot::Green, "v1.0.1")
        .await
        .expect("start the green slot");
    let green = s.project_of(Slot::Green);
    assert_eq!(green, format!("{}-green", d.project));
    wait_healthy_version(green_port, "v1.0.1");
    assert_eq!(project_containers(&green).len(), 1);
    assert!(
        health(d.port).is_some_and(|h| h.contains("v1.0.0")),
        "the live project still serves v1.0.0"
    );
    assert!(d.env_file().contains("IMAGE_TAG=v1.0.0"), ".env untouched");

    s.remove(&r, Slot::Green)
        .await
        .expect("remove the green slot");
    assert!(
        project_containers(&green).is_empty(),
        "green's containers are gone"
    );
    assert!(health(d.port).is_some_and(|h| h.contains("v1.0.0")));
}

#[tokio::test]
async fn compose_files_whose_slots_cannot_run_side_by_side_are_refused_naming_why() {
    let app = app_with_images("slotbad", &["v1.0.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let file = d.dir().join("docker-compose.yml");
    let original = std::fs::read_to_string(&file).expect("compose file");
    let r = runner();

    let named = original.replace(
        "    network_mode: host\n",
        "    network_mode: host\n    container_name: shop-backend\n",
    );
    std::fs::write(&file, named).expect("write");
    match site(&d).check(&r).await {
        Err(e @ SlotError::ContainerName { .. }) => {
            assert!(e.to_string().contains("shop-backend"), "{e}")
        }
        other => panic!("{other:?}"),
    }

    let fixed = original.replace("DEMO_PORT: ${APP_PORT}", "DEMO_PORT: \"8089\"");
    std::fs::write(&file, fixed).expect("write");
    match site(&d).check(&r).await {
        Err(e @ SlotError::FixedPort { .. }) => {
            assert!(e.to_string().contains("${APP_PORT}"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        project_containers(&site(&d).project_of(Slot::Blue)).is_empty(),
        "a refused check starts nothing"
    );
}
