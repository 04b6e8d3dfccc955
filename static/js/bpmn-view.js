// The BPMN viewer: every element with data-bpmn-url gets the diagram at that address, drawn by
// the vendored bpmn-js navigated viewer (pan and zoom, no editing), zoomed to fit.
// Load after static/vendor/bpmn-navigated-viewer.min.js, with bpmn-js.css and diagram-js.css.
//
// Import warnings and errors are listed in an element next to the diagram: the one named by
// data-bpmn-messages="<id>", else a <ul data-bpmn-messages> made right after it. The element's
// data-bpmn-state says how it went: loading, ok, warnings or error (tests and styles read it).
(function () {
  "use strict";

  var FALLBACK_HEIGHT = "480px";  // bpmn-js fills its container: one without a height shows nothing

  function messagesFor(container) {
    var named = container.getAttribute("data-bpmn-messages");
    var existing = named ? document.getElementById(named) : null;
    if (existing) return existing;
    var list = document.createElement("ul");
    list.setAttribute("data-bpmn-messages", "");
    list.className = "bpmn-messages";
    container.insertAdjacentElement("afterend", list);
    return list;
  }

  // Messages come from a file we did not write: text only, never HTML.
  function show(list, messages) {
    list.replaceChildren.apply(list, messages.map(function (message) {
      var item = document.createElement("li");
      item.textContent = message;
      return item;
    }));
    list.hidden = messages.length === 0;
  }

  function warningText(warning) {
    return (warning && warning.message) || String(warning);
  }

  async function fetchXml(url) {
    var response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/xml"}});
    if (!response.ok) throw new Error("Could not load the BPMN file (HTTP " + response.status + ").");
    return response.text();
  }

  async function view(container) {
    var list = messagesFor(container);
    container.setAttribute("data-bpmn-state", "loading");
    if (!container.clientHeight) container.style.height = FALLBACK_HEIGHT;
    var viewer = new BpmnJS({container: container});
    try {
      var result = await viewer.importXML(await fetchXml(container.getAttribute("data-bpmn-url")));
      viewer.get("canvas").zoom("fit-viewport", "auto");
      addControls(container, viewer.get("canvas"));
      var warnings = result.warnings.map(warningText);
      show(list, warnings);
      container.setAttribute("data-bpmn-state", warnings.length ? "warnings" : "ok");
    } catch (error) {
      // importXML's error carries the warnings collected before it failed.
      show(list, [warningText(error)].concat((error.warnings || []).map(warningText)));
      container.setAttribute("data-bpmn-state", "error");
    }
  }

  // Buttons and fullscreen beside bpmn-js's own wheel zoom and drag (static/js/diagram-zoom.js).
  function addControls(container, canvas) {
    if (!window.DiagramZoom) return;
    container.classList.add("zoom-frame");
    var fit = function () { canvas.resized(); canvas.zoom("fit-viewport", "auto"); };
    DiagramZoom.controls(container, {
      in: function () { canvas.zoom(canvas.zoom() * 1.25); },
      out: function () { canvas.zoom(canvas.zoom() / 1.25); },
      fit: fit,
      fullscreen: function () { DiagramZoom.toggleFullscreen(container); }
    });
    container.addEventListener("fullscreenchange", function () { setTimeout(fit, 50); });  // it bubbles from here
  }

  var PENDING = "[data-bpmn-url]:not([data-bpmn-state])";

  function viewAll(root) {
    var containers = Array.prototype.slice.call(root.querySelectorAll(PENDING));
    if (root.matches && root.matches(PENDING)) containers.unshift(root);
    containers.forEach(view);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { viewAll(document); });
  } else {
    viewAll(document);
  }
  // Parts of the page that htmx swaps in later.
  document.addEventListener("htmx:load", function (event) { viewAll(event.detail.elt); });
})();
