//! The model's keys in a state directory (`--model-keys DIR`, default
//! `$XDG_STATE_HOME/umbra/snp-model`): one file per item, private keys
//! 0600, the directory 0700. A first use generates the set into a private
//! directory that is renamed into place, so concurrent first uses are safe
//! (the loser loads the winner's).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use umbra_snp_model::keys::{KeyError, KeyItem, KeyStore};

/// `$XDG_STATE_HOME/umbra/snp-model`, else `~/.local/state/umbra/snp-model`.
pub(super) fn default_dir() -> Result<PathBuf, KeyError> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".local/state"))
            .ok_or_else(|| KeyError::ReadStore {
                item: "the state directory".into(),
                store: "$XDG_STATE_HOME or $HOME".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "set XDG_STATE_HOME or HOME, or pass --model-keys",
                ),
            })?,
    };
    Ok(base.join("umbra").join("snp-model"))
}

/// A key store in a directory.
#[derive(Clone, Debug)]
pub struct DirKeyStore {
    dir: PathBuf,
}

impl DirKeyStore {
    /// The store in `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Self {
        DirKeyStore { dir }
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

impl KeyStore for DirKeyStore {
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, std::io::Error> {
        match fs::read(self.dir.join(name)) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn store(&self, items: &[KeyItem<'_>]) -> Result<(), std::io::Error> {
        let parent = self.dir.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
        let tmp = parent.join(format!(
            ".{}.tmp-{}",
            self.dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("keys"),
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new().mode(0o700).create(&tmp)?;
        for item in items {
            let mode = if item.secret { 0o600 } else { 0o644 };
            write_file(&tmp.join(item.name), item.data, mode)?;
        }
        // An empty directory left by someone else is replaced; a populated
        // one (a concurrent winner) is kept.
        let _ = fs::remove_dir(&self.dir);
        if fs::rename(&tmp, &self.dir).is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}
