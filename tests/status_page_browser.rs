//! The status page in a real headless Chromium: a bad deploy on the Docker test bed shows up
//! live (no reload) as watching, regressed and rolled back, each timeline row within 2 s of its
//! event's timestamp in the API; the incident page has the steps and the evidence chart; a
//! logged-in person pauses the target from the page; a POST without the CSRF token or without
//! the session is refused and changes nothing.

mod harness;

use std::time::Duration;

use harness::browser::Browser;
use harness::*;

/// Grace 3 s: the target stays `watching` for a few of the page's 1 s row updates.
const WATCH: &str =
    r#"watch = { interval = "500ms", failures = 2, grace = "3s", bake = "6s", cooldown = "5m" }"#;

fn api_events(port: u16) -> Vec<serde_json::Value> {
    let (_, body) = http_get(port, "/api/v1/events?limit=100").expect("events");
    serde_json::from_str(&body).expect("events JSON")
}

fn api_paused(port: u16) -> bool {
    let (_, body) = http_get(port, "/api/v1/targets").expect("targets");
    let v: serde_json::Value = serde_json::from_str(&body).expect("targets JSON");
    v[0]["paused"].as_bool().expect("paused")
}

/// Waits for the timeline row of the API event `kind` on `tag`; returns (API at_ms, when the
/// page inserted the row by its own clock).
fn row_of(b: &mut Browser, port: u16, kind: &str, tag: &str) -> (i64, i64) {
    let event = wait_for(Duration::from_secs(60), &format!("a {kind} event"), || {
        api_events(port)
            .into_iter()
            .find(|e| e["kind"] == kind && (tag.is_empty() || e["tag"] == tag))
    });
    let id = event["id"].as_i64().expect("event id");
    let at_ms = event["at_ms"].as_i64().expect("event at_ms");
    let selector = format!("#event-{id}");
    b.wait_for(&selector, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the page never showed {kind} (event {id}): {e}"));
    let seen = b
        .attr(&selector, "data-seen-at-ms")
        .expect("attr")
        .unwrap_or_else(|| panic!("{kind}: row {id} came with the page, not live"));
    (at_ms, seen.parse().expect("seen ms"))
}

#[test]
fn a_bad_deploy_shows_live_and_a_person_pauses_from_the_page() {
    let app = app_with_images("spb", &["v1.0.0", "v1.1.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), WATCH);
    let _c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    let port = d.api_port;
    let base = format!("http://127.0.0.1:{port}");

    let mut b = Browser::launch().expect("launch Chromium");
    assert_eq!(b.goto(&format!("{base}/")).expect("open /"), 200);
    let marker = b.eval("window.rollwatchLoadedAt").expect("marker");
    assert!(marker.is_number(), "app.js ran: {marker}");
    b.wait_for_state("#live", "visible", Duration::from_secs(10))
        .expect("the live stream connects");
    // Every state the row shows, as the page changes it.
    b.eval(
        "(() => { window.states = []; const note = () => { const r = document.querySelector('tr[data-target=\"staging/backend\"]'); \
         if (r && window.states[window.states.length - 1] !== r.dataset.state) window.states.push(r.dataset.state); }; \
         note(); new MutationObserver(note).observe(document.getElementById('targets-body'), { childList: true, subtree: true }); return true; })()",
    )
    .expect("observe rows");

    d.deploy("v1.1.0");
    let mut lags = Vec::new();
    for (kind, tag) in [
        ("deploy", "v1.1.0"),
        ("regressed", "v1.1.0"),
        ("rollback", ""),
    ] {
        let (at, seen) = row_of(&mut b, port, kind, tag);
        lags.push((kind, seen - at));
    }
    eprintln!("row lag after the event's API timestamp: {lags:?}");
    for (kind, lag) in &lags {
        assert!(*lag <= 2000, "{kind} appeared {lag} ms after its event");
    }
    b.wait_for_function(
        "window.states[window.states.length - 1] === 'stable' && document.querySelector('tr[data-target=\"staging/backend\"]').textContent.includes('v1.0.0')",
        Duration::from_secs(10),
    )
    .expect("the row ends stable on v1.0.0");
    let states = b.eval("window.states").expect("states");
    let states: Vec<String> = serde_json::from_value(states).expect("state list");
    let pos = |s: &str| states.iter().position(|x| x == s);
    assert!(
        matches!((pos("watching"), pos("stable")), (Some(w), Some(_)) if w < states.len() - 1),
        "the row went through watching and back to stable: {states:?}"
    );
    assert_eq!(
        b.eval("window.rollwatchLoadedAt").expect("marker"),
        marker,
        "the page reloaded"
    );

    // The incident: its steps, and the chart with the verdict marked.
    let (_, body) = http_get(port, "/api/v1/rollbacks").expect("rollbacks");
    let rollbacks: serde_json::Value = serde_json::from_str(&body).expect("rollbacks JSON");
    let id = rollbacks[0]["id"].as_i64().expect("a rollback");
    assert_eq!(
        b.goto(&format!("{base}/ui/incidents/{id}"))
            .expect("incident"),
        200
    );
    assert!(b.count("#steps tr[data-step]").expect("steps") >= 3);
    assert_eq!(b.text("#trigger").expect("trigger"), "health");
    assert_eq!(b.count("svg.evidence").expect("svg"), 1);
    assert!(
        b.count("svg.evidence line.verdict[data-verdict=\"regressed\"]")
            .expect("mark")
            >= 1
    );
    assert!(b.count("svg.evidence circle.failure").expect("failures") >= 2);

    // Log in; the token is exchanged for an HttpOnly, SameSite=Strict cookie.
    b.goto(&format!("{base}/ui/login")).expect("login page");
    b.fill("#token", TOKEN).expect("type the token");
    b.click("#login").expect("log in");
    b.wait_for("form[action=\"/ui/logout\"]", Duration::from_secs(10))
        .expect("logged in");
    assert!(
        !b.url().expect("url").contains(TOKEN),
        "the token is never in a URL"
    );
    let cookies = b.cookies().expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name == "rollwatch_session")
        .expect("the session cookie");
    assert!(
        session.http_only && session.same_site == "Strict",
        "{:?}",
        session.same_site
    );
    assert_eq!(
        b.eval("document.cookie").expect("document.cookie"),
        "",
        "scripts cannot read it"
    );

    // A forged POST: the browser's cookie, no CSRF token. And the CSRF token without a session.
    let pause = format!("{base}/ui/targets/staging/backend/pause");
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let forged = b
        .request("POST", &pause, &form, Some("confirm=yes"))
        .expect("post");
    assert_eq!(forged.status, 403, "{}", forged.body);
    assert!(!api_paused(port), "a refused POST paused the target");

    b.goto(&format!("{base}/ui/targets/staging/backend"))
        .expect("target page");
    b.click("form[action$=\"/pause\"] input[name=\"confirm\"]")
        .expect("confirm");
    b.click("#action-pause").expect("pause");
    b.wait_for("#notice", Duration::from_secs(15))
        .expect("a result");
    assert_eq!(
        b.text("#notice").expect("notice"),
        "staging/backend is paused."
    );
    assert!(api_paused(port), "the API reports the target paused");

    // Every control has an accessible name, and at phone width nothing but the tables scrolls
    // sideways (they scroll inside their own box).
    let unnamed = b
        .eval(
            "[...document.querySelectorAll('button, select, input:not([type=hidden])')] \
             .filter(e => !(e.getAttribute('aria-label') || (e.labels && e.labels.length) || e.textContent.trim())) \
             .map(e => e.outerHTML)",
        )
        .expect("controls");
    assert_eq!(unnamed, serde_json::json!([]), "controls without a name");
    b.set_viewport(390, 800).expect("phone width");
    for path in [
        "/",
        "/ui/targets/staging/backend",
        &format!("/ui/incidents/{id}"),
    ] {
        b.goto(&format!("{base}{path}")).expect("page");
        let wide = b
            .eval("document.documentElement.scrollWidth")
            .expect("width");
        assert!(
            wide.as_i64().is_some_and(|w| w <= 390),
            "{path} is {wide} px wide at 390"
        );
    }
    b.goto(&format!("{base}/ui/targets/staging/backend"))
        .expect("target page");

    let csrf = b
        .attr("form[action$=\"/resume\"] input[name=\"csrf\"]", "value")
        .expect("attr")
        .expect("the resume form's CSRF token");
    let body = format!("csrf={csrf}&confirm=yes");
    let resume = "/ui/targets/staging/backend/resume";
    let (status, _, _) = http_raw(port, "POST", resume, &form, body.as_bytes());
    assert_eq!(status, 401, "the CSRF token without the session");
    assert!(api_paused(port), "a refused POST resumed the target");
}
