//! Who may act. Several rollwatch instances may one day watch the same targets for high
//! availability, with one acting through a lease held in an existing engine (a PostgreSQL
//! advisory lock or etcd). Every side effect already asks [`Lease::is_leader`]; today the only
//! lease is [`SoleInstance`], which always says yes.

/// The right to act on deployments. Checked right before every rollback, so an instance that
/// lost its lease mid-way stops at the next action instead of racing the new leader.
pub trait Lease: Send + Sync {
    fn is_leader(&self) -> bool;

    /// A short description for logs and the status of withheld actions.
    fn describe(&self) -> String;
}

/// One rollwatch for these targets: always the leader.
#[derive(Debug, Default, Clone, Copy)]
pub struct SoleInstance;

impl Lease for SoleInstance {
    fn is_leader(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "sole instance".into()
    }
}

/// One `rollwatch run` per store: the second one started on the same store refuses, instead
/// of two controllers acting on the same targets (two rollbacks of one failure). An advisory
/// lock on `<store>.lock`, held while the process lives and released by the kernel when it
/// dies, `kill -9` included, so a crash never leaves a stale lock behind.
#[derive(Debug)]
pub struct StoreLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another rollwatch controller{holder} runs on store {store}: two would act on the same targets; stop it first, or give this one its own controller.store")]
    Held { store: String, holder: String },
    #[error("cannot lock {path}: {source} (set controller.store to a writable place)")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StoreLock {
    pub fn acquire(store: &std::path::Path) -> Result<StoreLock, LockError> {
        use std::io::{Read, Seek, Write};
        let mut name = store.as_os_str().to_owned();
        name.push(".lock");
        let path = std::path::PathBuf::from(name);
        let io = |source| LockError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    store: store.display().to_string(),
                    holder: if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message the next one prints.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_store_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("rollwatch.db");
        let first = StoreLock::acquire(&store).unwrap();
        let e = StoreLock::acquire(&store).unwrap_err().to_string();
        assert!(
            e.contains("another rollwatch controller")
                && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        StoreLock::acquire(&store).expect("free again once the holder is gone");
    }
}
