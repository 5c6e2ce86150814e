//! Pages that keep themselves current: the part of a page inside `<div id="live">` is
//! fetched again every few seconds and swapped in, with "updated … ago" beside it. Without
//! JavaScript the page reads as it was served, its time of serving in words. The same
//! script shows every `<time>` in the viewer's time zone, UTC kept on hover.

use chrono::{DateTime, Utc};

/// How often an open page asks for its live part again, in milliseconds.
const REFRESH_MS: u32 = 3000;

/// A time as the viewer's clock shows it (set by the script), UTC on hover and without it.
pub fn when(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{utc}\">{utc}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        utc = t.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}

/// Shows every `<time>` of a page in the viewer's zone (every page carries it).
pub const LOCAL_TIMES: &str = "document.querySelectorAll('time[datetime]').forEach(function(t){\
var d=new Date(t.getAttribute('datetime'));if(!isNaN(d))t.textContent=d.toLocaleString();});";

/// `body` as the live part of a page, with its "updated" line and the script.
pub fn region(body: &str) -> String {
    format!(
        "<p id=\"updated\" class=\"muted\">Served at {now}; reload for newer.</p>\
         <div id=\"live\">{body}</div><script>{SCRIPT}</script>",
        now = when(Utc::now()),
        SCRIPT = script(),
    )
}

/// Swaps in the live part when it changed (not while a field in it has the focus, so
/// keyboard users keep their place, nor while the tab is hidden) and rewrites times into
/// the viewer's zone. An answer without a live part (signed out: the login page) counts
/// as a failed refresh, so the page never claims to be current when it is not.
fn script() -> String {
    format!(
        r#"(function(){{
var at=Date.now(),failed=false,upd=document.getElementById('updated');
function local(root){{root.querySelectorAll('time[datetime]').forEach(function(t){{
var d=new Date(t.getAttribute('datetime'));if(!isNaN(d))t.textContent=d.toLocaleString();}});}}
function tick(){{var s=Math.round((Date.now()-at)/1000);
upd.textContent=(failed?'Could not refresh; last ':'Live: ')+'updated '+(s<2?'just now':s+' s ago');}}
async function pull(){{var el=document.getElementById('live');
if(document.hidden||el.contains(document.activeElement)&&document.activeElement.matches('input,select,textarea'))return;
try{{var r=await fetch(location.href,{{credentials:'same-origin',headers:{{'Accept':'text/html'}}}});
if(!r.ok)throw r.status;var d=new DOMParser().parseFromString(await r.text(),'text/html');
var n=d.getElementById('live');if(!n)throw 'signed out';if(n.innerHTML!==el.dataset.raw){{el.dataset.raw=n.innerHTML;el.innerHTML=n.innerHTML;local(el);}}
at=Date.now();failed=false;}}catch(e){{failed=true;}}tick();}}
document.getElementById('live').dataset.raw=document.getElementById('live').innerHTML;
local(document);tick();setInterval(tick,1000);setInterval(pull,{REFRESH_MS});}})();"#
    )
}
