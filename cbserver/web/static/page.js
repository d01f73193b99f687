/* cbserver callback page: progressive enhancement, hand-written.
 * Without this script the form posts and the status page refreshes itself. With it, the form
 * is sent in the background and the progress is shown live by polling the JSON status. */
(function () {
  "use strict";
  var STEPS = ["calling_you", "answered", "calling_destination", "connected", "ended"];
  var TEXT = {
    calling_you: "Calling you now: please answer your phone.",
    answered: "You answered. Please hold on.",
    calling_destination: "Calling the destination\u2026",
    connected: "Connected: you are talking.",
    ended: "The call has ended.",
    refused: "The callback could not be made."
  };
  var FINAL = { ended: true, refused: true };
  var POLL_MS = 1000;
  var MAX_POLL_MS = 10000;

  function byId(id) { return document.getElementById(id); }

  // Amounts shown in the currency's usual precision (2 places, or 0/3 for the currencies the
  // server lists in data-minor-units); the JSON keeps the rating's 5 places.
  var MINOR = {};
  function money(value, currency) {
    if (value === undefined || value === null || value === "") { return ""; }
    var n = Number(value);
    if (!currency || isNaN(n)) { return String(value); }
    var digits = MINOR.hasOwnProperty(currency) ? MINOR[currency] : 2;
    var f = Math.pow(10, digits);
    // Half up, as the server rounds (on the magnitude, so -0.125 gives -0.13).
    var r = Math.round(Math.abs(n) * f + 1e-9) / f;
    return (n < 0 && r !== 0 ? "-" : "") + r.toFixed(digits);
  }

  function costText(ch) {
    if (!ch) { return ""; }
    var cur = ch.currency || "";
    var text = (money(ch.total, cur) + " " + cur).trim();
    var legs = [];
    if (ch.A !== undefined && ch.A !== null) { legs.push("call to you: " + money(ch.A, cur)); }
    if (ch.B !== undefined && ch.B !== null) { legs.push("call out: " + money(ch.B, cur)); }
    return legs.length ? text + " (" + legs.join(", ") + ")" : text;
  }

  // The step an ended callback failed at (as pages.failed_step decides on the server).
  function failedStep(st) {
    if (st.status !== "ended") { return null; }
    var legs = st.legs || {};
    var a = legs.A || {}, b = legs.B || {};
    if (a.state === "failed") { return "calling_you"; }
    if (b.state === "failed" || b.state === "calling" || b.state === "ringing") { return "calling_destination"; }
    return null;
  }

  function legReason(st, step) {
    var leg = (st.legs || {})[step === "calling_you" ? "A" : "B"] || {};
    var why = leg.reason || "";
    if (leg.sip_status) { why = (why + " (SIP " + leg.sip_status + ")").trim(); }
    return why || reasonText(st) || "no answer";
  }

  function reasonText(st) {
    var cause = st.cause || {};
    var reason = cause.description || cause.reason || "";
    if (cause.sip_status) { reason = (reason + " (SIP " + cause.sip_status + ")").trim(); }
    return reason;
  }

  function render(panel, st) {
    panel.hidden = false;
    panel.setAttribute("data-status", st.status);
    panel.setAttribute("data-final", FINAL[st.status] ? "1" : "0");
    var failed = failedStep(st);
    var idx = STEPS.indexOf(failed || st.status);
    var items = panel.querySelectorAll(".steps li");
    for (var i = 0; i < items.length; i++) {
      var state;
      if (failed) {
        state = (i < idx || STEPS[i] === "ended") ? "done" : (i === idx ? "failed" : "todo");
      } else {
        state = (i < idx || (i === idx && st.status === "ended")) ? "done" : (i === idx ? "now" : "todo");
      }
      items[i].className = state;
      var old = items[i].querySelector(".why");
      if (old) { items[i].removeChild(old); }
      if (state === "failed") {
        var why = document.createElement("span");
        why.className = "why";
        why.textContent = ": " + legReason(st, STEPS[i]);
        items[i].appendChild(why);
      }
      if (state === "now") { items[i].setAttribute("aria-current", "step"); }
      else { items[i].removeAttribute("aria-current"); }
    }
    var text = failed ? "The callback could not be completed." : (TEXT[st.status] || st.status);
    var live = byId("status-text");
    if (live.textContent !== text) { live.textContent = text; }
    var reason = reasonText(st);
    var cost = costText(st.charges);
    byId("o-reason").textContent = reason || "\u2013";
    byId("o-cost").textContent = cost || "\u2013";
    byId("outcome").hidden = !(reason || cost);
  }

  function poll(panel, url) {
    var delay = POLL_MS;
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 404) { return { status: "refused", cause: { reason: "This callback is no longer known." } }; }
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.json();
        })
        .then(function (st) {
          render(panel, st);
          delay = POLL_MS;
          if (!FINAL[st.status]) { window.setTimeout(tick, delay); }
        })
        .catch(function () {
          delay = Math.min(delay * 2, MAX_POLL_MS);
          window.setTimeout(tick, delay);
        });
    }
    tick();
  }

  function clearErrors(form) {
    var old = form.querySelectorAll(".err");
    for (var i = 0; i < old.length; i++) { old[i].parentNode.removeChild(old[i]); }
    var bad = form.querySelectorAll("[aria-invalid]");
    for (var j = 0; j < bad.length; j++) {
      bad[j].removeAttribute("aria-invalid");
      bad[j].removeAttribute("aria-describedby");
      bad[j].parentNode.classList.remove("has-err");
    }
  }

  function showErrors(form, err) {
    var summary = byId("summary");
    clearErrors(form);
    summary.textContent = "";
    var h = document.createElement("h2");
    h.textContent = "There is a problem";
    summary.appendChild(h);
    var fields = err.fields || {};
    var names = Object.keys(fields);
    if (!names.length || err.code !== "invalid_input") {
      var p = document.createElement("p");
      p.textContent = err.message;
      summary.appendChild(p);
    }
    if (names.length) {
      var ul = document.createElement("ul");
      names.forEach(function (name) {
        var li = document.createElement("li");
        var input = form.querySelector("[name='" + name + "']");
        if (input && input.id) {
          var a = document.createElement("a");
          a.href = "#" + input.id;
          a.textContent = fields[name];
          li.appendChild(a);
          var msg = document.createElement("p");
          msg.className = "err";
          msg.id = input.id + "-err";
          msg.textContent = fields[name];
          input.parentNode.insertBefore(msg, input);
          input.parentNode.classList.add("has-err");
          input.setAttribute("aria-invalid", "true");
          input.setAttribute("aria-describedby", msg.id);
        } else {
          li.textContent = fields[name];
        }
        ul.appendChild(li);
      });
      summary.appendChild(ul);
    }
    summary.hidden = false;
    summary.focus();
  }

  function submit(ev) {
    var form = ev.target;
    if (!window.fetch || !window.URLSearchParams || !window.FormData) { return; }
    ev.preventDefault();
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    fetch(form.action, {
      method: "POST", credentials: "same-origin", headers: { Accept: "application/json" },
      body: new URLSearchParams(new FormData(form))
    })
      .then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      })
      .then(function (res) {
        button.disabled = false;
        if (!res.ok) { showErrors(form, res.body.error); return; }
        var panel = byId("status");
        var summary = byId("summary");
        summary.hidden = true;
        form.hidden = true;
        var tabs = document.querySelector(".tabs");
        var token = document.querySelector(".token");
        var h1 = document.querySelector("main h1");
        if (tabs) { tabs.hidden = true; }
        if (token) { token.hidden = true; }
        if (h1) { h1.textContent = "Callback status"; }
        if (window.history && window.history.pushState) {
          window.history.pushState(null, "", res.body.status_url);
          // Back to the form URL: load it afresh (a new CSRF token, an empty form).
          window.addEventListener("popstate", function () { window.location.reload(); });
        }
        render(panel, { status: res.body.status });
        panel.querySelector("h2").focus();
        poll(panel, res.body.api_url);
      })
      .catch(function () {
        button.disabled = false;
        showErrors(form, { code: "network", message: "The request did not reach us; please try again." });
      });
  }

  var form = document.querySelector("form.callback");
  if (form) { form.addEventListener("submit", submit); }
  var panel = byId("status");
  if (panel) {
    try { MINOR = JSON.parse(panel.getAttribute("data-minor-units") || "{}"); } catch (e) { MINOR = {}; }
  }
  if (panel && !panel.hidden && panel.getAttribute("data-final") === "0") {
    poll(panel, panel.getAttribute("data-status-url"));
  }
}());
