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
//! # Across daemons: the fence
//!
//! Every write (create, replace, delete) happens while holding an exclusive open-file-
//! description lock (`fcntl(F_OFD_SETLKW)`, a POSIX record lock that NFSv4 carries to the
//! server) on the companion file `<lock>.fence`. Under it, replace and delete re-read the lock
//! file and act only if it still holds the expected bytes, so "check, then replace" is one step
//! for every daemon on every host that shares the directory: of several daemons stealing the
//! same stale lock, exactly one finds the bytes it judged; the others find the winner's.
//! Nothing is ever deleted and then re-created. The fence also holds the fencing-token counter
//! (a decimal number): a fresh token is committed to it before the lock file that carries the
//! token is written, so the counter is never below a token in any lock file, even if the
//! daemon dies between the two writes. The kernel drops the OS lock when its holder dies.
//!
//! The calls run on Tokio's blocking pool: a local disk answers in microseconds, but an NFS
//! mount can hang, and a hung call must not stall the runtime that serves every other target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{
    next_token, token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token,
    Version, Written, FENCE_SUFFIX,
};

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
    Ok(Some(Observed {
        bytes,
        tag: None,
        modified,
    }))
}

fn create_exclusive(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes a new file; returns its last-modified time.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<Option<std::time::SystemTime>> {
    let mut file = create_exclusive(path)?;
    if let Err(e) = file.write_all(bytes) {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(file.metadata().and_then(|m| m.modified()).ok())
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

/// The exclusive OS lock on `<lock>.fence`, and the token counter inside it. Released when
/// dropped (the descriptor closes) or when the process dies.
struct Fence {
    file: File,
    path: String,
}

impl Fence {
    fn lock(lock_path: &str) -> Result<Fence, StoreError> {
        let path = format!("{lock_path}{FENCE_SUFFIX}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| describe("open the fence of", lock_path, &e))?;
        lock_exclusive(&file).map_err(|e| describe("lock the fence of", lock_path, &e))?;
        Ok(Fence { file, path })
    }

    /// The last token committed; 0 for a new, empty fence, which the time floor of
    /// [`Token::Fresh`] covers. A fence whose content is not a number is refused rather than
    /// read as 0: a counter silently reset could issue a token below one already handed out.
    fn counter(&mut self) -> Result<u64, StoreError> {
        let mut text = String::new();
        let read = self
            .file
            .rewind()
            .and_then(|_| self.file.read_to_string(&mut text));
        let text = match read {
            Ok(_) => text,
            Err(e) => {
                return Err(StoreError::new(format!(
                    "cannot read the token counter in {}: {e}",
                    self.path
                )))
            }
        };
        let text = text.trim();
        if text.is_empty() {
            return Ok(0);
        }
        text.parse().map_err(|_| {
            StoreError::new(format!(
                "the fence file {} holds no token counter ({text:?}): delete it to let tokens \
                 continue from the clock floor",
                self.path
            ))
        })
    }

    fn commit(&mut self, token: u64) -> Result<(), StoreError> {
        let text = format!("{token}\n");
        let fail = |e: io::Error| {
            StoreError::new(format!(
                "cannot commit fencing token {token} to {}: {e}",
                self.path
            ))
        };
        self.file.rewind().map_err(fail)?;
        self.file.write_all(text.as_bytes()).map_err(fail)?;
        self.file.set_len(text.len() as u64).map_err(fail)
    }

    /// Commits a token for a new holding, replacing the lock file that carries `replaced`.
    fn issue(&mut self, replaced: Option<u64>, floor: u64) -> Result<u64, StoreError> {
        let token = next_token(self.counter()?, replaced, floor);
        self.commit(token)?;
        Ok(token)
    }
}

/// Runs `f` while holding the fence of the lock file at `lock_path`, exactly as every write of
/// that lock file by any vfslock daemon does. For tools and tests that act on a lock file as
/// another vfslock host would; the lock is released when `f` returns.
pub fn with_fence<T>(lock_path: &str, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    let _fence = Fence::lock(lock_path)?;
    Ok(f())
}

#[cfg(target_os = "linux")]
fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: `flock` is plain data; all-zero is a valid value that we then fill in.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_WRLCK as _;
    request.l_whence = libc::SEEK_SET as _;
    loop {
        // SAFETY: valid descriptor and a valid pointer to an initialized `flock`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &request) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Replaces the file at `path` with `bytes` by writing a temporary file and renaming it over.
fn swap_in(path: &str, bytes: &[u8]) -> Result<Option<std::time::SystemTime>, StoreError> {
    let temp = temp_path(path);
    let modified = write_new(Path::new(&temp), bytes).map_err(|e| describe("write", &temp, &e))?;
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(describe("replace", path, &e));
    }
    Ok(modified)
}

impl FsStore {
    pub(super) async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let path = path.to_owned();
        blocking(move || {
            let mut fence = Fence::lock(&path)?;
            // Committed before the lock file exists: if it turns out to exist, a token is
            // skipped, which costs nothing; the order keeps the counter above every token.
            let token = fence.issue(None, floor)?;
            let bytes = make(Some(token));
            match write_new(Path::new(&path), &bytes) {
                Ok(modified) => Ok(Created::Won(Written {
                    bytes,
                    token: Some(token),
                    modified,
                    tag: None,
                })),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Exists),
                Err(e) => Err(describe("create", &path, &e)),
            }
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
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        let path = path.to_owned();
        let expected = expected.bytes.clone();
        blocking(move || {
            let mut fence = Fence::lock(&path)?;
            match read_now(&path)? {
                Some(current) if current.bytes == expected => {}
                _ => return Ok(Replaced::Changed),
            }
            let token = match token {
                Token::Fresh { floor } => Some(fence.issue(token_in(&expected), floor)?),
                Token::Keep => None,
            };
            let bytes = make(token);
            let modified = swap_in(&path, &bytes)?;
            Ok(Replaced::Done(Written {
                bytes,
                token,
                modified,
                tag: None,
            }))
        })
        .await
    }

    pub(super) async fn delete(
        &self,
        path: &str,
        expected: &Version,
    ) -> Result<Conditional, StoreError> {
        let path = path.to_owned();
        let expected = expected.bytes.clone();
        blocking(move || {
            let _fence = Fence::lock(&path)?;
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

    fn v(bytes: &[u8]) -> Version {
        Version {
            bytes: bytes.to_vec(),
            tag: None,
        }
    }

    fn lock_path(dir: &tempfile::TempDir) -> String {
        dir.path()
            .join("data.csv.lock")
            .to_string_lossy()
            .into_owned()
    }

    fn fixed(bytes: &'static [u8]) -> MakeLock {
        Box::new(move |_| bytes.to_vec())
    }

    fn won(created: Created) -> Written {
        match created {
            Created::Won(written) => written,
            Created::Exists => panic!("expected to win the create"),
        }
    }

    #[tokio::test]
    async fn create_is_exclusive_and_replace_delete_are_conditional() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let store = FsStore;
        let first = won(store.create(&path, 0, fixed(b"one")).await.unwrap());
        assert_eq!(first.bytes, b"one");
        assert_eq!(
            store.create(&path, 0, fixed(b"two")).await.unwrap(),
            Created::Exists
        );
        assert_eq!(store.read(&path).await.unwrap().unwrap().bytes, b"one");

        let keep = Token::Keep;
        assert_eq!(
            store
                .replace(&path, &v(b"two"), keep, fixed(b"3"))
                .await
                .unwrap(),
            Replaced::Changed
        );
        assert!(matches!(
            store
                .replace(&path, &v(b"one"), keep, fixed(b"3"))
                .await
                .unwrap(),
            Replaced::Done(Written { token: None, .. })
        ));
        assert_eq!(store.read(&path).await.unwrap().unwrap().bytes, b"3");
        assert_eq!(
            store.delete(&path, &v(b"one")).await.unwrap(),
            Conditional::Changed
        );
        assert!(store.read(&path).await.unwrap().is_some());
        assert_eq!(
            store.delete(&path, &v(b"3")).await.unwrap(),
            Conditional::Done
        );
        assert_eq!(store.read(&path).await.unwrap(), None);
        let left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["data.csv.lock.fence"], "only the fence persists");
    }

    #[tokio::test]
    async fn tokens_strictly_increase_and_survive_a_lost_counter() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let store = FsStore;
        let mut last = 0;
        for round in 0..5 {
            let written = won(store
                .create(&path, 0, Box::new(|t| t.unwrap().to_string().into_bytes()))
                .await
                .unwrap());
            let token = written.token.unwrap();
            assert!(token > last, "round {round}: {token} after {last}");
            last = token;
            // A fresh token on replace is above the counter too.
            let replaced = store
                .replace(
                    &path,
                    &written.version(),
                    Token::Fresh { floor: 0 },
                    Box::new(|t| t.unwrap().to_string().into_bytes()),
                )
                .await
                .unwrap();
            let Replaced::Done(replaced) = replaced else {
                panic!("replace of our own bytes")
            };
            assert!(replaced.token.unwrap() > last);
            last = replaced.token.unwrap();
            assert_eq!(
                store.delete(&path, &replaced.version()).await.unwrap(),
                Conditional::Done
            );
        }
        // The counter is lost: the floor (the time in microseconds) keeps tokens moving up.
        fs::remove_file(format!("{path}{FENCE_SUFFIX}")).unwrap();
        let floor = last + 1000;
        let written = won(store.create(&path, floor, fixed(b"x")).await.unwrap());
        assert_eq!(written.token, Some(floor));
    }

    #[test]
    fn of_many_racing_steals_of_one_version_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .build()
            .unwrap();
        for round in 0..50 {
            let stale = format!("stale {round}").into_bytes();
            fs::write(&path, &stale).unwrap();
            let winners: usize = runtime.block_on(async {
                let mut racers = Vec::new();
                for racer in 0..8 {
                    let (path, stale) = (path.clone(), stale.clone());
                    racers.push(tokio::spawn(async move {
                        let mine: MakeLock =
                            Box::new(move |_| format!("racer {racer}").into_bytes());
                        FsStore
                            .replace(&path, &v(&stale), Token::Fresh { floor: 0 }, mine)
                            .await
                            .unwrap()
                    }));
                }
                let mut winners = 0;
                for racer in racers {
                    if let Replaced::Done(_) = racer.await.unwrap() {
                        winners += 1;
                    }
                }
                winners
            });
            assert_eq!(winners, 1, "round {round}");
        }
    }

    #[tokio::test]
    async fn a_fence_without_a_number_is_refused_not_read_as_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        fs::write(format!("{path}{FENCE_SUFFIX}"), "garbage").unwrap();
        let err = FsStore.create(&path, 0, fixed(b"x")).await.unwrap_err();
        assert!(err.message.contains("holds no token counter"), "{err}");
        assert_eq!(
            FsStore.read(&path).await.unwrap(),
            None,
            "nothing was created"
        );
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
            store.create(&path, 0, fixed(b"x")).await.unwrap(),
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
            .create(path.to_str().unwrap(), 0, fixed(b"x"))
            .await
            .unwrap_err();
        assert!(err.message.contains("must exist"), "{err}");
    }
}
