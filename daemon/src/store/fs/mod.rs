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
//!
//! # Layout
//!
//! - `mod.rs`: [`FsStore`] and the operations [`Store`](super::Store) calls on it, each one a
//!   closure that `locality.rs` runs inline or on the blocking pool;
//! - `locality.rs`: where the calls run, and which directories are known to be local;
//! - `sys.rs`: the syscall helpers, among them opening a directory without following a link;
//! - `place.rs`: a lock file's directory and name, and the whole-file writes made there;
//! - `fence.rs`: the OS lock on `<lock>.fence` and the token counter inside it.

mod fence;
mod locality;
mod place;
mod sys;
#[cfg(test)]
mod tests;

pub use fence::with_fence;
pub use locality::run_in;
pub use sys::reached_without_links;

use std::io::{self, Write};
use std::path::Path;

use fence::Fence;
use locality::run;
use place::Place;
use sys::read_small;

use super::{
    token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token, Version,
    Written, WAITING_SUFFIX,
};

/// The local filesystem store. Stateless: paths are absolute.
#[derive(Debug, Clone, Copy)]
pub struct FsStore;

/// A failed call on the lock file at `path` as an error that says what to do about it (the
/// directory must exist, be writable, hold no symbolic link). Shared by the files below.
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

impl FsStore {
    /// Writes `waiter` into `<lock>.waiting`, which also sets its last-modified time to now.
    pub(in crate::store) async fn mark_waiting(
        &self,
        path: &str,
        mark: Vec<u8>,
    ) -> Result<(), StoreError> {
        let (path, waiter) = (path.to_owned(), mark);
        run(&path.clone(), move |_| {
            let place = Place::of(&path)?;
            let mut file = place
                .open(
                    &place.beside(WAITING_SUFFIX),
                    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                )
                .map_err(|e| describe("mark a waiter beside", &path, &e))?;
            file.write_all(&waiter)
                .map_err(|e| describe("mark a waiter beside", &path, &e))?;
            Ok(Some(()))
        })
        .await
    }

    /// Whether `<lock>.waiting` names a daemon other than `me` and was written within `within`.
    /// Unreadable counts as yes: fairness to other hosts is the safe side.
    pub(in crate::store) async fn others_waiting(
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
            let who = crate::store::waiting::Mark::decode(&who).daemon;
            Ok(Some(fresh && who != me))
        })
        .await;
        answer.unwrap_or(true)
    }

    /// The bytes of `<lock>.waiting`; `None` when there is none.
    pub(in crate::store) async fn read_mark(
        &self,
        path: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let path = path.to_owned();
        run(&path.clone(), move |_| {
            let place = Place::of(&path)?;
            let mut file = match place.open(&place.beside(WAITING_SUFFIX), libc::O_RDONLY) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(None)),
                Err(e) => return Err(describe("read the waiter mark beside", &path, &e)),
            };
            let bytes = read_small(&mut file).map_err(|e| describe("read", &path, &e))?;
            Ok(Some(Some(bytes)))
        })
        .await
    }

    pub(in crate::store) async fn create(
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

    pub(in crate::store) async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        let path = path.to_owned();
        run(&path.clone(), move |_| match Place::of(&path) {
            Ok(place) => place.read_now(true).map(Some),
            // No directory, no lock file; other failures are errors.
            Err(_) if !Path::new(&path).parent().is_some_and(Path::exists) => Ok(Some(None)),
            Err(e) => Err(e),
        })
        .await
    }

    pub(in crate::store) async fn replace(
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

    pub(in crate::store) async fn delete(
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
    pub(in crate::store) async fn remove_temporaries(
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
