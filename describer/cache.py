"""A Redis cache that a Redis outage turns into cache misses instead of errors.

Everything this site keeps in the cache can be rebuilt: sessions are `cached_db`
(PostgreSQL holds every session), the history is re-rendered, the API's rate
limit fails open. So while Redis is unreachable every operation behaves as a
miss: `get` returns the default, `set`, `add`, `delete`, `touch` and `has_key`
return False, and `incr` raises `CacheUnavailable` (a count that cannot be read
is not a missing key). After a failure Redis is left alone for
`RETRY_AFTER_SECONDS`, so a Redis that does not answer at all costs one socket
timeout (OPTIONS in settings) every few seconds, not one per operation. Deletes
are always tried: a skipped one could leave a logged-out session in a Redis that
is reachable again (or never lost its data).

The outage is logged once as a WARNING, then at most every `WARN_EVERY_SECONDS`,
and its end once as INFO. The log shows redis-py's error (host and port), never the
URL, which may hold a password.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

# What an unreachable Redis raises: refused, reset, timed out, still loading its data.
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)
RETRY_AFTER_SECONDS = 2.0
WARN_EVERY_SECONDS = 60.0


class CacheUnavailable(Exception):
    """The cache could not be reached; unlike a missing key, nothing is known about the value."""


class ThrottledWarning:
    """A WARNING at most every `every` seconds: an outage fails every request, the log needs one line."""

    def __init__(self, logger: logging.Logger, message: str, every: float = WARN_EVERY_SECONDS) -> None:
        self.logger = logger
        self.message = message
        self.every = every
        self.last = -math.inf
        self.suppressed = 0

    def __call__(self, error: BaseException) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            self.suppressed += 1
            return
        self.logger.warning(
            "%s (%s: %s; %d more since the last warning)", self.message, type(error).__name__, error, self.suppressed
        )
        self.last, self.suppressed = now, 0


class RedisOutage:
    """What this process knows about one Redis being down. Shared by every cache instance
    of that location: under ASGI Django builds cache instances per request context."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.warn = ThrottledWarning(log, "Redis cache unreachable: serving misses, sessions from PostgreSQL")

    def skips(self) -> bool:
        return time.monotonic() < self.retry_at

    def failed(self, error: BaseException) -> None:
        now = time.monotonic()
        self.down_since = self.down_since or now
        self.retry_at = now + RETRY_AFTER_SECONDS
        self.warn(error)

    def succeeded(self) -> None:
        self.retry_at = 0.0  # an answer (to a delete, which is never skipped) proves Redis is back
        if self.down_since is not None:
            log.info("Redis cache reachable again after %.0f s", time.monotonic() - self.down_since)
            self.down_since = None
            self.warn.last = -math.inf  # the next outage is news again


@functools.cache
def outage_of(location: str) -> RedisOutage:
    return RedisOutage()


MISSING = object()


class FailSafeRedisCache(RedisCache):
    """Django's RedisCache, with an unreachable Redis answered as a miss (see the module docstring)."""

    def __init__(self, server: str, params: dict) -> None:
        super().__init__(server, params)
        self.outage = outage_of(str(server))

    def _attempt(self, fallback: Any, operation: Callable[..., Any], *args: Any, skippable: bool = True) -> Any:
        if skippable and self.outage.skips():
            return fallback
        try:
            result = operation(*args)
        except REDIS_UNAVAILABLE as error:
            self.outage.failed(error)
            return fallback
        self.outage.succeeded()
        return result

    def get(self, key, default=None, version=None):
        return self._attempt(default, super().get, key, default, version)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._attempt(False, super().set, key, value, timeout, version)

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._attempt(False, super().add, key, value, timeout, version)

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._attempt(False, super().touch, key, timeout, version)

    def delete(self, key, version=None):
        return self._attempt(False, super().delete, key, version, skippable=False)

    def has_key(self, key, version=None):
        return self._attempt(False, super().has_key, key, version)

    def get_many(self, keys, version=None):
        return self._attempt({}, super().get_many, keys, version)

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        # Django's contract: the keys that could not be set.
        return self._attempt(list(data), super().set_many, data, timeout, version)

    def delete_many(self, keys, version=None):
        return self._attempt(None, super().delete_many, keys, version, skippable=False)

    def incr(self, key, delta=1, version=None):
        result = self._attempt(MISSING, super().incr, key, delta, version)
        if result is MISSING:
            raise CacheUnavailable("the Redis cache is unreachable")
        return result
