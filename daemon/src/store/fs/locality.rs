//! Where the filesystem calls run: inline when a lock file's directory is known to be on a
//! local filesystem, otherwise on Tokio's blocking pool, which also learns the directory's
//! filesystem type (see "Where the calls run" in the module doc of [`fs`](super)). The table
//! of what was learned lives here too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::store::StoreError;

/// Runs `work` on the lock file at `path`: inline when its directory is known to be on a local
/// filesystem and `work(false)` finishes without waiting (it returns `None` when it would have
/// to wait for a fence, having changed nothing); otherwise on the blocking pool, where
/// `work(true)` may wait, and where the directory's filesystem type is learned.
pub(super) async fn run<T: Send + 'static>(
    path: &str,
    work: impl Fn(bool) -> Result<Option<T>, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let dir = Path::new(path)
        .parent()
        .unwrap_or(Path::new("/"))
        .to_owned();
    if is_local(&dir) {
        if let Some(done) = work(false)? {
            return Ok(done);
        }
    }
    tokio::task::spawn_blocking(move || {
        learn(&dir);
        work(true).map(|done| done.expect("an operation allowed to wait completes"))
    })
    .await
    .map_err(|e| StoreError::new(format!("filesystem call failed: {e}")))?
}

/// Runs `work` (filesystem reads for a `file://` target in `dir`, such as resolving its
/// directory) inline when `dir` is known to be local, else on the blocking pool.
pub async fn run_in<T: Send + 'static>(dir: &Path, work: impl FnOnce() -> T + Send + 'static) -> T {
    if is_local(dir) {
        return work();
    }
    let dir = dir.to_owned();
    match tokio::task::spawn_blocking(move || {
        let done = work();
        learn(&dir);
        done
    })
    .await
    {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// More directories than this and the table starts afresh: forgetting only costs a trip
/// through the blocking pool.
const CAPACITY: usize = 4096;

fn known() -> &'static Mutex<HashMap<PathBuf, bool>> {
    static KNOWN: OnceLock<Mutex<HashMap<PathBuf, bool>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

/// Whether `dir` was seen on a local filesystem.
fn is_local(dir: &Path) -> bool {
    known()
        .lock()
        .expect("locality table")
        .get(dir)
        .copied()
        .unwrap_or(false)
}

/// Looks up `dir`'s filesystem type (blocking: call on the blocking pool).
fn learn(dir: &Path) {
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
