"""`manage.py evaluate DIR [--limit N] [--json OUT] [--split S] [--predict model|canonical|perturbed]`:
the describer's real pipeline on a set made by `make_diagram_set`, scored against its ground
truth (describer/evaluation.py). The models load as in the worker (DESCRIBER_MODEL, CLIP_MODEL,
and the adapter it would serve: the admin's active one, else DESCRIBER_ADAPTER); `--adapter DIR`
scores another, `--base-model` none."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.management import BaseCommand, CommandError

from describer import adapters, evaluation


class Command(BaseCommand):
    help = "Score the describer on a set of diagrams with ground truth (see make_diagram_set)."

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--limit", type=int, default=None, help="Score at most this many items.")
        parser.add_argument("--json", dest="json_path", type=Path, default=None, help="Write every item's scores and the summary here.")
        parser.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                            help="Which split of the set to score (default: test).")
        parser.add_argument("--predict", default="model", choices=["model", "canonical", "perturbed"],
                            help="canonical: score the items' own descriptions (the harness's self-check); perturbed: the same with steps left out and invented (to see how coverage tracks the metrics).")
        parser.add_argument("--adapter", type=Path, default=None, help="Score the base model with this fine-tuned adapter.")
        parser.add_argument("--base-model", action="store_true", help="Score the base model without any adapter.")

    def handle(self, *args, directory: Path, limit, json_path: Path | None, split: str, predict: str, **options):
        if not (directory / "manifest.json").exists():
            raise CommandError(f"{directory} has no manifest.json: make one with `manage.py make_diagram_set`.")
        items = evaluation.load_items(directory, split=split, limit=limit)
        if not items:
            raise CommandError(f"{directory} has no items in the split “{split}”.")
        runtime = self.runtime(self.adapter(options)) if predict == "model" else None
        with _progress(len(items)) as tick:
            results = evaluation.evaluate_set(runtime, items, predict=predict, progress=tick)
        summary = evaluation.summarise(results)
        self.stdout.write(evaluation.table(summary))
        leaked = summary["leaked"].get("items", 0)
        if leaked:
            self.stdout.write(f"{leaked} items left out of the figures: their image is a retrieval example.")
        if json_path is not None:
            json_path.write_text(_dumps(evaluation.as_json(results, summary)), encoding="utf-8")
            self.stdout.write(f"wrote {json_path}")

    def adapter(self, options):
        if options["base_model"]:
            return None
        path = options["adapter"] or adapters.chosen_path()
        try:
            return adapters.check(path) if path else None
        except adapters.AdapterProblem as error:
            raise CommandError(str(error)) from None

    def runtime(self, adapter):
        from describer.examples import embed_pending_examples
        from describer.inference.runtime import DescriberRuntime  # only here: imports torch

        runtime = DescriberRuntime.from_settings(adapter=adapter)
        if adapter is not None:
            self.stderr.write(f"scoring {runtime.serving}")
        # Retrieval needs the examples embedded (the worker does it between jobs); their image
        # hashes, set then, also tell which items of the set are retrieval examples themselves.
        embedded = embed_pending_examples(runtime, limit=None)
        if embedded.embedded:
            self.stderr.write(f"embedded {embedded.embedded} retrieval examples first")
        return runtime


def _dumps(data) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2)


class _progress:
    """A tqdm bar on stderr (installed with transformers)."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="item", file=sys.stderr)

    def __enter__(self):
        return lambda: self.bar.update(1)

    def __exit__(self, *exc) -> None:
        self.bar.close()
