//! The fence: the exclusive OS lock on `<lock>.fence` under which every write of a lock file
//! happens, and the fencing-token counter kept inside it (see "Across daemons: the fence" in the
//! module doc of [`fs`](super)).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use super::describe;
use super::place::Place;
use crate::store::{next_token, StoreError, FENCE_SUFFIX};

/// The exclusive OS lock on `<lock>.fence`, and the token counter inside it. Released when
/// dropped (the descriptor closes) or when the process dies.
pub(super) struct Fence {
    file: File,
    path: String,
    /// The length of the fence file as last read.
    length: usize,
}

impl Fence {
    /// Locks the fence, waiting for it with `wait`; without, `None` when another holds it.
    pub(super) fn lock(place: &Place, wait: bool) -> Result<Option<Fence>, StoreError> {
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
    /// [`Token::Fresh`](crate::store::Token::Fresh) covers. A fence whose content is not a number is refused rather than
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
    pub(super) fn issue(&mut self, replaced: Option<u64>, floor: u64) -> Result<u64, StoreError> {
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
