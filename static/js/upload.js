// The upload page (templates/describer/_upload_form.html): drag and drop, paste, previews, several
// files, and the server's checks run here first for an instant answer. The limits and messages come
// from the form's data- attributes (the server's settings and translations), never from this file.
// Without this script the form is a plain multiple-file input; the server checks everything anyway.
(function () {
  "use strict";

  var chosen = [];  // the files that will be sent, in order; the file input always holds exactly these
  var sent = [];  // `chosen` when the form was last sent: the server's refusals count positions in it
  var previewUrls = new Map();
  var pastedCount = 0;
  var dragDepth = 0;

  function uploadForm() { return document.querySelector("[data-upload-form]"); }
  function fileInput(form) { return form.querySelector("input[type=file]"); }

  // "{name}: The file is {size}…" → the values, in one pass (a file name holding "{size}" stays as it is).
  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, function (whole, key) {
      return Object.prototype.hasOwnProperty.call(values, key) ? String(values[key]) : whole;
    });
  }

  function language() { return document.documentElement.lang || undefined; }

  // As Django's filesizeformat writes it (1024-based, one decimal), from its own forms in the
  // page's language: data-size-units is "{n} GB|{n} MB|{n} KB|{n} bytes".
  function formatSize(bytes) {
    var units = uploadForm().dataset.sizeUnits.split("|");
    var steps = [1073741824, 1048576, 1024];
    for (var i = 0; i < steps.length; i++) {
      if (bytes >= steps[i]) {
        var number = new Intl.NumberFormat(language(), {
          minimumFractionDigits: 1, maximumFractionDigits: 1, useGrouping: false,
        }).format(Math.round(bytes / steps[i] * 10) / 10);
        return fill(units[i], {n: number});
      }
    }
    return fill(units[3], {n: bytes});
  }

  function megapixels(pixels) {
    return new Intl.NumberFormat(language(), {maximumSignificantDigits: 3}).format(pixels / 1e6);
  }

  // The checks that need nothing but the name and the size; a message, or "" when the file passes.
  function quickProblem(form, file) {
    var data = form.dataset;
    var name = file.name.toLowerCase();
    var extensions = data.extensions.split(",");
    if (!extensions.some(function (extension) { return name.endsWith(extension); })) {
      return fill(data.msgExtension, {name: file.name});
    }
    if (file.size === 0) return fill(data.msgEmpty, {name: file.name});
    if (file.size > Number(data.maxBytes)) {
      return fill(data.msgSize, {name: file.name, size: formatSize(file.size)});
    }
    return "";
  }

  // PNG and JPEG by their first bytes, as the server's Pillow sees them.
  function looksLikeImage(bytes) {
    var png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
    var isPng = png.every(function (value, i) { return bytes[i] === value; });
    return isPng || (bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff);
  }

  function pixelProblem(form, file, width, height) {
    var data = form.dataset;
    if (width * height > Number(data.maxPixels)) {
      return fill(data.msgPixels, {name: file.name, w: width, h: height, mp: megapixels(width * height)});
    }
    if (Math.min(width, height) < Number(data.minSide)) {
      return fill(data.msgSmall, {name: file.name, w: width, h: height});
    }
    return "";
  }

  function errorBox(form) { return form.querySelector("[data-upload-errors]"); }

  function showErrors(form, messages, keepOld) {
    var box = errorBox(form);
    if (!keepOld) box.replaceChildren();
    messages.forEach(function (message) {
      var line = document.createElement("p");
      line.className = "error";
      line.setAttribute("role", "alert");
      line.textContent = message;
      box.appendChild(line);
    });
    box.closest(".field").classList.toggle("has-error", box.children.length > 0);
  }

  function sameFile(a, b) {
    return a.name === b.name && a.size === b.size && a.lastModified === b.lastModified;
  }

  // The file input holds the chosen files, so the form posts them as it is, with or without htmx.
  function syncInput(form) {
    var transfer = new DataTransfer();
    chosen.forEach(function (file) { transfer.items.add(file); });
    fileInput(form).files = transfer.files;
  }

  function urlFor(file) {
    if (!previewUrls.has(file)) previewUrls.set(file, URL.createObjectURL(file));
    return previewUrls.get(file);
  }

  function previewItem(form, file, index) {
    var item = document.createElement("li");
    item.className = "upload-preview";
    var image = document.createElement("img");
    image.alt = "";
    image.src = urlFor(file);
    var text = document.createElement("div");
    text.className = "upload-preview-text";
    var name = document.createElement("span");
    name.className = "upload-preview-name";
    name.textContent = file.name;
    name.title = file.name;
    var size = document.createElement("span");
    size.className = "upload-preview-size";
    size.textContent = formatSize(file.size);
    image.addEventListener("load", function () {
      size.textContent = formatSize(file.size) + " · " + image.naturalWidth + "×" + image.naturalHeight;
    });
    var remove = document.createElement("button");
    remove.type = "button";
    remove.className = "linklike upload-remove";
    remove.dataset.removeIndex = String(index);
    remove.textContent = form.dataset.labelRemove;
    remove.setAttribute("aria-label", form.dataset.labelRemove + " " + file.name);
    text.append(name, size);
    item.append(image, text, remove);
    return item;
  }

  function render(form) {
    var list = form.querySelector("[data-upload-previews]");
    list.replaceChildren.apply(list, chosen.map(function (file, index) { return previewItem(form, file, index); }));
    list.hidden = chosen.length === 0;
    previewUrls.forEach(function (url, file) {
      if (chosen.indexOf(file) < 0) {
        URL.revokeObjectURL(url);
        previewUrls.delete(file);
      }
    });
  }

  // A file refused after it was added (its contents were checked later); the form may be a new one.
  function drop(file, message) {
    var form = uploadForm();
    var index = chosen.indexOf(file);
    if (!form || index < 0) return;
    chosen.splice(index, 1);
    syncInput(form);
    render(form);
    showErrors(form, [message], true);
  }

  // What needs the file's contents: its first bytes and its dimensions. A file the browser cannot
  // decode is left to the server, whose message is the precise one.
  function checkContents(form, file) {
    file.slice(0, 8).arrayBuffer().then(function (buffer) {
      if (!looksLikeImage(new Uint8Array(buffer))) {
        drop(file, fill(form.dataset.msgFormat, {name: file.name}));
        return;
      }
      var probe = new Image();
      probe.addEventListener("load", function () {
        var problem = pixelProblem(form, file, probe.naturalWidth, probe.naturalHeight);
        if (problem) drop(file, problem);
      });
      probe.src = urlFor(file);
    });
  }

  function add(files) {
    var form = uploadForm();
    if (!form || !files.length) return;
    var problems = [];
    var added = [];
    Array.prototype.forEach.call(files, function (file) {
      if (chosen.some(function (other) { return sameFile(other, file); })) return;
      var problem = quickProblem(form, file);
      if (!problem && chosen.length >= Number(form.dataset.maxFiles)) {
        problem = fill(form.dataset.msgCount, {name: file.name});
      }
      if (problem) {
        problems.push(problem);
      } else {
        chosen.push(file);
        added.push(file);
      }
    });
    showErrors(form, problems, false);
    syncInput(form);
    render(form);
    added.forEach(function (file) { checkContents(form, file); });
  }

  // A pasted screenshot is called "image.png" every time: give each its own name (and title).
  function pastedFile(file) {
    if (file.name && !/^image\.(png|jpe?g)$/i.test(file.name)) return file;
    pastedCount += 1;
    var extension = file.type === "image/jpeg" ? "jpg" : file.type === "image/png" ? "png" : "";
    var name = uploadForm().dataset.labelPasted + " " + pastedCount + (extension ? "." + extension : "");
    return new File([file], name, {type: file.type, lastModified: file.lastModified});
  }

  function hasFiles(event) {
    return event.dataTransfer && Array.prototype.indexOf.call(event.dataTransfer.types, "Files") >= 0;
  }

  function setDragging(on) {
    var zone = document.querySelector("[data-dropzone]");
    if (zone) zone.classList.toggle("dragging", on);
  }

  // A new form (the page, or the server's answer swapped in by htmx): show the extras, and put
  // back the files that were sent, less those the server refused.
  function enhance(form) {
    var hint = form.querySelector("[data-dropzone-hint]");
    if (hint) hint.hidden = false;
    form.querySelector("[data-dropzone]").classList.add("enhanced");
    var refused = (form.dataset.refused || "").split(" ").filter(Boolean).map(function (index) {
      return sent[Number(index)];
    });
    chosen = chosen.filter(function (file) { return refused.indexOf(file) < 0; });
    if (!chosen.length && fileInput(form).files.length) chosen = Array.from(fileInput(form).files);
    syncInput(form);
    render(form);
  }

  document.addEventListener("change", function (event) {
    var form = uploadForm();
    if (!form || event.target !== fileInput(form)) return;
    // The input now holds only the newly picked files: add them to the ones chosen before.
    add(Array.from(event.target.files));
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-remove-index]");
    var form = uploadForm();
    if (!button || !form) return;
    chosen.splice(Number(button.dataset.removeIndex), 1);
    syncInput(form);
    render(form);
    fileInput(form).focus();
  });

  document.addEventListener("paste", function (event) {
    if (!uploadForm() || !event.clipboardData || !event.clipboardData.files.length) return;
    event.preventDefault();
    add(Array.from(event.clipboardData.files).map(pastedFile));
  });

  // Files dropped anywhere on the page are taken (and never opened by the browser instead).
  document.addEventListener("dragenter", function (event) {
    if (!uploadForm() || !hasFiles(event)) return;
    dragDepth += 1;
    setDragging(true);
  });
  document.addEventListener("dragleave", function (event) {
    if (!uploadForm() || !hasFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) setDragging(false);
  });
  document.addEventListener("dragover", function (event) {
    if (!uploadForm() || !hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("drop", function (event) {
    if (!uploadForm() || !hasFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    setDragging(false);
    add(Array.from(event.dataTransfer.files));
  });

  document.addEventListener("submit", function (event) {
    if (event.target === uploadForm()) sent = chosen.slice();
  });

  document.addEventListener("htmx:load", function (event) {
    if (event.target.matches && event.target.matches("[data-upload-form]")) enhance(event.target);
  });

  function start() {
    var form = uploadForm();
    if (form) enhance(form);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
