//! One process per identity: an advisory lock on a file beside the identity. The kernel
//! releases it when the process dies however it dies, so a stale lock never blocks; the
//! file holds the holder's pid, for the one line that names it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Role;

/// The lock on one identity of a data directory, held while this value lives.
#[derive(Debug)]
pub struct IdentityLock {
    _file: File,
    path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the identity.
    #[error(
        "the {role} identity in {dir} is in use by toxtun process {pid}; stop it with `toxtun stop`{data_dir}, or give this one another --data-dir",
        pid = pid.map_or("(pid unknown)".to_string(), |p| p.to_string()),
        data_dir = if dir.as_os_str().is_empty() { String::new() } else { format!(" --data-dir {}", dir.display()) },
    )]
    Held {
        /// Whose identity.
        role: Role,
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it.
        pid: Option<u32>,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

impl IdentityLock {
    /// Takes the lock on `role`'s identity in `dir` (creating the directory with mode
    /// 0700 and the lock file with 0600), and writes this process's pid into it.
    pub fn acquire(dir: &Path, role: Role) -> Result<IdentityLock, LockError> {
        let path = dir.join(format!("{}.lock", role.file_stem()));
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    role,
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(IdentityLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `dir` (and its parents) if missing; a directory this creates is mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("toxtun-lock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_a_released_lock_is_free() {
        let dir = tmp("second");
        let first = IdentityLock::acquire(&dir, Role::Client).unwrap();
        // flock locks belong to the open file: a second open, even in this process, is
        // refused as another process would be.
        let err = IdentityLock::acquire(&dir, Role::Client).unwrap_err();
        match &err {
            LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&std::process::id().to_string()), "{text}");
        assert!(text.contains("toxtun stop"), "{text}");
        // The server's identity is another lock.
        let _server = IdentityLock::acquire(&dir, Role::Server).unwrap();
        drop(first);
        IdentityLock::acquire(&dir, Role::Client).expect("free once released");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lock_left_by_a_dead_process_never_blocks() {
        let dir = tmp("stale");
        create_private_dir(&dir).unwrap();
        // A pid written by a process that is gone: the file is there, the lock is not.
        std::fs::write(dir.join("client.lock"), "999999\n").unwrap();
        let lock = IdentityLock::acquire(&dir, Role::Client).expect("a stale file is no lock");
        let pid = std::fs::read_to_string(lock.path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
