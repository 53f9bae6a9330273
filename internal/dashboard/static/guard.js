// The guard panel's charts: per metric, each arm's rate in every tick, and the guard's statistic
// against its threshold, drawn with uPlot; stage changes, decisions and actions as vertical
// markers. The data comes from the panel's JSON (data-src) and is fetched again every 2 seconds.
(function () {
  'use strict';
  var root = document.getElementById('charts');
  if (!root || typeof uPlot === 'undefined') return;

  var colours = { treatment: '#0969da', control: '#57606a', stat: '#8250df', threshold: '#b42318', adv: '#1a7f37' };
  var markers = [];
  var charts = {}; // by metric name: {rates: uPlot, stats: uPlot}

  function markerColour(m) {
    if (m.kind === 'stage') return '#6e7781';
    if (m.kind === 'action') return '#bc4c00';
    return m.state === 'TRIPPED' ? '#b42318' : '#8250df';
  }

  // Draws the markers over the plot area, after uPlot drew the series.
  var markerPlugin = {
    hooks: {
      draw: [function (u) {
        var ctx = u.ctx, b = u.bbox;
        ctx.save();
        ctx.beginPath();
        ctx.rect(b.left, b.top, b.width, b.height);
        ctx.clip();
        markers.forEach(function (m) {
          var x = Math.round(u.valToPos(m.x, 'x', true));
          ctx.strokeStyle = markerColour(m);
          ctx.lineWidth = 2;
          ctx.setLineDash(m.kind === 'stage' ? [6, 4] : []);
          ctx.beginPath();
          ctx.moveTo(x, b.top);
          ctx.lineTo(x, b.top + b.height);
          ctx.stroke();
        });
        ctx.restore();
      }]
    }
  };

  function width(el) { return Math.max(280, el.clientWidth || 600); }

  function constant(x, v) { return x.map(function () { return v; }); }

  function ratesData(m) { return [m.x, m.treatment || [], m.control || []]; }
  function statsData(m) {
    return [m.x, m.stat || [], constant(m.x, m.threshold), m.adv || [], constant(m.x, m.advThreshold)];
  }

  function make(fig, m) {
    var unit = m.kind === 'mean' ? 'mean' : 'error rate';
    var rates = new uPlot({
      width: width(fig), height: 200, plugins: [markerPlugin],
      scales: { x: { time: true } },
      series: [
        {},
        { label: 'treatment (' + root.dataset.treatment + ')', stroke: colours.treatment, width: 2, points: { show: true, size: 4 } },
        { label: 'control (' + root.dataset.control + ')', stroke: colours.control, width: 2, points: { show: true, size: 4 } }
      ],
      axes: [{}, { label: unit, size: 70 }]
    }, ratesData(m), fig.querySelector('.rates'));
    var stats = new uPlot({
      width: width(fig), height: 160, plugins: [markerPlugin],
      scales: { x: { time: true } },
      series: [
        {},
        { label: m.kind === 'ratio' ? 'R1 log₁₀ e-value' : 'R2 log₁₀ Λ', stroke: colours.stat, width: 2 },
        { label: 'trip threshold', stroke: colours.threshold, dash: [8, 4], width: 1 },
        { label: 'R5 log₁₀ e-value (advance)', stroke: colours.adv, width: 2 },
        { label: 'advance threshold', stroke: colours.adv, dash: [8, 4], width: 1 }
      ],
      axes: [{}, { label: 'log₁₀', size: 70 }]
    }, statsData(m), fig.querySelector('.stats'));
    return { rates: rates, stats: stats };
  }

  function count(a) { return (a || []).filter(function (v) { return v !== null; }).length; }

  function draw(data) {
    markers = data.markers || [];
    (data.metrics || []).forEach(function (m) {
      var fig = root.querySelector('figure[data-metric="' + CSS.escape(m.name) + '"]');
      if (!fig) return;
      var c = charts[m.name];
      if (!c) {
        c = charts[m.name] = make(fig, m);
      } else {
        c.rates.setData(ratesData(m));
        c.stats.setData(statsData(m));
      }
      // What the charts hold, for people using a screen reader and for the tests.
      fig.dataset.ticks = m.x.length;
      fig.dataset.treatment = count(m.treatment);
      fig.dataset.control = count(m.control);
      fig.dataset.markers = markers.length;
    });
    status(data.metrics && data.metrics.length ? 'Updated ' + new Date().toLocaleTimeString() + '.' : 'No data yet.');
  }

  function status(text) {
    var s = root.querySelector('.chart-status');
    if (s) s.textContent = text;
  }

  function load() {
    fetch(root.dataset.src, { headers: { Accept: 'application/json' }, credentials: 'same-origin' })
      .then(function (r) {
        if (!r.ok) throw new Error('the server answered ' + r.status);
        return r.json();
      })
      .then(draw)
      .catch(function (e) { status('The charts could not be updated: ' + e.message + '.'); });
  }

  window.addEventListener('resize', function () {
    Object.keys(charts).forEach(function (name) {
      var fig = root.querySelector('figure[data-metric="' + CSS.escape(name) + '"]');
      if (!fig) return;
      charts[name].rates.setSize({ width: width(fig), height: 200 });
      charts[name].stats.setSize({ width: width(fig), height: 160 });
    });
  });

  load();
  setInterval(load, 2000);
})();
