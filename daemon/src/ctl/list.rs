//! `vfslockctl list`: what this daemon holds and queues right now, to find the process behind
//! a busy lock or a queue that does not move.
//!
//! With nothing held or queued the table is just its header, so that scripts reading the
//! human output see the same shape either way (`--json` prints `[]`).

use clap::Args;
use serde_json::json;
use vfslock::{Client, ForeignHolder, ListEntry, LockMode, QueuedLock};

use super::output::{emit, emit_json, mode_json, or_dash, seconds, table};
use super::Failure;
use crate::duration;

/// Arguments of `vfslockctl list`.
#[derive(Args, Debug)]
pub(super) struct ListArgs {
    /// Only targets whose normalized URL starts with PREFIX (e.g. `s3://locks/team-a/`).
    #[arg(long = "target", value_name = "PREFIX")]
    prefix: Option<String>,
}

/// Prints the locks held and queued through the daemon; see the module docs of [`super`] for
/// the JSON fields.
pub(super) async fn list(client: &Client, args: ListArgs, json: bool) -> Result<u8, Failure> {
    let mut entries = client.list_queues().await?;
    if let Some(prefix) = &args.prefix {
        // A plain path prefix means the same as its file:// URL, as targets do.
        let url = if prefix.starts_with('/') {
            format!("file://{prefix}")
        } else {
            prefix.clone()
        };
        entries.retain(|e| e.listed.entry.target.starts_with(&url));
    }
    entries.sort_by(|a, b| a.listed.entry.target.cmp(&b.listed.entry.target));
    if json {
        emit_json(&serde_json::Value::Array(
            entries.iter().map(entry_json).collect(),
        ))?;
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = entries.iter().map(entry_row).collect();
    emit(&table(
        &[
            "TARGET",
            "PID",
            "UID",
            "OWNER",
            "AGE",
            "TTL",
            "TOKEN",
            "WAITERS",
            "MODE",
            "HOLDERS",
            "WAITED",
            "ELSEWHERE",
        ],
        &rows,
    ))?;
    Ok(0)
}

/// Whether this daemon's client holds the target; the others are only waited on here.
fn held_here(entry: &ListEntry) -> bool {
    entry.held_for.is_some()
}

/// The mode as the table names it (`slots:3` for a semaphore).
fn mode_name(mode: LockMode) -> String {
    match mode {
        LockMode::Exclusive => "exclusive".to_owned(),
        LockMode::Shared => "shared".to_owned(),
        LockMode::Slots(n) => format!("slots:{n}"),
    }
}

fn entry_json(queued: &QueuedLock) -> serde_json::Value {
    let listed = &queued.listed;
    let entry = &listed.entry;
    json!({
        "mode": mode_json(listed.mode).0,
        "slots": mode_json(listed.mode).1,
        "holders": listed.holders,
        "target": entry.target,
        "lock_id": entry.lock_id,
        "pid": entry.pid,
        "uid": entry.uid,
        "owner_id": entry.owner_id,
        "age_seconds": entry.held_for.map(seconds),
        "ttl_seconds": held_here(entry).then(|| seconds(entry.ttl)),
        "token": entry.token,
        "waiters": entry.waiters,
        "oldest_wait_seconds": queued.oldest_wait.map(seconds),
        "foreign_holder": queued.foreign_holder.as_ref().map(|f| json!({
            "hostname": f.holder.hostname,
            "pid": f.holder.pid,
            "owner_id": f.holder.owner_id,
            "lock_id": f.holder.lock_id,
            "seen_for_seconds": seconds(f.seen_for),
            "last_seen_seconds": seconds(f.last_seen),
        })),
    })
}

/// "pid 42 on host-a (owner nightly), 3m 12s": the last holder seen in the lock file from
/// elsewhere, and how long it has held the lock as far as this daemon can tell.
fn foreign_cell(foreign: &ForeignHolder) -> String {
    let h = &foreign.holder;
    let owner = h
        .owner_id
        .as_deref()
        .map(|o| format!(" (owner {o})"))
        .unwrap_or_default();
    let who = if h.pid > 0 {
        format!("pid {} on {}{owner}", h.pid, h.hostname)
    } else {
        format!("{}{owner}", h.hostname)
    };
    format!("{who}, {}", duration::humanize(foreign.seen_for))
}

fn entry_row(queued: &QueuedLock) -> Vec<String> {
    let listed = &queued.listed;
    let entry = &listed.entry;
    let ttl = if !held_here(entry) {
        "-".to_owned()
    } else if entry.ttl.is_zero() {
        "never".to_owned()
    } else {
        duration::format(entry.ttl)
    };
    vec![
        entry.target.clone(),
        or_dash(entry.pid),
        or_dash(entry.uid),
        or_dash(entry.owner_id.as_deref()),
        or_dash(entry.held_for.map(duration::humanize)),
        ttl,
        or_dash(entry.token),
        entry.waiters.to_string(),
        // New columns go last: scripts reading the table by position keep working.
        mode_name(listed.mode),
        listed.holders.to_string(),
        or_dash(queued.oldest_wait.map(duration::humanize)),
        or_dash(queued.foreign_holder.as_ref().map(foreign_cell)),
    ]
}
