"""Signal receivers of the describer app, connected in DescriberConfig.ready().

Files are removed in post_delete, not in Model.delete(): the admin's bulk delete
(QuerySet.delete()) and the cascade from a deleted user never call Model.delete().
"""

from __future__ import annotations

from django.core.files.storage import Storage
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from describer.models import Conversion


def _delete_stored(files: list[tuple[Storage, str]]) -> None:
    # Storage.delete of a name that is already gone does nothing, so services.conversion_delete
    # calling Conversion.delete_files() on the same commit is harmless.
    for storage, name in files:
        storage.delete(name)


@receiver(post_delete, sender=Conversion, dispatch_uid="describer.delete_conversion_files")
def delete_conversion_files(sender, instance: Conversion, **kwargs) -> None:
    """The upload and its thumbnail go with their row, however it is deleted, once the
    deletion is committed (a rolled-back delete keeps them)."""
    files = [(field.storage, field.name) for field in (instance.input_image, instance.input_thumbnail) if field]
    if files:
        transaction.on_commit(lambda: _delete_stored(files))
