//! `vfslockctl wait TARGET`: returns once TARGET is not held, without taking it, for a job
//! that must run after another one (`vfslockctl wait /srv/inbox/data.csv && ./report.sh`) and
//! for scripts that today poll `show` in a loop.
//!
//! Exit codes as `run`'s: 0 once the target is not held (at once if it is free), 1 when the
//! wait timed out (`-E` chooses another code), 69 without a daemon. Nothing is printed on
//! success; `--json` prints `{target, released, waited_seconds}`.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use vfslock::{Client, ErrorKind};

use super::output::emit_json;
use super::Failure;
use crate::duration;

/// Arguments of `vfslockctl wait`.
#[derive(Args, Debug)]
pub(super) struct WaitArgs {
    /// Wait at most DURATION (300ms, 30s, 5m; a bare number is seconds). Default: as long as
    /// it takes.
    #[arg(short = 'w', long = "timeout", value_name = "DURATION", value_parser = duration::parse)]
    timeout: Option<Duration>,
    #[command(flatten)]
    conflict: super::ConflictCode,
    /// The target to wait for (a path, relative or absolute, or a URL).
    pub(super) target: String,
}

/// Waits until `args.target` is not held.
pub(super) async fn wait(client: &Client, args: WaitArgs, json: bool) -> Result<u8, Failure> {
    let started = Instant::now();
    match client.wait_released(&args.target, args.timeout).await {
        Ok(()) => {
            if json {
                emit_json(&json!({
                    "target": args.target,
                    "released": true,
                    "waited_seconds": started.elapsed().as_secs_f64(),
                }))?;
            }
            Ok(0)
        }
        Err(e) if e.kind() == ErrorKind::Timeout => {
            Err(Failure::new(args.conflict.code, e.message()))
        }
        Err(e) => Err(e.into()),
    }
}
