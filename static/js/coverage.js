// The Coverage panel's links (templates/describer/_coverage*.html): pointing at (or focusing) a
// step of the description lights up the boxes of its labels over the uploaded image; pointing at
// a box lights up the steps that say it, and an omitted label in the list lights up its box.
// Delegated on document: the finished result may arrive later, over the WebSocket.
(function () {
  "use strict";

  var LINKED = "is-linked";
  var BOXES = "#coverage-boxes rect";

  function light(elements) {
    Array.prototype.forEach.call(elements, function (element) { element.classList.add(LINKED); });
  }

  function clear() {
    Array.prototype.forEach.call(document.querySelectorAll("." + LINKED), function (element) {
      element.classList.remove(LINKED);
    });
  }

  function fromBox(box) {
    light([box]);
    box.getAttribute("data-steps").split(" ").forEach(function (number) {
      if (number) light(document.querySelectorAll('#description [data-step="' + number + '"]'));
    });
  }

  function fromStep(step) {
    light([step]);
    light(document.querySelectorAll(BOXES + '[data-steps~="' + step.getAttribute("data-step") + '"]'));
  }

  function fromLabel(item) {
    light([item]);
    light(document.querySelectorAll(BOXES + '[data-label="' + item.getAttribute("data-label") + '"]'));
  }

  function link(target) {
    clear();
    if (!(target instanceof Element)) return;
    var box = target.closest(BOXES);
    if (box) return fromBox(box);
    var step = target.closest("#description [data-step]");
    if (step) return fromStep(step);
    var label = target.closest(".coverage-omissions [data-label]");
    if (label) fromLabel(label);
  }

  document.addEventListener("mouseover", function (event) { link(event.target); });
  document.addEventListener("focusin", function (event) { link(event.target); });
  document.addEventListener("mouseout", function (event) { if (!event.relatedTarget) clear(); });
  document.addEventListener("focusout", function (event) { if (!event.relatedTarget) clear(); });
})();
