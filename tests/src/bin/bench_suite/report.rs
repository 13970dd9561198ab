//! Two passes (pinned, unpinned) → the report's tables (`tests/bench-results/results.md`, from
//! which `docs/benchmark.md` quotes), issue 7's targets judged on the pinned pass, issue 14's
//! on the unpinned pass against the pinned one, and an SVG chart drawn by hand (no plotting
//! dependency).

use std::fmt::Write;

use crate::sections::names;
use crate::{Pass, Summary};

/// Section titles, in report order.
const SECTIONS: [(&str, &str); 6] = [
    (
        "cycle",
        "Uncontended cycle (try-acquire + release, one client)",
    ),
    ("contention", "Same-host contention, one target"),
    ("many", "Many targets"),
    ("scale", "Scale (mem://)"),
    ("renewal", "Renewal of idle held locks"),
    ("cli", "Command line (whole process)"),
];

fn number(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn with_range(s: Summary) -> String {
    if s.min == s.max {
        return number(s.median); // measured once
    }
    format!("{} ({}–{})", number(s.median), number(s.min), number(s.max))
}

/// The markdown report.
pub fn markdown(pinned: &Pass, unpinned: &Pass) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "#### Targets (pinned pass)\n");
    let _ = writeln!(out, "| target | measured | limit | |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in targets(pinned) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.limit,
            match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            }
        );
    }
    let _ = writeln!(out, "\n#### Targets as users get them (unpinned pass)\n");
    let _ = writeln!(out, "| target | measured | limit | |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in unpinned_targets(pinned, unpinned) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.limit,
            match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            }
        );
    }
    for (section, title) in SECTIONS {
        let figures: Vec<_> = pinned
            .figures
            .iter()
            .filter(|f| f.section == section)
            .collect();
        if figures.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n#### {title}");
        // One table per set of metrics: figures of one section may measure different things.
        let mut groups: Vec<(Vec<&str>, Vec<&crate::Figure>)> = Vec::new();
        for figure in figures {
            let metrics: Vec<&str> = figure.metrics.iter().map(|(m, _)| m.as_str()).collect();
            match groups.iter_mut().find(|(m, _)| *m == metrics) {
                Some((_, members)) => members.push(figure),
                None => groups.push((metrics, vec![figure])),
            }
        }
        for (metrics, figures) in groups {
            table(&mut out, &metrics, &figures, unpinned);
        }
    }
    let _ = writeln!(out, "\nSet-up, as the bench reported it:\n");
    for note in pinned.notes.iter().chain(unpinned.notes.iter().take(1)) {
        let _ = writeln!(out, "- {note}");
    }
    out
}

/// One table: a row per figure, the pinned metrics, and the first metric unpinned.
fn table(out: &mut String, metrics: &[&str], figures: &[&crate::Figure], unpinned: &Pass) {
    let _ = write!(out, "\n| | pinned {} (min–max) |", metrics[0]);
    for metric in &metrics[1..] {
        let _ = write!(out, " pinned {metric} |");
    }
    let _ = writeln!(out, " unpinned {} (min–max) |", metrics[0]);
    let _ = writeln!(out, "|---|{}---|", "---|".repeat(metrics.len()));
    {
        for figure in figures {
            let _ = write!(out, "| {} |", figure.name);
            for (i, (_, summary)) in figure.metrics.iter().enumerate() {
                if i == 0 {
                    let _ = write!(out, " {} |", with_range(*summary));
                } else {
                    let _ = write!(out, " {} |", number(summary.median));
                }
            }
            let other = unpinned.get(&figure.name, &figure.metrics[0].0);
            let _ = writeln!(out, " {} |", other.map_or("–".into(), with_range));
        }
    }
}

/// One of issue 7's targets, judged.
struct Target {
    what: String,
    measured: String,
    limit: String,
    met: Option<bool>,
}

/// Which side of its limit a ratio must fall on.
#[derive(Clone, Copy)]
enum Bound {
    /// `≤ limit`.
    AtMost,
    /// `< limit`.
    Below,
    /// `≥ limit`.
    AtLeast,
}

/// The ratio `value ÷ base`, judged against `limit`.
fn judged(what: String, value: Option<f64>, base: Option<f64>, limit: f64, bound: Bound) -> Target {
    let (measured, met) = match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => {
            let r = v / b;
            let met = match bound {
                Bound::AtMost => r <= limit,
                Bound::Below => r < limit,
                Bound::AtLeast => r >= limit,
            };
            (
                format!("{} ÷ {} = {r:.2}×", number(v), number(b)),
                Some(met),
            )
        }
        _ => ("–".into(), None),
    };
    let sign = match bound {
        Bound::AtMost => "≤",
        Bound::Below => "<",
        Bound::AtLeast => "≥",
    };
    Target {
        what,
        measured,
        limit: format!("{sign} {limit}×"),
        met,
    }
}

/// Issue 14's targets: nobody pins a lock daemon and its clients to one CPU, so the unpinned
/// pass is judged too, against Redis in the same pass and against the pinned pass.
fn unpinned_targets(pinned: &Pass, unpinned: &Pass) -> Vec<Target> {
    let us = |p: &Pass, name: &str| p.get(name, "µs/cycle").map(|s| s.median);
    let cycles = [
        (
            "unpinned mem:// cycle vs unpinned Redis (TCP) cycle",
            unpinned,
            names::VFS_MEM,
            unpinned,
            names::REDIS_TCP,
            1.5,
        ),
        (
            "unpinned mem:// cycle vs pinned mem:// cycle",
            unpinned,
            names::VFS_MEM,
            pinned,
            names::VFS_MEM,
            1.5,
        ),
        (
            "unpinned file:// (disk) cycle vs pinned file:// (disk) cycle",
            unpinned,
            names::VFS_FILE,
            pinned,
            names::VFS_FILE,
            1.5,
        ),
        (
            "pinned mem:// cycle vs pinned Redis (TCP) cycle",
            pinned,
            names::VFS_MEM,
            pinned,
            names::REDIS_TCP,
            1.25,
        ),
    ];
    let mut out: Vec<Target> = cycles
        .into_iter()
        .map(|(what, pass, name, base_pass, base, limit)| {
            judged(
                what.into(),
                us(pass, name),
                us(base_pass, base),
                limit,
                Bound::AtMost,
            )
        })
        .collect();
    for system in &names::CONTENDERS[..2] {
        for hold in [0, 100] {
            let name = names::contention(8, hold, system);
            let acq = |p: &Pass| p.get(&name, "acq/s").map(|s| s.median);
            out.push(judged(
                format!("{name}: unpinned vs pinned acq/s"),
                acq(unpinned),
                acq(pinned),
                1.0,
                Bound::AtLeast,
            ));
        }
    }
    for name in [names::MANY_MEM, names::MANY_FILE] {
        let cycles = |p: &Pass| p.get(name, "cycles/s").map(|s| s.median);
        out.push(judged(
            format!("{name}: unpinned vs pinned cycles/s"),
            cycles(unpinned),
            cycles(pinned),
            1.0,
            Bound::AtLeast,
        ));
    }
    out
}

fn targets(p: &Pass) -> Vec<Target> {
    let mut out = Vec::new();
    let us = |name: &str| p.get(name, "µs/cycle").map(|s| s.median);
    let mut ratio = |what: &str, value: Option<f64>, base: Option<f64>, limit: f64, bound| {
        out.push(judged(what.into(), value, base, limit, bound));
    };
    ratio(
        "mem:// cycle vs Redis (TCP) cycle",
        us(names::VFS_MEM),
        us(names::REDIS_TCP),
        0.75,
        Bound::AtMost,
    );
    ratio(
        "mem:// cycle vs Redis (Unix socket) cycle",
        us(names::VFS_MEM),
        us(names::REDIS_UNIX),
        1.0,
        Bound::Below,
    );
    ratio(
        "file:// cycle vs simulated daemon (2 round trips + sidecar)",
        us(names::VFS_FILE),
        us(names::SIMULATED),
        1.25,
        Bound::AtMost,
    );
    // Issue 15: shared locks where holders may overlap, and a shared join that writes nothing.
    let acq_at = |hold: u64, system: &str| {
        p.get(&names::contention(8, hold, system), "acq/s")
            .map(|s| s.median)
    };
    for (shared, exclusive) in names::SHARED_CONTENDERS {
        ratio(
            &format!("8 clients, hold 100 µs: {shared} vs exclusive, acq/s"),
            acq_at(100, shared),
            acq_at(100, exclusive),
            3.0,
            Bound::AtLeast,
        );
    }
    ratio(
        "file:// shared cycle beside another local holder vs mem:// cycle",
        us(names::VFS_FILE_SHARED),
        us(names::VFS_MEM),
        1.25,
        Bound::AtMost,
    );
    let writes = p
        .get(names::VFS_FILE_SHARED_WRITES, "writes/cycle")
        .map(|s| s.median);
    out.push(Target {
        what: "file:// shared cycle beside another local holder: store writes".into(),
        measured: writes.map_or("–".into(), |w| format!("{w:.2} per cycle")),
        limit: "0".into(),
        met: writes.map(|w| w == 0.0),
    });
    let acq = |system: &str| {
        p.get(&names::contention(8, 0, system), "acq/s")
            .map(|s| s.median)
    };
    let redis_polling = acq(names::CONTENDERS[2]);
    // A throughput target: at least N × Redis, i.e. Redis ÷ ours at most 1/N.
    for (system, times) in [(names::CONTENDERS[0], 5.0), (names::CONTENDERS[1], 2.0)] {
        let ours = acq(system);
        let (measured, met) = match (ours, redis_polling) {
            (Some(o), Some(r)) if r > 0.0 => (
                format!("{} ÷ {} = {:.1}×", number(o), number(r), o / r),
                Some(o / r >= times),
            ),
            _ => ("–".into(), None),
        };
        out.push(Target {
            what: format!("8 clients, zero hold: {system} acq/s vs Redis with 1 ms polling"),
            measured,
            limit: format!("≥ {times}×"),
            met,
        });
    }
    for system in &names::CONTENDERS[..2] {
        for hold in [0, 100] {
            let name = names::contention(8, hold, system);
            let spread = p.get(&name, "share spread ±%").map(|s| s.median);
            out.push(Target {
                what: format!("8 clients, hold {hold} µs: {system} largest share off the mean"),
                measured: spread.map_or("–".into(), |s| format!("±{s:.1} %")),
                limit: "≤ ±20 %".into(),
                met: spread.map(|s| s <= 20.0),
            });
            let p50 = p.get(&name, "wait p50 µs").map(|s| s.median);
            let p99 = p.get(&name, "wait p99 µs").map(|s| s.median);
            out.push(Target {
                what: format!("8 clients, hold {hold} µs: {system} wait p99 vs p50"),
                measured: match (p99, p50) {
                    (Some(a), Some(b)) if b > 0.0 => {
                        format!("{} ÷ {} = {:.1}×", number(a), number(b), a / b)
                    }
                    _ => "–".into(),
                },
                limit: "≤ 10×".into(),
                met: match (p99, p50) {
                    (Some(a), Some(b)) if b > 0.0 => Some(a / b <= 10.0),
                    _ => None,
                },
            });
        }
    }
    let many = |name: &str| p.get(name, "cycles/s").map(|s| s.median);
    for name in [names::MANY_MEM, names::MANY_FILE] {
        let (ours, redis) = (many(name), many(names::MANY_REDIS));
        out.push(Target {
            what: format!("{name} vs Redis, cycles/s"),
            measured: match (ours, redis) {
                (Some(o), Some(r)) if r > 0.0 => {
                    format!("{} ÷ {} = {:.2}×", number(o), number(r), o / r)
                }
                _ => "–".into(),
            },
            limit: "≥ 1×".into(),
            met: match (ours, redis) {
                (Some(o), Some(r)) if r > 0.0 => Some(o >= r),
                _ => None,
            },
        });
    }
    let per_lock = p.get(names::HELD, "bytes per held lock").map(|s| s.median);
    out.push(Target {
        what: "100,000 held locks: daemon memory per held lock".into(),
        measured: per_lock.map_or("–".into(), |b| format!("{:.1} KiB", b / 1024.0)),
        limit: "≤ 10 KiB".into(),
        met: per_lock.map(|b| b <= 10.0 * 1024.0),
    });
    let (empty, held) = (us(names::CYCLE_EMPTY), us(names::CYCLE_HELD));
    out.push(Target {
        what: "cycle with 100,000 held vs none".into(),
        measured: match (held, empty) {
            (Some(h), Some(e)) => format!("{} ÷ {} = {:.2}×", number(h), number(e), h / e),
            _ => "–".into(),
        },
        limit: "≤ 1.25×".into(),
        met: match (held, empty) {
            (Some(h), Some(e)) => Some(h / e <= 1.25),
            _ => None,
        },
    });
    let cpu = p
        .get(names::RENEWAL, "daemon CPU % of one core")
        .map(|s| s.median);
    out.push(Target {
        what: "10,000 idle held locks: daemon CPU".into(),
        measured: cpu.map_or("–".into(), |c| format!("{c:.2} %")),
        limit: "≤ 5 % of one core".into(),
        met: cpu.map(|c| c <= 5.0),
    });
    let burst = p.get(names::RENEWAL, "peak ÷ mean").map(|s| s.median);
    let seen = p.get(names::RENEWAL, "renewals seen").map(|s| s.median);
    out.push(Target {
        what: "renewals in the busiest 100 ms window vs the mean".into(),
        measured: burst.map_or("–".into(), |b| format!("{b:.2}×")),
        limit: "≤ 2×".into(),
        met: burst.zip(seen).map(|(b, s)| s > 0.0 && b <= 2.0),
    });
    let ms = |name: &str| p.get(name, "ms/process").map(|s| s.median);
    let (ctl, flock) = (ms(names::CTL_RUN), ms(names::FLOCK_CMD));
    out.push(Target {
        what: "vfslockctl run -n X -- true vs flock(1)".into(),
        measured: match (ctl, flock) {
            (Some(c), Some(f)) => format!("{c:.2} ms ÷ {f:.2} ms = {:.2}×", c / f),
            _ => "–".into(),
        },
        limit: "≤ 2×".into(),
        met: match (ctl, flock) {
            (Some(c), Some(f)) => Some(c / f <= 2.0),
            _ => None,
        },
    });
    out
}

/// A chart of the uncontended cycle and of 8-client contention, pinned and unpinned bars.
pub fn svg(pinned: &Pass, unpinned: &Pass) -> String {
    let cycle: Vec<(String, Option<f64>, Option<f64>)> = pinned
        .figures
        .iter()
        .filter(|f| f.section == "cycle")
        .map(|f| {
            (
                f.name.clone(),
                pinned.get(&f.name, "µs/cycle").map(|s| s.median),
                unpinned.get(&f.name, "µs/cycle").map(|s| s.median),
            )
        })
        .collect();
    let contention: Vec<(String, Option<f64>, Option<f64>)> = names::CONTENDERS
        .iter()
        .map(|system| {
            let name = names::contention(8, 0, system);
            (
                system.to_string(),
                pinned.get(&name, "acq/s").map(|s| s.median),
                unpinned.get(&name, "acq/s").map(|s| s.median),
            )
        })
        .collect();
    let (label_w, bar_w, row_h) = (420.0, 380.0, 34.0);
    let width = label_w + bar_w + 110.0;
    let mut y = 40.0;
    let mut body = String::new();
    for (title, rows, unit) in [
        ("Uncontended cycle, µs (lower is better)", &cycle, "µs"),
        (
            "8 clients on one target, zero hold: acquisitions/s (higher is better)",
            &contention,
            "/s",
        ),
    ] {
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" font-size="15" font-weight="bold">{}</text>"#,
            escape(title)
        );
        y += 14.0;
        let max = rows
            .iter()
            .flat_map(|(_, a, b)| [*a, *b])
            .flatten()
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        for (name, a, b) in rows.iter() {
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
                label_w - 8.0,
                y + 19.0,
                escape(name)
            );
            for (i, (value, colour)) in [(a, "#1f5fa8"), (b, "#9cc0e8")].into_iter().enumerate() {
                let Some(value) = value else { continue };
                let w = (value / max * bar_w).max(1.0);
                let top = y + 4.0 + i as f64 * 13.0;
                let _ = writeln!(
                    body,
                    r#"<rect x="{label_w}" y="{top}" width="{w:.1}" height="12" fill="{colour}"/><text x="{:.1}" y="{:.1}" font-size="11">{} {unit}</text>"#,
                    label_w + w + 4.0,
                    top + 10.0,
                    number(*value)
                );
            }
            y += row_h;
        }
        y += 20.0;
    }
    let _ = writeln!(
        body,
        r##"<rect x="10" y="{y}" width="12" height="12" fill="#1f5fa8"/><text x="28" y="{}" font-size="12">pinned (taskset -c 0)</text><rect x="200" y="{y}" width="12" height="12" fill="#9cc0e8"/><text x="218" y="{}" font-size="12">unpinned</text>"##,
        y + 10.0,
        y + 10.0
    );
    y += 30.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{y}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
