//! The arithmetic of the report: medians, speed-ups, the series the plots draw, and how numbers
//! are printed.

use crate::matrix::{Axis, Executor, Point, Section};
use crate::results::{Measurement, Results};

/// The median of `values` (the mean of the middle two for an even count); `None` when empty
/// or when a value is not a number.
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    if values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(middle).copied(),
        _ => Some((sorted.get(middle - 1)? + sorted.get(middle)?) / 2.0),
    }
}

/// `baseline / wall`: how many times faster than the baseline; `None` without a positive wall.
pub(crate) fn speed_up(baseline: f64, wall: f64) -> Option<f64> {
    (baseline > 0.0 && wall > 0.0 && baseline.is_finite() && wall.is_finite()).then(|| baseline / wall)
}

/// The serial point of `section` with `jobs` jobs: the baseline of every row with that many.
pub(crate) fn baseline(section: &Section, jobs: usize) -> Option<&Point> {
    section.points.iter().find(|p| p.executor == Executor::Serial && p.jobs == jobs)
}

/// The speed-up of `point` against its section's serial point with the same jobs.
pub(crate) fn point_speed_up(results: &Results, section: &Section, point: &Point) -> Option<f64> {
    let serial = results.measured(baseline(section, point.jobs)?)?;
    speed_up(serial.wall_seconds, results.measured(point)?.wall_seconds)
}

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) executor: Executor,
    pub(crate) points: Vec<(f64, f64)>,
}

/// A section's measured points, grouped by executor (in [`Executor::ALL`] order), as
/// `(x, y)` pairs sorted by x; executors without a measured point are left out.
fn series_of(
    results: &Results,
    section: &Section,
    include_serial: bool,
    xy: impl Fn(&Point, &Measurement) -> Option<(f64, f64)>,
) -> Vec<Series> {
    Executor::ALL
        .into_iter()
        .filter(|&executor| include_serial || executor != Executor::Serial)
        .filter_map(|executor| {
            let mut points: Vec<(f64, f64)> = section
                .points
                .iter()
                .filter(|p| p.executor == executor)
                .filter_map(|p| xy(p, results.measured(p)?))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (!points.is_empty()).then_some(Series { executor, points })
        })
        .collect()
}

/// Speed-up against workers per pooled executor, and the ideal line: the serial point's ideal
/// time over the median ideal time of the points at each worker count.
pub(crate) fn speed_up_series(results: &Results, section: &Section) -> (Vec<Series>, Vec<(f64, f64)>) {
    let series = series_of(results, section, false, |point, _| {
        Some((point.workers as f64, point_speed_up(results, section, point)?))
    });
    let mut ideal = Vec::new();
    let serial_ideal = section
        .points
        .iter()
        .find(|p| p.executor == Executor::Serial)
        .and_then(|p| results.measured(p))
        .map(|m| m.ideal_seconds);
    if let Some(serial_ideal) = serial_ideal {
        let mut workers: Vec<usize> =
            section.points.iter().filter(|p| p.executor != Executor::Serial).map(|p| p.workers).collect();
        workers.sort_unstable();
        workers.dedup();
        // One worker is serial's speed: the ideal line starts there.
        if workers.first() != Some(&1) {
            ideal.push((1.0, 1.0));
        }
        for w in workers {
            let ideals: Vec<f64> = section
                .points
                .iter()
                .filter(|p| p.executor != Executor::Serial && p.workers == w)
                .filter_map(|p| results.measured(p).map(|m| m.ideal_seconds))
                .collect();
            if let Some(best) = median(&ideals).and_then(|ideal| speed_up(serial_ideal, ideal)) {
                ideal.push((w as f64, best));
            }
        }
    }
    (series, ideal)
}

/// Wall time against jobs per executor, serial included.
pub(crate) fn wall_series(results: &Results, section: &Section) -> Vec<Series> {
    series_of(results, section, true, |point, measured| Some((point.jobs as f64, measured.wall_seconds)))
}

/// Whether a section's plot is drawn against workers.
pub(crate) fn is_workers(section: &Section) -> bool {
    section.axis == Axis::Workers
}

/// A duration in seconds, in s or ms with three significant digits or so.
pub(crate) fn seconds(value: f64) -> String {
    match value {
        v if v >= 100.0 => format!("{v:.0} s"),
        v if v >= 10.0 => format!("{v:.1} s"),
        v if v >= 1.0 => format!("{v:.2} s"),
        v if v >= 0.1 => format!("{:.0} ms", v * 1e3),
        v => format!("{:.1} ms", v * 1e3),
    }
}

/// A long duration in seconds, in the largest unit that keeps it readable (s, min, h).
pub(crate) fn human(value: f64) -> String {
    match value {
        v if v >= 2.0 * 3600.0 => format!("{:.1} h", v / 3600.0),
        v if v >= 600.0 => format!("{:.1} min", v / 60.0),
        v if v >= 100.0 => format!("{v:.0} s"),
        v => format!("{v:.1} s"),
    }
}

/// A speed-up such as `12.8x`.
pub(crate) fn times(value: f64) -> String {
    if value >= 100.0 { format!("{value:.0}x") } else { format!("{value:.1}x") }
}

/// A fraction as a percentage.
pub(crate) fn percent(value: f64) -> String {
    format!("{:.0}%", value * 100.0)
}

/// A short duration in seconds, in whole µs (the server's CPU a request).
pub(crate) fn microseconds(value: f64) -> String {
    format!("{:.0} µs", value * 1e6)
}

/// Bytes in MiB.
pub(crate) fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::machine::Machine;
    use crate::matrix::{Mode, Scenario};
    use crate::results::tests::measurement;
    use crate::results::{Outcome, PointResult};

    pub(crate) fn point(executor: Executor, workers: usize, jobs: usize) -> Point {
        Point {
            scenario: Scenario::ApiCalls,
            executor,
            workers,
            jobs,
            time_scale: 0.01,
            queue: None,
            faults: None,
            rates: None,
            hosts: None,
        }
    }

    /// A section of api-calls at 200 jobs: serial 2 s, thread x2 1 s and x4 0.5 s, process x2
    /// 1.25 s, async x4 not built.
    pub(crate) fn sample() -> Results {
        let rows = [
            (point(Executor::Serial, 1, 200), Some((2.0, 2.0))),
            (point(Executor::Process, 2, 200), Some((1.25, 1.0))),
            (point(Executor::Thread, 2, 200), Some((1.0, 1.0))),
            (point(Executor::Thread, 4, 200), Some((0.5, 0.5))),
            (point(Executor::Async, 4, 200), None),
        ];
        let points = rows
            .iter()
            .map(|(point, wall_ideal)| PointResult {
                point: point.clone(),
                outcome: match wall_ideal {
                    Some((wall, ideal)) => {
                        Outcome::Measured(Box::new(measurement(point.workers, point.jobs, *wall, *ideal)))
                    }
                    None => Outcome::NotBuilt("the async executor is not built yet".to_owned()),
                },
                elapsed_seconds: 1.0,
            })
            .collect();
        let section = Section {
            id: "api-calls".to_owned(),
            title: "api-calls".to_owned(),
            intro: "Calls.".to_owned(),
            axis: Axis::Workers,
            article: Some(crate::matrix::Article::ApiCalls),
            points: rows.iter().map(|(point, _)| point.clone()).collect(),
        };
        Results {
            mode: Mode::Default,
            repeat: 3,
            machine: Machine {
                cpu: "Test CPU".to_owned(),
                cores: 2,
                memory_bytes: 8 << 30,
                kernel: "6.1".to_owned(),
                load_average: "0.10".to_owned(),
                rustc: "rustc 1.95.0".to_owned(),
                commit: "abc1234".to_owned(),
                date: "2026-01-01 00:00 UTC".to_owned(),
            },
            elapsed_seconds: 42.0,
            sections: vec![section],
            points,
            python: None,
            floors: None,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn speed_ups() {
        assert_eq!(speed_up(209.3, 16.3).map(|s| (s * 10.0).round() / 10.0), Some(12.8));
        assert_eq!(speed_up(1.0, 0.0), None);
        assert_eq!(speed_up(0.0, 1.0), None);
        let results = sample();
        let section = &results.sections[0];
        let speed = |p: &Point| point_speed_up(&results, section, p);
        assert_eq!(speed(&point(Executor::Thread, 4, 200)), Some(4.0));
        assert_eq!(speed(&point(Executor::Process, 2, 200)), Some(1.6));
        assert_eq!(speed(&point(Executor::Async, 4, 200)), None);
        assert_eq!(speed(&point(Executor::Thread, 4, 100)), None, "no serial point with 100 jobs");
    }

    #[test]
    fn series_and_the_ideal_line() {
        let results = sample();
        let (series, ideal) = speed_up_series(&results, &results.sections[0]);
        let executors: Vec<Executor> = series.iter().map(|s| s.executor).collect();
        assert_eq!(executors, [Executor::Process, Executor::Thread]);
        assert_eq!(series[1].points, [(2.0, 2.0), (4.0, 4.0)]);
        assert_eq!(ideal, [(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)]);
        let walls = wall_series(&results, &results.sections[0]);
        assert_eq!(walls[0].executor, Executor::Serial);
        assert_eq!(walls[0].points, [(200.0, 2.0)]);
    }

    #[test]
    fn numbers_print_readably() {
        assert_eq!(seconds(209.3), "209 s");
        assert_eq!(seconds(16.3), "16.3 s");
        assert_eq!(seconds(2.093), "2.09 s");
        assert_eq!(seconds(0.0812), "81.2 ms");
        assert_eq!(seconds(0.2345), "234 ms");
        assert_eq!(human(1802.0), "30.0 min");
        assert_eq!(human(36_002.0), "10.0 h");
        assert_eq!(human(16.3), "16.3 s");
        assert_eq!(human(220.4), "220 s");
        assert_eq!(times(12.84), "12.8x");
        assert_eq!(times(150.2), "150x");
        assert_eq!(percent(0.4494), "45%");
        assert_eq!(mebibytes(5 << 20), "5.0 MiB");
    }
}
