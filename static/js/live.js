// Live progress pages (describer/consumers.py): while the page's WebSocket is down, show the
// "live updates are paused" notice of _live.html, so that a page that stopped moving is not
// taken for a job that stopped. The server's first message after every (re)connect decides
// again: it hides the notice when the page is live, and shows it while Redis is down.
(function () {
  "use strict";

  // The server's "Redis is down, come back later" (it may not send 1012 or 1013). htmx-ext-ws
  // does not reconnect after it, so this file does, backing off while the outage lasts.
  var CLOSE_LIVE_PAUSED = 4503;
  // The close codes after which htmx-ext-ws reconnects by itself (daphne restarted, network).
  var EXTENSION_RECONNECTS = [1006, 1011, 1012, 1013];
  var FIRST_DELAY_MS = 500;
  var MAX_DELAY_MS = 10000;

  var pausedInARow = 0;

  function reconnectDelay() {
    var ceiling = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * Math.pow(2, pausedInARow));
    return ceiling / 2 + Math.random() * ceiling / 2;  // jittered: pages of one outage spread out
  }

  document.addEventListener("htmx:wsClose", function (event) {
    var element = event.target;
    var code = event.detail.event.code;
    var paused = code === CLOSE_LIVE_PAUSED;
    var notice = element.querySelector(".live-paused");
    // No reconnect coming (finished, not logged in, not found): promise none.
    if (notice) notice.hidden = !(paused || EXTENSION_RECONNECTS.indexOf(code) >= 0);
    if (!paused) return;
    var socket = event.detail.socketWrapper;
    setTimeout(function () {
      if (document.body.contains(element)) socket.reconnect();
    }, reconnectDelay());
    pausedInARow += 1;
  });

  // A message that leaves the notice hidden came from a live socket: the next outage backs off
  // from the start again.
  document.addEventListener("htmx:wsAfterMessage", function (event) {
    var notice = event.target.querySelector(".live-paused");
    if (notice && notice.hidden) pausedInARow = 0;
  });
})();
