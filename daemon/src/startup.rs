//! Starting the daemon: the checks a configuration must pass before the daemon changes anything
//! on the host, and why a start failed.
//!
//! [`check`] runs every startup check that has no side effect (the settings were already parsed
//! and their `env:` secrets read by [`crate::config`]): the `[[access]]` names resolve, the
//! `[stores.file]` roots exist, and the files the object stores read (keys, credentials) can be
//! read. [`crate::run`] runs it before it creates a directory, binds a socket or probes a
//! store, and `vfslockd --check-config` runs it alone, so an operator learns before a restart
//! what would stop the daemon.
//!
//! [`StartError`] is the one error of a start. It sits above every layer it wraps (each layer
//! has its own error type, which imports nothing from above), and tells the binary which exit
//! code to use: 78 (`EX_CONFIG`) for a configuration that restarting cannot fix, so that
//! systemd does not restart the daemon in a loop (`RestartPreventExitStatus=78`).

use std::path::PathBuf;

use crate::access::{Access, AccessError};
use crate::config::{ConfigError, Settings};
#[cfg(unix)]
use crate::instance::InstanceError;
use crate::journal::JournalError;
use crate::server::BindError;
use crate::store::StoreError;
use crate::systemd::PassedSocketError;

/// Why the daemon could not start. Each variant's message leaves its cause out: print it with
/// [`crate::error::Chain`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The `[[access]]` names or `[stores.file]` roots do not resolve.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// systemd passed something other than a listening Unix stream socket.
    #[error(transparent)]
    PassedSocket(#[from] PassedSocketError),
    /// The socket's directory could not be created.
    #[error("cannot create the socket directory {}", dir.display())]
    SocketDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another daemon serves the socket, or its lock file cannot be opened.
    #[cfg(unix)]
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The SFTP store's `ssh` control directory (`<socket>.ssh`) could not be created.
    #[cfg(unix)]
    #[error(
        "cannot create {}, where the SFTP store's ssh keeps its control sockets \
         (it sits beside the socket: the daemon needs write access to that directory)",
        dir.display()
    )]
    SshDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A store could not be opened or failed its startup probe.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The crash journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The metrics listener (`[metrics] listen`) could not be bound.
    #[error(transparent)]
    Metrics(#[from] crate::server::metrics::MetricsListenError),
    /// The audit log (`[audit] path`) could not be opened.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The metrics socket systemd passed could not be served.
    #[error("cannot serve the metrics socket systemd passed (vfslockd-metrics.socket)")]
    MetricsPassed(#[source] std::io::Error),
    /// The supervisor of the lock actors could not be started.
    #[error("cannot start the supervisor of the lock actors")]
    Supervisor(#[source] ractor::SpawnErr),
}

impl StartError {
    /// Whether the configuration (the file, or the units that start the daemon) is what is
    /// wrong, so that starting again unchanged fails again: exit 78 (`EX_CONFIG`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Config(_) | StartError::Access(_) | StartError::PassedSocket(_)
        )
    }
}

/// Runs every startup check that has no side effect (module docs) and returns the access
/// checks built from the settings.
pub fn check(settings: &Settings) -> Result<Access, StartError> {
    let access = Access::new(settings)?;
    for store in &settings.stores.object {
        store.check_files()?;
    }
    Ok(access)
}

/// What in the settings works but is probably not what was meant, for the log at startup and
/// for `--check-config`.
pub fn warnings(settings: &Settings) -> Vec<String> {
    let mut warnings = Vec::new();
    if settings.secrets_readable_by_others {
        warnings.push(
            "the config file holds secrets and others can read it: chmod 600 it, or use \
             env:NAME values"
                .to_owned(),
        );
    }
    if let Some(group) = &settings.daemon.admin_group {
        if crate::access::group_id(group).is_none() {
            warnings.push(format!(
                "the admin group {group} does not exist: only root may break locks"
            ));
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Chain;

    fn settings(text: &str) -> Settings {
        Settings::from_toml(Some((text, "test"))).expect("valid config")
    }

    #[test]
    fn unknown_access_names_are_configuration_errors() {
        let err = check(&settings(
            "[[access]]\nprefix = \"mem://\"\ngroups = [\"no-such-group-of-vfslock\"]\n",
        ))
        .unwrap_err();
        assert!(err.is_config(), "{err:?}");
        assert!(
            Chain(&err)
                .to_string()
                .contains("no group named no-such-group-of-vfslock"),
            "{err}"
        );
    }

    #[test]
    fn a_key_file_that_cannot_be_read_is_named_with_its_store_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("missing-key");
        let err = check(&settings(&format!(
            "[[stores.object]]\nprefix = \"sftp://me@host/srv/\"\nkey = {:?}\n",
            key.display().to_string()
        )))
        .unwrap_err();
        assert!(err.is_config(), "{err:?}");
        let printed = Chain(&err).to_string();
        assert!(
            printed.contains("sftp://me@host/srv/")
                && printed.contains(&format!("cannot read the `key` file {}", key.display())),
            "{printed}"
        );
        assert!(
            matches!(
                std::error::Error::source(&err).and_then(std::error::Error::source),
                Some(io) if io.is::<std::io::Error>()
            ),
            "the I/O error is kept as the cause: {err:?}"
        );
        std::fs::write(&key, "a key").unwrap();
        check(&settings(&format!(
            "[[stores.object]]\nprefix = \"sftp://me@host/srv/\"\nkey = {:?}\n",
            key.display().to_string()
        )))
        .unwrap();
    }

    #[test]
    fn a_missing_admin_group_is_a_warning_only() {
        let settings = settings("[daemon]\nadmin-group = \"no-such-group-of-vfslock\"\n");
        check(&settings).unwrap();
        let warnings = warnings(&settings);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("no-such-group-of-vfslock"),
            "{warnings:?}"
        );
    }
}
