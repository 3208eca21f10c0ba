// The timeline page: one uPlot chart per measure, a series per service, fed by SSE.
(function () {
  "use strict";
  const root = document.getElementById("timeline");
  const status = document.getElementById("timeline-status");
  const measures = ["handled", "published", "p50", "p99", "retries", "dead_letters"];
  const colours = ["#3b5bdb", "#12805c", "#b42318", "#b54708", "#7a5af8", "#0e9384", "#c11574"];
  const charts = {};

  function build(measure, data) {
    const holder = document.getElementById("chart-" + measure);
    const services = data.services;
    const series = [{}].concat(services.map(function (name, i) {
      return { label: name, stroke: colours[i % colours.length], width: 2, spanGaps: false };
    }));
    const options = {
      width: Math.max(holder.clientWidth - 20, 300), height: 200, series: series,
      scales: { x: { time: true } }, legend: { live: false },
    };
    return new uPlot(options, columns(measure, data), holder);
  }

  function columns(measure, data) {
    return [data.t].concat(data.services.map(function (name) {
      return (data[measure] || {})[name] || data.t.map(function () { return null; });
    }));
  }

  function show(data) {
    const key = data.services.join(",");
    measures.forEach(function (measure) {
      const chart = charts[measure];
      if (chart && chart.key === key) {
        chart.plot.setData(columns(measure, data));
      } else {
        if (chart) { chart.plot.destroy(); }
        charts[measure] = { key: key, plot: build(measure, data) };
      }
    });
    status.textContent = data.services.length
      ? "services: " + data.services.join(", ")
      : "no telemetry reports in this window";
    root.dataset.services = key;
  }

  const source = new EventSource(root.dataset.stream);
  source.addEventListener("timeline", function (event) { show(JSON.parse(event.data)); });
  source.onerror = function () { status.textContent = "reconnecting…"; };
})();
