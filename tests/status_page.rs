//! The status page at the HTTP level, as curl or a browser without JavaScript sees it: every
//! target and state server-rendered, the page's weight, who may read it, and that actions need
//! a session and its CSRF token (refused ones change nothing). The live page in a real Chromium
//! is tests/status_page_browser.rs.

mod harness;

use std::time::Duration;

use harness::*;

/// One HTTP/1.1 exchange with a text body: (status, head, body).
fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    http_raw(port, method, path, headers, body.as_bytes())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Logs in with the test token: the session cookie (`name=value`) and the page's CSRF token.
fn login(port: u16) -> (String, String) {
    let (status, head, _) = exchange(
        port,
        "POST",
        "/ui/login",
        &[FORM],
        &format!("token={TOKEN}"),
    );
    assert_eq!(status, 303, "{head}");
    let set = header(&head, "set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let (_, _, page) = exchange(port, "GET", "/", &[("Cookie", &cookie)], "");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a CSRF token in the logged-in page")
        .to_string();
    (cookie, csrf)
}

fn paused(port: u16) -> bool {
    let (_, _, body) = exchange(port, "GET", "/api/v1/targets", &[], "");
    let targets: serde_json::Value = serde_json::from_str(&body).expect("targets JSON");
    targets[0]["paused"].as_bool().expect("paused field")
}

#[test]
fn the_page_without_javascript_lists_every_target_and_state_and_weighs_under_200_kb() {
    let app = app_with_images("sp", &["v1.0.0"]);
    let a = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let b = ComposeDeployment::up(&app, "production", "backend", "v1.0.0");
    let config = a.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    let second = b.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    let second = std::fs::read_to_string(&second).expect("second config");
    let table = &second[second.find("[[targets]]").expect("a target table")..];
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push('\n');
    text.push_str(table);
    std::fs::write(&config, text).expect("write config");
    let _c = Controller::start(&config, &[]);
    wait_event(&a.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    wait_for(Duration::from_secs(30), "both targets promoted", || {
        let (_, _, body) = exchange(a.api_port, "GET", "/", &[], "");
        (body.matches("data-state=\"stable\"").count() == 2).then_some(())
    });

    let (status, head, page) = exchange(a.api_port, "GET", "/", &[], "");
    assert_eq!(status, 200, "{head}");
    assert!(
        header(&head, "content-type").is_some_and(|c| c.starts_with("text/html")),
        "{head}"
    );
    for target in ["staging/backend", "production/backend"] {
        let row = format!("data-target=\"{target}\" data-state=\"stable\"");
        assert!(page.contains(&row), "no row {row} in\n{page}");
    }
    assert!(
        page.contains("<strong>promoted</strong>"),
        "the timeline shows the promotions"
    );
    assert!(page.contains("v1.0.0"));
    // Everything the page loads is its own: two embedded assets, nothing from another host.
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "{page}"
    );
    let mut weight = page.len();
    for asset in ["/ui/assets/app.css", "/ui/assets/app.js"] {
        assert!(page.contains(asset), "the page uses {asset}");
        let (status, _, body) = exchange(a.api_port, "GET", asset, &[], "");
        assert_eq!(status, 200, "{asset}");
        weight += body.len();
    }
    eprintln!("page weight: {weight} bytes");
    assert!(weight < 200 * 1024, "the page weighs {weight} bytes");

    // A target's page, and an unknown one named in words.
    let (status, _, target_page) =
        exchange(a.api_port, "GET", "/ui/targets/staging/backend", &[], "");
    assert_eq!(status, 200);
    assert!(target_page.contains("data-target=\"staging/backend\""));
    assert!(!target_page.contains("data-target=\"production/backend\" data-state"));
    let (status, _, missing) = exchange(a.api_port, "GET", "/ui/targets/staging/nope", &[], "");
    assert_eq!(status, 404);
    assert!(
        missing.contains("no target staging/nope is configured"),
        "{missing}"
    );
}

#[test]
fn actions_need_a_session_its_csrf_token_and_the_confirmation_and_refusals_change_nothing() {
    let (d, _c) = watched_good_deployment("spa", &[], "", &[]);
    let port = d.api_port;
    let pause = "/ui/targets/staging/backend/pause";

    let (status, _, body) = exchange(port, "POST", pause, &[FORM], "confirm=yes");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Not logged in"), "{body}");
    let (status, _, body) = exchange(port, "POST", "/ui/login", &[FORM], "token=wrong");
    assert_eq!(status, 401);
    assert!(
        body.contains("not this controller&#39;s API token"),
        "{body}"
    );
    assert!(!paused(port));

    let (cookie, csrf) = login(port);
    let with_cookie = [FORM, ("Cookie", cookie.as_str())];
    let (status, _, body) = exchange(port, "POST", pause, &with_cookie, "confirm=yes");
    assert_eq!(status, 403, "without the CSRF token: {body}");
    let (status, _, _) = exchange(port, "POST", pause, &with_cookie, "confirm=yes&csrf=0000");
    assert_eq!(status, 403, "with another CSRF token");
    let (status, _, body) = exchange(port, "POST", pause, &with_cookie, &format!("csrf={csrf}"));
    assert_eq!(status, 400, "without the confirmation: {body}");
    assert!(body.contains("Tick the confirmation box"), "{body}");
    // The CSRF token without the session cookie is nothing either.
    let (status, _, _) = exchange(
        port,
        "POST",
        pause,
        &[FORM],
        &format!("csrf={csrf}&confirm=yes"),
    );
    assert_eq!(status, 401);
    assert!(!paused(port), "a refused action paused the target");

    let (status, head, _) = exchange(
        port,
        "POST",
        pause,
        &with_cookie,
        &format!("csrf={csrf}&confirm=yes"),
    );
    assert_eq!(status, 303, "{head}");
    assert!(paused(port), "the API reports the target paused");
    let (_, _, page) = exchange(
        port,
        "GET",
        "/ui/targets/staging/backend",
        &[("Cookie", &cookie)],
        "",
    );
    assert!(
        page.contains("staging/backend is paused."),
        "the result is shown once it holds"
    );
    assert!(page.contains("class=\"badge paused\""));

    // Logged out, the same cookie acts no more.
    let (status, _, _) = exchange(
        port,
        "POST",
        "/ui/logout",
        &with_cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303);
    let resume = "/ui/targets/staging/backend/resume";
    let (status, _, _) = exchange(
        port,
        "POST",
        resume,
        &with_cookie,
        &format!("csrf={csrf}&confirm=yes"),
    );
    assert_eq!(status, 401);
    assert!(paused(port));
}

#[test]
fn with_reads_behind_the_token_a_stranger_sees_no_target() {
    let app = app_with_images("spr", &["v1.0.0"]);
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let config = d.write_config(&format!("{REGISTRY}/{app}"), FAST_WATCH);
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replacen(
        "[controller]\n",
        "[controller]\napi_reads_need_token = true\n",
        1,
    );
    std::fs::write(&config, text).expect("write config");
    let _c = Controller::start(&config, &[]);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    for path in [
        "/",
        "/ui/targets/staging/backend",
        "/ui/incidents/1",
        "/ui/stream",
    ] {
        let (status, _, body) = exchange(d.api_port, "GET", path, &[], "");
        assert_eq!(status, 401, "{path}");
        assert!(
            !body.contains("staging/backend"),
            "{path} shows the target: {body}"
        );
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = exchange(d.api_port, "GET", "/", &[("Authorization", &bearer)], "");
    assert_eq!(status, 200);
    assert!(body.contains("data-target=\"staging/backend\""));
    let (cookie, _) = login(d.api_port);
    let (status, _, body) = exchange(d.api_port, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    assert!(body.contains("data-target=\"staging/backend\""));
}

#[test]
fn an_incident_page_shows_trigger_steps_and_the_evidence_chart_with_the_verdict() {
    let (d, _c) = watched_good_deployment("spi", &["v1.1.0"], "", &[]);
    d.deploy("v1.1.0");
    wait_rollback(&d.db(), "succeeded");
    let (status, _, page) = exchange(d.api_port, "GET", "/ui/incidents/1", &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<dd id=\"trigger\">health</dd>"), "{page}");
    assert!(
        page.contains("<code>v1.1.0</code> → <code>v1.0.0</code>"),
        "{page}"
    );
    for step in ["pull", "up", "validate"] {
        assert!(
            page.contains(&format!("data-step=\"{step}\"")),
            "no step {step}: {page}"
        );
    }
    let svg = page
        .split("<svg class=\"evidence\"")
        .nth(1)
        .expect("an evidence chart");
    assert!(
        svg.contains("data-verdict=\"regressed\""),
        "the verdict is marked: {svg}"
    );
    let failed: usize = svg
        .split("data-failed=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("data-failed");
    assert!(
        failed >= 2,
        "two failed probes made the verdict; the chart has {failed}"
    );
    let (status, _, _) = exchange(d.api_port, "GET", "/ui/incidents/99", &[], "");
    assert_eq!(status, 404);
}
