//! Editing the deployment's `.env` so a later plain `docker compose up -d` keeps the rolled-back
//! tag. The edit is pure ([`set_var`]); the write is atomic (temp file, fsync, rename) so a crash
//! never leaves a half-written `.env`.

use std::io::Write;
use std::path::Path;

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

/// Replaces `path` atomically with `contents`, keeping its permissions.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("env");
    let tmp = dir.join(format!(".{name}.rollwatch-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
}
