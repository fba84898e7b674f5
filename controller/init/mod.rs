//! `rollwatch init`: from a running Docker host to a config file. The engine's containers are
//! read ([`discover`]), turned into proposed targets ([`propose`]), their health endpoints found
//! by probing, and the accepted ones written ([`render`]). The prompts live in the CLI.

pub mod discover;
pub mod propose;
pub mod render;

use std::time::Duration;

use futures_util::future::join_all;
use url::Url;

use crate::docker::DockerEndpoint;
use propose::Proposal;

/// The paths probed on every candidate port, after any path a healthcheck names.
pub const HEALTH_PATHS: [&str; 3] = ["/health", "/healthz", "/up"];

/// One probe's deadline: a port that hangs is not the health endpoint anyone wants.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest answer body kept for display.
const ANSWER_CHARS: usize = 80;

/// The health URL found for a proposal and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFound {
    pub url: Url,
    /// `HTTP 200 {"status":"ok"}`, shortened.
    pub answer: String,
    /// Where the port came from.
    pub source: String,
    /// The answer passes rollwatch's health rule (2xx, and `status` is `ok` when JSON has one).
    pub passed: bool,
}

/// The address health URLs use: loopback for a local engine, else the engine's host.
pub fn probe_host(endpoint: &DockerEndpoint) -> String {
    let host_of = |addr: &str| {
        let addr = addr.rsplit('@').next().unwrap_or(addr);
        let addr = addr.strip_prefix("ssh://").unwrap_or(addr);
        match addr.rsplit_once(':') {
            Some((h, _)) if !h.is_empty() => h.to_string(),
            _ => addr.to_string(),
        }
    };
    match endpoint {
        DockerEndpoint::Unix(_) => "127.0.0.1".into(),
        DockerEndpoint::Tcp(addr) | DockerEndpoint::Tls { addr, .. } => host_of(addr),
        DockerEndpoint::Ssh { addr, .. } => host_of(addr),
    }
}

/// Whether the engine runs on this machine, so compose directories can be read here.
pub fn is_local(endpoint: &DockerEndpoint) -> bool {
    let host = probe_host(endpoint);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Probes every candidate port on `host`: the healthcheck's own path first, then
/// [`HEALTH_PATHS`]. The first answer that passes wins; failing that, the first HTTP answer
/// other than 404 (an endpoint that exists but is unhealthy now); else `None`. Also returns
/// the ports tried, for the comment when nothing answered.
pub async fn find_health(
    client: &reqwest::Client,
    host: &str,
    proposal: &Proposal,
) -> (Option<HealthFound>, Vec<String>) {
    let mut urls: Vec<(Url, String)> = Vec::new();
    for c in &proposal.ports {
        let paths = c.path.iter().map(String::as_str).chain(HEALTH_PATHS);
        for path in paths {
            if let Ok(url) = Url::parse(&format!("http://{host}:{}{path}", c.port)) {
                if !urls.iter().any(|(u, _)| *u == url) {
                    urls.push((url, c.source.clone()));
                }
            }
        }
    }
    let answers = join_all(urls.iter().map(|(url, _)| answer(client, url))).await;
    let tried = proposal
        .ports
        .iter()
        .map(|c| format!("{} ({})", c.port, c.source))
        .collect();
    let pick = |want: fn(&(u16, bool)) -> bool| {
        urls.iter()
            .zip(&answers)
            .find_map(|((url, source), a)| match a {
                Some((status, passed, text)) if want(&(*status, *passed)) => Some(HealthFound {
                    url: url.clone(),
                    answer: text.clone(),
                    source: source.clone(),
                    passed: *passed,
                }),
                _ => None,
            })
    };
    let found = pick(|(_, passed)| *passed).or_else(|| pick(|(status, _)| *status != 404));
    (found, tried)
}

/// `(HTTP status, passes the health rule, display text)`, or `None` when nothing answered.
async fn answer(client: &reqwest::Client, url: &Url) -> Option<(u16, bool, String)> {
    let resp = client
        .get(url.clone())
        .timeout(PROBE_TIMEOUT)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let passed = crate::probe::judge(status, &body).is_ok();
    let text: String = String::from_utf8_lossy(&body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(ANSWER_CHARS)
        .collect();
    Some((
        status,
        passed,
        format!("HTTP {status} {text}").trim_end().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_urls_go_to_the_engine_host() {
        assert_eq!(probe_host(&DockerEndpoint::default()), "127.0.0.1");
        let tcp = DockerEndpoint::try_from("tcp://10.1.2.3:2375".to_string()).unwrap();
        assert_eq!(probe_host(&tcp), "10.1.2.3");
        assert!(!is_local(&tcp));
        let ssh = DockerEndpoint::try_from("ssh://deploy@web1".to_string()).unwrap();
        assert_eq!(probe_host(&ssh), "web1");
        let lo = DockerEndpoint::try_from("tcp://127.0.0.1:2376".to_string()).unwrap();
        assert!(is_local(&lo));
    }
}
