"""`python manage.py retrieval_report`: how well retrieval finds related examples.

Each embedded example is used as a query against all the others (leave-one-out): its k
nearest neighbours by cosine distance, and whether they share its diagram type and language.
The summary compares the share of same-type and same-language neighbours with chance (the
share among all other examples). With the tiny random CLIP the figures mean nothing; with
real CLIP weights they show whether the examples a diagram gets as context are related to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from describer import examples
from describer.models import Example


@dataclass
class Tally:
    queries: int = 0
    top1_type: int = 0
    top1_language: int = 0
    neighbours: int = 0
    same_type: int = 0
    same_language: int = 0
    top1_distances: list[float] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    chance_type: list[float] = field(default_factory=list)
    chance_language: list[float] = field(default_factory=list)


class Command(BaseCommand):
    help = "Leave-one-out retrieval check: each example's nearest neighbours and a summary."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--k", type=int, default=None, help="neighbours per example (default: RETRIEVAL_K)")
        parser.add_argument(
            "--embed", action="store_true", help="load CLIP in this process and embed pending examples first"
        )
        parser.add_argument("--summary-only", action="store_true", help="print only the summary")

    def handle(self, *args, k: int | None, embed: bool, summary_only: bool, **options) -> None:
        k = k or settings.RETRIEVAL_K
        if embed:
            self.embed_pending()
        embedded = list(Example.objects.embedded().order_by("name", "id"))
        missing = Example.objects.filter(embedding__isnull=True).count()
        if missing:
            message = _("%(count)s examples have no embedding (pending or failed): use --embed or start the worker.")
            self.stdout.write(message % {"count": missing})
        if len(embedded) < 2:
            message = _("At least two embedded examples are needed; %(count)s found.")
            raise CommandError(message % {"count": len(embedded)})
        tally = Tally()
        for query in embedded:
            self.report_query(query, embedded, k, tally, quiet=summary_only)
        self.summary(tally, k, embedded)

    def embed_pending(self) -> None:
        from describer.inference.embedder import ClipEmbedder
        from describer.inference.errors import InferenceError

        try:
            embedder = ClipEmbedder.from_settings()
        except InferenceError as error:
            raise CommandError(str(error)) from error
        result = examples.embed_pending_examples(embedder, limit=None)
        self.stdout.write(_("Embedded %(count)s examples first.") % {"count": result.embedded})

    def report_query(self, query: Example, embedded: list[Example], k: int, tally: Tally, *, quiet: bool) -> None:
        neighbours = list(Example.objects.exclude(pk=query.pk).defer("embedding").nearest(query.embedding, k=k))
        others = [example for example in embedded if example.pk != query.pk]
        tally.queries += 1
        tally.chance_type.append(mean(other.diagram_type == query.diagram_type for other in others))
        tally.chance_language.append(mean(other.language == query.language for other in others))
        if not quiet:
            self.stdout.write(f"{query} [{query.diagram_type}, {query.language}]")
        for rank, neighbour in enumerate(neighbours, 1):
            same_type = neighbour.diagram_type == query.diagram_type
            same_language = neighbour.language == query.language
            if rank == 1:
                tally.top1_type += same_type
                tally.top1_language += same_language
                tally.top1_distances.append(neighbour.distance)
            tally.neighbours += 1
            tally.same_type += same_type
            tally.same_language += same_language
            tally.distances.append(neighbour.distance)
            if not quiet:
                marks = f"type {'=' if same_type else '≠'}  language {'=' if same_language else '≠'}"
                self.stdout.write(f"  {rank}. {neighbour}  distance {neighbour.distance:.4g}  {marks}")

    def summary(self, tally: Tally, k: int, embedded: list[Example]) -> None:
        def share(count: int, total: int) -> str:
            return f"{count}/{total} ({100 * count / max(total, 1):.0f}%)"

        cut_off = settings.RETRIEVAL_MAX_DISTANCE
        within = sum(distance <= cut_off for distance in tally.distances)
        lines = [
            _("Summary: %(n)s examples as queries, k=%(k)s, leave-one-out.") % {"n": tally.queries, "k": k},
            _("top-1 same type: %(type)s, same language: %(language)s") % {
                "type": share(tally.top1_type, tally.queries),
                "language": share(tally.top1_language, tally.queries),
            },
            _("top-%(k)s same type: %(type)s, same language: %(language)s") % {
                "k": k,
                "type": share(tally.same_type, tally.neighbours),
                "language": share(tally.same_language, tally.neighbours),
            },
            _("chance (share among the other examples): same type %(type).0f%%, same language %(language).0f%%") % {
                "type": 100 * mean(tally.chance_type),
                "language": 100 * mean(tally.chance_language),
            },
            _(
                "mean cosine distance: top-1 %(top1).4g, all %(all).4g; "
                "within RETRIEVAL_MAX_DISTANCE (%(cut).2f): %(within)s"
            )
            % {
                "top1": mean(tally.top1_distances),
                "all": mean(tally.distances),
                "cut": cut_off,
                "within": share(within, len(tally.distances)),
            },
        ]
        self.stdout.write("\n" + "\n".join(lines))
        self.model_notes(embedded)

    def model_notes(self, embedded: list[Example]) -> None:
        models = sorted({example.embedding_model or _("(unknown)") for example in embedded})
        self.stdout.write(_("Embeddings from: %(models)s") % {"models": ", ".join(models)})
        if len(models) > 1:
            self.stdout.write(self.style.WARNING(_("Several models: distances between them mean nothing; re-embed.")))
        if examples.TINY_CLIP_NAME in models:
            self.stdout.write(
                self.style.WARNING(_("These embeddings come from the tiny random test CLIP: the figures mean nothing."))
            )
