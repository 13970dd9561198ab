//! `vfslockctl break TARGET`: remove a stuck lock, like `terraform force-unlock`, when its
//! holder is known to be gone and waiting for its TTL is not an option.
//!
//! Only root and members of the daemon's admin group may; the daemon decides from the socket's
//! peer credentials (supplementary groups included), not from anything this tool says. The
//! break is logged with who and why, and a holder served by a `vfslockd` learns that its lease
//! is lost.

use clap::Args;
use serde_json::json;
use vfslock::Client;

use super::output::{emit, emit_json};
use super::Failure;

/// Arguments of `vfslockctl break`.
#[derive(Args, Debug)]
pub(super) struct BreakArgs {
    /// The target whose lock to remove.
    pub(super) target: String,
    /// Why, for the daemon's log and the holder.
    #[arg(long, value_name = "TEXT", default_value = "broken with vfslockctl")]
    reason: String,
}

/// Breaks the lock and says whose it was.
pub(super) async fn break_lock(
    client: &Client,
    args: BreakArgs,
    json: bool,
) -> Result<u8, Failure> {
    let broken = client.break_lock(&args.target, &args.reason).await?;
    if json {
        emit_json(&json!({
            "target": args.target,
            "broken": broken.is_some(),
            "hostname": broken.as_ref().map(|m| m.hostname.clone()),
            "pid": broken.as_ref().map(|m| m.pid),
            "owner_id": broken.as_ref().and_then(|m| m.owner_id.clone()),
            "lock_id": broken.as_ref().and_then(|m| m.lock_id.clone()),
        }))?;
        return Ok(0);
    }
    match broken {
        // An empty or corrupt file names no holder: say so rather than "pid 0 on ".
        Some(meta) if meta.pid == 0 && meta.hostname.is_empty() => emit(&format!(
            "broke the lock on {} (its lock file named no holder)\n",
            args.target
        ))?,
        Some(meta) => emit(&format!(
            "broke the lock on {} (held by pid {} on {}{})\n",
            args.target,
            meta.pid,
            meta.hostname,
            meta.owner_id
                .map(|o| format!(", owner {o}"))
                .unwrap_or_default()
        ))?,
        None => emit(&format!(
            "{} was not locked: nothing to break\n",
            args.target
        ))?,
    }
    Ok(0)
}
