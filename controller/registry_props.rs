//! Property tests of what a registry answers, on bad input at volume (issue 18): `tags/list`
//! pages as arbitrary bytes, arbitrary JSON and valid pages with one node replaced, one key
//! removed or the text damaged; paging `Link` headers as arbitrary text and as near-valid links
//! to every kind of host, port, scheme and userinfo; repository names as arbitrary text.
//! Nothing panics; a page is read or refused saying where it stops being JSON; a followed link
//! never leaves the registry's scheme, host and port, and a refused one says why.

use super::*;
use crate::props_util::{clear, damaged, json, remove_key, replace_node};
use proptest::prelude::*;
use serde_json::{json as j, Value};

const KEYS: &[&str] = &["name", "tags", "errors", "code", "message"];

fn page(body: &[u8]) -> Result<(), TestCaseError> {
    match tags_page(body) {
        Ok(tags) => {
            let v: Value =
                serde_json::from_slice(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let listed = v["tags"]
                .as_array()
                .map(|t| t.iter().filter(|t| t.is_string()).count());
            prop_assert_eq!(tags.len(), listed.unwrap_or(0));
        }
        Err(e) => {
            clear(&e)?;
            prop_assert!(e.starts_with("bad tags/list answer: "), "{}", e);
            prop_assert!(
                e.contains(" at line ") && e.contains(" column "),
                "says not where: {}",
                e
            );
            prop_assert!(
                serde_json::from_slice::<Value>(body).is_err(),
                "JSON refused: {}",
                e
            );
        }
    }
    Ok(())
}

fn valid_page() -> impl Strategy<Value = Value> {
    (
        any::<String>(),
        proptest::option::of(proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "v[0-9]\\.[0-9]\\.[0-9]",
                (0usize..300).prop_map(|n| "a".repeat(n))
            ],
            0..20,
        )),
    )
        .prop_map(|(name, tags)| j!({"name": name, "tags": tags}))
}

const BASE: &str = "http://127.0.0.1:5000/v2/shop/backend/tags/list?n=1000";

fn link_target() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just(""),
        Just("http://"),
        Just("https://"),
        Just("//"),
        Just("ftp://"),
        Just("javascript:"),
        Just("HTTP://")
    ];
    let userinfo = prop_oneof![
        Just(""),
        Just("user@"),
        Just("user:pw@"),
        Just("@"),
        Just(":@")
    ];
    let host = prop_oneof![
        Just("127.0.0.1"),
        Just("127.0.0.2"),
        Just("localhost"),
        Just("[::1]"),
        Just("evil.example"),
        Just("127.0.0.1.evil.example"),
        Just("0x7f.1"),
        Just(""),
    ];
    let port = prop_oneof![
        Just(""),
        Just(":5000"),
        Just(":5001"),
        Just(":80"),
        Just(":65536"),
        Just(":-1"),
        Just(":")
    ];
    let path = prop_oneof![
        Just("/v2/shop/backend/tags/list?last=v1&n=1000".to_string()),
        Just("?last=x".to_string()),
        Just("../../../x".to_string()),
        Just("".to_string()),
        "[/?#%@:a-z0-9.]{0,20}",
        any::<String>(),
    ];
    (scheme, userinfo, host, port, path).prop_map(|(s, u, h, p, path)| {
        if s.is_empty() {
            path
        } else {
            format!("{s}{u}{h}{p}{path}")
        }
    })
}

fn link() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => link_target().prop_map(|t| format!("<{t}>; rel=\"next\"")),
        1 => (link_target(), link_target()).prop_map(|(a, b)| format!("<{a}>; rel=\"next\", <{b}>; rel=\"prev\"")),
        1 => link_target().prop_map(|t| format!("<{t}")),
        1 => link_target().prop_map(|t| format!("{t}>")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_read_or_refused_clearly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        page(&bytes)?;
    }

    #[test]
    fn arbitrary_json_is_read(v in json(KEYS)) {
        page(v.to_string().as_bytes())?;
    }

    #[test]
    fn valid_pages_are_read_whole(v in valid_page()) {
        let tags = tags_page(v.to_string().as_bytes()).map_err(TestCaseError::fail)?;
        let want: Vec<String> = v["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect();
        prop_assert_eq!(tags, want);
    }

    #[test]
    fn a_page_with_a_node_replaced_or_a_key_removed_is_read_or_refused_clearly(v in valid_page(), at in any::<usize>(), with in json(KEYS)) {
        let mut replaced = v.clone();
        replace_node(&mut replaced, at, with);
        page(replaced.to_string().as_bytes())?;
        let mut removed = v;
        remove_key(&mut removed, at);
        page(removed.to_string().as_bytes())?;
    }

    #[test]
    fn a_damaged_page_is_read_or_refused_clearly(v in valid_page(), at in any::<usize>(), insert in any::<char>()) {
        for body in damaged(&v.to_string(), at, insert) {
            page(body.as_bytes())?;
        }
    }

    /// A followed `Link` stays on the registry: same scheme, host and port, no credentials.
    #[test]
    fn links_are_followed_on_the_registry_only_or_refused_clearly(link in link()) {
        let base = url::Url::parse(BASE).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match next_page(&base, &link) {
            Ok(next) => {
                prop_assert_eq!(next.scheme(), "http");
                prop_assert_eq!(next.host_str(), Some("127.0.0.1"));
                prop_assert_eq!(next.port_or_known_default(), Some(5000));
                prop_assert!(next.username().is_empty() && next.password().is_none(), "{}", next);
            }
            Err(e) => {
                clear(&e)?;
                prop_assert!(e.contains("Link"), "{}", e);
            }
        }
    }

    #[test]
    fn repository_names_split_into_their_own_parts(repo in prop_oneof![any::<String>(), "[a-z0-9.:/@-]{0,30}"]) {
        if let Some((host, path)) = split_repository(&repo) {
            prop_assert_eq!(format!("{host}/{path}"), repo.clone());
            prop_assert!(!path.is_empty() && !host.contains('/'));
            let scheme = scheme_for(host);
            prop_assert!(scheme == "http" || scheme == "https");
        }
        let e = RegistryError::NoHost(repo).to_string();
        clear(&e)?;
    }
}
