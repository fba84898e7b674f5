//! `rollwatch rollback` beside a controller that is alive but does not answer: it refuses, and
//! runs nothing itself.

mod harness;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use harness::*;

#[test]
fn a_rollback_is_refused_not_run_beside_a_controller_that_hangs() {
    let app = app_with_images("hang", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), "");
    // Something holds the controller's address: it accepts connections (the kernel does, into
    // the backlog) and never answers, for at most 60 s.
    let text = std::fs::read_to_string(&config).expect("config");
    let listen = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("listen = \"")
                .and_then(|r| r.strip_suffix('"'))
        })
        .expect("listen in the config")
        .to_string();
    let hung = TcpListener::bind(&listen).expect("hold the controller's address");
    let ran = d.root.path().join("compose-ran");
    let path = compose_wrapper(
        d.root.path(),
        &format!("echo \"$*\" >> {}\nexec \"$REAL\" \"$@\"", ran.display()),
    );
    let env_before = d.env_file();
    let started = Instant::now();
    let out = rollwatch(&config)
        .env("PATH", &path)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .args(["rollback", "staging", "backend", "v1.0.0"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run rollwatch rollback");
    let took = started.elapsed();
    drop(hung);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "refused: {err}");
    assert!(
        err.contains(&format!(
            "a controller listens at http://{listen} but is not answering"
        )) && err.contains("not rolling back beside it"),
        "{err}"
    );
    assert!(
        !ran.exists(),
        "compose ran: {:?}",
        std::fs::read_to_string(&ran)
    );
    assert_eq!(d.env_file(), env_before, ".env untouched");
    assert_eq!(
        d.container().image_ref,
        format!("{}:v1.1.0", d.repository())
    );
    eprintln!("refused after {took:?}");
}
