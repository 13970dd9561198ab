//! The lock-file operations [`Store`](crate::store::Store) calls on an object store: create,
//! read, replace and delete, each conditional on the version last seen. On SFTP, which has no
//! compare-and-swap, replace and delete compare the bytes instead and only the holder's own
//! renewal may rewrite a lock file (create-only mode).

use std::sync::atomic::Ordering;

use opendal::ErrorKind;

use super::request::Put;
use super::{failed, lost_condition, Counters, ObjectStore, Service};
use crate::store::{
    next_token, token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token,
    Version, Written,
};

impl ObjectStore {
    pub(in crate::store) async fn create(
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

    pub(in crate::store) async fn read(&self, key: &str) -> Result<Option<Observed>, StoreError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        self.read_versioned(key).await
    }

    pub(in crate::store) async fn replace(
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
        self.round_trip();
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

    pub(in crate::store) async fn delete(
        &self,
        key: &str,
        expected: &Version,
    ) -> Result<Conditional, StoreError> {
        if self.service == Service::Sftp {
            if self.read_body(key).await?.as_deref() != Some(&expected.bytes[..]) {
                return Ok(Conditional::Changed);
            }
            Counters::bump(&self.counters.deletes);
            self.round_trip();
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
        self.round_trip();
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
}
