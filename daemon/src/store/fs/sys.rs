//! The syscall helpers the file store builds on: checked return codes, C names, opening a
//! directory without following a symbolic link anywhere on its path, and reading a small file
//! whole.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(super) fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(super) fn c_name(name: &[u8]) -> io::Result<CString> {
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
pub(super) fn open_dir_nofollow(dir: &Path) -> io::Result<OwnedFd> {
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
pub(super) fn read_small(file: &mut File) -> io::Result<Vec<u8>> {
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

/// The name of user `uid`, where this host resolves it (for messages only).
pub(super) fn user_name(uid: libc::uid_t) -> Option<String> {
    // SAFETY: `passwd` is plain data, filled in by the call.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: valid out pointers and a buffer of the length passed; the reentrant call keeps
    // every string it returns inside `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated name inside `buf`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// Whether the directory `dir` is reached without a symbolic link on its path (then an
/// absolute, normalized `dir` is already its real path).
pub fn reached_without_links(dir: &Path) -> bool {
    open_dir_nofollow(dir).is_ok()
}
