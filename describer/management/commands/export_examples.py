"""`python manage.py export_examples DIR`: write the retrieval examples in the import layout
(NAME.png|jpg, NAME.txt, NAME.mmd with a `%% type: …, lang: …` line), so that
`import_examples DIR` on another installation recreates them."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from describer import examples
from describer.models import Example


class Command(BaseCommand):
    help = "Export retrieval examples to DIR in the layout import_examples reads."

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", type=Path)
        parser.add_argument("--name", action="append", default=[], help="only this example (repeatable)")
        parser.add_argument("--type", dest="diagram_type", choices=Example.DiagramType.values, help="only this type")
        parser.add_argument("--language", choices=Example.Language.values, help="only this language")

    def handle(self, *args, folder: Path, name: list[str], diagram_type: str | None, language: str | None, **opts):
        queryset = Example.objects.all()
        if name:
            queryset = queryset.filter(name__in=name)
        if diagram_type:
            queryset = queryset.filter(diagram_type=diagram_type)
        if language:
            queryset = queryset.filter(language=language)
        written, problems = examples.export_to_folder(queryset, folder)
        self.stdout.write(_("Exported %(count)s examples to %(folder)s.") % {"count": written, "folder": folder})
        for stem, reason in problems:
            self.stdout.write(self.style.WARNING("  " + _("not exported %(name)s: %(reason)s") % {"name": stem, "reason": reason}))
