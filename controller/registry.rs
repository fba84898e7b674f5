//! The image registry edge: does `repo:tag` exist? Asked through the registry's HTTP API (v2)
//! before any rollback so an unknown tag is refused with nothing changed.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("image repository {0:?} names no registry host (expected host[:port]/path, e.g. 127.0.0.1:5000/shop/backend)")]
    NoHost(String),
    #[error("registry {host} is unreachable: {message}")]
    Unreachable { host: String, message: String },
    #[error("registry {host} answered HTTP {status} for {repo}:{tag}; check credentials and the repository name")]
    Refused {
        host: String,
        repo: String,
        tag: String,
        status: u16,
    },
    #[error("registry {host}: tag listing of {repo} refused: {why}")]
    Paging {
        host: String,
        repo: String,
        why: String,
    },
}

impl RegistryError {
    fn paging(host: &str, repo: &str, why: String) -> RegistryError {
        RegistryError::Paging {
            host: host.to_string(),
            repo: repo.to_string(),
            why,
        }
    }
}

/// Pages of `tags/list` followed at most: 100 pages of 1,000 tags is far beyond any real
/// repository, and a registry that keeps answering `Link` (a loop, a bug) is stopped.
pub const MAX_PAGES: usize = 100;
/// The whole listing, every page included, ends within this.
pub const LIST_DEADLINE: Duration = Duration::from_secs(30);

/// The next page from a `Link: </v2/...?last=x&n=1000>; rel="next"` header, resolved against
/// `base` and accepted only on the same scheme, host and port: a `Link` must never send
/// rollwatch's registry credentials (or any request) to another host.
fn next_page(base: &url::Url, link: &str) -> Result<url::Url, String> {
    let target = link
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map(|(u, _)| u)
        .ok_or_else(|| format!("unreadable Link header {link:?}"))?;
    let next = base
        .join(target)
        .map_err(|e| format!("Link {target:?} is not a URL: {e}"))?;
    let same = next.scheme() == base.scheme()
        && next.host_str() == base.host_str()
        && next.port_or_known_default() == base.port_or_known_default()
        && next.username().is_empty()
        && next.password().is_none();
    if same {
        Ok(next)
    } else {
        Err(format!(
            "Link {target:?} points away from {} (only the registry's own host is followed)",
            base.origin().ascii_serialization()
        ))
    }
}

/// The tags of one `tags/list` page; a repository without tags may answer `"tags": null`.
/// Only what is not JSON is refused, saying where (reqwest's own decoding said only "error
/// decoding response body").
fn tags_page(body: &[u8]) -> Result<Vec<String>, String> {
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("bad tags/list answer: {e}"))?;
    Ok(body["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(String::from))
        .collect())
}

/// `127.0.0.1:5000/shop/backend` → (`127.0.0.1:5000`, `shop/backend`). A first component counts
/// as a host the way Docker decides it: it has a dot or a colon, or is `localhost`.
pub fn split_repository(repo: &str) -> Option<(&str, &str)> {
    let (host, path) = repo.split_once('/')?;
    let looks_like_host = host.contains('.') || host.contains(':') || host == "localhost";
    (looks_like_host && !path.is_empty()).then_some((host, path))
}

/// Plain HTTP is used only for loopback registries, which is also the only case Docker itself
/// treats as insecure by default.
fn scheme_for(host: &str) -> &'static str {
    let name = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    if name == "localhost" || name.starts_with("127.") || name == "[::1]" {
        "http"
    } else {
        "https"
    }
}

/// Environment variable holding a full `Authorization` header value (`Bearer ...` or
/// `Basic ...`) for registries that need one.
pub const AUTH_ENV: &str = "ROLLWATCH_REGISTRY_AUTH";

#[derive(Clone)]
pub struct RegistryClient {
    client: reqwest::Client,
    auth: Option<String>,
}

impl RegistryClient {
    pub fn new(timeout: Duration) -> Result<RegistryClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()?;
        let auth = std::env::var(AUTH_ENV).ok().filter(|a| !a.is_empty());
        Ok(RegistryClient { client, auth })
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.client.request(method, url);
        match &self.auth {
            Some(a) => req.header(reqwest::header::AUTHORIZATION, a),
            None => req,
        }
    }

    /// Every tag of `repo` (registry HTTP API v2 `tags/list`, following `Link` pagination on
    /// the same host, at most [`MAX_PAGES`] pages, all within [`LIST_DEADLINE`]).
    pub async fn list_tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let (host, path) =
            split_repository(repo).ok_or_else(|| RegistryError::NoHost(repo.to_string()))?;
        match tokio::time::timeout(LIST_DEADLINE, self.pages(host, path)).await {
            Ok(listed) => listed,
            Err(_) => Err(RegistryError::paging(
                host,
                path,
                format!(
                    "not finished within {}",
                    humantime::format_duration(LIST_DEADLINE)
                ),
            )),
        }
    }

    async fn pages(&self, host: &str, path: &str) -> Result<Vec<String>, RegistryError> {
        let paging = |why: String| RegistryError::paging(host, path, why);
        let first = format!("{}://{host}/v2/{path}/tags/list?n=1000", scheme_for(host));
        let base = url::Url::parse(&first).map_err(|e| paging(format!("bad URL {first}: {e}")))?;
        let mut next = Some(base.clone());
        let mut seen = std::collections::HashSet::new();
        let mut tags = Vec::new();
        while let Some(url) = next.take() {
            if !seen.insert(url.to_string()) {
                return Err(paging(format!(
                    "Link leads back to {url}, a page already read"
                )));
            }
            if seen.len() > MAX_PAGES {
                return Err(paging(format!("more than {MAX_PAGES} pages")));
            }
            let resp = self
                .request(reqwest::Method::GET, url.as_str())
                .send()
                .await
                .map_err(|e| RegistryError::Unreachable {
                    host: host.to_string(),
                    message: crate::root_cause(&e),
                })?;
            let status = resp.status().as_u16();
            if status == 404 {
                return Ok(Vec::new());
            }
            if !(200..300).contains(&status) {
                return Err(RegistryError::Refused {
                    host: host.to_string(),
                    repo: path.to_string(),
                    tag: "*".into(),
                    status,
                });
            }
            if let Some(link) = resp.headers().get(reqwest::header::LINK) {
                let link = link.to_str().unwrap_or_default();
                next = Some(next_page(&base, link).map_err(paging)?);
            }
            let body = resp.bytes().await.map_err(|e| RegistryError::Unreachable {
                host: host.to_string(),
                message: crate::root_cause(&e),
            })?;
            tags.extend(
                tags_page(&body).map_err(|message| RegistryError::Unreachable {
                    host: host.to_string(),
                    message,
                })?,
            );
        }
        Ok(tags)
    }

    /// `Ok(true)` when the registry has a manifest for `repo:tag`, `Ok(false)` on 404.
    pub async fn tag_exists(&self, repo: &str, tag: &str) -> Result<bool, RegistryError> {
        let (host, path) =
            split_repository(repo).ok_or_else(|| RegistryError::NoHost(repo.to_string()))?;
        let url = format!("{}://{host}/v2/{path}/manifests/{tag}", scheme_for(host));
        let resp = self
            .request(reqwest::Method::HEAD, &url)
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable { host: host.to_string(), message: crate::root_cause(&e) })?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => Err(RegistryError::Refused {
                host: host.to_string(),
                repo: path.to_string(),
                tag: tag.to_string(),
                status,
            }),
        }
    }
}

#[cfg(test)]
#[path = "registry_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_split_into_host_and_path() {
        assert_eq!(
            split_repository("127.0.0.1:5000/shop/backend"),
            Some(("127.0.0.1:5000", "shop/backend"))
        );
        assert_eq!(
            split_repository("registry.example.com/g/app/backend"),
            Some(("registry.example.com", "g/app/backend"))
        );
        assert_eq!(split_repository("shop/backend"), None);
        assert_eq!(split_repository("backend"), None);
    }

    #[test]
    fn links_are_followed_on_the_same_host_only() {
        let base = url::Url::parse("http://127.0.0.1:5000/v2/a/b/tags/list?n=1000").unwrap();
        let ok = next_page(&base, "</v2/a/b/tags/list?last=x&n=1000>; rel=\"next\"").unwrap();
        assert_eq!(
            ok.as_str(),
            "http://127.0.0.1:5000/v2/a/b/tags/list?last=x&n=1000"
        );
        // Seen in a trial: `<@otherhost/...>` was glued after the host, making it userinfo.
        // Resolved as a URL it is a relative path on the registry's own host.
        let glued = next_page(&base, "<@127.0.0.2/v2/x>; rel=\"next\"").unwrap();
        assert_eq!(glued.host_str(), Some("127.0.0.1"));
        assert_eq!(glued.port(), Some(5000));
        for bad in [
            "<http://127.0.0.2:5000/v2/a/b/tags/list>; rel=\"next\"",
            "<//127.0.0.2:5000/v2/x>; rel=\"next\"",
            "<http://user@127.0.0.1:5000/v2/x>; rel=\"next\"",
            "<https://127.0.0.1:5000/v2/x>; rel=\"next\"",
            "<http://127.0.0.1:5001/v2/x>; rel=\"next\"",
            "no brackets",
        ] {
            let e = next_page(&base, bad);
            assert!(e.is_err(), "{bad} -> {e:?}");
        }
    }

    /// Seen extracting `tags_page` for the property tests (issue 18): a page that is not JSON was
    /// refused as "error decoding response body", saying nothing of what or where.
    #[test]
    fn a_page_that_is_not_json_says_where() {
        let e = tags_page(b"<html>").unwrap_err();
        assert!(
            e.starts_with("bad tags/list answer: expected value at line 1 column 1"),
            "{e}"
        );
        assert_eq!(tags_page(br#"{"name":"a","tags":null}"#), Ok(vec![]));
        assert_eq!(
            tags_page(br#"{"tags":["v1",2,"v2"]}"#),
            Ok(vec!["v1".to_string(), "v2".to_string()])
        );
    }

    #[test]
    fn only_loopback_registries_use_plain_http() {
        assert_eq!(scheme_for("127.0.0.1:5000"), "http");
        assert_eq!(scheme_for("localhost:5000"), "http");
        assert_eq!(scheme_for("registry.example.com"), "https");
    }
}
