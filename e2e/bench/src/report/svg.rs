//! A horizontal grouped bar chart written as SVG text (no plotting dependency): one panel per
//! scenario, each with its own scale, one group of bars per case, one bar per broker.

use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 250.0;
const BAR_AREA: f64 = 560.0;
const BAR_HEIGHT: f64 = 11.0;
const BAR_GAP: f64 = 2.0;
const GROUP_GAP: f64 = 8.0;
const PANEL_TITLE: f64 = 28.0;
const HEADER: f64 = 64.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

pub struct Chart {
    pub title: String,
    /// Names of the series (brokers), in legend and bar order.
    pub series: Vec<String>,
    pub panels: Vec<Panel>,
    /// How a bar's value is written next to it.
    pub format: fn(f64) -> String,
}

pub struct Panel {
    pub title: String,
    pub groups: Vec<Group>,
}

pub struct Group {
    pub label: String,
    /// (series index, value); a series without a value leaves no bar.
    pub bars: Vec<(usize, f64)>,
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn group_height(group: &Group) -> f64 {
    group.bars.len().max(1) as f64 * (BAR_HEIGHT + BAR_GAP) + GROUP_GAP
}

pub fn render(chart: &Chart) -> String {
    let body_height: f64 = chart
        .panels
        .iter()
        .map(|p| PANEL_TITLE + p.groups.iter().map(group_height).sum::<f64>())
        .sum();
    let height = HEADER + body_height.max(20.0) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{}</text>"#,
        escape(&chart.title)
    );
    let mut x = 10.0;
    for (i, name) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            out,
            r#"<rect x="{x}" y="36" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="46">{}</text>"#,
            x + 16.0,
            escape(name)
        );
        x += 16.0 + 7.0 * name.len() as f64 + 18.0;
    }
    let mut y = HEADER;
    for panel in &chart.panels {
        y = render_panel(&mut out, chart, panel, y);
    }
    out.push_str("</svg>\n");
    out
}

/// Draws one panel from height `y` down, with its own scale; returns where the next one starts.
fn render_panel(out: &mut String, chart: &Chart, panel: &Panel, mut y: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="10" y="{}" font-size="13" font-weight="bold">{}</text>"#,
        y + 18.0,
        escape(&panel.title)
    );
    y += PANEL_TITLE;
    let max = panel
        .groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.1))
        .fold(0.0, f64::max);
    let scale = if max > 0.0 { BAR_AREA / max } else { 0.0 };
    let axis_end = y + panel.groups.iter().map(group_height).sum::<f64>() - GROUP_GAP;
    let _ = writeln!(
        out,
        r##"<line x1="{LABEL_WIDTH}" y1="{}" x2="{LABEL_WIDTH}" y2="{axis_end}" stroke="#999"/>"##,
        y - 4.0
    );
    for group in &panel.groups {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_WIDTH - 8.0,
            y + (group_height(group) - GROUP_GAP) / 2.0 + 4.0,
            escape(&group.label)
        );
        for (slot, &(series, value)) in group.bars.iter().enumerate() {
            let top = y + slot as f64 * (BAR_HEIGHT + BAR_GAP);
            let width = (value.max(0.0) * scale).max(0.5);
            let color = COLORS[series % COLORS.len()];
            let name = escape(chart.series.get(series).map_or("", String::as_str));
            let label = escape(&(chart.format)(value));
            let _ = writeln!(
                out,
                r#"<rect x="{LABEL_WIDTH}" y="{top}" width="{width:.1}" height="{BAR_HEIGHT}" fill="{color}"><title>{name}: {label}</title></rect>"#
            );
            let (text_x, text_y) = (LABEL_WIDTH + width + 4.0, top + BAR_HEIGHT - 1.5);
            let _ = writeln!(out, r#"<text x="{text_x:.1}" y="{text_y}">{label}</text>"#);
        }
        y += group_height(group);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart() -> Chart {
        Chart {
            title: "Throughput <msg/s>".into(),
            series: vec!["tern".into(), "mosquitto".into()],
            panels: vec![Panel {
                title: "p2p".into(),
                groups: vec![
                    Group {
                        label: "QoS 0, 64 B".into(),
                        bars: vec![(0, 200.0), (1, 100.0)],
                    },
                    Group {
                        label: "QoS 1, 64 B".into(),
                        bars: vec![(0, 50.0)],
                    },
                ],
            }],
            format: |v| format!("{v:.0}"),
        }
    }

    #[test]
    fn one_bar_per_value_scaled_to_the_panel_maximum() {
        let svg = render(&chart());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(
            svg.contains(r##"width="560.0" height="11" fill="#1f77b4"><title>tern: 200</title>"##),
            "{svg}"
        );
        assert!(
            svg.contains(
                r##"width="280.0" height="11" fill="#ff7f0e"><title>mosquitto: 100</title>"##
            ),
            "{svg}"
        );
    }

    #[test]
    fn text_is_escaped() {
        let svg = render(&chart());
        assert!(svg.contains("Throughput &lt;msg/s&gt;"));
        assert!(!svg.contains("<msg/s>"));
    }
}
