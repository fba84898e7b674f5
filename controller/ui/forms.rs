//! What a person posts to the status page: the login that turns the API token into a session,
//! the logout, and the actions (pause, resume, roll back). Every form is acted on only from a
//! live session with its CSRF token; every refusal says what was wrong and changes nothing.

use axum::extract::rejection::FormRejection;
use axum::response::Redirect;
use axum::Form;
use tokio::sync::oneshot;

use super::*;
use crate::tag::Tag;
use crate::watch::Command;

pub(super) async fn login_page(State(state): State<UiState>, headers: HeaderMap) -> Response {
    let viewer = viewer(&state, &headers);
    if state.api.token.is_none() {
        let why = "No API token is configured on this controller, so nobody can log in; set controller.api_token_file to enable the page's actions.";
        return refusal(&state, &viewer, StatusCode::NOT_FOUND, why);
    }
    let frame = state.frame("Log in", &viewer);
    html(StatusCode::OK, html::page(&frame, &pages::login_form(None)))
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
}

pub(super) async fn login(
    State(state): State<UiState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let viewer = viewer(&state, &headers);
    let Some(expected) = &state.api.token else {
        return refusal(
            &state,
            &viewer,
            StatusCode::NOT_FOUND,
            "No API token is configured on this controller, so nobody can log in.",
        );
    };
    let token = match form {
        Ok(Form(f)) => f.token,
        Err(e) => return refusal(&state, &viewer, StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if let Err(wait) = state.logins.allow() {
        let why = format!(
            "Too many wrong tokens in the last minute: logins are refused for {wait} s more. (The API's bearer token still works.)"
        );
        let mut r = refusal(&state, &viewer, StatusCode::TOO_MANY_REQUESTS, &why);
        r.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return r;
    }
    if !expected.matches(&token) {
        state.logins.failed();
        let frame = state.frame("Log in", &viewer);
        let body = pages::login_form(Some("That is not this controller's API token."));
        return html(StatusCode::UNAUTHORIZED, html::page(&frame, &body));
    }
    match state.sessions.create() {
        Ok((id, _)) => (
            [(header::SET_COOKIE, session::set_cookie(Some(&id)))],
            Redirect::to("/"),
        )
            .into_response(),
        Err(e) => refusal(
            &state,
            &viewer,
            StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct ActionForm {
    csrf: Option<String>,
    confirm: Option<String>,
    tag: Option<String>,
}

pub(super) async fn logout(
    State(state): State<UiState>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let viewer = viewer(&state, &headers);
    // Without a live session there is nothing to end but a stale cookie: cleared either way.
    if let Some(s) = &viewer.session {
        if let Err(Refused(status, why)) = check_form(&viewer, &form, false) {
            return refusal(&state, &viewer, status, &why);
        }
        state.sessions.end(s);
    }
    (
        [(header::SET_COOKIE, session::set_cookie(None))],
        Redirect::to("/"),
    )
        .into_response()
}

/// A posted form is acted on only from a live session, with that session's CSRF token (and,
/// for actions, the confirmation box ticked); otherwise the refusal says which was missing.
fn check_form(
    viewer: &Viewer,
    form: &Result<Form<ActionForm>, FormRejection>,
    needs_confirm: bool,
) -> Result<(), Refused> {
    let Some(expected) = viewer.csrf.as_deref() else {
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            "Not logged in (or the session expired): log in and try again. Nothing was changed."
                .into(),
        ));
    };
    let posted = match form {
        Ok(Form(f)) => f,
        Err(e) => {
            return Err(Refused(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} Send the page's form as it is. Nothing was changed.",
                    e.body_text()
                ),
            ))
        }
    };
    if !posted
        .csrf
        .as_deref()
        .is_some_and(|g| session::csrf_matches(expected, g))
    {
        return Err(Refused(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or not this session's: reload the page and try again. Nothing was changed.".into(),
        ));
    }
    if needs_confirm && posted.confirm.as_deref() != Some("yes") {
        return Err(Refused(
            StatusCode::BAD_REQUEST,
            "Tick the confirmation box to act. Nothing was changed.".into(),
        ));
    }
    Ok(())
}

pub(super) async fn action(
    State(state): State<UiState>,
    headers: HeaderMap,
    Path((env, role, action)): Path<(String, String, String)>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let viewer = viewer(&state, &headers);
    if let Err(Refused(status, why)) = check_form(&viewer, &form, true) {
        return refusal(&state, &viewer, status, &why);
    }
    // The same rule as the API's: a follower's watcher would take the order, but its writes
    // are the leader's to make, so the page would claim what did not happen.
    if let Some((why, _)) = state.follower_notice() {
        return refusal(&state, &viewer, StatusCode::SERVICE_UNAVAILABLE, &why);
    }
    let (id, tx) = match api::parse_target(&state.api, &env, &role) {
        Ok(t) => t,
        Err(e) => return refusal(&state, &viewer, e.describe().0, &e.describe().1),
    };
    let tag = form.ok().and_then(|Form(f)| f.tag);
    let outcome = match action.as_str() {
        "pause" => simple(&id, &tx, |done| Command::Pause { done }, "paused").await,
        "resume" => simple(&id, &tx, |done| Command::Resume { done }, "resumed").await,
        "rollback" => rollback(&state, &id, &tx, tag).await,
        other => {
            let why = format!("no action {other:?}: pause, resume or rollback");
            return refusal(&state, &viewer, StatusCode::NOT_FOUND, &why);
        }
    };
    // Role names are lowercase letters, digits and '-' (the config refuses others): URL-safe.
    let back = format!("/ui/targets/{}/{}", id.env.as_str(), id.role);
    match (outcome, &viewer.session) {
        (Ok(text), Some(s)) => {
            state.sessions.set_notice(s, text, false);
            Redirect::to(&back).into_response()
        }
        (Err((status, text)), Some(s)) if status == StatusCode::CONFLICT => {
            state.sessions.set_notice(s, text, true);
            Redirect::to(&back).into_response()
        }
        (Err((status, text)), _) => refusal(&state, &viewer, status, &text),
        (Ok(text), None) => refusal(&state, &viewer, StatusCode::OK, &text),
    }
}

type Outcome = Result<String, (StatusCode, String)>;

async fn simple(
    id: &TargetId,
    tx: &tokio::sync::mpsc::Sender<Command>,
    cmd: fn(oneshot::Sender<()>) -> Command,
    word: &str,
) -> Outcome {
    match api::order_and_wait(id, tx, cmd)
        .await
        .map_err(|e| e.describe())?
    {
        api::Ack::Stored => Ok(format!("{id} is {word}.")),
        api::Ack::Queued => Ok(format!(
            "Queued: a rollback of {id} is in flight; {id} will be {word} when it ends."
        )),
    }
}

/// A rollback to a known-good tag of the target: the page offers only those, and a stale or
/// forged form naming another is refused here (the watcher still refuses tags marked bad).
async fn rollback(
    state: &UiState,
    id: &TargetId,
    tx: &tokio::sync::mpsc::Sender<Command>,
    tag: Option<String>,
) -> Outcome {
    let tag = tag
        .filter(|t| !t.is_empty())
        .map(|t| Tag::parse(&t))
        .transpose()
        .map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("{e}. Nothing was changed."),
            )
        })?;
    if let Some(t) = &tag {
        let known: Vec<String> = state
            .api
            .store
            .known_good_tags(id.clone())
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        if !known.iter().any(|k| *k == t.to_string()) {
            let list = if known.is_empty() {
                "none yet".to_string()
            } else {
                known.join(", ")
            };
            return Err((
                StatusCode::BAD_REQUEST,
                format!("{t} is not a known-good tag of {id} (known-good: {list}). Nothing was changed."),
            ));
        }
    }
    let reason = "manual rollback from the status page".to_string();
    let answer = api::order_rollback(id, tx, tag, reason, ROLLBACK_WAIT)
        .await
        .map_err(|e| e.describe())?;
    match answer {
        api::RollbackAnswer::Done(r) => Ok(format!(
            "{id} rolled back to {} ({}); incident #{}.",
            r.to_tag,
            r.state.as_str(),
            r.id
        )),
        api::RollbackAnswer::Refused(e) => {
            Err((StatusCode::CONFLICT, format!("Rollback refused: {e}")))
        }
        api::RollbackAnswer::Running => Ok(format!(
            "The rollback of {id} is still running; the timeline shows when it ends."
        )),
    }
}
