#!/usr/bin/env bash
# Installs Debian's Tesseract 5 with its English and Russian models: the worker reads the
# diagram's own text with them (describer/ocr.py, through tesserocr, whose wheel brings
# libtesseract but no models). The Dockerfile installs the same packages. Idempotent.
set -euo pipefail
have_models() {
  command -v tesseract >/dev/null 2>&1 \
    && tesseract --list-langs 2>/dev/null | grep -qx eng \
    && tesseract --list-langs 2>/dev/null | grep -qx rus
}
if have_models; then
  echo "tesseract: already installed"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus >/dev/null
have_models && echo "tesseract: installed ($(tesseract --version 2>&1 | head -1))"
