//! One request to an object store, made safe to build the lock protocol on.
//!
//! Every call is bounded by the store's request timeout. Reads and stats are retried with
//! jittered backoff; a conditional write never is (its first attempt may have landed), so one
//! whose answer was lost is settled by reading the object back and comparing it with what was
//! sent (see the module doc of [`object`](super)). Counted in [`Counters`].

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use opendal::{ErrorKind, Metadata};

use super::{failed, lost_condition, Counters, ObjectStore, Service, ATTEMPTS};
use crate::store::{Observed, StoreError, Version};

/// A write whose outcome the store did not tell us.
pub(super) enum Put {
    Written(Option<String>),
    Refused,
}

fn jittered(attempt: usize) -> Duration {
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let base = Duration::from_millis(20) * (1 << attempt.min(6)) as u32;
    base.mul_f64(0.5 + f64::from(byte[0]) / 255.0)
}

impl ObjectStore {
    pub(super) fn tag_of(&self, meta: &Metadata) -> Option<String> {
        if self.service.uses_generations() {
            meta.version().map(str::to_owned)
        } else {
            meta.etag().map(str::to_owned)
        }
    }

    pub(super) async fn timed<T>(
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
    pub(super) async fn stat(&self, key: &str) -> Result<Option<Metadata>, StoreError> {
        let mut attempt = 0;
        loop {
            self.round_trip();
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
    pub(super) async fn read_versioned(&self, key: &str) -> Result<Option<Observed>, StoreError> {
        for attempt in 0..ATTEMPTS {
            let Some(before) = self.stat(key).await? else {
                return Ok(None);
            };
            self.round_trip();
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
    pub(super) async fn read_body(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Counters::bump(&self.counters.reads);
        self.round_trip();
        match self.timed("read", key, self.operator.read(key)).await? {
            Ok(body) => Ok(Some(body.to_vec())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", key, e)),
        }
    }

    /// One conditional write; an unknown outcome is resolved by reading back.
    pub(super) async fn put(
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
        self.round_trip();
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
        self.round_trip();
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
}
