//! PNG plots: plotters with the bitmap backend and a TrueType font read at run time (DejaVu
//! Sans, Debian's `fonts-dejavu-core`), so nothing but Rust is needed to build.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use super::{control, forward, lookup, vrfs};

/// Fonts tried in order.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const SIZE: (u32, u32) = (900, 520);
const COLORS: [RGBColor; 5] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x7f, 0x7f, 0x7f),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// Register the sans-serif font once.
pub fn init() -> Result<()> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).is_file())
        .with_context(|| {
            format!(
                "no DejaVu Sans font for the plots (looked at {}): apt-get install fonts-dejavu-core \
                 (`cargo xtask setup` does)",
                FONTS.join(", ")
            )
        })?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("bad font {path}"))?;
    Ok(())
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// (1): received packets per second, grouped by frame size, one bar per mode; a second panel
/// with the same per router core.
pub fn forward(r: &forward::Results, path: &Path) -> Result<PathBuf> {
    let root = BitMapBackend::new(path, (SIZE.0, SIZE.1 + 60)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let modes = forward::Mode::ROUTERS;
    for (area, table, title) in [
        (&left, &r.median_pps, "received packets/s (median)"),
        (
            &right,
            &r.median_per_core,
            "packets/s per CPU-second of the router",
        ),
    ] {
        let top = modes
            .iter()
            .flat_map(|m| table.get(m.key()).into_iter().flat_map(|t| t.values()))
            .fold(1.0f64, |a, b| a.max(*b));
        // Room above the bars for the legend, below the zero line for the group labels.
        let (max, below) = (top * 1.45, top * 0.07);
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(10)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..2f64, -below..max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v| if *v < 0.0 { String::new() } else { si(*v) })
            .y_desc("packets/s")
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(0.0, 0.0), (2.0, 0.0)],
                BLACK,
            )))
            .map_err(err)?;
        let above = ("sans-serif", 13)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for (g, size) in ["64", "1500"].iter().enumerate() {
            let label = if *size == "64" {
                "64-byte frames"
            } else {
                "1500-byte packets"
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    label,
                    (g as f64 + 0.5, -below * 0.25),
                    ("sans-serif", 14)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                )))
                .map_err(err)?;
            for (i, m) in modes.iter().enumerate() {
                let v = table
                    .get(m.key())
                    .and_then(|t| t.get(*size))
                    .copied()
                    .unwrap_or(0.0);
                let x0 = g as f64 + 0.1 + i as f64 * 0.2;
                let bar = Rectangle::new([(x0, 0.0), (x0 + 0.18, v)], COLORS[i].filled());
                let s = chart.draw_series(std::iter::once(bar)).map_err(err)?;
                if g == 0 {
                    s.label(m.label()).legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 14, y + 5)], COLORS[i].filled())
                    });
                }
                chart
                    .draw_series(std::iter::once(Text::new(
                        si(v),
                        (x0 + 0.09, v + top * 0.01),
                        above.clone(),
                    )))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(path.to_path_buf())
}

/// (2): ns per packet against IPv4 table size (log x), both programs; the IPv6 size as
/// separate markers.
pub fn lookup(r: &lookup::Results, path: &Path) -> Result<PathBuf> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = r
        .sizes
        .iter()
        .map(|s| s.vrf_xdp.p90.max(s.fib_helper.p90))
        .fold(0.0, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ns per packet (BPF_PROG_TEST_RUN) against table size",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((500f64..2e6f64).log_scale(), 0f64..max.max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("routes in the VRF's table")
        .y_desc("ns per packet (mean; bars: 10th–90th percentile)")
        .x_label_formatter(&|v| si(*v))
        .draw()
        .map_err(err)?;
    for (i, (name, pick)) in [
        (
            "vrf-xdp (IPv4)",
            (|s: &lookup::Size| s.vrf_xdp.clone()) as fn(&lookup::Size) -> lookup::Stats,
        ),
        ("bpf_fib_lookup XDP (IPv4)", |s: &lookup::Size| {
            s.fib_helper.clone()
        }),
    ]
    .into_iter()
    .enumerate()
    {
        let color = COLORS[i];
        let pts: Vec<(f64, lookup::Stats)> = r
            .sizes
            .iter()
            .filter(|s| s.family == 4)
            .map(|s| (s.routes as f64, pick(s)))
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(x, s)| (*x, s.mean)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                pts.iter()
                    .map(|(x, s)| Circle::new((*x, s.mean), 4, color.filled())),
            )
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|(x, s)| {
                PathElement::new(vec![(*x, s.p10), (*x, s.p90)], color.stroke_width(1))
            }))
            .map_err(err)?;
        chart
            .draw_series(pts.iter().map(|(x, s)| {
                Text::new(
                    format!("{:.0}", s.mean),
                    (*x * 1.12, s.mean),
                    ("sans-serif", 13).into_font().color(&color),
                )
            }))
            .map_err(err)?;
        for s in r.sizes.iter().filter(|s| s.family == 6) {
            let st = pick(s);
            let x = s.routes as f64 * 1.25;
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (x, st.mean),
                    7,
                    color.filled(),
                )))
                .map_err(err)?
                .label(format!("{} IPv6", name.split(" (").next().unwrap_or(name)))
                .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, color.filled()));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(path.to_path_buf())
}

/// (2b): ns per packet against the number of VRFs (log scale), each point labelled with how many
/// of those tables the flat IPv4 FIB holds.
pub fn vrfs(r: &vrfs::Results, path: &Path) -> Result<PathBuf> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = r.counts.iter().map(|c| c.ns.p90).fold(0.0, f64::max) * 1.2;
    let most = r.counts.iter().map(|c| c.vrfs).max().unwrap_or(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "ns per packet (BPF_PROG_TEST_RUN) against VRFs of {} routes each",
                si(r.routes_per_vrf as f64)
            ),
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((0.7f64..most * 2.6).log_scale(), 0f64..max.max(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("VRFs the destinations are drawn over")
        .y_desc("ns per packet (mean; bars: 10th–90th percentile)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    let color = COLORS[0];
    let pts: Vec<(f64, &vrfs::Count)> = r.counts.iter().map(|c| (c.vrfs as f64, c)).collect();
    chart
        .draw_series(LineSeries::new(
            pts.iter().map(|(x, c)| (*x, c.ns.mean)),
            color.stroke_width(2),
        ))
        .map_err(err)?;
    chart
        .draw_series(
            pts.iter()
                .map(|(x, c)| Circle::new((*x, c.ns.mean), 4, color.filled())),
        )
        .map_err(err)?;
    chart
        .draw_series(pts.iter().map(|(x, c)| {
            PathElement::new(vec![(*x, c.ns.p10), (*x, c.ns.p90)], color.stroke_width(1))
        }))
        .map_err(err)?;
    chart
        .draw_series(pts.iter().map(|(x, c)| {
            Text::new(
                format!("{:.0} ns, {} flat", c.ns.mean, c.flat_tables),
                (*x * 1.1, c.ns.mean),
                ("sans-serif", 13).into_font().color(&color),
            )
        }))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(path.to_path_buf())
}

/// (3a): seconds per start-up phase against routes (log–log); runs stopped at the time limit
/// are drawn as hollow markers at the time spent.
pub fn sync(r: &control::Results, path: &Path) -> Result<PathBuf> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_t = r
        .sync
        .iter()
        .flat_map(|s| s.phases.iter().map(|p| p.seconds))
        .chain(r.extrapolated_full_s)
        .chain(r.vrfd_starts.iter().filter_map(|v| v.ready_s))
        .fold(0.01, f64::max)
        * 2.0;
    let max_n = r.sync.iter().map(|s| s.routes).max().unwrap_or(1_000_000) as f64 * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption("vrfd start-up path: seconds per phase", ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((5e3f64..max_n).log_scale(), (1e-3f64..max_t).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("routes")
        .y_desc("seconds")
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(err)?;
    let names = ["dump", "mirror", "plan", "write"];
    for (i, name) in names.iter().enumerate() {
        let color = if i < COLORS.len() {
            COLORS[i]
        } else {
            RGBColor(0xbc, 0xbd, 0x22)
        };
        let pts: Vec<(f64, f64, bool)> = r
            .sync
            .iter()
            .filter_map(|s| {
                s.phases
                    .iter()
                    .find(|p| p.name == *name)
                    .map(|p| (s.routes as f64, p.seconds.max(1e-3), p.finished))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(x, y, _)| (*x, *y)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|(x, y, done)| {
                if *done {
                    Circle::new((*x, *y), 4, color.filled())
                } else {
                    Circle::new((*x, *y), 7, color.stroke_width(2))
                }
            }))
            .map_err(err)?;
    }
    let ready: Vec<(f64, f64)> = r
        .vrfd_starts
        .iter()
        .filter_map(|v| v.ready_s.map(|t| (v.routes as f64, t)))
        .collect();
    if !ready.is_empty() {
        chart
            .draw_series(LineSeries::new(
                ready.iter().copied(),
                BLACK.stroke_width(2),
            ))
            .map_err(err)?
            .label("vrfd: spawn → ready")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.stroke_width(2)));
        chart
            .draw_series(ready.iter().map(|p| Circle::new(*p, 4, BLACK.filled())))
            .map_err(err)?;
    }
    if let (Some(est), Some(full)) = (r.extrapolated_full_s, r.sync.last()) {
        let x = full.routes as f64;
        chart
            .draw_series(std::iter::once(Cross::new(
                (x, est),
                7,
                BLACK.stroke_width(2),
            )))
            .map_err(err)?
            .label(format!("estimated total at {}: {est:.0} s", si(x)))
            .legend(|(x, y)| Cross::new((x + 9, y), 5, BLACK.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(path.to_path_buf())
}

/// (3b): distribution of route-change latency (CDF, log x), one line per table size.
pub fn route_changes(r: &control::Results, path: &Path) -> Result<PathBuf> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let all: Vec<f64> = r
        .changes
        .iter()
        .flat_map(|c| c.samples_ms.iter().copied())
        .collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).max(1e-3) / 1.5;
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "route change in the kernel → FIB4 updated, under churn",
            ("sans-serif", 20),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("% of changes (cumulative)")
        .x_label_formatter(&|v| format!("{v}"))
        .draw()
        .map_err(err)?;
    for (i, c) in r.changes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut s = c.samples_ms.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len().max(1) as f64;
        chart
            .draw_series(LineSeries::new(
                s.iter()
                    .enumerate()
                    .map(|(k, v)| (v.max(lo), 100.0 * (k + 1) as f64 / n)),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(format!(
                "{} routes, {}/s churn: p50 {:.2} ms, p99 {:.2} ms",
                si(c.table_routes as f64),
                c.churn_rate,
                c.p50_ms,
                c.p99_ms
            ))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(path.to_path_buf())
}
