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
}
