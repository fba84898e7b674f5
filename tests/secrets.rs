//! Commands rollwatch runs get no secret of rollwatch's: a compose wrapper records its own
//! environment during a real rollback.

mod harness;

use harness::*;

#[test]
fn compose_runs_without_rollwatch_secrets_in_its_environment() {
    let app = app_with_images("sec", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.1.0");
    // A Prometheus source names its own secret variable; nothing reads it in a CLI rollback,
    // but the configuration marks the name.
    let metrics = "[targets.metrics]\nsource = { kind = \"prometheus\", url = \"http://127.0.0.1:9\", requests = 'sum(r)', errors = 'sum(e)', auth_header_env = \"TEAM_PROM_AUTH\" }";
    let config = d.write_config(&format!("{REGISTRY}/{app}"), metrics);
    let seen = d.root.path().join("compose-env");
    let path = compose_wrapper(
        d.root.path(),
        &format!("env >> {}\nexec \"$REAL\" \"$@\"", seen.display()),
    );
    rollwatch(&config)
        .env("PATH", &path)
        .env("ROLLWATCH_API_TOKEN", "api-secret-1")
        .env("ROLLWATCH_REGISTRY_AUTH", "Bearer registry-secret-2")
        .env("ROLLWATCH_ANYTHING_ELSE", "secret-3")
        .env("TEAM_PROM_AUTH", "Bearer prom-secret-4")
        .env("KEEP_ME", "kept-5")
        .args(["rollback", "staging", "backend", "v1.0.0"])
        .assert()
        .code(0);
    assert_eq!(
        d.container().image_ref,
        format!("{}:v1.0.0", d.repository()),
        "the rollback ran"
    );
    let env = std::fs::read_to_string(&seen).expect("the wrapper recorded its environment");
    assert!(env.contains("KEEP_ME=kept-5"), "the capture works: {env}");
    assert!(env.contains("PATH="), "{env}");
    for secret in ["secret-1", "secret-2", "secret-3", "secret-4", "ROLLWATCH_"] {
        assert!(!env.contains(secret), "{secret} leaked to compose:\n{env}");
    }
}
