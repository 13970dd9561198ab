//! `[metrics]`: whether the daemon records metrics, and where Prometheus may scrape them.

use serde::{Deserialize, Serialize};

use super::{non_empty, ConfigError};

/// `[metrics]` as written.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawMetrics {
    enabled: Option<bool>,
    listen: Option<String>,
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// Whether metrics are recorded at all (`vfslockctl metrics` and the listener answer that
    /// they are off otherwise).
    pub enabled: bool,
    /// Where the HTTP listener for scrapes listens: an `IP:port` or a Unix socket path. `None`:
    /// no listener (the control socket still serves `vfslockctl metrics`).
    pub listen: Option<String>,
}

impl MetricsSettings {
    pub(super) fn from_raw(raw: &RawMetrics) -> Result<MetricsSettings, ConfigError> {
        let listen = non_empty(&raw.listen);
        if let Some(address) = &listen {
            let is_path = address.starts_with('/');
            if !is_path && address.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Value {
                    key: "metrics.listen".into(),
                    problem: format!(
                        "{address:?} is neither an IP address with a port (127.0.0.1:9464, \
                         [::1]:9464) nor an absolute Unix socket path"
                    ),
                });
            }
        }
        Ok(MetricsSettings {
            enabled: raw.enabled.unwrap_or(true),
            listen,
        })
    }

    pub(super) fn to_raw(&self) -> RawMetrics {
        RawMetrics {
            enabled: Some(self.enabled),
            listen: Some(self.listen.clone().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    #[test]
    fn metrics_are_recorded_by_default_and_served_on_no_port() {
        let settings = Settings::defaults();
        assert!(settings.metrics.enabled);
        assert_eq!(settings.metrics.listen, None);
    }

    #[test]
    fn listen_takes_an_address_with_a_port_or_a_socket_path() {
        for good in ["127.0.0.1:9464", "[::1]:9464", "/run/vfslock/metrics.sock"] {
            let text = format!("[metrics]\nlisten = {good:?}\n");
            let settings = Settings::from_toml(Some((&text, "t"))).unwrap();
            assert_eq!(settings.metrics.listen.as_deref(), Some(good));
        }
        for bad in ["9464", "localhost", "relative/metrics.sock"] {
            let text = format!("[metrics]\nlisten = {bad:?}\n");
            let err = Settings::from_toml(Some((&text, "t"))).unwrap_err();
            let message = crate::error::Chain(&err).to_string();
            assert!(message.contains("metrics.listen"), "{message}");
        }
    }
}
