//! Metrics for the monitoring an operator already runs: the daemon's insides as Prometheus
//! series. The server serves them on an optional HTTP listener (`server::metrics`) and
//! through the control socket (`vfslockctl metrics`), so that a textfile collector or a
//! one-off look needs no port. This module is the registry alone, below the stores that record
//! into it; it knows nothing of the daemon around it.
//!
//! The registry and both exposition formats are `prometheus-client`'s: OpenMetrics for a
//! scraper that asks for it, and the classic Prometheus text (0.0.4) for everyone else, which
//! Debian 12's `promtool` and the node exporter's textfile collector read.
//!
//! Recording stays off the locks' critical path: each store's series are looked up once
//! ([`StoreInstruments`]), so recording is an atomic add, or one short uncontended lock for a
//! histogram. The figures the daemon keeps anyway (sessions, targets, the journal, restarts)
//! are read when a scrape asks, not recorded. With `[metrics] enabled = false` nothing is
//! recorded and no clock is read for it.

pub mod instruments;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use instruments::{FailureKind, LossCause, ModeLabel, Operation, Outcome, StoreInstruments};

/// Which text a scrape gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The classic Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format for an HTTP request's `Accept` header: OpenMetrics only when asked for.
    pub fn for_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// The `Content-Type` of the text.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Upper bounds of the wait-time buckets, seconds: a lock handed over at once up to a nightly
/// job that waited most of an hour.
const WAIT_BUCKETS: [f64; 12] = [
    0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
/// Upper bounds of the hold-time buckets, seconds: up to a day.
const HOLD_BUCKETS: [f64; 11] = [
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0,
];
/// Upper bounds of the store-latency buckets, seconds: a memory table to a slow object store.
const REQUEST_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];

type Labels = Vec<(&'static str, &'static str)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// The labelled families, from which each store's [`StoreInstruments`] are taken.
#[derive(Debug)]
struct Families {
    held: Family<Labels, Gauge>,
    waiting: Family<Labels, Gauge>,
    acquisitions: Family<Labels, Counter>,
    wait: Histograms,
    hold: Histograms,
    requests: Histograms,
    errors: Family<Labels, Counter>,
    renewals: Family<Labels, Counter>,
    renewal_failures: Family<Labels, Counter>,
    lost: Family<Labels, Counter>,
    stolen: Family<Labels, Counter>,
    handoffs: Family<Labels, Counter>,
    capped: Family<Labels, Counter>,
}

/// What a scrape reads from the daemon's own figures just before it encodes.
#[derive(Debug, Default)]
struct ReadAtScrape {
    sessions: Gauge,
    targets: Gauge,
    journal_bytes: Gauge,
    journal_entries: Gauge,
    restarts: Counter,
    last_restart_planned: Gauge,
    resume_kept: Gauge,
    resume_resumed: Gauge,
    resume_lost: Gauge,
    resume_requeued: Gauge,
    resume_window_open: Gauge,
}

/// The daemon's metrics: the registry, and each store's instruments.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    families: Families,
    by_store: Mutex<HashMap<&'static str, Arc<StoreInstruments>>>,
    at_scrape: ReadAtScrape,
    /// One scrape at a time reads and encodes: two would interleave their reads.
    scrape: tokio::sync::Mutex<()>,
}

fn histograms(buckets: fn() -> Histogram) -> Histograms {
    Family::new_with_constructor(buckets)
}

impl Metrics {
    /// A fresh registry with every family registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vfslockd");
        let families = Families {
            held: Family::default(),
            waiting: Family::default(),
            acquisitions: Family::default(),
            wait: histograms(|| Histogram::new(WAIT_BUCKETS)),
            hold: histograms(|| Histogram::new(HOLD_BUCKETS)),
            requests: histograms(|| Histogram::new(REQUEST_BUCKETS)),
            errors: Family::default(),
            renewals: Family::default(),
            renewal_failures: Family::default(),
            lost: Family::default(),
            stolen: Family::default(),
            handoffs: Family::default(),
            capped: Family::default(),
        };
        let at_scrape = ReadAtScrape::default();
        let build = Info::new(vec![
            ("version", env!("CARGO_PKG_VERSION").to_owned()),
            (
                "protocol",
                vfslock_proto::handshake::PROTOCOL_VERSION.to_string(),
            ),
        ]);
        registry.register("build", "The daemon's version and newest protocol", build);
        registry.register(
            "sessions",
            "Open client connections",
            at_scrape.sessions.clone(),
        );
        registry.register(
            "targets",
            "Targets with a live lock actor",
            at_scrape.targets.clone(),
        );
        registry.register(
            "locks_held",
            "Holdings of this daemon's clients, by store and mode",
            families.held.clone(),
        );
        registry.register(
            "locks_waiting",
            "Acquires queued at this daemon, by store and mode",
            families.waiting.clone(),
        );
        registry.register(
            "acquisitions",
            "Acquires answered, by store and outcome",
            families.acquisitions.clone(),
        );
        registry.register(
            "wait_seconds",
            "Time from an acquire's arrival to its grant or its timeout, by store",
            families.wait.clone(),
        );
        registry.register(
            "hold_seconds",
            "Time a lock was held, from its grant to its release or loss, by store",
            families.hold.clone(),
        );
        registry.register(
            "store_request_seconds",
            "Latency of store requests, by store and operation",
            families.requests.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store requests, by store, operation and kind (timeout among them)",
            families.errors.clone(),
        );
        registry.register(
            "renewals",
            "Leases renewed, by store",
            families.renewals.clone(),
        );
        registry.register(
            "renewal_failures",
            "Renewals that failed and were retried, by store",
            families.renewal_failures.clone(),
        );
        registry.register(
            "leases_lost",
            "Leases lost before their holder released them, by store and cause",
            families.lost.clone(),
        );
        registry.register(
            "stale_locks_stolen",
            "Stale lock files taken over, by store",
            families.stolen.clone(),
        );
        registry.register(
            "handoffs",
            "Releases that handed the lock straight to the next waiter here, by store",
            families.handoffs.clone(),
        );
        registry.register(
            "handoff_streaks_capped",
            "Streaks of handoffs ended so that waiters on other hosts get a turn, by store",
            families.capped.clone(),
        );
        registry.register(
            "journal_bytes",
            "Size of the crash journal",
            at_scrape.journal_bytes.clone(),
        );
        registry.register(
            "journal_entries",
            "Holdings the crash journal keeps open",
            at_scrape.journal_entries.clone(),
        );
        registry.register(
            "restarts",
            "Restarts of this daemon (its host id and socket) since its state directory was made",
            at_scrape.restarts.clone(),
        );
        registry.register(
            "last_restart_planned",
            "1 if this start was a planned restart, else 0 (after a crash, or no restart)",
            at_scrape.last_restart_planned.clone(),
        );
        registry.register(
            "resume_kept",
            "Holdings of the run before this restart kept for their sessions",
            at_scrape.resume_kept.clone(),
        );
        registry.register(
            "resume_resumed",
            "Kept holdings their sessions took back",
            at_scrape.resume_resumed.clone(),
        );
        registry.register(
            "resume_lost",
            "Holdings of the run before that were lost",
            at_scrape.resume_lost.clone(),
        );
        registry.register(
            "resume_requeued",
            "Waiters of the run before that asked for their place again",
            at_scrape.resume_requeued.clone(),
        );
        registry.register(
            "resume_window_open",
            "1 while the resume window after a restart is open",
            at_scrape.resume_window_open.clone(),
        );
        Metrics {
            registry,
            families,
            by_store: Mutex::default(),
            at_scrape,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// The instruments of the store labelled `store` (`file`, `mem`, `s3`, ...), made on first
    /// use with every series of its label.
    pub fn store(&self, store: &'static str) -> Arc<StoreInstruments> {
        let mut by_store = self.by_store.lock().expect("metrics stores");
        by_store
            .entry(store)
            .or_insert_with(|| Arc::new(self.make_store(store)))
            .clone()
    }

    fn make_store(&self, store: &'static str) -> StoreInstruments {
        let f = &self.families;
        let one =
            |family: &Family<Labels, Counter>| family.get_or_create_owned(&vec![("store", store)]);
        let with = |key: &'static str, value: &'static str| vec![("store", store), (key, value)];
        StoreInstruments {
            held: ModeLabel::ALL.map(|m| f.held.get_or_create_owned(&with("mode", m.name()))),
            waiting: ModeLabel::ALL.map(|m| f.waiting.get_or_create_owned(&with("mode", m.name()))),
            acquisitions: Outcome::ALL.map(|o| {
                f.acquisitions
                    .get_or_create_owned(&with("outcome", o.name()))
            }),
            wait: f.wait.get_or_create_owned(&vec![("store", store)]),
            hold: f.hold.get_or_create_owned(&vec![("store", store)]),
            requests: Operation::ALL.map(|op| {
                f.requests
                    .get_or_create_owned(&with("operation", op.name()))
            }),
            errors: Operation::ALL.map(|op| {
                FailureKind::ALL.map(|kind| {
                    f.errors.get_or_create_owned(&vec![
                        ("store", store),
                        ("operation", op.name()),
                        ("kind", kind.name()),
                    ])
                })
            }),
            renewals: one(&f.renewals),
            renewal_failures: one(&f.renewal_failures),
            lost: LossCause::ALL.map(|c| f.lost.get_or_create_owned(&with("cause", c.name()))),
            stolen: one(&f.stolen),
            handoffs: one(&f.handoffs),
            capped: one(&f.capped),
        }
    }

    /// The exposition of every series in `format`, with the daemon's own `figures`.
    pub async fn encode(&self, figures: &Figures, format: Format) -> String {
        let _one_at_a_time = self.scrape.lock().await;
        self.read_figures(figures);
        let mut text = String::new();
        let encoded = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        // Writing to a String cannot fail; an error would be a family that cannot be encoded,
        // which the tests catch.
        if let Err(e) = encoded {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }

    fn read_figures(&self, figures: &Figures) {
        let at = &self.at_scrape;
        at.sessions.set(figures.sessions as i64);
        at.targets.set(figures.targets as i64);
        if let Some((bytes, entries)) = figures.journal {
            at.journal_bytes.set(bytes as i64);
            at.journal_entries.set(entries as i64);
        }
        let counted = at.restarts.get();
        if figures.restarts.restarts > counted {
            at.restarts.inc_by(figures.restarts.restarts - counted);
        }
        if let Some(last) = &figures.restarts.last {
            at.last_restart_planned.set(i64::from(last.planned));
            at.resume_kept.set(last.kept as i64);
            at.resume_resumed.set(last.resumed as i64);
            at.resume_lost.set(last.lost as i64);
            at.resume_requeued.set(last.requeued as i64);
            at.resume_window_open
                .set(i64::from(last.window_open_for.is_some()));
        }
    }
}

/// The daemon's own figures, read when a scrape asks.
#[derive(Debug, Default)]
pub struct Figures {
    /// Open client connections.
    pub sessions: u64,
    /// Live target actors.
    pub targets: u64,
    /// The crash journal's size in bytes and its open entries, where there is one.
    pub journal: Option<(u64, usize)>,
    /// Restarts and what the latest one kept.
    pub restarts: vfslock_proto::RestartInfo,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
