//! `vfslockctl acquire | release | renew`: detached leases for scripts whose steps run as
//! separate processes (take the lock in one cron step, release it in another).
//!
//! A detached lease belongs to the caller's uid and its lock id, not to a connection: closing
//! the connection does not release it, SIGTERM to the daemon leaves it in place, and a restarted
//! daemon still knows it (its lock file is its whole state). It is not renewed: it lasts its TTL
//! unless `renew` extends it or `release` ends it, by the same uid or an admin.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use vfslock::{Client, ErrorKind};

use super::output::{emit, emit_json, key_values};
use super::{Failure, EXIT_CONFLICT};
use crate::duration;

/// Arguments of `vfslockctl acquire`.
#[derive(Args, Debug)]
pub(super) struct AcquireArgs {
    /// The target to lock.
    target: String,
    /// How long the lease lasts (required: nothing renews it).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    ttl: Duration,
    /// Owner id written into the lock file.
    #[arg(long, value_name = "ID")]
    owner: Option<String>,
    /// Wait up to DURATION for the lock instead of failing at once.
    #[arg(short = 'w', long = "timeout", value_name = "DURATION", value_parser = duration::parse)]
    timeout: Option<Duration>,
    #[command(flatten)]
    mode: super::mode::ModeArgs,
}

/// Arguments of `vfslockctl release` and `renew`.
#[derive(Args, Debug)]
pub(super) struct LeaseArgs {
    /// The target of the lease.
    pub(super) target: String,
    /// The lease's lock id, as `acquire` printed it.
    #[arg(long = "lock-id", value_name = "ID")]
    lock_id: String,
    /// `renew` only: a new TTL from now (default: the lease's own).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    ttl: Option<Duration>,
}

/// Takes a detached lease and prints its lock id and token.
pub(super) async fn acquire(client: &Client, args: AcquireArgs, json: bool) -> Result<u8, Failure> {
    let wait = args.timeout.map(Some);
    let lease = match client
        .acquire_detached_in(&args.target, args.ttl, args.owner, wait, args.mode.mode())
        .await
    {
        Ok(lease) => lease,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::AlreadyHeld | ErrorKind::Timeout | ErrorKind::ModeConflict
            ) =>
        {
            return Err(Failure::new(EXIT_CONFLICT, e.message()))
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        emit_json(&json!({
            "target": lease.target,
            "lock_id": lease.lock_id,
            "token": lease.token,
            "ttl_seconds": args.ttl.as_secs_f64(),
        }))?;
    } else {
        let mut rows = vec![
            ("target", lease.target.clone()),
            ("lock id", lease.lock_id.clone()),
        ];
        if let Some(token) = lease.token {
            rows.push(("token", token.to_string()));
        }
        rows.push(("ttl", duration::format(args.ttl)));
        rows.push((
            "release",
            format!(
                "vfslockctl release {} --lock-id {}",
                lease.target, lease.lock_id
            ),
        ));
        emit(&key_values(&rows))?;
    }
    Ok(0)
}

/// Ends a detached lease.
pub(super) async fn release(client: &Client, args: LeaseArgs, json: bool) -> Result<u8, Failure> {
    let held = client.release_detached(&args.target, &args.lock_id).await?;
    if json {
        emit_json(&json!({ "target": args.target, "lock_id": args.lock_id, "released": held }))?;
    } else if held {
        emit(&format!("released {} ({})\n", args.target, args.lock_id))?;
    } else {
        emit(&format!(
            "{} holds no detached lease {}: nothing to release\n",
            args.target, args.lock_id
        ))?;
    }
    Ok(0)
}

/// Extends a detached lease.
pub(super) async fn renew(client: &Client, args: LeaseArgs, json: bool) -> Result<u8, Failure> {
    let meta = match client
        .renew_detached(&args.target, &args.lock_id, args.ttl)
        .await
    {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::LeaseLost => {
            return Err(Failure::new(EXIT_CONFLICT, e.message()))
        }
        Err(e) => return Err(e.into()),
    };
    let expires = meta.expires_at().and_then(super::output::rfc3339);
    if json {
        emit_json(&json!({
            "target": args.target,
            "lock_id": args.lock_id,
            "ttl_seconds": meta.ttl().map(|t| t.as_secs_f64()),
            "expires_at": expires,
        }))?;
    } else {
        emit(&format!(
            "renewed {} ({}) until {}\n",
            args.target,
            args.lock_id,
            expires.unwrap_or_else(|| "-".into())
        ))?;
    }
    Ok(0)
}
