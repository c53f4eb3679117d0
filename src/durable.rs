//! Files and folders written whole or not at all: through a temporary name beside the target,
//! synced, renamed over it, and the rename synced. A crash leaves the old content (or none),
//! never half of the new.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates `dir` (and any missing parent) for its owner only, or tightens an existing `dir` to
/// that: a node's data folder holds its registry, its log and its lock.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    if fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes `path` a file for its owner only: created empty with mode 0600 when missing, tightened
/// when looser. For files another library fills (SQLite's database, whose mode SQLite copies to
/// its WAL and shared-memory files).
pub fn private_file(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .append(true)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Writes `bytes` to `path`, replacing what is there. The file is created with `mode`; for
/// secrets (no group or other bits) the mode is set exactly, whatever the umask.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_of(path);
    let tmp = temp_path(dir, path);
    let written = write_new(&tmp, bytes, mode).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        // Best effort: the write already failed, and that error is the one to report.
        let _ = fs::remove_file(&tmp);
        return written;
    }
    sync_dir(dir)
}

/// Writes `bytes` to `path`, which must not exist yet (`AlreadyExists` otherwise, even when
/// another writer creates it meanwhile: the new name is a hard link, which never replaces).
/// On a file system without hard links (FAT), the check and the rename are two steps.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let exists = || {
        io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the file exists; choose another name or remove it first",
        )
    };
    let dir = parent_of(path);
    let tmp = temp_path(dir, path);
    if let Err(e) = write_new(&tmp, bytes, mode) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let placed = match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
        Err(_) if path.symlink_metadata().is_ok() => Err(exists()),
        Err(_) => fs::rename(&tmp, path),
        Ok(()) => Ok(()),
    };
    let _ = fs::remove_file(&tmp);
    placed?;
    sync_dir(dir)
}

/// Makes the folder `dir` with `files` (name, content) in it. When `dir` does not exist, it
/// appears with every file or not at all. When it exists, it must be empty (a mount point, a
/// folder made for the purpose), and each file appears whole, in the order given: put last the
/// file whose presence says the folder is complete.
pub fn write_folder(dir: &Path, files: &[(&str, &[u8])], mode: u32) -> io::Result<()> {
    if dir.is_dir() {
        if fs::read_dir(dir)?.next().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                "the folder is not empty; choose another, or empty it first",
            ));
        }
        for (name, bytes) in files {
            write_file(&dir.join(name), bytes, mode)?;
        }
        return Ok(());
    }
    let parent = parent_of(dir);
    let tmp = temp_path(parent, dir);
    let written = (|| {
        fs::create_dir(&tmp)?;
        for (name, bytes) in files {
            write_new(&tmp.join(name), bytes, mode)?;
        }
        sync_dir(&tmp)?;
        fs::rename(&tmp, dir)
    })();
    if written.is_err() {
        let _ = fs::remove_dir_all(&tmp);
        return written;
    }
    sync_dir(parent)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    if mode & 0o077 == 0 {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a rename or a new name in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A name beside `path` that no other writer in this or another process is using:
/// `.<name>.<pid>.<counter>.tmp`.
fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.pkg");
        write_file(&path, b"first", 0o644).unwrap();
        write_file(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(names(tmp.path()), vec!["a.pkg"]);
    }

    #[test]
    fn a_new_file_does_not_replace_an_old_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.pkg");
        write_new_file(&path, b"first", 0o644).unwrap();
        let err = write_new_file(&path, b"second", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
    }

    #[test]
    fn a_new_folder_appears_with_all_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        write_folder(&dir, &[("a", b"1"), ("b", b"22")], 0o644).unwrap();
        assert_eq!(names(&dir), vec!["a", "b"]);
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"22");
        assert_eq!(names(tmp.path()), vec!["bundle"]);
    }

    #[test]
    fn an_existing_empty_folder_is_filled_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        // `.` or a mount point cannot be renamed over: the files go in one by one.
        write_folder(tmp.path(), &[("a", b"1"), ("b", b"22")], 0o644).unwrap();
        assert_eq!(names(tmp.path()), vec!["a", "b"]);
        assert_eq!(fs::read(tmp.path().join("a")).unwrap(), b"1");
    }

    #[test]
    fn a_new_file_is_not_written_over_an_existing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.pkg");
        fs::write(&path, b"someone else's").unwrap();
        let err = write_new_file(&path, b"mine", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"someone else's");
        assert_eq!(names(tmp.path()), vec!["a.pkg"]);
    }
}
