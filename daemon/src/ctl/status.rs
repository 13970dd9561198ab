//! `vfslockctl status`: is the daemon there, which one is it, and how busy is it. The first
//! thing to run when a lock misbehaves.

use serde_json::json;
use vfslock::Client;

use super::output::{emit, emit_json, key_values, seconds};
use super::Failure;
use crate::duration;

/// Prints the daemon's status; see the module docs of [`super`] for the JSON fields.
pub(super) async fn status(client: &Client, json: bool) -> Result<u8, Failure> {
    let status = client.status().await?;
    let socket = client.socket_path().display().to_string();
    if json {
        let stores: Vec<_> = status
            .stores
            .iter()
            .map(|s| {
                let counters: serde_json::Map<String, serde_json::Value> = s
                    .counters
                    .iter()
                    .map(|(name, value)| (name.clone(), json!(value)))
                    .collect();
                json!({ "scheme": s.scheme, "description": s.description, "counters": counters })
            })
            .collect();
        emit_json(&json!({
            "socket": socket,
            "daemon_version": status.daemon_version,
            "protocol_version": status.protocol_version,
            "pid": status.pid,
            "hostname": status.hostname,
            "instance_id": status.instance_id,
            "uptime_seconds": seconds(status.uptime),
            "stores": stores,
            "held": status.held,
            "waiting": status.waiting,
            "sessions": status.sessions,
            "targets": status.targets,
        }))?;
        return Ok(0);
    }
    let mut rows = vec![
        ("daemon", format!("vfslockd {}", status.daemon_version)),
        ("protocol", status.protocol_version.to_string()),
        ("pid", status.pid.to_string()),
        ("host", status.hostname),
        ("instance", status.instance_id),
        ("uptime", duration::humanize(status.uptime)),
        ("socket", socket),
    ];
    let width = status
        .stores
        .iter()
        .map(|s| s.scheme.len())
        .max()
        .unwrap_or(0);
    if status.stores.is_empty() {
        rows.push(("stores", "none".to_owned()));
    }
    for (i, store) in status.stores.iter().enumerate() {
        let key = if i == 0 { "stores" } else { "" };
        rows.push((
            key,
            format!("{:<width$}  {}", store.scheme, store.description),
        ));
        if !store.counters.is_empty() {
            let counters: Vec<String> = store
                .counters
                .iter()
                .map(|(name, value)| format!("{name} {value}"))
                .collect();
            rows.push((
                "",
                format!("{:<width$}  counts: {}", "", counters.join(", ")),
            ));
        }
    }
    rows.extend([
        ("held", status.held.to_string()),
        ("waiting", status.waiting.to_string()),
        ("sessions", status.sessions.to_string()),
        ("targets", status.targets.to_string()),
    ]);
    emit(&key_values(&rows))?;
    Ok(0)
}
