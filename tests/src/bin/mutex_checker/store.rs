//! Where the run's targets live: a shared directory of `file://` targets, or a run-unique
//! prefix in a bucket of one of the test object stores (`tests/servers/start.sh` starts them
//! on loopback and writes their `VFSLOCK_TEST_*` variables to `tests/servers/run/env`).
//!
//! For an object store, each daemon's config gets the matching `[[stores.object]]` table,
//! and the coordinator talks to the bucket itself through OpenDAL, built as the daemon builds
//! it, to find holders (for the kills aimed at them) and orphan lock objects.

use std::time::Duration;

use opendal::Operator;

/// How long one request of the coordinator to the store may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which store the targets are in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// A directory on the local file system, shared by the daemons.
    File,
    /// S3 (moto).
    S3,
    /// Google Cloud Storage (cloudbox).
    Gcs,
    /// Azure Blob Storage (Azurite).
    Azblob,
}

impl StoreKind {
    /// The name `--store` takes and the summary line shows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gcs",
            StoreKind::Azblob => "azblob",
        }
    }

    /// The URL scheme of its targets.
    fn scheme(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gs",
            StoreKind::Azblob => "azblob",
        }
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "file" => StoreKind::File,
            "s3" => StoreKind::S3,
            "gcs" | "gs" => StoreKind::Gcs,
            "azblob" | "az" => StoreKind::Azblob,
            _ => return Err("expected file, s3, gcs or azblob".into()),
        })
    }
}

/// A test server's setting from the environment; its absence says how to get it.
fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!(
            "{name} is not set: start the test servers with tests/servers/start.sh and source \
             tests/servers/run/env (tests/run.sh does both)"
        )
    })
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// The run's targets in a bucket of an object store.
pub(crate) struct ObjectStore {
    kind: StoreKind,
    /// The bucket or container.
    bucket: String,
    /// The run's own key prefix, without a trailing `/`.
    run_prefix: String,
    /// The `[[stores.object]]` table every daemon's config gets.
    table: String,
    operator: Operator,
    runtime: tokio::runtime::Runtime,
}

impl ObjectStore {
    /// The store `kind` as the test servers' environment describes it, with a key prefix of
    /// this run's own (`mutex-checker-<time>-<pid>`).
    pub(crate) fn from_env(kind: StoreKind) -> Result<ObjectStore, String> {
        // The HTTP services need a process-wide transport; idempotent.
        opendal::install_default();
        let built = |e: opendal::Error| format!("{} operator: {e}", kind.name());
        let (bucket, table, operator) = match kind {
            StoreKind::File => return Err("file:// is not an object store".into()),
            StoreKind::S3 => {
                let endpoint = var("VFSLOCK_TEST_S3_ENDPOINT")?;
                let bucket = var("VFSLOCK_TEST_S3_BUCKET")?;
                let region = var("VFSLOCK_TEST_S3_REGION")?;
                let key_id = var("VFSLOCK_TEST_S3_ACCESS_KEY_ID")?;
                let secret = var("VFSLOCK_TEST_S3_SECRET_ACCESS_KEY")?;
                // The secrets stay out of the file: the daemons read them from the
                // environment they inherit from this process.
                let table = format!(
                    "[[stores.object]]\nprefix = {}\nendpoint = {}\nregion = {}\n\
                     access-key-id = \"env:VFSLOCK_TEST_S3_ACCESS_KEY_ID\"\n\
                     secret-access-key = \"env:VFSLOCK_TEST_S3_SECRET_ACCESS_KEY\"\n",
                    quoted(&format!("s3://{bucket}/")),
                    quoted(&endpoint),
                    quoted(&region),
                );
                let builder = opendal::services::S3::default()
                    .bucket(&bucket)
                    .endpoint(&endpoint)
                    .region(&region)
                    .access_key_id(&key_id)
                    .secret_access_key(&secret)
                    .root("/")
                    .disable_config_load();
                (bucket, table, Operator::new(builder).map_err(built)?)
            }
            StoreKind::Gcs => {
                let endpoint = var("VFSLOCK_TEST_GCS_ENDPOINT")?;
                let bucket = var("VFSLOCK_TEST_GCS_BUCKET")?;
                let table = format!(
                    "[[stores.object]]\nprefix = {}\nendpoint = {}\nskip-signature = true\n",
                    quoted(&format!("gs://{bucket}/")),
                    quoted(&endpoint),
                );
                let builder = opendal::services::Gcs::default()
                    .bucket(&bucket)
                    .endpoint(&endpoint)
                    .root("/")
                    .skip_signature()
                    .disable_config_load()
                    .disable_vm_metadata();
                (bucket, table, Operator::new(builder).map_err(built)?)
            }
            StoreKind::Azblob => {
                let endpoint = var("VFSLOCK_TEST_AZBLOB_ENDPOINT")?;
                let container = var("VFSLOCK_TEST_AZBLOB_CONTAINER")?;
                let account = var("VFSLOCK_TEST_AZBLOB_ACCOUNT")?;
                let key = var("VFSLOCK_TEST_AZBLOB_KEY")?;
                let table = format!(
                    "[[stores.object]]\nprefix = {}\nendpoint = {}\naccount-name = {}\n\
                     account-key = \"env:VFSLOCK_TEST_AZBLOB_KEY\"\n",
                    quoted(&format!("azblob://{container}/")),
                    quoted(&endpoint),
                    quoted(&account),
                );
                let builder = opendal::services::Azblob::default()
                    .container(&container)
                    .endpoint(&endpoint)
                    .account_name(&account)
                    .account_key(&key)
                    .root("/");
                (container, table, Operator::new(builder).map_err(built)?)
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(ObjectStore {
            kind,
            bucket,
            run_prefix: format!(
                "mutex-checker-{}-{}",
                since_epoch.as_millis(),
                std::process::id()
            ),
            table,
            operator,
            runtime,
        })
    }

    /// The `[[stores.object]]` table for the daemons' config.
    pub(crate) fn config_table(&self) -> &str {
        &self.table
    }

    /// Where the targets are: `<scheme>://<bucket>/<run prefix>`, the targets being
    /// `…/t0` … `…/tK`.
    pub(crate) fn base_url(&self) -> String {
        format!(
            "{}://{}/{}",
            self.kind.scheme(),
            self.bucket,
            self.run_prefix
        )
    }

    /// The key of target `index`'s lock object.
    fn lock_key(&self, index: usize) -> String {
        format!("{}/t{index}.lock", self.run_prefix)
    }

    fn block_on<T>(
        &self,
        what: &str,
        call: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<T, String> {
        self.runtime.block_on(async {
            match tokio::time::timeout(REQUEST_TIMEOUT, call.into_future()).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(format!("{what}: {e}")),
                Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
            }
        })
    }

    /// The body of target `index`'s lock object, if there is one now.
    pub(crate) fn read_lock(&self, index: usize) -> Option<Vec<u8>> {
        let key = self.lock_key(index);
        self.block_on(&key, self.operator.read(&key))
            .ok()
            .map(|buffer| buffer.to_vec())
    }

    /// The body of the object at `key`, as text (empty if it cannot be read).
    pub(crate) fn read_text(&self, key: &str) -> String {
        self.block_on(key, self.operator.read(key))
            .map(|buffer| String::from_utf8_lossy(&buffer.to_vec()).into_owned())
            .unwrap_or_default()
    }

    /// Every object key under the run's prefix, sorted.
    fn keys(&self) -> Result<Vec<String>, String> {
        let prefix = format!("{}/", self.run_prefix);
        let entries = self.block_on(
            &format!("list {prefix}"),
            self.operator.list_with(&prefix).recursive(true),
        )?;
        let mut keys: Vec<String> = entries
            .into_iter()
            .filter(|entry| !entry.metadata().is_dir())
            .map(|entry| entry.path().trim_start_matches('/').to_owned())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The lock objects under the run's prefix: `*.lock`, not the `.lock.fence` counters
    /// (which persist by design).
    pub(crate) fn lock_objects(&self) -> Result<Vec<String>, String> {
        Ok(self
            .keys()?
            .into_iter()
            .filter(|key| is_lock_object(key))
            .collect())
    }

    /// `scheme://bucket/key`, for messages.
    pub(crate) fn url_of(&self, key: &str) -> String {
        format!("{}://{}/{key}", self.kind.scheme(), self.bucket)
    }

    /// Removes everything under the run's prefix (after a clean run; the daemons are gone).
    pub(crate) fn remove_run(&self) -> Result<usize, String> {
        let keys = self.keys()?;
        for key in &keys {
            self.block_on(&format!("delete {key}"), self.operator.delete(key))?;
        }
        Ok(keys.len())
    }
}

/// Whether an object key names a lock object (`….lock`), not a fence (`….lock.fence`) or
/// anything else.
fn is_lock_object(key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.ends_with(".lock") && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_parse_and_print() {
        for kind in [
            StoreKind::File,
            StoreKind::S3,
            StoreKind::Gcs,
            StoreKind::Azblob,
        ] {
            assert_eq!(kind.name().parse::<StoreKind>(), Ok(kind));
        }
        assert_eq!("gs".parse::<StoreKind>(), Ok(StoreKind::Gcs));
        assert!("sftp".parse::<StoreKind>().is_err());
    }

    #[test]
    fn only_lock_objects_count_not_fences_or_probes() {
        let keys = [
            "run/t0.lock",
            "run/t0.lock.fence",
            "run/t1.lock.fence",
            "run/.vfslock-probe-00ff",
            "run/t1",
            "run/t2.lock",
        ];
        let locks: Vec<&str> = keys.into_iter().filter(|key| is_lock_object(key)).collect();
        assert_eq!(locks, ["run/t0.lock", "run/t2.lock"]);
    }

    #[test]
    fn a_toml_string_is_quoted_and_escaped() {
        assert_eq!(quoted("s3://locks/"), "\"s3://locks/\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
