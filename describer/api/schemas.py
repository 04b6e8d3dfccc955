"""What the API reads and writes. ninja builds the OpenAPI schema from these."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.db.models import Prefetch, QuerySet
from django.urls import reverse
from ninja import Field, Schema

from describer.api.problems import NO_NUL
from describer.graph.model import ProcessGraph
from describer.mermaid import MERMAID_MAX_CHARS
from describer.models import Conversion, ConversionExample, MermaidVersion

PARSE_CHECK_DESCRIPTION = (
    "What checked whether the code parses: \"browser\" (Mermaid's own parser, the version the site vendors, "
    "in the site's editor before it saved the code), \"api_client\" (the API client that saved it reported the "
    "parser's error), or null: not checked yet. The server runs no Mermaid parser, so the model's code and its "
    "repairs stay null until the editor or a client reports on them."
)


class Problem(Schema):
    """RFC 9457 problem details, sent as application/problem+json."""

    type: str = Field(examples=["about:blank"])
    title: str = Field(examples=["Invalid input"])
    status: int = Field(examples=[422])
    detail: str = Field(description="What was wrong and what to do about it, for a person to read.")
    instance: str = Field(description="The path of the request.", examples=["/api/v1/conversions/text-to-diagram"])
    errors: dict[str, list[str]] | None = Field(
        None, description="Validation errors: messages for each field that was refused.",
        examples=[{"text": ["Write or paste a description of the process first."]}],
    )


class TextIn(Schema):
    text: str = Field(
        pattern=NO_NUL,
        description="The process description, in words (plain text or Markdown). Must not be empty; "
        "at most TEXT_INPUT_MAX_CHARS characters (20,000 by default).",
        examples=["Customer places an order. If the item is in stock, ship it; otherwise notify the customer."],
    )


class MermaidIn(Schema):
    code: str = Field(
        pattern=NO_NUL,
        description=f"The Mermaid code (a flowchart); at most {MERMAID_MAX_CHARS:,} characters.",
        examples=["flowchart TD\n    A([Order received]) --> B{In stock?}\n    B -->|yes| C([Shipped])"],
    )
    parse_error: str = Field(
        "", pattern=NO_NUL, description="The Mermaid parser's message if you parsed the code and it failed. Leave it out if you "
        "did not parse it: the version's `parses` is then null (not checked), never true on your word alone.",
    )


class RepairIn(Schema):
    code: str = Field(pattern=NO_NUL, description="The Mermaid code that does not parse (usually the current version's).")
    parse_error: str = Field(
        pattern=NO_NUL,
        description="The Mermaid parser's message for it; the model gets it with the code.",
        examples=["Parse error on line 3: ... Expecting 'SQE', got 'PS'"],
    )


class MermaidVersionOut(Schema):
    number: int = Field(description="1 for the first; the highest is the current code (output_mermaid).")
    code: str
    origin: MermaidVersion.Origin = Field(
        description="model: the first drawing; repair: the model's repair; edit: saved by its owner; "
        "restore: an earlier version made current again; graph: drawn from a description's process graph."
    )
    parses: bool | None = Field(description="Whether Mermaid parses the code; null: not checked yet.")
    parse_error: str = Field(description="The parser's message when it does not parse.")
    parse_checked_by: MermaidVersion.ParseChecker | None = Field(description=PARSE_CHECK_DESCRIPTION)
    created_at: datetime

    @staticmethod
    def resolve_parse_checked_by(obj: MermaidVersion) -> str | None:
        return obj.parse_checked_by or None


class ListFilters(Schema):
    kind: Conversion.Kind | None = Field(None, description="Only conversions of this kind.")
    status: Conversion.Status | None = Field(None, description="Only conversions with this status.")
    q: str = Field("", max_length=200, pattern=NO_NUL, description="Search titles, input and output texts, file names.")
    page: int = Field(1, ge=1, le=100_000, description="Page number, from 1.")
    page_size: int | None = Field(None, ge=1, le=100, description="Conversions per page (HISTORY_PAGE_SIZE by default).")


class ExampleUsedOut(Schema):
    example_id: int | None = Field(description="The curated example; null if it was deleted since.")
    name: str | None = Field(description="The example's name (its import/export file name).")
    similarity: float = Field(description="Cosine similarity of the example's image to the upload, 0–1.")
    rank: int = Field(description="1 for the most similar example.")

    @staticmethod
    def resolve_name(obj: ConversionExample) -> str | None:
        return obj.example.name if obj.example else None


def _current_version(conversion: Conversion) -> MermaidVersion | None:
    """The current version, looked up once per conversion for the four fields that show it."""
    if "_current_version" not in conversion.__dict__:
        conversion.__dict__["_current_version"] = conversion.current_mermaid_version()
    return conversion.__dict__["_current_version"]


class ConversionOut(Schema):
    id: UUID
    kind: Conversion.Kind
    status: Conversion.Status = Field(
        description="queued → running → done or failed; queued or running → cancelled by its owner."
    )
    stage: Conversion.Stage = Field(description="What the worker is doing now.")
    queue_position: int | None = Field(description="1 for the next job to run; null once it is no longer waiting.")
    estimated_wait_s: int | None = Field(
        description="While queued: the estimated wait in seconds; null when no worker is online or nothing "
        "has finished yet to judge by."
    )
    workers_online: int | None = Field(description="While queued: how many workers are online (0: it waits for one).")
    attempt: int = Field(description="The attempt running now (or next, while queued); above 1 after a worker died.")
    max_attempts: int = Field(description="DESCRIBER_MAX_ATTEMPTS: after this many the job is given up.")
    title: str
    language: Conversion.Language = Field(description='Language of the description; "" = the diagram\'s own.')
    original_filename: str = Field(description="Diagram → text: the uploaded file's name.")
    image_width: int | None
    image_height: int | None
    input_text: str = Field(description="Text → diagram: the description it was given.")
    output_raw: str = Field(description="The model's text as it streams: the partial text while running.")
    output_text: str = Field(description="Diagram → text: the structured description (Markdown), once done.")
    output_structure: dict[str, Any] | None = Field(
        description="Diagram → text: title, participants, steps (with conditions and branches), end states."
    )
    output_mermaid: str = Field(description="Text → diagram: the Mermaid code, once done.")
    mermaid_version: int | None = Field(
        description="Text → diagram: the number of the current version of the code (GET …/versions lists them)."
    )
    mermaid_parses: bool | None = Field(
        description="Text → diagram: whether Mermaid parses output_mermaid; null when not checked yet (or there "
        "is no code). See mermaid_parse_checked_by."
    )
    mermaid_parse_error: str = Field(description="The parser's message when mermaid_parses is false.")
    mermaid_parse_checked_by: MermaidVersion.ParseChecker | None = Field(description=PARSE_CHECK_DESCRIPTION)
    graph: ProcessGraph | None = Field(
        description="The process graph behind the description and the drawing, once done; every export is "
        "rendered from it (GET …/export)."
    )
    graph_notes: dict[str, Any] = Field(
        description="What the graph could not take: `not_understood` (lines of the model's text), `problems` "
        "(e.g. a step number that does not exist), `unsupported` ([line, reason] of Mermaid code)."
    )
    error_message: str = Field(description="Why it failed, when status is failed.")
    tokens_generated: int
    cut_off: bool = Field(
        description="The answer stopped at DESCRIBER_MAX_NEW_TOKENS instead of ending: the graph, description "
        "and drawing hold what was complete by then (output_raw has all of it)."
    )
    coverage: float | None = Field(
        None, description="How the description covers the diagram's own text read by OCR (0–1): the harmonic mean "
        "of the share of the image's labels it uses and the share of its steps found in the image; null when not "
        "measured (a drawing, OCR off or unavailable)."
    )
    grounding: dict[str, Any] | None = Field(
        None, description="The coverage in detail: `labels` [{text, box [x, y, w, h] in the image's pixels, used, "
        "steps}], `steps` [{number, text, grounded, labels}], label_recall, step_precision."
    )
    model_name: str = Field(description="The vision-language model that wrote the result, once done.")
    adapter: str = Field(
        "", description="The fine-tuned LoRA adapter merged into that model (its version and the start of its "
        "weights' SHA-256), or \"\" for the base model alone.",
    )
    timings: dict[str, int | float | None] = Field(
        description="Seconds of the last run (a repair's own, after a repair): queue_wait_s (from queued_at), "
        "preprocessing_s, retrieval_s, first_token_s, generation_s, ocr_s (reading the image's text, beside the "
        "model), ocr_wait_s; tokens and tokens_per_s. Empty while a retry or repair waits."
    )
    examples_used: list[ExampleUsedOut] = Field(description="The curated examples given to the model as context.")
    source_id: UUID | None = Field(description="The diagram → text conversion this one was drawn from, if any.")
    created_at: datetime
    queued_at: datetime = Field(description="When its current run was asked for: its creation, or the latest "
                                "retry or repair.")
    started_at: datetime | None
    finished_at: datetime | None
    url: str = Field(description="This conversion in the API.")
    events_url: str = Field(description="Its live progress as Server-Sent Events.")
    page_url: str = Field(description="Its page on the web site.")

    @staticmethod
    def resolve_mermaid_version(obj: Conversion) -> int | None:
        version = _current_version(obj)
        return version.number if version else None

    @staticmethod
    def resolve_mermaid_parses(obj: Conversion) -> bool | None:
        version = _current_version(obj)
        return version.parses if version else None

    @staticmethod
    def resolve_mermaid_parse_error(obj: Conversion) -> str:
        version = _current_version(obj)
        return version.parse_error if version else ""

    @staticmethod
    def resolve_mermaid_parse_checked_by(obj: Conversion) -> str | None:
        version = _current_version(obj)
        return MermaidVersionOut.resolve_parse_checked_by(version) if version else None

    @staticmethod
    def resolve_adapter(obj: Conversion) -> str:
        return obj.adapter_name

    @staticmethod
    def resolve_graph(obj: Conversion) -> dict | None:
        return obj.output_graph

    @staticmethod
    def resolve_queue_position(obj: Conversion) -> int | None:
        return obj.queue_position()

    @staticmethod
    def resolve_estimated_wait_s(obj: Conversion) -> int | None:
        return obj.queue_estimate().wait_s if obj.status == Conversion.Status.QUEUED else None

    @staticmethod
    def resolve_workers_online(obj: Conversion) -> int | None:
        return obj.queue_estimate().workers if obj.status == Conversion.Status.QUEUED else None

    @staticmethod
    def resolve_attempt(obj: Conversion) -> int:
        return obj.attempt_number if not obj.is_finished else obj.attempts

    @staticmethod
    def resolve_url(obj: Conversion, context) -> str:
        return context["request"].build_absolute_uri(reverse("api:conversion", args=[obj.pk]))

    @staticmethod
    def resolve_events_url(obj: Conversion, context) -> str:
        return context["request"].build_absolute_uri(reverse("api:conversion_events", args=[obj.pk]))

    @staticmethod
    def resolve_page_url(obj: Conversion, context) -> str:
        return context["request"].build_absolute_uri(obj.get_absolute_url())


class ConversionPage(Schema):
    count: int = Field(description="How many conversions match, on all pages.")
    page: int
    page_size: int
    next: str | None = Field(description="The next page, or null on the last.")
    previous: str | None = Field(description="The previous page, or null on the first.")
    items: list[ConversionOut]


class ProgressEvent(Schema):
    """One `progress` event of the stream. Lenient (defaults, a plain-string stage), so that an
    event from a newer worker is passed on rather than dropped."""

    stage: str
    delta: str = Field("", description="The text written since the last event: append it to the text so far.")
    reset: bool = Field(
        False, description="The text started over (the job was restarted): drop the text so far before appending."
    )
    tokens: int = Field(0, description="Tokens written so far.")
    elapsed: float | None = Field(None, description="Seconds since the job started.")


def with_output_relations(conversions: QuerySet[Conversion]) -> QuerySet[Conversion]:
    """What ConversionOut reads besides the row, in two queries for any number of conversions
    (the versions without their code: only the newest one's parse status is shown)."""
    return conversions.prefetch_related(
        "examples_used__example", Prefetch("mermaid_versions", queryset=MermaidVersion.objects.defer("code"))
    )


def conversion_data(conversion: Conversion, request) -> dict[str, Any]:
    """The conversion as the API shows it, ready for JSON (the stream sends it too)."""
    return ConversionOut.model_validate(conversion, context={"request": request}).model_dump(mode="json")
