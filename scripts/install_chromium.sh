#!/usr/bin/env bash
# Installs Debian's Chromium for the Playwright browser tests (Playwright cannot
# download its own browsers here). Idempotent.
set -euo pipefail
# DejaVu Sans: the fonts the pages and the Mermaid exports use, Cyrillic included;
# Symbola: the emoji and symbols DejaVu lacks, for the PNG drawn on the server.
if command -v chromium >/dev/null 2>&1 && [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] \
    && [ -f /usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf ]; then
  echo "chromium: already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core fonts-symbola >/dev/null
echo "chromium: installed ($(chromium --version))"
