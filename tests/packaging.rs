//! The `.deb` and the files it installs, checked for real: `cargo deb` builds the package,
//! `dpkg-deb` reads its contents and control files, `dpkg --root` installs it into a throwaway
//! root and purges it again, `systemd-analyze verify` accepts the installed unit, and the
//! maintainer scripts run for real (adduser, deluser) on an overlay of this system that is
//! thrown away. Needs root, cargo-deb, dpkg and systemd (scripts/setup installs them); no Docker.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `cmd` (with a deadline), asserts it succeeded and returns its stdout and stderr.
fn run(cmd: &mut Command, what: &str) -> (String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

fn command(program: impl AsRef<std::ffi::OsStr>, secs: u64) -> Command {
    let mut cmd = Command::new(program);
    cmd.timeout(Duration::from_secs(secs));
    cmd
}

fn head_commit() -> String {
    let (out, _) = run(
        command("git", 10)
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(MANIFEST_DIR),
        "git rev-parse",
    );
    out.trim().to_owned()
}

/// Builds the package into `dir/out` and returns its path.
///
/// It packages the binary this test run built (`CARGO_BIN_EXE_rollwatch`, the dev profile)
/// instead of a release build: cargo-deb refuses the dev profile, and a release build of the
/// crate would add minutes to every run while the package's layout, metadata and scripts do
/// not depend on the profile. cargo-deb takes binaries from `<target dir>/release/` (it rewrites
/// the `target/release/` prefix of assets), so a private target dir holding a copy of the binary
/// and `--no-build` make it package exactly that file. The real package is built with plain
/// `cargo deb` (release).
fn build_deb(dir: &Path) -> PathBuf {
    let release = dir.join("target/release");
    std::fs::create_dir_all(&release).expect("create target dir");
    std::fs::copy(env!("CARGO_BIN_EXE_rollwatch"), release.join("rollwatch"))
        .expect("copy the rollwatch binary");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out_dir = dir.join("out");
    run(
        command(cargo, 300)
            .args(["deb", "--no-build", "--offline", "--fast", "--output"])
            .arg(&out_dir)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .current_dir(MANIFEST_DIR),
        "cargo deb --no-build (cargo-deb missing? run scripts/setup)",
    );
    let debs: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .expect("read cargo deb's output dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "one .deb expected in {out_dir:?}: {debs:?}");
    debs.into_iter().next().expect("one .deb")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path:?} not installed: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn deb_installs_binary_unit_and_config_into_a_root_and_purges_cleanly() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let deb = build_deb(tmp.path());

    // Contents: the controller, its unit and configuration; never the demo service.
    let (listing, _) = run(command("dpkg-deb", 30).arg("-c").arg(&deb), "dpkg-deb -c");
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .collect();
    for expected in [
        "./usr/bin/rollwatch",
        "./lib/systemd/system/rollwatch.service",
        "./etc/rollwatch/rollwatch.toml",
        "./etc/rollwatch/rollwatch.env",
        "./usr/share/doc/rollwatch/README.md",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} not in the package:\n{listing}"
        );
    }
    assert!(
        !listing.contains("rollwatch-demo-service"),
        "the demo service is packaged:\n{listing}"
    );

    // Control: dependencies, conffiles (upgrades keep local edits) and the maintainer scripts.
    let (info, _) = run(command("dpkg-deb", 30).arg("-I").arg(&deb), "dpkg-deb -I");
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends:\n{info}"));
    assert!(depends.contains("adduser"), "{depends}");
    assert!(info.contains("Recommends: docker.io | docker-ce"), "{info}");
    for script in ["postinst", "prerm", "postrm"] {
        assert!(
            info.contains(&format!(" {script} ")),
            "no {script} in\n{info}"
        );
    }
    let (conffiles, _) = run(
        command("dpkg-deb", 30).arg("-I").arg(&deb).arg("conffiles"),
        "dpkg-deb -I conffiles",
    );
    let conffiles: Vec<&str> = conffiles.lines().map(str::trim).collect();
    assert!(
        conffiles.contains(&"/etc/rollwatch/rollwatch.toml"),
        "{conffiles:?}"
    );
    assert!(
        conffiles.contains(&"/etc/rollwatch/rollwatch.env"),
        "{conffiles:?}"
    );

    // The packaged scripts parse as POSIX sh and are executable.
    let control = tmp.path().join("control");
    run(
        command("dpkg-deb", 30).arg("-e").arg(&deb).arg(&control),
        "dpkg-deb -e",
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        assert_eq!(mode(&path) & 0o111, 0o111, "{script} not executable");
        run(
            command("sh", 10).arg("-n").arg(&path),
            &format!("sh -n {script}"),
        );
        let text = std::fs::read_to_string(&path).expect("read script");
        assert!(
            text.starts_with("#!/bin/sh\n"),
            "{script} is not a sh script"
        );
        assert!(text.contains("\nset -e\n"), "{script} lacks set -e");
    }

    // Install into a throwaway root. dpkg --root runs maintainer scripts chrooted into it, which
    // needs a whole system there; --force-script-chrootless runs them here with DPKG_ROOT set,
    // and they then leave this host alone (no adduser, no systemctl): that is checked too.
    // --force-depends: the empty root has no libc6 or adduser package.
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("dpkg db");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("dpkg db");
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("dpkg status");
    let host_user_before = run(command("getent", 10).args(["passwd"]), "getent passwd").0;
    let dpkg = |args: &[&str], what: &str| {
        run(
            command("dpkg", 60)
                .arg(format!("--root={}", root.display()))
                .arg(format!("--log={}", tmp.path().join("dpkg.log").display()))
                .args(["--force-script-chrootless", "--force-depends"])
                .args(args),
            what,
        )
    };
    let (_, stderr) = dpkg(&["-i", deb.to_str().expect("utf-8 path")], "dpkg --root -i");
    assert!(
        stderr.contains("not creating the rollwatch user"),
        "postinst did not report what it skipped under DPKG_ROOT:\n{stderr}"
    );
    let host_user_after = run(command("getent", 10).args(["passwd"]), "getent passwd").0;
    assert_eq!(
        host_user_before, host_user_after,
        "postinst changed this host's users"
    );
    let (status, _) = dpkg(&["-s", "rollwatch"], "dpkg --root -s");
    assert!(status.contains("Status: install ok installed"), "{status}");

    let bin = root.join("usr/bin/rollwatch");
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(
        mode(&root.join("lib/systemd/system/rollwatch.service")),
        0o644
    );
    assert_eq!(mode(&root.join("etc/rollwatch/rollwatch.toml")), 0o644);
    // 0600 as packaged; postinst makes it root:rollwatch 0640 on a live system.
    let env_mode = mode(&root.join("etc/rollwatch/rollwatch.env"));
    assert!(
        env_mode == 0o600 || env_mode == 0o640,
        "rollwatch.env mode {env_mode:o}"
    );

    let (version, _) = run(
        command(&bin, 10).arg("--version"),
        "installed rollwatch --version",
    );
    let commit = head_commit();
    assert!(
        version.contains(&format!("(commit {commit}")),
        "{version} lacks {commit}"
    );
    run(
        command(&bin, 10)
            .arg("--config")
            .arg(root.join("etc/rollwatch/rollwatch.toml"))
            .arg("check-config"),
        "installed rollwatch check-config on the installed config",
    );

    // `systemd-analyze verify` checks that ExecStart's binary exists and is executable, on this
    // host's paths. `--root=<root>` (systemd 252) would look for every unit the service pulls
    // in (sysinit.target, ...) inside the root too, which holds only this package; so verify a
    // copy of the installed unit whose ExecStart names the installed binary. Unknown keys and
    // unparsable values are only warnings (exit 0), so stderr must be empty as well.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/rollwatch.service"))
        .expect("read installed unit");
    let exec_start = "ExecStart=/usr/bin/rollwatch ";
    assert!(unit.contains(exec_start), "{unit}");
    let verify_dir = tmp.path().join("verify");
    std::fs::create_dir_all(&verify_dir).expect("verify dir");
    let copy = verify_dir.join("rollwatch.service");
    std::fs::write(
        &copy,
        unit.replace(exec_start, &format!("ExecStart={} ", bin.display())),
    )
    .expect("write unit copy");
    let (_, warnings) = run(
        command("systemd-analyze", 60).arg("verify").arg(&copy),
        "systemd-analyze verify",
    );
    assert_eq!(warnings, "", "systemd-analyze verify warned");
    // The hardening as systemd scores it: 3.4 ("OK") today, on systemd 252's 0-10 scale;
    // --threshold is that scale times ten, and a unit above it fails.
    run(
        command("systemd-analyze", 60)
            .args(["security", "--offline=true", "--threshold=40"])
            .arg(&copy),
        "systemd-analyze security (exposure above 4.0?)",
    );

    // Purge: files and conffiles gone, the package unknown to the root's dpkg.
    dpkg(&["--purge", "rollwatch"], "dpkg --root --purge");
    for gone in [
        "usr/bin/rollwatch",
        "lib/systemd/system/rollwatch.service",
        "etc/rollwatch/rollwatch.toml",
        "etc/rollwatch/rollwatch.env",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
}

#[test]
fn deployment_example_config_passes_check_config() {
    let config = Path::new(MANIFEST_DIR).join("deployment/rollwatch.toml.example");
    let (out, _) = run(
        Command::cargo_bin("rollwatch")
            .expect("rollwatch binary")
            .timeout(Duration::from_secs(10))
            .arg("--config")
            .arg(&config)
            .arg("check-config"),
        "rollwatch check-config deployment/rollwatch.toml.example",
    );
    assert!(out.contains("production/backend"), "{out}");
    assert!(out.contains("/opt/shop/production/backend"), "{out}");
    assert!(
        out.contains("store: /var/lib/rollwatch/rollwatch.db"),
        "{out}"
    );
}

/// The live-system half of the maintainer scripts (DPKG_ROOT empty), run with every command that
/// changes a system replaced by a stub that records its arguments: PATH holds only the stubs and
/// the read-only tools the scripts use, so a command the stubs miss fails the script instead of
/// touching this host. The stubs keep "user exists" and "docker member" in files, like the real
/// user database, so a second run shows the scripts are idempotent.
struct ScriptBed {
    dir: tempfile::TempDir,
}

impl ScriptBed {
    fn new(docker_group: bool) -> ScriptBed {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&bin).expect("stub dir");
        std::fs::create_dir_all(&state).expect("state dir");
        if docker_group {
            std::fs::write(state.join("docker"), "").expect("docker group");
        }
        let stub = |name: &str, body: &str| {
            let path = bin.join(name);
            let script = format!(
                "#!/bin/sh\necho \"{name} $*\" >>\"$STUB_LOG\"\nS=\"$STUB_STATE\"\n{body}\n"
            );
            std::fs::write(&path, script).expect("write stub");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod stub");
        };
        stub(
            "getent",
            r#"case "$1 $2" in
  "passwd rollwatch"|"group rollwatch") [ -e "$S/user" ] && [ ! -e "$S/deleted" ] ;;
  "group docker") [ -e "$S/docker" ] ;;
  *) exit 2 ;;
esac"#,
        );
        stub(
            "adduser",
            r#"case " $* " in
  *" --system "*) : >"$S/user" ;;
  *" rollwatch docker "*) : >"$S/member" ;;
esac"#,
        );
        stub(
            "id",
            r#"if [ -e "$S/member" ]; then echo "rollwatch docker"; else echo rollwatch; fi"#,
        );
        stub("deluser", r#": >"$S/deleted""#);
        stub("delgroup", "exit 0");
        for name in ["mkdir", "chown", "chmod", "rm", "systemctl"] {
            stub(name, "exit 0");
        }
        // Read-only tools the scripts pipe through, taken from this system.
        for tool in ["tr", "grep"] {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{tool} not found"));
            std::os::unix::fs::symlink(real, bin.join(tool)).expect("link tool");
        }
        ScriptBed { dir }
    }

    /// Runs `deployment/debian/<script> <args>` with DPKG_ROOT empty; returns the commands it
    /// ran (this run only) and its stderr.
    fn run(&self, script: &str, args: &[&str]) -> (String, String) {
        let log = self.dir.path().join("log");
        std::fs::write(&log, "").expect("clear log");
        let path = Path::new(MANIFEST_DIR)
            .join("deployment/debian")
            .join(script);
        let (_, stderr) = run(
            command("/bin/sh", 10)
                .arg(&path)
                .args(args)
                .env_clear()
                .env("PATH", self.dir.path().join("bin"))
                .env("STUB_LOG", &log)
                .env("STUB_STATE", self.dir.path().join("state"))
                .env("DPKG_ROOT", ""),
            &format!("{script} {}", args.join(" ")),
        );
        (std::fs::read_to_string(&log).expect("read log"), stderr)
    }
}

#[test]
fn postinst_creates_the_user_once_joins_docker_and_never_starts_the_service() {
    let bed = ScriptBed::new(true);
    let (calls, stderr) = bed.run("postinst", &["configure", ""]);
    assert!(
        calls.contains("adduser --quiet --system --group --home /var/lib/rollwatch rollwatch"),
        "{calls}"
    );
    assert!(
        calls.contains("adduser --quiet rollwatch docker"),
        "{calls}"
    );
    assert!(
        calls.contains("chown rollwatch:rollwatch /var/lib/rollwatch"),
        "{calls}"
    );
    assert!(stderr.contains("root-equivalent"), "{stderr}");
    assert!(stderr.contains("installed, not enabled"), "{stderr}");

    // Again (dpkg-reconfigure, an upgrade): nothing to create, nobody to add.
    let (again, stderr) = bed.run("postinst", &["configure", "0.1.0-1"]);
    assert!(!again.contains("adduser"), "not idempotent:\n{again}");
    assert!(!stderr.contains("installed, not enabled"), "{stderr}");

    for calls in [&calls, &again] {
        assert!(!calls.contains("systemctl enable"), "{calls}");
        assert!(!calls.contains("systemctl start"), "{calls}");
    }
}

#[test]
fn postinst_without_docker_says_so_and_still_succeeds() {
    let bed = ScriptBed::new(false);
    let (calls, stderr) = bed.run("postinst", &["configure", ""]);
    assert!(calls.contains("adduser --quiet --system"), "{calls}");
    assert!(!calls.contains("rollwatch docker"), "{calls}");
    assert!(stderr.contains("no docker group"), "{stderr}");
}

#[test]
fn purge_removes_the_user_and_its_state_and_can_run_twice() {
    let bed = ScriptBed::new(true);
    bed.run("postinst", &["configure", ""]);
    bed.run("prerm", &["remove"]);
    let (removed, _) = bed.run("postrm", &["remove"]);
    assert!(
        !removed.contains("deluser"),
        "remove keeps the user:\n{removed}"
    );
    assert!(
        !removed.contains("rm "),
        "remove keeps the store:\n{removed}"
    );
    let (purged, _) = bed.run("postrm", &["purge"]);
    assert!(
        purged.contains("deluser --quiet --system rollwatch"),
        "{purged}"
    );
    assert!(purged.contains("rm -rf /var/lib/rollwatch"), "{purged}");
    // A second purge (the user already gone) succeeds without trying to delete it again.
    let (again, _) = bed.run("postrm", &["purge"]);
    assert!(!again.contains("deluser"), "{again}");
}

/// Inside the copy-on-write view: install, reconfigure, reinstall, remove and purge for real
/// (adduser, deluser, dpkg's conffile handling), checking the state after each step. Exits 99
/// unless the marker only the overlay holds is there, so it never runs on the host itself.
const LIVE_SCRIPT: &str = r##"set -e
[ -e /.rollwatch-overlay-marker ] || exit 99
dpkg -i /rollwatch.deb
getent passwd rollwatch | grep -q ':/var/lib/rollwatch:'
id -nG rollwatch | tr ' ' '\n' | grep -qx rollwatch
if getent group docker >/dev/null; then id -nG rollwatch | tr ' ' '\n' | grep -qx docker; fi
echo "env: $(stat -c '%a %U:%G' /etc/rollwatch/rollwatch.env)"
echo "home: $(stat -c '%a %U:%G' /var/lib/rollwatch)"
echo "# local edit" >>/etc/rollwatch/rollwatch.toml
dpkg-reconfigure rollwatch
dpkg -i --force-confold /rollwatch.deb
grep -q '^# local edit$' /etc/rollwatch/rollwatch.toml
echo "users after reinstall: $(getent passwd | grep -c '^rollwatch:')"
dpkg -r rollwatch
getent passwd rollwatch >/dev/null
[ -e /etc/rollwatch/rollwatch.toml ]
[ ! -e /usr/bin/rollwatch ]
dpkg --purge rollwatch
! getent passwd rollwatch >/dev/null
! getent group rollwatch >/dev/null
[ ! -e /var/lib/rollwatch ] && [ ! -e /etc/rollwatch ]
echo live-ok
"##;

/// The maintainer scripts on a live system, without changing this one: an overlay of `/` in a
/// private mount namespace (`unshare --mount`, root needed, as for the rest of the test bed),
/// chrooted into, so adduser, dpkg and the user database write to a throwaway upper layer.
/// systemd is not running there (no /run/systemd/system), so systemctl is not called.
#[test]
fn deb_installs_upgrades_and_purges_on_an_overlay_of_this_system() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let deb = build_deb(tmp.path());
    let [upper, work, merged] = ["upper", "work", "merged"].map(|d| tmp.path().join(d));
    for dir in [&upper, &work, &merged] {
        std::fs::create_dir_all(dir).expect("overlay dir");
    }
    std::fs::copy(&deb, upper.join("rollwatch.deb")).expect("copy deb into the overlay");
    std::fs::write(upper.join(".rollwatch-overlay-marker"), "").expect("marker");
    std::fs::write(upper.join("rollwatch-live-test.sh"), LIVE_SCRIPT).expect("script");
    let (m, u, w) = (merged.display(), upper.display(), work.display());
    // Every mount must succeed before chroot (&&); the namespace's mounts are private and end
    // with it.
    let setup = format!(
        "mount --make-rprivate / && \
         mount -t overlay overlay -o lowerdir=/,upperdir={u},workdir={w} {m} && \
         mount -t proc proc {m}/proc && mount --rbind /dev {m}/dev && \
         exec chroot {m} /bin/sh /rollwatch-live-test.sh"
    );
    let (out, stderr) = run(
        command("unshare", 180)
            .args(["--mount", "--fork", "/bin/sh", "-c", &setup])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "install/upgrade/purge in an overlay chroot (unshare needs root)",
    );
    assert!(out.contains("live-ok"), "{out}\n{stderr}");
    assert!(out.contains("env: 640 root:rollwatch"), "{out}");
    assert!(out.contains("home: 750 rollwatch:rollwatch"), "{out}");
    assert!(out.contains("users after reinstall: 1"), "{out}");
    assert!(stderr.contains("installed, not enabled"), "{stderr}");
}
