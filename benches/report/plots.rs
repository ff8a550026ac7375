//! The report's PNG plots, drawn with plotters' bitmap backend; text uses DejaVu Sans
//! from the `dejavu` crate, so no system font is needed.

use crate::footprint::Row;
use crate::outages::ProfileResult;
use crate::parts::NaiveRow;
use crate::soak::SoakReport;
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;

const FONT: &str = "sans-serif";
const DAEMON: RGBColor = RGBColor(31, 119, 180);
const NAIVE: RGBColor = RGBColor(255, 127, 14);
const STANDBY: RGBColor = RGBColor(44, 160, 44);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Registers the bundled font once.
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            register_font(FONT, style, dejavu::sans::regular())
                .unwrap_or_else(|_| panic!("the bundled DejaVu Sans is a valid font"));
        }
    });
}

/// Histogram of stop → standby scaled, kube-failover and the watchdog side by side, with
/// the budget.
pub fn time_to_promote(path: &Path, r: &ProfileResult) -> Result<()> {
    init();
    let daemon: Vec<f64> = r.daemon.iter().filter_map(|o| o.scaled).collect();
    let naive: Vec<f64> = r.naive.iter().filter_map(|o| o.scaled).collect();
    let budget = r.profile.budget_s();
    let max = daemon.iter().chain(&naive).copied().fold(budget, f64::max);
    let bin = (r.profile.interval_s / 10.0).max(0.05);
    let bins = (max / bin).ceil() as usize + 2;
    let x_max = bins as f64 * bin;
    let count = |v: &[f64]| {
        let mut c = vec![0u32; bins];
        for x in v {
            c[((x / bin) as usize).min(bins - 1)] += 1;
        }
        c
    };
    let (cd, cn) = (count(&daemon), count(&naive));
    let y_max = cd.iter().chain(&cn).copied().max().unwrap_or(1).max(1) + 1;

    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: primary API server stopped → standby scaled",
                r.profile.name()
            ),
            (FONT, 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..x_max, 0u32..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("outages")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .disable_x_mesh()
        .draw()?;
    let half = bin / 2.0;
    chart
        .draw_series(
            cd.iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let x = i as f64 * bin;
                    Rectangle::new([(x, 0), (x + half, *c)], DAEMON.filled())
                }),
        )?
        .label(format!("kube-failover (n={})", daemon.len()))
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], DAEMON.filled()));
    if !naive.is_empty() {
        chart
            .draw_series(
                cn.iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, c)| {
                        let x = i as f64 * bin + half;
                        Rectangle::new([(x, 0), (x + half, *c)], NAIVE.filled())
                    }),
            )?
            .label(format!("kubectl watchdog (n={})", naive.len()))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], NAIVE.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(budget, 0), (budget, y_max)],
            BLACK.stroke_width(2),
        ))?
        .label(format!("budget {budget:.2} s"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Cost against groups: requests per tick, RSS and CPU, with the watchdog's loops.
pub fn footprint(path: &Path, rows: &[Row], naive: &[NaiveRow]) -> Result<()> {
    init();
    let root = BitMapBackend::new(path, (1500, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Cost against groups (probe interval 1 s, healthy pair)",
        (FONT, 22),
    )?;
    let panels = root.split_evenly((1, 3));
    let x_max = rows
        .iter()
        .map(|r| r.groups as f64)
        .chain(naive.iter().map(|n| n.loops as f64))
        .fold(1.0, f64::max)
        * 1.5;
    // The group counts measured, as the axis' labels.
    let mut ticks: Vec<f64> = rows
        .iter()
        .map(|r| r.groups as f64)
        .chain(naive.iter().map(|n| n.loops as f64))
        .collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    type Pick = fn(&Row) -> f64;
    /// A panel: title, unit, the daemon's series, the watchdog's value if it has one.
    type Panel<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, RGBColor, Pick)>,
        Option<fn(&NaiveRow) -> f64>,
    );
    let specs: [Panel<'_>; 3] = [
        (
            "API requests per tick",
            "requests per tick",
            vec![
                ("primary", DAEMON, |r: &Row| r.per_tick[0]),
                ("standby", STANDBY, |r: &Row| r.per_tick[1]),
            ],
            Some(|n: &NaiveRow| n.per_tick[0]),
        ),
        (
            "Daemon RSS",
            "MiB",
            vec![("kube-failover", DAEMON, |r: &Row| r.rss)],
            None,
        ),
        (
            "CPU (% of one core)",
            "%",
            vec![
                ("kube-failover", DAEMON, |r: &Row| r.cpu),
                ("API servers added", STANDBY, |r: &Row| {
                    r.apiserver_cpu[0] + r.apiserver_cpu[1]
                }),
            ],
            Some(|n: &NaiveRow| n.cpu),
        ),
    ];
    for (area, (title, unit, series, naive_pick)) in panels.iter().zip(specs) {
        let y_max = rows
            .iter()
            .flat_map(|r| series.iter().map(move |(_, _, f)| f(r)))
            .chain(naive.iter().filter_map(|n| naive_pick.map(|f| f(n))))
            .fold(0.0, f64::max)
            * 1.15
            + 0.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(
                (0.8f64..x_max).log_scale().with_key_points(ticks.clone()),
                0f64..y_max,
            )?;
        chart
            .configure_mesh()
            .x_label_formatter(&|x| format!("{x:.0}"))
            .x_desc("groups (log scale)")
            .y_desc(unit)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()?;
        for (name, color, f) in series {
            let pts: Vec<(f64, f64)> = rows.iter().map(|r| (r.groups as f64, f(r))).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 14, y)], color.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        }
        if let Some(f) = naive_pick.filter(|_| !naive.is_empty()) {
            let pts: Vec<(f64, f64)> = naive.iter().map(|n| (n.loops as f64, f(n))).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), NAIVE.stroke_width(2)))?
                .label("kubectl watchdog (one loop per group)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], NAIVE.stroke_width(2)));
            chart.draw_series(
                pts.into_iter()
                    .map(|p| TriangleMarker::new(p, 6, NAIVE.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Every soak fault's duration, by kind, against the blip tolerance and probe timeout.
pub fn soak(path: &Path, r: &SoakReport) -> Result<()> {
    init();
    let kinds = crate::soak::KINDS;
    let y_max = r
        .durations
        .values()
        .flatten()
        .copied()
        .fold(r.tolerance_s, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "False-promotion soak, {}: {} faults, {} promotions",
                r.profile.name(),
                r.faults.values().map(|t| t.count).sum::<u64>(),
                r.promotions
            ),
            (FONT, 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..(kinds.len() as f64 - 0.5), 0f64..y_max)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(kinds.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 0.01 && i >= 0.0 {
                kinds.get(i as usize).copied().unwrap_or("").to_string()
            } else {
                String::new()
            }
        })
        .y_desc("fault duration, seconds")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, kind) in kinds.iter().enumerate() {
        let v = r.durations.get(*kind).cloned().unwrap_or_default();
        let n = v.len().max(1) as f64;
        chart.draw_series(v.iter().enumerate().map(|(k, d)| {
            // Spread the points across the column in the order they happened.
            let x = i as f64 - 0.35 + 0.7 * (k as f64 + 0.5) / n;
            Circle::new((x, *d), 2, DAEMON.mix(0.6).filled())
        }))?;
    }
    chart
        .draw_series(LineSeries::new(
            [
                (-0.5, r.tolerance_s),
                (kinds.len() as f64 - 0.5, r.tolerance_s),
            ],
            BLACK.stroke_width(2),
        ))?
        .label(format!(
            "blip tolerance (threshold − 1) × interval = {:.1} s (not for latency spikes)",
            r.tolerance_s
        ))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 14, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
