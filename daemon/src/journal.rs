//! The crash journal: which lock files this daemon may have written and not yet removed, so
//! that a daemon killed with SIGKILL cleans them up when it starts again instead of leaving
//! them to block everyone until their TTL runs out.
//!
//! One journal per daemon identity (host id and socket), in the state directory, held with an
//! exclusive OS lock for the daemon's life, so two daemons never share one, and readable by the
//! daemon's user only (mode 0600). Each line is a JSON object: `{"acquire": LOCK_ID, "target":
//! URL}` is written *before* the store write that may create a lock file with that id,
//! `{"release": LOCK_ID}` once that holding is over. Plain writes, no fsync: the journal has to
//! survive `kill -9`, not a power loss (after which the holders are gone too and the TTLs clean
//! up). Detached leases are not journaled: they belong to their uid, not to this daemon's life.
//!
//! A holding that can outlive the daemon (its session has resume credentials,
//! [`crate::link::resume`]) also names its session, the SHA-256 of the session's secret (never
//! the secret) and the holder's uid: what a restarted daemon checks a resume against. Once its
//! holder has been told that the lease is lost, `{"lost": LOCK_ID}` marks it, so that no restart
//! keeps or hands back a holding its holder already gave up. Daemons of earlier releases read
//! the acquire lines as before and skip the lost ones.
//!
//! A waiter that can ask for its place again after a restart (its session has resume
//! credentials) is journaled too: `{"wait": ORDINAL, "target": URL, ...}` with the same owner
//! fields when it queues, `{"waited": ORDINAL}` when it leaves the queue (granted, cancelled,
//! timed out, gone). A restarted daemon holds the places of the waits left open for their
//! sessions during the resume window ([`crate::lock::requeue`]).
//!
//! At startup every acquire without a release is looked at: if the target's lock file still
//! carries that lock id (and is not a detached lease), it is deleted, conditional on the version
//! read. Then the journal starts afresh.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::lockfile;
use crate::store::{Conditional, Stores};

/// Rewrite the file with only the open entries once it holds this many lines.
const COMPACT_AFTER: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    Acquire {
        acquire: String,
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_sha256: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
    },
    Release {
        release: String,
    },
    Lost {
        lost: String,
    },
    Wait {
        wait: u64,
        target: String,
        session: String,
        secret_sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
    },
    Waited {
        waited: u64,
    },
    /// A local holder of the joint entry `of` (a shared lock or semaphore, whose acquire line
    /// names the entry), with its own lock id, that its session may resume.
    Member {
        member: String,
        of: String,
        session: String,
        secret_sha256: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uid: Option<u32>,
    },
    /// That local holder let go (or was told it lost its share).
    MemberLeft {
        left: String,
        of: String,
    },
    /// The holding `cap` ends at its max-hold, at this wall-clock time (Unix milliseconds).
    Cap {
        cap: String,
        until_unix_ms: u64,
    },
}

/// A waiter of a previous run whose place is kept for its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftWait {
    /// Its place: the order in which waiters were queued, across restarts.
    pub ordinal: u64,
    /// The target it waits for.
    pub target: String,
    /// Who may ask for the place again.
    pub owner: Owner,
}

pub use crate::link::resume::Owner;

/// A holding a previous run left open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Left {
    /// The holding's lock id.
    pub lock_id: String,
    /// Its target.
    pub target: String,
    /// Who may resume it; `None` when nobody may (an older client, or a holding whose holder
    /// was already told it is lost).
    pub owner: Option<Owner>,
    /// For a shared lock or semaphore (`lock_id` is then this daemon's entry in the lock file):
    /// the local holders of the entry that their sessions may resume, each by its own lock id.
    pub members: Vec<JointMember>,
}

/// A local holder of a joint entry, journaled so that its session can resume its share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JointMember {
    /// The holder's own lock id (the one its grant named).
    pub lock_id: String,
    /// Who may resume it.
    pub owner: Owner,
}

/// Whether holdings of `target` live in this daemon's memory (`mem://`): they are kept in the
/// journal's table but never written to its file, since a crash ends them anyway; a planned
/// restart writes them out just before it replaces the process ([`Journal::hand_over_private`]).
fn private(target: &str) -> bool {
    target.starts_with("mem:")
}

/// An open holding as the journal keeps it.
#[derive(Clone, Debug)]
struct Open {
    target: String,
    owner: Option<Owner>,
    members: Vec<JointMember>,
}

/// The journal of one running daemon.
#[derive(Debug)]
pub struct Journal {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    path: PathBuf,
    open: HashMap<String, Open>,
    /// Open waits by ordinal: the target and who may ask for the place again.
    waits: HashMap<u64, (String, Owner)>,
    /// The max-hold deadline of open holdings that have one, Unix milliseconds.
    caps: HashMap<String, u64>,
    lines: usize,
}

/// The default state directory: `$STATE_DIRECTORY` under systemd, else `/var/lib/vfslock` for
/// root and `$XDG_STATE_HOME/vfslock` (or `~/.local/state/vfslock`) otherwise.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, colon-separated; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return PathBuf::from(first);
    }
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/vfslock");
        }
    }
    #[cfg(windows)]
    if let Some(dir) = std::env::var_os("LOCALAPPDATA").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("vfslock");
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("vfslock");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/vfslock")
}

/// A file name for the identity `host_id` + `socket`, stable across restarts.
fn journal_name(host_id: &str, socket: &Path) -> String {
    format!("journal-{}.jsonl", identity(host_id, socket))
}

/// The part of a state file's name that names the daemon identity `host_id` + `socket`: the
/// same in every process of that identity, different for any other. The files of one identity
/// ([`crate::restarts`] too) share it, so that they are found together.
pub fn identity(host_id: &str, socket: &Path) -> String {
    use std::hash::{Hash, Hasher};
    // A fixed hasher: the name must be the same in the next process.
    let mut hasher = FnvHasher(0xcbf2_9ce4_8422_2325);
    host_id.hash(&mut hasher);
    socket.hash(&mut hasher);
    let safe: String = host_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{safe}-{:016x}", hasher.finish())
}

/// FNV-1a: tiny, and stable across Rust versions, unlike `DefaultHasher`.
struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The state directory could not be created.
    #[error(
        "cannot create the state directory {} (set --state-dir or [daemon] state-dir)",
        dir.display()
    )]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The journal file could not be opened or created.
    #[error("cannot open {}", path.display())]
    Open {
        /// The journal file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon with the same identity holds the journal.
    #[error(
        "the journal {} is locked by another vfslockd with the same identity; give each \
         daemon its own --host-id or --socket",
        path.display()
    )]
    Locked {
        /// The journal file.
        path: PathBuf,
        /// What the lock call said.
        #[source]
        source: std::io::Error,
    },
}

impl Journal {
    /// Opens (creating it if needed) and locks the journal of this daemon identity. Returns the
    /// holdings a previous run left open.
    pub fn open(
        state_dir: &Path,
        host_id: &str,
        socket: &Path,
    ) -> Result<(Journal, Vec<Left>), JournalError> {
        std::fs::create_dir_all(state_dir).map_err(|source| JournalError::StateDir {
            dir: state_dir.into(),
            source,
        })?;
        let path = state_dir.join(journal_name(host_id, socket));
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let open_error = |source| JournalError::Open {
            path: path.clone(),
            source,
        };
        let mut file = options.open(&path).map_err(open_error)?;
        // A journal of an earlier release may have been created wider.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(open_error)?;
        }
        lock(&file).map_err(|source| JournalError::Locked {
            path: path.clone(),
            source,
        })?;
        let mut open: HashMap<String, Open> = HashMap::new();
        let mut waits: HashMap<u64, (String, Owner)> = HashMap::new();
        let mut caps: HashMap<String, u64> = HashMap::new();
        let _ = file.rewind();
        for line in BufReader::new(&file).lines() {
            // A torn last line (killed mid-write) is skipped; its store write never started.
            let Ok(line) = line else { break };
            match serde_json::from_str::<Entry>(&line) {
                Ok(Entry::Acquire {
                    acquire,
                    target,
                    session,
                    secret_sha256,
                    uid,
                }) => {
                    let owner = session
                        .zip(secret_sha256)
                        .map(|(session, secret_sha256)| Owner {
                            session,
                            secret_sha256,
                            uid,
                        });
                    let members = Vec::new();
                    open.insert(
                        acquire,
                        Open {
                            target,
                            owner,
                            members,
                        },
                    );
                }
                Ok(Entry::Release { release }) => {
                    open.remove(&release);
                }
                Ok(Entry::Lost { lost }) => {
                    if let Some(open) = open.get_mut(&lost) {
                        open.owner = None;
                        open.members.clear();
                    }
                }
                Ok(Entry::Member {
                    member,
                    of,
                    session,
                    secret_sha256,
                    uid,
                }) => {
                    if let Some(open) = open.get_mut(&of) {
                        open.members.retain(|m| m.lock_id != member);
                        open.members.push(JointMember {
                            lock_id: member,
                            owner: Owner {
                                session,
                                secret_sha256,
                                uid,
                            },
                        });
                    }
                }
                Ok(Entry::MemberLeft { left, of }) => {
                    if let Some(open) = open.get_mut(&of) {
                        open.members.retain(|m| m.lock_id != left);
                    }
                }
                Ok(Entry::Wait {
                    wait,
                    target,
                    session,
                    secret_sha256,
                    uid,
                }) => {
                    let owner = Owner {
                        session,
                        secret_sha256,
                        uid,
                    };
                    waits.insert(wait, (target, owner));
                }
                Ok(Entry::Waited { waited }) => {
                    waits.remove(&waited);
                }
                Ok(Entry::Cap { cap, until_unix_ms }) => {
                    caps.insert(cap, until_unix_ms);
                }
                Err(_) => {}
            }
        }
        let left = open
            .into_iter()
            .map(|(lock_id, open)| Left {
                lock_id,
                target: open.target,
                owner: open.owner,
                members: open.members,
            })
            .collect();
        Ok((
            Journal {
                inner: Mutex::new(Inner {
                    file,
                    path,
                    open: HashMap::new(),
                    waits,
                    caps,
                    lines: 0,
                }),
            },
            left,
        ))
    }

    /// Starts the journal afresh after recovery, keeping the holdings recovery could not settle
    /// (a store that failed), so that the next start tries them again, and those `kept` for
    /// their sessions to resume, with their owners, so that a second crash keeps them too.
    pub fn restart(&self, unsettled: &[(String, String)], kept: &[Left]) {
        let mut inner = self.inner.lock().expect("journal lock");
        let unsettled = unsettled.iter().map(|(lock_id, target)| {
            let open = Open {
                target: target.clone(),
                owner: None,
                members: Vec::new(),
            };
            (lock_id.clone(), open)
        });
        let kept = kept.iter().map(|left| {
            let open = Open {
                target: left.target.clone(),
                owner: left.owner.clone(),
                members: left.members.clone(),
            };
            (left.lock_id.clone(), open)
        });
        inner.open = unsettled.chain(kept).collect();
        let Inner { open, caps, .. } = &mut *inner;
        // A share's cap is under its own lock id, among its entry's members.
        caps.retain(|lock_id, _| {
            open.contains_key(lock_id)
                || open
                    .values()
                    .any(|o| o.members.iter().any(|m| &m.lock_id == lock_id))
        });
        inner.compact();
    }

    /// Records that the holding `lock_id` ends at its max-hold at `until`, so that a restart
    /// ends it then too.
    pub fn cap(&self, lock_id: &str, until: std::time::SystemTime) {
        let until_unix_ms = until
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        let mut inner = self.inner.lock().expect("journal lock");
        inner.caps.insert(lock_id.to_owned(), until_unix_ms);
        inner.append(&Entry::Cap {
            cap: lock_id.to_owned(),
            until_unix_ms,
        });
    }

    /// When the open holding `lock_id` reaches its max-hold, if it has one.
    pub fn cap_of(&self, lock_id: &str) -> Option<std::time::SystemTime> {
        let inner = self.inner.lock().expect("journal lock");
        let until = *inner.caps.get(lock_id)?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(until))
    }

    /// The waits a previous run left open, in the order they were queued.
    pub fn left_waits(&self) -> Vec<LeftWait> {
        let inner = self.inner.lock().expect("journal lock");
        let mut left: Vec<LeftWait> = inner
            .waits
            .iter()
            .map(|(ordinal, (target, owner))| LeftWait {
                ordinal: *ordinal,
                target: target.clone(),
                owner: owner.clone(),
            })
            .collect();
        left.sort_by_key(|wait| wait.ordinal);
        left
    }

    /// Forgets every open wait (a daemon that keeps no places: its resume window is zero).
    pub fn forget_waits(&self) {
        let mut inner = self.inner.lock().expect("journal lock");
        inner.waits.clear();
        inner.compact();
    }

    /// The journal file's size in bytes and how many holdings it keeps open, for the metrics.
    pub fn size(&self) -> (u64, usize) {
        let inner = self.inner.lock().expect("journal lock");
        let bytes = inner.file.metadata().map(|m| m.len()).unwrap_or(0);
        (bytes, inner.open.len())
    }

    /// Records that the waiter at `ordinal`, of a session that `owner` may resume, queues for
    /// `target` (again, with a new session's credentials, after a restart).
    pub fn wait(&self, ordinal: u64, target: &str, owner: Owner) {
        let mut inner = self.inner.lock().expect("journal lock");
        let entry = Entry::wait(ordinal, target, &owner);
        inner.waits.insert(ordinal, (target.to_owned(), owner));
        inner.append(&entry);
    }

    /// Records that the waiter at `ordinal` left the queue.
    pub fn waited(&self, ordinal: u64) {
        let mut inner = self.inner.lock().expect("journal lock");
        if inner.waits.remove(&ordinal).is_none() {
            return;
        }
        inner.append(&Entry::Waited { waited: ordinal });
    }

    /// Records that a lock file with `lock_id` may be written for `target`, by a holder that
    /// `owner` may resume after a restart.
    pub fn acquire(&self, lock_id: &str, target: &str, owner: Option<Owner>) {
        let mut inner = self.inner.lock().expect("journal lock");
        let entry = Entry::acquire(lock_id, target, owner.as_ref());
        // A joint entry journaled again (its first holder resumed) keeps its other members.
        let members = inner
            .open
            .remove(lock_id)
            .map(|open| open.members)
            .unwrap_or_default();
        inner.open.insert(
            lock_id.to_owned(),
            Open {
                target: target.to_owned(),
                owner,
                members,
            },
        );
        if !private(target) {
            inner.append(&entry);
        }
    }

    /// Records that `member` (its own lock id) holds a share of the joint entry `entry` (already
    /// journaled by [`Journal::acquire`]) for a session that `owner` may resume. Again with a
    /// new owner when another session resumes it.
    pub fn member(&self, entry: &str, member: &str, owner: Owner) {
        let mut inner = self.inner.lock().expect("journal lock");
        let Some(open) = inner.open.get_mut(entry) else {
            return;
        };
        open.members.retain(|m| m.lock_id != member);
        open.members.push(JointMember {
            lock_id: member.to_owned(),
            owner: owner.clone(),
        });
        if !private(&open.target) {
            let line = Entry::member(entry, member, &owner);
            inner.append(&line);
        }
    }

    /// Records that `member` no longer holds a share of `entry` (it let go, or is being told
    /// that it lost it): no restart keeps that share.
    pub fn member_left(&self, entry: &str, member: &str) {
        let mut inner = self.inner.lock().expect("journal lock");
        inner.caps.remove(member);
        let Some(open) = inner.open.get_mut(entry) else {
            return;
        };
        let before = open.members.len();
        open.members.retain(|m| m.lock_id != member);
        if open.members.len() == before || private(&open.target) {
            return;
        }
        inner.append(&Entry::MemberLeft {
            left: member.to_owned(),
            of: entry.to_owned(),
        });
    }

    /// Where a planned restart leaves the `mem://` store's contents for the next image: beside
    /// the journal, for this daemon identity alone.
    pub fn memory_path(&self) -> PathBuf {
        let inner = self.inner.lock().expect("journal lock");
        inner.path.with_extension("memory.json")
    }

    /// Writes the holdings kept only in memory (`mem://`, see [`private`]) to the file, for the
    /// next image of a planned restart, which also gets the memory store's contents. Returns
    /// how many holdings were written.
    pub fn hand_over_private(&self) -> usize {
        let mut inner = self.inner.lock().expect("journal lock");
        let mut lines = Vec::new();
        for (lock_id, open) in inner.open.iter().filter(|(_, o)| private(&o.target)) {
            lines.push(Entry::acquire(lock_id, &open.target, open.owner.as_ref()));
            for member in &open.members {
                lines.push(Entry::member(lock_id, &member.lock_id, &member.owner));
            }
        }
        let holdings = inner.open.values().filter(|o| private(&o.target)).count();
        // One write, and no compaction after it: a compaction keeps no `mem://` holding.
        let mut text = Vec::new();
        for line in &lines {
            text.extend(serde_json::to_vec(line).expect("entries serialize"));
            text.push(b'\n');
        }
        if let Err(e) = inner.file.write_all(&text) {
            tracing::error!(journal = %inner.path.display(), error = %e, "cannot write the mem:// holdings to the journal; they are lost at the planned restart");
        }
        inner.lines += lines.len();
        holdings
    }

    /// Records that the holder of `lock_id` was told its lease is lost: no restart may keep
    /// the holding for it any more. The entry stays open until its lock file is settled.
    pub fn lost(&self, lock_id: &str) {
        let mut inner = self.inner.lock().expect("journal lock");
        match inner.open.get_mut(lock_id) {
            Some(open) if open.owner.is_some() || !open.members.is_empty() => {
                open.owner = None;
                open.members.clear();
                if private(&open.target) {
                    return;
                }
            }
            _ => return,
        }
        inner.append(&Entry::Lost {
            lost: lock_id.to_owned(),
        });
    }

    /// Records that the holding `lock_id` is over (its file removed, taken over, or never won).
    pub fn release(&self, lock_id: &str) {
        let mut inner = self.inner.lock().expect("journal lock");
        inner.caps.remove(lock_id);
        let open = inner.open.remove(lock_id);
        for member in open.iter().flat_map(|open| &open.members) {
            inner.caps.remove(&member.lock_id);
        }
        match open {
            Some(open) if !private(&open.target) => {}
            _ => return,
        }
        inner.append(&Entry::Release {
            release: lock_id.to_owned(),
        });
    }
}

impl Journal {
    /// Settles the open holdings of `target` after the actor that served it failed: each lock
    /// file still carrying one of their lock ids is deleted, conditional on the version read,
    /// as at startup ([`recover`]). Returns how many were deleted and how many could not be
    /// settled (the store failed: those stay in the journal for the next start).
    pub async fn recover_target(&self, stores: &Stores, target: &str) -> (usize, usize) {
        let left: Vec<(String, String)> = {
            let inner = self.inner.lock().expect("journal lock");
            inner
                .open
                .iter()
                .filter(|(_, open)| open.target == target)
                .map(|(id, open)| (id.clone(), open.target.clone()))
                .collect()
        };
        let (removed, unsettled) = recover(stores, left.clone()).await;
        for (lock_id, _) in &left {
            if !unsettled.iter().any(|(id, _)| id == lock_id) {
                self.release(lock_id);
            }
        }
        (removed, unsettled.len())
    }
}

impl Entry {
    fn wait(ordinal: u64, target: &str, owner: &Owner) -> Entry {
        Entry::Wait {
            wait: ordinal,
            target: target.to_owned(),
            session: owner.session.clone(),
            secret_sha256: owner.secret_sha256.clone(),
            uid: owner.uid,
        }
    }

    fn acquire(lock_id: &str, target: &str, owner: Option<&Owner>) -> Entry {
        Entry::Acquire {
            acquire: lock_id.to_owned(),
            target: target.to_owned(),
            session: owner.map(|o| o.session.clone()),
            secret_sha256: owner.map(|o| o.secret_sha256.clone()),
            uid: owner.and_then(|o| o.uid),
        }
    }

    fn member(entry: &str, member: &str, owner: &Owner) -> Entry {
        Entry::Member {
            member: member.to_owned(),
            of: entry.to_owned(),
            session: owner.session.clone(),
            secret_sha256: owner.secret_sha256.clone(),
            uid: owner.uid,
        }
    }
}

impl Inner {
    fn append(&mut self, entry: &Entry) {
        let mut line = serde_json::to_vec(entry).expect("entries serialize");
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line) {
            tracing::error!(journal = %self.path.display(), error = %e, "cannot write the crash journal; a crash now leaves lock files until their TTL");
        }
        self.lines += 1;
        if self.lines >= COMPACT_AFTER && self.lines >= (self.open.len() + self.waits.len()) * 4 {
            self.compact();
        }
    }

    /// Rewrites the journal with only the open holdings and waits.
    fn compact(&mut self) {
        let mut text = Vec::new();
        for (lock_id, open) in self.open.iter().filter(|(_, o)| !private(&o.target)) {
            let entry = Entry::acquire(lock_id, &open.target, open.owner.as_ref());
            text.extend(serde_json::to_vec(&entry).expect("entries serialize"));
            text.push(b'\n');
            for member in &open.members {
                let line = Entry::member(lock_id, &member.lock_id, &member.owner);
                text.extend(serde_json::to_vec(&line).expect("entries serialize"));
                text.push(b'\n');
            }
            let capped = std::iter::once(lock_id).chain(open.members.iter().map(|m| &m.lock_id));
            for capped in capped {
                if let Some(until_unix_ms) = self.caps.get(capped) {
                    let line = Entry::Cap {
                        cap: capped.clone(),
                        until_unix_ms: *until_unix_ms,
                    };
                    text.extend(serde_json::to_vec(&line).expect("entries serialize"));
                    text.push(b'\n');
                }
            }
        }
        for (ordinal, (target, owner)) in &self.waits {
            let entry = Entry::wait(*ordinal, target, owner);
            text.extend(serde_json::to_vec(&entry).expect("entries serialize"));
            text.push(b'\n');
        }
        // Append mode writes at the end whatever the offset, so truncating first is enough.
        if self.file.set_len(0).is_ok() && self.file.write_all(&text).is_ok() {
            self.lines = self.open.len() + self.waits.len();
        }
    }
}

/// Writes `bytes` to `path` readable by the daemon's user only (mode 0600), through a
/// temporary file renamed into place.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temporary);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn lock(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: valid descriptor for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Removes the lock files a previous run of this daemon left behind: each still carrying its
/// lock id (and not a detached lease) is deleted, conditional on the version read, and so is
/// any temporary copy carrying it that a write cut short left beside it. Returns how many lock
/// files were removed, and the holdings that could not be settled (the store failed).
pub async fn recover(
    stores: &Stores,
    left: Vec<(String, String)>,
) -> (usize, Vec<(String, String)>) {
    let mut removed = 0;
    let mut unsettled = Vec::new();
    for (lock_id, target) in left {
        let Ok(address) = Address::parse(&target) else {
            continue;
        };
        let Some(store) = stores.for_address(&address) else {
            tracing::warn!(%target, "the journal names a target no store serves now; left alone");
            continue;
        };
        let path = crate::store::lock_path(&address);
        // A copy written under a temporary name and never moved into place (killed in
        // between) is never read as a lock, but nothing else would remove it.
        let temporaries = store.remove_temporaries(&path, &lock_id).await;
        if temporaries > 0 {
            tracing::info!(%target, temporaries, "removed temporary copies of a lock file left by the previous run");
        }
        let observed = match store.read(&path).await {
            Ok(Some(observed)) => observed,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%target, error = %e, "cannot check a lock file left by the previous run");
                unsettled.push((lock_id, target));
                continue;
            }
        };
        if let Some(mut joint) = lockfile::joint::Joint::parse(&observed.bytes) {
            // A shared lock or semaphore: only our entry goes, the other holders stay.
            if !joint.remove(&lock_id) {
                continue;
            }
            let outcome = if joint.holders.is_empty() {
                store
                    .delete(&path, &observed.version())
                    .await
                    .map(|c| c == Conditional::Done)
            } else {
                // A fresh file id without the daemon's id source (the context sits above the
                // journal): the entry's own id, which no other write uses, and the time.
                let now = std::time::SystemTime::now();
                let file_id = format!("{lock_id}-recovered-{}", lockfile::unix_ns(now));
                let make: crate::store::MakeLock =
                    Box::new(move |_| joint.to_json(&file_id, "", now));
                store
                    .replace(&path, &observed.version(), crate::store::Token::Keep, make)
                    .await
                    .map(|r| matches!(r, crate::store::Replaced::Done(_)))
            };
            match outcome {
                Ok(true) => removed += 1,
                // Rewritten meanwhile by another holder: our entry expires with its lease.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(%target, error = %e, "cannot remove an entry of a shared lock left by the previous run");
                    unsettled.push((lock_id, target));
                }
            }
            continue;
        }
        let parsed = lockfile::parse(&observed.bytes);
        if parsed.lock_id.as_deref() != Some(lock_id.as_str()) || parsed.detached {
            continue;
        }
        match store.delete(&path, &observed.version()).await {
            Ok(Conditional::Done) => removed += 1,
            Ok(Conditional::Changed) => {}
            Err(e) => {
                tracing::warn!(%target, error = %e, "cannot remove a lock file left by the previous run");
                unsettled.push((lock_id, target));
            }
        }
    }
    (removed, unsettled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_holdings_survive_a_reopen_and_released_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        {
            let (journal, left) = Journal::open(dir.path(), "h1", socket).unwrap();
            assert!(left.is_empty());
            journal.acquire("a", "file:///x", None);
            journal.acquire("b", "file:///y", None);
            journal.release("a");
            // A second daemon with the same identity is refused while this one lives.
            let err = Journal::open(dir.path(), "h1", socket).unwrap_err();
            assert!(
                err.to_string().contains("locked by another vfslockd"),
                "{err}"
            );
            // Another identity gets its own journal.
            Journal::open(dir.path(), "h2", socket).unwrap();
        }
        let (journal, left) = Journal::open(dir.path(), "h1", socket).unwrap();
        assert_eq!(
            left,
            vec![Left {
                lock_id: "b".into(),
                target: "file:///y".into(),
                owner: None,
                members: vec![],
            }]
        );
        journal.restart(&[], &[]);
        drop(journal);
        let (_journal, left) = Journal::open(dir.path(), "h1", socket).unwrap();
        assert!(left.is_empty(), "the journal starts afresh after recovery");
    }

    #[test]
    fn compaction_keeps_exactly_the_open_holdings() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.acquire("kept", "file:///k", Some(owner("s1", "h1")));
            journal.acquire("lost", "file:///l", Some(owner("s1", "h1")));
            journal.lost("lost");
            for i in 0..COMPACT_AFTER {
                journal.acquire(&format!("t{i}"), "file:///t", None);
                journal.release(&format!("t{i}"));
            }
            let size = std::fs::metadata(&journal.inner.lock().unwrap().path)
                .unwrap()
                .len();
            assert!(size < 200_000, "compacted: {size} bytes");
        }
        let (_journal, mut left) = Journal::open(dir.path(), "h", socket).unwrap();
        left.sort_by(|a, b| a.lock_id.cmp(&b.lock_id));
        let kept = Left {
            lock_id: "kept".into(),
            target: "file:///k".into(),
            owner: Some(owner("s1", "h1")),
            members: vec![],
        };
        // A lost holding stays open (its file is still to be settled) but nobody may resume it.
        let lost = Left {
            lock_id: "lost".into(),
            target: "file:///l".into(),
            owner: None,
            members: vec![],
        };
        assert_eq!(left, vec![kept, lost]);
    }

    /// Waiters' places outlive the process until their waiter leaves; compaction and a restart
    /// keep the open ones, in order, and a daemon that keeps no places forgets them.
    #[test]
    fn open_waits_survive_a_reopen_in_order_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.wait(7, "mem:///q", owner("s1", "h1"));
            journal.wait(3, "mem:///q", owner("s2", "h2"));
            journal.wait(5, "mem:///r", owner("s3", "h3"));
            journal.waited(5);
            for i in 0..COMPACT_AFTER as u64 {
                journal.wait(100 + i, "mem:///t", owner("s", "h"));
                journal.waited(100 + i);
            }
        }
        let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
        journal.restart(&[], &[]);
        let left = journal.left_waits();
        let expected = vec![
            LeftWait {
                ordinal: 3,
                target: "mem:///q".into(),
                owner: owner("s2", "h2"),
            },
            LeftWait {
                ordinal: 7,
                target: "mem:///q".into(),
                owner: owner("s1", "h1"),
            },
        ];
        assert_eq!(left, expected);
        journal.forget_waits();
        drop(journal);
        let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
        assert!(journal.left_waits().is_empty());
    }

    /// A holding's max-hold deadline outlives the process with the holding, to the
    /// millisecond, and goes with it.
    #[test]
    fn a_max_hold_deadline_is_kept_with_its_holding() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        let until = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_123);
        {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.acquire("capped", "file:///data/a", Some(owner("s1", "h1")));
            journal.cap("capped", until);
            journal.acquire("gone", "file:///data/b", Some(owner("s1", "h1")));
            journal.cap("gone", until);
            journal.release("gone");
            assert_eq!(journal.cap_of("gone"), None);
        }
        let (journal, left) = Journal::open(dir.path(), "h", socket).unwrap();
        journal.restart(&[], &left);
        assert_eq!(journal.cap_of("capped"), Some(until));
        drop(journal);
        // Compacted by the restart, and still there.
        let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
        assert_eq!(journal.cap_of("capped"), Some(until));
        assert_eq!(journal.cap_of("gone"), None);
    }

    fn owner(session: &str, hash: &str) -> Owner {
        Owner {
            session: session.into(),
            secret_sha256: hash.into(),
            uid: Some(1000),
        }
    }

    /// What a resume is checked against outlives the process; the secret itself is never
    /// written, and only the daemon's user can read the file.
    #[test]
    fn a_resumable_holding_keeps_its_owner_and_only_the_hash_of_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        let issued = crate::link::SessionSecret::issue("run", 1);
        let secret = issued.ticket(std::time::Duration::ZERO).secret.0;
        let mine = Owner {
            session: issued.session.clone(),
            secret_sha256: issued.hash.clone(),
            uid: Some(1000),
        };
        let path = {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.acquire("r", "file:///data/a", Some(mine.clone()));
            journal.acquire("gone", "file:///data/b", Some(mine.clone()));
            journal.lost("gone");
            // Told lost twice (a loss, then the failed delete's retry): one line.
            journal.lost("gone");
            let path = journal.inner.lock().unwrap().path.clone();
            path
        };
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&issued.hash), "{text}");
        assert!(!text.contains(&secret), "the secret was written: {text}");
        assert_eq!(text.matches("\"lost\"").count(), 1, "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "journal mode {mode:o}");
            // One created wider by an earlier release is narrowed when opened.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let (_journal, mut left) = Journal::open(dir.path(), "h", socket).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "journal mode {mode:o} after reopening");
        }
        left.sort_by(|a, b| a.lock_id.cmp(&b.lock_id));
        assert_eq!(left[0].lock_id, "gone");
        assert_eq!(left[0].owner, None, "a lost holding is never resumed");
        assert_eq!(left[1].owner, Some(mine.clone()));
        assert!(crate::link::resume::proves(
            &secret,
            &left[1].owner.as_ref().unwrap().secret_sha256
        ));
    }

    /// A holding kept for its session across a restart stays journaled with its owner, so
    /// that a second crash within the window keeps it again.
    #[test]
    fn a_kept_holding_stays_journaled_with_its_owner_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.acquire("kept", "file:///k", Some(owner("s", "h")));
            journal.acquire("settled", "file:///s", Some(owner("s", "h")));
        }
        let (journal, left) = Journal::open(dir.path(), "h", socket).unwrap();
        let kept: Vec<Left> = left.into_iter().filter(|l| l.lock_id == "kept").collect();
        journal.restart(&[("unsettled".into(), "file:///u".into())], &kept);
        drop(journal);
        let (_journal, mut left) = Journal::open(dir.path(), "h", socket).unwrap();
        left.sort_by(|a, b| a.lock_id.cmp(&b.lock_id));
        assert_eq!(
            left,
            vec![
                Left {
                    lock_id: "kept".into(),
                    target: "file:///k".into(),
                    owner: Some(owner("s", "h")),
                    members: vec![],
                },
                Left {
                    lock_id: "unsettled".into(),
                    target: "file:///u".into(),
                    owner: None,
                    members: vec![],
                },
            ]
        );
    }

    /// Daemons of the previous release share the journal's directory layout across an upgrade
    /// or a downgrade: each reads what the other wrote.
    #[test]
    fn journals_of_earlier_and_later_releases_read_each_other() {
        // The previous release's entries, as it wrote and read them.
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Earlier {
            Acquire { acquire: String, target: String },
            Release { release: String },
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        let path = {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.acquire("new", "file:///data/a", Some(owner("s", "h")));
            journal.acquire("gone", "file:///data/b", Some(owner("s", "h")));
            journal.lost("gone");
            let path = journal.inner.lock().unwrap().path.clone();
            path
        };
        let text = std::fs::read_to_string(&path).unwrap();
        let earlier: Vec<String> = text
            .lines()
            .filter_map(|line| match serde_json::from_str::<Earlier>(line) {
                Ok(Earlier::Acquire { acquire, .. }) => Some(acquire),
                _ => None,
            })
            .collect();
        assert_eq!(earlier, ["new", "gone"], "an earlier release settles both");
        // And a journal an earlier release left is read as holdings nobody may resume.
        let old = serde_json::to_string(&Earlier::Acquire {
            acquire: "old".into(),
            target: "file:///data/c".into(),
        })
        .unwrap();
        std::fs::write(&path, format!("{old}\n")).unwrap();
        let (_journal, left) = Journal::open(dir.path(), "h", socket).unwrap();
        assert_eq!(
            left,
            vec![Left {
                lock_id: "old".into(),
                target: "file:///data/c".into(),
                owner: None,
                members: vec![],
            }]
        );
    }

    /// Each local holder of a joint entry is journaled under the entry with its own owner, and
    /// survives a reopen, a compaction and a restart; one that left, or an entry told lost, is
    /// not kept. `mem://` holdings stay out of the file until a planned restart hands them over.
    #[test]
    fn joint_members_and_private_holdings() {
        let dir = tempfile::tempdir().unwrap();
        let socket = Path::new("/run/test.sock");
        let member = |id: &str, session: &str| JointMember {
            lock_id: id.into(),
            owner: owner(session, "h"),
        };
        {
            let (journal, _) = Journal::open(dir.path(), "h", socket).unwrap();
            journal.acquire("e", "file:///s", Some(owner("s1", "h")));
            journal.member("e", "e", owner("s1", "h"));
            journal.member("e", "m2", owner("s2", "h"));
            journal.member("e", "m3", owner("s3", "h"));
            journal.member_left("e", "m3");
            journal.acquire("gone", "file:///g", None);
            journal.member("gone", "g1", owner("s1", "h"));
            journal.lost("gone");
            journal.acquire("mem", "mem:///m", Some(owner("s1", "h")));
            journal.member("mem", "mem", owner("s1", "h"));
            journal.acquire("mem-released", "mem:///r", Some(owner("s1", "h")));
            journal.release("mem-released");
            let text = std::fs::read_to_string(journal.inner.lock().unwrap().path.clone()).unwrap();
            assert!(!text.contains("mem:"), "{text}");
        }
        let (journal, mut left) = Journal::open(dir.path(), "h", socket).unwrap();
        left.sort_by(|a, b| a.lock_id.cmp(&b.lock_id));
        let ids: Vec<&str> = left.iter().map(|l| l.lock_id.as_str()).collect();
        assert_eq!(ids, ["e", "gone"], "a crash forgets mem:// holdings");
        assert_eq!(left[0].members, vec![member("e", "s1"), member("m2", "s2")]);
        assert!(left[1].members.is_empty() && left[1].owner.is_none());
        journal.restart(&[], &left[..1]);
        journal.acquire("mem", "mem:///m", None);
        journal.member("mem", "mem", owner("s1", "h"));
        assert_eq!(journal.hand_over_private(), 1);
        drop(journal);
        let (_journal, mut left) = Journal::open(dir.path(), "h", socket).unwrap();
        left.sort_by(|a, b| a.lock_id.cmp(&b.lock_id));
        assert_eq!(left.len(), 2);
        assert_eq!(left[0].members, vec![member("e", "s1"), member("m2", "s2")]);
        assert_eq!(left[1].lock_id, "mem");
        assert_eq!(left[1].target, "mem:///m");
        assert_eq!(left[1].members, vec![member("mem", "s1")]);
    }

    /// The `mem://` store's copy for the next image is readable by the daemon's user only.
    #[cfg(unix)]
    #[test]
    fn the_memory_copy_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), "h", Path::new("/run/test.sock")).unwrap();
        let path = journal.memory_path();
        assert_eq!(path.parent(), Some(dir.path()));
        write_private(&path, b"{}").unwrap();
        write_private(&path, b"{\"slots\":[]}").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"slots\":[]}");
    }
}
