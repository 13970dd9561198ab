//! Two builds side by side: passes of an old build and a new one, run interleaved on the same
//! machine (`tests/bench-compare.sh`), compared figure by figure. A change that should not
//! move speed or memory is checked this way: the machine's noise lands on both builds alike,
//! and the table says which figures moved by more than the tolerance, in which direction.

use super::Pass;

/// Figures of vfslockd itself (floors and peers are the same code in both builds).
fn is_ours(name: &str) -> bool {
    name.contains("vfslockd") || name.starts_with("mem:// cycle") || name.contains("locks held")
}

/// Whether a larger value of `metric` is better.
fn higher_is_better(metric: &str) -> bool {
    metric.ends_with("/s")
}

/// The median of the figure's medians over `passes`.
fn median_over(passes: &[Pass], name: &str, metric: &str) -> Option<f64> {
    let mut values: Vec<f64> = passes
        .iter()
        .filter_map(|pass| pass.get(name, metric))
        .map(|summary| summary.median)
        .collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// A markdown table of every vfslockd figure measured by both builds: old and new medians (the
/// median over passes of each pass's median), their ratio, and a verdict against `tolerance`
/// (0.05 for ±5 %). Returns the table and whether any figure got worse beyond the tolerance.
pub fn table(old: &[Pass], new: &[Pass], tolerance: f64) -> (String, bool) {
    let mut out = format!(
        "{} old and {} new passes, interleaved; each figure the median of the passes' medians.\n\n\
         | figure | old | new | new/old | verdict |\n|---|---:|---:|---:|---|\n",
        old.len(),
        new.len()
    );
    let mut worse = false;
    // Every figure of ours that some old pass measured, in the order first measured.
    let mut figures: Vec<(&str, &str)> = Vec::new();
    for figure in old.iter().flat_map(|p| &p.figures) {
        for (metric, _) in &figure.metrics {
            let key = (figure.name.as_str(), metric.as_str());
            if is_ours(key.0) && !figures.contains(&key) {
                figures.push(key);
            }
        }
    }
    for (name, metric) in figures {
        {
            let (Some(before), Some(after)) = (
                median_over(old, name, metric),
                median_over(new, name, metric),
            ) else {
                continue;
            };
            let ratio = after / before;
            let better = if higher_is_better(metric) {
                ratio >= 1.0
            } else {
                ratio <= 1.0
            };
            let verdict = if (ratio - 1.0).abs() <= tolerance {
                "within"
            } else if better {
                "better"
            } else {
                worse = true;
                "WORSE"
            };
            out.push_str(&format!(
                "| {name} ({metric}) | {before:.2} | {after:.2} | {ratio:.3} | {verdict} |\n"
            ));
        }
    }
    (out, worse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Figure, Summary};

    fn pass(cycle_us: f64, per_second: f64) -> Pass {
        let figure = |name: &str, metric: &str, median| Figure {
            section: "s".into(),
            name: name.into(),
            metrics: vec![(
                metric.into(),
                Summary {
                    median,
                    min: median,
                    max: median,
                },
            )],
        };
        Pass {
            label: "pinned".into(),
            notes: vec![],
            figures: vec![
                figure("vfslockd mem://", "µs/cycle", cycle_us),
                figure("many: vfslockd mem://", "cycles/s", per_second),
                figure("flock(2) lock + unlock", "µs/cycle", 1.0),
            ],
        }
    }

    #[test]
    fn a_slower_cycle_or_fewer_cycles_per_second_beyond_the_tolerance_is_worse() {
        let old = [pass(30.0, 1000.0), pass(32.0, 1000.0), pass(31.0, 1000.0)];
        let same = [pass(31.5, 990.0)];
        let (table_same, worse) = table(&old, &same, 0.05);
        assert!(!worse, "{table_same}");
        assert!(
            !table_same.contains("flock"),
            "floors are not compared: {table_same}"
        );
        let (_, worse) = table(&old, &[pass(33.0, 1000.0)], 0.05);
        assert!(worse, "10 % slower cycles passed");
        let (_, worse) = table(&old, &[pass(31.0, 900.0)], 0.05);
        assert!(worse, "10 % fewer cycles per second passed");
        let (better, worse) = table(&old, &[pass(25.0, 1200.0)], 0.05);
        assert!(!worse && better.contains("better"), "{better}");
    }
}
