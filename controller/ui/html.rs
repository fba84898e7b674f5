//! The few pieces of HTML every page shares. Pages are written as strings with every value
//! from outside (tags, reasons, command output, log lines) passed through [`esc`]: there is
//! no template engine to forget it for us, so nothing is interpolated any other way.

use std::fmt;

/// `s`, safe inside an element or a quoted attribute.
pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

pub struct Esc<'a>(&'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, b) in self.0.bytes().enumerate() {
            let rep = match b {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                b'\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + 1;
        }
        f.write_str(&self.0[last..])
    }
}

/// What a page's frame needs to know about the visitor.
pub struct Frame<'a> {
    pub title: &'a str,
    /// The SSE stream this page follows, if it is live.
    pub stream: Option<String>,
    /// The session's CSRF token when logged in: logout and actions are offered.
    pub csrf: Option<&'a str>,
    /// Whether a login is possible at all (a token is configured).
    pub can_login: bool,
    /// A one-line notice at the top (an action's result), and whether it reports a failure.
    pub notice: Option<(String, bool)>,
}

/// A whole page around `body`.
pub fn page(frame: &Frame, body: &str) -> String {
    let stream = frame
        .stream
        .as_deref()
        .map(|s| format!(" data-stream=\"{}\"", esc(s)))
        .unwrap_or_default();
    let session = match (frame.csrf, frame.can_login) {
        (Some(csrf), _) => format!(
            "<form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Log out</button></form>",
            esc(csrf)
        ),
        (None, true) => "<a href=\"/ui/login\">Log in</a>".to_string(),
        (None, false) => String::new(),
    };
    let notice = frame
        .notice
        .as_ref()
        .map(|(text, failed)| {
            let class = if *failed { "notice failed" } else { "notice" };
            format!(
                "<p class=\"{class}\" role=\"status\" id=\"notice\">{}</p>",
                esc(text)
            )
        })
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · rollwatch</title><link rel=\"stylesheet\" href=\"/ui/assets/app.css\">\
<script src=\"/ui/assets/app.js\" defer></script></head>\
<body{stream}><header><a class=\"home\" href=\"/\">rollwatch</a><span class=\"live\" id=\"live\" hidden>live</span>{session}</header>\
<main>{notice}<h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(frame.title),
    )
}

/// "12 s", "4 min 3 s", "2 h 5 min": coarse on purpose, for people glancing at a page.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// A timestamp as UTC text inside `<time>`, machine-readable in its `datetime`.
pub fn time(at_ms: i64) -> String {
    let text = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms.max(0) as u64),
    )
    .to_string();
    format!(
        "<time datetime=\"{text}\" data-ms=\"{at_ms}\">{}</time>",
        text.replace('T', " ").trim_end_matches('Z').to_string() + " UTC"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_markup_character_is_escaped_and_the_rest_kept() {
        let s = esc(r#"<script>alert("x" & 'y')</script> ü"#).to_string();
        assert_eq!(
            s,
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt; ü"
        );
    }

    #[test]
    fn durations_read_coarsely() {
        assert_eq!(duration(12_400), "12 s");
        assert_eq!(duration(243_000), "4 min 3 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
        assert_eq!(duration(-5), "0 s");
    }
}
