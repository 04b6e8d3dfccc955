"""How many jobs one API token may create a minute (API_JOBS_PER_MINUTE).

A fixed one-minute window counted in the Redis cache: `add` starts a window's
counter and `incr` is atomic, so concurrent requests on several web processes
count correctly. At a window's edge a client may get up to twice the limit in a
short burst; that is acceptable for protecting the queue.

While Redis is unreachable the limit fails open, with a WARNING in the log: failing
closed would stop every API client for the outage, while a burst in those seconds
only lengthens the queue (the jobs are in PostgreSQL).
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from django.utils.translation import gettext as _

from describer.api.problems import ApiProblem
from describer.cache import CacheUnavailable, ThrottledWarning
from describer.models import ApiToken

WINDOW_SECONDS = 60
warn_not_enforced = ThrottledWarning(
    logging.getLogger(__name__), "API rate limit not enforced: the cache is unreachable"
)


def check_job_rate(token: ApiToken) -> None:
    """Count one job for `token`, or refuse it with 429 and Retry-After when over the limit."""
    limit = settings.API_JOBS_PER_MINUTE
    if limit <= 0:
        return
    now = time.time()
    window_start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    key = f"api-jobs:{token.token_hash[:32]}:{window_start}"
    cache.add(key, 0, timeout=WINDOW_SECONDS + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, count := 1, timeout=WINDOW_SECONDS + 5)
    except CacheUnavailable as error:
        warn_not_enforced(error)
        return
    if count > limit:
        retry_after = max(1, math.ceil(window_start + WINDOW_SECONDS - now))
        raise ApiProblem(
            429,
            _("This token may create %(limit)s conversions a minute. Try again in %(seconds)s seconds.")
            % {"limit": limit, "seconds": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
