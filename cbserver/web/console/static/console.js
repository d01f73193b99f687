/* cbserver console: small enhancements only; every page works without this script. */
(function () {
  "use strict";
  // Ask before a delete: a plain form POST otherwise (the server still checks role and CSRF).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.classList && form.classList.contains("danger") && !window.confirm("Delete it? This cannot be undone.")) {
      ev.preventDefault();
    }
  });
}());
