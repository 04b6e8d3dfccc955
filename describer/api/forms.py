from __future__ import annotations

from django import forms
from django.conf import settings
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

# Days a token may be valid, as offered on the settings page; 0: it never expires.
EXPIRY_DAYS = (30, 90, 365, 0)


def _days_label(days: int) -> str:
    if days == 0:
        return gettext("Never")
    return ngettext("After %(days)s day", "After %(days)s days", days) % {"days": days}


def expiry_choices() -> list[tuple[int, str]]:
    """The usual choices, and API_TOKEN_DEFAULT_DAYS among them whatever it is set to (labels in
    the request's language: called per form)."""
    days = sorted({*EXPIRY_DAYS, max(settings.API_TOKEN_DEFAULT_DAYS, 0)}, key=lambda d: d or float("inf"))
    return [(day, _days_label(day)) for day in days]


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label=_("Token name"),
        max_length=100,
        help_text=_("Say where the token is used, e.g. “CI pipeline” or “my laptop”."),
        error_messages={"required": _("Give the token a name, so you can tell it apart later.")},
    )
    expires_in = forms.TypedChoiceField(
        label=_("Expires"),
        coerce=int,
        required=False,  # left out: API_TOKEN_DEFAULT_DAYS
        empty_value=None,
        help_text=_("Requests with an expired token are refused; then create a new one."),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["expires_in"].choices = expiry_choices()
        self.fields["expires_in"].initial = max(settings.API_TOKEN_DEFAULT_DAYS, 0)
