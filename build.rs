//! Records the git commit rollwatch is built from in `ROLLWATCH_GIT_COMMIT`, read by
//! `controller/build_info.rs` for `rollwatch --version` and the `rollwatch_build_info` gauge.
//!
//! `git rev-parse --short=12 HEAD`, with `-dirty` when `git status --porcelain` lists anything;
//! `unknown` when git or `.git` is absent (a build from a crate tarball). The build script is
//! re-run only when HEAD or the ref it points to moves, not on every build: a working-tree edit
//! alone does not refresh `-dirty` (cargo would have to watch every file for that).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git_dir(&root)
        .map(|git_dir| {
            watch_head(&git_dir);
            commit(&root)
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=ROLLWATCH_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The repository's git directory. In a worktree (and a submodule) `.git` is a file,
/// `gitdir: <path>`, naming the real one.
fn git_dir(root: &Path) -> Option<PathBuf> {
    let dot_git = root.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let path = PathBuf::from(text.strip_prefix("gitdir:")?.trim());
    Some(if path.is_absolute() {
        path
    } else {
        root.join(path)
    })
}

/// Re-run when HEAD moves (checkout) or the branch it names moves (commit). A worktree's
/// branch refs live in the common git directory (`commondir`), packed refs in `packed-refs`.
fn watch_head(git_dir: &Path) {
    let head = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|_| git_dir.to_path_buf());
    if let Some(reference) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref:").map(|r| r.trim().to_owned()))
    {
        for dir in [git_dir, common.as_path()] {
            let path = dir.join(&reference);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
        println!(
            "cargo:rerun-if-changed={}",
            common.join("packed-refs").display()
        );
    }
}

/// `None` (then `unknown`) when git is missing or fails: the build must not depend on it.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(root)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn commit(root: &Path) -> String {
    let Some(hash) = git(root, &["rev-parse", "--short=12", "HEAD"]).filter(|h| !h.is_empty())
    else {
        return "unknown".to_owned();
    };
    match git(root, &["status", "--porcelain"]) {
        Some(status) if !status.is_empty() => format!("{hash}-dirty"),
        _ => hash,
    }
}
