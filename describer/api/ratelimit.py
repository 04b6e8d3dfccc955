"""How many jobs one API token may create a minute (API_JOBS_PER_MINUTE).

A fixed one-minute window counted in the Redis cache: `add` starts a window's
counter and `incr` is atomic, so concurrent requests on several web processes
count correctly. At a window's edge a client may get up to twice the limit in a
short burst; that is acceptable for protecting the queue.

Every answer of a counted request says where the caller stands, as GitHub's API
does: X-RateLimit-Limit, X-RateLimit-Remaining, and X-RateLimit-Reset (the Unix
time in seconds when the window ends). The headers are kept on the request and
added to whatever the view answers, errors included (describer/api/urls.py).

While Redis is unreachable the limit fails open, with a WARNING in the log: failing
closed would stop every API client for the outage, while a burst in those seconds
only lengthens the queue (the jobs are in PostgreSQL). Nothing is counted then, so
no X-RateLimit headers are sent.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils.translation import gettext as _

from describer.api.problems import ApiProblem
from describer.cache import CacheUnavailable, ThrottledWarning

WINDOW_SECONDS = 60
warn_not_enforced = ThrottledWarning(
    logging.getLogger(__name__), "API rate limit not enforced: the cache is unreachable"
)
# Documented on every rate-limited operation of the OpenAPI schema.
HEADERS_SCHEMA = {
    "X-RateLimit-Limit": {"description": "Jobs this token may queue a minute (API_JOBS_PER_MINUTE).",
                          "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Jobs it may still queue in this minute.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "When this minute's window ends, in Unix time (seconds).",
                          "schema": {"type": "integer"}},
}  # fmt: skip


def _count(token_hash: str, window_start: int) -> int | None:
    """This window's count for the token after adding one; None while the cache is away."""
    key = f"api-jobs:{token_hash[:32]}:{window_start}"
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=WINDOW_SECONDS + 5)
        return 1
    except CacheUnavailable as error:
        warn_not_enforced(error)
        return None


def check_job_rate(request: HttpRequest) -> None:
    """Count one job for the request's token, or refuse it with 429 and Retry-After when over the
    limit. Sets `request.rate_limit_headers` for the answer."""
    limit = settings.API_JOBS_PER_MINUTE
    if limit <= 0:
        return
    now = time.time()
    window_start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    count = _count(request.auth.token_hash, window_start)
    if count is None:
        return
    request.rate_limit_headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(limit - count, 0)),
        "X-RateLimit-Reset": str(window_start + WINDOW_SECONDS),
    }
    if count > limit:
        retry_after = max(1, math.ceil(window_start + WINDOW_SECONDS - now))
        raise ApiProblem(
            429,
            _("This token may create %(limit)s conversions a minute. Try again in %(seconds)s seconds.")
            % {"limit": limit, "seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
