//! Editing the deployment's `.env` so a later plain `docker compose up -d` keeps the rolled-back
//! tag. The edit is pure ([`set_var`]); the write is atomic (temp file with the old mode and
//! owner, fsync, rename, read back) so neither a crash nor a failed write leaves a half-written
//! `.env`, and a failure is always reported. The remote twin of [`write_atomic`] is the shell
//! script in `ssh.rs`: keep their guarantees the same.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Returns `text` with `key=value`: the first assignment of `key` is replaced in place (comments,
/// order and other lines untouched), later duplicates are dropped, and a missing key is appended.
pub fn set_var(text: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + key.len() + value.len() + 2);
    let mut done = false;
    for line in text.lines() {
        let assigned = line
            .trim_start()
            .strip_prefix("export ")
            .unwrap_or(line.trim_start())
            .split_once('=')
            .is_some_and(|(k, _)| k.trim() == key);
        if assigned {
            if !done {
                out.push_str(&format!("{key}={value}\n"));
                done = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        out.push_str(&format!("{key}={value}\n"));
    }
    out
}

/// Reads a variable's value (last assignment wins, as compose does), unquoting simple quotes.
pub fn get_var(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("export ").unwrap_or(l);
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// Why `.env` could not be replaced. Every variant before [`EnvFileError::ReadBack`] leaves the
/// old file in place and removes the temp file.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    #[error("cannot create a temp file in {dir} beside {path}: {source}; the directory must be writable by the user rollwatch runs as")]
    CreateTemp {
        dir: String,
        path: String,
        source: io::Error,
    },
    #[error("cannot give the temp file the mode {mode:o} of {path}: {source}; {path} was left as it was")]
    Mode {
        path: String,
        mode: u32,
        source: io::Error,
    },
    #[error("cannot keep the owner {uid}:{gid} of {path} (rollwatch runs as uid {euid}): {source}; {path} was left as it was. Run rollwatch as the file's owner or as root")]
    Owner {
        path: String,
        uid: u32,
        gid: u32,
        euid: u32,
        source: io::Error,
    },
    #[error("writing {tmp} was cut short ({source}); {path} was left as it was")]
    Write {
        tmp: String,
        path: String,
        source: io::Error,
    },
    #[error("{tmp} holds {got} bytes, not the {want} written; {path} was left as it was")]
    Short {
        tmp: String,
        path: String,
        got: u64,
        want: usize,
    },
    #[error("cannot move {tmp} over {path}: {source}; {path} was left as it was")]
    Rename {
        tmp: String,
        path: String,
        source: io::Error,
    },
    #[error(
        "{path} was replaced but the rename may not survive a crash (fsync of {dir}: {source})"
    )]
    SyncDir {
        path: String,
        dir: String,
        source: io::Error,
    },
    #[error("reading {path} back after replacing it gave {detail}, not the {want} bytes written; another writer may have changed it: check the file")]
    ReadBack {
        path: String,
        detail: String,
        want: usize,
    },
}

/// Creates a new file named `.<name>.rollwatch.<pid>.<n>` in `dir` with mode 0600: `create_new`
/// (O_EXCL) never follows or reuses an existing name, so a planted symlink or a concurrent
/// writer's temp file is never written through.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.rollwatch.{}.{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Replaces `path` with `contents` so that a crash or a failed write leaves either the old file
/// or the complete new one: a temp file in the same directory (so the rename is atomic), given
/// the old file's mode and owner, written, fsynced, checked for length, renamed over `path`, the
/// directory fsynced, and the result read back and compared. A new file gets mode 0600 (`.env`
/// files hold passwords). A `.env` that is a symlink stays one: its target is replaced.
///
/// The owner is kept with `fchown`, which only root may do for another user's file; as anyone
/// else a file owned by someone else is refused rather than silently handed to rollwatch's user.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), EnvFileError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let shown = path.display().to_string();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "env".into());
    let old = std::fs::metadata(&path).ok();
    let (tmp, mut file) = create_temp(&dir, &name).map_err(|source| EnvFileError::CreateTemp {
        dir: dir.display().to_string(),
        path: shown.clone(),
        source,
    })?;
    let tmp_shown = tmp.display().to_string();
    let result = (|| {
        if let Some(old) = &old {
            let mine = file.metadata().map_err(|source| EnvFileError::Write {
                tmp: tmp_shown.clone(),
                path: shown.clone(),
                source,
            })?;
            if (mine.uid(), mine.gid()) != (old.uid(), old.gid()) {
                std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid())).map_err(
                    |source| EnvFileError::Owner {
                        path: shown.clone(),
                        uid: old.uid(),
                        gid: old.gid(),
                        euid: nix::unistd::geteuid().as_raw(),
                        source,
                    },
                )?;
            }
            // After fchown, which may clear set-id bits.
            let mode = old.mode() & 0o7777;
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(|source| EnvFileError::Mode {
                    path: shown.clone(),
                    mode,
                    source,
                })?;
        }
        let write_err = |source| EnvFileError::Write {
            tmp: tmp_shown.clone(),
            path: shown.clone(),
            source,
        };
        file.write_all(contents.as_bytes()).map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        let got = file.metadata().map_err(write_err)?.len();
        if got != contents.len() as u64 {
            return Err(EnvFileError::Short {
                tmp: tmp_shown.clone(),
                path: shown.clone(),
                got,
                want: contents.len(),
            });
        }
        std::fs::rename(&tmp, &path).map_err(|source| EnvFileError::Rename {
            tmp: tmp_shown.clone(),
            path: shown.clone(),
            source,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // The rename is only durable once the directory entry is.
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| EnvFileError::SyncDir {
            path: shown.clone(),
            dir: dir.display().to_string(),
            source,
        })?;
    match std::fs::read(&path) {
        Ok(back) if back == contents.as_bytes() => Ok(()),
        Ok(back) => Err(EnvFileError::ReadBack {
            path: shown,
            detail: format!("{} different bytes", back.len()),
            want: contents.len(),
        }),
        Err(e) => Err(EnvFileError::ReadBack {
            path: shown,
            detail: format!("an error ({e})"),
            want: contents.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_in_place_and_keeps_the_rest() {
        let text = "# deploy\nCONTAINER_REGISTRY=r/x\nIMAGE_TAG=v1.1.0\nAPP_PORT=8080\n";
        assert_eq!(
            set_var(text, "IMAGE_TAG", "v1.0.0"),
            "# deploy\nCONTAINER_REGISTRY=r/x\nIMAGE_TAG=v1.0.0\nAPP_PORT=8080\n"
        );
    }

    #[test]
    fn appends_when_missing_and_drops_duplicates() {
        assert_eq!(
            set_var("A=1", "IMAGE_TAG", "v2.0.0"),
            "A=1\nIMAGE_TAG=v2.0.0\n"
        );
        assert_eq!(
            set_var("IMAGE_TAG=a\nexport IMAGE_TAG=b\n", "IMAGE_TAG", "c"),
            "IMAGE_TAG=c\n"
        );
    }

    #[test]
    fn similar_keys_are_not_touched() {
        assert_eq!(
            set_var("IMAGE_TAG_OLD=x\n", "IMAGE_TAG", "y"),
            "IMAGE_TAG_OLD=x\nIMAGE_TAG=y\n"
        );
        assert_eq!(
            get_var("IMAGE_TAG_OLD=x\nIMAGE_TAG=\"v1\"\n", "IMAGE_TAG").as_deref(),
            Some("v1")
        );
    }

    #[test]
    fn atomic_write_replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "IMAGE_TAG=old\n").unwrap();
        write_atomic(&p, "IMAGE_TAG=new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "IMAGE_TAG=new\n");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn atomic_write_keeps_the_mode_and_a_new_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "IMAGE_TAG=old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, "IMAGE_TAG=new\n").unwrap();
        assert_eq!(mode(&p), 0o640);
        let fresh = dir.path().join("new.env");
        write_atomic(&fresh, "A=1\n").unwrap();
        assert_eq!(mode(&fresh), 0o600);
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "A=1\n");
    }

    #[test]
    fn atomic_write_keeps_the_owner_when_root() {
        use std::os::unix::fs::MetadataExt;
        if !nix::unistd::geteuid().is_root() {
            return; // Only root may give a file to another user; covered by the ssh tests.
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env");
        std::fs::write(&p, "IMAGE_TAG=old\n").unwrap();
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        write_atomic(&p, "IMAGE_TAG=new\n").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "IMAGE_TAG=new\n");
    }

    #[test]
    fn a_symlinked_env_stays_a_symlink_and_its_target_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("shared.env");
        std::fs::write(&real, "IMAGE_TAG=old\n").unwrap();
        let link = dir.path().join(".env");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, "IMAGE_TAG=new\n").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "IMAGE_TAG=new\n");
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gone/.env");
        let err = write_atomic(&p, "A=1\n").unwrap_err();
        assert!(matches!(err, EnvFileError::CreateTemp { .. }), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
