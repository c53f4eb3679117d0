//! The ceremony timeline as an inline SVG chart: one bar per ceremony from its first record to
//! its outcome, coloured by outcome, on a time axis in UTC. A ceremony with no outcome in the
//! records runs to the last record.

use std::time::{Duration, UNIX_EPOCH};

use super::html_escape::esc;
use super::model::Ceremony;

/// Width of the chart, in SVG units (it scales to the page).
const WIDTH: f64 = 1000.0;
/// Where the bars start: the labels are to the left of it.
const LEFT: f64 = 270.0;
/// Space right of the bars.
const RIGHT: f64 = 40.0;
/// Height of one ceremony's row.
const ROW: f64 = 28.0;
/// Height of a bar.
const BAR: f64 = 16.0;
/// Space above the first row.
const TOP: f64 = 8.0;
/// Height of the time axis under the rows.
const AXIS: f64 = 44.0;
/// The narrowest bar drawn, so that a ceremony done within a second still shows.
const MIN_BAR: f64 = 4.0;
/// Tick steps, in milliseconds, from a tenth of a second to a year.
const STEPS: [u64; 27] = [
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
    1_209_600_000,
    2_592_000_000,
    7_776_000_000,
    31_536_000_000,
];
/// A day, in milliseconds.
const DAY: u64 = 86_400_000;
/// At most this many ticks on the axis.
const MAX_TICKS: u64 = 8;

/// A ceremony on the chart: its times in milliseconds since 1970.
struct Bar<'c, 'a> {
    ceremony: &'c Ceremony<'a>,
    start: f64,
    end: f64,
}

/// The chart of `ceremonies`, and the ids of those left off it because a record's time is not
/// a time. `last_time` is the time of the bundle's last record, where pending ceremonies end.
pub fn timeline_svg<'c>(ceremonies: &'c [Ceremony<'_>], last_time: &str) -> (String, Vec<&'c str>) {
    let last = millis(last_time);
    let mut bars = Vec::new();
    let mut left_off = Vec::new();
    for c in ceremonies {
        let start = c.first().and_then(|r| millis(&r.time));
        let end = match c.ended {
            Some(r) => millis(&r.time),
            None => last,
        };
        match (start, end) {
            (Some(start), Some(end)) => bars.push(Bar {
                ceremony: c,
                start,
                end: end.max(start),
            }),
            _ => left_off.push(c.id),
        }
    }
    let (Some(t0), Some(t1)) = (
        bars.iter().map(|b| b.start).reduce(f64::min),
        bars.iter().map(|b| b.end).reduce(f64::max),
    ) else {
        return (String::new(), left_off);
    };
    // At least a second across, around the middle, with a margin either side.
    let span = (t1 - t0).max(1000.0);
    let mid = (t0 + t1) / 2.0;
    let (lo, hi) = (mid - span * 0.54, mid + span * 0.54);
    let chart = WIDTH - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t - lo) / (hi - lo) * chart;
    let rows = bars.len() as f64;
    let height = TOP + rows * ROW + AXIS;

    let mut svg = format!(
        "<svg id=\"timeline-chart\" viewBox=\"0 0 {WIDTH} \
         {height:.0}\" role=\"img\" aria-labelledby=\"timeline-title\">\
         <title id=\"timeline-title\">Ceremonies from opening to outcome, UTC</title>"
    );
    let axis_y = TOP + rows * ROW + 4.0;
    // Stripes and grid first, the bars over them.
    for i in (1..bars.len()).step_by(2) {
        svg.push_str(&format!(
            "<rect class=\"stripe\" x=\"0\" y=\"{:.1}\" width=\"{WIDTH}\" height=\"{ROW}\"/>",
            TOP + i as f64 * ROW
        ));
    }
    let step = STEPS
        .iter()
        .copied()
        .find(|s| (hi - lo) / (*s as f64) <= MAX_TICKS as f64)
        .unwrap_or(STEPS[STEPS.len() - 1]);
    let days = hi - lo >= DAY as f64;
    let mut tick = (lo / step as f64).ceil() as u64 * step;
    while (tick as f64) <= hi {
        let tx = x(tick as f64);
        svg.push_str(&format!(
            "<line class=\"tick\" x1=\"{tx:.1}\" y1=\"{TOP}\" x2=\"{tx:.1}\" y2=\"{:.1}\"/>\
             <text class=\"tick-label\" x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            axis_y + 5.0,
            axis_y + 20.0,
            tick_label(tick, step, days)
        ));
        tick += step;
    }
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + i as f64 * ROW;
        let outcome = b.ceremony.outcome.word();
        let x0 = x(b.start);
        let w = (x(b.end) - x0).max(MIN_BAR);
        svg.push_str(&format!(
            "<g class=\"bar {outcome}\" data-ceremony=\"{}\"><title>{}</title>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{BAR}\" rx=\"3\"/></g>",
            esc(b.ceremony.id),
            esc(&tooltip(b.ceremony)),
            LEFT - 10.0,
            y + ROW / 2.0 + 4.0,
            esc(&label(b.ceremony)),
            y + (ROW - BAR) / 2.0,
        ));
    }
    svg.push_str(&format!(
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{axis_y:.1}\" x2=\"{:.1}\" y2=\"{axis_y:.1}\"/>",
        WIDTH - RIGHT
    ));
    svg.push_str(&format!(
        "<text class=\"axis-label\" x=\"{LEFT}\" y=\"{:.1}\">UTC, {} to {}</text></svg>",
        axis_y + 37.0,
        esc(&rfc3339(t0)),
        esc(&rfc3339(t1))
    ));
    (svg, left_off)
}

/// The row's label: the ceremony's id (shortened) and what it does.
fn label(c: &Ceremony<'_>) -> String {
    let id: String = if c.id.chars().count() > 12 {
        format!("{}…", c.id.chars().take(10).collect::<String>())
    } else {
        c.id.to_string()
    };
    format!("{id}  {}", what(c))
}

/// What a ceremony does, from its opening: the operation and its main parameter.
pub fn what(c: &Ceremony<'_>) -> String {
    let Some(open) = c.opening() else {
        return "(opening not in these records)".into();
    };
    let main = ["key_type", "action", "state"]
        .iter()
        .find_map(|k| open.params.get(*k));
    let operation = match open.operation.as_str() {
        "" => "(no operation recorded)",
        op => op,
    };
    match main {
        Some(v) => format!("{operation} {v}"),
        None => operation.to_string(),
    }
}

/// The bar's tooltip: id, what, outcome, approvals and times.
fn tooltip(c: &Ceremony<'_>) -> String {
    let start = c.first().map_or("?", |r| r.time.as_str());
    let end = c
        .ended
        .map_or("no outcome in these records", |r| r.time.as_str());
    format!(
        "Ceremony {}: {}; {}, {} approval(s); {start} to {end}",
        c.id,
        what(c),
        c.outcome.word(),
        c.approvers.len()
    )
}

/// A tick's label (`ms` since 1970): the time of day, to the tenth of a second when ticks
/// are closer than a second; the date when the chart spans days.
fn tick_label(ms: u64, step: u64, days: bool) -> String {
    let text = rfc3339(ms as f64);
    // "2026-03-01T09:00:01.200Z"
    let (date, time) = (text.get(5..10), text.get(11..23));
    let time_to = |end: usize| time.and_then(|t| t.get(..end)).unwrap_or_default();
    match (days, step) {
        (true, s) if s >= DAY => date.unwrap_or_default().to_string(),
        (true, _) => format!("{} {}", date.unwrap_or_default(), time_to(5)),
        (false, s) if s >= 60_000 => time_to(5).to_string(),
        (false, s) if s >= 1_000 => time_to(8).to_string(),
        _ => time_to(10).to_string(),
    }
}

/// A record time in milliseconds since 1970; `None` when it is not an RFC 3339 time.
fn millis(time: &str) -> Option<f64> {
    let t = humantime::parse_rfc3339(time).ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() * 1000.0)
}

/// Milliseconds since 1970 as an RFC 3339 time with milliseconds, as records write them.
fn rfc3339(ms: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0.0).round() as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// The outcomes the bars' colours stand for (their CSS classes), with what each means.
pub fn legend() -> &'static [(&'static str, &'static str)] {
    &[
        ("executed", "executed"),
        ("cancelled", "cancelled"),
        ("expired", "expired"),
        ("failed", "failed"),
        (
            "pending",
            "no outcome in these records (runs to the last record)",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report::model::ceremonies;
    use crate::audit::report::test_records::generate_ceremony;

    #[test]
    fn each_ceremony_is_a_bar_coloured_by_its_outcome_on_a_time_axis() {
        let records = generate_ceremony();
        let cs = ceremonies(&records);
        let (svg, left_off) = timeline_svg(&cs, &records[records.len() - 1].time);
        assert!(left_off.is_empty());
        assert!(svg.starts_with("<svg id=\"timeline-chart\""), "{svg}");
        assert!(
            svg.contains("<g class=\"bar executed\" data-ceremony=\"cer-1\">"),
            "{svg}"
        );
        assert!(
            svg.contains("<g class=\"bar cancelled\" data-ceremony=\"cer-2\">"),
            "{svg}"
        );
        assert!(
            svg.contains(">cer-1  generate national-master</text>"),
            "{svg}"
        );
        // Records a second apart over 8 seconds: ticks every 2 seconds, at the time of day.
        assert!(svg.contains(">09:00:04</text>"), "{svg}");
        assert!(!svg.contains(">09:00:05</text>"), "{svg}");
        assert!(
            svg.contains(">cer-2  (no operation recorded)</text>"),
            "{svg}"
        );
        assert!(
            svg.contains("UTC, 2026-03-01T09:00:01.000Z to 2026-03-01T09:00:09.000Z"),
            "{svg}"
        );
    }

    #[test]
    fn a_ceremony_whose_time_is_not_a_time_is_left_off_and_named() {
        let mut records = generate_ceremony();
        for r in records
            .iter_mut()
            .filter(|r| r.ceremony.as_deref() == Some("cer-2"))
        {
            r.time = "yesterday".into();
        }
        let cs = ceremonies(&records);
        let (svg, left_off) = timeline_svg(&cs, "2026-03-01T09:00:09.000Z");
        assert_eq!(left_off, vec!["cer-2"]);
        assert!(!svg.contains("cer-2"), "{svg}");
    }

    #[test]
    fn ticks_follow_the_span() {
        let nine = 9 * 3_600_000;
        assert_eq!(tick_label(nine + 61_000, 1_000, false), "09:01:01");
        assert_eq!(tick_label(nine + 61_200, 200, false), "09:01:01.2");
        assert_eq!(tick_label(nine + 60_000, 60_000, false), "09:01");
        assert_eq!(tick_label(DAY * 3, DAY, true), "01-04");
        assert_eq!(tick_label(DAY + 3_600_000, 21_600_000, true), "01-02 01:00");
    }

    #[test]
    fn a_ceremony_done_within_a_second_gets_ticks_around_it() {
        let mut records = generate_ceremony();
        records.truncate(5);
        for (i, r) in records.iter_mut().enumerate() {
            r.time = format!("2026-03-01T09:00:01.{:03}Z", 300 + i * 20);
        }
        let cs = ceremonies(&records);
        let (svg, _) = timeline_svg(&cs, &records[4].time);
        assert!(svg.contains(">09:00:01.2</text>"), "{svg}");
        assert!(svg.contains(">09:00:01.6</text>"), "{svg}");
    }
}
