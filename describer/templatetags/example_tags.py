"""{% promote_form conversion as form %}: the staff form that saves a result as an example."""

from __future__ import annotations

from django import template

from describer import examples
from describer.forms import PromoteForm

register = template.Library()


@register.simple_tag(takes_context=True)
def promote_form(context, conversion) -> PromoteForm:
    """The form the view sent back with errors, or a fresh one holding the result as it is."""
    form = context.get("promote_form")
    return form if form is not None else PromoteForm(initial=examples.promotion_initial(conversion))
