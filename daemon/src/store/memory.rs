//! `mem://` targets: lock files in a table in this daemon's memory.
//!
//! Each operation runs under one mutex, so create-if-absent, compare-and-replace and
//! compare-and-delete are each atomic, as the store contract asks (only one target actor ever
//! touches a given lock file, but the contract does not lean on that). Fencing counters stay
//! beside the files after a delete, for the daemon's life; after a restart they are gone, and
//! the time floor of [`Token::Fresh`] keeps tokens from going backwards.
//!
//! A plain map rather than OpenDAL's memory service, which this store used to go through: the
//! protocol needs four whole-value operations on small values, and the operator's layers,
//! buffers and futures cost more time and memory per lock than the lock itself (`mem://` cycle
//! and bytes per held lock in `tests/bench.sh`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{
    next_token, token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token,
    Version, Written,
};

/// One path of the store: the lock file, if there is one, and the fencing counter, which
/// outlives it.
#[derive(Debug, Default)]
struct Slot {
    file: Option<Vec<u8>>,
    counter: u64,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Paths are compared without their leading slashes, as the OpenDAL keys they replace were.
fn key(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl MemoryStore {
    /// A new, empty memory store.
    pub fn new() -> Result<Self, StoreError> {
        Ok(MemoryStore::default())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock leaves whole values only: the map stays usable.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let mut slots = self.slots();
        if slots.get(key(path)).is_some_and(|slot| slot.file.is_some()) {
            return Ok(Created::Exists);
        }
        let slot = slots.entry(key(path).to_owned()).or_default();
        slot.counter = next_token(slot.counter, None, floor);
        let token = slot.counter;
        let bytes = make(Some(token));
        slot.file = Some(bytes.clone());
        Ok(Created::Won(Written {
            bytes,
            token: Some(token),
            modified: None,
            tag: None,
        }))
    }

    pub(super) async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        Ok(self
            .slots()
            .get(key(path))
            .and_then(|slot| slot.file.clone())
            .map(|bytes| Observed {
                bytes,
                tag: None,
                modified: None,
            }))
    }

    pub(super) async fn replace(
        &self,
        path: &str,
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        let mut slots = self.slots();
        let Some(slot) = slots
            .get_mut(key(path))
            .filter(|slot| slot.file.as_deref() == Some(&expected.bytes[..]))
        else {
            return Ok(Replaced::Changed);
        };
        let token = match token {
            Token::Fresh { floor } => {
                slot.counter = next_token(slot.counter, token_in(&expected.bytes), floor);
                Some(slot.counter)
            }
            Token::Keep => None,
        };
        let bytes = make(token);
        slot.file = Some(bytes.clone());
        Ok(Replaced::Done(Written {
            bytes,
            token,
            modified: None,
            tag: None,
        }))
    }

    pub(super) async fn delete(
        &self,
        path: &str,
        expected: &Version,
    ) -> Result<Conditional, StoreError> {
        let mut slots = self.slots();
        match slots.get_mut(key(path)) {
            Some(slot) if slot.file.as_deref() == Some(&expected.bytes[..]) => {
                slot.file = None;
                Ok(Conditional::Done)
            }
            _ => Ok(Conditional::Changed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(bytes: &[u8]) -> Version {
        Version {
            bytes: bytes.to_vec(),
            tag: None,
        }
    }

    fn fixed(bytes: &'static [u8]) -> MakeLock {
        Box::new(move |_| bytes.to_vec())
    }

    #[tokio::test]
    async fn create_is_exclusive_and_replace_delete_are_conditional() {
        let store = MemoryStore::new().unwrap();
        let path = "/inbox/data.csv.lock";
        let Created::Won(first) = store.create(path, 0, fixed(b"one")).await.unwrap() else {
            panic!("first create wins")
        };
        assert_eq!(
            store.create(path, 0, fixed(b"two")).await.unwrap(),
            Created::Exists
        );
        assert_eq!(
            store
                .replace(path, &v(b"two"), Token::Keep, fixed(b"3"))
                .await
                .unwrap(),
            Replaced::Changed
        );
        let Replaced::Done(stolen) = store
            .replace(path, &v(b"one"), Token::Fresh { floor: 0 }, fixed(b"3"))
            .await
            .unwrap()
        else {
            panic!("replace of the expected bytes")
        };
        assert!(stolen.token > first.token);
        assert_eq!(
            store.delete(path, &v(b"one")).await.unwrap(),
            Conditional::Changed
        );
        assert_eq!(
            store.delete(path, &v(b"3")).await.unwrap(),
            Conditional::Done
        );
        assert_eq!(store.read(path).await.unwrap(), None);
    }

    #[tokio::test]
    async fn tokens_keep_increasing_after_a_delete() {
        let store = MemoryStore::new().unwrap();
        let path = "/jobs/report.lock";
        let Created::Won(first) = store.create(path, 0, fixed(b"a")).await.unwrap() else {
            panic!("first create wins")
        };
        store.delete(path, &v(b"a")).await.unwrap();
        let Created::Won(second) = store.create(path, 0, fixed(b"b")).await.unwrap() else {
            panic!("create after delete wins")
        };
        assert!(second.token > first.token);
    }
}
