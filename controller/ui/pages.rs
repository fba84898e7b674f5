//! The status page's HTML: the targets table, the timeline, a target's page and an incident's.
//! Pure functions of what the board and the store hold, so the same rows are rendered for the
//! first load and for the live updates.

use std::fmt::Write as _;

use super::chart;
use super::html::{duration, esc, time};
use crate::store::{DeployRecord, EventRecord, RollbackRecord, Sample};
use crate::target::TargetId;
use crate::watch::TargetStatus;

/// Events shown per timeline page.
pub const TIMELINE_PAGE: usize = 50;
/// Targets shown per page of the targets table: a fleet of a thousand stays a light page.
pub const TARGETS_PAGE: usize = 100;

/// How much a target needs a person: failed rollbacks first, then regressions, paused or
/// halted ones, watch windows, and the stable ones last.
fn attention(s: &TargetStatus) -> u8 {
    match s.state.as_str() {
        "rollback_failed" => 0,
        "regressed" => 1,
        _ if s.paused || s.halted => 2,
        "watching" => 3,
        "unknown" => 4,
        _ => 5,
    }
}

/// Page `page` of the targets, those needing attention first: (shown, how many in all).
pub fn targets_page(mut all: Vec<TargetStatus>, page: usize) -> (Vec<TargetStatus>, usize) {
    let total = all.len();
    all.sort_by(|a, b| {
        (attention(a), a.target.to_string()).cmp(&(attention(b), b.target.to_string()))
    });
    let shown = all
        .into_iter()
        .skip(page.saturating_mul(TARGETS_PAGE))
        .take(TARGETS_PAGE)
        .collect();
    (shown, total)
}

/// Links to the other pages of the targets table, when there are any.
pub fn pager(page: usize, total: usize) -> String {
    if total <= TARGETS_PAGE {
        return String::new();
    }
    let first = page * TARGETS_PAGE + 1;
    let last = ((page + 1) * TARGETS_PAGE).min(total);
    let prev = if page > 0 {
        format!(
            "<a href=\"/?page={}\" rel=\"prev\">Previous {TARGETS_PAGE}</a> ",
            page - 1
        )
    } else {
        String::new()
    };
    let next = if last < total {
        format!(
            "<a href=\"/?page={}\" rel=\"next\">Next {TARGETS_PAGE}</a>",
            page + 1
        )
    } else {
        String::new()
    };
    format!(
        "<nav class=\"pager\" aria-label=\"targets pages\"><p>Targets {first}–{last} of {total}, those needing attention first. {prev}{next}</p></nav>"
    )
}

fn target_href(t: &TargetId) -> String {
    format!("/ui/targets/{}/{}", t.env.as_str(), esc(&t.role))
}

/// The `<tr>`s of the targets table (the body the live stream replaces).
/// `now_ms` is on the decision clock (`clock::steady_ms`), as a watch window's start is.
pub fn target_rows(statuses: &[TargetStatus], now_ms: i64) -> String {
    let mut out = String::new();
    for s in statuses {
        let t = &s.target;
        let mut badges = String::new();
        for (on, class, text) in [
            (s.paused, "paused", "paused"),
            (s.halted, "halted", "halted"),
            (s.dry_run, "dry-run", "dry run"),
        ] {
            if on {
                let _ = write!(badges, " <span class=\"badge {class}\">{text}</span>");
            }
        }
        let window = match &s.window {
            Some(w) => {
                let watched = (now_ms - w.since_ms).clamp(0, w.bake_ms);
                format!(
                    "<progress max=\"{bake}\" value=\"{watched}\" aria-label=\"watch window\"></progress> \
{w_text} of {b_text} watched, {f} of {fl} failures{m}",
                    bake = w.bake_ms,
                    w_text = duration(watched),
                    b_text = duration(w.bake_ms),
                    f = w.failures,
                    fl = w.failures_limit,
                    m = w
                        .metrics
                        .as_deref()
                        .map(|m| format!("<br><small>{}</small>", esc(m)))
                        .unwrap_or_default(),
                )
            }
            None => s
                .detail
                .as_deref()
                .map(|d| esc(d).to_string())
                .unwrap_or_default(),
        };
        let docker = if s.docker_reachable {
            "<span class=\"ok\">docker ok</span>"
        } else {
            "<span class=\"bad\">docker unreachable</span>"
        };
        let metrics = match s.metrics_up {
            Some(true) => " <span class=\"ok\">metrics ok</span>",
            Some(false) => " <span class=\"bad\">metrics down</span>",
            None => "",
        };
        let _ = write!(
            out,
            "<tr id=\"target-{env}-{role}\" data-target=\"{id}\" data-state=\"{state}\">\
<th scope=\"row\"><a href=\"{href}\">{id}</a></th>\
<td><span class=\"state state-{state}\">{state}</span>{badges}<br><small>since {since}</small></td>\
<td>{running}</td><td>{good}</td><td>{window}</td><td>{docker}{metrics}<br><small>{probe}</small></td></tr>",
            env = t.env.as_str(),
            role = esc(&t.role),
            id = esc(&t.to_string()),
            state = esc(&s.state),
            href = target_href(t),
            since = time(s.since_ms),
            running = esc(s.running_tag.as_deref().unwrap_or("—")),
            good = esc(s.known_good_tag.as_deref().unwrap_or("—")),
            probe = esc(s.last_probe.as_deref().unwrap_or("")),
        );
    }
    out
}

pub fn targets_table(rows: &str) -> String {
    format!(
        "<div class=\"scroll\"><table id=\"targets\"><thead><tr><th scope=\"col\">Target</th><th scope=\"col\">State</th>\
<th scope=\"col\">Running</th><th scope=\"col\">Known-good</th><th scope=\"col\">Watch window</th>\
<th scope=\"col\">Sources</th></tr></thead><tbody id=\"targets-body\">{rows}</tbody></table></div>"
    )
}

/// One timeline entry (also what the live stream sends for a new event).
pub fn event_item(e: &EventRecord) -> String {
    format!(
        "<li id=\"event-{id}\" data-event-id=\"{id}\" data-kind=\"{kind}\" data-target=\"{target}\" data-at-ms=\"{at}\" class=\"kind-{kind}\">\
{time} <a href=\"{href}\">{target}</a> <strong>{kind}</strong>{tag}: {message}</li>",
        id = e.id,
        kind = esc(&e.kind),
        target = esc(&e.target.to_string()),
        at = e.at_ms,
        time = time(e.at_ms),
        href = target_href(&e.target),
        tag = e
            .tag
            .as_deref()
            .map(|t| format!(" <code>{}</code>", esc(t)))
            .unwrap_or_default(),
        message = esc(&e.message),
    )
}

/// The timeline (newest first) with a link to the page of older events when there may be one;
/// `live` when the page's stream adds new events to it (its first page only).
pub fn timeline(events: &[EventRecord], older_href: &str, live: bool) -> String {
    let items: String = events.iter().map(event_item).collect();
    let older = match events.last() {
        Some(last) if events.len() >= TIMELINE_PAGE => format!(
            "<p><a href=\"{older_href}before={}\" rel=\"next\">Older events</a></p>",
            last.id
        ),
        _ => String::new(),
    };
    let empty = if events.is_empty() {
        "<p class=\"empty\">No events yet.</p>"
    } else {
        ""
    };
    let live = if live {
        " data-live=\"yes\" aria-live=\"polite\""
    } else {
        ""
    };
    format!(
        "<h2>Timeline</h2>{empty}<ol id=\"timeline\" class=\"timeline\"{live}>{items}</ol>{older}"
    )
}

/// The forms of a target's actions, each with its own confirmation box (works without script).
pub fn actions(target: &TargetId, csrf: Option<&str>, paused: bool, tags: &[String]) -> String {
    let Some(csrf) = csrf else {
        return "<p><a href=\"/ui/login\">Log in</a> to pause, resume or roll back.</p>".into();
    };
    let base = target_href(target);
    let form = |action: &str, label: &str, extra: &str| {
        format!(
            "<form method=\"post\" action=\"{base}/{action}\" class=\"action\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">{extra}\
<label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" required aria-label=\"Confirm: {label} {target}\"> I mean it</label> \
<button type=\"submit\" id=\"action-{action}\">{label}</button></form>",
            csrf = esc(csrf),
            target = esc(&target.to_string()),
        )
    };
    let toggle = if paused {
        form("resume", "Resume", "")
    } else {
        form("pause", "Pause", "")
    };
    let rollback = if tags.is_empty() {
        "<p>No known-good tag to roll back to yet.</p>".to_string()
    } else {
        let options: String = tags
            .iter()
            .map(|t| format!("<option value=\"{0}\">{0}</option>", esc(t)))
            .collect();
        form(
            "rollback",
            "Roll back",
            &format!(
                "<label>to tag <select name=\"tag\" id=\"rollback-tag\" aria-label=\"Roll back to tag\">{options}</select></label> "
            ),
        )
    };
    format!("<h2>Actions</h2><div class=\"actions\">{toggle}{rollback}</div>")
}

pub fn rollback_list(records: &[RollbackRecord]) -> String {
    if records.is_empty() {
        return String::new();
    }
    let items: String = records
        .iter()
        .map(|r| {
            format!(
                "<li><a href=\"/ui/incidents/{id}\">#{id}</a> {time} <span class=\"state state-{state}\">{state}</span> {from} → {to}: {reason}</li>",
                id = r.id,
                time = time(r.started_at_ms),
                state = r.state.as_str(),
                from = esc(r.from_tag.as_deref().unwrap_or("?")),
                to = esc(&r.to_tag),
                reason = esc(&r.reason),
            )
        })
        .collect();
    format!("<h2>Rollbacks</h2><ul class=\"incidents\">{items}</ul>")
}

pub fn evidence(samples: &[Sample], marks: &[chart::Mark]) -> String {
    let title = samples
        .first()
        .map(|s| {
            format!(
                "Evidence: watch window of <code>{}</code> from {}",
                esc(&s.tag),
                time(s.window_ms)
            )
        })
        .unwrap_or_else(|| "Evidence".into());
    format!(
        "<section id=\"evidence\"><h2>{title}</h2>{}</section>",
        chart::evidence(samples, marks)
    )
}

/// An incident: one rollback, what triggered it, its steps and what the replaced containers said.
pub fn incident(r: &RollbackRecord, deploy: Option<&DeployRecord>, chart: &str) -> String {
    let mut out = String::new();
    let finished = r
        .finished_at_ms
        .map(|f| format!("{} (took {} ms)", time(f), f - r.started_at_ms))
        .unwrap_or_else(|| "not finished".into());
    let _ = write!(
        out,
        "<dl class=\"facts\"><dt>Target</dt><dd><a href=\"{href}\">{target}</a></dd>\
<dt>Trigger</dt><dd id=\"trigger\">{trigger}</dd><dt>Evidence</dt><dd id=\"reason\">{reason}</dd>\
<dt>From → to</dt><dd><code>{from}</code> → <code>{to}</code>{digest}</dd>\
<dt>Outcome</dt><dd><span class=\"state state-{state}\" id=\"outcome\">{state}</span>{dry}</dd>\
<dt>Started</dt><dd>{started}</dd><dt>Finished</dt><dd>{finished}</dd>",
        href = target_href(&r.target),
        target = esc(&r.target.to_string()),
        trigger = r.trigger.as_str(),
        reason = esc(&r.reason),
        from = esc(r.from_tag.as_deref().unwrap_or("?")),
        to = esc(&r.to_tag),
        digest = r
            .to_digest
            .as_deref()
            .map(|d| format!(" <small>{}</small>", esc(d)))
            .unwrap_or_default(),
        state = r.state.as_str(),
        dry = if r.dry_run { " (dry run)" } else { "" },
        started = time(r.started_at_ms),
    );
    if let Some(d) = deploy {
        let pipeline = d
            .pipeline_url
            .as_deref()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .map(|u| format!("<a href=\"{0}\" rel=\"noreferrer\">{0}</a>", esc(u)))
            .unwrap_or_else(|| "—".into());
        let _ = write!(
            out,
            "<dt>Deploy</dt><dd id=\"deploy\">pipeline {pipeline}, commit <code>{}</code>, registered {}</dd>",
            esc(d.commit_sha.as_deref().unwrap_or("—")),
            time(d.at_ms)
        );
    }
    if let Some(e) = &r.error {
        let _ = write!(out, "<dt>Error</dt><dd class=\"bad\">{}</dd>", esc(e));
    }
    out.push_str("</dl><h2>Steps</h2>");
    if r.steps.is_empty() {
        out.push_str("<p class=\"empty\">No step was run.</p>");
    } else {
        out.push_str("<div class=\"scroll\"><table id=\"steps\"><thead><tr><th scope=\"col\">Step</th><th scope=\"col\">Started</th><th scope=\"col\">Took</th><th scope=\"col\">Result</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
        for s in &r.steps {
            let _ = write!(
                out,
                "<tr data-step=\"{name}\"><th scope=\"row\">{name}</th><td>{start}</td><td>{took} ms</td><td class=\"{class}\">{result}</td><td>{detail}</td></tr>",
                name = esc(&s.name),
                start = time(s.started_at_ms),
                took = s.duration_ms,
                class = if s.ok { "ok" } else { "bad" },
                result = if s.ok { "ok" } else { "failed" },
                detail = esc(&s.detail),
            );
        }
        out.push_str("</tbody></table></div>");
    }
    for (id, title, text) in [
        ("output", "Output", &r.output),
        ("logs", "Last log lines of the replaced containers", &r.logs),
    ] {
        if !text.is_empty() {
            let _ = write!(out, "<h2>{title}</h2><pre id=\"{id}\">{}</pre>", esc(text));
        }
    }
    out.push_str(chart);
    out
}

pub fn login_form(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"notice failed\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "{error}<form method=\"post\" action=\"/ui/login\" class=\"login\">\
<label for=\"token\">API token</label> <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required> \
<button type=\"submit\" id=\"login\">Log in</button></form>\
<p><small>The token is checked once; the browser then keeps only a session cookie.</small></p>"
    )
}
