//! Property tests of what a Docker Engine answers, on bad input at volume (issue 18): container
//! lists, container inspects and events as arbitrary bytes, arbitrary JSON and valid answers
//! (as API 1.41 gives them) with one node replaced, one key removed or the text damaged;
//! status texts and endpoint spellings as arbitrary text. Each answer is decoded the way bollard
//! decodes it (`serde_json::from_slice` into its models) and then read by rollwatch's own
//! functions. Nothing panics; what cannot be decoded becomes a [`DockerError`] that names the
//! engine, the call and what was wrong; a listing is read into the containers it describes.

use super::*;
use crate::props_util::{clear, damaged, json, remove_key, replace_node};
use bollard::models::{ContainerSummary, EventMessage, ImageInspect};
use proptest::prelude::*;
use serde_json::{json as j, Value};

const KEYS: &[&str] = &[
    "Id",
    "Names",
    "Image",
    "ImageID",
    "Created",
    "State",
    "Status",
    "Labels",
    "Config",
    "HostConfig",
    "NetworkSettings",
    "Networks",
    "Env",
    "Cmd",
    "Entrypoint",
    "Type",
    "Action",
    "Actor",
    "ID",
    "Attributes",
    "time",
    "timeNano",
];

/// The error a call gives for an answer bollard cannot decode, as bollard builds it.
fn undecodable(action: &str, e: serde_json::Error) -> Result<(), TestCaseError> {
    let shown = DockerError::Api {
        endpoint: "unix:///var/run/docker.sock".into(),
        action: action.into(),
        source: BollardError::JsonDataError {
            message: e.to_string(),
            column: e.column(),
        },
    }
    .to_string();
    clear(&shown)?;
    prop_assert!(
        shown.contains("unix:///var/run/docker.sock") && shown.contains(action),
        "{}",
        shown
    );
    prop_assert!(
        shown.contains(" at line ") && shown.contains(" column "),
        "says not where: {}",
        shown
    );
    Ok(())
}

/// A listing decoded and read as `containers` reads it.
fn listing(body: &[u8]) -> Result<(), TestCaseError> {
    match serde_json::from_slice::<Vec<ContainerSummary>>(body) {
        Ok(list) => {
            let n = list.len();
            let read: Vec<ContainerInfo> = list.into_iter().map(container_info).collect();
            prop_assert_eq!(read.len(), n);
            let selector = Selector {
                compose_project: Some("shop".into()),
                compose_service: Some("backend".into()),
                labels: BTreeMap::new(),
                slots: false,
            };
            for c in &read {
                let _ = selector.matches(&c.labels);
                prop_assert!(!c.name.starts_with('/'), "{}", c.name);
                if let Some(h) = &c.health {
                    prop_assert!(["healthy", "unhealthy", "starting"].contains(&h.as_str()));
                }
            }
        }
        Err(e) => undecodable("listing containers", e)?,
    }
    Ok(())
}

/// An inspect decoded, and the recreate request built from it.
fn inspect(body: &[u8], image: &[u8]) -> Result<(), TestCaseError> {
    let old = match serde_json::from_slice::<ContainerInspectResponse>(body) {
        Ok(old) => old,
        Err(e) => return undecodable("inspecting container abc", e),
    };
    let defaults = match serde_json::from_slice::<ImageInspect>(image) {
        Ok(i) => i.config,
        Err(e) => return undecodable("inspecting image shop/backend:v1", e),
    };
    let created = recreate_body(&old, defaults.as_ref(), "sha256:abc");
    prop_assert_eq!(created.image.as_deref(), Some("sha256:abc"));
    Ok(())
}

fn event(body: &[u8]) -> Result<(), TestCaseError> {
    match serde_json::from_slice::<EventMessage>(body) {
        Ok(msg) => {
            let _ = event_of(msg);
        }
        Err(e) => undecodable("streaming events", e)?,
    }
    Ok(())
}

fn labels() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        proptest::sample::select(
            &[
                "com.docker.compose.project",
                "com.docker.compose.service",
                "com.docker.compose.project.working_dir",
                "com.docker.compose.project.config_files",
            ][..]
        )
        .prop_map(String::from),
        any::<String>(),
    ];
    let value = prop_oneof![
        Just("shop".to_string()),
        Just("backend".to_string()),
        any::<String>()
    ];
    proptest::collection::btree_map(key, value, 0..5).prop_map(|m| j!(m))
}

fn status() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(
            &[
                "Up 5 seconds (unhealthy)",
                "Up 1 minute (healthy)",
                "Up 2 seconds (health: starting)",
                "Exited (137) 3 seconds ago",
                "Exited (-1) now",
                "Exited (99999999999999999999) now",
                "Exited (",
                "Exited ()",
                "Restarting (1) 2 seconds ago",
                "",
            ][..]
        )
        .prop_map(String::from),
        any::<String>(),
        any::<i64>().prop_map(|i| format!("Exited ({i}) 1 second ago")),
    ]
}

fn container() -> impl Strategy<Value = Value> {
    (
        "[0-9a-f]{64}",
        proptest::collection::vec(prop_oneof!["/[a-z-]{0,12}", any::<String>()], 0..3),
        any::<String>(),
        // bollard refuses a state it does not know, and with it the whole listing (a clear
        // JsonDataError naming the state; an engine newer than bollard could cause it).
        proptest::sample::select(
            &["running", "exited", "restarting", "created", "paused", "dead", "removing", ""][..]
        )
        .prop_map(String::from),
        status(),
        any::<i64>(),
        labels(),
    )
        .prop_map(|(id, names, image, state, status, created, labels)| {
            j!({
                "Id": id, "Names": names, "Image": image, "ImageID": format!("sha256:{}", "0".repeat(64)),
                "Command": "/app", "Created": created, "Ports": [], "Labels": labels,
                "State": state, "Status": status,
                "HostConfig": {"NetworkMode": "default"},
                "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
                "Mounts": []
            })
        })
}

fn container_inspect() -> impl Strategy<Value = Value> {
    let strings = || proptest::collection::vec(any::<String>(), 0..3);
    (
        any::<String>(),
        strings(),
        strings(),
        labels(),
        proptest::option::of(any::<String>()),
    )
        .prop_map(|(name, env, cmd, labels, user)| {
            j!({
                "Id": "abc", "Name": name, "Image": "sha256:old",
                "Config": {"Env": env, "Cmd": cmd, "Labels": labels, "User": user, "WorkingDir": "/app"},
                "HostConfig": {"NetworkMode": "bridge", "RestartPolicy": {"Name": "unless-stopped"}},
                "NetworkSettings": {"Networks": {"shop_default": {"IPAddress": "172.18.0.2", "EndpointID": "e"}}}
            })
        })
}

fn image_inspect() -> impl Strategy<Value = Value> {
    (proptest::collection::vec(any::<String>(), 0..3), labels()).prop_map(|(env, labels)| {
        j!({"Id": "sha256:old", "Config": {"Env": env, "Labels": labels, "Cmd": ["/app"]}})
    })
}

fn an_event() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            proptest::sample::select(&["start", "die", "health_status: unhealthy", "oom", ""][..])
                .prop_map(String::from),
            any::<String>(),
        ],
        labels(),
        any::<i64>(),
    )
        .prop_map(|(action, attributes, time)| {
            j!({"Type": "container", "Action": action, "Actor": {"ID": "abc", "Attributes": attributes}, "time": time, "timeNano": time})
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_are_read_or_refused_clearly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        listing(&bytes)?;
        inspect(&bytes, b"{}")?;
        event(&bytes)?;
    }

    #[test]
    fn arbitrary_json_is_read_or_refused_clearly(v in json(KEYS)) {
        let body = v.to_string();
        listing(body.as_bytes())?;
        listing(j!([v]).to_string().as_bytes())?;
        inspect(body.as_bytes(), b"{}")?;
        inspect(b"{}", body.as_bytes())?;
        event(body.as_bytes())?;
    }

    #[test]
    fn valid_listings_are_read_whole(list in proptest::collection::vec(container(), 0..4)) {
        let read: Vec<ContainerInfo> = serde_json::from_value::<Vec<ContainerSummary>>(j!(list.clone()))
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .into_iter()
            .map(container_info)
            .collect();
        for (c, v) in read.iter().zip(&list) {
            prop_assert_eq!(v["Id"].as_str(), Some(c.id.as_str()));
            prop_assert_eq!(v["Created"].as_i64(), Some(c.created));
            prop_assert_eq!(c.compose_project.as_deref(), v["Labels"]["com.docker.compose.project"].as_str());
        }
    }

    #[test]
    fn answers_with_a_node_replaced_are_read_or_refused_clearly(
        list in proptest::collection::vec(container(), 1..3),
        old in container_inspect(),
        image in image_inspect(),
        e in an_event(),
        at in any::<usize>(),
        with in json(KEYS),
    ) {
        let mut list = j!(list);
        replace_node(&mut list, at, with.clone());
        listing(list.to_string().as_bytes())?;
        let (mut old, mut image, mut e) = (old, image, e);
        replace_node(&mut old, at, with.clone());
        replace_node(&mut image, at / 2, with.clone());
        inspect(old.to_string().as_bytes(), image.to_string().as_bytes())?;
        replace_node(&mut e, at, with);
        event(e.to_string().as_bytes())?;
    }

    #[test]
    fn answers_with_a_key_removed_are_read_or_refused_clearly(
        list in proptest::collection::vec(container(), 1..3),
        old in container_inspect(),
        e in an_event(),
        at in any::<usize>(),
    ) {
        let mut list = j!(list);
        remove_key(&mut list, at);
        listing(list.to_string().as_bytes())?;
        let (mut old, mut e) = (old, e);
        remove_key(&mut old, at);
        inspect(old.to_string().as_bytes(), b"{}")?;
        remove_key(&mut e, at);
        event(e.to_string().as_bytes())?;
    }

    #[test]
    fn damaged_answers_are_read_or_refused_clearly(c in container(), e in an_event(), at in any::<usize>(), insert in any::<char>()) {
        for body in damaged(&j!([c]).to_string(), at, insert) {
            listing(body.as_bytes())?;
        }
        for body in damaged(&e.to_string(), at, insert) {
            event(body.as_bytes())?;
        }
    }

    #[test]
    fn status_texts_never_panic(status in status()) {
        let _ = health_from_status(&status);
        if let Some(code) = exit_code_from_status(&status) {
            prop_assert!(status.contains(&code.to_string()));
        }
    }

    /// An endpoint as the config spells it: parsed, or refused quoting the value.
    #[test]
    fn endpoints_parse_or_are_refused_quoting_the_value(
        s in prop_oneof![
            any::<String>(),
            ("(unix|tcp|ssh|http)://", "[a-z0-9@:./_-]{0,20}").prop_map(|(a, b)| format!("{a}{b}")),
        ],
        tls in any::<bool>(),
        key in any::<bool>(),
    ) {
        match DockerEndpoint::try_from(s.clone()) {
            Ok(e) => prop_assert!(!e.to_string().is_empty()),
            Err(e) => {
                clear(&e)?;
                prop_assert!(e.contains(&format!("{s:?}")), "{}", e);
            }
        }
        let mut table = j!({"url": s});
        if tls {
            table["tls"] = j!({"ca": "/ca.pem", "cert": "/cert.pem", "key": "/key.pem"});
        }
        if key {
            table["ssh_key"] = j!("/id");
        }
        if let Err(e) = serde_json::from_value::<DockerEndpoint>(table) {
            clear(&e.to_string())?;
        }
    }
}
