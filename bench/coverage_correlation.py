"""How well the reference-free coverage score tracks the ground-truth metrics: `evaluate
--predict perturbed` (true descriptions with steps left out and invented, by known amounts) on
generated diagrams, and Pearson's r between coverage and node/edge F1 over the items.

    .venv/bin/python bench/coverage_correlation.py [--count 60] [--photos DIR] [--json OUT]

The drawn set is built here: `--count` generated graphs (seed 21) drawn by Pillow (render_png
at 1.5×, clean). `--photos DIR` adds a `make_diagram_set` folder (Mermaid drawings degraded like
photos), scored with perturbed and with canonical answers: with canonical answers every
ground-truth metric is 1, so what coverage loses there is what the OCR missed. Needs the
database (the retrieval examples are looked up to keep them out of the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")

import django  # noqa: E402

django.setup()

from describer import evaluation  # noqa: E402
from describer.graph.generate import manifest_entry, plan_item  # noqa: E402
from describer.graph.images import render_png  # noqa: E402

FIGURES = ("items", "node_f1", "edge_f1", "coverage", "coverage_r_node_f1", "coverage_r_edge_f1")


def drawn_set(folder: Path, count: int, seed: int = 21) -> Path:
    entries = []
    for index in range(count):
        plan = plan_item(seed, index)
        (folder / f"{plan.name}.json").write_text(plan.graph.model_dump_json(), encoding="utf-8")
        (folder / f"{plan.name}.txt").write_text(plan.text, encoding="utf-8")
        (folder / f"{plan.name}.png").write_bytes(render_png(plan.graph, scale=1.5))
        buckets = plan.buckets() | {"degradation": "clean"}
        entries.append(manifest_entry(plan) | {"image": f"{plan.name}.png", "buckets": buckets, "degradation": {}})
    (folder / "manifest.json").write_text(json.dumps({"items": entries}), encoding="utf-8")
    return folder


def run(folder: Path, predict: str) -> dict:
    results = evaluation.evaluate_set(None, evaluation.load_items(folder), predict=predict)
    summary = evaluation.summarise(results)
    figures = {"overall": {key: summary["overall"].get(key) for key in FIGURES}}
    for value, group in summary["buckets"].get("degradation", {}).items():
        figures[f"degradation={value}"] = {key: group.get(key) for key in FIGURES}
    return figures


def show(name: str, figures: dict) -> None:
    print(f"\n{name}")
    print(f"{'':<22}" + "".join(f"{key[:18]:>20}" for key in FIGURES))
    for row, values in figures.items():
        print(f"{row:<22}" + "".join(f"{'–' if values[k] is None else values[k]:>20}" for k in FIGURES))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report = {}
    with tempfile.TemporaryDirectory() as scratch:
        report["drawn, perturbed"] = run(drawn_set(Path(scratch), args.count), "perturbed")
    if args.photos:
        report["photos, perturbed"] = run(args.photos, "perturbed")
        report["photos, canonical"] = run(args.photos, "canonical")
    for name, figures in report.items():
        show(name, figures)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
