//! Lock files in object stores (S3, GCS, Azure Blob) and on SFTP servers, through OpenDAL.
//!
//! # Compare-and-swap
//!
//! - create: `write_with(..).if_not_exists(true)` (`If-None-Match: *`, GCS `ifGenerationMatch=0`).
//! - replace: `write_with(..).if_match(etag)`, on GCS `if_version_match(generation)`.
//! - delete: `delete_with(..).if_match(etag)` / `if_version_match(generation)`.
//!
//! Every lock body carries a unique `lockId`, so an ETag (the MD5 of the body on S3) never
//! names two holdings (no ABA). No OpenDAL retry layer is used: a retried conditional write
//! whose first attempt landed would report "condition not met" for our own success. Instead a
//! conditional write that failed in transit, timed out or answered a server error is
//! *ambiguous*, and is resolved by reading the object back and comparing it with what we sent.
//!
//! # Fencing tokens
//!
//! The counter lives in a companion object `<lock key>.fence` (body and user metadata
//! `vfslocktoken`: the last token committed). A token is committed only once the lock is won,
//! by a conditional write on the fence's version read before the lock was created: a holder
//! can thus never hand out a token smaller than a holder before it, and if the commit finds the
//! fence moved on, a larger token is issued and the (still ours) lock file rewritten with it
//! before the client hears of the grant.
//!
//! # SFTP: create-only
//!
//! SFTP creates exclusively (`SSH_FXF_EXCL`) but has no compare-and-swap. It runs in a
//! create-only mode: acquire, renewal and release (read, compare `lockId`, delete) work because
//! only the holder ever writes an existing lock file; stealing, handoff and fencing tokens are
//! refused, since each would need an atomic check-and-replace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opendal::{ErrorKind, Metadata, Operator};

use super::{
    next_token, token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token,
    Version, Written,
};

/// The object-store services vfslock speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Amazon S3 and compatible stores.
    S3,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azblob,
    /// An SFTP server (create-only mode).
    Sftp,
}

impl Service {
    /// Whether versions are generations (GCS) rather than ETags.
    fn uses_generations(self) -> bool {
        self == Service::Gcs
    }

    /// HTTP requests (or SFTP round trips) one conditional create costs: GCS's is a resumable
    /// upload (start, then upload).
    fn create_requests(self) -> u64 {
        if self == Service::Gcs {
            2
        } else {
            1
        }
    }
}

/// Which guarantees a store was found to give by its startup probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Conditional create, overwrite and delete all enforced: steals, handoff and fencing.
    Full,
    /// Only exclusive create (SFTP): no steals, handoff or tokens.
    CreateOnly,
    /// The probe found a missing capability and the config accepted it: conditions are still
    /// sent but the server may not enforce them, so mutual exclusion is not guaranteed.
    Weak(String),
}

/// Store requests made, by operation, and what they cost the network.
#[derive(Debug, Default)]
pub struct Counters {
    /// Conditional creates of lock files.
    pub creates: AtomicU64,
    /// Reads of lock files (stat and body).
    pub reads: AtomicU64,
    /// Conditional overwrites of lock files (renewal, steal, handoff).
    pub replaces: AtomicU64,
    /// Conditional deletes of lock files.
    pub deletes: AtomicU64,
    /// Reads and commits of fence (token counter) objects.
    pub fences: AtomicU64,
    /// Ambiguous writes resolved by reading back.
    pub ambiguous: AtomicU64,
    /// HTTP requests (SFTP round trips) in all.
    pub requests: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as name/value pairs, for `vfslockctl status`.
    fn snapshot(&self) -> Vec<(String, u64)> {
        [
            ("creates", &self.creates),
            ("reads", &self.reads),
            ("replaces", &self.replaces),
            ("deletes", &self.deletes),
            ("fences", &self.fences),
            ("ambiguous", &self.ambiguous),
            ("requests", &self.requests),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.load(Ordering::Relaxed)))
        .collect()
    }
}

/// One object store (or SFTP server) serving a URL prefix.
#[derive(Debug)]
pub struct ObjectStore {
    operator: Operator,
    service: Service,
    mode: Mode,
    fencing: bool,
    request_timeout: Duration,
    /// Requests made, shown by `vfslockctl status`.
    pub counters: Counters,
    /// The fence version and counter this daemon last committed, per lock key: the expected
    /// version of the next commit, which saves reading the fence first. If another daemon
    /// committed since, the commit's compare-and-swap fails and the fence is read afresh.
    fences: std::sync::Mutex<std::collections::HashMap<String, (Option<Version>, u64)>>,
    #[cfg(feature = "faults")]
    faults: Option<super::faults::Faults>,
}

/// A write whose outcome the store did not tell us.
enum Put {
    Written(Option<String>),
    Refused,
}

/// User-metadata name of the counter; Azure allows only C# identifiers there.
const TOKEN_METADATA: &str = "vfslocktoken";
const FENCE_SUFFIX: &str = super::FENCE_SUFFIX;
const ATTEMPTS: usize = 4;

fn failed(action: &str, key: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::new(format!("cannot {action} {key}: {e}"))
}

/// Whether an error says the condition was not met (someone else's version is there).
fn lost_condition(e: &opendal::Error) -> bool {
    // Real S3 may answer a lost race with 409 ConditionalRequestConflict, which OpenDAL reports
    // as a temporary `Conflict`: it means this request did not apply.
    matches!(e.kind(), ErrorKind::ConditionNotMatch | ErrorKind::Conflict)
}

fn jittered(attempt: usize) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let base = Duration::from_millis(20) * (1 << attempt.min(6)) as u32;
    base.mul_f64(0.5 + f64::from(byte[0]) / 255.0)
}

impl ObjectStore {
    /// A store over `operator`; `probe` it before use.
    pub fn new(
        operator: Operator,
        service: Service,
        fencing: bool,
        request_timeout: Duration,
    ) -> Self {
        ObjectStore {
            operator,
            service,
            mode: if service == Service::Sftp {
                Mode::CreateOnly
            } else {
                Mode::Full
            },
            fencing: fencing && service != Service::Sftp,
            request_timeout,
            counters: Counters::default(),
            fences: Default::default(),
            #[cfg(feature = "faults")]
            faults: None,
        }
    }

    /// Injects faults (tests only).
    #[cfg(feature = "faults")]
    pub fn with_faults(mut self, faults: super::faults::Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// The guarantees in force.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// The request counters (and, with the `faults` feature, faults injected), for
    /// `vfslockctl status`.
    pub fn counter_snapshot(&self) -> Vec<(String, u64)> {
        #[allow(unused_mut)]
        let mut counters = self.counters.snapshot();
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            counters.push((
                "injected".to_owned(),
                faults.injected.load(Ordering::Relaxed),
            ));
        }
        counters
    }

    /// Whether fresh fencing tokens are issued.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    /// Whether a lock file can be replaced conditionally (steal, handoff).
    pub fn can_replace(&self) -> bool {
        self.mode != Mode::CreateOnly
    }

    fn tag_of(&self, meta: &Metadata) -> Option<String> {
        if self.service.uses_generations() {
            meta.version().map(str::to_owned)
        } else {
            meta.etag().map(str::to_owned)
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        key: &str,
        call: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<opendal::Result<T>, StoreError> {
        tokio::time::timeout(self.request_timeout, call.into_future())
            .await
            .map_err(|_| {
                StoreError::new(format!(
                    "{what} {key}: the store did not answer within {:?}",
                    self.request_timeout
                ))
            })
    }

    /// Metadata of `key`, `None` if absent; transient failures retried with jittered backoff.
    async fn stat(&self, key: &str) -> Result<Option<Metadata>, StoreError> {
        let mut attempt = 0;
        loop {
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let result = self.timed("stat", key, self.operator.stat(key)).await;
            match result {
                Ok(Ok(meta)) => return Ok(Some(meta)),
                Ok(Err(e)) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Ok(Err(e)) if e.is_temporary() && attempt + 1 < ATTEMPTS => {}
                Ok(Err(e)) => return Err(failed("stat", key, e)),
                Err(e) if attempt + 1 < ATTEMPTS => tracing::debug!(error = %e, "retrying"),
                Err(e) => return Err(e),
            }
            attempt += 1;
            tokio::time::sleep(jittered(attempt)).await;
        }
    }

    /// The object's bytes and version, consistent with each other: its version before and
    /// after the body read must agree.
    async fn read_versioned(&self, key: &str) -> Result<Option<Observed>, StoreError> {
        for attempt in 0..ATTEMPTS {
            let Some(before) = self.stat(key).await? else {
                return Ok(None);
            };
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            let body = match self.timed("read", key, self.operator.read(key)).await? {
                Ok(body) => body.to_vec(),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
                Err(e) if e.is_temporary() => {
                    tokio::time::sleep(jittered(attempt)).await;
                    continue;
                }
                Err(e) => return Err(failed("read", key, e)),
            };
            if self.service == Service::Sftp {
                // No versions to compare; only the holder rewrites an SFTP lock file.
                return Ok(Some(Observed {
                    bytes: body,
                    tag: None,
                    modified: before.last_modified().map(SystemTime::from),
                }));
            }
            let Some(after) = self.stat(key).await? else {
                return Ok(None);
            };
            if self.tag_of(&before) == self.tag_of(&after) {
                return Ok(Some(Observed {
                    bytes: body,
                    tag: self.tag_of(&after),
                    modified: after.last_modified().map(SystemTime::from),
                }));
            }
        }
        Err(StoreError::contended(format!(
            "{key} kept changing while it was being read"
        )))
    }

    /// Just the bytes (one request), for comparing with what we wrote.
    async fn read_body(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Counters::bump(&self.counters.reads);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match self.timed("read", key, self.operator.read(key)).await? {
            Ok(body) => Ok(Some(body.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", key, e)),
        }
    }

    /// One conditional write; an unknown outcome is resolved by reading back.
    async fn put(
        &self,
        key: &str,
        bytes: &[u8],
        condition: Option<&Version>,
        user_metadata: Option<(String, String)>,
    ) -> Result<Put, StoreError> {
        let mut write = self.operator.write_with(key, bytes.to_vec());
        let condition = if self.conditions_ignored() {
            // What a server that ignores conditions does: a plain write.
            return self.plain_put(key, bytes).await;
        } else {
            condition
        };
        match condition {
            None => write = write.if_not_exists(true),
            Some(Version { tag: Some(tag), .. }) if self.service.uses_generations() => {
                write = write.if_version_match(tag)
            }
            Some(Version { tag: Some(tag), .. }) => write = write.if_match(tag),
            Some(Version { tag: None, .. }) => {
                return Err(StoreError::new(format!(
                    "cannot replace {key}: the store gave no version to compare"
                )))
            }
        }
        if let Some(pair) = user_metadata {
            write = write.user_metadata([pair]);
        }
        let cost = match condition {
            None => self.service.create_requests(),
            Some(_) => 1,
        };
        self.counters.requests.fetch_add(cost, Ordering::Relaxed);
        let outcome = self.timed("write", key, write).await;
        #[cfg(feature = "faults")]
        let outcome = match (&self.faults, outcome) {
            (Some(faults), Ok(Ok(meta))) if faults.fail_after_write() => {
                let _ = meta;
                // Temporary, as a dropped connection or a 503 would be: the outcome is unknown.
                Ok(Err(opendal::Error::new(
                    ErrorKind::Unexpected,
                    "injected fault: the write was applied, then failed",
                )
                .set_temporary()))
            }
            (_, outcome) => outcome,
        };
        match outcome {
            Ok(Ok(meta)) => Ok(Put::Written(self.tag_of(&meta))),
            Ok(Err(e)) if lost_condition(&e) => Ok(Put::Refused),
            // A permanent error (a 4xx other than a lost condition) did not apply.
            Ok(Err(e)) if !e.is_temporary() => Err(failed("write", key, e)),
            Ok(Err(e)) => {
                if self.service == Service::Sftp && condition.is_none() {
                    // OpenSSH answers an exclusive create of an existing file with the generic
                    // SSH_FX_FAILURE, which OpenDAL calls temporary: a lost race, most often.
                    tracing::debug!(key, error = %e, "exclusive create failed; reading back");
                } else {
                    tracing::warn!(key, error = %e, "ambiguous write; reading back");
                }
                self.resolve(key, bytes).await
            }
            Err(timeout) => {
                tracing::warn!(key, error = %timeout, "ambiguous write; reading back");
                self.resolve(key, bytes).await
            }
        }
    }

    /// Whether the fault layer drops conditions (tests of the probe only).
    fn conditions_ignored(&self) -> bool {
        #[cfg(feature = "faults")]
        if let Some(faults) = &self.faults {
            return faults.ignore_conditions;
        }
        false
    }

    async fn plain_put(&self, key: &str, bytes: &[u8]) -> Result<Put, StoreError> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match self
            .timed("write", key, self.operator.write(key, bytes.to_vec()))
            .await?
        {
            Ok(meta) => Ok(Put::Written(self.tag_of(&meta))),
            Err(e) => Err(failed("write", key, e)),
        }
    }

    /// After a write whose answer was lost: the object holds our bytes (we won) or not.
    async fn resolve(&self, key: &str, bytes: &[u8]) -> Result<Put, StoreError> {
        self.counters.ambiguous.fetch_add(1, Ordering::Relaxed);
        match self.read_versioned(key).await? {
            Some(now) if now.bytes == bytes => Ok(Put::Written(now.tag)),
            _ => Ok(Put::Refused),
        }
    }

    /// The fence as this daemon last committed it, or as read from the store.
    async fn fence(&self, key: &str) -> Result<(Option<Version>, u64), StoreError> {
        let cached = self.fences.lock().expect("fences lock").get(key).cloned();
        match cached {
            Some(known) => Ok(known),
            None => self.read_fence(key).await,
        }
    }

    /// The fence's version and counter (0 and no version if there is none yet).
    async fn read_fence(&self, key: &str) -> Result<(Option<Version>, u64), StoreError> {
        let fence = format!("{key}{FENCE_SUFFIX}");
        self.counters.fences.fetch_add(1, Ordering::Relaxed);
        let Some(meta) = self.stat(&fence).await? else {
            return Ok((None, 0));
        };
        let from_metadata = meta
            .user_metadata()
            .and_then(|m| m.get(TOKEN_METADATA).map(str::to_owned));
        let text = match from_metadata {
            Some(text) => text,
            // A server that drops user metadata still has the body.
            None => match self.read_versioned(&fence).await? {
                Some(observed) => String::from_utf8_lossy(&observed.bytes).into_owned(),
                None => return Ok((None, 0)),
            },
        };
        let counter = text.trim().parse().map_err(|_| {
            StoreError::new(format!(
                "the fence object {fence} holds no token counter ({text:?}): delete it to let \
                 tokens continue from the clock floor"
            ))
        })?;
        let version = Version {
            bytes: text.into_bytes(),
            tag: self.tag_of(&meta),
        };
        Ok((Some(version), counter))
    }

    /// Commits `token` to the fence, on the version read before; `false` if it moved on.
    async fn commit_fence(
        &self,
        key: &str,
        read: &Option<Version>,
        token: u64,
    ) -> Result<bool, StoreError> {
        let fence = format!("{key}{FENCE_SUFFIX}");
        self.counters.fences.fetch_add(1, Ordering::Relaxed);
        let text = token.to_string();
        let put = self
            .put(
                &fence,
                text.as_bytes(),
                read.as_ref(),
                Some((TOKEN_METADATA.to_owned(), text.clone())),
            )
            .await?;
        let mut fences = self.fences.lock().expect("fences lock");
        if fences.len() >= 100_000 {
            fences.clear();
        }
        match put {
            Put::Written(tag) => {
                let version = Version {
                    bytes: text.into_bytes(),
                    tag,
                };
                fences.insert(key.to_owned(), (Some(version), token));
                Ok(true)
            }
            Put::Refused => {
                fences.remove(key);
                Ok(false)
            }
        }
    }

    /// Commits a fresh token for the lock we just wrote at `key` (version `written`), issuing a
    /// larger one and rewriting the lock if another holder's commit got there first.
    async fn commit_token(
        &self,
        key: &str,
        fence: Option<Version>,
        token: u64,
        mut written: Written,
        floor: u64,
        make: &MakeLock,
    ) -> Result<Option<Written>, StoreError> {
        match self
            .try_commit_token(key, fence, token, &mut written, floor, make)
            .await
        {
            Ok(true) => Ok(Some(written)),
            Ok(false) => Ok(None),
            Err(e) => {
                // A lock we wrote but cannot fence is not handed out; take it back so that it
                // does not block everyone until its TTL runs out.
                let _ = self.delete(key, &written.version()).await;
                Err(e)
            }
        }
    }

    async fn try_commit_token(
        &self,
        key: &str,
        mut fence: Option<Version>,
        mut token: u64,
        written: &mut Written,
        floor: u64,
        make: &MakeLock,
    ) -> Result<bool, StoreError> {
        for _ in 0..ATTEMPTS {
            if self.commit_fence(key, &fence, token).await? {
                return Ok(true);
            }
            let (moved, counter) = self.read_fence(key).await?;
            fence = moved;
            token = next_token(counter, Some(token), floor);
            let bytes = make(Some(token));
            match self
                .put(key, &bytes, Some(&written.version()), None)
                .await?
            {
                Put::Written(tag) => {
                    Counters::bump(&self.counters.replaces);
                    *written = Written {
                        bytes,
                        token: Some(token),
                        modified: None,
                        tag,
                    };
                }
                // Our lock file is no longer ours: nothing to hand out.
                Put::Refused => return Ok(false),
            }
        }
        Err(StoreError::new(format!(
            "the fencing counter of {key} kept moving; try again"
        )))
    }

    pub(super) async fn create(
        &self,
        key: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let (fence, counter) = if self.fencing {
            self.fence(key).await?
        } else {
            (None, 0)
        };
        let token = self.fencing.then(|| next_token(counter, None, floor));
        let bytes = make(token);
        Counters::bump(&self.counters.creates);
        let tag = match self.put(key, &bytes, None, None).await? {
            Put::Refused => return Ok(Created::Exists),
            Put::Written(tag) => tag,
        };
        let written = Written {
            bytes,
            token,
            modified: None,
            tag,
        };
        let fresh = token.map(|token| (fence, token, floor));
        match self.fenced(key, written, fresh, &make).await? {
            Some(written) => Ok(Created::Won(written)),
            None => Ok(Created::Exists),
        }
    }

    /// A lock just written, with a fresh token to commit (if any): the lock as handed out, or
    /// `None` when it turned out not to be ours any more.
    async fn fenced(
        &self,
        key: &str,
        written: Written,
        fresh: Option<(Option<Version>, u64, u64)>,
        make: &MakeLock,
    ) -> Result<Option<Written>, StoreError> {
        match fresh {
            None => Ok(Some(written)),
            Some((fence, token, floor)) => {
                self.commit_token(key, fence, token, written, floor, make)
                    .await
            }
        }
    }

    pub(super) async fn read(&self, key: &str) -> Result<Option<Observed>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.read_versioned(key).await
    }

    pub(super) async fn replace(
        &self,
        key: &str,
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        if self.service == Service::Sftp {
            return self.replace_create_only(key, expected, token, make).await;
        }
        let fresh = match token {
            Token::Fresh { floor } if self.fencing => {
                let (fence, counter) = self.fence(key).await?;
                let token = next_token(counter, token_in(&expected.bytes), floor);
                Some((fence, token, floor))
            }
            _ => None,
        };
        let bytes = make(fresh.as_ref().map(|(_, token, _)| *token));
        Counters::bump(&self.counters.replaces);
        let tag = match self.put(key, &bytes, Some(expected), None).await? {
            Put::Refused => return Ok(Replaced::Changed),
            Put::Written(tag) => tag,
        };
        let written = Written {
            bytes,
            token: fresh.as_ref().map(|(_, token, _)| *token),
            modified: None,
            tag,
        };
        match self.fenced(key, written, fresh, &make).await? {
            Some(written) => Ok(Replaced::Done(written)),
            None => Ok(Replaced::Changed),
        }
    }

    /// SFTP: only the holder rewrites its own lock file (renewal); nothing else may replace one.
    async fn replace_create_only(
        &self,
        key: &str,
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        if let Token::Fresh { .. } = token {
            return Err(StoreError::unsupported(format!(
                "{key}: the SFTP store runs in create-only mode (no compare-and-swap), so a lock \
                 file is never replaced by another holder: stale locks are not stolen and locks \
                 are not handed off; remove a dead holder's lock file by hand"
            )));
        }
        if self.read_body(key).await?.as_deref() != Some(&expected.bytes[..]) {
            return Ok(Replaced::Changed);
        }
        let bytes = make(None);
        Counters::bump(&self.counters.replaces);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.timed("write", key, self.operator.write(key, bytes.clone()))
            .await?
            .map_err(|e| failed("rewrite", key, e))?;
        Ok(Replaced::Done(Written {
            bytes,
            token: None,
            modified: None,
            tag: None,
        }))
    }

    pub(super) async fn delete(
        &self,
        key: &str,
        expected: &Version,
    ) -> Result<Conditional, StoreError> {
        if self.service == Service::Sftp {
            if self.read_body(key).await?.as_deref() != Some(&expected.bytes[..]) {
                return Ok(Conditional::Changed);
            }
            Counters::bump(&self.counters.deletes);
            self.counters.requests.fetch_add(1, Ordering::Relaxed);
            return match self.timed("delete", key, self.operator.delete(key)).await? {
                Ok(()) => Ok(Conditional::Done),
                Err(e) => Err(failed("delete", key, e)),
            };
        }
        let Some(tag) = expected.tag.as_deref() else {
            return Err(StoreError::new(format!(
                "cannot delete {key}: no version to compare"
            )));
        };
        Counters::bump(&self.counters.deletes);
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let mut delete = self.operator.delete_with(key);
        delete = if self.service.uses_generations() {
            delete.if_version_match(tag)
        } else {
            delete.if_match(tag)
        };
        let outcome = match self.timed("delete", key, delete).await {
            Ok(Ok(())) => return Ok(Conditional::Done),
            Ok(Err(e)) if lost_condition(&e) || e.kind() == ErrorKind::NotFound => {
                return Ok(Conditional::Changed)
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.message,
        };
        // Unknown outcome: decide by looking whether the object is gone, or still ours.
        tracing::warn!(key, error = %outcome, "ambiguous delete; reading back");
        self.counters.ambiguous.fetch_add(1, Ordering::Relaxed);
        match self.read_versioned(key).await? {
            None => Ok(Conditional::Done),
            Some(now) if now.tag.as_deref() == Some(tag) => Err(StoreError::new(format!(
                "cannot delete {key}: {outcome}; it goes stale when its TTL runs out"
            ))),
            Some(_) => Ok(Conditional::Changed),
        }
    }

    /// Checks by a live probe on a throwaway object that the store enforces what the lock
    /// protocol needs. Returns the missing capability, if any.
    pub async fn probe(&self, scratch_key: &str) -> Result<Option<String>, StoreError> {
        let outcome = self.probe_steps(scratch_key).await;
        // Whatever happened, the throwaway object goes.
        let _ = self
            .timed("probe", scratch_key, self.operator.delete(scratch_key))
            .await;
        outcome
    }

    async fn probe_steps(&self, scratch_key: &str) -> Result<Option<String>, StoreError> {
        let a = b"vfslock probe a".to_vec();
        let first = match self.put(scratch_key, &a, None, None).await? {
            Put::Written(tag) => tag,
            Put::Refused => {
                return Err(StoreError::new(format!(
                    "the probe object {scratch_key} already exists; remove it"
                )))
            }
        };
        let mut missing = None;
        if let Put::Written(_) = self
            .put(scratch_key, b"vfslock probe b", None, None)
            .await?
        {
            missing = Some("create-if-not-exists is not enforced (a second create succeeded)");
        }
        if missing.is_none() && self.service != Service::Sftp {
            let wrong = Version {
                bytes: Vec::new(),
                tag: Some(if self.service.uses_generations() {
                    "1".to_owned()
                } else {
                    "\"00000000000000000000000000000000\"".to_owned()
                }),
            };
            let wrong = if wrong.tag == first {
                Version {
                    tag: Some("2".into()),
                    ..wrong
                }
            } else {
                wrong
            };
            let overwrite = self
                .operator
                .write_with(scratch_key, b"vfslock probe c".to_vec());
            let overwrite = if self.service.uses_generations() {
                overwrite.if_version_match(wrong.tag.as_deref().unwrap_or_default())
            } else {
                overwrite.if_match(wrong.tag.as_deref().unwrap_or_default())
            };
            let overwritten = self.timed("probe", scratch_key, overwrite).await?.is_ok();
            let kept = self
                .read_versioned(scratch_key)
                .await?
                .is_some_and(|o| o.bytes == a);
            if overwritten || !kept {
                missing = Some("a conditional overwrite with a wrong version was not refused");
            } else {
                let delete = self.operator.delete_with(scratch_key);
                let delete = if self.service.uses_generations() {
                    delete.if_version_match(wrong.tag.as_deref().unwrap_or_default())
                } else {
                    delete.if_match(wrong.tag.as_deref().unwrap_or_default())
                };
                let deleted = self.timed("probe", scratch_key, delete).await?.is_ok();
                let kept = self.read_versioned(scratch_key).await?.is_some();
                if deleted || !kept {
                    missing = Some("a conditional delete with a wrong version was not refused");
                }
            }
        }
        let _ = self
            .timed("probe", scratch_key, self.operator.delete(scratch_key))
            .await;
        Ok(missing.map(str::to_owned))
    }

    /// Accepts a missing capability (the config's `accept-weak`).
    pub fn accept_weak(&mut self, missing: String) {
        self.mode = Mode::Weak(missing);
    }
}

/// Builds, probes and returns the store `config` describes.
pub async fn open(
    config: &crate::config::ObjectStoreSettings,
    settings: &crate::config::Settings,
) -> Result<ObjectStore, StoreError> {
    use crate::address::Scheme;
    // The HTTP services need a process-wide transport (reqwest, rustls); idempotent.
    opendal::install_default();
    let (scheme, authority, start) = &config.parsed;
    let at = |e: opendal::Error| StoreError::new(format!("store {}: {e}", config.prefix));
    let (operator, service) = match scheme {
        Scheme::S3 => {
            let mut builder = opendal::services::S3::default()
                .bucket(authority)
                .region(config.region.as_deref().unwrap_or("us-east-1"))
                .root("/")
                .disable_config_load();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(id) = &config.access_key_id {
                builder = builder.access_key_id(id.expose());
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.secret_access_key(secret.expose());
            }
            if config.virtual_host_style {
                builder = builder.enable_virtual_host_style();
            }
            (Operator::new(builder).map_err(at)?, Service::S3)
        }
        Scheme::Gcs => {
            let mut builder = opendal::services::Gcs::default()
                .bucket(authority)
                .root("/")
                .disable_config_load()
                .disable_vm_metadata();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(path) = &config.credential_path {
                builder = builder.credential_path(path);
            }
            if config.skip_signature {
                builder = builder.skip_signature();
            }
            (Operator::new(builder).map_err(at)?, Service::Gcs)
        }
        Scheme::Azblob => {
            let mut builder = opendal::services::Azblob::default()
                .container(authority)
                .root("/");
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(name) = &config.account_name {
                builder = builder.account_name(name);
            }
            if let Some(key) = &config.account_key {
                builder = builder.account_key(key.expose());
            }
            (Operator::new(builder).map_err(at)?, Service::Azblob)
        }
        #[cfg(unix)]
        Scheme::Sftp => {
            let mut builder = opendal::services::Sftp::default()
                .endpoint(&format!("ssh://{authority}"))
                .root("/")
                .known_hosts_strategy(config.known_hosts.as_deref().unwrap_or("strict"));
            if let Some(key) = &config.key {
                builder = builder.key(key);
            }
            (Operator::new(builder).map_err(at)?, Service::Sftp)
        }
        other => {
            return Err(StoreError::new(format!(
                "store {}: {} is not an object store this build supports",
                config.prefix,
                other.as_str()
            )))
        }
    };
    let store = ObjectStore::new(operator, service, config.fencing, config.request_timeout);
    #[cfg(feature = "faults")]
    let store = if settings.faults.write_then_fail.is_some() || settings.faults.ignore_conditions {
        store.with_faults(super::faults::Faults {
            write_then_fail: settings.faults.write_then_fail.unwrap_or(0.0),
            ignore_conditions: settings.faults.ignore_conditions,
            injected: Default::default(),
        })
    } else {
        store
    };
    #[cfg(not(feature = "faults"))]
    let _ = settings;
    let mut store = store;
    // The probe object sits under the prefix, where the daemon is meant to write.
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let start = if *scheme == Scheme::Sftp {
        start.trim_start_matches('/').to_owned()
    } else {
        start.clone()
    };
    let dir = match start.rfind('/') {
        Some(at) => &start[..=at],
        None => "",
    };
    let probe_key = format!("{dir}.vfslock-probe-{:016x}", u64::from_ne_bytes(nonce));
    match store.probe(&probe_key).await {
        Ok(None) => {}
        Ok(Some(missing)) if config.accept_weak => {
            tracing::error!(store = %config.prefix, %missing, "store accepted in WEAK mode: mutual exclusion is not guaranteed");
            store.accept_weak(missing);
        }
        Ok(Some(missing)) => {
            return Err(StoreError::new(format!(
                "store {} refused: {missing}. The lock protocol needs it; set \
                 `accept-weak = true` for this store to run without the guarantee",
                config.prefix
            )))
        }
        Err(e) => {
            return Err(StoreError::new(format!(
                "store {}: the startup probe failed: {e}",
                config.prefix
            )))
        }
    }
    Ok(store)
}
