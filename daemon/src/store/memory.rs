//! `mem://` targets: an OpenDAL `memory` operator private to this daemon.
//!
//! Only this daemon's target actors touch it, one actor per lock file, so the read-compare-write
//! of `replace` and `delete` cannot interleave with another writer. Create uses OpenDAL's
//! `if_not_exists`, the same call the object stores will use. Fencing counters live beside the
//! operator; after a restart they are gone, and the time floor of [`Token::Fresh`] keeps
//! tokens from going backwards.

use std::collections::HashMap;
use std::sync::Mutex;

use opendal::{services::Memory, ErrorKind, Operator};

use super::{
    next_token, token_in, Conditional, Created, MakeLock, Observed, Replaced, StoreError, Token,
    Version, Written,
};

/// The in-memory store.
#[derive(Debug)]
pub struct MemoryStore {
    operator: Operator,
    counters: Mutex<HashMap<String, u64>>,
}

fn failed(action: &str, path: &str, e: opendal::Error) -> StoreError {
    StoreError::new(format!("cannot {action} mem://{path}: {e}"))
}

/// OpenDAL keys are relative to the operator's root.
fn key(path: &str) -> &str {
    path.trim_start_matches('/')
}

impl MemoryStore {
    /// A new, empty memory store.
    pub fn new() -> Result<Self, StoreError> {
        let operator = Operator::new(Memory::default())
            .map_err(|e| StoreError::new(format!("cannot set up the memory store: {e}")))?;
        Ok(MemoryStore {
            operator,
            counters: Mutex::new(HashMap::new()),
        })
    }

    fn issue(&self, path: &str, replaced: Option<u64>, floor: u64) -> u64 {
        let mut counters = self.counters.lock().expect("counters lock");
        let counter = counters.entry(path.to_owned()).or_default();
        *counter = next_token(*counter, replaced, floor);
        *counter
    }

    pub(super) async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let token = self.issue(path, None, floor);
        let bytes = make(Some(token));
        match self
            .operator
            .write_with(key(path), bytes.clone())
            .if_not_exists(true)
            .await
        {
            Ok(_) => Ok(Created::Won(Written {
                bytes,
                token: Some(token),
                modified: None,
                tag: None,
            })),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Created::Exists),
            Err(e) => Err(failed("create", path, e)),
        }
    }

    pub(super) async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        match self.operator.read(key(path)).await {
            Ok(buffer) => Ok(Some(Observed {
                bytes: buffer.to_vec(),
                tag: None,
                modified: None,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed("read", path, e)),
        }
    }

    async fn holds(&self, path: &str, expected: &[u8]) -> Result<bool, StoreError> {
        Ok(self
            .read(path)
            .await?
            .is_some_and(|current| current.bytes == expected))
    }

    pub(super) async fn replace(
        &self,
        path: &str,
        expected: &Version,
        token: Token,
        make: MakeLock,
    ) -> Result<Replaced, StoreError> {
        if !self.holds(path, &expected.bytes).await? {
            return Ok(Replaced::Changed);
        }
        let token = match token {
            Token::Fresh { floor } => Some(self.issue(path, token_in(&expected.bytes), floor)),
            Token::Keep => None,
        };
        let bytes = make(token);
        self.operator
            .write(key(path), bytes.clone())
            .await
            .map_err(|e| failed("replace", path, e))?;
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
        if !self.holds(path, &expected.bytes).await? {
            return Ok(Conditional::Changed);
        }
        self.operator
            .delete(key(path))
            .await
            .map_err(|e| failed("delete", path, e))?;
        Ok(Conditional::Done)
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
}
