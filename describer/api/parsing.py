"""How the API reads JSON bodies: only as application/json, and only text that is
Unicode. JSON may write a lone UTF-16 surrogate (`"\\ud800"`) that Python keeps
in a str but no UTF-8 database or response can hold; it is refused here, before
any view or form sees it.

Errors are raised as ApiProblem; ninja wraps whatever the parser raises in an
HttpError(400), and problems.py unwraps ours again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext as _
from ninja.parser import Parser

from describer.api.problems import ApiProblem

JSON_MEDIA_TYPE = "application/json"
# After json.loads every surrogate left in a str is a lone one: pairs become one character.
SURROGATE = re.compile("[\ud800-\udfff]")


def fields_with_surrogates(value: Any, path: str = "") -> Iterator[str]:
    """The names ("text", "items.2") of the strings in parsed JSON that hold a lone surrogate."""
    if isinstance(value, str):
        if SURROGATE.search(value):
            yield path or "body"
    elif isinstance(value, dict):
        for key, item in value.items():
            if SURROGATE.search(key):
                yield path or "body"  # not the key itself: it cannot be written out either
            else:
                yield from fields_with_surrogates(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from fields_with_surrogates(item, f"{path}.{index}" if path else str(index))


def unsupported_media_type(request: HttpRequest) -> ApiProblem:
    return ApiProblem(415, _("This endpoint takes a JSON body: send it with the header "
                             "Content-Type: application/json (this request's was “%(type)s”).")
                      % {"type": request.META.get("CONTENT_TYPE", "")})


def lone_surrogate(field: str) -> ApiProblem:
    message = _("The text holds a lone UTF-16 surrogate (an escape such as \\ud800 without its pair), "
                "which is not a character. Send valid Unicode: encode the text as UTF-8, or escape "
                "characters outside the BMP as a surrogate pair.")
    return ApiProblem(400, f"{field}: {message}", errors={field: [message]})


class JsonBodyParser(Parser):
    def parse_body(self, request: HttpRequest) -> Any:
        if request.content_type != JSON_MEDIA_TYPE:
            raise unsupported_media_type(request)
        data = json.loads(request.body)
        field = next(fields_with_surrogates(data), None)
        if field is not None:
            raise lone_surrogate(field)
        return data
