//! `rollwatch --version` names the git commit the binary was built from, so a bug report or a
//! host's `rollwatch --version` says exactly which code runs (build.rs records it).

use std::time::Duration;

use assert_cmd::Command;

/// The commit of the checkout the tests run in, as build.rs asks for it.
fn head_commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .timeout(Duration::from_secs(10))
        .output()
        .expect("run git rev-parse (the tests run from a git clone)");
    assert!(out.status.success(), "git rev-parse failed: {out:?}");
    let commit = String::from_utf8(out.stdout).expect("git prints ASCII");
    commit.trim().to_owned()
}

#[test]
fn version_names_the_git_commit_of_the_build() {
    let commit = head_commit();
    assert_eq!(commit.len(), 12, "short hash {commit:?}");
    assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()), "{commit:?}");
    let out = Command::cargo_bin("rollwatch")
        .expect("rollwatch binary")
        .arg("--version")
        .timeout(Duration::from_secs(10))
        .output()
        .expect("run rollwatch --version");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!("rollwatch {} (commit {commit}", env!("CARGO_PKG_VERSION"));
    assert!(
        text.starts_with(&expected),
        "`rollwatch --version` printed {text:?}, expected it to start with {expected:?}"
    );
}
