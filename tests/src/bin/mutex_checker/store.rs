//! Where the run's targets live: a shared directory of `file://` targets, a run-unique
//! prefix in a bucket of one of the test object stores, or run-unique file names in the root
//! of the test SFTP server (`tests/servers/start.sh` starts them on loopback and writes their
//! `VFSLOCK_TEST_*` variables to `tests/servers/run/env`).
//!
//! For an object store, each daemon's config gets the matching `[[stores.object]]` table,
//! and the coordinator talks to the bucket itself through OpenDAL, built as the daemon builds
//! it, to find holders (for the kills aimed at them) and orphan lock objects. On SFTP it uses
//! the system `sftp` client with the test key instead: this binary's OpenDAL is built without
//! the `services-sftp` feature (only the daemon and the test harness have it).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// SFTP (OpenSSH), which the daemon runs in create-only mode: no fencing tokens, no
    /// stale steals, no handoff.
    Sftp,
}

impl StoreKind {
    /// The name `--store` takes and the summary line shows.
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gcs",
            StoreKind::Azblob => "azblob",
            StoreKind::Sftp => "sftp",
        }
    }

    /// The URL scheme of its targets.
    fn scheme(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::S3 => "s3",
            StoreKind::Gcs => "gs",
            StoreKind::Azblob => "azblob",
            StoreKind::Sftp => "sftp",
        }
    }

    /// Whether its grants carry fencing tokens: not on SFTP (create-only mode).
    pub(crate) fn has_tokens(self) -> bool {
        self != StoreKind::Sftp
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
            "sftp" => StoreKind::Sftp,
            _ => return Err("expected file, s3, gcs, azblob or sftp".into()),
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

/// The bucket of a run-private moto (`ObjectStore::private_s3`).
pub(crate) const PRIVATE_S3_BUCKET: &str = "locks";

/// An OpenDAL operator on an S3 bucket, built as the daemon builds it.
fn s3_operator(
    endpoint: &str,
    bucket: &str,
    region: &str,
    key_id: &str,
    secret: &str,
) -> opendal::Result<Operator> {
    let builder = opendal::services::S3::default()
        .bucket(bucket)
        .endpoint(endpoint)
        .region(region)
        .access_key_id(key_id)
        .secret_access_key(secret)
        .root("/")
        .disable_config_load();
    Operator::new(builder)
}

/// An operator on the bucket of a run-private moto at `endpoint`, for a thread with a runtime
/// of its own (an operator's pooled connections belong to the runtime that opened them).
pub(crate) fn private_s3_operator(endpoint: &str) -> Result<Operator, String> {
    s3_operator(endpoint, PRIVATE_S3_BUCKET, "us-east-1", "test", "test")
        .map_err(|e| format!("s3 operator: {e}"))
}

/// A TOML basic string (JSON's escapes are TOML's).
fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

/// How the coordinator reaches the store.
enum Access {
    /// Through OpenDAL, built as the daemon builds it.
    Dal {
        operator: Operator,
        runtime: tokio::runtime::Runtime,
    },
    /// Through the system `sftp` client.
    Sftp(SftpCli),
}

/// The run's targets in a bucket of an object store, or in the root of the SFTP server.
pub(crate) struct ObjectStore {
    kind: StoreKind,
    /// The bucket or container; for SFTP `user@host:port` (the URL's authority).
    bucket: String,
    /// The run's own key prefix, without a trailing `/` (`mutex-checker-<time>-<pid>`).
    run_prefix: String,
    /// The `[[stores.object]]` table every daemon's config gets.
    table: String,
    access: Access,
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
            StoreKind::Sftp => {
                let cli = SftpCli::from_env()?;
                let authority = cli.authority();
                // The SFTP server needs the parent directory to exist: the targets are files
                // directly in its root, named after the run (`<root>/<run prefix>-t0`).
                let table = format!(
                    "[[stores.object]]\nprefix = {}\nkey = {}\nknown-hosts = \"strict\"\n",
                    quoted(&format!("sftp://{authority}{}/", cli.root)),
                    quoted(&cli.key),
                );
                return Ok(ObjectStore {
                    kind,
                    bucket: authority,
                    run_prefix: run_prefix(),
                    table,
                    access: Access::Sftp(cli),
                });
            }
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
                let operator =
                    s3_operator(&endpoint, &bucket, &region, &key_id, &secret).map_err(built)?;
                (bucket, table, operator)
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
        Ok(ObjectStore {
            kind,
            bucket,
            run_prefix: run_prefix(),
            table,
            access: Access::Dal { operator, runtime },
        })
    }

    /// The run's targets on a moto of the run's own at `endpoint` (the partition mode starts
    /// one on a veth address): bucket `locks`, moto's test credentials, which are no secret
    /// and so are written into the table.
    pub(crate) fn private_s3(endpoint: &str) -> Result<ObjectStore, String> {
        opendal::install_default();
        let (bucket, region, key) = (PRIVATE_S3_BUCKET, "us-east-1", "test");
        // A short request timeout: the partitioned daemon's requests hang on the cut link,
        // and a lease is a few seconds long.
        let table = format!(
            "[[stores.object]]\nprefix = {}\nendpoint = {}\nregion = {}\n\
             access-key-id = {}\nsecret-access-key = {}\nrequest-timeout = \"2s\"\n",
            quoted(&format!("s3://{bucket}/")),
            quoted(endpoint),
            quoted(region),
            quoted(key),
            quoted(key),
        );
        let operator = private_s3_operator(endpoint)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        Ok(ObjectStore {
            kind: StoreKind::S3,
            bucket: bucket.to_owned(),
            run_prefix: run_prefix(),
            table,
            access: Access::Dal { operator, runtime },
        })
    }

    /// The key of the object behind target `<target prefix><name>`.
    pub(crate) fn key_of(&self, name: &str) -> String {
        format!("{}/{name}.lock", self.run_prefix)
    }

    /// The `[[stores.object]]` table for the daemons' config.
    pub(crate) fn config_table(&self) -> &str {
        &self.table
    }

    /// What the targets' URLs start with; target `i` is `<this>t<i>`:
    /// `<scheme>://<bucket>/<run prefix>/` on an object store, `sftp://<user@host:port><root>/
    /// <run prefix>-` on SFTP (files directly in the root, whose parent exists).
    pub(crate) fn target_prefix(&self) -> String {
        match &self.access {
            Access::Dal { .. } => format!(
                "{}://{}/{}/",
                self.kind.scheme(),
                self.bucket,
                self.run_prefix
            ),
            Access::Sftp(cli) => format!(
                "{}://{}{}/{}-",
                self.kind.scheme(),
                self.bucket,
                cli.root,
                self.run_prefix
            ),
        }
    }

    /// The key of target `index`'s lock object (on SFTP its absolute path).
    fn lock_key(&self, index: usize) -> String {
        match &self.access {
            Access::Dal { .. } => format!("{}/t{index}.lock", self.run_prefix),
            Access::Sftp(cli) => format!("{}/{}-t{index}.lock", cli.root, self.run_prefix),
        }
    }

    /// Runs one OpenDAL request with [`REQUEST_TIMEOUT`].
    fn block_on<T>(
        runtime: &tokio::runtime::Runtime,
        what: &str,
        call: impl std::future::IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<T, String> {
        runtime.block_on(async {
            match tokio::time::timeout(REQUEST_TIMEOUT, call.into_future()).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) => Err(format!("{what}: {e}")),
                Err(_) => Err(format!("{what}: no answer within {REQUEST_TIMEOUT:?}")),
            }
        })
    }

    /// The body of the object at `key`.
    fn read(&self, key: &str) -> Result<Vec<u8>, String> {
        match &self.access {
            Access::Dal { operator, runtime } => {
                Self::block_on(runtime, key, operator.read(key)).map(|buffer| buffer.to_vec())
            }
            Access::Sftp(cli) => cli.get(key),
        }
    }

    /// The body of target `index`'s lock object, if there is one now.
    pub(crate) fn read_lock(&self, index: usize) -> Option<Vec<u8>> {
        self.read(&self.lock_key(index)).ok()
    }

    /// The body of the object at `key`, as text (empty if it cannot be read).
    pub(crate) fn read_text(&self, key: &str) -> String {
        self.read(key)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Every object key of the run, sorted: under the run's prefix; on SFTP the absolute paths
    /// of the files in the root whose names start with `<run prefix>-`.
    fn keys(&self) -> Result<Vec<String>, String> {
        let mut keys: Vec<String> = match &self.access {
            Access::Dal { operator, runtime } => {
                let prefix = format!("{}/", self.run_prefix);
                let entries = Self::block_on(
                    runtime,
                    &format!("list {prefix}"),
                    operator.list_with(&prefix).recursive(true),
                )?;
                entries
                    .into_iter()
                    .filter(|entry| !entry.metadata().is_dir())
                    .map(|entry| entry.path().trim_start_matches('/').to_owned())
                    .collect()
            }
            Access::Sftp(cli) => {
                let mine = format!("{}-", self.run_prefix);
                cli.list_root()?
                    .into_iter()
                    .filter(|name| name.starts_with(&mine))
                    .map(|name| format!("{}/{name}", cli.root))
                    .collect()
            }
        };
        keys.sort();
        Ok(keys)
    }

    /// The run's lock objects: `*.lock`, not the `.lock.fence` counters (which persist by
    /// design).
    pub(crate) fn lock_objects(&self) -> Result<Vec<String>, String> {
        Ok(self
            .keys()?
            .into_iter()
            .filter(|key| is_lock_object(key))
            .collect())
    }

    /// `scheme://bucket/key` (`sftp://user@host:port/abs/path`), for messages.
    pub(crate) fn url_of(&self, key: &str) -> String {
        match &self.access {
            Access::Dal { .. } => format!("{}://{}/{key}", self.kind.scheme(), self.bucket),
            Access::Sftp(_) => format!("{}://{}{key}", self.kind.scheme(), self.bucket),
        }
    }

    /// Removes every object of the run (after a clean run; the daemons are gone).
    pub(crate) fn remove_run(&self) -> Result<usize, String> {
        let keys = self.keys()?;
        match &self.access {
            Access::Dal { operator, runtime } => {
                for key in &keys {
                    Self::block_on(runtime, &format!("delete {key}"), operator.delete(key))?;
                }
            }
            Access::Sftp(cli) => {
                if !keys.is_empty() {
                    let batch: String = keys
                        .iter()
                        .map(|key| format!("rm {}\n", sftp_quoted(key)))
                        .collect();
                    cli.batch(&batch)?;
                }
            }
        }
        Ok(keys.len())
    }
}

/// `mutex-checker-<ms since the epoch>-<pid>`.
fn run_prefix() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "mutex-checker-{}-{}",
        since_epoch.as_millis(),
        std::process::id()
    )
}

/// A path for an `sftp` batch line, in double quotes (the client's quoting).
fn sftp_quoted(path: &str) -> String {
    format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The system `sftp` client against the test SFTP server, with the test key, in batch mode,
/// with strict host-key checking (as `tests/servers/check.py` runs it).
struct SftpCli {
    user: String,
    host: String,
    port: u16,
    key: String,
    /// The root directory, absolute, without a trailing `/`.
    root: String,
    /// A known_hosts file other than the default, if the environment names one.
    known_hosts: Option<String>,
}

impl SftpCli {
    fn from_env() -> Result<SftpCli, String> {
        let endpoint = var("VFSLOCK_TEST_SFTP_ENDPOINT")?;
        let (user, host, port) = parse_endpoint(&endpoint).ok_or_else(|| {
            format!("VFSLOCK_TEST_SFTP_ENDPOINT={endpoint:?}: expected ssh://user@host:port")
        })?;
        let user = match user {
            Some(user) => user,
            None => var("VFSLOCK_TEST_SFTP_USER")?,
        };
        let root = var("VFSLOCK_TEST_SFTP_ROOT")?
            .trim_end_matches('/')
            .to_owned();
        if !root.starts_with('/') {
            return Err(format!(
                "VFSLOCK_TEST_SFTP_ROOT={root:?}: expected an absolute path"
            ));
        }
        Ok(SftpCli {
            user,
            host,
            port,
            key: var("VFSLOCK_TEST_SFTP_KEY")?,
            root,
            known_hosts: std::env::var("VFSLOCK_TEST_SFTP_KNOWN_HOSTS")
                .ok()
                .filter(|path| !path.is_empty()),
        })
    }

    /// `user@host:port`.
    fn authority(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// Runs `commands` (one a line) in one `sftp -b -` session; its standard output. Fails if
    /// a command fails (batch mode stops there), or after [`REQUEST_TIMEOUT`].
    fn batch(&self, commands: &str) -> Result<String, String> {
        let mut command = Command::new("sftp");
        command
            .args([
                "-q",
                "-b",
                "-",
                "-i",
                &self.key,
                "-P",
                &self.port.to_string(),
            ])
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]);
        if let Some(path) = &self.known_hosts {
            command.arg("-o").arg(format!("UserKnownHostsFile={path}"));
        }
        let mut child = command
            .arg(format!("{}@{}", self.user, self.host))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start sftp: {e}"))?;
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut text);
                }
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = drain(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let stderr = drain(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            // Dropping stdin ends the batch.
            let _ = stdin.write_all(commands.as_bytes());
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let first = commands.lines().next().unwrap_or_default();
        match status {
            Some(status) if status.success() => Ok(stdout),
            Some(status) => Err(format!("sftp {first:?}…: {status}: {}", stderr.trim())),
            None => Err(format!(
                "sftp {first:?}…: no answer within {REQUEST_TIMEOUT:?}"
            )),
        }
    }

    /// The names of the files and directories in the root.
    fn list_root(&self) -> Result<Vec<String>, String> {
        let out = self.batch(&format!("ls -1a {}\n", sftp_quoted(&self.root)))?;
        Ok(listed_names(&out))
    }

    /// The body of the file at `path`.
    fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let local = tempfile::Builder::new()
            .prefix("mutex-checker-get-")
            .tempfile()
            .map_err(|e| format!("temporary file: {e}"))?;
        let local_path = local.path().to_string_lossy().into_owned();
        self.batch(&format!(
            "get {} {}\n",
            sftp_quoted(path),
            sftp_quoted(&local_path)
        ))?;
        std::fs::read(local.path()).map_err(|e| format!("{local_path}: {e}"))
    }
}

/// `(user, host, port)` of `ssh://[user@]host[:port]` (port 22 by default).
fn parse_endpoint(endpoint: &str) -> Option<(Option<String>, String, u16)> {
    let authority = endpoint
        .strip_prefix("ssh://")
        .or_else(|| endpoint.strip_prefix("sftp://"))
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, rest)) => (Some(user.to_owned()), rest),
        None => (None, authority),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (host_port, 22),
    };
    (!host.is_empty()).then(|| (user, host.to_owned(), port))
}

/// The names an `sftp` batch `ls -1` printed: its echo of the command (`sftp> …`) and the
/// `.` and `..` entries left out, a path reduced to its last component.
fn listed_names(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("sftp>"))
        .map(|line| line.rsplit('/').next().unwrap_or(line).to_owned())
        .filter(|name| !name.is_empty() && name != "." && name != "..")
        .collect()
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
            StoreKind::Sftp,
        ] {
            assert_eq!(kind.name().parse::<StoreKind>(), Ok(kind));
            assert_eq!(kind.has_tokens(), kind != StoreKind::Sftp);
        }
        assert_eq!("gs".parse::<StoreKind>(), Ok(StoreKind::Gcs));
        assert!("nfs".parse::<StoreKind>().is_err());
    }

    #[test]
    fn an_sftp_endpoint_gives_user_host_and_port() {
        assert_eq!(
            parse_endpoint("ssh://vfslocktest@127.0.0.1:19122"),
            Some((Some("vfslocktest".into()), "127.0.0.1".into(), 19122))
        );
        assert_eq!(
            parse_endpoint("ssh://files.example.org/"),
            Some((None, "files.example.org".into(), 22))
        );
        assert_eq!(parse_endpoint("ssh://u@h:port"), None);
        assert_eq!(parse_endpoint("ssh://u@:22"), None);
    }

    #[test]
    fn an_sftp_listing_gives_the_names() {
        let out = "sftp> ls -1a \"/home/v/locks\"\n/home/v/locks/.\n/home/v/locks/..\n\
                   /home/v/locks/mutex-checker-1-2-t0.lock\n\
                   /home/v/locks/.vfslock-probe-00ff\nplain\n\n";
        assert_eq!(
            listed_names(out),
            ["mutex-checker-1-2-t0.lock", ".vfslock-probe-00ff", "plain"]
        );
        assert_eq!(sftp_quoted("/a b/\"c\""), "\"/a b/\\\"c\\\"\"");
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
