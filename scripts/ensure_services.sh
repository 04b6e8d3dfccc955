#!/usr/bin/env bash
# PostgreSQL and Redis run before a session starts on dev and CI machines;
# start them if they have stopped, with the machine's own commands.
set -euo pipefail
if ! pg_isready -h 127.0.0.1 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
for _ in $(seq 30); do pg_isready -h 127.0.0.1 -q && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done
echo "PostgreSQL or Redis did not come up" >&2
exit 1
