//! `vfslockctl status`: is the daemon there, which one is it, and how busy is it. The first
//! thing to run when a lock misbehaves, so it also says whether the daemon restarted and what
//! its latest restart cost its clients.

use serde_json::json;
use vfslock::{Client, ErrorKind, RestartInfo};

use super::output::{emit, emit_json, key_values, seconds};
use super::Failure;
use crate::duration;

/// Prints the daemon's status; see the module docs of [`super`] for the JSON fields.
pub(super) async fn status(client: &Client, json: bool) -> Result<u8, Failure> {
    let status = client.status().await?;
    let restarts = restarts(client).await?;
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
            "restarts": restarts.as_ref().map(|r| r.restarts),
            "last_restart": restarts.as_ref().and_then(|r| r.last.as_ref()).map(|last| json!({
                "planned": last.planned,
                "kept": last.kept,
                "resumed": last.resumed,
                "lost": last.lost,
                "requeued": last.requeued,
                "window_open_seconds": last.window_open_for.map(seconds),
            })),
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
    if let Some(restarts) = &restarts {
        rows.extend(restart_rows(restarts));
    }
    emit(&key_values(&rows))?;
    Ok(0)
}

/// The restart figures, or `None` from a daemon that has none (older than protocol 7): status
/// then shows what it has.
async fn restarts(client: &Client) -> Result<Option<RestartInfo>, Failure> {
    match client.restarts().await {
        Ok(info) => Ok(Some(info)),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `restarts: N`, and what the latest start kept when it was a restart.
fn restart_rows(info: &RestartInfo) -> Vec<(&'static str, String)> {
    let mut rows = vec![("restarts", info.restarts.to_string())];
    let Some(last) = &info.last else {
        return rows;
    };
    let how = if last.planned {
        "planned"
    } else {
        "after a crash"
    };
    let window = match last.window_open_for {
        Some(left) => format!("open for {}", duration::humanize(left)),
        None => "closed".to_owned(),
    };
    rows.extend([
        ("last restart", how.to_owned()),
        ("resumed", format!("{} of {} kept", last.resumed, last.kept)),
        ("lost", last.lost.to_string()),
        ("requeued", last.requeued.to_string()),
        ("resume window", window),
    ]);
    rows
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vfslock::LastRestart;

    use super::*;

    #[test]
    fn a_restart_shows_what_it_kept_and_whether_its_window_is_open() {
        let info = RestartInfo {
            restarts: 2,
            last: Some(LastRestart {
                planned: false,
                kept: 3,
                resumed: 2,
                lost: 1,
                requeued: 4,
                window_open_for: Some(Duration::from_secs(42)),
            }),
        };
        let text = key_values(&restart_rows(&info));
        assert_eq!(
            text,
            "restarts:      2\n\
             last restart:  after a crash\n\
             resumed:       2 of 3 kept\n\
             lost:          1\n\
             requeued:      4\n\
             resume window: open for 42s\n"
        );
    }

    #[test]
    fn a_start_that_was_no_restart_shows_only_the_count() {
        let info = RestartInfo {
            restarts: 1,
            last: None,
        };
        assert_eq!(key_values(&restart_rows(&info)), "restarts: 1\n");
    }
}
