// The Mermaid editor of text → diagram results (templates/describer/_diagram.html).
// Loaded only on pages that need it, after the vendored mermaid.min.js.
//
// The code is parsed by Mermaid's own parser before it is drawn, re-drawn as it is edited
// (debounced), and parse errors are shown with their line. Exports are made here from the
// drawn SVG: SVG, PNG (2× scale, white or transparent) and .mmd, downloaded as Blobs.
(function () {
  "use strict";

  var RENDER_DELAY_MS = 300;
  var PNG_SCALE = 2;
  var FONT_FAMILY = '"DejaVu Sans", Verdana, Arial, sans-serif';  // has Cyrillic everywhere it exists

  mermaid.initialize({
    startOnLoad: false,
    // Model output is untrusted: no scripts, no links, labels sanitised by Mermaid.
    securityLevel: "strict",
    // Labels as SVG text, not HTML in <foreignObject>: that would taint the canvas of the PNG export.
    htmlLabels: false,
    // An explicit wrapping width: without it Mermaid 12 wraps Cyrillic labels after every word.
    flowchart: {htmlLabels: false, wrappingWidth: 200},
    fontFamily: FONT_FAMILY,
    suppressErrorRendering: true,
    // Settings a %%{init}%% directive in the code may not change (Mermaid's default list, plus
    // the label and font settings above: a directive could otherwise turn HTML labels back on).
    secure: ["secure", "securityLevel", "startOnLoad", "maxTextSize", "suppressErrorRendering", "maxEdges",
      "htmlLabels", "flowchart", "fontFamily", "themeCSS", "themeVariables", "dompurifyConfig"]
  });

  // Mermaid keeps global state while it works: one parse or render at a time.
  var queue = Promise.resolve();
  var renderCount = 0;

  function serially(task) {
    var result = queue.then(task, task);
    queue = result.catch(function () {});
    return result;
  }

  // {svg: SVGSVGElement} or {error: "message", line: 3 | null}
  function renderCode(code) {
    return serially(async function () {
      try {
        await mermaid.parse(code);
        renderCount += 1;
        var result = await mermaid.render("mermaid-diagram-" + renderCount, code);
        return {svg: importSvg(result.svg)};
      } catch (error) {
        return {error: errorMessage(error), line: errorLine(error)};
      }
    });
  }

  function errorMessage(error) {
    var message = (error && (error.message || error.str)) || String(error);
    return message.replace(/^Error: /, "");
  }

  // Mermaid's parsers report where the failing token is: hash.loc (Jison, 1-based lines);
  // otherwise the message's "on line N", if any.
  function errorLine(error) {
    var loc = error && error.hash && error.hash.loc;
    if (loc && loc.first_line) return loc.first_line;
    var match = /line (\d+)/i.exec(errorMessage(error));
    return match ? Number(match[1]) : null;
  }

  // Mermaid (strict) already sanitises labels; this second pass makes sure that nothing
  // active reaches the page whatever the code says.
  function importSvg(markup) {
    var svg = new DOMParser().parseFromString(markup, "text/html").querySelector("svg");
    if (!svg) throw new Error("Mermaid returned no SVG.");
    svg.querySelectorAll("script, foreignObject, iframe, object, embed").forEach(function (node) { node.remove(); });
    svg.querySelectorAll("*").forEach(function (node) {
      Array.from(node.attributes).forEach(function (attribute) {
        var name = attribute.name.toLowerCase();
        var value = attribute.value.replace(/\s/g, "").toLowerCase();
        if (name.indexOf("on") === 0 || (/href$/.test(name) && value.indexOf("javascript:") === 0)) {
          node.removeAttribute(attribute.name);
        }
      });
    });
    return document.importNode(svg, true);
  }

  // --- Export ----------------------------------------------------------------------------

  // A standalone SVG document: sized by its viewBox (times `scale`), not by the page.
  function svgDocument(svg, scale) {
    var box = svg.viewBox.baseVal;
    var copy = svg.cloneNode(true);
    copy.removeAttribute("style");  // Mermaid's max-width for the page
    copy.setAttribute("width", String(box.width * scale));
    copy.setAttribute("height", String(box.height * scale));
    copy.setAttribute("xmlns", "http://www.w3.org/2000/svg");
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(copy);
  }

  function download(blob, filename) {
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
  }

  function exportSvg(svg, stem) {
    download(new Blob([svgDocument(svg, 1)], {type: "image/svg+xml;charset=utf-8"}), stem + ".svg");
  }

  // The SVG drawn at twice its size onto a canvas: vector-sharp, not an upscaled bitmap.
  async function exportPng(svg, stem, background) {
    var box = svg.viewBox.baseVal;
    var width = Math.ceil(box.width * PNG_SCALE);
    var height = Math.ceil(box.height * PNG_SCALE);
    var source = URL.createObjectURL(new Blob([svgDocument(svg, PNG_SCALE)], {type: "image/svg+xml;charset=utf-8"}));
    try {
      var image = new Image(width, height);
      image.src = source;
      await image.decode();
      var canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      var context = canvas.getContext("2d");
      if (background === "white") {
        context.fillStyle = "#ffffff";
        context.fillRect(0, 0, width, height);
      }
      context.drawImage(image, 0, 0, width, height);
      var blob = await new Promise(function (resolve) { canvas.toBlob(resolve, "image/png"); });
      download(blob, stem + ".png");
    } finally {
      URL.revokeObjectURL(source);
    }
  }

  // --- One editor --------------------------------------------------------------------------

  function Editor(root) {
    this.root = root;
    this.code = root.querySelector("[data-code]");
    this.preview = root.querySelector("[data-preview]");
    this.errorBox = root.querySelector("[data-error]");
    this.saved = this.code.value;
    this.svg = null;
    this.generation = 0;
    this.timer = null;
    this.bind();
    this.render();
  }

  Editor.prototype.bind = function () {
    var editor = this;
    this.code.addEventListener("input", function () {
      editor.markDirty();
      clearTimeout(editor.timer);
      editor.timer = setTimeout(function () { editor.render(); }, RENDER_DELAY_MS);
    });
    this.root.querySelector("[data-error-line]").addEventListener("click", function (event) {
      editor.selectLine(Number(event.currentTarget.dataset.line));
    });
    this.root.querySelectorAll("[data-export]").forEach(function (control) {
      control.addEventListener("click", function (event) { editor.exportAs(event, control.dataset.export); });
    });
    var saveForm = this.root.querySelector("[data-save-form]");
    saveForm.addEventListener("htmx:afterRequest", function (event) {
      if (event.detail.successful) {
        editor.saved = editor.code.value;
        editor.markDirty();
      }
    });
  };

  Editor.prototype.render = function () {
    var editor = this;
    var code = this.code.value;
    var generation = ++this.generation;
    this.root.dataset.state = "rendering";
    if (!code.trim()) {
      this.show({error: this.root.dataset.emptyMessage, line: null, empty: true}, code);
      return Promise.resolve();
    }
    return renderCode(code).then(function (result) {
      if (generation === editor.generation) editor.show(result, code);  // else a newer edit is drawing
    });
  };

  Editor.prototype.show = function (result, code) {
    var failed = Boolean(result.error);
    this.root.querySelector("[data-parse-error]").value = failed && !result.empty ? result.error : "";
    this.errorBox.hidden = !failed || result.empty;
    if (failed) {
      this.showError(result, code);
      if (result.empty) this.preview.replaceChildren(paragraph(result.error));
      this.preview.classList.add("stale");  // the last good drawing stays, dimmed
    } else {
      this.svg = result.svg;
      this.preview.replaceChildren(result.svg);
      this.preview.classList.remove("stale");
    }
    this.root.querySelectorAll("button[data-export]").forEach(function (button) { button.disabled = failed; });
    this.root.dataset.state = failed ? "error" : "ok";
  };

  Editor.prototype.showError = function (result, code) {
    this.errorBox.querySelector("[data-error-message]").textContent = result.error;
    var lineButton = this.errorBox.querySelector("[data-error-line]");
    lineButton.hidden = !result.line;
    lineButton.dataset.line = result.line || "";
    lineButton.textContent = result.line ? this.root.dataset.lineTemplate.replace("{line}", result.line) : "";
    var repair = this.errorBox.querySelector("[data-repair-form]");
    if (repair) {
      repair.querySelector("[data-repair-code]").value = code;
      repair.querySelector("[data-repair-error]").value = result.error;
    }
  };

  Editor.prototype.markDirty = function () {
    this.root.querySelector("[data-dirty]").hidden = this.code.value === this.saved;
  };

  Editor.prototype.selectLine = function (number) {
    var lines = this.code.value.split("\n");
    var start = lines.slice(0, number - 1).join("\n").length + (number > 1 ? 1 : 0);
    var end = start + (lines[number - 1] || "").length;
    this.code.focus();
    this.code.setSelectionRange(start, end);
  };

  Editor.prototype.exportAs = function (event, kind) {
    var stem = this.root.dataset.downloadStem || "diagram";
    if (kind === "mmd") {
      // The code as it is in the editor, saved or not (the link itself serves the saved version).
      event.preventDefault();
      download(new Blob([this.code.value.replace(/\n?$/, "\n")], {type: "text/plain;charset=utf-8"}), stem + ".mmd");
    } else if (this.svg && this.root.dataset.state === "ok") {
      if (kind === "svg") exportSvg(this.svg, stem);
      else exportPng(this.svg, stem, this.root.querySelector("[data-png-background]").value);
    }
  };

  function paragraph(text) {
    var p = document.createElement("p");
    p.className = "muted";
    p.textContent = text;
    return p;
  }

  // Editors arrive with the page, over the WebSocket when a job finishes, and with htmx swaps.
  function start() {
    document.querySelectorAll("[data-mermaid-editor]:not([data-ready])").forEach(function (root) {
      root.dataset.ready = "1";
      root.mermaidEditor = new Editor(root);
    });
  }

  start();
  ["htmx:load", "htmx:afterSettle", "htmx:oobAfterSwap"].forEach(function (name) {
    document.addEventListener(name, start);
  });
})();
