//! Raw access to lock objects from the test process, past the daemons: what another host, a
//! Go peer or an operator would leave in the store.

use std::path::Path;
use std::time::Duration;

use vfslock_tests::{test_env, within, Store};

/// Reads, writes and deletes lock objects from the test process, past the daemon: OpenDAL
/// operators built as the daemon builds its stores, or plain files.
pub struct Raw {
    store: Store,
    operator: Option<opendal::Operator>,
}

impl Raw {
    /// Raw access to `store`'s lock objects.
    pub fn new(store: Store) -> Raw {
        opendal::install_default();
        let built = match store {
            Store::File | Store::Mem => None,
            Store::S3 => Some(opendal::Operator::new(
                opendal::services::S3::default()
                    .endpoint(&test_env("VFSLOCK_TEST_S3_ENDPOINT"))
                    .region(&test_env("VFSLOCK_TEST_S3_REGION"))
                    .bucket(&test_env("VFSLOCK_TEST_S3_BUCKET"))
                    .access_key_id(&test_env("VFSLOCK_TEST_S3_ACCESS_KEY_ID"))
                    .secret_access_key(&test_env("VFSLOCK_TEST_S3_SECRET_ACCESS_KEY"))
                    .root("/")
                    .disable_config_load(),
            )),
            Store::Gcs => Some(opendal::Operator::new(
                opendal::services::Gcs::default()
                    .endpoint(&test_env("VFSLOCK_TEST_GCS_ENDPOINT"))
                    .bucket(&test_env("VFSLOCK_TEST_GCS_BUCKET"))
                    .root("/")
                    .skip_signature()
                    .disable_config_load()
                    .disable_vm_metadata(),
            )),
            Store::Azblob => Some(opendal::Operator::new(
                opendal::services::Azblob::default()
                    .endpoint(&test_env("VFSLOCK_TEST_AZBLOB_ENDPOINT"))
                    .container(&test_env("VFSLOCK_TEST_AZBLOB_CONTAINER"))
                    .account_name(&test_env("VFSLOCK_TEST_AZBLOB_ACCOUNT"))
                    .account_key(&test_env("VFSLOCK_TEST_AZBLOB_KEY"))
                    .root("/"),
            )),
            Store::Sftp => Some(opendal::Operator::new(
                opendal::services::Sftp::default()
                    .endpoint(&test_env("VFSLOCK_TEST_SFTP_ENDPOINT"))
                    .key(&test_env("VFSLOCK_TEST_SFTP_KEY"))
                    .root("/")
                    .known_hosts_strategy("strict"),
            )),
        };
        let operator = built.map(|op| op.unwrap_or_else(|e| panic!("{store:?} raw operator: {e}")));
        Raw { store, operator }
    }

    fn op(&self) -> &opendal::Operator {
        self.operator
            .as_ref()
            .unwrap_or_else(|| panic!("no raw operator for {:?}", self.store))
    }

    /// Runs one of the test's own (idempotent, unconditional) requests, again after a transport
    /// failure: these are the test's tools, not what it tests.
    async fn retried<T, F: std::future::Future<Output = opendal::Result<T>>>(
        &self,
        what: &str,
        key: &str,
        call: impl Fn() -> F,
    ) -> opendal::Result<T> {
        let mut attempt = 1;
        loop {
            match within(&format!("a raw {what}"), call()).await {
                Err(e) if e.is_temporary() && attempt < 3 => {
                    eprintln!("{:?}: raw {what} {key} failed, again: {e:?}", self.store);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// The bytes of the object at `key`, `None` if there is none.
    pub async fn read(&self, key: &str) -> Option<Vec<u8>> {
        match self.store {
            Store::File => match std::fs::read(key) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read {key}: {e}"),
            },
            Store::Mem => panic!("mem:// lock objects live inside the daemon"),
            _ => match self.retried("read", key, || self.op().read(key)).await {
                Ok(buffer) => Some(buffer.to_vec()),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => None,
                Err(e) => panic!("{:?}: read {key}: {e}", self.store),
            },
        }
    }

    /// The object at `key` as JSON; fails if there is none.
    pub async fn json(&self, key: &str) -> serde_json::Value {
        let bytes = self
            .read(key)
            .await
            .unwrap_or_else(|| panic!("{:?}: no lock object at {key}", self.store));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{:?}: the lock object {key} is not JSON ({e}): {}",
                self.store,
                String::from_utf8_lossy(&bytes)
            )
        })
    }

    /// Overwrites (or creates) the object at `key` unconditionally, as a foreign writer would.
    /// A lock file is replaced as another host would: under its fence, by a rename.
    pub async fn write(&self, key: &str, bytes: &[u8]) {
        match self.store {
            Store::File => under_fence(Path::new(&format!("{key}.fence")), || {
                let temp = format!("{key}.test-{}.tmp", std::process::id());
                std::fs::write(&temp, bytes).expect("write the temporary lock file");
                std::fs::rename(&temp, key).expect("rename it over the lock file");
            }),
            Store::Mem => panic!("mem:// lock objects live inside the daemon"),
            _ => self
                .retried("write", key, || self.op().write(key, bytes.to_vec()))
                .await
                .map(drop)
                .unwrap_or_else(|e| panic!("{:?}: write {key}: {e}", self.store)),
        }
    }

    /// Deletes the object at `key` (nothing if there is none).
    pub async fn delete(&self, key: &str) {
        match self.store {
            Store::File => match std::fs::remove_file(key) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("delete {key}: {e}"),
            },
            Store::Mem => panic!("mem:// lock objects live inside the daemon"),
            _ => self
                .retried("delete", key, || self.op().delete(key))
                .await
                .unwrap_or_else(|e| panic!("{:?}: delete {key}: {e}", self.store)),
        }
    }
}

/// Runs `f` holding the fence of the lock file beside `fence` (`<lock>.fence`), through the
/// daemon's own fence code, as every vfslock host does around each write of the lock file.
fn under_fence<T>(fence: &Path, f: impl FnOnce() -> T) -> T {
    let fence = fence.to_string_lossy();
    let lock_path = fence.strip_suffix(".fence").expect("a .fence path");
    vfslockd::store::fs::with_fence(lock_path, f)
        .unwrap_or_else(|e| panic!("lock the fence {fence}: {e}"))
}
