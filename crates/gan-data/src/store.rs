//! Writing derived data sets to the data folder, and showing progress while they are made.
//!
//! The same discipline as [`crate::fetch`]: every file goes to a temporary file in its
//! destination folder, is synced, and only then renamed to its final name, so an
//! interrupted build never leaves a file that a later run could take for good data.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir` (a leading dot and a
/// `.part` suffix, which no loader looks for), synced, then renamed over `name`.
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{unique}.part", std::process::id()));
    let dest = dir.join(name);
    let written = (|| -> Result<()> {
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, &dest)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = File::open(dir) {
        // Persist the rename itself; not every platform can sync a folder.
        let _ = d.sync_all();
    }
    Ok(dest)
}

/// A progress bar that stays hidden for its first second: most builds and loads of small
/// sets finish sooner, and a bar that flashes for a few milliseconds is noise. indicatif
/// hides it by itself when stderr is no terminal.
pub(crate) struct LateBar {
    bar: ProgressBar,
    start: Instant,
    shown: bool,
}

impl LateBar {
    /// How long the work runs unseen before the bar appears.
    const DELAY: Duration = Duration::from_secs(1);

    pub(crate) fn new(len: u64, label: &str) -> Self {
        let bar = ProgressBar::hidden();
        bar.set_length(len);
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        Self {
            bar,
            start: Instant::now(),
            shown: false,
        }
    }

    /// Advances by `n` items, showing the bar once the work has taken over a second.
    pub(crate) fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        if !self.shown && self.start.elapsed() >= Self::DELAY {
            self.shown = true;
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    /// Adds `n` items to the work to do.
    pub(crate) fn inc_length(&self, n: u64) {
        self.bar.inc_length(n);
    }

    /// Changes the label (the stage of the work).
    pub(crate) fn set_message(&mut self, label: &str) {
        self.bar.set_message(label.to_string());
        self.inc(0);
    }
}

impl Drop for LateBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
