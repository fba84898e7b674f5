//! Two `rollwatch run` on one store (a second unit file, a copy-pasted systemd service, a
//! controller started by hand beside the service) must never both act: the second refuses
//! at start, naming the first, and changes nothing; the first goes on and rolls back alone.

mod harness;

use std::time::Duration;

use harness::*;

#[test]
fn a_second_controller_on_one_store_refuses_and_the_first_rolls_back_alone() {
    let (d, first) = watched_good_deployment("twoctl", &["v1.1.0"], "", &[]);
    let config = d.root.path().join("rollwatch.toml");
    let events_before = events(&d.db()).len();

    let out = rollwatch(&config)
        .env("ROLLWATCH_API_TOKEN", TOKEN)
        .env("RUST_LOG", "error")
        .args(["run"])
        .timeout(Duration::from_secs(30))
        .output()
        .expect("second rollwatch run");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused, nothing changed: {said}"
    );
    assert!(
        said.contains("another rollwatch controller")
            && said.contains(&format!("(pid {})", first.child.id())),
        "names the controller already running: {said}"
    );
    assert_eq!(
        events(&d.db()).len(),
        events_before,
        "the refused one wrote nothing"
    );

    // The first still watches and acts, alone: one rollback of one bad deploy.
    d.deploy("v1.1.0");
    wait_rollback(&d.db(), "succeeded");
    d.assert_runs("v1.0.0");
    std::thread::sleep(Duration::from_secs(2));
    let rows = rollback_rows(&d.db());
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].3.as_deref(), rows[0].4.as_str()),
        (Some("v1.1.0"), "v1.0.0")
    );
}
