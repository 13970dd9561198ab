//! Fencing tokens on an object store: the counter in the companion object
//! `<lock key>.fence`, and the commit of a fresh token once a lock is won (the rule is in the
//! module doc of [`object`](super)).

use std::sync::atomic::Ordering;

use super::request::Put;
use super::{Counters, ObjectStore, ATTEMPTS};
use crate::store::{next_token, MakeLock, StoreError, Version, Written};

/// User-metadata name of the counter; Azure allows only C# identifiers there.
const TOKEN_METADATA: &str = "vfslocktoken";
const FENCE_SUFFIX: &str = crate::store::FENCE_SUFFIX;

impl ObjectStore {
    /// The fence as this daemon last committed it, or as read from the store.
    pub(super) async fn fence(&self, key: &str) -> Result<(Option<Version>, u64), StoreError> {
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

    /// `None` when it turned out not to be ours any more.
    pub(super) async fn fenced(
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
}
