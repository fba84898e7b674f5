//! Browser sessions for the status page. The API token is typed once into a form; what the
//! browser keeps is a random session id in an `HttpOnly`, `SameSite=Strict` cookie (so page
//! scripts and other sites' requests cannot use it), never the token and never in a URL. Each
//! session has its own CSRF token, which every form posts back.
//!
//! Sessions live in memory: a restart logs everyone out, which for a page people open during
//! an incident costs one more login and keeps no secret on disk.

use std::collections::HashMap;
use std::sync::Mutex;

use ring::rand::{SecureRandom, SystemRandom};

use crate::store::now_ms;

/// The cookie holding the session id.
pub const COOKIE: &str = "rollwatch_session";
/// How long a session lasts after login.
pub const TTL_MS: i64 = 12 * 3600 * 1000;
/// Sessions held at most; a login beyond it evicts the oldest.
const MAX_SESSIONS: usize = 1024;

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Session>>,
}

struct Session {
    csrf: String,
    expires_ms: i64,
    /// The result of the last action, shown once on the next page.
    notice: Option<(String, bool)>,
}

#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed; no session was created")]
pub struct NoRandom;

impl Sessions {
    /// A new session: `(id, csrf)`.
    pub fn create(&self) -> Result<(String, String), NoRandom> {
        let (id, csrf) = (random_hex()?, random_hex()?);
        let now = now_ms();
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        by_id.retain(|_, s| s.expires_ms > now);
        if by_id.len() >= MAX_SESSIONS {
            if let Some(oldest) = by_id
                .iter()
                .min_by_key(|(_, s)| s.expires_ms)
                .map(|(k, _)| k.clone())
            {
                by_id.remove(&oldest);
            }
        }
        by_id.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires_ms: now + TTL_MS,
                notice: None,
            },
        );
        Ok((id, csrf))
    }

    /// The CSRF token of a live session.
    pub fn csrf(&self, id: &str) -> Option<String> {
        let by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        by_id
            .get(id)
            .filter(|s| s.expires_ms > now_ms())
            .map(|s| s.csrf.clone())
    }

    /// Keeps an action's result (and whether it failed) for the session's next page.
    pub fn set_notice(&self, id: &str, text: String, failed: bool) {
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = by_id.get_mut(id) {
            s.notice = Some((text, failed));
        }
    }

    pub fn take_notice(&self, id: &str) -> Option<(String, bool)> {
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        by_id.get_mut(id).and_then(|s| s.notice.take())
    }

    pub fn end(&self, id: &str) {
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        by_id.remove(id);
    }
}

/// Wrong tokens accepted per minute by the login form before it refuses every login for the
/// rest of that minute. One budget for all clients (the server does not tell clients apart):
/// someone guessing can keep people from logging in for a while, never guess fast.
const WRONG_LOGINS_PER_MINUTE: u32 = 10;

#[derive(Default)]
pub struct LoginThrottle {
    /// The minute's start (ms) and the wrong tokens in it.
    window: Mutex<(i64, u32)>,
}

impl LoginThrottle {
    /// Whether a login may be tried now; else the seconds until it may.
    pub fn allow(&self) -> Result<(), u64> {
        let now = now_ms();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if now - w.0 >= 60_000 {
            *w = (now, 0);
        }
        if w.1 < WRONG_LOGINS_PER_MINUTE {
            return Ok(());
        }
        Err(u64::try_from((w.0 + 60_000 - now).max(1000) / 1000).unwrap_or(60))
    }

    pub fn failed(&self) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.1 = w.1.saturating_add(1);
    }
}

/// Whether a posted CSRF token is the session's, compared in constant time.
pub fn csrf_matches(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The session id in a `Cookie` header value, if any.
pub fn from_cookie_header(value: &str) -> Option<&str> {
    value.split(';').find_map(|pair| {
        let (name, v) = pair.trim().split_once('=')?;
        (name == COOKIE && !v.is_empty()).then_some(v)
    })
}

/// The `Set-Cookie` value that stores `id`, or (with `None`) clears it.
pub fn set_cookie(id: Option<&str>) -> String {
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            TTL_MS / 1000
        ),
        None => format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    }
}

fn random_hex() -> Result<String, NoRandom> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| NoRandom)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_its_own_csrf_and_ends_on_logout() {
        let sessions = Sessions::default();
        let (a, csrf_a) = sessions.create().unwrap();
        let (b, csrf_b) = sessions.create().unwrap();
        assert_ne!(a, b);
        assert_ne!(csrf_a, csrf_b);
        assert_eq!(a.len(), 64);
        assert_eq!(sessions.csrf(&a).as_deref(), Some(csrf_a.as_str()));
        assert!(csrf_matches(&csrf_a, &csrf_a));
        assert!(!csrf_matches(&csrf_a, &csrf_b));
        assert!(!csrf_matches(&csrf_a, ""));
        sessions.end(&a);
        assert_eq!(sessions.csrf(&a), None);
        assert!(sessions.csrf(&b).is_some());
        assert_eq!(sessions.csrf("made-up"), None);
    }

    #[test]
    fn wrong_logins_beyond_the_budget_wait_for_the_next_minute() {
        let t = LoginThrottle::default();
        for _ in 0..WRONG_LOGINS_PER_MINUTE {
            assert!(t.allow().is_ok());
            t.failed();
        }
        let wait = t.allow().unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        t.window.lock().unwrap().0 -= 60_000;
        assert!(t.allow().is_ok(), "a new minute, a new budget");
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_http_only_strict() {
        let header = format!("theme=dark; {COOKIE}=abc123; other=1");
        assert_eq!(from_cookie_header(&header), Some("abc123"));
        assert_eq!(from_cookie_header("theme=dark"), None);
        assert_eq!(from_cookie_header(&format!("{COOKIE}=")), None);
        let set = set_cookie(Some("abc"));
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(set_cookie(None).contains("Max-Age=0"));
    }
}
