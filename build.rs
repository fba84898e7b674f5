//! Records the git commit rollwatch is built from in `ROLLWATCH_GIT_COMMIT`, read by
//! `controller/build_info.rs` for `rollwatch --version` and the `rollwatch_build_info` gauge.
//!
//! `git rev-parse --short=12 HEAD`, with `-dirty` when `git status --porcelain` lists anything;
//! from a crate tarball (no `.git`), the commit `cargo package` recorded in `.cargo_vcs_info.json`;
//! `unknown` when neither git nor that file can say. The build script is re-run only when HEAD
//! or the ref it points to moves, not on every build: a working-tree edit alone does not refresh
//! `-dirty` (cargo would have to watch every file for that).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = git_dir(&root)
        .map(|git_dir| {
            watch_head(&git_dir);
            commit(&root)
        })
        .or_else(|| packaged_commit(&root))
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

/// Re-run when HEAD moves (checkout) or the branch it names moves (commit). A worktree's HEAD
/// is its own; its branch refs live in the common git directory (`commondir`), packed ones in
/// `packed-refs`.
fn watch_head(git_dir: &Path) {
    let head = git_dir.join("HEAD");
    println!("cargo:rerun-if-changed={}", head.display());
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or_else(|_| git_dir.to_path_buf());
    let Some(reference) = std::fs::read_to_string(&head)
        .ok()
        .and_then(|h| h.strip_prefix("ref:").map(|r| r.trim().to_owned()))
    else {
        return; // a detached HEAD holds the commit itself
    };
    // Only existing paths: cargo re-runs a build script on every build while a path it watches
    // is missing. A branch only in packed-refs gets a loose ref file at its next commit, so then
    // the directory it will appear in is watched.
    let loose = common.join(&reference);
    let watched = if loose.exists() {
        loose
    } else {
        loose
            .parent()
            .map_or_else(|| common.clone(), Path::to_path_buf)
    };
    for path in [watched, common.join("packed-refs")] {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
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

/// The commit in `.cargo_vcs_info.json` (`{"git": {"sha1": "<40 hex>", "dirty": true}, ...}`),
/// which `cargo package` writes into a crate tarball. Read by hand: no JSON crate for a build
/// script, and the file's shape is fixed by cargo.
fn packaged_commit(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join(".cargo_vcs_info.json")).ok()?;
    let after = text.split_once("\"sha1\"")?.1;
    let hash: String = after
        .trim_start_matches([':', ' ', '"'])
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    if hash.len() < 12 {
        return None;
    }
    let dirty = text.contains("\"dirty\": true") || text.contains("\"dirty\":true");
    Some(format!(
        "{}{}",
        &hash[..12],
        if dirty { "-dirty" } else { "" }
    ))
}
