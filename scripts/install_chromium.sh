#!/usr/bin/env bash
# Installs Debian's Chromium for the Playwright browser tests (Playwright cannot
# download its own browsers here). Idempotent.
set -euo pipefail
# DejaVu Sans: the fonts the pages and the Mermaid exports use, Cyrillic included.
if command -v chromium >/dev/null 2>&1 && [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  echo "chromium: already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "chromium: installed ($(chromium --version))"
