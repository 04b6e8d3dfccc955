// The colour theme: light, dark, or auto (the system's prefers-color-scheme), chosen in the
// header's select and remembered in localStorage. Loaded in <head> without defer, before the
// stylesheet: <html data-theme="light|dark"> is set before anything is drawn, so a dark page
// never flashes light. Whenever the theme in effect changes (the select, the system's setting
// under "auto", another tab), `themechange` is dispatched on document with {detail: {theme}}:
// drawings that colour themselves (Mermaid) listen for it.
(function () {
  "use strict";

  var KEY = "theme";
  var CHOICES = ["light", "dark", "auto"];
  var root = document.documentElement;
  var systemDark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var current = "auto";

  function storedChoice() {
    var choice = null;
    try {
      choice = window.localStorage.getItem(KEY);
    } catch (error) {
      // Storage switched off: follow the system.
    }
    return CHOICES.indexOf(choice) >= 0 ? choice : "auto";
  }

  function store(choice) {
    try {
      if (choice === "auto") window.localStorage.removeItem(KEY);
      else window.localStorage.setItem(KEY, choice);
    } catch (error) {
      // Not remembered; this page still follows the choice.
    }
  }

  function themeOf(choice) {
    if (choice !== "auto") return choice;
    return systemDark && systemDark.matches ? "dark" : "light";
  }

  function apply(choice) {
    var theme = themeOf(choice);
    current = choice;
    var before = root.getAttribute("data-theme");
    root.setAttribute("data-theme-choice", choice);
    root.setAttribute("data-theme", theme);
    if (before && before !== theme) {
      document.dispatchEvent(new CustomEvent("themechange", {detail: {theme: theme}}));
    }
    var selects = document.querySelectorAll("[data-theme-select]");
    Array.prototype.forEach.call(selects, function (select) { select.value = choice; });
  }

  apply(storedChoice());

  if (systemDark && systemDark.addEventListener) {
    systemDark.addEventListener("change", function () { apply(current); });
  }
  // Another tab chose.
  window.addEventListener("storage", function (event) {
    if (event.key === KEY || event.key === null) apply(storedChoice());
  });

  // The select works only with this script, so it is hidden until it runs.
  document.addEventListener("DOMContentLoaded", function () {
    var selects = document.querySelectorAll("[data-theme-select]");
    Array.prototype.forEach.call(selects, function (select) {
      select.value = current;
      select.closest("[data-theme-switch]").hidden = false;
      select.addEventListener("change", function () {
        store(select.value);
        apply(select.value);
      });
    });
  });
})();
