//! `mem://` targets: an OpenDAL `memory` operator private to this daemon.
//!
//! Only this daemon's target actors touch it, one actor per lock file, so the read-compare-write
//! of `replace` and `delete` cannot interleave with another writer. Create uses OpenDAL's
//! `if_not_exists`, the same call the object stores will use.

use opendal::{services::Memory, ErrorKind, Operator};

use super::{Conditional, Created, Observed, StoreError};

/// The in-memory store.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    operator: Operator,
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
        Ok(MemoryStore { operator })
    }

    pub(super) async fn create(&self, path: &str, bytes: Vec<u8>) -> Result<Created, StoreError> {
        match self
            .operator
            .write_with(key(path), bytes)
            .if_not_exists(true)
            .await
        {
            Ok(_) => Ok(Created::Won),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(Created::Exists),
            Err(e) => Err(failed("create", path, e)),
        }
    }

    pub(super) async fn read(&self, path: &str) -> Result<Option<Observed>, StoreError> {
        match self.operator.read(key(path)).await {
            Ok(buffer) => Ok(Some(Observed {
                bytes: buffer.to_vec(),
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
        bytes: Vec<u8>,
        expected: &[u8],
    ) -> Result<Conditional, StoreError> {
        if !self.holds(path, expected).await? {
            return Ok(Conditional::Changed);
        }
        self.operator
            .write(key(path), bytes)
            .await
            .map_err(|e| failed("replace", path, e))?;
        Ok(Conditional::Done)
    }

    pub(super) async fn delete(
        &self,
        path: &str,
        expected: &[u8],
    ) -> Result<Conditional, StoreError> {
        if !self.holds(path, expected).await? {
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

    #[tokio::test]
    async fn create_is_exclusive_and_replace_delete_are_conditional() {
        let store = MemoryStore::new().unwrap();
        let path = "/inbox/data.csv.lock";
        assert_eq!(
            store.create(path, b"one".to_vec()).await.unwrap(),
            Created::Won
        );
        assert_eq!(
            store.create(path, b"two".to_vec()).await.unwrap(),
            Created::Exists
        );
        assert_eq!(
            store.replace(path, b"3".to_vec(), b"two").await.unwrap(),
            Conditional::Changed
        );
        assert_eq!(
            store.replace(path, b"3".to_vec(), b"one").await.unwrap(),
            Conditional::Done
        );
        assert_eq!(
            store.delete(path, b"one").await.unwrap(),
            Conditional::Changed
        );
        assert_eq!(store.delete(path, b"3").await.unwrap(), Conditional::Done);
        assert_eq!(store.read(path).await.unwrap(), None);
    }
}
