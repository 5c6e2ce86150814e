// The dashboard's only script, served from /static so the Content-Security-Policy needs no
// 'unsafe-inline' (src/admin_guard.rs). Every page: times in the viewer's zone (UTC kept on
// hover). A page with a live part (<div id="live" data-refresh-ms="…">): the part is fetched
// again every few seconds and swapped in when it changed (not while a field in it has the
// focus, so keyboard users keep their place, nor while the tab is hidden), with "updated …
// ago" beside it. An answer without a live part (signed out: the login page) counts as a
// failed refresh, so the page never claims to be current when it is not.
(function () {
  function local(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      var d = new Date(t.getAttribute('datetime'));
      if (!isNaN(d)) t.textContent = d.toLocaleString();
    });
  }
  local(document);
  var el = document.getElementById('live'), upd = document.getElementById('updated');
  if (!el || !upd) return;
  var every = parseInt(el.dataset.refreshMs, 10) || 3000, at = Date.now(), failed = false;
  function tick() {
    var s = Math.round((Date.now() - at) / 1000);
    upd.textContent = (failed ? 'Could not refresh; last ' : 'Live: ') + 'updated ' + (s < 2 ? 'just now' : s + ' s ago');
  }
  async function pull() {
    if (document.hidden || el.contains(document.activeElement) && document.activeElement.matches('input,select,textarea')) return;
    try {
      var r = await fetch(location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } });
      if (!r.ok) throw r.status;
      var d = new DOMParser().parseFromString(await r.text(), 'text/html');
      var n = d.getElementById('live');
      if (!n) throw 'signed out';
      if (n.innerHTML !== el.dataset.raw) { el.dataset.raw = n.innerHTML; el.innerHTML = n.innerHTML; local(el); }
      at = Date.now(); failed = false;
    } catch (e) { failed = true; }
    tick();
  }
  el.dataset.raw = el.innerHTML;
  tick();
  setInterval(tick, 1000);
  setInterval(pull, every);
})();
