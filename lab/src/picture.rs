//! A picture of a rollout as the router saw it (the README's): one row per
//! node along the seconds since the image bump, green while the router has
//! every prefix via that node and red while it lacks one, and a mark where
//! each node's agent was handed over, with its pause. Pure: samples in,
//! SVG text out; `nonstop-demo --svg FILE` takes the samples in the lab.

use std::fmt::Write;

/// What the router had at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the image bump.
    pub at: f64,
    /// Per node (in [`Timeline::nodes`] order): every prefix via it.
    pub via: Vec<bool>,
}

/// A node's handoff as the operator recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub node: usize,
    /// Seconds since the image bump (the record has whole seconds).
    pub at: f64,
    pub pause_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub title: String,
    pub nodes: Vec<String>,
    pub samples: Vec<Sample>,
    pub handoffs: Vec<Handoff>,
    /// The last line, under the axis: what the router counted.
    pub footer: String,
}

const WIDTH: f64 = 760.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 48.0;
const ROW: f64 = 46.0;
const BAND: f64 = 18.0;
const GREEN: &str = "#2e9e5b";
const RED: &str = "#d64545";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The picture, as a standalone SVG document.
pub fn svg(t: &Timeline) -> String {
    let end = t.samples.last().map_or(1.0, |s| s.at).max(1.0);
    let x = |at: f64| LEFT + (at / end).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT);
    let rows = t.nodes.len() as f64;
    let axis = TOP + rows * ROW + 6.0;
    let height = axis + 56.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"24\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        escape(&t.title)
    );
    for (row, node) in t.nodes.iter().enumerate() {
        let y = TOP + row as f64 * ROW;
        let _ = writeln!(out, "<text x=\"8\" y=\"{:.1}\">{}</text>", y + BAND - 4.0, escape(node));
        // One rectangle per run of samples of one colour, from the run's
        // first sample to the next run's.
        let there = |s: &Sample| s.via.get(row).copied().unwrap_or(false);
        let mut runs: Vec<(f64, f64, bool)> = Vec::new();
        for pair in t.samples.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            match runs.last_mut() {
                Some(run) if run.2 == there(a) => run.1 = b.at,
                _ => runs.push((a.at, b.at, there(a))),
            }
        }
        for (from, to, ok) in runs {
            let color = if ok { GREEN } else { RED };
            let _ = writeln!(
                out,
                "<rect x=\"{:.2}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{BAND}\" fill=\"{color}\"/>",
                x(from),
                (x(to) - x(from)).max(0.5),
            );
        }
    }
    for h in &t.handoffs {
        let y = TOP + h.node as f64 * ROW;
        let at = x(h.at);
        let pause = h
            .pause_ms
            .map_or_else(|| "handoff".to_string(), |ms| format!("handoff, pause {ms} ms"));
        let _ = writeln!(
            out,
            "<line x1=\"{at:.2}\" y1=\"{:.1}\" x2=\"{at:.2}\" y2=\"{:.1}\" stroke=\"black\" stroke-width=\"2\"/>\n\
             <text x=\"{:.2}\" y=\"{:.1}\">{pause}</text>",
            y - 3.0,
            y + BAND + 3.0,
            (at + 4.0).min(WIDTH - 150.0),
            y + BAND + 15.0,
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" y1=\"{axis}\" x2=\"{:.1}\" y2=\"{axis}\" stroke=\"#555\"/>",
        WIDTH - RIGHT
    );
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0]
        .into_iter()
        .find(|s| end / s <= 10.0)
        .unwrap_or(120.0);
    let mut tick = 0.0;
    while tick <= end + 1e-9 {
        let _ = writeln!(
            out,
            "<line x1=\"{0:.2}\" y1=\"{axis}\" x2=\"{0:.2}\" y2=\"{1}\" stroke=\"#555\"/>\n\
             <text x=\"{0:.2}\" y=\"{2}\" text-anchor=\"middle\">{3} s</text>",
            x(tick),
            axis + 5.0,
            axis + 18.0,
            tick
        );
        tick += step;
    }
    let _ = writeln!(
        out,
        "<rect x=\"{LEFT}\" y=\"{0}\" width=\"10\" height=\"10\" fill=\"{GREEN}\"/>\
         <text x=\"{1}\" y=\"{2}\">every prefix via the node at the router</text>\
         <rect x=\"{3}\" y=\"{0}\" width=\"10\" height=\"10\" fill=\"{RED}\"/>\
         <text x=\"{4}\" y=\"{2}\">a prefix missing</text>\n\
         <text x=\"{LEFT}\" y=\"{5}\" fill=\"#333\">{6}</text>",
        axis + 26.0,
        LEFT + 14.0,
        axis + 35.0,
        LEFT + 270.0,
        LEFT + 284.0,
        axis + 52.0,
        escape(&t.footer),
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline(via_node_2: [bool; 3]) -> Timeline {
        let sample = |at: f64, i: usize| Sample { at, via: vec![true, via_node_2[i], true] };
        Timeline {
            title: "v1 → v2 <3 nodes>".into(),
            nodes: vec!["node-1".into(), "node-2".into(), "node-3".into()],
            samples: vec![sample(0.0, 0), sample(4.0, 1), sample(8.0, 2)],
            handoffs: vec![Handoff { node: 1, at: 4.0, pause_ms: Some(3) }],
            footer: "at the router: 0 session resets, 0 withdrawals".into(),
        }
    }

    #[test]
    fn each_node_is_a_band_green_while_the_router_has_its_routes() {
        let all_there = svg(&timeline([true, true, true]));
        assert_eq!(
            all_there.matches(&format!("fill=\"{GREEN}\"/>\n")).count(),
            3,
            "a band per row, one run of green each"
        );
        assert!(!all_there.contains(&format!("height=\"{BAND}\" fill=\"{RED}\"")));
        // node-2 lost a prefix between 4 s and 8 s: that span is red.
        let missing = svg(&timeline([true, false, true]));
        assert_eq!(missing.matches(&format!("height=\"{BAND}\" fill=\"{RED}\"")).count(), 1);
        assert!(
            missing.contains(&format!("x=\"{:.2}\" y=\"{:.1}\"", 80.0 + 330.0, TOP + ROW)),
            "{missing}"
        );
        assert!(missing.contains("handoff, pause 3 ms"));
        assert!(missing.contains("v1 → v2 &lt;3 nodes&gt;"), "text is escaped");
        assert!(missing.starts_with("<svg ") && missing.ends_with("</svg>\n"));
        // Ticks every second up to 8 s.
        assert!(missing.contains(">8 s</text>") && !missing.contains(">9 s</text>"));
    }
}
