"""Template helpers of the text → diagram pages. Also used in fragments that the
WebSocket consumer renders without a request, so they read settings themselves."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.filter
def repairs_left(conversion) -> int:
    return max(settings.DESCRIBER_MAX_REPAIRS - conversion.repair_attempts, 0)


@register.simple_tag
def max_repairs() -> int:
    return settings.DESCRIBER_MAX_REPAIRS
