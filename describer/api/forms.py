from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        label=_("Token name"),
        max_length=100,
        help_text=_("Say where the token is used, e.g. “CI pipeline” or “my laptop”."),
        error_messages={"required": _("Give the token a name, so you can tell it apart later.")},
    )
