//! Writing files so that readers see the old content or the new, never half.

use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in `tmp_dir` (which
/// must be on the same filesystem), then renames it into place.
pub fn write_atomic(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The directory a file is in, for temporary names beside it.
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Removes a tree, also where read-only directories of an unpacked image
/// (a user's copy of a 0555 `/proc`) would stop `remove_dir_all`.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            fn open_up(dir: &Path) -> io::Result<()> {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
                for e in std::fs::read_dir(dir)? {
                    let e = e?;
                    if e.file_type()?.is_dir() {
                        open_up(&e.path())?;
                    }
                }
                Ok(())
            }
            open_up(path)?;
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(d.path(), &p, b"one").unwrap();
        write_atomic(parent_dir(&p), &p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
