#!/usr/bin/env bash
# Copies the pinned front-end files (package.json, package-lock.json) into static/vendor/,
# and bundles CodeMirror 6 (ES modules only) from frontend/codemirror.js with esbuild.
# The copies are committed; run this only to change a version
# (edit package.json, then `npm install --package-lock-only` to update the lock file).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
cp package.json package-lock.json "$tmp/"
(cd "$tmp" && npm ci --silent --no-audit --no-fund >/dev/null)
mkdir -p static/vendor
cp "$tmp/node_modules/htmx.org/dist/htmx.min.js" static/vendor/htmx.min.js
cp "$tmp/node_modules/htmx-ext-ws/dist/ws.min.js" static/vendor/htmx-ext-ws.min.js
cp "$tmp/node_modules/mermaid/dist/mermaid.min.js" static/vendor/mermaid.min.js
# bpmn-js: the navigated viewer (pan and zoom, no editing) and the two style sheets it needs;
# the viewer draws no icons from bpmn-font. bpmn.io's licence asks that the watermark stays.
cp "$tmp/node_modules/bpmn-js/dist/bpmn-navigated-viewer.production.min.js" static/vendor/bpmn-navigated-viewer.min.js
cp "$tmp/node_modules/bpmn-js/dist/assets/bpmn-js.css" static/vendor/bpmn-js.css
cp "$tmp/node_modules/bpmn-js/dist/assets/diagram-js.css" static/vendor/diagram-js.css
cp "$tmp/node_modules/bpmn-js/LICENSE" static/vendor/bpmn-js.LICENSE
cp "$tmp/node_modules/svg-pan-zoom/dist/svg-pan-zoom.min.js" static/vendor/svg-pan-zoom.min.js
# CodeMirror: the editor, Mermaid highlighting and lint markers as one global `CodeMirror`;
# the licences of everything bundled stay at the end of the file (--legal-comments=eof).
cp frontend/codemirror.js "$tmp/"
"$tmp/node_modules/.bin/esbuild" "$tmp/codemirror.js" --bundle --minify --format=iife --global-name=CodeMirror \
  --target=es2020 --legal-comments=eof --log-level=warning --outfile=static/vendor/codemirror.min.js
{
  echo "# Vendored front-end files, copied by scripts/vendor_static.sh from package.json"
  for pkg in htmx.org htmx-ext-ws mermaid bpmn-js svg-pan-zoom codemirror @codemirror/state @codemirror/view \
    @codemirror/commands @codemirror/language @codemirror/lint @lezer/highlight codemirror-lang-mermaid esbuild; do
    echo "$pkg $(node -p "require('$tmp/node_modules/$pkg/package.json').version")"
  done
} > static/vendor/VERSIONS
rm -rf "$tmp"
cat static/vendor/VERSIONS
