// Small behaviours shared by every page. No inline scripts: everything is wired here.
(function () {
  "use strict";

  // Forms answer invalid input with 400 and the form re-rendered with its errors: swap it in
  // (htmx by default drops every 4xx body, so the user would see nothing happen).
  if (window.htmx) {
    htmx.config.responseHandling.unshift({code: "400", swap: true, error: false});
  }

  // Forms that arrive over the WebSocket (describer/consumers.py) are rendered without a request,
  // so their {% csrf_token %} is empty. htmx forms send the token as the X-CSRFToken header of
  // <body hx-headers>; a plain form gets it here, filled in before it is sent (capture phase:
  // before htmx reads the form's values, too).
  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (error) {
      return "";
    }
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") return;
    var token = csrfToken();
    if (!token) return;
    var field = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (!field) {
      field = document.createElement("input");
      field.type = "hidden";
      field.name = "csrfmiddlewaretoken";
      form.prepend(field);
    }
    if (!field.value) field.value = token;
  }, true);

  // htmx drops a 403's body: when it is the CSRF failure page (templates/403_csrf.html), show
  // its explanation as a message instead of doing nothing.
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.status !== 403) return;
    var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
    var explanation = page.querySelector("[data-csrf-failure] h1 + p");
    var messages = document.getElementById("messages");
    if (!explanation || !messages) return;
    var message = document.createElement("div");
    message.className = "message error";
    message.setAttribute("role", "alert");
    message.textContent = explanation.textContent;
    messages.replaceChildren(message);
    message.scrollIntoView({block: "nearest"});
  });

  // Copy buttons: <button data-copy-target="#id"> copies that element's text.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var source = document.querySelector(button.dataset.copyTarget);
    if (!source) return;
    var text = source.value !== undefined ? source.value : source.textContent;
    navigator.clipboard.writeText(text).then(function () {
      var label = button.textContent;
      button.textContent = "✓";
      setTimeout(function () { button.textContent = label; }, 1200);
    });
  });

  // The top bar's menu on a phone (a <details>, base.html): Escape or a click elsewhere closes it.
  function openMenu() {
    return document.querySelector("[data-topmenu][open]");
  }
  document.addEventListener("keydown", function (event) {
    var menu = openMenu();
    if (event.key !== "Escape" || !menu) return;
    menu.open = false;
    menu.querySelector("summary").focus();
  });
  document.addEventListener("click", function (event) {
    var menu = openMenu();
    if (menu && !menu.contains(event.target)) menu.open = false;
  });

  // The confirmation dialog: htmx loads a fragment into <dialog id="modal">; show it.
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target.id === "modal") event.detail.target.showModal();
  });
  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-close-modal]")) return;
    var dialog = event.target.closest("dialog");
    if (dialog) setTimeout(function () { dialog.close(); }, 0);
  });
})();
