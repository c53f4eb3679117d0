//! Files and folders written whole or not at all: through a temporary name beside the target,
//! synced, renamed over it, and the rename synced. A crash leaves the old content (or none),
//! never half of the new.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Writes `bytes` to `path`, which must not exist yet (`AlreadyExists` otherwise).
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the file exists; choose another name or remove it first",
        ));
    }
    write_file(path, bytes, mode)
}

/// Makes the folder `dir` with `files` (name, content) in it. `dir` must not exist or be empty;
/// readers see it empty or absent until every file is written and synced.
pub fn write_folder(dir: &Path, files: &[(&str, &[u8])], mode: u32) -> io::Result<()> {
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
    fn a_folder_appears_with_all_its_files_over_an_empty_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        fs::create_dir(&dir).unwrap();
        write_folder(&dir, &[("a", b"1"), ("b", b"22")], 0o644).unwrap();
        assert_eq!(names(&dir), vec!["a", "b"]);
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"22");
        assert_eq!(names(tmp.path()), vec!["bundle"]);
        // Not over a folder that holds something: it stays as it was.
        let err = write_folder(&dir, &[("c", b"3")], 0o644).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
            ),
            "{err}"
        );
        assert_eq!(names(&dir), vec!["a", "b"]);
        assert_eq!(names(tmp.path()), vec!["bundle"]);
    }
}
