/* cbserver console: draws each report's chart from the table beside it (the numbers stay in
   the table; without JavaScript the tables are the report). A file of its own, because the
   console's Content-Security-Policy allows no inline script. */
(function () {
  "use strict";
  var COLOURS = ["#1f6feb", "#d97706", "#15803d", "#b91c1c"];

  function columnIndex(table, name) {
    var heads = table.querySelectorAll("thead th");
    for (var i = 0; i < heads.length; i++) {
      if (heads[i].getAttribute("data-column") === name) { return i; }
    }
    return -1;
  }

  function draw(canvas) {
    var table = document.getElementById(canvas.getAttribute("data-table"));
    if (!table || typeof window.Chart === "undefined") { return; }
    var labelAt = columnIndex(table, canvas.getAttribute("data-label"));
    var currencyAt = columnIndex(table, "currency");
    var series = canvas.getAttribute("data-series").split(" ");
    var rows = Array.prototype.filter.call(table.querySelectorAll("tbody tr"), function (tr) {
      return tr.cells.length > 1;
    });
    if (rows.length === 0 || labelAt < 0) { canvas.parentNode.hidden = true; return; }
    var labels = rows.map(function (tr) {
      var text = tr.cells[labelAt].textContent;
      return currencyAt >= 0 ? text + " " + tr.cells[currencyAt].textContent : text;
    });
    var datasets = series.map(function (name, n) {
      var at = columnIndex(table, name);
      return {
        label: name.replace(/_/g, " "),
        data: rows.map(function (tr) { return parseFloat(tr.cells[at].textContent) || 0; }),
        backgroundColor: COLOURS[n % COLOURS.length],
        borderColor: COLOURS[n % COLOURS.length],
        type: n === 0 ? "bar" : "line",
        yAxisID: n === 0 ? "y" : "y1"
      };
    });
    var scales = {y: {beginAtZero: true, position: "left"}};
    if (datasets.length > 1) {
      scales.y1 = {beginAtZero: true, position: "right", grid: {drawOnChartArea: false}};
    }
    canvas.chart = new window.Chart(canvas, {
      type: "bar",
      data: {labels: labels, datasets: datasets},
      options: {animation: false, responsive: true, maintainAspectRatio: false, scales: scales}
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("canvas[data-table]"), draw);
  });
}());
