//! Lock files on the local filesystem, by direct syscalls.
//!
//! - create: `open(O_CREAT|O_EXCL|O_NOFOLLOW)` then write: never check-then-write, never
//!   through a symlink. A reader may see the file empty for the microseconds of the write; the
//!   parser counts an empty file as held (corrupt, young), so that window is safe.
//! - replace: write a temporary file beside the lock, then `rename(2)` it over, so no reader
//!   ever sees a truncated lock, and a symlink at the lock path is replaced, not followed.
//! - no fsync: after a power loss the holders are gone too, and a lock file that survives
//!   one is only a stale lock (README, "Limits").
//!
//! The calls run on Tokio's blocking pool: a local disk answers in microseconds, but an NFS
//! mount can hang, and a hung call must not stall the runtime that serves every other target.
//!
//! Within one daemon the target actor serializes all calls for a lock file, which makes the
//! read-compare-then-rename of `replace` and `delete` safe among its clients. Across daemons
//! sharing a directory they are not yet atomic (see the safety issue).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{Conditional, Created, Observed, StoreError};

/// The local filesystem store. Stateless: paths are absolute.
#[derive(Debug, Clone, Copy)]
pub struct FsStore;

fn describe(action: &str, path: &str, e: &io::Error) -> StoreError {
    let hint = match e.kind() {
        io::ErrorKind::NotFound => {
            let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
            format!(": the directory {} must exist", dir.display())
        }
        io::ErrorKind::PermissionDenied => {
            let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
            format!(
                ": vfslockd needs write access to {} to lock files there",
                dir.display()
            )
        }
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            ": the lock path is a symbolic link, which vfslockd never follows".to_owned()
        }
        _ => String::new(),
    };
    StoreError::new(format!("cannot {action} lock file {path}: {e}{hint}"))
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::new(format!("filesystem call failed: {e}")))?
}

fn open_nofollow(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn read_now(path: &str) -> Result<Option<Observed>, StoreError> {
    let mut file = match open_nofollow(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(describe("read", path, &e)),
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| describe("read", path, &e))?;
    let modified = file.metadata().and_then(|m| m.modified()).ok();
    Ok(Some(Observed { bytes, modified }))
}

fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_exclusive(path)?;
    if let Err(e) = file.write_all(bytes) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// A temporary name beside `path`, hidden, unique to this write.
fn temp_path(path: &str) -> String {
    let path = Path::new(path);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut nonce = [0u8; 8];
    // A clash only makes this write fail (O_EXCL), never overwrite anything.
    let _ = getrandom::fill(&mut nonce);
    dir.join(format!(".{name}.{:016x}.tmp", u64::from_ne_bytes(nonce)))
        .to_string_lossy()
        .into_owned()
}

impl FsStore {
    pub(super) async fn create(&self, path: &str, bytes: Vec<u8>) -> Result<Created, StoreError> {
        let path = path.to_owned();
        blocking(move || match write_new(Path::new(&path), &bytes) {
            Ok(()) => Ok(Created::Won),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Exists),
            Err(e) => Err(describe("create", &path, &e)),
        })
        .await
    }

    pub(super) async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        let path = path.to_owned();
        blocking(move || read_now(&path)).await
    }

    pub(super) async fn replace(
        &self,
        path: &str,
        bytes: Vec<u8>,
        expected: &[u8],
    ) -> Result<Conditional, StoreError> {
        let path = path.to_owned();
        let expected = expected.to_owned();
        blocking(move || {
            match read_now(&path)? {
                Some(current) if current.bytes == expected => {}
                _ => return Ok(Conditional::Changed),
            }
            let temp = temp_path(&path);
            write_new(Path::new(&temp), &bytes).map_err(|e| describe("write", &temp, &e))?;
            if let Err(e) = fs::rename(&temp, &path) {
                let _ = fs::remove_file(&temp);
                return Err(describe("replace", &path, &e));
            }
            Ok(Conditional::Done)
        })
        .await
    }

    pub(super) async fn delete(
        &self,
        path: &str,
        expected: &[u8],
    ) -> Result<Conditional, StoreError> {
        let path = path.to_owned();
        let expected = expected.to_owned();
        blocking(move || {
            match read_now(&path)? {
                Some(current) if current.bytes == expected => {}
                _ => return Ok(Conditional::Changed),
            }
            match fs::remove_file(&path) {
                Ok(()) => Ok(Conditional::Done),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Conditional::Changed),
                Err(e) => Err(describe("delete", &path, &e)),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_path(dir: &tempfile::TempDir) -> String {
        dir.path()
            .join("data.csv.lock")
            .to_string_lossy()
            .into_owned()
    }

    #[tokio::test]
    async fn create_is_exclusive_and_replace_delete_are_conditional() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let store = FsStore;
        assert_eq!(
            store.create(&path, b"one".to_vec()).await.unwrap(),
            Created::Won
        );
        assert_eq!(
            store.create(&path, b"two".to_vec()).await.unwrap(),
            Created::Exists
        );
        assert_eq!(store.read(&path).await.unwrap().unwrap().bytes, b"one");

        assert_eq!(
            store
                .replace(&path, b"three".to_vec(), b"two")
                .await
                .unwrap(),
            Conditional::Changed
        );
        assert_eq!(
            store
                .replace(&path, b"three".to_vec(), b"one")
                .await
                .unwrap(),
            Conditional::Done
        );
        assert_eq!(store.read(&path).await.unwrap().unwrap().bytes, b"three");
        assert_eq!(
            store.delete(&path, b"one").await.unwrap(),
            Conditional::Changed
        );
        assert!(store.read(&path).await.unwrap().is_some());
        assert_eq!(
            store.delete(&path, b"three").await.unwrap(),
            Conditional::Done
        );
        assert_eq!(store.read(&path).await.unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[tokio::test]
    async fn a_symlink_at_the_lock_path_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let path = lock_path(&dir);
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let store = FsStore;
        assert_eq!(
            store.create(&path, b"x".to_vec()).await.unwrap(),
            Created::Exists
        );
        let err = store.read(&path).await.unwrap_err();
        assert!(err.message.contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[tokio::test]
    async fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope/data.csv.lock");
        let err = FsStore
            .create(path.to_str().unwrap(), b"x".to_vec())
            .await
            .unwrap_err();
        assert!(err.message.contains("must exist"), "{err}");
    }
}
