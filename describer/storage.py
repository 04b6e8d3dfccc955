"""Where uploaded files go. Names are random so that nothing about the user's
original file name or the row id can be guessed from a path."""

from __future__ import annotations

import secrets

from django.utils import timezone


def random_upload_path(instance, filename: str) -> str:
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else "png"
    return f"uploads/{timezone.now():%Y/%m}/{secrets.token_urlsafe(18)}.{extension}"
