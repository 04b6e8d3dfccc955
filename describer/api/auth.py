"""Bearer-token authentication of the API. Session cookies are never looked at,
so a logged-in browser gets no access through them (and CSRF does not apply)."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from describer.api.tokens import api_token_for
from describer.models import ApiToken


class TokenRefused(AuthenticationError):
    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiToken:
        api_token = api_token_for(token.strip())
        if api_token is None:
            raise TokenRefused(_("This API token is not valid: it was revoked or mistyped. "
                                 "Create a new one on your settings page (/settings/)."))
        if api_token.is_expired:
            raise TokenRefused(_("This API token expired at %(time)s. Create a new one on your settings page "
                                 "(/settings/) and choose how long it stays valid.")
                               % {"time": api_token.expires_at.isoformat(timespec="seconds")})
        if not api_token.user.is_active:
            raise TokenRefused(_("The account this API token belongs to is deactivated; "
                                 "ask an administrator to reactivate it."))
        return api_token
