//! Tests of the file store through its operations, as [`Store`](crate::store::Store) calls
//! them: exclusive create, conditional replace and delete, tokens, races between daemons,
//! symbolic links, the fence held elsewhere, and the temporary copies recovery removes.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::*;
use crate::store::FENCE_SUFFIX;

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
                    let mine: MakeLock = Box::new(move |_| format!("racer {racer}").into_bytes());
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

/// Issue 13: another user's 0600 lock file (the Go library's) is there but unreadable; the
/// read says so with the owner and mode, not "needs write access to the directory".
#[cfg(target_os = "linux")]
#[test]
fn a_lock_file_that_cannot_be_read_is_reported_with_its_owner_and_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = lock_path(&dir);
    fs::write(&path, b"{}").unwrap();
    // SAFETY: cannot fail.
    let me = unsafe { libc::geteuid() };
    let (owner, mode, reader) = if me == 0 {
        // Root reads every file: give the file to a third user, and read as `nobody` on this
        // thread only (the filesystem uid is per thread), as a daemon running as another user.
        std::os::unix::fs::chown(&path, Some(1), Some(1)).unwrap();
        (1, 0o600, 65534)
    } else {
        (me, 0o000, me)
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    if me == 0 {
        // SAFETY: changes this thread's filesystem uid only; restored below.
        unsafe { libc::setfsuid(reader) };
    }
    let read = Place::of(&path).and_then(|place| place.read_now(true));
    if me == 0 {
        // SAFETY: as above.
        unsafe { libc::setfsuid(0) };
    }
    let error = read.expect_err("an unreadable lock file is not read");
    let expected = crate::store::Unreadable {
        uid: owner,
        owner: sys::user_name(owner),
        mode,
        reader,
    };
    assert_eq!(
        error.unreadable,
        Some(expected.clone()),
        "{}",
        error.message
    );
    assert!(
        error.message.contains(&expected.to_string()),
        "{}",
        error.message
    );
    assert!(
        error.message.contains(&format!("mode {mode:04o}"))
            && error.message.contains("held by an unknown holder")
            && !error.message.contains("needs write access"),
        "{}",
        error.message
    );
}
