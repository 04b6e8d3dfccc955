#!/usr/bin/env bash
# Validates docker-compose.yml. Uses Docker's compose plugin where present;
# CI machines lack it, so fall back to Debian's docker-compose, which checks
# the file against the Compose specification just the same.
set -euo pipefail
cd "$(dirname "$0")/.."
if docker compose version >/dev/null 2>&1; then
  docker compose config --quiet && echo "compose: docker-compose.yml is valid (docker compose)"
  exit 0
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
docker-compose config --quiet && echo "compose: docker-compose.yml is valid (docker-compose $(docker-compose version --short))"
