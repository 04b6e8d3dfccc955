// Small behaviours shared by every page. No inline scripts: everything is wired here.
(function () {
  "use strict";

  // Forms answer invalid input with 400 and the form re-rendered with its errors: swap it in
  // (htmx by default drops every 4xx body, so the user would see nothing happen).
  if (window.htmx) {
    htmx.config.responseHandling.unshift({code: "400", swap: true, error: false});
  }

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
