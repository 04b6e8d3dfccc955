"""Data of diagramsite: conversions (the user's jobs and their history) and
curated retrieval examples.

PostgreSQL is the job queue: a queued Conversion row *is* the job; the channel
message to the worker is only a wake-up (see describer/jobs.py).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _
from pgvector.django import CosineDistance, HnswIndex, VectorField

from describer.storage import random_upload_path

EMBEDDING_DIMENSIONS = 512


def stale_cutoff():
    """Heartbeats older than this belong to a worker that is gone."""
    return timezone.now() - timedelta(seconds=settings.DESCRIBER_STALE_AFTER_S)


class ConversionQuerySet(models.QuerySet):
    def owned_by(self, user) -> ConversionQuerySet:
        return self.filter(owner=user)

    def search(self, text: str) -> ConversionQuerySet:
        text = text.strip()
        if not text:
            return self
        return self.filter(
            Q(title__icontains=text)
            | Q(input_text__icontains=text)
            | Q(output_text__icontains=text)
            | Q(output_mermaid__icontains=text)
            | Q(original_filename__icontains=text)
        )

    def history_version(self) -> str:
        """A summary that changes whenever a conversion is added, deleted or changes status."""
        summary = self.aggregate(
            count=models.Count("id"),
            latest=models.Max("created_at"),
            **{status: models.Count("id", filter=Q(status=status)) for status in Conversion.Status.values},
        )
        return hashlib.sha256(repr(sorted(summary.items())).encode()).hexdigest()[:16]

    def queued(self) -> ConversionQuerySet:
        return self.filter(status=Conversion.Status.QUEUED)

    def stale_running(self) -> ConversionQuerySet:
        return self.filter(status=Conversion.Status.RUNNING, heartbeat_at__lt=stale_cutoff())

    def held_by(self, worker_name: str) -> ConversionQuerySet:
        return self.filter(status=Conversion.Status.RUNNING, worker=worker_name)

    def typical_run_seconds(self, kind: str, recent: int = 20) -> float | None:
        """Median seconds from start to finish of the last `recent` jobs of this kind done."""
        spans = [
            (finished - started).total_seconds()
            for started, finished in self.filter(kind=kind, status=Conversion.Status.DONE, started_at__isnull=False)
            .order_by("-finished_at")
            .values_list("started_at", "finished_at")[:recent]
            if finished and finished >= started
        ]
        if not spans:
            return None
        spans.sort()
        return spans[len(spans) // 2]


class Conversion(models.Model):
    """One job of either kind, and afterwards its entry in the user's history."""

    class Kind(models.TextChoices):
        DIAGRAM_TO_TEXT = "diagram_to_text", _("Diagram → text")
        TEXT_TO_DIAGRAM = "text_to_diagram", _("Text → diagram")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    class Stage(models.TextChoices):
        QUEUED = "queued", _("Waiting in the queue")
        PREPROCESSING = "preprocessing", _("Preprocessing the image")
        RETRIEVAL = "retrieval", _("Finding similar examples")
        GENERATION = "generation", _("Writing")
        POSTPROCESSING = "postprocessing", _("Structuring the result")
        FINISHED = "finished", _("Finished")

    class Language(models.TextChoices):
        AUTO = "", _("Same as the diagram")
        ENGLISH = "en", _("English")
        RUSSIAN = "ru", _("Russian")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False, verbose_name=_("ID"))
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversions", verbose_name=_("owner")
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, verbose_name=_("kind"))
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True, verbose_name=_("status")
    )
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.QUEUED, verbose_name=_("stage"))
    title = models.CharField(max_length=200, blank=True, verbose_name=_("title"))
    # The interface language the job was made in: the worker writes its messages in it.
    interface_language = models.CharField(max_length=10, blank=True, verbose_name=_("interface language"))
    language = models.CharField(max_length=5, choices=Language.choices, blank=True, verbose_name=_("language"))

    input_image = models.ImageField(upload_to=random_upload_path, blank=True, verbose_name=_("uploaded image"))
    input_thumbnail = models.ImageField(upload_to=random_upload_path, blank=True, verbose_name=_("thumbnail"))
    original_filename = models.CharField(max_length=255, blank=True, verbose_name=_("original file name"))
    image_width = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("image width"))
    image_height = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("image height"))
    input_text = models.TextField(blank=True, verbose_name=_("input text"))

    output_raw = models.TextField(
        blank=True, help_text="The model's text as it streamed.", verbose_name=_("raw model output")
    )
    output_text = models.TextField(
        blank=True, help_text="The structured description (Markdown).", verbose_name=_("description")
    )
    output_structure = models.JSONField(null=True, blank=True, verbose_name=_("structured description"))
    # The process graph behind the text and the drawing (describer/graph/model.py, as JSON).
    output_graph = models.JSONField(null=True, blank=True, verbose_name=_("process graph"))
    # What the graph could not take: not_understood (lines), problems, unsupported ([line, reason]).
    graph_notes = models.JSONField(default=dict, blank=True, verbose_name=_("graph notes"))
    output_mermaid = models.TextField(
        blank=True, help_text="The current Mermaid code (latest version).", verbose_name=_("Mermaid code")
    )
    error_message = models.TextField(blank=True, verbose_name=_("error message"))
    # Text → diagram: a queued repair sends the latest code and this parser message back to the model.
    repair_error = models.TextField(blank=True, verbose_name=_("error to repair"))
    repair_attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("repair attempts"))

    # Round trip: a text→diagram conversion drawn from a diagram→text result.
    source = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derived", verbose_name=_("drawn from")
    )

    created_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("created"))
    # When its current run was asked for: the creation, or the owner's latest retry or repair. The
    # queue wait of a run counts from here (a repair's from the repair, not from the first drawing).
    queued_at = models.DateTimeField(default=timezone.now, verbose_name=_("queued"))
    # Claimed: a worker holds the job (it may wait in a batch); started: it runs on the model.
    claimed_at = models.DateTimeField(null=True, blank=True, verbose_name=_("claimed"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished"))
    heartbeat_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last heartbeat"))
    attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("attempts"))
    worker = models.CharField(max_length=100, blank=True, verbose_name=_("worker"))
    tokens_generated = models.PositiveIntegerField(default=0, verbose_name=_("tokens generated"))
    # The answer stopped at DESCRIBER_MAX_NEW_TOKENS instead of ending: the result holds what
    # was complete by then.
    cut_off = models.BooleanField(default=False, verbose_name=_("cut off at the length limit"))
    # Seconds: queue_wait, preprocessing, retrieval, first_token, generation; tokens_per_s; ocr.
    timings = models.JSONField(default=dict, blank=True, verbose_name=_("timings"))
    # The diagram's own text read by OCR (describer.ocr.Reading.as_json()), and how the
    # description covers it (describer.grounding.Coverage.as_json()); coverage is its score.
    ocr_reading = models.JSONField(null=True, blank=True, verbose_name=_("text read in the image"))
    grounding = models.JSONField(null=True, blank=True, verbose_name=_("grounding"))
    coverage = models.FloatField(null=True, blank=True, db_index=True, verbose_name=_("coverage"))
    # What wrote the result: the base model, and the fine-tuned adapter on it (if any). The name
    # stays when the adapter's row is deleted.
    model_name = models.CharField(max_length=300, blank=True, verbose_name=_("model"))
    adapter = models.ForeignKey(
        "Adapter", null=True, blank=True, on_delete=models.SET_NULL, related_name="conversions", verbose_name=_("adapter")
    )
    adapter_name = models.CharField(max_length=200, blank=True, verbose_name=_("adapter"))

    objects = ConversionQuerySet.as_manager()

    class Meta:
        verbose_name = _("conversion")
        verbose_name_plural = _("conversions")
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return self.title or self.original_filename or str(self.id)

    FINAL_STATUSES = (Status.DONE, Status.FAILED, Status.CANCELLED)

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINAL_STATUSES

    @property
    def can_cancel(self) -> bool:
        return self.status in (self.Status.QUEUED, self.Status.RUNNING)

    @property
    def attempt_number(self) -> int:
        """The attempt running now, or the one that comes next while it waits."""
        running_on_model = self.status == self.Status.RUNNING and self.started_at is not None
        return self.attempts if running_on_model else self.attempts + 1

    @property
    def max_attempts(self) -> int:
        return settings.DESCRIBER_MAX_ATTEMPTS

    def queue_wait_s(self) -> float | None:
        """Seconds the current run waited before a worker claimed it."""
        if self.claimed_at is None:
            return None
        return round(max((self.claimed_at - self.queued_at).total_seconds(), 0.0), 3)

    def current_mermaid_version(self) -> MermaidVersion | None:
        """The newest version (its code is output_mermaid); uses prefetched versions when there are."""
        if "mermaid_versions" in getattr(self, "_prefetched_objects_cache", {}):
            return max(self.mermaid_versions.all(), key=lambda version: version.number, default=None)
        return self.mermaid_versions.first()

    @property
    def is_restarted(self) -> bool:
        """Waiting or running again after a worker died while it ran."""
        return not self.is_finished and self.attempt_number >= 2

    def get_absolute_url(self) -> str:
        return reverse("detail", args=[self.id])

    def download_stem(self) -> str:
        """A safe file name for downloads (ASCII letters, digits, dashes)."""
        stem = slugify(self.title)[:60] or "conversion"
        return f"{stem}-{str(self.id)[:8]}"

    def delete_files(self) -> None:
        for field in (self.input_image, self.input_thumbnail):
            if field:
                field.delete(save=False)

    def queue_position(self) -> int | None:
        """1 for the next job to run; None once it is no longer waiting."""
        if self.status != self.Status.QUEUED:
            return None
        ahead = Conversion.objects.queued().filter(created_at__lt=self.created_at).count()
        return ahead + 1

    def queue_estimate(self) -> QueueEstimate:
        """Where the job stands while it waits: workers online, position, estimated wait
        (computed once per loaded object: a page asks for it several times)."""
        if getattr(self, "_queue_estimate", None) is None:
            self._queue_estimate = self._estimate_queue()
        return self._queue_estimate

    def _estimate_queue(self) -> QueueEstimate:
        workers = list(Worker.objects.online())
        position = self.queue_position()
        if not workers or position is None:
            return QueueEstimate(workers=len(workers), position=position, wait_s=None)
        typical = Conversion.objects.typical_run_seconds(self.kind)
        if typical is None:
            return QueueEstimate(workers=len(workers), position=position, wait_s=None)
        capacity = sum(max(worker.batch_size, 1) for worker in workers)
        # Jobs ahead run in rounds of `capacity`; this one ends its own round.
        rounds = -(-position // capacity)
        return QueueEstimate(workers=len(workers), position=position, wait_s=round(rounds * typical))


@dataclass(frozen=True)
class QueueEstimate:
    workers: int  # online now
    position: int | None
    wait_s: int | None  # None: no worker online, or no finished job to judge by yet


class WorkerQuerySet(models.QuerySet):
    def online(self) -> WorkerQuerySet:
        return self.filter(last_seen_at__gte=stale_cutoff())


class Worker(models.Model):
    """A running worker process, as it last reported itself (its heartbeat)."""

    name = models.CharField(max_length=100, unique=True, verbose_name=_("name"))
    host = models.CharField(max_length=100, verbose_name=_("host"))
    pid = models.PositiveIntegerField(verbose_name=_("process id"))
    model_name = models.CharField(max_length=300, blank=True, verbose_name=_("model"))
    device = models.CharField(max_length=50, blank=True, verbose_name=_("device"))
    batch_size = models.PositiveSmallIntegerField(default=1, verbose_name=_("batch size"))
    jobs_in_hand = models.PositiveSmallIntegerField(default=0, verbose_name=_("jobs in hand"))
    started_at = models.DateTimeField(default=timezone.now, verbose_name=_("started"))
    last_seen_at = models.DateTimeField(default=timezone.now, db_index=True, verbose_name=_("last seen"))

    objects = WorkerQuerySet.as_manager()

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_online(self) -> bool:
        return self.last_seen_at >= stale_cutoff()


class Adapter(models.Model):
    """A LoRA adapter written by `manage.py finetune` (describer/adapters.py). At most one is
    active: the workers serve the base model with it, and pick a change up between jobs."""

    name = models.CharField(max_length=100, verbose_name=_("name"))
    path = models.CharField(max_length=500, unique=True, verbose_name=_("folder"))
    base_model = models.CharField(max_length=300, verbose_name=_("base model"))
    weights_sha256 = models.CharField(max_length=64, verbose_name=_("weights SHA-256"))
    report = models.JSONField(default=dict, blank=True, verbose_name=_("training report"))
    node_f1 = models.FloatField(null=True, blank=True, verbose_name=_("validation node F1"))
    edge_f1 = models.FloatField(null=True, blank=True, verbose_name=_("validation edge F1"))
    is_active = models.BooleanField(default=False, verbose_name=_("active"))
    # Why the last worker that tried could not serve it (cleared when one does).
    problem = models.TextField(blank=True, verbose_name=_("problem"))
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created"))

    class Meta:
        verbose_name = _("adapter")
        verbose_name_plural = _("adapters")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=models.Q(is_active=True), name="one_active_adapter")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.weights_sha256[:12]})"

    @classmethod
    def register(cls, info) -> Adapter:
        """The row of a checked adapter (describer.adapters.AdapterInfo), made or brought up to date."""
        validation = info.report.get("best", {}).get("validation", {})
        adapter, _ = cls.objects.update_or_create(
            path=str(info.path),
            defaults={
                "name": info.name, "base_model": str(info.report.get("base_model", ""))[:300],
                "weights_sha256": info.weights_sha256, "report": info.report,
                "node_f1": validation.get("node_f1"), "edge_f1": validation.get("edge_f1"), "problem": "",
            },
        )  # fmt: skip
        return adapter

    def activate(self) -> None:
        """Serve this adapter from the next job on; raises describer.adapters.AdapterProblem (and
        changes nothing) for one that fails its checks."""
        from describer import adapters

        adapters.check(self.path)
        with transaction.atomic():
            Adapter.objects.filter(is_active=True).exclude(pk=self.pk).update(is_active=False)
            Adapter.objects.filter(pk=self.pk).update(is_active=True, problem="")
        self.is_active = True

    @classmethod
    def serve_base_model(cls) -> None:
        cls.objects.filter(is_active=True).update(is_active=False)


class ExampleQuerySet(models.QuerySet):
    def embedded(self) -> ExampleQuerySet:
        return self.filter(embedding__isnull=False)

    def needs_embedding(self, model_name: str) -> ExampleQuerySet:
        """Pending (no embedding, no error), or embedded by another CLIP model: its vectors
        live in another space, so distances to the current model's would mean nothing."""
        pending = Q(embedding__isnull=True, embedding_error="")
        stale = Q(embedding__isnull=False) & ~Q(embedding_model=model_name)
        return self.filter(pending | stale)

    def nearest(self, embedding, *, k: int, max_distance: float | None = None) -> ExampleQuerySet:
        """The k examples closest to `embedding` by cosine distance (HNSW index)."""
        queryset = self.embedded().annotate(distance=CosineDistance("embedding", embedding)).order_by("distance")
        if max_distance is not None:
            queryset = queryset.filter(distance__lte=max_distance)
        return queryset[:k]


class Example(models.Model):
    """A curated diagram with its reference description, used as retrieval context."""

    class DiagramType(models.TextChoices):
        FLOWCHART = "flowchart", _("Flowchart")
        BPMN = "bpmn", _("BPMN process")
        OTHER = "other", _("Other")

    class Language(models.TextChoices):
        ENGLISH = "en", _("English")
        RUSSIAN = "ru", _("Russian")
        OTHER = "other", _("Other")

    name = models.SlugField(
        max_length=200,
        unique=True,
        null=True,
        blank=True,
        help_text=_("Import/export file name."),
        verbose_name=_("name"),
    )
    image = models.ImageField(upload_to="examples/", verbose_name=_("image"))
    # A small JPEG of the image for lists (describer/examples.py makes it): the images themselves
    # are often 2,400 pixels wide.
    thumbnail = models.ImageField(
        upload_to="examples/thumbnails/", blank=True, editable=False, verbose_name=_("thumbnail")
    )
    image_sha256 = models.CharField(max_length=64, blank=True, verbose_name=_("image SHA-256"))
    description = models.TextField(verbose_name=_("description"))
    mermaid = models.TextField(blank=True, verbose_name=_("Mermaid code"))
    diagram_type = models.CharField(
        max_length=20, choices=DiagramType.choices, default=DiagramType.FLOWCHART, verbose_name=_("diagram type")
    )
    language = models.CharField(
        max_length=10, choices=Language.choices, default=Language.ENGLISH, verbose_name=_("language")
    )
    embedding = VectorField(
        dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True, editable=False, verbose_name=_("embedding")
    )
    embedding_model = models.CharField(max_length=200, blank=True, editable=False, verbose_name=_("embedding model"))
    # Examples are embedded by the worker (the web process never loads CLIP); a failure is kept here.
    embedding_error = models.TextField(blank=True, editable=False, verbose_name=_("embedding error"))
    source_conversion = models.ForeignKey(
        Conversion,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="promoted_examples",
        verbose_name=_("promoted from"),
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated"))

    objects = ExampleQuerySet.as_manager()

    class Meta:
        verbose_name = _("example")
        verbose_name_plural = _("examples")
        ordering = ["name", "id"]
        indexes = [
            HnswIndex(
                name="example_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            )
        ]

    def __str__(self) -> str:
        return self.name or self.description[:60]


@receiver(post_delete, sender=Example)
def delete_example_image(sender, instance: Example, **kwargs) -> None:
    """The image and its thumbnail go with their row, however it is deleted (admin bulk delete
    included), once the deletion is committed."""
    for field in (instance.image, instance.thumbnail):
        if field:
            storage, name = field.storage, field.name
            transaction.on_commit(lambda storage=storage, name=name: storage.delete(name))


class ConversionExample(models.Model):
    """Which examples a conversion's prompt used, and how similar they were."""

    conversion = models.ForeignKey(
        Conversion, on_delete=models.CASCADE, related_name="examples_used", verbose_name=_("conversion")
    )
    example = models.ForeignKey(
        Example, null=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("example")
    )
    similarity = models.FloatField(verbose_name=_("similarity"))
    rank = models.PositiveSmallIntegerField(verbose_name=_("rank"))

    class Meta:
        verbose_name = _("example used")
        verbose_name_plural = _("examples used")
        ordering = ["rank"]


class MermaidVersion(models.Model):
    """One saved state of a text → diagram conversion's Mermaid code.

    Whether the code parses is known only when a real Mermaid parser has said so: the server runs
    none, so `parses` is None ("not checked yet") until the site's editor in a browser, or an API
    client, reports it; `parse_checked_by` says which did."""

    class ParseChecker(models.TextChoices):
        BROWSER = "browser", _("Mermaid's parser in the site's editor (the browser)")
        API_CLIENT = "api_client", _("The API client that saved it")

    class Origin(models.TextChoices):
        MODEL = "model", _("Written by the model")
        REPAIR = "repair", _("Repaired by the model")
        EDIT = "edit", _("Edited by you")
        RESTORE = "restore", _("Restored from an earlier version")
        GRAPH = "graph", _("Drawn from the description's graph")

    conversion = models.ForeignKey(
        Conversion, on_delete=models.CASCADE, related_name="mermaid_versions", verbose_name=_("conversion")
    )
    number = models.PositiveIntegerField(verbose_name=_("number"))
    code = models.TextField(verbose_name=_("code"))
    origin = models.CharField(max_length=10, choices=Origin.choices, verbose_name=_("origin"))
    parse_error = models.TextField(
        blank=True, help_text="The parser's message when this code did not parse.", verbose_name=_("parse error")
    )
    parses = models.BooleanField(null=True, blank=True, verbose_name=_("parses"))
    parse_checked_by = models.CharField(
        max_length=20, choices=ParseChecker.choices, blank=True, verbose_name=_("parse checked by")
    )
    created_at = models.DateTimeField(default=timezone.now, verbose_name=_("created"))

    class Meta:
        verbose_name = _("Mermaid version")
        verbose_name_plural = _("Mermaid versions")
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["conversion", "number"], name="unique_mermaid_version")]

    def __str__(self) -> str:
        return f"{self.conversion_id} v{self.number}"


class ApiToken(models.Model):
    """A personal API token. Only its SHA-256 is stored; the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("user")
    )
    name = models.CharField(max_length=100, verbose_name=_("name"))
    prefix = models.CharField(
        max_length=16, help_text="The token's first characters, to recognise it.", verbose_name=_("prefix")
    )
    token_hash = models.CharField(max_length=64, unique=True, verbose_name=_("token hash"))
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created"))
    last_used_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last used"))
    # None: it never expires (the tokens made before expiry existed, or "never" chosen).
    expires_at = models.DateTimeField(null=True, blank=True, verbose_name=_("expires"))

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()
