//! Lock files on the local filesystem, by direct syscalls.
//!
//! - create: write the whole file under a temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`), then
//!   move it to the lock's name only if nothing is there (`renameat2(RENAME_NOREPLACE)`, or
//!   `link(2)`): never check-then-write, never through a symlink, and never an empty or
//!   half-written lock file, not even behind a daemon killed mid-create (which leaves at most
//!   a hidden temporary file, removed by the crash journal's recovery when it starts again).
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
//! # Where the calls run
//!
//! A local disk answers in microseconds, but an NFS mount can hang, and a hung call must not
//! stall the runtime that serves every other target. So a directory is first served on Tokio's
//! blocking pool, which also learns its filesystem type (`statfs`); once it is known to be
//! local (ext4, xfs, btrfs, tmpfs, …) its calls run inline, without two thread hand-offs per
//! call. Inline, the fence is only *tried* (`F_OFD_SETLK`): if another daemon holds it, the
//! operation goes back to the blocking pool to wait there (`F_OFD_SETLKW`), so a daemon frozen
//! while holding a fence never blocks a runtime thread. Nothing changes in what is written.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{
    next_token, token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token,
    Version, Written, FENCE_SUFFIX, WAITING_SUFFIX,
};

/// The local filesystem store. Stateless: paths are absolute.
#[derive(Debug, Clone, Copy)]
pub struct FsStore;

fn describe(action: &str, path: &str, e: &io::Error) -> StoreError {
    let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
    let hint = match e.kind() {
        io::ErrorKind::NotFound => format!(": the directory {} must exist", dir.display()),
        io::ErrorKind::PermissionDenied => format!(
            ": vfslockd needs write access to {} to lock files there",
            dir.display()
        ),
        _ if e.raw_os_error() == Some(libc::ELOOP) => {
            ": the lock path is a symbolic link, which vfslockd never follows".to_owned()
        }
        _ => String::new(),
    };
    StoreError::new(format!("cannot {action} lock file {path}: {e}{hint}"))
}

/// Runs `work` on the lock file at `path`: inline when its directory is known to be on a local
/// filesystem and `work(false)` finishes without waiting (it returns `None` when it would have
/// to wait for a fence, having changed nothing); otherwise on the blocking pool, where
/// `work(true)` may wait, and where the directory's filesystem type is learned.
async fn run<T: Send + 'static>(
    path: &str,
    work: impl Fn(bool) -> Result<Option<T>, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let dir = Path::new(path)
        .parent()
        .unwrap_or(Path::new("/"))
        .to_owned();
    if locality::is_local(&dir) {
        if let Some(done) = work(false)? {
            return Ok(done);
        }
    }
    tokio::task::spawn_blocking(move || {
        locality::learn(&dir);
        work(true).map(|done| done.expect("an operation allowed to wait completes"))
    })
    .await
    .map_err(|e| StoreError::new(format!("filesystem call failed: {e}")))?
}

/// Runs `work` (filesystem reads for a `file://` target in `dir`, such as resolving its
/// directory) inline when `dir` is known to be local, else on the blocking pool.
pub async fn run_in<T: Send + 'static>(dir: &Path, work: impl FnOnce() -> T + Send + 'static) -> T {
    if locality::is_local(dir) {
        return work();
    }
    let dir = dir.to_owned();
    match tokio::task::spawn_blocking(move || {
        let done = work();
        locality::learn(&dir);
        done
    })
    .await
    {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Which directories are on local filesystems, learned on the blocking pool.
mod locality {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    /// More directories than this and the table starts afresh: forgetting only costs a trip
    /// through the blocking pool.
    const CAPACITY: usize = 4096;

    fn known() -> &'static Mutex<HashMap<PathBuf, bool>> {
        static KNOWN: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
        KNOWN.get_or_init(Default::default)
    }

    /// Whether `dir` was seen on a local filesystem.
    pub(super) fn is_local(dir: &Path) -> bool {
        known()
            .lock()
            .expect("locality table")
            .get(dir)
            .copied()
            .unwrap_or(false)
    }

    /// Looks up `dir`'s filesystem type (blocking: call on the blocking pool).
    pub(super) fn learn(dir: &Path) {
        if known().lock().expect("locality table").contains_key(dir) {
            return;
        }
        let local = local_filesystem(dir);
        let mut known = known().lock().expect("locality table");
        if known.len() >= CAPACITY {
            known.clear();
        }
        known.insert(dir.to_owned(), local);
    }

    /// Filesystems whose calls are served by this machine's memory or disks. Everything else
    /// (NFS, SMB, FUSE, Ceph, …) may wait on a network.
    #[cfg(target_os = "linux")]
    fn local_filesystem(dir: &Path) -> bool {
        use std::os::unix::ffi::OsStrExt;
        const LOCAL: &[i64] = &[
            0xEF53,      // ext2, ext3, ext4
            0x0102_1994, // tmpfs
            0x5846_5342, // xfs
            0x9123_683E, // btrfs
            0x794C_7630, // overlayfs
            0x2FC1_2FC1, // zfs
            0xF2F5_2010, // f2fs
            0x858_458F6, // ramfs
        ];
        let Ok(text) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `statfs` is plain data, filled in by the call.
        let mut info: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: a valid C string and a valid out pointer.
        if unsafe { libc::statfs(text.as_ptr(), &mut info) } != 0 {
            return false;
        }
        LOCAL.contains(&(info.f_type as i64))
    }

    #[cfg(not(target_os = "linux"))]
    fn local_filesystem(_dir: &Path) -> bool {
        false
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn c_name(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

#[cfg(target_os = "linux")]
const DIR_FLAGS: libc::c_int = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
#[cfg(not(target_os = "linux"))]
const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;

/// Opens the directory `dir` (absolute) without following a symbolic link anywhere on its
/// path: a link met on the way fails with `ELOOP` or `ENOTDIR`. The daemon resolves a
/// target's directory once, when it is locked (`access::resolve_file`), and judges that real
/// directory; here no link can lead a write anywhere else.
fn open_dir_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    let text = c_name(dir.as_os_str().as_bytes())?;
    #[cfg(target_os = "linux")]
    {
        // One call where the kernel has it (5.6+); older kernels and seccomp filters that
        // refuse it get the component walk below, which is equivalent.
        // SAFETY: `open_how` is plain data; all-zero is valid, then filled in.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = DIR_FLAGS as u64;
        how.resolve = libc::RESOLVE_NO_SYMLINKS;
        // SAFETY: a valid C string and a valid `open_how` of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                text.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if rc >= 0 {
            // SAFETY: a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(rc as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::E2BIG)
        ) {
            return Err(e);
        }
    }
    let root = c_name(b"/")?;
    // SAFETY: a valid C string.
    let fd = check(unsafe { libc::open(root.as_ptr(), DIR_FLAGS) })?;
    // SAFETY: a new descriptor that nothing else owns.
    let mut here = unsafe { OwnedFd::from_raw_fd(fd) };
    for component in dir.components().skip(1) {
        let name = c_name(component.as_os_str().as_bytes())?;
        // SAFETY: a valid descriptor and C string.
        let fd = check(unsafe {
            libc::openat(
                here.as_raw_fd(),
                name.as_ptr(),
                DIR_FLAGS | libc::O_NOFOLLOW,
            )
        })?;
        // SAFETY: a new descriptor that nothing else owns.
        here = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok(here)
}

/// Reads a whole small file: a lock file is well under a page, and on a local regular file a
/// read shorter than asked means the end, so one call usually does; a longer file is read on.
fn read_small(file: &mut File) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 4096];
    let mut len = 0;
    loop {
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len < bytes.len() {
                    break;
                }
                bytes.resize(bytes.len() * 2, 0);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Whether the directory `dir` is reached without a symbolic link on its path (then an
/// absolute, normalized `dir` is already its real path).
pub fn reached_without_links(dir: &Path) -> bool {
    open_dir_nofollow(dir).is_ok()
}

/// Where a lock file lives: its directory, opened without following symlinks, and its name
/// in it. Every call below acts relative to the directory descriptor, so nothing is resolved
/// twice.
struct Place {
    dir: OwnedFd,
    name: CString,
    /// The whole path, for messages.
    path: String,
}

impl Place {
    fn of(path: &str) -> Result<Place, StoreError> {
        let whole = Path::new(path);
        let (Some(dir), Some(name)) = (whole.parent(), whole.file_name()) else {
            return Err(StoreError::new(format!("{path} is not a lock file path")));
        };
        let dir = open_dir_nofollow(dir).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
                StoreError::new(format!(
                    "cannot reach the directory of lock file {path}: a symbolic link (or a \
                     non-directory) is now on its path, which vfslockd does not follow when \
                     it writes; the target's directory is resolved when it is locked, so \
                     lock it again"
                ))
            } else {
                describe("reach the directory of", path, &e)
            }
        })?;
        let name = c_name(name.as_bytes()).map_err(|e| describe("name", path, &e))?;
        Ok(Place {
            dir,
            name,
            path: path.to_owned(),
        })
    }

    /// `openat` in the lock file's directory, never following a symlink at `name`.
    fn open(&self, name: &CStr, flags: libc::c_int) -> io::Result<File> {
        // SAFETY: a valid descriptor and C string.
        let fd = check(unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        })?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// The name of a companion file beside the lock file (`<lock><suffix>`).
    fn beside(&self, suffix: &str) -> CString {
        let mut bytes = self.name.as_bytes().to_vec();
        bytes.extend_from_slice(suffix.as_bytes());
        CString::new(bytes).expect("no NUL in a name and its suffix")
    }

    fn unlink(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) }).map(|_| ())
    }

    /// Reads the lock file; with `timed`, also its last-modified time (the compare-and-act
    /// reads under the fence need only the bytes).
    fn read_now(&self, timed: bool) -> Result<Option<Observed>, StoreError> {
        let mut file = match self.open(&self.name, libc::O_RDONLY) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(describe("read", &self.path, &e)),
        };
        let bytes = read_small(&mut file).map_err(|e| describe("read", &self.path, &e))?;
        let modified = if timed {
            file.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        Ok(Some(Observed {
            bytes,
            tag: None,
            modified,
        }))
    }

    /// Writes a new file `name` (`O_EXCL`); returns its last-modified time.
    fn write_new(&self, name: &CStr, bytes: &[u8]) -> io::Result<Option<std::time::SystemTime>> {
        let mut file = self.open(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)?;
        if let Err(e) = file.write_all(bytes) {
            drop(file);
            let _ = self.unlink(name);
            return Err(e);
        }
        Ok(file.metadata().and_then(|m| m.modified()).ok())
    }

    /// Replaces the lock file with `bytes` by writing a temporary file beside it and renaming
    /// it over.
    /// A new temporary name beside the lock file, unique to this write.
    fn temp_name(&self) -> CString {
        let mut nonce = [0u8; 8];
        // A clash only makes this write fail (O_EXCL), never overwrite anything.
        let _ = getrandom::fill(&mut nonce);
        let mut temp = b".".to_vec();
        temp.extend_from_slice(self.name.as_bytes());
        temp.extend_from_slice(format!(".{:016x}.tmp", u64::from_ne_bytes(nonce)).as_bytes());
        CString::new(temp).expect("no NUL in a name")
    }

    /// The names in this directory shaped like [`Place::temp_name`]'s for this lock file:
    /// `.<lock name>.<16 hex digits>.tmp`.
    fn temporaries(&self) -> io::Result<Vec<CString>> {
        // The directory as held may be a path-only descriptor, which cannot be listed: open
        // it again, itself (`.`), for reading.
        let dot = c_name(b".")?;
        // SAFETY: a valid descriptor and C string; the new descriptor goes to `fdopendir`.
        let fd = check(unsafe {
            libc::openat(
                self.dir.as_raw_fd(),
                dot.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` is an open directory descriptor that nothing else owns; on success the
        // stream owns it and `closedir` closes it.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is still ours when `fdopendir` failed.
            unsafe { libc::close(fd) };
            return Err(e);
        }
        let prefix = [b".", self.name.as_bytes(), b"."].concat();
        let mut names = Vec::new();
        // A failure part-way reads as the end: this is a best-effort clean-up.
        loop {
            // SAFETY: a valid directory stream, read from this thread only.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: `d_name` is a NUL-terminated name inside the entry just returned.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let nonce = name
                .to_bytes()
                .strip_prefix(prefix.as_slice())
                .and_then(|rest| rest.strip_suffix(b".tmp"));
            if nonce.is_some_and(|n| n.len() == 16 && n.iter().all(u8::is_ascii_hexdigit)) {
                names.push(name.to_owned());
            }
        }
        // SAFETY: the stream opened above, closed once.
        unsafe { libc::closedir(stream) };
        Ok(names)
    }

    /// Whether the temporary file `name` is a regular file of at most a page whose lock id is
    /// `lock_id`. Opened without blocking (a FIFO of that name must not hang the daemon).
    fn carries(&self, name: &CStr, lock_id: &str) -> bool {
        let Ok(mut file) = self.open(name, libc::O_RDONLY | libc::O_NONBLOCK) else {
            return false;
        };
        let small_file = file
            .metadata()
            .is_ok_and(|m| m.is_file() && m.len() <= 4096);
        small_file
            && read_small(&mut file).is_ok_and(|bytes| {
                crate::lockfile::parse(&bytes).lock_id.as_deref() == Some(lock_id)
            })
    }

    /// Creates the lock file with `bytes` in one step: written whole under a temporary name,
    /// then moved to the lock's name only if nothing is there (`renameat2(RENAME_NOREPLACE)`,
    /// or `linkat` where the filesystem lacks it). Creating the lock file itself and then
    /// writing into it would leave an empty lock file behind a daemon killed in between, which
    /// every host must count as held (corrupt) for `corrupt-grace`, and which carries no lock
    /// id for the crash journal to recognise. `AlreadyExists` when the lock file exists.
    fn create_whole(&self, bytes: &[u8]) -> io::Result<Option<std::time::SystemTime>> {
        // Held already: say so without writing a temporary file (the common case of a waiter
        // re-checking). A lock released meanwhile is found at the next look.
        if self.exists(&self.name)? {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let temp = self.temp_name();
        let modified = self.write_new(&temp, bytes)?;
        let moved = self.move_if_absent(&temp);
        if moved.is_err() {
            let _ = self.unlink(&temp);
        }
        moved.map(|()| modified)
    }

    fn exists(&self, name: &CStr) -> io::Result<bool> {
        // SAFETY: `stat` is plain data, filled in by the call.
        let mut info: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor, C string and out pointer.
        let rc = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                name.as_ptr(),
                &mut info,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match check(rc) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Moves `temp` to the lock file's name unless that name exists; leaves `temp` in place
    /// on failure.
    fn move_if_absent(&self, temp: &CStr) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: valid descriptors and C strings.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    self.dir.as_raw_fd(),
                    temp.as_ptr(),
                    self.dir.as_raw_fd(),
                    self.name.as_ptr(),
                    libc::RENAME_NOREPLACE,
                )
            };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
                return Err(e);
            }
        }
        // A hard link fails if the name exists, atomically, on every POSIX filesystem; the
        // temporary name then goes.
        // SAFETY: valid descriptors and C strings.
        check(unsafe {
            libc::linkat(
                self.dir.as_raw_fd(),
                temp.as_ptr(),
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                0,
            )
        })?;
        let _ = self.unlink(temp);
        Ok(())
    }

    /// Replaces the lock file with `bytes` by writing a temporary file beside it and renaming
    /// it over.
    fn swap_in(&self, bytes: &[u8]) -> Result<Option<std::time::SystemTime>, StoreError> {
        let temp = self.temp_name();
        let modified = self
            .write_new(&temp, bytes)
            .map_err(|e| describe("write a temporary file beside", &self.path, &e))?;
        // SAFETY: a valid descriptor (both sides) and C strings.
        let renamed = check(unsafe {
            libc::renameat(
                self.dir.as_raw_fd(),
                temp.as_ptr(),
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
            )
        });
        if let Err(e) = renamed {
            let _ = self.unlink(&temp);
            return Err(describe("replace", &self.path, &e));
        }
        Ok(modified)
    }
}

/// The exclusive OS lock on `<lock>.fence`, and the token counter inside it. Released when
/// dropped (the descriptor closes) or when the process dies.
struct Fence {
    file: File,
    path: String,
    /// The length of the fence file as last read.
    length: usize,
}

impl Fence {
    /// Locks the fence, waiting for it with `wait`; without, `None` when another holds it.
    fn lock(place: &Place, wait: bool) -> Result<Option<Fence>, StoreError> {
        let file = place
            .open(&place.beside(FENCE_SUFFIX), libc::O_RDWR | libc::O_CREAT)
            .map_err(|e| describe("open the fence of", &place.path, &e))?;
        let locked = lock_exclusive(&file, wait)
            .map_err(|e| describe("lock the fence of", &place.path, &e))?;
        Ok(locked.then(|| Fence {
            file,
            path: format!("{}{FENCE_SUFFIX}", place.path),
            length: 0,
        }))
    }

    /// The last token committed; 0 for a new, empty fence, which the time floor of
    /// [`Token::Fresh`] covers. A fence whose content is not a number is refused rather than
    /// read as 0: a counter silently reset could issue a token below one already handed out.
    fn counter(&mut self) -> Result<u64, StoreError> {
        use std::os::unix::fs::FileExt;
        // A counter is at most 21 bytes; more means it is not one (refused below).
        let mut buf = [0u8; 64];
        // One read: short means the end of the file (as in `read_small`), and a full buffer is
        // not a counter anyway.
        let len = loop {
            match self.file.read_at(&mut buf, 0) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(StoreError::new(format!(
                        "cannot read the token counter in {}: {e}",
                        self.path
                    )))
                }
            }
        };
        self.length = len;
        let text = String::from_utf8_lossy(&buf[..len]);
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

    /// Writes `token` over the counter: zero-padded to a fixed width, so that one positioned
    /// write replaces any shorter counter without a truncate.
    fn commit(&mut self, token: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let text = format!("{token:020}\n");
        let fail = |e: io::Error| {
            StoreError::new(format!(
                "cannot commit fencing token {token} to {}: {e}",
                self.path
            ))
        };
        self.file.write_all_at(text.as_bytes(), 0).map_err(fail)?;
        if self.length > text.len() {
            self.file.set_len(text.len() as u64).map_err(fail)?;
        }
        Ok(())
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
    let _fence = Fence::lock(&Place::of(lock_path)?, true)?;
    Ok(f())
}

/// Takes the exclusive lock on `file`, waiting for it with `wait`; without, `Ok(false)` when
/// another holds it.
#[cfg(target_os = "linux")]
fn lock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    // SAFETY: `flock` is plain data; all-zero is a valid value that we then fill in.
    let mut request: libc::flock = unsafe { std::mem::zeroed() };
    request.l_type = libc::F_WRLCK as _;
    request.l_whence = libc::SEEK_SET as _;
    let command = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: valid descriptor and a valid pointer to an initialized `flock`.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), command, &request) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn lock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    let operation = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: valid descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if !wait && e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(e)
}

impl FsStore {
    /// Writes `waiter` into `<lock>.waiting`, which also sets its last-modified time to now.
    pub(super) async fn mark_waiting(&self, path: &str, waiter: &str) -> Result<(), StoreError> {
        let (path, waiter) = (path.to_owned(), waiter.to_owned());
        run(&path.clone(), move |_| {
            let place = Place::of(&path)?;
            let mut file = place
                .open(
                    &place.beside(WAITING_SUFFIX),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                )
                .map_err(|e| describe("mark a waiter beside", &path, &e))?;
            file.write_all(waiter.as_bytes())
                .map_err(|e| describe("mark a waiter beside", &path, &e))?;
            Ok(Some(()))
        })
        .await
    }

    /// Whether `<lock>.waiting` names a daemon other than `me` and was written within `within`.
    /// Unreadable counts as yes: fairness to other hosts is the safe side.
    pub(super) async fn others_waiting(
        &self,
        path: &str,
        within: std::time::Duration,
        me: &str,
    ) -> bool {
        let (path, me) = (path.to_owned(), me.to_owned());
        let answer = run(&path.clone(), move |_| {
            let place = Place::of(&path)?;
            let mut file = match place.open(&place.beside(WAITING_SUFFIX), libc::O_RDONLY) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(false)),
                Err(e) => return Err(describe("read the waiter mark beside", &path, &e)),
            };
            let who = read_small(&mut file).map_err(|e| describe("read", &path, &e))?;
            let fresh = file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|at| at.elapsed().ok())
                .is_none_or(|age| age <= within);
            Ok(Some(fresh && who != me.as_bytes()))
        })
        .await;
        answer.unwrap_or(true)
    }

    pub(super) async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let path = path.to_owned();
        run(&path.clone(), move |wait| {
            let place = Place::of(&path)?;
            let Some(mut fence) = Fence::lock(&place, wait)? else {
                return Ok(None);
            };
            // Committed before the lock file exists: if it turns out to exist, a token is
            // skipped, which costs nothing; the order keeps the counter above every token.
            let token = fence.issue(None, floor)?;
            let bytes = make(Some(token));
            match place.create_whole(&bytes) {
                Ok(modified) => Ok(Some(Created::Won(Written {
                    bytes,
                    token: Some(token),
                    modified,
                    tag: None,
                }))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Some(Created::Exists)),
                Err(e) => Err(describe("create", &path, &e)),
            }
        })
        .await
    }

    pub(super) async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        let path = path.to_owned();
        run(&path.clone(), move |_| match Place::of(&path) {
            Ok(place) => place.read_now(true).map(Some),
            // No directory, no lock file; other failures are errors.
            Err(_) if !Path::new(&path).parent().is_some_and(Path::exists) => Ok(Some(None)),
            Err(e) => Err(e),
        })
        .await
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
        run(&path.clone(), move |wait| {
            let place = Place::of(&path)?;
            let Some(mut fence) = Fence::lock(&place, wait)? else {
                return Ok(None);
            };
            match place.read_now(false)? {
                Some(current) if current.bytes == expected => {}
                _ => return Ok(Some(Replaced::Changed)),
            }
            let token = match token {
                Token::Fresh { floor } => Some(fence.issue(token_in(&expected), floor)?),
                Token::Keep => None,
            };
            let bytes = make(token);
            let modified = place.swap_in(&bytes)?;
            Ok(Some(Replaced::Done(Written {
                bytes,
                token,
                modified,
                tag: None,
            })))
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
        run(&path.clone(), move |wait| {
            let place = Place::of(&path)?;
            let Some(_fence) = Fence::lock(&place, wait)? else {
                return Ok(None);
            };
            match place.read_now(false)? {
                Some(current) if current.bytes == expected => {}
                _ => return Ok(Some(Conditional::Changed)),
            }
            match place.unlink(&place.name) {
                Ok(()) => Ok(Some(Conditional::Done)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Some(Conditional::Changed)),
                Err(e) => Err(describe("delete", &path, &e)),
            }
        })
        .await
    }

    /// Removes the temporary copies of the lock file at `path` that carry `lock_id`: what a
    /// daemon killed between writing one and moving it into place leaves behind. Only a copy
    /// with that lock id is ours; another writer's copy in flight carries another and is left
    /// alone. Returns how many went.
    pub(super) async fn remove_temporaries(
        &self,
        path: &str,
        lock_id: &str,
    ) -> Result<usize, StoreError> {
        let (path, lock_id) = (path.to_owned(), lock_id.to_owned());
        run(&path.clone(), move |_| {
            let place = Place::of(&path)?;
            let names = place
                .temporaries()
                .map_err(|e| describe("list the directory of", &path, &e))?;
            let removed = names
                .iter()
                .filter(|name| place.carries(name, &lock_id) && place.unlink(name).is_ok())
                .count();
            Ok(Some(removed))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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

    /// A runtime whose racers really run at once, on threads of the blocking pool.
    fn racing_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(16)
            .build()
            .unwrap()
    }

    #[test]
    fn of_many_racing_steals_of_one_version_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let runtime = racing_runtime();
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

    #[tokio::test]
    async fn a_symlinked_directory_on_the_path_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("link")).unwrap();
        let path = dir.path().join("link/data.csv.lock");
        let path = path.to_str().unwrap();
        let err = FsStore.create(path, 0, fixed(b"x")).await.unwrap_err();
        assert!(err.message.contains("symbolic link"), "{err}");
        let err = FsStore.read(path).await.unwrap_err();
        assert!(err.message.contains("symbolic link"), "{err}");
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing was created through the link"
        );
        // The real directory works.
        let real = elsewhere.join("data.csv.lock");
        won(FsStore
            .create(real.to_str().unwrap(), 0, fixed(b"x"))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_fence_held_elsewhere_is_waited_for_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        // The first call learns the directory's filesystem; later ones may run inline.
        let written = won(FsStore.create(&path, 0, fixed(b"one")).await.unwrap());
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (held, is_held) = tokio::sync::oneshot::channel();
        let holder = {
            let path = path.clone();
            std::thread::spawn(move || {
                with_fence(&path, || {
                    held.send(()).unwrap();
                    released.recv().unwrap();
                })
                .unwrap()
            })
        };
        is_held.await.unwrap();
        let replace = {
            let (path, expected) = (path.clone(), written.version());
            tokio::spawn(async move {
                FsStore
                    .replace(&path, &expected, Token::Keep, fixed(b"two"))
                    .await
            })
        };
        // This test's runtime has one thread: it goes on serving while the replace waits.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!replace.is_finished(), "the replace waits for the fence");
        release.send(()).unwrap();
        assert!(matches!(replace.await.unwrap().unwrap(), Replaced::Done(_)));
        holder.join().unwrap();
        assert_eq!(FsStore.read(&path).await.unwrap().unwrap().bytes, b"two");
    }

    #[test]
    fn of_racing_creates_exactly_one_wins_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let runtime = racing_runtime();
        for round in 0..50 {
            let winners: Vec<Vec<u8>> = runtime.block_on(async {
                let racers: Vec<_> = (0..8)
                    .map(|racer| {
                        let path = path.clone();
                        tokio::spawn(async move {
                            let mine: MakeLock =
                                Box::new(move |_| format!("racer {racer}").into_bytes());
                            FsStore.create(&path, 0, mine).await.unwrap()
                        })
                    })
                    .collect();
                let mut winners = Vec::new();
                for racer in racers {
                    if let Created::Won(written) = racer.await.unwrap() {
                        winners.push(written.bytes);
                    }
                }
                winners
            });
            assert_eq!(winners.len(), 1, "round {round}");
            // The lock file holds the winner's whole content, and nothing else is left.
            assert_eq!(fs::read(&path).unwrap(), winners[0], "round {round}");
            let mut left: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            left.sort();
            assert_eq!(
                left,
                ["data.csv.lock", "data.csv.lock.fence"],
                "round {round}"
            );
            fs::remove_file(&path).unwrap();
        }
    }

    /// What recovery removes beside a lock file: temporary copies carrying the killed run's
    /// lock id. Another writer's copy (another lock id), a name of another shape and a FIFO
    /// named like a copy are left alone, and the FIFO does not block the daemon.
    #[tokio::test]
    async fn leftover_temporary_copies_with_our_lock_id_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let copy = |nonce: &str| dir.path().join(format!(".data.csv.lock.{nonce}.tmp"));
        let record = |lock_id: &str| format!("{{\n  \"lockId\": \"{lock_id}\"\n}}");
        let ours = copy("0123456789abcdef");
        let also_ours = copy("00000000deadbeef");
        let theirs = copy("fedcba9876543210");
        let other_shape = copy("not-a-nonce");
        fs::write(&ours, record("ours")).unwrap();
        fs::write(&also_ours, record("ours")).unwrap();
        fs::write(&theirs, record("theirs")).unwrap();
        fs::write(&other_shape, record("ours")).unwrap();
        let fifo = copy("1111111111111111");
        let fifo_c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o644) }, 0);
        // The lock file itself is not a copy, whatever it holds.
        fs::write(&path, record("ours")).unwrap();

        let removed = FsStore.remove_temporaries(&path, "ours").await.unwrap();
        assert_eq!(removed, 2);
        assert!(!ours.exists() && !also_ours.exists());
        assert!(theirs.exists(), "another writer's copy was removed");
        assert!(other_shape.exists(), "a file of another shape was removed");
        assert!(fifo.exists(), "the FIFO was removed");
        assert!(Path::new(&path).exists(), "the lock file was removed");
    }
}
