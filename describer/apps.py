from django.apps import AppConfig


class DescriberConfig(AppConfig):
    name = "describer"
    verbose_name = "Describer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from describer import signals  # noqa: F401 - connects the receivers
