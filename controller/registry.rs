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

#[derive(Clone)]
pub struct RegistryClient {
    client: reqwest::Client,
}

impl RegistryClient {
    pub fn new(timeout: Duration) -> Result<RegistryClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .build()?;
        Ok(RegistryClient { client })
    }

    /// `Ok(true)` when the registry has a manifest for `repo:tag`, `Ok(false)` on 404.
    pub async fn tag_exists(&self, repo: &str, tag: &str) -> Result<bool, RegistryError> {
        let (host, path) =
            split_repository(repo).ok_or_else(|| RegistryError::NoHost(repo.to_string()))?;
        let url = format!("{}://{host}/v2/{path}/manifests/{tag}", scheme_for(host));
        let resp = self
            .client
            .head(&url)
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .map_err(|e| RegistryError::Unreachable { host: host.to_string(), message: root_cause(&e) })?;
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

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(inner) = cur.source() {
        cur = inner;
    }
    cur.to_string()
}

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
    fn only_loopback_registries_use_plain_http() {
        assert_eq!(scheme_for("127.0.0.1:5000"), "http");
        assert_eq!(scheme_for("localhost:5000"), "http");
        assert_eq!(scheme_for("registry.example.com"), "https");
    }
}
