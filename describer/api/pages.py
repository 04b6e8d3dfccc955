"""The settings page: the user's personal API tokens, created and revoked here.

A new token is shown once, in the response to its creation; only its hash is kept.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from describer.api.forms import ApiTokenForm
from describer.api.tokens import api_token_create, api_token_revoke
from describer.models import ApiToken


def _render(request: HttpRequest, form: ApiTokenForm, *, new_token: str = "", status: int = 200) -> HttpResponse:
    context = {"form": form, "tokens": ApiToken.objects.filter(user=request.user), "new_token": new_token}
    template = "describer/_api_tokens.html" if request.htmx else "describer/settings.html"
    return render(request, template, context, status=status)


def settings_page(request: HttpRequest) -> HttpResponse:
    return _render(request, ApiTokenForm())


@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    form = ApiTokenForm(request.POST)
    if not form.is_valid():
        return _render(request, form, status=400)
    _token, raw = api_token_create(
        user=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["expires_in"]
    )
    # Rendered, not redirected: the token exists in clear only in this response.
    return _render(request, ApiTokenForm(), new_token=raw)


@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    api_token_revoke(token)
    if request.htmx:
        return HttpResponse("")  # the row swaps itself out
    messages.success(request, _("The token “%(name)s” was revoked; requests with it are refused from now on.")
                     % {"name": token.name})
    return redirect("settings")
