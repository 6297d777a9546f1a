//! The report's SVG plots (plotters' SVG backend: text stays `<text>`, so no font library is
//! needed to draw or to build).

use std::path::Path;

use anyhow::Context;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::matrix::Executor;
use crate::stats::Series;

const SIZE: (u32, u32) = (760, 440);

/// Each executor's colour, the same in every plot.
fn color(executor: Executor) -> RGBColor {
    match executor {
        Executor::Serial => RGBColor(90, 90, 90),
        Executor::Process => RGBColor(214, 39, 40),
        Executor::Thread => RGBColor(31, 119, 180),
        Executor::Async => RGBColor(44, 160, 44),
        Executor::Redis => RGBColor(148, 103, 189),
    }
}

/// What one plot shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plot<'a> {
    pub(crate) title: &'a str,
    pub(crate) x_label: &'a str,
    pub(crate) y_label: &'a str,
    pub(crate) series: &'a [Series],
    /// A dashed black line labelled "ideal" (may be empty).
    pub(crate) ideal: &'a [(f64, f64)],
    /// Logarithmic axes (speed-up against workers) or linear ones from zero (wall against jobs).
    pub(crate) log: bool,
}

impl Plot<'_> {
    /// The plot as an SVG document.
    pub(crate) fn to_svg(&self) -> anyhow::Result<String> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let all = || self.series.iter().flat_map(|s| s.points.iter()).chain(self.ideal.iter());
            let max = |f: fn(&(f64, f64)) -> f64| all().map(f).fold(f64::NAN, f64::max);
            let min = |f: fn(&(f64, f64)) -> f64| all().map(f).fold(f64::NAN, f64::min);
            let (x_max, y_max) = (finite_or(max(|p| p.0), 1.0), finite_or(max(|p| p.1), 1.0));
            if self.log {
                let x_min = finite_or(min(|p| p.0), 1.0).min(1.0);
                let y_min = finite_or(min(|p| p.1), 1.0).min(1.0);
                let (x_range, y_range) = ((x_min * 0.8)..(x_max * 1.25), (y_min * 0.8)..(y_max * 1.4));
                let mut xs: Vec<f64> = all().map(|p| p.0).filter(|x| x_range.contains(x)).collect();
                xs.sort_by(f64::total_cmp);
                xs.dedup();
                let ys = one_two_five(&y_range);
                self.draw(
                    &root,
                    x_range.log_scale().with_key_points(xs),
                    y_range.log_scale().with_key_points(ys),
                )?;
            } else {
                self.draw(&root, 0.0..x_max * 1.05, 0.0..y_max * 1.1)?;
            }
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    /// Writes the plot to `path`.
    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        let svg = self.to_svg()?;
        crate::write_file(path, &svg).with_context(|| format!("could not write {}", path.display()))
    }

    fn draw<X, Y>(&self, root: &DrawingArea<SVGBackend<'_>, Shift>, x: X, y: Y) -> anyhow::Result<()>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, ("sans-serif", 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(x, y)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(plot_error)?;
        if !self.ideal.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(self.ideal.iter().copied(), 6, 4, BLACK.stroke_width(1)))
                .map_err(plot_error)?
                .label("ideal")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
        for series in self.series {
            let style = color(series.executor);
            chart
                .draw_series(LineSeries::new(series.points.iter().copied(), style.stroke_width(2)))
                .map_err(plot_error)?
                .label(series.executor.name())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(2)));
            chart
                .draw_series(series.points.iter().map(|&p| Circle::new(p, 3, style.filled())))
                .map_err(plot_error)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(plot_error)?;
        Ok(())
    }
}

fn plot_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("could not draw the plot: {error}")
}

fn finite_or(value: f64, default: f64) -> f64 {
    if value.is_finite() && value > 0.0 { value } else { default }
}

/// 1, 2, 5, 10, 20, 50, ... inside `range`: the ticks of a logarithmic axis.
fn one_two_five(range: &std::ops::Range<f64>) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10_f64.powi(range.start.log10().floor() as i32);
    while decade <= range.end {
        ticks.extend([1.0, 2.0, 5.0].iter().map(|m| m * decade).filter(|t| range.contains(t)));
        decade *= 10.0;
    }
    ticks
}

/// An axis label: whole numbers without decimals, small ones with two significant digits.
fn short(value: f64) -> String {
    if value >= 10.0 || (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        let text = if value >= 1.0 { format!("{value:.1}") } else { format!("{value:.2}") };
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<Series>, Vec<(f64, f64)>) {
        let series = vec![
            Series { executor: Executor::Process, points: vec![(1.0, 0.9), (8.0, 6.5), (64.0, 30.0)] },
            Series { executor: Executor::Thread, points: vec![(1.0, 1.0), (8.0, 7.8), (200.0, 150.0)] },
        ];
        (series, vec![(1.0, 1.0), (8.0, 8.0), (64.0, 50.0), (200.0, 200.0)])
    }

    fn assert_valid_svg(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.matches("<text").count() == svg.matches("</text>").count());
    }

    #[test]
    fn a_speed_up_plot_is_a_valid_svg_file() {
        let (series, ideal) = sample();
        let plot = Plot {
            title: "api-calls: speed-up against workers",
            x_label: "workers",
            y_label: "speed-up against serial",
            series: &series,
            ideal: &ideal,
            log: true,
        };
        let dir = std::env::temp_dir().join(format!("xtask-plot-test-{}", std::process::id()));
        let path = dir.join("speed-up.svg");
        let written =
            std::fs::create_dir_all(&dir).map_err(anyhow::Error::from).and_then(|()| plot.write(&path));
        assert!(written.is_ok(), "{written:?}");
        let svg = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        assert_valid_svg(&svg);
        for label in ["process", "thread", "ideal", "workers", "api-calls: speed-up against workers"] {
            assert!(svg.contains(label), "missing {label}");
        }
        // One marker per point.
        assert_eq!(svg.matches("<circle").count(), 6);
    }

    #[test]
    fn a_linear_plot_and_an_empty_plot_render() {
        let (series, _) = sample();
        let linear = Plot {
            title: "wall time against jobs",
            x_label: "jobs",
            y_label: "wall time (s)",
            series: &series,
            ideal: &[],
            log: false,
        };
        assert_valid_svg(&linear.to_svg().unwrap_or_default());
        let empty = Plot { series: &[], ..linear };
        assert_valid_svg(&empty.to_svg().unwrap_or_default());
    }

    #[test]
    fn log_ticks_are_one_two_five() {
        assert_eq!(one_two_five(&(0.8..250.0)), [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0]);
        assert_eq!(one_two_five(&(0.5..2.5)), [0.5, 1.0, 2.0]);
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(short(200.0), "200");
        assert_eq!(short(2.0), "2");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(0.5), "0.5");
    }
}
