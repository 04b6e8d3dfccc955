// Live progress pages (the WebSocket of describer/consumers.py): while the socket is closed and
// htmx-ext-ws is reconnecting, show the "live updates are paused" notice of _live.html, so that a
// page that stopped moving is not taken for a job that stopped. The server's first message after
// each (re)connect decides again: it hides the notice when live, shows it while Redis is down.
(function () {
  "use strict";

  // The close codes after which htmx-ext-ws reconnects (1013: the server's "try again later").
  var RECONNECTING = [1006, 1011, 1012, 1013];
  var FIRST_DELAY_MS = 500;
  var MAX_DELAY_MS = 10000;
  var STEADY_MS = 3000;

  var closesInARow = 0;
  var steadyTimer = null;

  document.addEventListener("htmx:wsClose", function (event) {
    clearTimeout(steadyTimer);
    var reconnecting = RECONNECTING.indexOf(event.detail.event.code) >= 0;
    if (reconnecting) closesInARow += 1;
    var notice = event.target.querySelector(".live-paused");
    if (notice) notice.hidden = !reconnecting;  // no reconnect coming: do not promise one
  });

  // A socket that stays open is a working one: the next outage starts its backoff from the start.
  document.addEventListener("htmx:wsOpen", function () {
    clearTimeout(steadyTimer);
    steadyTimer = setTimeout(function () { closesInARow = 0; }, STEADY_MS);
  });

  // While Redis is down the server accepts, sends what the database knows and closes. The
  // extension's own retry count restarts at every open, so it would retry within a second for
  // the whole outage; back off on closes in a row instead (jittered, up to MAX_DELAY_MS).
  if (window.htmx) {
    htmx.config.wsReconnectDelay = function () {
      var ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * Math.pow(2, closesInARow));
      return ceiling / 2 + Math.random() * ceiling / 2;
    };
  }
})();
