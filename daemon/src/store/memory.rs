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
    /// Set, under the table's lock, when a planned restart has copied the table for the next
    /// image: every operation fails from then on, so that nothing is granted, renewed or
    /// released that the copy would not show.
    sealed: std::sync::atomic::AtomicBool,
}

/// The table as a planned restart hands it to the next image (`seal_and_copy`, `load`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Handover {
    /// Every path with a lock file or a fencing counter.
    pub slots: Vec<HandedSlot>,
}

/// One path of the table.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct HandedSlot {
    /// The path.
    pub path: String,
    /// The lock file, if there is one (lock files are JSON, so text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Bytes that are not UTF-8, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_hex: Option<String>,
    /// The fencing counter.
    pub counter: u64,
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

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // A panic while holding the lock leaves whole values only: the map stays usable.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The table, unless a planned restart has sealed it.
    fn slots(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Slot>>, StoreError> {
        let slots = self.table();
        if self.sealed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::new(
                "vfslockd is restarting in place: its mem:// store was handed to the next image",
            ));
        }
        Ok(slots)
    }

    /// Copies the table for the next image of a planned restart and seals it: every later
    /// operation fails, so the copy stays exactly what the next image will serve.
    pub fn seal_and_copy(&self) -> Handover {
        let slots = self.table();
        self.sealed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let slots = slots
            .iter()
            .map(|(path, slot)| {
                let (file, file_hex) =
                    match slot.file.as_ref().map(|b| String::from_utf8(b.clone())) {
                        None => (None, None),
                        Some(Ok(text)) => (Some(text), None),
                        Some(Err(e)) => (None, Some(hex(e.as_bytes()))),
                    };
                HandedSlot {
                    path: path.clone(),
                    file,
                    file_hex,
                    counter: slot.counter,
                }
            })
            .collect();
        Handover { slots }
    }

    /// Serves again after a planned restart that could not go ahead.
    pub fn unseal(&self) {
        let _slots = self.table();
        self.sealed
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Fills the table with what the previous image handed over. Returns how many lock files.
    pub fn load(&self, handed: Handover) -> usize {
        let mut slots = self.table();
        let mut files = 0;
        for slot in handed.slots {
            let file = match (slot.file, slot.file_hex) {
                (Some(text), _) => Some(text.into_bytes()),
                (None, Some(hex)) => unhex(&hex),
                (None, None) => None,
            };
            files += usize::from(file.is_some());
            slots.insert(
                key(&slot.path).to_owned(),
                Slot {
                    file,
                    counter: slot.counter,
                },
            );
        }
        files
    }

    pub(super) async fn create(
        &self,
        path: &str,
        floor: u64,
        make: MakeLock,
    ) -> Result<Created, StoreError> {
        let mut slots = self.slots()?;
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
            .slots()?
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
        let mut slots = self.slots()?;
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
        let mut slots = self.slots()?;
        match slots.get_mut(key(path)) {
            Some(slot) if slot.file.as_deref() == Some(&expected.bytes[..]) => {
                slot.file = None;
                Ok(Conditional::Done)
            }
            _ => Ok(Conditional::Changed),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A planned restart hands the table over whole (lock files and fencing counters), and the
    /// old image serves nothing after the copy.
    #[tokio::test]
    async fn a_sealed_copy_loads_into_the_next_store() {
        let old = MemoryStore::new().unwrap();
        let Created::Won(first) = old.create("/a.lock", 0, fixed(b"one")).await.unwrap() else {
            panic!("first create wins")
        };
        old.create("/b.lock", 0, Box::new(|_| vec![0xff, 0, 1]))
            .await
            .unwrap();
        old.create("/gone.lock", 0, fixed(b"x")).await.unwrap();
        old.delete("/gone.lock", &v(b"x")).await.unwrap();
        let handed = old.seal_and_copy();
        assert!(old.read("/a.lock").await.is_err(), "sealed");
        assert!(old.create("/c.lock", 0, fixed(b"c")).await.is_err());
        let text = serde_json::to_vec(&handed).unwrap();
        let new = MemoryStore::new().unwrap();
        assert_eq!(new.load(serde_json::from_slice(&text).unwrap()), 2);
        assert_eq!(new.read("/a.lock").await.unwrap().unwrap().bytes, b"one");
        assert_eq!(
            new.read("/b.lock").await.unwrap().unwrap().bytes,
            vec![0xff, 0, 1]
        );
        assert_eq!(new.read("/gone.lock").await.unwrap(), None);
        let Created::Won(again) = new.create("/gone.lock", 0, fixed(b"y")).await.unwrap() else {
            panic!("free")
        };
        assert!(again.token > first.token, "counters carry over");
        old.unseal();
        assert!(old.read("/a.lock").await.is_ok(), "unsealed");
    }

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
