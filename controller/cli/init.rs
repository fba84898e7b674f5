//! `rollwatch init`: proposes one target per running compose service and `docker run`
//! container, asks per target on a terminal (or takes all with `--yes`), and writes the file.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::Refused;
use crate::docker::{DockerClient, DockerEndpoint};
use crate::init::propose::{dedupe_roles, propose, Proposal};
use crate::init::render::{render, Accepted};
use crate::init::{discover::discover, find_health, is_local, probe_host};
use crate::target::Env;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Docker Engine to read: unix:///path, tcp://host:port or ssh://user@host.
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    docker: String,
    /// Only containers carrying this label (KEY=VALUE; repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Write the config here instead of printing it; an existing file is never overwritten.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Accept every proposed target without asking (needed when stdin is not a terminal).
    #[arg(long)]
    yes: bool,
}

pub async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let endpoint = DockerEndpoint::try_from(args.docker.clone())
        .map_err(|e| Refused(format!("--docker: {e}")))?;
    let labels = parse_labels(&args.labels)?;
    if let Some(path) = args.write.as_ref().filter(|p| p.exists()) {
        return Err(Refused(format!(
            "--write: {} exists; rollwatch init never overwrites a config: pass another path or remove it",
            path.display()
        ))
        .into());
    }
    let interactive = !args.yes;
    if interactive && !std::io::stdin().is_terminal() {
        return Err(Refused(
            "stdin is not a terminal, so rollwatch init cannot ask about each target: pass --yes to accept every proposal"
                .into(),
        )
        .into());
    }
    let docker = DockerClient::connect(&endpoint).await?;
    let found = discover(&docker, &labels, is_local(&endpoint)).await?;
    if found.is_empty() {
        return Err(Refused(format!(
            "no running container{} on {endpoint}: start the services first, or point --docker at their engine",
            if labels.is_empty() { "" } else { " with those labels" }
        ))
        .into());
    }
    let mut proposals: Vec<Proposal> = found.into_iter().map(propose).collect();
    dedupe_roles(&mut proposals);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")?;
    let host = probe_host(&endpoint);
    let mut accepted = Vec::new();
    for proposal in proposals {
        let (health, tried) = find_health(&client, &host, &proposal).await;
        let a = Accepted {
            proposal,
            health,
            tried,
        };
        describe(&a)?;
        if !interactive {
            accepted.push(a);
        } else if let Some(a) = ask(a)? {
            accepted.push(a);
        }
    }
    if accepted.is_empty() {
        errln!("no target accepted; nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    let docker_field = (endpoint != DockerEndpoint::default()).then_some(args.docker.as_str());
    let command = format!(
        "rollwatch init --docker {}{}",
        args.docker,
        if args.yes { " --yes" } else { "" }
    );
    let text = render(docker_field, &accepted, &command);
    let unguessed: usize = accepted.iter().map(Accepted::unguessed).sum();
    match &args.write {
        Some(path) => {
            write_new(path, &text)?;
            errln!(
                "wrote {} target(s) to {}{}; next: rollwatch --config {} check-config --probe",
                accepted.len(),
                path.display(),
                if unguessed > 0 {
                    format!(" ({unguessed} field(s) left commented: check-config names them)")
                } else {
                    String::new()
                },
                path.display()
            );
        }
        None => outln!("{text}")?,
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>, Refused> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Refused(format!("--label {p:?}: write it as KEY=VALUE"))),
        })
        .collect()
}

/// Creates `path` only if it does not exist (no race with another writer replacing it).
fn write_new(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The proposal as the user reads it on stderr (stdout may be the config itself).
fn describe(a: &Accepted) -> std::io::Result<()> {
    let p = &a.proposal;
    let env = p.env.map_or("?".to_string(), |e| e.to_string());
    errln!(
        "\n{env}/{} — {} ({})",
        p.role,
        p.found.containers.join(", "),
        p.found.image
    );
    errln!("  env and role from {}", p.guessed_from);
    match &a.health {
        Some(h) if h.passed => errln!("  health {} → {}", h.url, h.answer),
        Some(h) => errln!("  health {} → {} (not healthy now)", h.url, h.answer),
        None if a.tried.is_empty() => errln!("  health: no port found to probe"),
        None => errln!("  health: nothing answered (tried {})", a.tried.join("; ")),
    }
    Ok(())
}

fn prompt(question: &str) -> anyhow::Result<String> {
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim().to_string())
}

/// Accept, skip or edit one target; `None` when skipped.
fn ask(mut a: Accepted) -> anyhow::Result<Option<Accepted>> {
    loop {
        match prompt("  [a]ccept, [s]kip or [e]dit? ")?.as_str() {
            "a" | "" => return Ok(Some(a)),
            "s" => return Ok(None),
            "e" => {
                edit(&mut a)?;
                describe(&a)?;
            }
            other => errln!("  {other:?}: answer a, s or e"),
        }
    }
}

fn edit(a: &mut Accepted) -> anyhow::Result<()> {
    let env = prompt("  env (staging/production, empty keeps): ")?;
    if !env.is_empty() {
        match Env::parse(&env) {
            Some(e) => a.proposal.env = Some(e),
            None => errln!("  {env:?} is not staging or production; kept"),
        }
    }
    let role = prompt("  role (empty keeps): ")?;
    if crate::config::is_role_name(&role) {
        a.proposal.role = role;
    } else if !role.is_empty() {
        errln!("  {role:?} is not a role name (lowercase letters, digits, '-'); kept");
    }
    let url = prompt("  health url (empty keeps): ")?;
    if !url.is_empty() {
        match url::Url::parse(&url) {
            Ok(u) => {
                a.health = Some(crate::init::HealthFound {
                    url: u,
                    answer: "(typed in)".into(),
                    source: "you".into(),
                    passed: true,
                })
            }
            Err(e) => errln!("  {url:?}: {e}; kept"),
        }
    }
    Ok(())
}
