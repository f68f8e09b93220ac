//! One writer per run folder: a lock on `RUN_DIR/.lock` held for the life of the
//! [`crate::Trainer`]. It is an advisory file lock, so the operating system releases it
//! when the process ends in any way (`kill -9` included): a crashed run never leaves its
//! folder locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// The lock of a run folder; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// File name of the lock inside a run folder.
pub const LOCK_FILE: &str = ".lock";

impl RunLock {
    /// Takes the lock of `run_dir` (creating the folder), or says which process holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(run_dir)
            .with_context(|| format!("creating run folder {}", run_dir.display()))?;
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                bail!(
                    "{} is in use by another training process ({}): one run folder has one \
                     writer; wait for it to finish, or train into another --out",
                    run_dir.display(),
                    match holder.trim() {
                        "" => "pid unknown".to_string(),
                        pid => format!("pid {pid}"),
                    }
                )
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
        // Who holds it, for the message a second writer gets.
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(Self { _file: file })
    }
}
