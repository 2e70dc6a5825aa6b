//! Line charts as SVG text (plotters' SVG backend): the same figures give the same bytes, so the
//! committed pictures are checked for drift like the tables.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// One line of a chart: its name and its points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart of `series` against x, with an optional horizontal goal line (its label and value).
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series>,
    pub goal: Option<(&'a str, f64)>,
    /// x on a log scale (tenant counts 10 to 1000).
    pub log_x: bool,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// The chart as an SVG document, 640 x 360.
pub fn line_chart(c: &Chart) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (640, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        let ys = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(c.goal.map(|g| g.1));
        let y1 = ys.fold(0.0f64, f64::max) * 1.15;
        if !(x0.is_finite() && x1.is_finite() && y1 > 0.0) {
            return Err(anyhow!("{}: nothing to draw", c.title));
        }
        let mut b = ChartBuilder::on(&root);
        b.caption(c.title, ("sans-serif", 18)).margin(12).x_label_area_size(40).y_label_area_size(56);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(c.x_label)
                    .y_desc(c.y_label)
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
                for (i, s) in c.series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    chart
                        .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
                        .map_err(|e| anyhow!("{e}"))?
                        .label(s.name.as_str())
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                    chart
                        .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                        .map_err(|e| anyhow!("{e}"))?;
                }
                if let Some((label, v)) = c.goal {
                    let grey = RGBColor(120, 120, 120);
                    chart
                        .draw_series(LineSeries::new([(x0, v), (x1, v)], grey.stroke_width(1)))
                        .map_err(|e| anyhow!("{e}"))?
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey.stroke_width(1)));
                }
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK.mix(0.3))
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
            }};
        }
        if c.log_x {
            draw!(b.build_cartesian_2d((x0 * 0.8..x1 * 1.25).log_scale(), 0.0..y1).map_err(|e| anyhow!("{e}"))?);
        } else {
            draw!(b.build_cartesian_2d(x0..x1, 0.0..y1).map_err(|e| anyhow!("{e}"))?);
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(out + "\n")
}

/// One panel of a [`timeline_chart`]: its y axis and its lines.
pub struct Panel<'a> {
    pub y_label: &'a str,
    pub series: Vec<Series>,
}

/// A figure that holds its value until the next point (a count over time).
fn steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len() * 2);
    for (i, &(x, y)) in points.iter().enumerate() {
        if i > 0 {
            out.push((x, points[i - 1].1));
        }
        out.push((x, y));
    }
    out
}

/// Panels stacked over one time axis, 640 x 200 per panel, each series drawn as steps. A series whose
/// name starts with `visio-operator` is blue, any other red; a series about pods on their way out is
/// thinner and lighter.
pub fn timeline_chart(title: &str, x_label: &str, panels: &[Panel]) -> Result<String> {
    let mut out = String::new();
    {
        let height = 40 + 200 * panels.len() as u32;
        let root = SVGBackend::with_string(&mut out, (640, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        let root = root.titled(title, ("sans-serif", 16)).map_err(|e| anyhow!("{e}"))?;
        let xs = panels.iter().flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        if !(x0.is_finite() && x1.is_finite() && x1 > x0) {
            return Err(anyhow!("{title}: nothing to draw"));
        }
        for (panel, area) in panels.iter().zip(root.split_evenly((panels.len(), 1))) {
            let y1 = panel.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.15;
            let mut chart = ChartBuilder::on(&area)
                .margin(8)
                .x_label_area_size(32)
                .y_label_area_size(48)
                .build_cartesian_2d(x0..x1, 0.0..y1)
                .map_err(|e| anyhow!("{e}"))?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(panel.y_label)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for s in &panel.series {
                let base = if s.name.starts_with("visio-operator") { COLORS[0] } else { COLORS[1] };
                let leaving = s.name.contains("draining");
                let style = if leaving { base.mix(0.45).stroke_width(1) } else { base.stroke_width(2) };
                chart
                    .draw_series(LineSeries::new(steps(&s.points), style))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK.mix(0.3))
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(out + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_an_svg_with_its_labels_and_the_same_bytes_each_time() {
        let chart = || Chart {
            title: "peak RSS",
            x_label: "tenants",
            y_label: "MiB",
            series: vec![Series {
                name: "visio-operator".into(),
                points: vec![(10.0, 30.0), (100.0, 50.0), (1000.0, 120.0)],
            }],
            goal: Some(("goal at 300", 64.0)),
            log_x: true,
        };
        let a = line_chart(&chart()).unwrap();
        assert!(a.starts_with("<svg") && a.contains("peak RSS") && a.contains("goal at 300"), "{a:.300}");
        assert_eq!(a, line_chart(&chart()).unwrap());
        let empty = Chart { series: vec![], goal: None, ..chart() };
        assert!(line_chart(&empty).is_err());
    }

    #[test]
    fn counts_over_time_are_steps_and_panels_share_the_time_axis() {
        assert_eq!(
            steps(&[(0.0, 1.0), (2.0, 3.0), (5.0, 2.0)]),
            [(0.0, 1.0), (2.0, 1.0), (2.0, 3.0), (5.0, 3.0), (5.0, 2.0)]
        );
        let series = |name: &str| Series { name: name.into(), points: vec![(-3.0, 2.0), (10.0, 4.0)] };
        let panels = || {
            [
                Panel { y_label: "pods", series: vec![series("visio-operator: pods"), series("chart baseline: pods")] },
                Panel { y_label: "meetings", series: vec![series("visio-operator: meetings open")] },
            ]
        };
        let a = timeline_chart("3. upgrade", "seconds", &panels()).unwrap();
        assert!(a.starts_with("<svg") && a.contains("3. upgrade") && a.contains("chart baseline: pods"), "{a:.300}");
        assert_eq!(a, timeline_chart("3. upgrade", "seconds", &panels()).unwrap());
        assert!(timeline_chart("x", "s", &[Panel { y_label: "pods", series: vec![] }]).is_err());
    }
}
