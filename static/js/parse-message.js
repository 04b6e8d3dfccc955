// Mermaid's parse errors in plain words (used by static/js/mermaid-editor.js).
//
// Mermaid's flowchart parser (Jison) reports "Parse error on line 4: <code excerpt> ------^
// Expecting 'SQE', 'DOUBLECIRCLEEND', 'PE', … got '1'": its grammar's token names, the code
// repeated, a line that may not be where the mistake is. error.hash carries the same facts as
// data: the position of the token it stumbled on (loc) and the tokens it expected. Here they
// become one sentence and a range to mark in the editor: "Line 3: the shape opened with “[[”
// is not closed: Mermaid expected “]]” here, but found “]”." when a bracket of the line is left
// open, otherwise "Line 2: Mermaid expected “]”, “)” or text here, but found the end of the code."
(function () {
  "use strict";

  // Tokens that stand for one piece of text: shown as that text.
  var SYMBOLS = {
    SQS: "[", SQE: "]", PS: "(", PE: ")", DIAMOND_START: "{", DIAMOND_STOP: "}",
    DOUBLECIRCLESTART: "(((", DOUBLECIRCLEEND: ")))", STADIUMSTART: "([", STADIUMEND: "])",
    SUBROUTINESTART: "[[", SUBROUTINEEND: "]]", CYLINDERSTART: "[(", CYLINDEREND: ")]",
    TRAPSTART: "[/", TRAPEND: "/]", INVTRAPSTART: "[\\", INVTRAPEND: "\\]", TAGSTART: "<", TAGEND: ">",
    ELLIPSE_START: "(-", ELLIPSE_END: "-)", "-)": "-)", VERTEX_WITH_PROPS_START: "[|", PIPE: "|",
    AMP: "&", SEMI: ";", COLON: ":", COMMA: ",", MINUS: "-", QUOTE: "\"", STYLE_SEPARATOR: ":::",
    LINK: "-->", START_LINK: "--", end: "end", subgraph: "subgraph"
  };
  // Tokens that stand for a kind of thing: shown as a phrase (translated, from the page).
  var KINDS = {
    NEWLINE: "newline", EOF: "end", SPACE: "space", NUM: "text", NODE_STRING: "text", TEXT: "text",
    UNICODE_TEXT: "text", ALPHA: "text", STR: "text", MD_STR: "text", DIR: "direction", ARROW: "arrow",
    LINK_ID: "arrow", SHAPE_DATA: "shape", GRAPH: "header", TESTSTR: "text", DEFAULT: "text", DOWN: "text",
    BRKT: "text", MULT: "text", EDGE_TEXT: "text", direction_tb: "direction", direction_bt: "direction",
    direction_rl: "direction", direction_lr: "direction"
  };
  // Tokens the parser lists but a reader would not type at that point (shape-data brackets).
  var UNHELPFUL = ["TAGSTART", "TAGEND", "SHAPE_DATA"];
  var CLOSERS = ["SQE", "PE", "DIAMOND_STOP", "DOUBLECIRCLEEND", "STADIUMEND", "SUBROUTINEEND", "CYLINDEREND",
    "TRAPEND", "INVTRAPEND", "ELLIPSE_END", "-)", "PIPE"];
  var MAX_EXPECTED = 4;
  // Shapes' brackets, longest first: the one left open on the line is what the reader forgot.
  var OPENERS = [["(((", ")))"], ["((", "))"], ["([", "])"], ["[[", "]]"], ["[(", ")]"], ["[/", "/]"],
    ["[\\", "\\]"], ["{{", "}}"], ["(", ")"], ["[", "]"], ["{", "}"]];

  // The bracket still open at `column` of `text` (quoted labels skipped), or null.
  function openShape(text, column) {
    var open = [];
    for (var i = 0; i < Math.min(column, text.length); i++) {
      if (text[i] === '"') {
        var end = text.indexOf('"', i + 1);
        if (end < 0 || end >= column) break;
        i = end;
        continue;
      }
      var top = open[open.length - 1];
      if (top && text.substr(i, top[1].length) === top[1]) {
        open.pop();
        i += top[1].length - 1;
        continue;
      }
      for (var k = 0; k < OPENERS.length; k++) {
        if (text.substr(i, OPENERS[k][0].length) === OPENERS[k][0]) {
          open.push(OPENERS[k]);
          i += OPENERS[k][0].length - 1;
          break;
        }
      }
    }
    return open.length ? open[open.length - 1] : null;
  }

  function tokenName(quoted) {
    return String(quoted).replace(/^'|'$/g, "");
  }

  function describeToken(name, phrases) {
    if (Object.prototype.hasOwnProperty.call(SYMBOLS, name)) return phrases.quote(SYMBOLS[name]);
    if (Object.prototype.hasOwnProperty.call(KINDS, name)) return phrases.kind(KINDS[name]);
    return phrases.quote(name.toLowerCase());
  }

  // The expected tokens as a few distinct words: closing brackets first (they say what is left
  // open), then kinds of thing, then other punctuation; the rest as "something else".
  function expectedWords(expected, phrases) {
    var groups = [[], [], []];
    var seen = [];
    expected.map(tokenName).filter(function (name) { return UNHELPFUL.indexOf(name) < 0; }).forEach(function (name) {
      var word = describeToken(name, phrases);
      if (seen.indexOf(word) >= 0) return;
      seen.push(word);
      var group = CLOSERS.indexOf(name) >= 0 ? 0 : Object.prototype.hasOwnProperty.call(KINDS, name) ? 1 : 2;
      groups[group].push(word);
    });
    var words = groups[0].concat(groups[1], groups[2]);
    if (words.length > MAX_EXPECTED) words = words.slice(0, MAX_EXPECTED - 1).concat([phrases.kind("more")]);
    return words;
  }

  // What the parser stumbled on: Jison's token 1 is the end of input.
  function foundWords(hash, phrases) {
    if (hash.token === 1 || hash.token === "EOF" || hash.token === "1") return phrases.kind("end");
    if (hash.token === "NEWLINE" || hash.text === "\n") return phrases.kind("newline");
    var text = String(hash.text || "").trim();
    if (text) return phrases.quote(text.length > 30 ? text.slice(0, 30) + "…" : text);
    return describeToken(String(hash.token), phrases);
  }

  function firstLine(text) {
    return String(text).split("\n")[0].replace(/^Error: /, "").trim();
  }

  // {text, line, column, endLine, endColumn} — line 1-based, columns 0-based, or line null.
  function explain(error, phrases, code) {
    var message = (error && (error.message || error.str)) || String(error);
    var hash = error && error.hash;
    var loc = hash && hash.loc;
    var line = loc && loc.first_line ? loc.first_line : null;
    if (!line) {
      var said = /line (\d+)/i.exec(message);
      line = said ? Number(said[1]) : null;
    }
    var position = line ? {line: line, column: loc ? loc.first_column : 0,
      endLine: loc ? loc.last_line : line, endColumn: loc ? loc.last_column : 0} : {line: null};
    var text;
    var shape = line && code ? openShape(String(code).split("\n")[line - 1] || "", position.column) : null;
    var closer = shape && hash && hash.expected && hash.expected.some(function (quoted) {
      return SYMBOLS[tokenName(quoted)] === shape[1];
    });
    if (closer) {
      text = phrases.unclosed(phrases.quote(shape[0]), phrases.quote(shape[1]), foundWords(hash, phrases));
    } else if (hash && hash.expected && hash.expected.length) {
      text = phrases.expected(expectedWords(hash.expected, phrases), foundWords(hash, phrases));
    } else if (/^Lexical error/i.test(message)) {
      text = phrases.kind("lexical");
    } else if (/No diagram type detected/i.test(message) || (error && error.name === "UnknownDiagramError")) {
      text = phrases.kind("no-type");
    } else {
      text = firstLine(message);
    }
    position.text = line ? phrases.onLine(line, text) : text;
    position.raw = message;
    return position;
  }

  // Phrases from a <template data-parse-phrases> of the page (translated server-side).
  function phrasesFrom(template) {
    function phrase(name) {
      var node = template && template.content.querySelector('[data-phrase="' + name + '"]');
      return node ? node.textContent : name;
    }
    function join(words) {
      if (words.length < 2) return words.join("");
      return words.slice(0, -1).join(", ") + " " + phrase("or") + " " + words[words.length - 1];
    }
    return {
      quote: function (text) { return "“" + text + "”"; },
      kind: function (name) { return phrase("kind-" + name); },
      expected: function (words, found) {
        return phrase("expected").replace("{expected}", join(words)).replace("{found}", found);
      },
      unclosed: function (opener, closer, found) {
        return phrase("unclosed").replace("{opener}", opener).replace("{closer}", closer).replace("{found}", found);
      },
      onLine: function (line, text) { return phrase("on-line").replace("{line}", line).replace("{text}", text); }
    };
  }

  window.MermaidParseMessage = {explain: explain, phrasesFrom: phrasesFrom};
})();
