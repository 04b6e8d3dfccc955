from __future__ import annotations

from django.conf import settings


def site(request) -> dict:
    return {
        "SIGNUP_ENABLED": settings.SIGNUP_ENABLED,
        "USING_TINY_MODEL": settings.DESCRIBER_MODEL == "tiny",
    }
