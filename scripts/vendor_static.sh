#!/usr/bin/env bash
# Copies the pinned front-end files (package.json) into static/vendor/.
# The copies are committed; run this only to change a version.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
cp package.json "$tmp/"
(cd "$tmp" && npm install --silent --no-audit --no-fund >/dev/null)
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
{
  echo "# Vendored front-end files, copied by scripts/vendor_static.sh from package.json"
  for pkg in htmx.org htmx-ext-ws mermaid bpmn-js; do
    echo "$pkg $(node -p "require('$tmp/node_modules/$pkg/package.json').version")"
  done
} > static/vendor/VERSIONS
rm -rf "$tmp"
cat static/vendor/VERSIONS
