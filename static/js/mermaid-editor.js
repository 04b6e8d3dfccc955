// The Mermaid editor of text → diagram results (templates/describer/_diagram.html).
// Loaded only on pages that need it, after the vendored mermaid.min.js, codemirror.min.js and
// svg-pan-zoom.min.js, and static/js/parse-message.js and diagram-zoom.js.
//
// The code is edited in CodeMirror 6 (line numbers, Mermaid highlighting), parsed by Mermaid's
// own parser before it is drawn, re-drawn as it is edited (debounced); a parse error is said
// in plain words and marked on its line. The preview zooms, pans and goes fullscreen. Exports
// are made here: SVG, PNG (2× scale, white or transparent) and .mmd, downloaded as Blobs.
(function () {
  "use strict";

  var RENDER_DELAY_MS = 300;
  var PNG_SCALE = 2;
  var FONT_FAMILY = '"DejaVu Sans", Verdana, Arial, sans-serif';  // has Cyrillic everywhere it exists

  // Settings no %%{init}%% directive in the code may change (Mermaid's default list, plus the
  // label and font settings below: a directive could otherwise turn HTML labels back on).
  var SECURE_KEYS = ["secure", "securityLevel", "startOnLoad", "maxTextSize", "suppressErrorRendering", "maxEdges",
    "htmlLabels", "flowchart", "fontFamily", "themeCSS", "themeVariables", "dompurifyConfig"];

  function configure(theme) {
    mermaid.initialize({
      startOnLoad: false,
      // Model output is untrusted: no scripts, no links, labels sanitised by Mermaid.
      securityLevel: "strict",
      // Labels as SVG text, not HTML in <foreignObject>: that would taint the canvas of the PNG
      // export, and exported SVGs would not open in drawing programs. See labelSafeCode below.
      htmlLabels: false,
      // An explicit wrapping width: without it Mermaid 12 wraps Cyrillic labels after every word.
      flowchart: {htmlLabels: false, wrappingWidth: 200},
      fontFamily: FONT_FAMILY,
      theme: theme,
      suppressErrorRendering: true,
      secure: SECURE_KEYS
    });
  }

  function pageTheme() {
    return document.documentElement.dataset.theme === "dark" ? "dark" : "default";
  }

  // Mermaid keeps global state while it works: one parse or render at a time.
  var queue = Promise.resolve();
  var renderCount = 0;

  function serially(task) {
    var result = queue.then(task, task);
    queue = result.catch(function () {});
    return result;
  }

  // {svg: SVGSVGElement} or {error: <the thrown error>}. Exports draw in the light theme.
  function renderCode(code, theme) {
    return serially(async function () {
      try {
        configure(theme || pageTheme());
        await mermaid.parse(code);
        renderCount += 1;
        var result = await mermaid.render("mermaid-diagram-" + renderCount, labelSafeCode(code));
        var svg = importSvg(result.svg);
        decodeLabelEntities(svg);
        return {svg: svg};
      } catch (error) {
        return {error: error};
      }
    });
  }

  // --- Labels drawn as SVG text ------------------------------------------------------------
  // With SVG-text labels Mermaid 12 drops a ">" written in a label ("y > 5" is drawn "y 5") and
  // writes entity codes (#quot;, #35;) out as HTML entities, literally "&quot;"
  // (mermaid-js/mermaid#7015). So for drawing only, a ">" inside label text becomes the entity
  // code #gt;, and after drawing every entity (and any placeholder Mermaid left) in the SVG's
  // text is turned into its character, as text: never parsed as markup.
  var LABEL_PARTS = [/"[^"\n]*"/g, /\|[^|\n]*\|/g, /\[[^\]"\n]*\]/g, /\([^)"\n]*\)/g, /\{[^}"\n]*\}/g];
  var ENTITY = /(?:&|\uFB02\xB0)(#|\xB0)?([0-9]+|[A-Za-z][A-Za-z0-9]*)(?:;|\xB6\xDF)/g;

  function labelSafeCode(code) {
    return code.split("\n").map(function (line) {
      if (/^\s*%%/.test(line)) return line;  // comments and %%{init}%% directives
      LABEL_PARTS.forEach(function (part) {
        line = line.replace(part, function (label) { return label.replace(/>/g, "#gt;"); });
      });
      return line;
    }).join("\n");
  }

  var entityDecoder = document.createElement("textarea");

  function decodeEntity(numeric, name) {
    if (numeric) {
      var code = Number(name);
      return code > 0 && code <= 0x10FFFF ? String.fromCodePoint(code) : "";
    }
    entityDecoder.innerHTML = "&" + name + ";";  // name is letters and digits only
    return entityDecoder.value;
  }

  function decodeLabelEntities(svg) {
    var walker = document.createTreeWalker(svg, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      var decoded = node.data.replace(ENTITY, function (m, numeric, name) { return decodeEntity(numeric, name); });
      if (decoded !== node.data) node.data = decoded;
    }
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
  // The <textarea> stays the form's field (and the editor without JavaScript); CodeMirror is
  // drawn in its place and writes every change back into it.

  function Editor(root) {
    this.root = root;
    this.code = root.querySelector("[data-code]");
    this.preview = root.querySelector("[data-preview]");
    this.errorBox = root.querySelector("[data-error]");
    this.phrases = MermaidParseMessage.phrasesFrom(root.querySelector("template[data-parse-phrases]"));
    this.saved = this.code.value;
    this.svg = null;
    this.zoom = null;
    this.generation = 0;
    this.timer = null;
    this.view = this.mountCodeMirror();
    this.bind();
    this.render();
  }

  Editor.prototype.mountCodeMirror = function () {
    var editor = this;
    var CM = window.CodeMirror;
    var view = new CM.EditorView({
      doc: this.code.value,
      extensions: [
        CM.basicSetup,
        CM.mermaid(),
        CM.syntaxHighlighting(CM.classHighlighter),  // .tok-* classes, coloured by diagrams.css
        CM.lintGutter(),
        CM.EditorView.lineWrapping,
        CM.EditorView.contentAttributes.of({"aria-label": this.root.dataset.codeLabel || "Mermaid code",
          spellcheck: "false", autocapitalize: "off", "data-code-editor": ""}),
        CM.EditorView.updateListener.of(function (update) {
          if (update.docChanged) editor.changed();
        })
      ]
    });
    this.code.hidden = true;
    this.code.insertAdjacentElement("afterend", view.dom);
    return view;
  };

  Editor.prototype.text = function () {
    return this.view.state.doc.toString();
  };

  // Replaces the whole code (tests and the version restore use it), as an edit would.
  Editor.prototype.setCode = function (code) {
    this.view.dispatch({changes: {from: 0, to: this.view.state.doc.length, insert: code}});
  };

  Editor.prototype.changed = function () {
    var editor = this;
    this.code.value = this.text();
    this.markDirty();
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { editor.render(); }, RENDER_DELAY_MS);
  };

  Editor.prototype.bind = function () {
    var editor = this;
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
    var repair = this.root.querySelector("[data-repair-form]");
    if (repair) repair.addEventListener("submit", function () { editor.saved = editor.code.value; });
  };

  Editor.prototype.render = function () {
    var editor = this;
    var code = this.text();
    var generation = ++this.generation;
    this.root.dataset.state = "rendering";
    if (!code.trim()) {
      this.showEmpty();
      return Promise.resolve();
    }
    return renderCode(code).then(function (result) {
      if (generation !== editor.generation) return;  // a newer edit is drawing
      if (result.error) editor.showError(MermaidParseMessage.explain(result.error, editor.phrases, code), code);
      else editor.showDrawing(result.svg);
    });
  };

  // The current version, as loaded, drawn or refused for the first time: when no parser has
  // reported on it (the model's code, a repair), say how it went, so its badge is right.
  Editor.prototype.reportParse = function (problem) {
    var current = document.querySelector("#diagram-versions li.current[data-parses=unknown]");
    var url = this.root.dataset.parseReportUrl;
    if (!current || !url || !window.htmx || this.text() !== this.saved) return;
    current.dataset.parses = "reporting";
    htmx.ajax("POST", url, {target: "#diagram-versions", swap: "outerHTML",
      values: {version: current.dataset.version, code: this.saved, parse_error: problem ? problem.text : ""}});
  };

  Editor.prototype.finish = function (state, problem) {
    this.root.querySelector("[data-parse-error]").value = problem ? problem.text : "";
    this.errorBox.hidden = !problem;
    this.root.querySelectorAll("button[data-export]").forEach(function (button) { button.disabled = state !== "ok"; });
    this.view.dispatch(CodeMirror.setDiagnostics(this.view.state, problem ? this.diagnostics(problem) : []));
    this.root.dataset.state = state;
    if (state === "ok" || state === "error") this.reportParse(problem);
  };

  Editor.prototype.showDrawing = function (svg) {
    this.svg = svg;
    this.preview.replaceChildren(svg);
    this.preview.classList.remove("stale", "empty");
    this.placePreview(svg);
    this.fitHeight(svg);
    if (this.zoom) this.zoom.destroy();
    this.zoom = window.DiagramZoom ? DiagramZoom.attach(this.preview.closest("[data-zoom-frame]"), svg) : null;
    this.finish("ok", null);
  };

  // A drawing much wider than tall (a left-to-right flow with lanes) gets the whole width, under
  // the code, instead of a narrow column where its labels would be unreadably small. Two
  // thresholds, so that an edit does not flip the layout back and forth.
  var WIDE_ENTER = 2.4, WIDE_LEAVE = 1.8;

  Editor.prototype.placePreview = function (svg) {
    var box = svg.viewBox && svg.viewBox.baseVal;
    var workspace = this.root.querySelector(".diagram-workspace");
    if (!box || !box.height || !workspace) return;
    var ratio = box.width / box.height;
    var wide = workspace.classList.contains("wide-drawing");
    workspace.classList.toggle("wide-drawing", wide ? ratio > WIDE_LEAVE : ratio > WIDE_ENTER);
  };

  // The preview as tall as the drawing at its width, and at least as tall as the code beside
  // it (CSS caps it at 75% of the window); the user can still drag the box taller.
  Editor.prototype.fitHeight = function (svg) {
    var box = svg.viewBox && svg.viewBox.baseVal;
    if (!box || !box.width) return;
    var drawing = Math.round(this.preview.clientWidth * box.height / box.width) + 48;
    var beside = this.view.dom.getBoundingClientRect();
    var sideBySide = Math.abs(beside.top - this.preview.getBoundingClientRect().top) < beside.height;
    this.preview.style.height = Math.max(drawing, sideBySide ? Math.round(beside.height) : 0) + "px";
  };

  Editor.prototype.showEmpty = function () {
    this.svg = null;
    this.preview.replaceChildren(paragraph(this.root.dataset.emptyMessage));
    this.preview.classList.remove("stale");
    this.preview.classList.add("empty");
    this.finish("empty", null);
  };

  // The last good drawing stays, dimmed; with none yet, the preview says why it is empty.
  Editor.prototype.showError = function (problem, code) {
    if (this.svg) this.preview.classList.add("stale");
    else {
      this.preview.replaceChildren(paragraph(this.root.dataset.noDrawingMessage));
      this.preview.classList.add("empty");
    }
    this.errorBox.querySelector("[data-error-message]").textContent = problem.text;
    var lineButton = this.errorBox.querySelector("[data-error-line]");
    lineButton.hidden = !problem.line;
    lineButton.dataset.line = problem.line || "";
    lineButton.textContent = problem.line ? this.root.dataset.lineTemplate.replace("{line}", problem.line) : "";
    var repair = this.errorBox.querySelector("[data-repair-form]");
    if (repair) {
      repair.querySelector("[data-repair-code]").value = code;
      repair.querySelector("[data-repair-error]").value = problem.raw;  // the model reads the parser's own words
    }
    this.finish("error", problem);
  };

  // The mistake marked in the code: from where the parser stumbled to the end of that line
  // (the whole line when it stumbled at its end), with the message as the marker's tooltip.
  Editor.prototype.diagnostics = function (problem) {
    var doc = this.view.state.doc;
    if (!problem.line || problem.line > doc.lines) return [];
    var line = doc.line(problem.line);
    var from = line.from + Math.min(problem.column || 0, line.length);
    var to = line.to;
    if (from >= to) from = line.from;
    return [{from: from, to: Math.max(to, from), severity: "error", message: problem.text}];
  };

  Editor.prototype.markDirty = function () {
    this.root.querySelector("[data-dirty]").hidden = !this.isDirty();
  };

  Editor.prototype.isDirty = function () {
    return this.code.value !== this.saved;
  };

  Editor.prototype.selectLine = function (number) {
    var doc = this.view.state.doc;
    if (number < 1 || number > doc.lines) return;
    var line = doc.line(number);
    this.view.dispatch({selection: {anchor: line.from, head: line.to}, scrollIntoView: true});
    this.view.focus();
  };

  Editor.prototype.exportAs = function (event, kind) {
    var stem = this.root.dataset.downloadStem || "diagram";
    var code = this.text();
    if (kind === "mmd") {
      // The code as it is in the editor, saved or not (the link itself serves the saved version).
      event.preventDefault();
      download(new Blob([code.replace(/\n?$/, "\n")], {type: "text/plain;charset=utf-8"}), stem + ".mmd");
      return;
    }
    if (!this.svg || this.root.dataset.state !== "ok") return;
    var background = this.root.querySelector("[data-png-background]").value;
    // Files are drawn in the light theme whatever the page's theme is.
    renderCode(code, "default").then(function (result) {
      if (!result.svg) return;
      if (kind === "svg") exportSvg(result.svg, stem);
      else exportPng(result.svg, stem, background);
    });
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

  function editors() {
    return Array.from(document.querySelectorAll("[data-mermaid-editor][data-ready]"), function (root) {
      return root.mermaidEditor;
    }).filter(Boolean);
  }

  // One listener each for the page, not one per editor: editors are replaced by htmx swaps.
  document.addEventListener("themechange", function () {
    editors().forEach(function (editor) { editor.render(); });
  });

  // Leaving with unsaved edits asks first (the browser's own dialog; its text cannot be set).
  window.addEventListener("beforeunload", function (event) {
    var dirty = editors().some(function (editor) { return editor.isDirty(); });
    if (dirty) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  start();
  ["htmx:load", "htmx:afterSettle", "htmx:oobAfterSwap"].forEach(function (name) {
    document.addEventListener(name, start);
  });
})();
