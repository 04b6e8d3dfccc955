"""`python manage.py import_examples DIR`: load curated retrieval examples from a folder.

Idempotent: a second run adds nothing, updates examples whose image or texts changed and
skips the rest, so the Docker entrypoint runs it on every start of the web. CLIP is not
loaded here: new and changed images are left pending for the worker, unless --embed asks
this process to load CLIP and embed them now.
"""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from describer import examples
from describer.models import Example
from describer.management.progress import TextProgress


class Command(BaseCommand):
    help = "Import retrieval examples from DIR (NAME.png|jpg + NAME.txt [+ NAME.mmd]); idempotent."

    def add_arguments(self, parser) -> None:
        parser.add_argument("folder", type=Path, help="folder laid out as NAME.png|jpg, NAME.txt, NAME.mmd")
        parser.add_argument(
            "--embed", action="store_true", help="load CLIP in this process and embed pending examples now"
        )
        parser.add_argument(
            "--new-only", action="store_true", help="only add missing examples; leave existing ones as they are"
        )
        parser.add_argument(
            "--if-empty",
            action="store_true",
            help="do nothing unless there are no examples yet (a fresh installation's first start)",
        )

    def handle(
        self, *args, folder: Path, embed: bool, new_only: bool, if_empty: bool, verbosity: int, **options
    ) -> None:
        if not folder.is_dir():
            raise CommandError(_("%(folder)s is not a folder.") % {"folder": folder})
        if if_empty and Example.objects.exists():
            # Curation wins: once admins have examples, starting up never reverts or re-adds any.
            self.stdout.write(_("Examples exist already; %(folder)s was not imported.") % {"folder": folder})
            return
        progress = TextProgress(self.stderr, _("Importing")) if verbosity > 0 else None
        report = examples.import_folder(folder, update=not new_only, progress=progress)
        self.stdout.write(_("Imported %(folder)s: %(summary)s.") % {"folder": folder, "summary": report.summary()})
        for name, reason in report.refused:
            self.stdout.write(self.style.WARNING("  " + _("refused %(name)s: %(reason)s") % {"name": name, "reason": reason}))
        for name, note in report.notes:
            self.stdout.write("  " + _("note %(name)s: %(note)s") % {"name": name, "note": note})
        if verbosity > 1:
            labels = {"added": _("added %(name)s"), "updated": _("updated %(name)s"), "unchanged": _("unchanged %(name)s")}
            for outcome, label in labels.items():
                for name in getattr(report, outcome):
                    self.stdout.write("  " + label % {"name": name})
        if embed:
            self.embed(verbosity)

    def embed(self, verbosity: int) -> None:
        # Only here does this command import torch (through the inference package).
        from describer.inference.embedder import ClipEmbedder
        from describer.inference.errors import InferenceError

        try:
            embedder = ClipEmbedder.from_settings()
        except InferenceError as error:
            raise CommandError(str(error)) from error
        result = examples.embed_pending_examples(embedder, limit=None)
        self.stdout.write(
            _("Embedded %(embedded)s examples, %(failed)s failed (see their embedding error in the admin).")
            % {"embedded": result.embedded, "failed": result.failed}
        )
