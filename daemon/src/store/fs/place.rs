//! A lock file's place, its directory (held open without following links) and its name there,
//! and the writes made in it: a whole file moved in only if nothing is there, a replace by
//! rename, and the temporary copies a killed daemon may leave behind.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::describe;
use super::sys::{c_name, check, open_dir_nofollow, read_small, user_name};
use crate::store::{Observed, StoreError, Unreadable};

/// Where a lock file lives: its directory, opened without following symlinks, and its name
/// in it. Every call below acts relative to the directory descriptor, so nothing is resolved
/// twice.
pub(super) struct Place {
    dir: OwnedFd,
    /// The lock file's name in `dir`.
    pub(super) name: CString,
    /// The whole path, for messages.
    pub(super) path: String,
}

impl Place {
    pub(super) fn of(path: &str) -> Result<Place, StoreError> {
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
    pub(super) fn open(&self, name: &CStr, flags: libc::c_int) -> io::Result<File> {
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
    pub(super) fn beside(&self, suffix: &str) -> CString {
        let mut bytes = self.name.as_bytes().to_vec();
        bytes.extend_from_slice(suffix.as_bytes());
        CString::new(bytes).expect("no NUL in a name and its suffix")
    }

    pub(super) fn unlink(&self, name: &CStr) -> io::Result<()> {
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) }).map(|_| ())
    }

    /// Reads the lock file; with `timed`, also its last-modified time (the compare-and-act
    /// reads under the fence need only the bytes).
    pub(super) fn read_now(&self, timed: bool) -> Result<Option<Observed>, StoreError> {
        let mut file = match self.open(&self.name, libc::O_RDONLY) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // There but not ours to read (another user's 0600 file): held by someone unknown,
            // not a broken directory. Told apart by whether the file itself can be looked at.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(match self.stat(&self.name) {
                    Ok(Some(info)) => StoreError::unreadable(&self.path, unreadable(&info)),
                    _ => describe("read", &self.path, &e),
                })
            }
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
    pub(super) fn temporaries(&self) -> io::Result<Vec<CString>> {
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
    pub(super) fn carries(&self, name: &CStr, lock_id: &str) -> bool {
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
    pub(super) fn create_whole(&self, bytes: &[u8]) -> io::Result<Option<std::time::SystemTime>> {
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
        self.stat(name).map(|info| info.is_some())
    }

    /// `name`'s status (not following a link); `None` when it does not exist.
    fn stat(&self, name: &CStr) -> io::Result<Option<libc::stat>> {
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
            Ok(_) => Ok(Some(info)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
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
    pub(super) fn swap_in(
        &self,
        bytes: &[u8],
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
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

/// Who owns the file `info` describes and its mode, for the message of a refused read.
fn unreadable(info: &libc::stat) -> Unreadable {
    Unreadable {
        uid: info.st_uid,
        owner: user_name(info.st_uid),
        // `mode_t` is 32 bits on Linux, 16 on the BSDs and macOS.
        #[allow(clippy::unnecessary_cast)]
        mode: info.st_mode as u32 & 0o7777,
        reader: filesystem_uid(),
    }
}

/// The uid that file access is checked against: the effective uid, or on Linux the thread's
/// filesystem uid (the same, unless someone changed it).
fn filesystem_uid() -> u32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an invalid id changes nothing; the call then only returns the current one.
        unsafe { libc::setfsuid(libc::uid_t::MAX) as u32 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: cannot fail.
        unsafe { libc::geteuid() }
    }
}
