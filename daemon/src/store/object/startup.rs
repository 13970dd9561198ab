//! Opening an object store: the OpenDAL operator built from the config, and the startup probe
//! that checks on a throwaway object that the store enforces the conditions the lock protocol
//! needs (a store that does not is refused, or accepted in weak mode if the config says so).

use opendal::Operator;

use super::request::Put;
use super::{ObjectStore, Service};
use crate::store::{StoreError, Version};

impl ObjectStore {
    /// Checks by a live probe on a throwaway object that the store enforces what the lock
    /// protocol needs. Returns the missing capability, if any.
    pub async fn probe(&self, scratch_key: &str) -> Result<Option<String>, StoreError> {
        let outcome = self.probe_steps(scratch_key).await;
        // Whatever happened, the throwaway object goes.
        let _ = self
            .timed("probe", scratch_key, self.operator.delete(scratch_key))
            .await;
        outcome
    }

    async fn probe_steps(&self, scratch_key: &str) -> Result<Option<String>, StoreError> {
        let a = b"vfslock probe a".to_vec();
        let first = match self.put(scratch_key, &a, None, None).await? {
            Put::Written(tag) => tag,
            Put::Refused => {
                return Err(StoreError::new(format!(
                    "the probe object {scratch_key} already exists; remove it"
                )))
            }
        };
        let mut missing = None;
        if let Put::Written(_) = self
            .put(scratch_key, b"vfslock probe b", None, None)
            .await?
        {
            missing = Some("create-if-not-exists is not enforced (a second create succeeded)");
        }
        if missing.is_none() && self.service != Service::Sftp {
            let wrong = Version {
                bytes: Vec::new(),
                tag: Some(if self.service.uses_generations() {
                    "1".to_owned()
                } else {
                    "\"00000000000000000000000000000000\"".to_owned()
                }),
            };
            let wrong = if wrong.tag == first {
                Version {
                    tag: Some("2".into()),
                    ..wrong
                }
            } else {
                wrong
            };
            let overwrite = self
                .operator
                .write_with(scratch_key, b"vfslock probe c".to_vec());
            let overwrite = if self.service.uses_generations() {
                overwrite.if_version_match(wrong.tag.as_deref().unwrap_or_default())
            } else {
                overwrite.if_match(wrong.tag.as_deref().unwrap_or_default())
            };
            let overwritten = self.timed("probe", scratch_key, overwrite).await?.is_ok();
            let kept = self
                .read_versioned(scratch_key)
                .await?
                .is_some_and(|o| o.bytes == a);
            if overwritten || !kept {
                missing = Some("a conditional overwrite with a wrong version was not refused");
            } else {
                let delete = self.operator.delete_with(scratch_key);
                let delete = if self.service.uses_generations() {
                    delete.if_version_match(wrong.tag.as_deref().unwrap_or_default())
                } else {
                    delete.if_match(wrong.tag.as_deref().unwrap_or_default())
                };
                let deleted = self.timed("probe", scratch_key, delete).await?.is_ok();
                let kept = self.read_versioned(scratch_key).await?.is_some();
                if deleted || !kept {
                    missing = Some("a conditional delete with a wrong version was not refused");
                }
            }
        }
        let _ = self
            .timed("probe", scratch_key, self.operator.delete(scratch_key))
            .await;
        Ok(missing.map(str::to_owned))
    }
}

/// Builds, probes and returns the store `config` describes.
pub async fn open(
    config: &crate::config::ObjectStoreSettings,
    settings: &crate::config::Settings,
) -> Result<ObjectStore, StoreError> {
    use crate::address::Scheme;
    // The HTTP services need a process-wide transport (reqwest, rustls); idempotent.
    opendal::install_default();
    let (scheme, authority, start) = &config.parsed;
    let at = |e: opendal::Error| StoreError::new(format!("store {}: {e}", config.prefix));
    let (operator, service) = match scheme {
        Scheme::S3 => {
            let mut builder = opendal::services::S3::default()
                .bucket(authority)
                .region(config.region.as_deref().unwrap_or("us-east-1"))
                .root("/")
                .disable_config_load();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(id) = &config.access_key_id {
                builder = builder.access_key_id(id.expose());
            }
            if let Some(secret) = &config.secret_access_key {
                builder = builder.secret_access_key(secret.expose());
            }
            if config.virtual_host_style {
                builder = builder.enable_virtual_host_style();
            }
            (Operator::new(builder).map_err(at)?, Service::S3)
        }
        Scheme::Gcs => {
            let mut builder = opendal::services::Gcs::default()
                .bucket(authority)
                .root("/")
                .disable_config_load()
                .disable_vm_metadata()
                // A lock file is a few hundred bytes: one upload carrying its precondition, not
                // a resumable session. A lost answer is settled by reading back (`request.rs`),
                // which is what makes the one-request path safe here.
                .enable_single_request_conditional_write();
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(path) = &config.credential_path {
                builder = builder.credential_path(path);
            }
            if config.skip_signature {
                builder = builder.skip_signature();
            }
            (Operator::new(builder).map_err(at)?, Service::Gcs)
        }
        Scheme::Azblob => {
            let mut builder = opendal::services::Azblob::default()
                .container(authority)
                .root("/");
            if let Some(endpoint) = &config.endpoint {
                builder = builder.endpoint(endpoint);
            }
            if let Some(name) = &config.account_name {
                builder = builder.account_name(name);
            }
            if let Some(key) = &config.account_key {
                builder = builder.account_key(key.expose());
            }
            (Operator::new(builder).map_err(at)?, Service::Azblob)
        }
        #[cfg(unix)]
        Scheme::Sftp => {
            let mut builder = opendal::services::Sftp::default()
                .endpoint(&format!("ssh://{authority}"))
                .root("/")
                .known_hosts_strategy(config.known_hosts.as_deref().unwrap_or("strict"));
            if let Some(key) = &config.key {
                builder = builder.key(key);
            }
            (Operator::new(builder).map_err(at)?, Service::Sftp)
        }
        other => {
            return Err(StoreError::new(format!(
                "store {}: {} is not an object store this build supports",
                config.prefix,
                other.as_str()
            )))
        }
    };
    let store = ObjectStore::new(operator, service, config.fencing, config.request_timeout);
    #[cfg(feature = "faults")]
    let store = if settings.faults.write_then_fail.is_some() || settings.faults.ignore_conditions {
        store.with_faults(crate::store::faults::Faults {
            write_then_fail: settings.faults.write_then_fail.unwrap_or(0.0),
            ignore_conditions: settings.faults.ignore_conditions,
            injected: Default::default(),
        })
    } else {
        store
    };
    #[cfg(not(feature = "faults"))]
    let _ = settings;
    let mut store = store;
    // The probe object sits under the prefix, where the daemon is meant to write.
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let start = if *scheme == Scheme::Sftp {
        start.trim_start_matches('/').to_owned()
    } else {
        start.clone()
    };
    let dir = match start.rfind('/') {
        Some(at) => &start[..=at],
        None => "",
    };
    let probe_key = format!("{dir}.vfslock-probe-{:016x}", u64::from_ne_bytes(nonce));
    match store.probe(&probe_key).await {
        Ok(None) => {}
        Ok(Some(missing)) if config.accept_weak => {
            tracing::error!(store = %config.prefix, %missing, "store accepted in WEAK mode: mutual exclusion is not guaranteed");
            store.accept_weak(missing);
        }
        Ok(Some(missing)) => {
            return Err(StoreError::new(format!(
                "store {} refused: {missing}. The lock protocol needs it; set \
                 `accept-weak = true` for this store to run without the guarantee",
                config.prefix
            )))
        }
        Err(e) => {
            return Err(StoreError::new(format!(
                "store {}: the startup probe failed: {e}",
                config.prefix
            )))
        }
    }
    Ok(store)
}
