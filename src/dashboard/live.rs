//! Pages that keep themselves current: the part of a page inside `<div id="live">` is
//! fetched again every few seconds and swapped in, with "updated … ago" beside it. Without
//! JavaScript the page reads as it was served, its time of serving in words. The same
//! script (`static/dashboard.js`, a file so the Content-Security-Policy needs no inline
//! code) shows every `<time>` in the viewer's time zone, UTC kept on hover.

use chrono::{DateTime, Utc};

/// How often an open page asks for its live part again, in milliseconds.
const REFRESH_MS: u32 = 3000;

/// A time as the viewer's clock shows it (set by the script), UTC on hover and without it.
pub(super) fn when(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{utc}\">{utc}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        utc = t.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

/// `body` as the live part of a page, with its "updated" line; `static/dashboard.js`
/// refreshes it (and without JavaScript the page reads as it was served).
pub(super) fn region(body: &str) -> String {
    format!(
        "<p id=\"updated\" class=\"muted\">Served at {now}; reload for newer.</p>\
         <div id=\"live\" data-refresh-ms=\"{REFRESH_MS}\">{body}</div>",
        now = when(Utc::now()),
    )
}

/// The dashboard's style sheet and script, served under `/static/` (no inline code, so the
/// Content-Security-Policy allows only files from this origin).
pub(super) const STYLE: &str = include_str!("static/dashboard.css");
pub(super) const SCRIPT: &str = include_str!("static/dashboard.js");
