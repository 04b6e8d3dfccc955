// The entry of static/vendor/codemirror.min.js, bundled by scripts/vendor_static.sh (esbuild):
// CodeMirror 6 has no prebuilt browser file, so the pieces the Mermaid editor uses are
// collected here and exposed as one global, `CodeMirror`, like the other vendored files.
export {EditorView, basicSetup} from "codemirror";
export {EditorState, Compartment} from "@codemirror/state";
export {keymap, placeholder} from "@codemirror/view";
export {indentWithTab} from "@codemirror/commands";
export {syntaxHighlighting} from "@codemirror/language";
export {classHighlighter} from "@lezer/highlight";
export {setDiagnostics, lintGutter} from "@codemirror/lint";
export {mermaid} from "codemirror-lang-mermaid";
