//! Health at a glance on the overview: how old the oldest waiting work is, the joiners
//! waiting for the cloud sync and their deadline, the alert outbox, throughput per hour
//! (24 h) and per day (30 days) as charts with axes and labels, and time to done.

use chrono::{DateTime, Utc};

use super::esc;
use super::live::when;
use crate::admin::AdminState;
use crate::store::{Bucket, QueueAges, StoreError, Throughput, TimeToDone};

/// "3 h 12 min", "45 s": an age an operator reads at a glance.
pub(super) fn age(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

/// A duration in seconds: tenths below ten seconds (most jobs take one or two), else [`age`].
pub(super) fn seconds(secs: f64) -> String {
    if secs < 10.0 {
        format!("{:.1} s", secs.max(0.0))
    } else {
        age(secs.round() as i64)
    }
}

/// The health cards, the charts and the time-to-done table; said instead when the store
/// does not answer (never "none waiting" by mistake).
pub(super) async fn section(s: &AdminState) -> String {
    read(s).await.unwrap_or_else(|e| {
        format!(
            "<h2>Health</h2><p class=\"bad\" id=\"health-unreadable\">The queue's health cannot be read now: {}</p>",
            esc(&e.to_string())
        )
    })
}

async fn read(s: &AdminState) -> Result<String, StoreError> {
    let ages = s.store.queue_ages().await?;
    let hours = s.store.throughput(Bucket::Hour).await?;
    let days = s.store.throughput(Bucket::Day).await?;
    let done = s.store.time_to_done().await?;
    Ok([
        cards(&ages, s.sync_deadline, Utc::now()),
        chart(
            "chart",
            "Finished per hour, last 24 hours",
            &hours,
            "%H:00",
            3,
        ),
        chart(
            "chart-days",
            "Finished per day, last 30 days",
            &days,
            "%d %b",
            5,
        ),
        time_to_done(&done),
    ]
    .concat())
}

fn cards(a: &QueueAges, deadline: std::time::Duration, now: DateTime<Utc>) -> String {
    let oldest = a.oldest_pending.map_or("none waiting".into(), |t| {
        format!(
            "{} <small>since {}</small>",
            age((now - t).num_seconds()),
            when(t)
        )
    });
    let sync = match a.oldest_sync_event {
        Some(t) => {
            let due = t + chrono::Duration::from_std(deadline).unwrap_or_default();
            format!(
                "{n} <small>the first fails at {due} (in {left}) unless synced</small>",
                n = a.waiting_for_sync,
                due = when(due),
                left = age((due - now).num_seconds()),
            )
        }
        None => "0".into(),
    };
    let outbox = format!(
        "{} <small>{} failing to send</small>",
        a.alerts_pending, a.alerts_failing
    );
    format!(
        "<h2>Health</h2><div class=\"cards\">\
         <div class=\"card\" id=\"oldest\"><span>Oldest queued or retrying</span><b>{oldest}</b></div>\
         <div class=\"card\" id=\"sync\"><span>Waiting for the cloud sync</span><b>{sync}</b></div>\
         <div class=\"card\" id=\"outbox\"><a href=\"/alerts\">Alert outbox, unsent</a><b>{outbox}</b></div></div>"
    )
}

/// A rounded-up top for the y axis: 1, 2, 5, 10, 20, 50 …
fn nice_top(max: i64) -> i64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= max {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// Stacked bars (succeeded green below, failed red above) with a y axis of job counts, a
/// labelled x axis every `label_every` bars, a legend, and the same numbers as a table.
fn chart(id: &str, title: &str, rows: &[Throughput], label: &str, label_every: usize) -> String {
    let (left, top, plot_h, bar_w) = (44.0, 10.0, 140.0, 22.0);
    let max = nice_top(
        rows.iter()
            .map(|r| r.succeeded + r.failed)
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let y = |n: i64| top + plot_h - n as f64 / max as f64 * plot_h;
    let width = left + rows.len() as f64 * bar_w + 10.0;
    let mut svg = String::new();
    let mut ticks = vec![0, max / 2, max];
    ticks.dedup();
    for tick in ticks {
        svg.push_str(&format!(
            "<line x1=\"{left}\" x2=\"{width}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#ccc\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\" font-size=\"11\">{tick}</text>",
            yy = y(tick),
            tx = left - 4.0,
            ty = y(tick) + 4.0,
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        let x = left + i as f64 * bar_w + 2.0;
        let (ok_top, bad_top) = (y(r.succeeded), y(r.succeeded + r.failed));
        svg.push_str(&format!(
            "<g><title>{b} UTC: {ok} succeeded, {bad} failed</title>\
             <rect x=\"{x}\" y=\"{ok_top}\" width=\"{w}\" height=\"{hok}\" fill=\"#2e7d32\"/>\
             <rect x=\"{x}\" y=\"{bad_top}\" width=\"{w}\" height=\"{hbad}\" fill=\"#c62828\"/></g>",
            b = r.bucket.format("%Y-%m-%d %H:00"),
            ok = r.succeeded,
            bad = r.failed,
            w = bar_w - 4.0,
            hok = top + plot_h - ok_top,
            hbad = ok_top - bad_top,
        ));
        if i % label_every == 0 || i + 1 == rows.len() {
            svg.push_str(&format!(
                "<text x=\"{tx}\" y=\"{ty}\" text-anchor=\"middle\" font-size=\"11\">{l}</text>",
                tx = x + (bar_w - 4.0) / 2.0,
                ty = top + plot_h + 16.0,
                l = r.bucket.format(label),
            ));
        }
    }
    format!(
        "<h2>{t}</h2><svg id=\"{id}\" role=\"img\" aria-label=\"{t}: jobs succeeded and failed\" width=\"{width}\" height=\"{h}\" viewBox=\"0 0 {width} {h}\">\
         <line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{bottom}\" stroke=\"#555\"/>\
         <line x1=\"{left}\" x2=\"{width}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#555\"/>\
         <text x=\"12\" y=\"{mid}\" font-size=\"11\" transform=\"rotate(-90 12 {mid})\" text-anchor=\"middle\">jobs</text>{svg}</svg>\
         <p class=\"legend\"><span class=\"swatch swatch-ok\"></span> succeeded <span class=\"swatch swatch-bad\"></span> failed \
         (times in UTC; hover a bar for its numbers)</p>\
         {table}",
        t = esc(title),
        table = as_table(title, rows),
        h = top + plot_h + 24.0,
        bottom = top + plot_h,
        mid = top + plot_h / 2.0,
    )
}

/// A chart's numbers for readers who cannot see it (or want the figures).
fn as_table(title: &str, rows: &[Throughput]) -> String {
    let body: String = rows
        .iter()
        .map(|r| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.bucket.format("%Y-%m-%d %H:00 UTC"),
                r.succeeded,
                r.failed
            )
        })
        .collect();
    format!(
        "<details><summary>{} as a table</summary><table><tr><th>From (UTC)</th><th>Succeeded</th>\
         <th>Failed</th></tr>{body}</table></details>",
        esc(title)
    )
}

fn time_to_done(rows: &[TimeToDone]) -> String {
    let mut body: String = rows
        .iter()
        .filter_map(|r| {
            let (p50, p95) = (r.p50?, r.p95?);
            Some(format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(r.hour),
                seconds(p50),
                seconds(p95)
            ))
        })
        .collect();
    if body.is_empty() {
        body = "<tr><td colspan=\"3\">No job succeeded in the last 24 hours.</td></tr>".into();
    }
    format!(
        "<h2>Time to done, last 24 hours</h2><table id=\"time-to-done\"><tr><th>Hour</th><th>Median (p50)</th><th>95th percentile</th></tr>{body}</table>\
         <p class=\"muted\">From the event's job being created to its success.</p>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(-3), "0 s");
        assert_eq!(age(45), "45 s");
        assert_eq!(age(125), "2 min");
        assert_eq!(age(3 * 3600 + 12 * 60), "3 h 12 min");
        assert_eq!(age(2 * 86400 + 3600), "2 d 1 h");
        assert_eq!(seconds(0.04), "0.0 s");
        assert_eq!(seconds(1.25), "1.2 s");
        assert_eq!(seconds(125.0), "2 min");
    }

    #[test]
    fn the_axis_tops_out_at_a_round_number() {
        assert_eq!(nice_top(1), 1);
        assert_eq!(nice_top(3), 5);
        assert_eq!(nice_top(37), 50);
        assert_eq!(nice_top(101), 200);
    }
}
