"""Template helpers of the curated examples: {% promote_form conversion as form %} (the staff
form that saves a result as an example), {{ example|thumbnail_src }} and
{% curated_examples_exist as any %}. Also used in fragments that the WebSocket consumer
renders without a request."""

from __future__ import annotations

import base64

from django import template

from describer import examples
from describer.forms import PromoteForm
from describer.models import Example

register = template.Library()


@register.simple_tag(takes_context=True)
def promote_form(context, conversion) -> PromoteForm:
    """The form the view sent back with errors, or a fresh one holding the result as it is."""
    form = context.get("promote_form")
    return form if form is not None else PromoteForm(initial=examples.promotion_initial(conversion))


@register.filter
def thumbnail_src(example: Example) -> str:
    """The example's small thumbnail as a data: address ("" when there is none). Inline: a page
    shows at most RETRIEVAL_K of them, a few kilobytes each, and the fragments that carry them
    also arrive over the WebSocket."""
    thumbnail = examples.example_thumbnail(example)
    if thumbnail is None:
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail).decode("ascii")


@register.simple_tag
def curated_examples_exist() -> bool:
    return Example.objects.exists()
