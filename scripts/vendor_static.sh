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
{
  echo "# Vendored front-end files, copied by scripts/vendor_static.sh from package.json"
  for pkg in htmx.org htmx-ext-ws mermaid; do
    echo "$pkg $(node -p "require('$tmp/node_modules/$pkg/package.json').version")"
  done
} > static/vendor/VERSIONS
rm -rf "$tmp"
cat static/vendor/VERSIONS
