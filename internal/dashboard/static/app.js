// Interlock dashboard glue: what htmx does not do by itself. No inline script anywhere; the
// Content-Security-Policy allows scripts from this origin only.
(function () {
  'use strict';

  // Times: the browser's own zone, UTC on hover; relative times on lists kept fresh.
  function rel(ms) {
    var s = Math.round((Date.now() - ms) / 1000);
    if (s < 60) return 'just now';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 172800) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' days ago';
  }
  function times(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      var d = new Date(t.getAttribute('datetime'));
      if (isNaN(d)) return;
      var utc = d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
      t.title = d.toLocaleString() + ' (' + utc + ')';
      t.textContent = t.classList.contains('rel') ? rel(d.getTime()) : d.toLocaleString();
    });
  }

  // The dialog opens when htmx puts a confirmation in it; [data-close] closes it.
  function dialog() { return document.getElementById('dialog'); }
  document.addEventListener('htmx:afterSwap', function (e) {
    if (e.detail.target && e.detail.target.id === 'dialog-body') {
      var d = dialog();
      if (!d.open) d.showModal();
      var first = d.querySelector('textarea, input:not([type=hidden])');
      if (first) first.focus();
    }
  });
  document.addEventListener('click', function (e) {
    if (e.target.closest('[data-close]')) dialog().close();
  });

  // A time picker's local time goes to the server as an instant.
  document.addEventListener('submit', function (e) {
    var f = e.target;
    if (!f.classList || !f.classList.contains('timetravel')) return;
    var input = f.querySelector('input[type=datetime-local]');
    if (!input || !input.value) return;
    var d = new Date(input.value);
    if (isNaN(d)) return;
    e.preventDefault();
    var u = new URL(f.action, location.href);
    u.searchParams.set('at', d.toISOString());
    location.href = u.toString();
  });

  // A filter form's local times go to the server as instants, and come back shown locally.
  function localValue(d) {
    var p = function (n) { return String(n).padStart(2, '0'); };
    return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }
  document.addEventListener('submit', function (e) {
    var f = e.target;
    if (!f.classList || !f.classList.contains('localtimes')) return;
    f.querySelectorAll('input[type=datetime-local]').forEach(function (input) {
      if (!input.value) { input.disabled = true; return; }
      var d = new Date(input.value);
      if (isNaN(d)) return;
      var h = document.createElement('input');
      h.type = 'hidden'; h.name = input.name; h.value = d.toISOString();
      input.name = '';
      f.appendChild(h);
    });
  });
  function utcInputs(root) {
    root.querySelectorAll('input[type=datetime-local][data-utc]').forEach(function (input) {
      var d = new Date(input.dataset.utc);
      if (input.dataset.utc && !isNaN(d)) input.value = localValue(d);
    });
  }

  // Live connection state, and the last event seen, so that a new connection catches up.
  function conn(state, text) {
    var c = document.getElementById('conn');
    if (c) { c.dataset.state = state; c.textContent = text; }
  }
  document.addEventListener('htmx:sseOpen', function () { conn('live', 'live'); });
  document.addEventListener('htmx:sseError', function () { conn('reconnecting', 'reconnecting…'); });
  document.addEventListener('htmx:sseBeforeMessage', function (e) {
    var id = e.detail && e.detail.lastEventId;
    var src = e.target.closest('[sse-connect]');
    if (id && src) {
      var u = new URL(src.getAttribute('sse-connect'), location.href);
      u.searchParams.set('after', id);
      src.setAttribute('sse-connect', u.pathname + u.search);
    }
    document.body.dataset.lastEvent = id || document.body.dataset.lastEvent || '';
  });
  document.addEventListener('htmx:afterSettle', function (e) { times(e.target); });
  document.addEventListener('htmx:oobAfterSwap', function (e) { times(e.target); });

  // Keyboard: / search, j/k move through the list, Enter opens, Shift+K kills (asks first).
  function rows() { return Array.prototype.slice.call(document.querySelectorAll('tr.flagrow')); }
  function selected() { return document.querySelector('tr.flagrow.selected'); }
  function select(r) {
    var s = selected();
    if (s) s.classList.remove('selected');
    if (r) { r.classList.add('selected'); r.focus(); }
  }
  document.addEventListener('keydown', function (e) {
    var t = e.target;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t.closest('input, textarea, select, [contenteditable]') || dialog().open) return;
    var rs, i;
    switch (e.key) {
      case '/':
        var q = document.getElementById('q');
        if (q) { e.preventDefault(); q.focus(); }
        break;
      case 'j': case 'k':
        rs = rows();
        if (!rs.length) return;
        i = rs.indexOf(selected());
        i = e.key === 'j' ? Math.min(i + 1, rs.length - 1) : Math.max(i - 1, 0);
        select(rs[i]);
        break;
      case 'Enter':
        var s = selected();
        if (s && t === s) { var a = s.querySelector('a.key'); if (a) a.click(); }
        break;
      case 'K':
        var scope = selected() || document.getElementById('summary');
        var b = scope && scope.querySelector('[data-kill]');
        if (b) { e.preventDefault(); b.click(); }
        break;
    }
  });

  document.addEventListener('DOMContentLoaded', function () {
    times(document);
    utcInputs(document);
    setInterval(function () { times(document); }, 30000);
  });
})();
