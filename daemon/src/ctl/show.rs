//! `vfslockctl show TARGET`: who holds a lock, wherever the lock file is and whoever wrote it
//! (this daemon, another host's, the Go library, a foreign tool, or a crash that left garbage).
//! The already-held error of `run` points here.
//!
//! A target without a lock file is an answer, not an error: `TARGET is not locked` on stdout
//! (`"locked": false` with `--json`) and exit code 1, so that `if vfslockctl show T` reads as
//! "if T is locked".

use std::time::SystemTime;

use clap::Args;
use serde_json::json;
use vfslock::{Client, HolderView, LockFileFormat, LockMetadata, LockMode, LockView};

use super::output::{
    emit, emit_json, key_values, mode_json, or_dash, relative, rfc3339, seconds, table,
};
use super::{Failure, EXIT_NOT_LOCKED};
use crate::duration;

/// Arguments of `vfslockctl show`.
#[derive(Args, Debug)]
pub(super) struct ShowArgs {
    /// The locked file: an absolute path, file:///path or mem:///path.
    pub(super) target: String,
}

/// Prints `target`'s lock file; see the module docs of [`super`] for the JSON fields.
pub(super) async fn show(client: &Client, target: &str, json: bool) -> Result<u8, Failure> {
    let Some(view) = client.describe(target).await? else {
        if json {
            emit_json(&json!({ "target": target, "locked": false }))?;
        } else {
            emit(&format!("{target} is not locked\n"))?;
        }
        return Ok(EXIT_NOT_LOCKED);
    };
    let meta = &view.lock;
    if json {
        let mut value = to_json(target, meta);
        let (mode, slots) = mode_json(view.mode);
        value["mode"] = mode.into();
        value["slots"] = slots.into();
        value["holders"] = view.holders.iter().map(holder_json).collect();
        emit_json(&value)?;
    } else {
        let mut rows = to_rows(target, meta);
        if view.mode != LockMode::Exclusive {
            rows.insert(1, ("mode", view.mode.to_string()));
            rows.insert(2, ("holders", holders_summary(&view)));
        }
        let mut text = key_values(&rows);
        if view.mode != LockMode::Exclusive {
            text.push_str(&holders_table(&view.holders));
        }
        emit(&text)?;
    }
    Ok(0)
}

fn holders_summary(view: &LockView) -> String {
    let taken: u32 = view.holders.iter().map(|h| h.count).sum();
    match view.mode {
        LockMode::Slots(n) => format!("{} ({taken} of {n} slots taken)", view.holders.len()),
        _ => view.holders.len().to_string(),
    }
}

fn expiry(holder: &HolderView) -> Option<SystemTime> {
    let ns = u64::try_from(holder.expires_unix_ns?).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_nanos(ns))
}

fn holder_json(holder: &HolderView) -> serde_json::Value {
    json!({
        "lock_id": holder.lock_id,
        "hostname": holder.hostname,
        "pid": Some(holder.pid).filter(|&p| p > 0),
        "owner_id": holder.owner_id,
        "uid": holder.uid,
        "token": holder.token,
        "expires_at": expiry(holder).and_then(rfc3339),
        "never_expires": holder.expires_unix_ns.is_none(),
        "slots_taken": holder.count,
        "detached": holder.detached,
        "local": holder.local,
        "expired": holder.expired,
    })
}

/// One line per holder, under the key-value rows.
fn holders_table(holders: &[HolderView]) -> String {
    let rows: Vec<Vec<String>> = holders
        .iter()
        .map(|h| {
            let mut note = Vec::new();
            if h.local {
                note.push("this daemon");
            }
            if h.detached {
                note.push("detached");
            }
            if h.expired {
                note.push("expired");
            }
            vec![
                h.hostname.clone(),
                or_dash(Some(h.pid).filter(|&p| p > 0)),
                or_dash(h.uid),
                or_dash(h.owner_id.as_deref()),
                or_dash(h.token),
                match expiry(h) {
                    Some(t) => when(Some(t)),
                    None => "never".to_owned(),
                },
                h.count.to_string(),
                if note.is_empty() {
                    "-".to_owned()
                } else {
                    note.join(", ")
                },
            ]
        })
        .collect();
    let headers = [
        "HOST", "PID", "UID", "OWNER", "TOKEN", "EXPIRES", "SLOTS", "NOTE",
    ];
    format!("\n{}", table(&headers, &rows))
}

fn format_name(format: LockFileFormat) -> (&'static str, Option<u32>) {
    match format {
        LockFileFormat::Vfslock(version) => ("vfslock", Some(version)),
        LockFileFormat::Go => ("go", None),
        LockFileFormat::Foreign => ("foreign", None),
        LockFileFormat::Corrupt => ("corrupt", None),
    }
}

/// Files that say nothing about their holder (corrupt ones) carry pid 0 and no hostname.
fn known_pid(meta: &LockMetadata) -> Option<i64> {
    Some(meta.pid).filter(|&pid| pid > 0)
}

fn known_hostname(meta: &LockMetadata) -> Option<&str> {
    Some(meta.hostname.as_str()).filter(|h| !h.is_empty())
}

fn ttl_seconds(meta: &LockMetadata) -> f64 {
    // The raw nanoseconds, so that a negative lease (stale at once, as Go reads it) shows.
    meta.ttl_ns as f64 / 1e9
}

fn to_json(target: &str, meta: &LockMetadata) -> serde_json::Value {
    let (format, version) = format_name(meta.format);
    json!({
        "target": target,
        "locked": true,
        "format": format,
        "format_version": version,
        "hostname": known_hostname(meta),
        "pid": known_pid(meta),
        "owner_id": meta.owner_id,
        "created_at": meta.created_at().and_then(rfc3339),
        "acquired_at": meta.acquired_at().and_then(rfc3339),
        "age_seconds": meta.age().map(seconds),
        "ttl_seconds": ttl_seconds(meta),
        "never_expires": meta.ttl_ns == 0,
        "expires_at": meta.expires_at().and_then(rfc3339),
        "stale": meta.stale,
        "lock_id": meta.lock_id,
        "daemon_id": meta.daemon_id,
        "token": meta.token,
        "uid": meta.uid,
        "detached": meta.detached,
    })
}

fn when(time: Option<SystemTime>) -> String {
    match time {
        Some(t) => match rfc3339(t) {
            Some(text) => format!("{text} ({})", relative(t)),
            None => "-".to_owned(),
        },
        None => "-".to_owned(),
    }
}

fn to_rows(target: &str, meta: &LockMetadata) -> Vec<(&'static str, String)> {
    let format = match format_name(meta.format) {
        (name, Some(version)) => format!("{name} v{version}"),
        (name, None) => name.to_owned(),
    };
    let ttl = match meta.ttl() {
        Some(ttl) => duration::format(ttl),
        None if meta.ttl_ns == 0 => "never expires".to_owned(),
        None => format!("{}ns (stale from the start)", meta.ttl_ns),
    };
    let expires = if meta.ttl_ns == 0 {
        "never".to_owned()
    } else {
        when(meta.expires_at())
    };
    let mut rows = vec![
        ("target", target.to_owned()),
        ("format", format),
        ("hostname", or_dash(known_hostname(meta))),
        ("pid", or_dash(known_pid(meta))),
        ("owner", or_dash(meta.owner_id.as_deref())),
        ("created", or_dash(meta.created_at().and_then(rfc3339))),
    ];
    if meta.acquired_at().is_some() {
        rows.push(("acquired", when(meta.acquired_at())));
    }
    rows.extend([
        ("age", or_dash(meta.age().map(duration::humanize))),
        ("ttl", ttl),
        ("expires at", expires),
        ("stale", if meta.stale { "yes" } else { "no" }.to_owned()),
        ("lock id", or_dash(meta.lock_id.as_deref())),
        ("daemon id", or_dash(meta.daemon_id.as_deref())),
        ("token", or_dash(meta.token)),
        ("uid", or_dash(meta.uid)),
    ]);
    if meta.detached {
        rows.push((
            "detached",
            "yes: ends by `vfslockctl release --lock-id`, or its TTL".into(),
        ));
    }
    rows
}
