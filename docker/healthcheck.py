"""Docker HEALTHCHECK for the web process: healthy when daphne answers the login
page with anything below 500. The Host header is the first allowed host, so the
check passes whatever DJANGO_ALLOWED_HOSTS says (a redirect to HTTPS counts)."""

from __future__ import annotations

import http.client
import os
import sys


def probe_host() -> str:
    hosts = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",") if h.strip()]
    usable = [h.lstrip(".") for h in hosts if h != "*"]
    return usable[0] if usable else "localhost"


def main() -> int:
    headers = {"Host": probe_host()}
    if os.environ.get("DJANGO_BEHIND_PROXY", "").strip().lower() in ("1", "true", "yes", "on"):
        headers["X-Forwarded-Proto"] = "https"
    port = int(os.environ.get("HEALTHCHECK_PORT", "8000"))
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=4)
        connection.request("GET", "/accounts/login/", headers=headers)
        status = connection.getresponse().status
    except OSError as error:
        print(f"healthcheck: no answer on port {port}: {error}")
        return 1
    print(f"healthcheck: HTTP {status}")
    return 0 if status < 500 else 1


if __name__ == "__main__":
    sys.exit(main())
