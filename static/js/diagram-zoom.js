// Zoom, pan and fullscreen for every drawn diagram, with the vendored svg-pan-zoom.
//
// - DiagramZoom.attach(frame, svg): an inline SVG (the Mermaid editor's preview) in its frame
//   (an element with data-zoom-frame), with the controls of <template id="zoom-controls">.
// - <img data-zoom-image> (the original diagram, the drawing of a description, example
//   thumbnails): a click opens the picture in a viewer filling the window, zoomable and
//   pannable, with a fullscreen button; the attribute's value, if any, is the full-size picture.
// - DiagramZoom.controls(frame, actions): the same controls for a viewer that zooms by itself
//   (bpmn-js, static/js/bpmn-view.js).
//
// The wheel zooms only in fullscreen or with Ctrl held: otherwise it scrolls the page, as the
// reader expects. Drag pans; a double click zooms in.
(function () {
  "use strict";

  var STEP = 1.25;
  var WHEEL_STEP = 1.1;

  function controlsTemplate() {
    return document.getElementById("zoom-controls");
  }

  function isFullscreen(element) {
    return document.fullscreenElement === element;
  }

  function toggleFullscreen(element) {
    if (isFullscreen(element)) return document.exitFullscreen();
    if (element.requestFullscreen) return element.requestFullscreen().catch(function () {});
  }

  // The toolbar: buttons named by data-zoom="in|out|fit|fullscreen|close", wired to `actions`.
  // A frame's toolbar is replaced with each drawing in it (the editor re-draws on every edit).
  function controls(frame, actions) {
    var template = controlsTemplate();
    if (!template) return null;
    var old = frame.querySelector(":scope > .zoom-controls");
    if (old) old.remove();
    var bar = template.content.firstElementChild.cloneNode(true);
    bar.querySelectorAll("[data-zoom]").forEach(function (button) {
      var action = actions[button.dataset.zoom];
      button.hidden = !action;
      if (action) button.addEventListener("click", function (event) { event.preventDefault(); action(); });
    });
    frame.prepend(bar);
    return bar;
  }

  function attach(frame, svg) {
    if (!frame || !window.svgPanZoom) return null;
    svg.setAttribute("width", "100%");
    svg.setAttribute("height", "100%");
    svg.style.maxWidth = "none";
    var zoom = svgPanZoom(svg, {
      zoomEnabled: true, panEnabled: true, controlIconsEnabled: false, mouseWheelZoomEnabled: false,
      dblClickZoomEnabled: true, fit: true, center: true, minZoom: 0.1, maxZoom: 40
    });
    var destroyed = false;
    function fit() {
      if (destroyed) return;  // a fit scheduled by a fullscreen change may come after the close
      zoom.resize(); zoom.fit(); zoom.center();
    }
    var wheel = function (event) {
      if (!event.ctrlKey && !isFullscreen(frame) && !frame.closest("dialog[open]")) return;
      event.preventDefault();
      var box = svg.getBoundingClientRect();
      var point = {x: event.clientX - box.left, y: event.clientY - box.top};
      zoom.zoomAtPointBy(event.deltaY < 0 ? WHEEL_STEP : 1 / WHEEL_STEP, point);
    };
    svg.addEventListener("wheel", wheel, {passive: false});
    var onFullscreen = function () { if (document.contains(svg)) setTimeout(fit, 50); };
    document.addEventListener("fullscreenchange", onFullscreen);
    var actions = {
      in: function () { zoom.zoomBy(STEP); },
      out: function () { zoom.zoomBy(1 / STEP); },
      fit: fit,
      fullscreen: function () { toggleFullscreen(frame); }
    };
    controls(frame, actions);
    frame.dataset.zoomState = "ready";
    return {
      zoom: zoom,
      fit: fit,
      destroy: function () {
        destroyed = true;
        document.removeEventListener("fullscreenchange", onFullscreen);
        zoom.destroy();
      }
    };
  }

  // --- The viewer for pictures ---------------------------------------------------------------

  var SVG_NS = "http://www.w3.org/2000/svg";
  var viewer = null;

  function viewerDialog() {
    if (viewer) return viewer;
    // A dialog cannot itself be fullscreen: the frame inside it is.
    viewer = document.createElement("dialog");
    viewer.className = "zoom-viewer";
    viewer.frame = document.createElement("div");
    viewer.frame.className = "zoom-frame zoom-viewer-frame";
    viewer.frame.setAttribute("data-zoom-frame", "");
    viewer.appendChild(viewer.frame);
    viewer.addEventListener("close", function () {
      if (viewer.zoomInstance) viewer.zoomInstance.destroy();
      viewer.zoomInstance = null;
      viewer.frame.querySelectorAll("svg").forEach(function (svg) { svg.remove(); });
    });
    document.body.appendChild(viewer);
    return viewer;
  }

  // The picture inside an SVG <image>: the browser decodes it as an image (an SVG file's scripts
  // never run), and svg-pan-zoom can move it like any drawing.
  async function openImage(source, label) {
    var probe = new Image();
    probe.src = source;
    await probe.decode();
    var width = probe.naturalWidth || 800, height = probe.naturalHeight || 600;
    var dialog = viewerDialog();
    var svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("role", "img");
    if (label) svg.setAttribute("aria-label", label);
    var image = document.createElementNS(SVG_NS, "image");
    image.setAttribute("href", source);
    image.setAttribute("width", String(width));
    image.setAttribute("height", String(height));
    svg.appendChild(image);
    var frame = dialog.frame;
    frame.querySelectorAll("svg").forEach(function (old) { old.remove(); });
    frame.appendChild(svg);
    dialog.showModal();
    dialog.zoomInstance = attach(frame, svg);
    var close = frame.querySelector("[data-zoom=close]");
    if (close) {
      close.hidden = false;
      close.onclick = function () {
        if (isFullscreen(frame)) document.exitFullscreen();
        dialog.close();
      };
      close.focus();
    }
    return dialog;
  }

  function zoomSource(img) {
    return img.getAttribute("data-zoom-image") || img.currentSrc || img.src;
  }

  // Pictures open on click, and on Enter or Space from the keyboard.
  function prepareImages(root) {
    (root || document).querySelectorAll("img[data-zoom-image]:not([data-zoom-ready])").forEach(function (img) {
      img.dataset.zoomReady = "1";
      img.tabIndex = 0;
      img.setAttribute("role", "button");
      var hint = controlsTemplate() && controlsTemplate().dataset.openLabel;
      if (hint && !img.title) img.title = hint;
    });
  }

  document.addEventListener("click", function (event) {
    var img = event.target.closest && event.target.closest("img[data-zoom-image]");
    if (!img) return;
    event.preventDefault();
    openImage(zoomSource(img), img.alt);
  });
  document.addEventListener("keydown", function (event) {
    var img = event.target.closest && event.target.closest("img[data-zoom-image]");
    if (!img || (event.key !== "Enter" && event.key !== " ")) return;
    event.preventDefault();
    openImage(zoomSource(img), img.alt);
  });

  prepareImages();
  ["htmx:load", "htmx:afterSettle", "htmx:oobAfterSwap"].forEach(function (name) {
    document.addEventListener(name, function () { prepareImages(); });
  });

  window.DiagramZoom = {attach: attach, controls: controls, openImage: openImage, toggleFullscreen: toggleFullscreen};
})();
