"""A deleted conversion takes its uploaded image and thumbnail with it on every path:
the admin's bulk and single delete, a deleted user (the cascade), and the site's own
delete (which also removes them itself: twice must be harmless). Files stay while the
deletion is not committed."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import transaction
from django.urls import reverse

from describer import services
from describer.models import Conversion

pytestmark = pytest.mark.django_db


def stored_files(conversion: Conversion) -> list[str]:
    return [field.path for field in (conversion.input_image, conversion.input_thumbnail)]


def exist(paths: list[str]) -> list[bool]:
    return [Path(path).exists() for path in paths]


@pytest.fixture
def admin_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_the_admins_bulk_delete_removes_the_files(admin_client, make_conversion, django_capture_on_commit_callbacks):
    doomed = [make_conversion(), make_conversion()]
    kept = make_conversion()
    paths = [path for conversion in doomed for path in stored_files(conversion)]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:describer_conversion_changelist"),
            {"action": "delete_selected", "_selected_action": [str(c.pk) for c in doomed], "post": "yes"},
        )

    assert response.status_code == 302
    assert list(Conversion.objects.all()) == [kept]
    assert exist(paths) == [False] * 4
    assert exist(stored_files(kept)) == [True, True]


def test_the_admins_delete_page_removes_the_files(admin_client, make_conversion, django_capture_on_commit_callbacks):
    conversion = make_conversion()
    paths = stored_files(conversion)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:describer_conversion_delete", args=[conversion.pk]), {"post": "yes"}
        )

    assert response.status_code == 302
    assert not Conversion.objects.exists()
    assert exist(paths) == [False, False]


def test_deleting_a_user_in_the_admin_removes_their_files(
    admin_client, user, other_user, make_conversion, django_capture_on_commit_callbacks
):
    theirs = [make_conversion(user), make_conversion(user)]
    others = make_conversion(other_user)
    paths = [path for conversion in theirs for path in stored_files(conversion)]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:auth_user_delete", args=[user.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert list(Conversion.objects.all()) == [others]
    assert exist(paths) == [False] * 4
    assert exist(stored_files(others)) == [True, True]


def test_deleting_users_in_bulk_removes_their_files(
    admin_client, user, other_user, make_conversion, django_capture_on_commit_callbacks
):
    conversions = [make_conversion(user), make_conversion(other_user)]
    paths = [path for conversion in conversions for path in stored_files(conversion)]

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:auth_user_changelist"),
            {"action": "delete_selected", "_selected_action": [str(user.pk), str(other_user.pk)], "post": "yes"},
        )

    assert not Conversion.objects.exists()
    assert exist(paths) == [False] * 4


def test_the_sites_own_delete_removes_the_files_once_without_an_error(
    make_conversion, django_capture_on_commit_callbacks
):
    conversion = make_conversion()
    paths = stored_files(conversion)

    # Both the receiver and conversion_delete's own delete_files() run on this commit.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        services.conversion_delete(conversion)

    assert len(callbacks) == 2
    assert exist(paths) == [False, False]


def test_a_rolled_back_delete_keeps_the_files(make_conversion, django_capture_on_commit_callbacks):
    conversion = make_conversion()
    paths = stored_files(conversion)

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError), transaction.atomic():
            Conversion.objects.filter(pk=conversion.pk).delete()
            raise RuntimeError("changed my mind")

    assert Conversion.objects.filter(pk=conversion.pk).exists()
    assert exist(paths) == [True, True]


def test_a_text_conversion_without_files_deletes_cleanly(make_conversion, django_capture_on_commit_callbacks):
    conversion = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        Conversion.objects.filter(pk=conversion.pk).delete()

    assert callbacks == []
    assert not Conversion.objects.exists()
