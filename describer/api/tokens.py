"""Personal API tokens: created and revoked on the settings page, sent as
`Authorization: Bearer ds_…`.

A token expires after the days chosen when it was made (API_TOKEN_DEFAULT_DAYS by
default; 0 = never); an expired one is refused with a message that says so.

Only a token's SHA-256 is stored. A token is 32 random bytes, so a plain,
unsalted hash is enough (nothing to guess), and it lets the lookup be one
indexed equality instead of a scan with a slow password hasher.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from describer.models import ApiToken

TOKEN_PREFIX = "ds_"
VISIBLE_CHARS = 10  # "ds_" and 7 more: enough to tell one's tokens apart in a list
# last_used_at is a hint for the user, not an audit log: one write a minute per token is plenty.
LAST_USED_PRECISION = timedelta(minutes=1)
MAX_TOKEN_LENGTH = 100


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user, name: str, days: int | None = None) -> tuple[ApiToken, str]:
    """A new token for `user`, valid for `days` (API_TOKEN_DEFAULT_DAYS when None; 0 = never
    expires); the raw token is returned once and never stored."""
    days = settings.API_TOKEN_DEFAULT_DAYS if days is None else days
    expires_at = timezone.now() + timedelta(days=days) if days > 0 else None
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[:VISIBLE_CHARS], token_hash=hash_token(raw), expires_at=expires_at
    )
    return token, raw


def api_token_revoke(token: ApiToken) -> None:
    token.delete()


def api_token_for(raw: str) -> ApiToken | None:
    """The token (with its user) that `raw` is, noting when it was used; None if there is none.
    An expired token is returned too (the caller refuses it, saying why), but not noted as used."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > MAX_TOKEN_LENGTH:
        return None
    token = ApiToken.objects.select_related("user").filter(token_hash=hash_token(raw)).first()
    if token is not None and not token.is_expired:
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
    return token
