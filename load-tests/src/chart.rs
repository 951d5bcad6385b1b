//! The SVG chart (plotters' SVG backend: no fonts or system libraries needed): latency by
//! percentile per operation (lockerhub solid, echo floor thin), throughput, server RSS and CPU
//! over the run.

use std::path::Path;

use plotters::prelude::*;

use crate::report::{Report, TargetReport};

const COLORS: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

const LATENCY_OPS: &[&str] = &[
    "connect",
    "boot",
    "preadvice",
    "start_deposit",
    "put_parcel",
    "pickup",
    "take_parcel",
    "reconnect",
];

type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub fn write(report: &Report, path: &Path) -> Res<()> {
    let root = SVGBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    let lh = &report.lockerhub;
    title.draw(&Text::new(
        format!(
            "lockerhub load test: {} lockers, {} deposits/s target for {} s{}",
            report.config.lockers,
            report.config.rate,
            report.config.duration,
            if report.baseline.is_some() {
                " (thin lines: echo floor)"
            } else {
                ""
            }
        ),
        (20, 12),
        ("sans-serif", 20),
    ))?;
    let panels = body.split_evenly((2, 2));
    latency(&panels[0], lh, report.baseline.as_ref())?;
    throughput(&panels[1], lh)?;
    series(&panels[2], "server RSS (MB)", lh, report.baseline.as_ref(), |s| {
        s.rss_mb
    })?;
    series(
        &panels[3],
        "server CPU (% of one core)",
        lh,
        report.baseline.as_ref(),
        |s| s.cpu_pct,
    )?;
    root.present()?;
    Ok(())
}

fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    lh: &TargetReport,
    echo: Option<&TargetReport>,
) -> Res<()>
where
    DB::ErrorType: 'static,
{
    let values = LATENCY_OPS
        .iter()
        .filter_map(|op| lh.latency.get(*op))
        .chain(
            echo.into_iter()
                .flat_map(|e| LATENCY_OPS.iter().filter_map(|op| e.latency.get(*op))),
        )
        .flat_map(|l| l.quantiles());
    let (lo, hi) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v.max(0.01)), hi.max(v)));
    let (lo, hi) = if hi <= 0.0 { (0.01, 1.0) } else { (lo / 1.5, hi * 1.5) };
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile (ms, log scale)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())?;
    const NAMES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.05 && (0.0..=3.0).contains(&i) {
                NAMES[i as usize].to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| {
            if *y >= 1.0 {
                format!("{y:.0}")
            } else {
                format!("{y:.2}")
            }
        })
        .draw()?;
    for (i, op) in LATENCY_OPS.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if let Some(l) = lh.latency.get(*op) {
            let pts: Vec<(f64, f64)> = l
                .quantiles()
                .iter()
                .enumerate()
                .map(|(x, v)| (x as f64, v.max(lo)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(3)))?
                .label(op.to_string())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        if let Some(l) = echo.and_then(|e| e.latency.get(*op)) {
            let pts: Vec<(f64, f64)> = l
                .quantiles()
                .iter()
                .enumerate()
                .map(|(x, v)| (x as f64, v.max(lo)))
                .collect();
            chart.draw_series(LineSeries::new(pts, color.stroke_width(1)))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn throughput<DB: DrawingBackend>(area: &DrawingArea<DB, plotters::coord::Shift>, lh: &TargetReport) -> Res<()>
where
    DB::ErrorType: 'static,
{
    let lines: Vec<(&str, &Vec<u64>)> = ["put_parcel", "take_parcel", "reconnect", "connect"]
        .iter()
        .filter_map(|op| lh.timeline.get(*op).map(|v| (*op, v)))
        .collect();
    let xmax = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(1).max(1) as f64;
    let ymax = lines
        .iter()
        .flat_map(|(_, v)| v.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption("completions per second (lockerhub)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, (op, v)) in lines.iter().enumerate() {
        let color = COLORS[(i + 4) % COLORS.len()];
        let label = match *op {
            "put_parcel" => "deposits",
            "take_parcel" => "pickups",
            "reconnect" => "storm reconnects",
            _ => "connects",
        };
        chart
            .draw_series(LineSeries::new(
                v.iter().enumerate().map(|(x, y)| (x as f64, *y as f64)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn series<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    lh: &TargetReport,
    echo: Option<&TargetReport>,
    value: impl Fn(&crate::sys::Sample) -> f64,
) -> Res<()>
where
    DB::ErrorType: 'static,
{
    // Both runs on one time axis: seconds since each run's own start.
    let runs: Vec<(&str, &TargetReport, RGBColor)> = std::iter::once(("lockerhub", lh, COLORS[0]))
        .chain(echo.map(|e| ("echo floor", e, COLORS[1])))
        .collect();
    let t0 = |r: &TargetReport| r.samples.first().map(|s| s.t).unwrap_or(0.0);
    let xmax = runs
        .iter()
        .filter_map(|(_, r, _)| r.samples.last().map(|s| s.t - t0(r)))
        .fold(1.0f64, f64::max);
    let ymax = runs
        .iter()
        .flat_map(|(_, r, _)| r.samples.iter().map(&value))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the server started")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (name, r, color) in runs {
        let start = t0(r);
        chart
            .draw_series(LineSeries::new(
                r.samples.iter().map(|s| (s.t - start, value(s))),
                color.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
