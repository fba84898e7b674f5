//! The shared integration-test bed: real Docker Engine, real registry on 127.0.0.1:5000, real
//! docker-compose, (module `browser`) a real headless Chromium and (module `haproxy`) real
//! HAProxy instances. Each test gets its own app name (so its own compose projects, image
//! repositories and loopback port) and everything it started is removed on drop, pass or fail.
#![allow(dead_code)]

pub mod browser;
pub mod canary;
pub mod ha;
pub mod haproxy;
pub mod postgres;
pub mod slots;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const REGISTRY: &str = "127.0.0.1:5000";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command and returns its output; panics with the command and its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Checks the engine and registry answer (scripts/setup starts them) and pushes the demo
/// images once per machine (scripts/build-images skips unchanged work).
pub fn testbed() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let docker = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
        assert!(
            docker.is_ok_and(|o| o.status.success()),
            "no Docker Engine answers: run scripts/setup (scripts/test does) before the integration tests"
        );
        let script = repo_root().join("scripts/build-images");
        sh(script.to_str().unwrap(), &[env!("CARGO_BIN_EXE_rollwatch-demo-service")]);
    });
}

/// A loopback port nobody uses right now, for a service to listen on. Taken below Linux's
/// ephemeral range (32768–60999): a port from that range can be taken again, before the service
/// binds it, as the local end of some other test's outgoing connection (rollwatch keeps probe
/// connections alive), which left a demo container restarting on a taken port while another
/// test's service answered its health URL.
///
/// Test processes run side by side (nextest runs every test in its own process), and a port
/// that is free now may be one another process handed out a moment ago and has not bound yet.
/// So every process on the machine takes the next port from one shared counter (a file under
/// an exclusive lock): within a span of 17,000 ports none is handed out twice.
pub fn free_port() -> u16 {
    const LOW: usize = 15_000;
    const SPAN: usize = 17_000;
    for _ in 0..SPAN {
        let port = LOW + next_port_slot() % SPAN;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// The machine-wide port counter: read, advanced and written back under `flock`.
fn next_port_slot() -> usize {
    use std::io::{Read, Seek, Write};
    let path = std::env::temp_dir().join("rollwatch-test-ports.next");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap_or_else(|e| panic!("port counter {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock port counter {}: {e}", path.display()));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    // A new or garbled counter starts somewhere that depends on the process, not always at 0.
    let slot = text
        .trim()
        .parse::<usize>()
        .unwrap_or_else(|_| (std::process::id() as usize).wrapping_mul(7_919));
    let next = (slot + 1) % 1_000_000_000;
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(next.to_string().as_bytes()));
    written.unwrap_or_else(|e| panic!("write port counter {}: {e}", path.display()));
    slot
}

/// A name no other test in this run uses: compose project, image repository and container prefix.
pub fn unique_app(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Makes `127.0.0.1:5000/<app>/<role>:<tag>` exist in the registry for each tag (retagged from
/// the demo images, so the push only writes a manifest).
pub fn push_app_images(app: &str, role: &str, tags: &[&str]) {
    for tag in tags {
        let src = format!("{REGISTRY}/demo/{role}:{tag}");
        let dst = format!("{REGISTRY}/{app}/{role}:{tag}");
        sh("docker", &["tag", &src, &dst]);
        sh("docker", &["push", "-q", &dst]);
    }
}

/// A fresh app name for one test, with `<app>/backend:<tag>` in the registry for each tag; the
/// test bed is checked first.
pub fn app_with_images(prefix: &str, tags: &[&str]) -> String {
    testbed();
    let app = unique_app(prefix);
    push_app_images(&app, "backend", tags);
    app
}

/// Polls `f` until it returns `Some` or `within` passes.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends one raw HTTP/1.1 request over loopback and reads the answer to the end: (status, body).
fn http_exchange(port: u16, request: &str, read_timeout: Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(read_timeout)).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// GET over loopback without any HTTP client crate: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    http_exchange(port, &request, Duration::from_secs(2))
}

/// POST a JSON body over loopback, with a bearer token when given: (status, body). Waits up to
/// two minutes for the answer: a rollback ordered over the API answers once validated.
pub fn http_post(port: u16, path: &str, token: Option<&str>, body: &str) -> Option<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_exchange(port, &request, Duration::from_secs(120))
}

/// One raw HTTP/1.1 exchange: (status, head, body). Write errors are ignored (the server may
/// answer and close before it read a body it refuses); whatever was read is kept.
pub fn http_raw(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let addr = ([127, 0, 0, 1], port).into();
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The demo's /health body, e.g. `{"status":"ok","version":"v1.0.0"}`.
pub fn health(port: u16) -> Option<String> {
    http_get(port, "/health").map(|(_, b)| b)
}

pub fn wait_healthy_version(port: u16, version: &str) {
    wait_for(
        Duration::from_secs(30),
        &format!("/health ok on {version}"),
        || health(port).filter(|b| b.contains("\"ok\"") && b.contains(version)),
    );
}

/// One inspected container, the fields the tests assert on.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub id: String,
    pub name: String,
    pub image_ref: String,
    pub image_id: String,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub cmd: Vec<String>,
    pub network_mode: String,
    pub running: bool,
}

pub fn inspect(container: &str) -> Inspected {
    let out = sh("docker", &["inspect", container]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("docker inspect JSON");
    let c = &v[0];
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Inspected {
        id: c["Id"].as_str().unwrap_or_default().to_string(),
        name: c["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image_ref: c["Config"]["Image"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        image_id: c["Image"].as_str().unwrap_or_default().to_string(),
        env: strings(&c["Config"]["Env"]),
        labels: c["Config"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default(),
        cmd: strings(&c["Config"]["Cmd"]),
        network_mode: c["HostConfig"]["NetworkMode"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        running: c["State"]["Running"].as_bool().unwrap_or(false),
    }
}

pub fn image_id(image: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .ok()?;
    out.status.success().then(|| stdout(&out))
}

/// Containers (running or not) of a compose project, by name.
pub fn project_containers(project: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={project}");
    let out = sh(
        "docker",
        &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
    );
    stdout(&out)
        .lines()
        .map(String::from)
        .filter(|l| !l.is_empty())
        .collect()
}

/// One container of an app, in any compose project and any state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppContainer {
    pub name: String,
    /// `running`, `created`, `exited`, ...
    pub state: String,
    pub image_id: String,
    pub project: String,
}

/// Every container labelled `rollwatch.test.app=<app>`, across all compose projects.
pub fn app_containers(app: &str) -> Vec<AppContainer> {
    let filter = format!("label=rollwatch.test.app={app}");
    let out = sh("docker", &["ps", "-aq", "--filter", &filter]);
    let ids = stdout(&out);
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Name}} {{.State.Status}} {{.Image}} {{index .Config.Labels \"com.docker.compose.project\"}}",
    ];
    args.extend(ids.lines());
    // A container removed between the listing and the inspect makes `inspect` fail: list again.
    let Ok(out) = Command::new("docker").args(&args).output() else {
        return Vec::new();
    };
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(AppContainer {
                name: w.next()?.trim_start_matches('/').to_string(),
                state: w.next()?.to_string(),
                image_id: w.next()?.to_string(),
                project: w.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// Pushes `<app>/<role>:<tag>` as an image that cannot start: its entrypoint does not exist, so
/// `docker start` fails after compose has already stopped the old container.
pub fn push_unstartable_image(app: &str, role: &str, tag: &str) {
    let image = format!("{REGISTRY}/{app}/{role}:{tag}");
    let script = format!(
        "tar -c -T /dev/null | docker import -c 'ENTRYPOINT [\"/app/missing\"]' - {image} >/dev/null && docker push -q {image} >/dev/null"
    );
    sh("sh", &["-c", &script]);
}

/// A compose deployment laid out like the runbook's `/opt/<app>/<env>/<role>`, in a temp dir.
pub struct ComposeDeployment {
    pub root: tempfile::TempDir,
    pub app: String,
    pub env: String,
    pub role: String,
    pub port: u16,
    pub api_port: u16,
    pub project: String,
    /// How the project got its name (`-p`, `.env`, or the directory).
    pub naming: Naming,
}

/// How a test deployment's compose project gets its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `COMPOSE_PROJECT_NAME=<app>-<env>-<role>` in `.env`.
    EnvFile,
    /// `docker-compose -p <app>-<env>-<role>`, nothing in `.env`.
    Flag,
    /// Neither: compose names the project after the directory, `<role>`.
    Directory,
}

impl ComposeDeployment {
    /// Lays out the directory with `.env` at `tag` and brings it up with docker-compose.
    pub fn up(app: &str, env: &str, role: &str, tag: &str) -> ComposeDeployment {
        ComposeDeployment::up_on(app, env, role, tag, "")
    }

    /// The same, standing in for another host `host` of the target: its own directory tree,
    /// compose project and port, the same image repository and app label.
    pub fn up_on(app: &str, env: &str, role: &str, tag: &str, host: &str) -> ComposeDeployment {
        ComposeDeployment::start(app, env, role, tag, host, Naming::EnvFile)
    }

    /// Brought up the way many teams do: `docker-compose -p <app>-<env>-<role>` in
    /// `.../<role>`, with no `COMPOSE_PROJECT_NAME` in `.env`, so a plain `docker-compose up`
    /// in that directory would start a second project named `<role>`.
    pub fn up_with_project_flag(app: &str, env: &str, role: &str, tag: &str) -> ComposeDeployment {
        ComposeDeployment::start(app, env, role, tag, "", Naming::Flag)
    }

    /// Brought up with a plain `docker-compose up` in `.../<role>`: the project is `<role>`.
    pub fn up_plain(app: &str, env: &str, role: &str, tag: &str) -> ComposeDeployment {
        ComposeDeployment::start(app, env, role, tag, "", Naming::Directory)
    }

    fn start(
        app: &str,
        env: &str,
        role: &str,
        tag: &str,
        host: &str,
        naming: Naming,
    ) -> ComposeDeployment {
        let root = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let project = if naming == Naming::Directory {
            role.to_string()
        } else if host.is_empty() {
            format!("{app}-{env}-{role}")
        } else {
            format!("{app}-{env}-{role}-{host}")
        };
        let d = ComposeDeployment {
            root,
            app: app.into(),
            env: env.into(),
            role: role.into(),
            port,
            api_port: free_port(),
            project,
            naming,
        };
        std::fs::create_dir_all(d.dir()).expect("deployment dir");
        // A hung (SIGSTOPped) container is killed 2 s after its stop instead of Docker's 10 s:
        // the tests that hang one wait less; the demo itself exits at once on SIGTERM.
        std::fs::write(
            d.dir().join("docker-compose.yml"),
            format!(
                "version: \"3.7\"\nservices:\n  {role}:\n    image: ${{CONTAINER_REGISTRY}}/{role}:${{IMAGE_TAG}}\n    network_mode: host\n    restart: unless-stopped\n    stop_grace_period: 2s\n    labels:\n      rollwatch.test.app: {app}\n    environment:\n      DEMO_PORT: ${{APP_PORT}}\n"
            ),
        )
        .expect("compose file");
        let project_line = if naming == Naming::EnvFile {
            format!("COMPOSE_PROJECT_NAME={}\n", d.project)
        } else {
            String::new()
        };
        std::fs::write(
            d.env_path(),
            format!(
                "# written by the test harness\n{project_line}CONTAINER_REGISTRY={REGISTRY}/{app}\nIMAGE_TAG={tag}\nAPP_PORT={port}\n"
            ),
        )
        .expect(".env");
        d.compose(&["up", "-d", "--remove-orphans"]);
        d
    }

    pub fn dir(&self) -> PathBuf {
        self.root
            .path()
            .join("opt")
            .join(&self.app)
            .join(&self.env)
            .join(&self.role)
    }

    pub fn env_path(&self) -> PathBuf {
        self.dir().join(".env")
    }

    pub fn env_file(&self) -> String {
        std::fs::read_to_string(self.env_path()).expect("read .env")
    }

    pub fn compose(&self, args: &[&str]) -> Output {
        let mut full = vec!["--env-file", ".env"];
        if self.naming == Naming::Flag {
            full.splice(0..0, ["-p", self.project.as_str()]);
        }
        full.extend_from_slice(args);
        let out = Command::new("docker-compose")
            .args(&full)
            .current_dir(self.dir())
            .output()
            .expect("run docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A deploy as CI does it: `.env` gets the new tag, then `up -d`.
    pub fn deploy(&self, tag: &str) {
        let text = self.env_file();
        let updated: String = text
            .lines()
            .map(|l| {
                if l.starts_with("IMAGE_TAG=") {
                    format!("IMAGE_TAG={tag}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(self.env_path(), updated).expect("write .env");
        self.compose(&["up", "-d", "--remove-orphans"]);
    }

    /// Asserts the service runs `tag` of the app's repository.
    pub fn assert_runs(&self, tag: &str) {
        assert_eq!(
            self.container().image_ref,
            format!("{}:{tag}", self.repository())
        );
    }

    pub fn db(&self) -> PathBuf {
        self.root.path().join("rollwatch.db")
    }

    pub fn repository(&self) -> String {
        format!("{REGISTRY}/{}/{}", self.app, self.role)
    }

    /// The one container of the service, inspected.
    pub fn container(&self) -> Inspected {
        let names = project_containers(&self.project);
        assert_eq!(
            names.len(),
            1,
            "expected one container in {}, found {names:?}",
            self.project
        );
        inspect(&names[0])
    }

    /// A config file with this deployment as its only target; `extra` lands in the target table.
    pub fn write_config(&self, registry: &str, extra: &str) -> PathBuf {
        self.write_config_with_dir(registry, extra, true)
    }

    /// The same; without `executor.dir` when `with_dir` is false (taken from the labels).
    pub fn write_config_with_dir(&self, registry: &str, extra: &str, with_dir: bool) -> PathBuf {
        let dir = if with_dir {
            format!("dir = \"{}\", ", self.dir().display())
        } else {
            String::new()
        };
        let path = self.root.path().join("rollwatch.toml");
        std::fs::write(
            &path,
            format!(
                r#"[controller]
store = "rollwatch.db"
listen = "127.0.0.1:{api_port}"

[[targets]]
env = "{env}"
role = "{role}"
selector = {{ compose_project = "{project}", compose_service = "{role}" }}
health = {{ url = "http://127.0.0.1:{port}/health", timeout = "1s", validation_timeout = "8s" }}
executor = {{ kind = "compose", {dir}registry = "{registry}" }}
{extra}
"#,
                env = self.env,
                role = self.role,
                project = self.project,
                port = self.port,
                api_port = self.api_port,
            ),
        )
        .expect("write config");
        path
    }
}

impl Drop for ComposeDeployment {
    fn drop(&mut self) {
        // Remove by label rather than `compose down`: also works when the test broke the files,
        // and catches containers a wrong rollback started in another project.
        let by_app = app_containers(&self.app).into_iter().map(|c| c.name);
        for name in project_containers(&self.project).into_iter().chain(by_app) {
            let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        }
        remove_app_images(&self.app);
    }
}

/// Untags every local image of the app's repositories (the shared demo images stay).
pub fn remove_app_images(app: &str) {
    let prefix = format!("{REGISTRY}/{app}/");
    if let Ok(out) = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
    {
        for image in stdout(&out).lines().filter(|i| i.starts_with(&prefix)) {
            let _ = Command::new("docker").args(["rmi", image]).output();
        }
    }
}

/// A container started with plain `docker run`, removed on drop.
pub struct RunContainer {
    pub name: String,
    pub app: String,
    pub port: u16,
}

impl RunContainer {
    /// `docker run -d --network host` of `<app>/backend:<tag>` on a free loopback port, labelled
    /// `rollwatch.test=<app>`, with extra `docker run` options and entrypoint arguments; returns
    /// once `/health` answers for that tag.
    pub fn start(app: &str, tag: &str, options: &[&str], args: &[&str]) -> RunContainer {
        let port = free_port();
        let c = RunContainer {
            name: format!("{app}-backend"),
            app: app.to_string(),
            port,
        };
        let env = format!("DEMO_PORT={port}");
        let label = format!("rollwatch.test={app}");
        let image = format!("{}:{tag}", c.repository());
        let mut argv = vec![
            "run",
            "-d",
            "--name",
            &c.name,
            "--network",
            "host",
            "-e",
            &env,
            "--label",
            &label,
        ];
        argv.extend_from_slice(options);
        argv.push(&image);
        argv.extend_from_slice(args);
        sh("docker", &argv);
        wait_for(Duration::from_secs(20), &format!("{tag} up"), || {
            health(port).filter(|b| b.contains(tag))
        });
        c
    }

    pub fn repository(&self) -> String {
        format!("{REGISTRY}/{}/backend", self.app)
    }

    /// A config with this container as `production/backend`, docker executor, `docker` endpoint.
    pub fn write_config(&self, dir: &Path, docker: &str) -> PathBuf {
        let config = dir.join("rollwatch.toml");
        std::fs::write(
            &config,
            format!(
                "[[targets]]\nenv = \"production\"\nrole = \"backend\"\ndocker = {docker}\nselector = {{ labels = {{ \"rollwatch.test\" = \"{}\" }} }}\nhealth = {{ url = \"http://127.0.0.1:{}/health\", validation_timeout = \"30s\" }}\nexecutor = {{ kind = \"docker\", image = \"{}\" }}\n",
                self.app,
                self.port,
                self.repository()
            ),
        )
        .expect("write config");
        config
    }
}

impl Drop for RunContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("{}-rollwatch-old", self.name)])
            .output();
        remove_app_images(&self.app);
    }
}

/// `rollwatch` with the given config, ready for assert_cmd.
pub fn rollwatch(config: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(env!("CARGO_BIN_EXE_rollwatch"));
    cmd.env("ROLLWATCH_CONFIG", config)
        .env("RUST_LOG", "warn")
        .timeout(Duration::from_secs(180));
    cmd
}

/// `rollwatch rollback staging backend <tag>` run as a person would, asserting its exit code
/// (0 done, 1 ran and failed, 2 refused); returns (stdout, stderr).
pub fn cli_rollback(config: &Path, tag: &str, code: i32) -> (String, String) {
    let out = rollwatch(config)
        .args(["rollback", "staging", "backend", tag])
        .assert()
        .code(code);
    let o = out.get_output();
    (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The bearer token test controllers are started with.
pub const TOKEN: &str = "test-token-0123456789";

/// A `rollwatch run` child process, killed with SIGKILL on drop; its log is printed when the
/// test failed.
pub struct Controller {
    pub child: std::process::Child,
    pub log: PathBuf,
}

impl Controller {
    pub fn start(config: &Path, extra_env: &[(&str, &str)]) -> Controller {
        let log = config.with_file_name(format!("rollwatch-{}.log", free_port()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollwatch"));
        cmd.args(["run"])
            .env("ROLLWATCH_CONFIG", config)
            .env("ROLLWATCH_API_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rollwatch run");
        Controller { child, log }
    }

    /// `kill -9`: no handler, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- rollwatch log {} ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Rows of the controller's store, read with SQLite directly (the store is WAL: concurrent reads are fine).
pub fn query<T>(
    db: &Path,
    sql: &str,
    f: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let Ok(mut stmt) = conn.prepare(sql) else {
        return Vec::new();
    };
    let Ok(rows) = stmt.query_map([], f) else {
        return Vec::new();
    };
    rows.filter_map(Result::ok).collect()
}

/// Puts `tag` on record as the newest known-good tag of staging/backend, as if promoted last:
/// the tag the next rollback will go to.
pub fn record_newest_known_good(db: &Path, tag: &str) {
    let conn = rusqlite::Connection::open(db).expect("open store");
    conn.execute(
        "INSERT INTO known_good (env, role, tag, digest, promoted_at_ms) VALUES ('staging', 'backend', ?1, NULL, (SELECT COALESCE(MAX(promoted_at_ms), 0) + 1 FROM known_good))",
        [tag],
    )
    .expect("insert known-good tag");
}

/// Event kinds with their tags, oldest first.
pub fn events(db: &Path) -> Vec<(String, Option<String>, String)> {
    query(
        db,
        "SELECT kind, tag, message FROM events ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
}

pub fn wait_event(db: &Path, kind: &str, tag: &str, within: Duration) -> String {
    wait_for(within, &format!("event {kind} {tag}"), || {
        events(db)
            .into_iter()
            .find(|(k, t, _)| k == kind && t.as_deref() == Some(tag))
            .map(|(_, _, m)| m)
    })
}

/// (state, trigger, reason, from_tag, to_tag) of every rollback record, oldest first.
pub fn rollback_rows(db: &Path) -> Vec<(String, String, String, Option<String>, String)> {
    query(
        db,
        "SELECT state, trigger, reason, from_tag, to_tag FROM rollbacks ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
}

/// A background process (Prometheus, Alertmanager) killed on drop; its log is printed when
/// the test failed.
pub struct Service {
    pub name: &'static str,
    pub child: std::process::Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Service {
    /// Writes `config` to `<dir>/<name>.yml` and starts `program` on a free loopback port with
    /// it, its data under `<dir>/data` (`storage_flag`) and `extra` flags; waits for `/-/ready`.
    fn spawn(
        name: &'static str,
        program: &str,
        dir: tempfile::TempDir,
        config: &str,
        storage_flag: &str,
        extra: &[&str],
    ) -> Service {
        let port = free_port();
        let config_file = dir.path().join(format!("{name}.yml"));
        std::fs::write(&config_file, config).expect("service config");
        let mut args = vec![
            format!("--config.file={}", config_file.display()),
            format!("{storage_flag}={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = std::fs::File::create(dir.path().join("log")).expect("log file");
        let child = Command::new(program)
            .args(&args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e} (scripts/setup installs it)"));
        let svc = Service {
            name,
            child,
            port,
            dir,
        };
        wait_for(
            Duration::from_secs(60),
            &format!("{name} ready on {port}"),
            || http_get(port, "/-/ready").filter(|(s, _)| *s == 200),
        );
        svc
    }

    /// Prometheus on loopback evaluating every second, with `rules` loaded and alerts sent to
    /// `alertmanager_port` when given. `scrape` is the `scrape_configs` YAML list.
    pub fn prometheus(scrape: &str, rules: &[PathBuf], alertmanager_port: Option<u16>) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let rule_files: String = rules
            .iter()
            .map(|r| {
                let dst = dir.path().join(r.file_name().expect("rule file name"));
                std::fs::copy(r, &dst).expect("copy rules");
                format!("  - {}\n", dst.display())
            })
            .collect();
        let alerting = alertmanager_port
            .map(|p| format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{p}']\n"))
            .unwrap_or_default();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{rule_files}{alerting}scrape_configs:\n{scrape}"
        );
        // The first notification is dropped while Alertmanager discovery starts; the default
        // resend waits a minute.
        let extra = ["--rules.alert.resend-delay=1s"];
        Service::spawn(
            "prometheus",
            "prometheus",
            dir,
            &config,
            "--storage.tsdb.path",
            &extra,
        )
    }

    /// Alertmanager on loopback (no gossip) sending every alert to `webhook` with a bearer token.
    pub fn alertmanager(webhook: &str, token: &str) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "route:\n  receiver: rollwatch\n  group_by: [alertname, env, role]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: rollwatch\n    webhook_configs:\n      - url: '{webhook}'\n        send_resolved: true\n        http_config:\n          authorization:\n            credentials: '{token}'\n"
        );
        let extra = ["--cluster.listen-address="];
        Service::spawn(
            "alertmanager",
            "prometheus-alertmanager",
            dir,
            &config,
            "--storage.path",
            &extra,
        )
    }

    /// Prometheus HTTP API instant query: the `data.result` array.
    pub fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        self.api_result(&format!("/api/v1/query?query={}", urlencode(expr)))
    }

    /// Range query over the last `seconds`, one point a second: the `data.result` array. This is
    /// how Grafana evaluates annotation queries.
    pub fn query_range(&self, expr: &str, seconds: u64) -> Vec<serde_json::Value> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.api_result(&format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step=1",
            urlencode(expr),
            now - seconds
        ))
    }

    fn api_result(&self, path: &str) -> Vec<serde_json::Value> {
        let Some((200, body)) = http_get(self.port, path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Names of the alerts Prometheus has firing now.
    pub fn firing(&self) -> Vec<(String, serde_json::Value)> {
        let Some((200, body)) = http_get(self.port, "/api/v1/alerts") else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["state"] == "firing")
                    .map(|x| {
                        (
                            x["labels"]["alertname"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            x["labels"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("---- {} log (last 30 lines) ----", self.name);
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends GET / to the demo service at about `per_second` requests per second until `stop`.
pub fn load(
    port: u16,
    per_second: u32,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut sent = 0u64;
        let pause = Duration::from_secs(1) / per_second.max(1);
        // Bounded: at most 10 minutes of traffic whatever the test does.
        let deadline = Instant::now() + Duration::from_secs(600);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let _ = http_get(port, "/");
            sent += 1;
            std::thread::sleep(pause);
        }
        sent
    })
}

/// Files scripts/setup made for the remote-host tests (sshd keys, TLS certificates).
pub fn testbed_file(rel: &str) -> PathBuf {
    let dir = std::env::var("ROLLWATCH_STATE_DIR")
        .unwrap_or_else(|_| "/var/lib/rollwatch-testbed".into());
    let p = PathBuf::from(dir).join(rel);
    assert!(p.exists(), "{} is missing: run scripts/setup", p.display());
    p
}

/// Waits for the first rollback record in `state` (e.g. `succeeded`) and returns it.
pub fn wait_rollback(db: &Path, state: &str) -> (String, String, String, Option<String>, String) {
    wait_for(
        Duration::from_secs(90),
        &format!("a rollback record {state}"),
        || rollback_rows(db).into_iter().find(|r| r.0 == state),
    )
}

/// The watch window the controller tests use: probes every 500 ms, 2 failures, 3 s bake.
pub const FAST_WATCH: &str =
    r#"watch = { interval = "500ms", failures = 2, grace = "1s", bake = "3s", cooldown = "5m" }"#;

/// A deployment on v1.0.0 (with `tags` in its repository) watched by a `rollwatch run` that has
/// promoted v1.0.0 already; `extra` lands in the target table, `env` in the controller's env.
pub fn watched_good_deployment(
    prefix: &str,
    tags: &[&str],
    extra: &str,
    env: &[(&str, &str)],
) -> (ComposeDeployment, Controller) {
    let app = app_with_images(prefix, &[&["v1.0.0"], tags].concat());
    let d = ComposeDeployment::up(&app, "staging", "backend", "v1.0.0");
    let config = d.write_config(
        &format!("{REGISTRY}/{app}"),
        &format!("{FAST_WATCH}\n{extra}"),
    );
    let c = Controller::start(&config, env);
    wait_event(&d.db(), "promoted", "v1.0.0", Duration::from_secs(60));
    (d, c)
}

/// Milliseconds since the Unix epoch, the clock of the store's `at_ms` columns.
/// The value of the first series on the controller's `/metrics` whose line starts with `name`
/// and carries every one of `labels` (`result="failed"`).
pub fn metric_value(api_port: u16, name: &str, labels: &[&str]) -> Option<f64> {
    let (_, text) = http_get(api_port, "/metrics")?;
    text.lines()
        .find(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The target's status once its state is `state`: the API answers before a watcher's first
/// round, and a round publishes its state after the events it writes.
pub fn wait_state(api_port: u16, state: &str, within: Duration) -> serde_json::Value {
    wait_for(within, &format!("the target's state {state}"), || {
        let status = target_status(api_port);
        (status["state"] == state).then_some(status)
    })
}

/// What `GET /api/v1/targets` says of the one target.
pub fn target_status(api_port: u16) -> serde_json::Value {
    let body = wait_for(Duration::from_secs(30), "the API answering", || {
        http_get(api_port, "/api/v1/targets")
            .filter(|(s, b)| *s == 200 && b.contains("staging"))
            .map(|(_, b)| b)
    });
    let v: serde_json::Value = serde_json::from_str(&body).expect("targets JSON");
    match v {
        serde_json::Value::Array(mut a) => a.remove(0),
        other => other["staging/backend"].clone(),
    }
}

/// Deploys `tag` under `c` and waits (up to a minute) for the first `rollback_*` event on record
/// (`rollback_failed`, `rollback_refused`, …), for a rollback that must not touch anything:
/// asserts the running container and `.env` are still the ones the deploy left, 2 s later.
/// Returns the event's (kind, message).
pub fn deploy_and_see_the_rollback_change_nothing(
    d: &ComposeDeployment,
    c: &Controller,
    tag: &str,
) -> (String, String) {
    d.deploy(tag);
    let (before, env_deployed) = (d.container(), d.env_file());
    let (kind, message) = wait_for(Duration::from_secs(60), "the rollback's outcome", || {
        events(&d.db())
            .into_iter()
            .find(|(k, _, _)| k.starts_with("rollback_"))
            .map(|(k, _, m)| (k, m))
    });
    eprintln!("{kind}: {message}\n{}", c.log_text());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        d.container().id,
        before.id,
        "the running container untouched"
    );
    assert_eq!(d.env_file(), env_deployed, ".env untouched");
    (kind, message)
}

/// The first `rollwatch_rollbacks_total` series with this `result` (the tests watch one target
/// whose rollbacks have one trigger).
pub fn rollbacks_counted(api_port: u16, result: &str) -> Option<f64> {
    metric_value(
        api_port,
        "rollwatch_rollbacks_total{",
        &[&format!("result=\"{result}\"")],
    )
}

pub fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// One scrape of the demo service as a `rollwatch replay` trace row (without `t`):
/// `version,requests,errors,latency_sum,latency_count`, the raw cumulative counters.
pub fn demo_counters(port: u16) -> Option<String> {
    let (200, body) = http_get(port, "/metrics")? else {
        return None;
    };
    let samples = rollwatch::metrics::parse::parse(&body).ok()?;
    let (mut requests, mut errors, mut sum, mut count, mut version) = (0.0, 0.0, 0.0, 0.0, None);
    for s in &samples {
        match s.name.as_str() {
            "http_requests_total" => {
                requests += s.value;
                if s.label("code").is_some_and(|c| c.starts_with('5')) {
                    errors += s.value;
                }
            }
            "http_request_duration_seconds_sum" => sum = s.value,
            "http_request_duration_seconds_count" => count = s.value,
            "demo_build_info" => version = s.label("version").map(String::from),
            _ => {}
        }
    }
    Some(format!("{},{requests},{errors},{sum},{count}", version?))
}

/// Records a demo service's raw cumulative counters every `interval` into a `rollwatch replay`
/// trace, the way a scraper would: one row per round, `t` in seconds since `started_ms`, the
/// version from `demo_build_info`. A round whose scrape fails (the container is being
/// recreated) is a failed-read row, `t,,,,,`, as the controller's read fails then. Stopped on drop.
pub struct TraceRecorder {
    pub started_ms: i64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    rows: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl TraceRecorder {
    pub fn start(port: u16, interval: Duration) -> TraceRecorder {
        let started_ms = epoch_ms();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let rows = std::thread::spawn(move || {
            let mut rows = Vec::new();
            let start = Instant::now();
            let deadline = start + Duration::from_secs(600);
            let mut next = start;
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                let counters = demo_counters(port).unwrap_or_else(|| ",,,,".into());
                let t = (epoch_ms() - started_ms) as f64 / 1000.0;
                rows.push(format!("{t:.3},{counters}"));
                // Ticks on a fixed schedule, as the controller's interval timer does.
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            rows
        });
        TraceRecorder {
            started_ms,
            stop,
            rows: Some(rows),
        }
    }

    /// Stops recording and returns the trace, header included.
    pub fn finish(mut self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let rows = self
            .rows
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let mut csv = String::from("t_seconds,version,requests,errors,latency_sum,latency_count\n");
        for r in rows {
            csv.push_str(&r);
            csv.push('\n');
        }
        csv
    }
}

impl Drop for TraceRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.rows.take() {
            let _ = h.join();
        }
    }
}

/// `at_ms` of the first event of `kind` for `tag`.
pub fn event_at_ms(db: &Path, kind: &str, tag: &str) -> Option<i64> {
    query(db, "SELECT kind, tag, at_ms FROM events ORDER BY id", |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })
    .into_iter()
    .find(|(k, t, _)| k == kind && t.as_deref() == Some(tag))
    .map(|(_, _, at)| at)
}

impl ComposeDeployment {
    /// Adds environment variables to the service (e.g. `DEMO_ERROR_SERIES=lazy`, or a
    /// `DEMO_FAULT` every tag then carries) and recreates its container with them, same tag;
    /// returns once `/health` answers again.
    pub fn set_service_env(&self, vars: &[(&str, &str)]) {
        let path = self.dir().join("docker-compose.yml");
        let mut text = std::fs::read_to_string(&path).expect("read compose file");
        for (k, v) in vars {
            text.push_str(&format!("      {k}: \"{v}\"\n"));
        }
        std::fs::write(&path, text).expect("write compose file");
        self.compose(&["up", "-d", "--remove-orphans"]);
        wait_for(
            Duration::from_secs(30),
            "service back with its new env",
            || {
                let env = self.container().env;
                let set = vars
                    .iter()
                    .all(|(k, v)| env.iter().any(|e| *e == format!("{k}={v}")));
                (set && health(self.port).is_some_and(|b| b.contains("\"ok\""))).then_some(())
            },
        );
    }
}

/// The demo service run as a plain process on a free loopback port: a second instance beside a
/// deployment, scraped by the same Prometheus job. Killed on drop.
pub struct DemoProcess {
    pub child: std::process::Child,
    pub port: u16,
}

impl DemoProcess {
    /// Starts the demo as `version` with extra environment (`DEMO_FAULT`, ...); returns once
    /// `/health` answers.
    pub fn start(version: &str, env: &[(&str, &str)]) -> DemoProcess {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_rollwatch-demo-service"))
            .env("DEMO_PORT", port.to_string())
            .env("DEMO_BIND", "127.0.0.1")
            .env("DEMO_VERSION", version)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the demo service");
        let p = DemoProcess { child, port };
        wait_for(Duration::from_secs(20), "demo process up", || {
            health(port).filter(|b| b.contains(version))
        });
        p
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a one-number Prometheus query (`None` while it has no answer).
pub fn prom_number(prom: &Service, expr: &str) -> Option<f64> {
    prom.query(expr)
        .first()
        .and_then(|r| r["value"][1].as_str())
        .and_then(|s| s.parse().ok())
}

/// A fresh app name whose `<app>/backend:<tag>` images (every demo tag) are built from this
/// checkout's demo binary, not retagged from the shared `demo/*` images: a test that needs a
/// demo feature (e.g. `DEMO_ERROR_SERIES`) then does not depend on which checkout last pushed
/// the shared images (seen: a parallel checkout's test run replaced them mid-test).
pub fn app_with_own_images(prefix: &str) -> String {
    testbed();
    let app = unique_app(prefix);
    let script = repo_root().join("scripts/build-images");
    sh(
        script.to_str().unwrap(),
        &[
            env!("CARGO_BIN_EXE_rollwatch-demo-service"),
            &app,
            "backend",
        ],
    );
    // The script's skip-if-unchanged stamp is of no use for a one-off app name.
    let state = std::env::var("ROLLWATCH_STATE_DIR")
        .unwrap_or_else(|_| "/var/lib/rollwatch-testbed".into());
    let _ = std::fs::remove_file(PathBuf::from(state).join(format!("images-{app}.stamp")));
    app
}

/// A `docker-compose` wrapper in `dir/bin` that runs the shell `body` first (`$REAL` is the real
/// binary; `version` calls go straight to it), for tests that make compose hang or wait. Returns a
/// `PATH` with the wrapper first.
pub fn compose_wrapper(dir: &Path, body: &str) -> String {
    let real = stdout(&sh("sh", &["-c", "command -v docker-compose"]));
    let script = format!(
        "#!/bin/sh\nREAL={}\ncase \"$*\" in *version*) exec \"$REAL\" \"$@\";; esac\n{body}\n",
        real.trim()
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create the wrapper's bin directory");
    let path = bin.join("docker-compose");
    std::fs::write(&path, script).expect("write the compose wrapper");
    sh("chmod", &["+x", &path.display().to_string()]);
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A valid config with one compose target (staging/backend) that is never contacted: its health
/// URL and API address have nothing listening, its store is `rollwatch.db` beside it.
/// `health_extra` is appended inside the `health` table.
pub fn offline_config(dir: &Path, registry: &str, health_extra: &str) -> PathBuf {
    let path = dir.join("rollwatch.toml");
    std::fs::write(
        &path,
        format!(
            r#"[controller]
store = "rollwatch.db"
listen = "127.0.0.1:{port}"

[[targets]]
env = "staging"
role = "backend"
selector = {{ compose_project = "offline-test", compose_service = "backend" }}
health = {{ url = "http://127.0.0.1:9/health"{health_extra} }}
executor = {{ kind = "compose", dir = "deploy", registry = "{registry}" }}
"#,
            port = free_port()
        ),
    )
    .expect("write config");
    path
}

/// `Machine: <CPU model>, <n> cores (nproc), <kernel>. Commit <hash>.` for the section.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = command_line("uname", &["-sr"]);
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = !command_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty();
    format!(
        "Machine: {cpu}, {cores} cores (nproc), {kernel}. Commit {commit}{}.",
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    )
}

pub fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// An Alertmanager webhook body with one `HighErrors` alert (fingerprint `0123abcd`) that
/// orders a rollback of `env`/`role`.
pub fn am_payload(status: &str, env: &str, role: &str, starts_at: &str) -> String {
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{alertname=\"HighErrors\"}}","status":"{status}","receiver":"rollwatch","groupLabels":{{}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://127.0.0.1:9093","alerts":[{{"status":"{status}","labels":{{"alertname":"HighErrors","env":"{env}","role":"{role}","rollwatch_action":"rollback"}},"annotations":{{"summary":"5xx above 10%"}},"startsAt":"{starts_at}","endsAt":"0001-01-01T00:00:00Z","generatorURL":"","fingerprint":"0123abcd"}}]}}"#
    )
}
