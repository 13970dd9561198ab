//! `vfslockctl top`: which targets are contended right now, who holds them and for how long,
//! and how busy the daemon and its stores are, refreshed every second (`q` quits). For the
//! operator who wants to know why a job waits, without reading logs.
//!
//! `--once` prints one frame as text and `--json` one JSON document, for scripts; both take two
//! looks a second apart, so that their rates are rates. Every look reads what the daemon keeps
//! in memory (`Request::ListQueues` and the metrics, through the control socket): a refresh
//! never makes the daemon read a lock file.
//!
//! | file        | does                                                         |
//! |-------------|--------------------------------------------------------------|
//! | `sample.rs` | one look at the daemon, and the rates between two looks      |
//! | `mod.rs`    | the frame: rows in order, as text and as JSON                |
//! | `tui.rs`    | the live view on a terminal                                  |

mod sample;
mod tui;

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use serde_json::json;
use vfslock::{Client, LockMode, QueuedLock};

use super::output::{emit, emit_json, mode_json, or_dash, seconds, table};
use super::Failure;
use crate::duration;
use sample::{Rates, Sample};

/// How often the view is refreshed, and how far apart the two looks of `--once` are.
const REFRESH: Duration = Duration::from_secs(1);

/// Arguments of `vfslockctl top`.
#[derive(Args, Debug)]
pub(super) struct TopArgs {
    /// Print one frame as text and exit (two looks a second apart, for the rates).
    #[arg(long)]
    once: bool,
    /// Show at most this many targets (the most contended first).
    #[arg(long, short = 'n', default_value_t = 20, value_name = "N")]
    limit: usize,
}

/// Runs `top`: the live view on a terminal, else one frame (text, or JSON with `--json`).
pub(super) async fn top(client: &Client, args: TopArgs, json: bool) -> Result<u8, Failure> {
    if !json && !args.once && std::io::stdout().is_terminal() {
        return tui::run(client, args.limit).await;
    }
    let before = Sample::take(client).await?;
    tokio::time::sleep(REFRESH).await;
    let after = Sample::take(client).await?;
    let frame = Frame::new(&before, &after, args.limit);
    if json {
        emit_json(&frame.json())?;
    } else {
        emit(&frame.text())?;
    }
    Ok(0)
}

/// What one refresh shows.
struct Frame<'a> {
    sample: &'a Sample,
    rates: Rates,
    rows: Vec<Row>,
    /// Targets left out by the limit.
    more: usize,
}

/// One target's line.
struct Row {
    target: String,
    waiters: u32,
    oldest_wait: Option<Duration>,
    mode: LockMode,
    holders: u32,
    holder: Option<Holder>,
}

/// Who holds a target, here or elsewhere.
struct Holder {
    host: String,
    pid: Option<i64>,
    owner: Option<String>,
    held_for: Option<Duration>,
    /// A client of this daemon (else the last holder seen in the lock file).
    here: bool,
}

impl Holder {
    /// "pid 42 on host-a (owner nightly)".
    fn describe(&self) -> String {
        let owner = self
            .owner
            .as_deref()
            .map(|o| format!(" (owner {o})"))
            .unwrap_or_default();
        match self.pid {
            Some(pid) if pid > 0 => format!("pid {pid} on {}{owner}", self.host),
            _ => format!("{}{owner}", self.host),
        }
    }
}

impl<'a> Frame<'a> {
    /// The frame of `after`, with the rates since `before`: the most waiters first, then the
    /// longest wait, at most `limit` rows.
    fn new(before: &Sample, after: &'a Sample, limit: usize) -> Frame<'a> {
        let mut rows: Vec<Row> = after
            .targets
            .iter()
            .map(|queued| row(queued, &after.status.hostname))
            .collect();
        rows.sort_by(|a, b| {
            b.waiters
                .cmp(&a.waiters)
                .then(b.oldest_wait.cmp(&a.oldest_wait))
                .then(a.target.cmp(&b.target))
        });
        let more = rows.len().saturating_sub(limit);
        rows.truncate(limit);
        Frame {
            sample: after,
            rates: Rates::between(before, after),
            rows,
            more,
        }
    }

    /// The header lines: the daemon, then its rates.
    fn header(&self) -> Vec<String> {
        let status = &self.sample.status;
        let mut lines = vec![format!(
            "vfslockd {} on {} (pid {}, up {}): {} held, {} waiting, {} connections",
            status.daemon_version,
            status.hostname,
            status.pid,
            duration::humanize(status.uptime),
            status.held,
            status.waiting,
            status.sessions,
        )];
        let mut rates = vec![match self.rates.acquisitions {
            Some(rate) => format!("acquires {rate:.1}/s"),
            None => "acquires ?/s (no metrics from this daemon)".to_owned(),
        }];
        for store in &self.rates.stores {
            let latency = store
                .mean_latency
                .map(|l| format!("{:.2} ms", l.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".to_owned());
            rates.push(format!(
                "{}: {:.1} req/s, {latency} mean, {:.1} errors/s",
                store.store, store.requests, store.errors
            ));
        }
        lines.push(rates.join(" | "));
        lines
    }

    const COLUMNS: [&'static str; 6] = [
        "TARGET",
        "WAITERS",
        "OLDEST WAIT",
        "HOLDER",
        "HELD FOR",
        "MODE",
    ];

    /// The rows as table cells.
    fn cells(&self) -> Vec<Vec<String>> {
        self.rows
            .iter()
            .map(|row| {
                let holder = row.holder.as_ref();
                let mut who = or_dash(holder.map(Holder::describe));
                if holder.is_some_and(|h| !h.here) {
                    who.push_str(" [elsewhere]");
                }
                vec![
                    row.target.clone(),
                    row.waiters.to_string(),
                    or_dash(row.oldest_wait.map(duration::humanize)),
                    who,
                    or_dash(holder.and_then(|h| h.held_for).map(duration::humanize)),
                    mode_name(row.mode, row.holders),
                ]
            })
            .collect()
    }

    /// The frame as text: header, a blank line, the table.
    fn text(&self) -> String {
        let mut text = self.header().join("\n");
        text.push_str("\n\n");
        text.push_str(&table(&Self::COLUMNS, &self.cells()));
        if self.more > 0 {
            text.push_str(&format!("(and {} more)\n", self.more));
        }
        text
    }

    /// The frame as one JSON document; see the module docs of [`super`].
    fn json(&self) -> serde_json::Value {
        let status = &self.sample.status;
        json!({
            "hostname": status.hostname,
            "daemon_version": status.daemon_version,
            "pid": status.pid,
            "held": status.held,
            "waiting": status.waiting,
            "sessions": status.sessions,
            "interval_seconds": seconds(self.rates.over),
            "acquisitions_per_second": self.rates.acquisitions,
            "stores": self.rates.stores.iter().map(|s| json!({
                "store": s.store,
                "requests_per_second": s.requests,
                "mean_latency_seconds": s.mean_latency.map(seconds),
                "errors_per_second": s.errors,
            })).collect::<Vec<_>>(),
            "targets": self.rows.iter().map(|row| json!({
                "target": row.target,
                "waiters": row.waiters,
                "oldest_wait_seconds": row.oldest_wait.map(seconds),
                "mode": mode_json(row.mode).0,
                "slots": mode_json(row.mode).1,
                "holders": row.holders,
                "holder": row.holder.as_ref().map(|h| json!({
                    "hostname": h.host,
                    "pid": h.pid,
                    "owner_id": h.owner,
                    "held_for_seconds": h.held_for.map(seconds),
                    "here": h.here,
                })),
            })).collect::<Vec<_>>(),
            "more_targets": self.more,
        })
    }
}

/// A target's row: its holder here, else the last one seen elsewhere.
fn row(queued: &QueuedLock, hostname: &str) -> Row {
    let entry = &queued.listed.entry;
    let holder = if entry.held_for.is_some() {
        Some(Holder {
            host: hostname.to_owned(),
            pid: entry.pid,
            owner: entry.owner_id.clone(),
            held_for: entry.held_for,
            here: true,
        })
    } else {
        queued.foreign_holder.as_ref().map(|f| Holder {
            host: f.holder.hostname.clone(),
            pid: Some(f.holder.pid),
            owner: f.holder.owner_id.clone(),
            held_for: Some(f.seen_for),
            here: false,
        })
    };
    Row {
        target: entry.target.clone(),
        waiters: entry.waiters,
        oldest_wait: queued.oldest_wait,
        mode: queued.listed.mode,
        holders: queued.listed.holders,
        holder,
    }
}

/// "exclusive", "shared x3", "slots:4 x2".
fn mode_name(mode: LockMode, holders: u32) -> String {
    let name = match mode {
        LockMode::Exclusive => "exclusive".to_owned(),
        LockMode::Shared => "shared".to_owned(),
        LockMode::Slots(n) => format!("slots:{n}"),
    };
    if holders > 1 {
        format!("{name} x{holders}")
    } else {
        name
    }
}
