//! One look at the daemon for `top`: its targets (`Request::ListQueues`) and its metrics,
//! and what changed between two looks (rates and latencies over the interval).
//!
//! Everything comes from what the daemon keeps in memory: no look reads a lock file.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use vfslock::{Client, QueuedLock, StatusInfo};

use super::super::Failure;

/// One look.
pub(super) struct Sample {
    pub(super) at: Instant,
    pub(super) status: StatusInfo,
    pub(super) targets: Vec<QueuedLock>,
    /// The metrics' samples, by series (`name{labels}` as written); empty when the daemon
    /// has none (older than protocol 8, or metrics turned off).
    pub(super) series: BTreeMap<String, f64>,
}

impl Sample {
    /// Looks at the daemon now.
    pub(super) async fn take(client: &Client) -> Result<Sample, Failure> {
        let status = client.status().await?;
        let targets = client.list_queues().await?;
        // Without metrics, `top` still shows the targets; the rates show as unknown.
        let series = match client.metrics().await {
            Ok(text) => parse(&text),
            Err(_) => BTreeMap::new(),
        };
        Ok(Sample {
            at: Instant::now(),
            status,
            targets,
            series,
        })
    }

    /// The sum of every series of metric `name` whose labels include each of `labels`.
    pub(super) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series
            .iter()
            .filter(|(series, _)| matches(series, name, labels))
            .map(|(_, value)| value)
            .sum()
    }

    /// The store labels the metrics name.
    pub(super) fn stores(&self) -> Vec<String> {
        let mut stores: Vec<String> = self
            .series
            .keys()
            .filter(|s| s.starts_with("vfslockd_store_request_seconds_count{"))
            .filter_map(|s| label(s, "store"))
            .collect();
        stores.dedup();
        stores
    }
}

/// What changed between two looks, per second.
pub(super) struct Rates {
    /// How long apart the looks were.
    pub(super) over: Duration,
    /// Acquires answered per second.
    pub(super) acquisitions: Option<f64>,
    /// Per store label: store requests per second, their mean latency, errors per second.
    pub(super) stores: Vec<StoreRates>,
}

/// One store's requests between two looks.
pub(super) struct StoreRates {
    pub(super) store: String,
    pub(super) requests: f64,
    pub(super) mean_latency: Option<Duration>,
    pub(super) errors: f64,
}

impl Rates {
    /// The rates between `before` and `after`.
    pub(super) fn between(before: &Sample, after: &Sample) -> Rates {
        let over = after.at.saturating_duration_since(before.at);
        let seconds = over.as_secs_f64().max(1e-9);
        let delta = |name: &str, labels: &[(&str, &str)]| {
            (after.sum(name, labels) - before.sum(name, labels)).max(0.0)
        };
        let acquisitions =
            (!after.series.is_empty()).then(|| delta("vfslockd_acquisitions_total", &[]) / seconds);
        let stores = after
            .stores()
            .into_iter()
            .map(|store| {
                let labels = [("store", store.as_str())];
                let count = delta("vfslockd_store_request_seconds_count", &labels);
                let sum = delta("vfslockd_store_request_seconds_sum", &labels);
                StoreRates {
                    requests: count / seconds,
                    mean_latency: (count > 0.0).then(|| Duration::from_secs_f64(sum / count)),
                    errors: delta("vfslockd_store_errors_total", &labels) / seconds,
                    store,
                }
            })
            .collect();
        Rates {
            over,
            acquisitions,
            stores,
        }
    }
}

/// The samples of a Prometheus text exposition, by series as written.
pub(super) fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Whether `series` (`name{a="1",b="2"}`) is metric `name` with each of `labels`.
fn matches(series: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
    metric == name
        && labels
            .iter()
            .all(|(key, value)| label(rest, key).as_deref() == Some(*value))
}

/// The value of label `key` in `series` (label values here never hold quotes or commas).
fn label(series: &str, key: &str) -> Option<String> {
    let start = series.find(&format!("{key}=\""))? + key.len() + 2;
    let end = series[start..].find('"')? + start;
    Some(series[start..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_by_name_and_labels() {
        let series = parse(
            "# TYPE vfslockd_acquisitions_total counter\n\
             vfslockd_acquisitions_total{store=\"mem\",outcome=\"held\"} 2\n\
             vfslockd_acquisitions_total{store=\"file\",outcome=\"held\"} 3\n\
             vfslockd_acquisitions_total{store=\"mem\",outcome=\"timed_out\"} 1\n\
             vfslockd_acquisitions_totalx{store=\"mem\"} 100\n",
        );
        let sample = Sample {
            at: Instant::now(),
            status: test_status(),
            targets: Vec::new(),
            series,
        };
        assert_eq!(sample.sum("vfslockd_acquisitions_total", &[]), 6.0);
        assert_eq!(
            sample.sum("vfslockd_acquisitions_total", &[("store", "mem")]),
            3.0
        );
        assert_eq!(
            sample.sum(
                "vfslockd_acquisitions_total",
                &[("store", "mem"), ("outcome", "held")]
            ),
            2.0
        );
    }

    fn test_status() -> StatusInfo {
        StatusInfo {
            daemon_version: "0".into(),
            protocol_version: 9,
            hostname: "h".into(),
            instance_id: "i".into(),
            pid: 1,
            uptime: Duration::ZERO,
            stores: Vec::new(),
            held: 0,
            waiting: 0,
            sessions: 0,
            targets: 0,
        }
    }
}
