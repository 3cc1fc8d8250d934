//! An output file written under a temporary name beside it (`.NAME.PID.tmp`, same folder, so
//! the rename cannot cross file systems) and renamed into place only when complete.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The output under its temporary name until `commit`; removed on drop unless committed.
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Checks that `path` can be an output (a file name in an existing folder, not a folder
    /// itself) before anything is written.
    pub fn new(path: &Path) -> Result<Self> {
        let file_name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            Error::Usage(format!("output path {} has no file name", path.display()))
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(Error::file(
                dir,
                "output folder does not exist or is not a folder",
            ));
        }
        if path.is_dir() {
            return Err(Error::file(
                path,
                "is a folder; the output must be a file path",
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            tmp: dir.join(format!(".{file_name}.{}.tmp", std::process::id())),
            committed: false,
        })
    }

    /// The name the file gets on `commit`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the temporary file. Errors name the output asked for, not the temporary name.
    pub fn create(&self) -> Result<File> {
        File::create(&self.tmp).map_err(|e| Error::io(&self.path, e))
    }

    /// Writes the whole file at once (to its temporary name).
    pub fn write_all(&self, bytes: &[u8]) -> Result<()> {
        std::fs::write(&self.tmp, bytes).map_err(|e| Error::io(&self.path, e))
    }

    /// Renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_left_behind_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        let dropped = AtomicFile::new(&path).unwrap();
        dropped.write_all(b"half").unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let kept = AtomicFile::new(&path).unwrap();
        kept.write_all(b"whole").unwrap();
        kept.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_a_folder_and_a_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = AtomicFile::new(dir.path()).err().unwrap().to_string();
        assert!(err.contains("is a folder"), "{err}");
        let err = AtomicFile::new(&dir.path().join("missing/out.bin"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("output folder does not exist"), "{err}");
    }
}
