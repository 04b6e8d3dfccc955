"""How well the describer reads diagrams: the worker's real pipeline (preprocessing, retrieval,
model, postprocessing) on each image of a set with ground truth (`make_diagram_set`), scored
against the true graph with describer/graph/metrics.py.

`evaluate_set(runtime, items)` takes a loaded runtime (the worker's, or one a command loads),
so it runs without pages and without the queue. With `predict=canonical` the item's own
canonical description stands in for the model: the harness's self-check (≈ 1.0 by construction).
With `predict=perturbed` it stands in with known mistakes (steps left out, steps invented; see
`perturbed_graph`): answers of every quality, to see how the reference-free coverage score
tracks the ground-truth metrics without a model's weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.conf import settings

from describer import graphs, grounding, ocr, prompts
from describer.describing import grammar_name, ocr_labels, prompt_messages, structured
from describer.graph.metrics import Scores, aggregate, score
from describer.graph.model import Edge, Node, NodeKind, ProcessGraph
from describer.graph.text import IMPLIED_START_ID, STEP_LINE, render_text
from describer.images import load_for_model
from describer.models import Example


@dataclass
class Item:
    """One diagram of a set: its image, its true graph, its buckets and split."""

    name: str
    image: Path
    truth: ProcessGraph
    canonical_text: str
    buckets: dict[str, str]
    split: str

    def image_sha256(self) -> str:
        return hashlib.sha256(self.image.read_bytes()).hexdigest()


@dataclass
class ItemResult:
    name: str
    buckets: dict[str, str]
    parsed: bool
    scores: Scores | None
    retrieved: int = 0
    retrieved_same_kind: int = 0
    leaked: bool = False  # its own image is a retrieval example
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    coverage: float | None = None  # the reference-free score (describer/grounding.py); None: OCR off
    ocr_seconds: float | None = None


def load_items(directory: Path, *, split: str = "all", limit: int | None = None) -> list[Item]:
    """The items of a set written by `make_diagram_set` (its manifest.json)."""
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    items = []
    for entry in manifest["items"]:
        if split != "all" and entry["split"] != split:
            continue
        truth = ProcessGraph.model_validate_json((directory / entry["graph"]).read_text(encoding="utf-8"))
        text = (directory / entry["text"]).read_text(encoding="utf-8")
        items.append(Item(entry["name"], directory / entry["image"], truth, text, entry["buckets"], entry["split"]))
    return items[:limit] if limit else items


def evaluate_set(
    runtime, items: Iterable[Item], *, predict: str = "model", progress: Callable[[], None] = lambda: None
) -> list[ItemResult]:
    """Score each item; `predict` is "model" (the real pipeline) or "canonical" (the self-check)."""
    leaked_hashes = set(Example.objects.exclude(image_sha256="").values_list("image_sha256", flat=True))
    results = []
    for item in items:
        results.append(_evaluate_item(runtime, item, predict, leaked_hashes))
        progress()
    return results


def _evaluate_item(runtime, item: Item, predict: str, leaked_hashes: set[str]) -> ItemResult:
    started = time.monotonic()
    result = ItemResult(item.name, item.buckets, parsed=False, scores=None)
    result.leaked = item.image_sha256() in leaked_hashes
    found = _read_text(item, result)
    if predict == "canonical":
        text = item.canonical_text
    elif predict == "perturbed":
        text = render_text(perturbed_graph(item.truth, random.Random(f"perturbed:{item.name}")), item.truth.language)
    else:
        text = _describe(runtime, item, result, found)
    reading = graphs.from_description(text, item.truth.language)
    if found is not None:
        description = structured(text, reading, item.truth.language).as_dict()
        result.coverage = grounding.measure(found, description).score
    result.problems = reading.notes.get("problems", [])
    result.parsed = parsed(text, reading)
    if reading.graph is not None:
        result.scores = score(item.truth, reading.graph)
    result.seconds = round(time.monotonic() - started, 3)
    return result


def result_of_text(name: str, truth: ProcessGraph, text: str, buckets: dict | None = None) -> ItemResult:
    """An answer scored against its true graph, as `evaluate` scores it (fine-tuning's validation)."""
    result = ItemResult(name, buckets or {}, parsed=False, scores=None)
    reading = graphs.from_description(text, truth.language)
    result.problems = reading.notes.get("problems", [])
    result.parsed = parsed(text, reading)
    if reading.graph is not None:
        result.scores = score(truth, reading.graph)
    return result


# Steps no diagram of the sets has: what a model that makes things up might add.
INVENTED_STEPS = {
    "en": ("Notify the tax office", "Print a paper copy for the archive", "Call the regional director",
           "Ask the auditor for a second opinion", "Translate the form into French"),
    "ru": ("Уведомить налоговую инспекцию", "Распечатать бумажную копию для архива", "Позвонить региональному директору",
           "Запросить второе мнение аудитора", "Перевести анкету на французский"),
}  # fmt: skip
DROP_SHARES = (0.0, 0.1, 0.2, 0.35, 0.5)


def perturbed_graph(truth: ProcessGraph, rng: random.Random) -> ProcessGraph:
    """The true graph with a random share of its tasks and events left out (their neighbours
    joined) and 0–3 invented tasks put in after others: a wrong answer of known wrongness."""
    droppable = [node for node in truth.nodes if node.kind in (NodeKind.TASK, NodeKind.EVENT, NodeKind.SUBPROCESS)]
    dropped = {node.id for node in rng.sample(droppable, round(len(droppable) * rng.choice(DROP_SHARES)))}
    edges = list(truth.edges)
    for node_id in dropped:
        into = [edge for edge in edges if edge.target == node_id]
        out = [edge for edge in edges if edge.source == node_id]
        edges = [edge for edge in edges if node_id not in (edge.source, edge.target)]
        for before in into:
            for after in out:
                if before.source != after.target and not any(e.source == before.source and e.target == after.target for e in edges):
                    edges.append(Edge(source=before.source, target=after.target, label=before.label))
    nodes = [node for node in truth.nodes if node.id not in dropped]
    phrases = list(INVENTED_STEPS.get(truth.language, INVENTED_STEPS["en"]))
    rng.shuffle(phrases)
    for index in range(rng.choice((0, 0, 1, 2, 3))):
        hosts = [node for node in nodes if node.kind == NodeKind.TASK and sum(e.source == node.id for e in edges) == 1]
        if not hosts:
            break
        host = rng.choice(hosts)
        invented = Node(id=f"invented_{index}", kind=NodeKind.TASK, label=phrases[index], lane=host.lane)
        nodes.insert(nodes.index(host) + 1, invented)
        edges = [Edge(source=invented.id, target=e.target, label="") if e.source == host.id else e for e in edges]
        edges.append(Edge(source=host.id, target=invented.id, label=""))
    return truth.model_copy(update={"nodes": nodes, "edges": edges})


def parsed(text: str, reading: graphs.GraphResult) -> bool:
    """Parse success: the text is in the layout asked for — numbered steps — and gave a graph
    with a step besides the implied start. (The reader is lenient: it turns free prose into
    steps too, so "a graph came out" alone would count any text as parsed.)"""
    if reading.graph is None or not any(node.id != IMPLIED_START_ID for node in reading.graph.nodes):
        return False
    return any(STEP_LINE.match(line) for line in text.splitlines())


def _read_text(item: Item, result: ItemResult) -> ocr.Reading | None:
    """The image's text as the worker reads it (DESCRIBER_OCR), for the coverage score."""
    if not settings.DESCRIBER_OCR:
        return None
    found = ocr.read_file(str(item.image), tessdata=settings.OCR_TESSDATA, max_pixels=settings.OCR_MAX_PIXELS)
    result.ocr_seconds = found.seconds
    return found


def _describe(runtime, item: Item, result: ItemResult, found: ocr.Reading | None = None) -> str:
    """The worker's pipeline for one image, without a job row: the same preprocessing,
    retrieval, prompt and generation (describer/describing.py and the runtime)."""
    from describer.inference.runtime import GenerationRequest  # the worker's side: imports torch

    image = load_for_model(str(item.image), settings.DESCRIBER_MAX_PIXELS)
    language = item.truth.language if item.truth.language in ("en", "ru") else ""
    labels = ocr_labels(found) if settings.DESCRIBER_OCR_IN_PROMPT else ()
    messages, examples = prompt_messages(runtime, image, language, labels)
    result.retrieved = len(examples)
    result.retrieved_same_kind = sum(_same_kind(example, item) for example in examples)
    request = GenerationRequest(
        messages=messages,
        max_new_tokens=settings.DESCRIBER_MAX_NEW_TOKENS,
        min_new_tokens=settings.DESCRIBER_MIN_NEW_TOKENS,
        grammar=grammar_name(language) if settings.DESCRIBER_CONSTRAINED else None,
    )
    return "".join(runtime.stream(request))


def _same_kind(example: Example, item: Item) -> bool:
    """A retrieved example "of the same type and language" as the item."""
    item_type = Example.DiagramType.BPMN if item.buckets.get("diagram_type") == "bpmn" else Example.DiagramType.FLOWCHART
    return example.diagram_type == item_type and example.language == item.buckets.get("language")


# --- Summaries --------------------------------------------------------------------------------


def summarise(results: list[ItemResult]) -> dict:
    """Overall and per bucket; items whose image is a retrieval example are kept apart."""
    clean = [result for result in results if not result.leaked]
    summary = {"overall": _summary(clean), "buckets": {}, "leaked": _summary([r for r in results if r.leaked])}
    by_bucket: dict[str, dict[str, list[ItemResult]]] = defaultdict(lambda: defaultdict(list))
    for result in clean:
        for bucket, value in result.buckets.items():
            by_bucket[bucket][str(value)].append(result)
    for bucket, values in sorted(by_bucket.items()):
        summary["buckets"][bucket] = {value: _summary(group) for value, group in sorted(values.items())}
    return summary


def _summary(results: list[ItemResult]) -> dict:
    if not results:
        return {"items": 0}
    parsed = [result.scores for result in results if result.parsed and result.scores is not None]
    retrieved = sum(result.retrieved for result in results)
    means = aggregate(parsed)
    summary = {
        "items": len(results),
        "parse_rate": round(sum(result.parsed for result in results) / len(results), 4),
        # Unparsed items score 0: a model that writes nothing readable must not look good.
        **{metric: _mean_with_zeros(means[metric], len(parsed), len(results)) for metric in METRICS},
        "retrieved_same_type_and_language": round(sum(r.retrieved_same_kind for r in results) / retrieved, 4)
        if retrieved else None,
        "seconds_per_item": round(sum(result.seconds for result in results) / len(results), 3),
        **_coverage_summary(results),
    }  # fmt: skip
    return summary


CORRELATED = ("node_f1", "edge_f1", "triple_f1_relaxed")


def _coverage_summary(results: list[ItemResult]) -> dict:
    """The mean coverage, and its Pearson correlation over the items with each ground-truth metric
    (an unparsed item scores 0 on them): how far the reference-free score can stand in for them."""
    measured = [result for result in results if result.coverage is not None]
    if not measured:
        return {}
    figures = {"coverage": round(statistics.fmean(result.coverage for result in measured), 4)}
    for metric in CORRELATED:
        truth = [getattr(result.scores, metric) if result.parsed and result.scores else 0.0 for result in measured]
        figures[f"coverage_r_{metric}"] = pearson([result.coverage for result in measured], truth)
    return figures


def pearson(xs: list[float], ys: list[float]) -> float | None:
    """Pearson's r; None for fewer than two items or a constant series (r is undefined)."""
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return round(statistics.correlation(xs, ys), 4)


def _mean_with_zeros(mean: float | None, parsed: int, total: int) -> float:
    return round((mean or 0.0) * parsed / total, 4) if total else 0.0


METRICS = tuple(f.name for f in dataclasses.fields(Scores) if f.type == "float")
TABLE_COLUMNS = ("items", "parse_rate", "node_f1", "edge_f1", "triple_f1_strict", "triple_f1_relaxed",
                 "graph_edit_similarity", "retrieved_same_type_and_language", "coverage",
                 "coverage_r_node_f1", "coverage_r_edge_f1")  # fmt: skip


def table(summary: dict) -> str:
    """The summary as a plain-text table: overall, then one row per bucket value."""
    rows = [("overall", summary["overall"])]
    for bucket, values in summary["buckets"].items():
        rows += [(f"{bucket}={value}", figures) for value, figures in values.items()]
    if summary["leaked"].get("items"):
        rows.append(("leaked (image is an example)", summary["leaked"]))
    header = f"{'':<28}" + "".join(f"{column[:16]:>17}" for column in TABLE_COLUMNS)
    lines = [header]
    for label, figures in rows:
        cells = "".join(f"{_cell(figures.get(column)):>17}" for column in TABLE_COLUMNS)
        lines.append(f"{label[:28]:<28}{cells}")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def as_json(results: list[ItemResult], summary: dict) -> dict:
    return {"summary": summary, "items": [asdict(result) for result in results]}
