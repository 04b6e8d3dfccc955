"""Label recall and speed of the worker's OCR (describer/ocr.py) against plain Tesseract, side by
side on the same images in one run.

    .venv/bin/python bench/ocr_recall.py [--drawn N] [--photos DIR] [--json bench/results/ocr-recall.json]

Sets: the starter set (examples/starter: Mermaid drawings, labels from their .mmd); N generated
diagrams drawn by Pillow (render_png at 1.5×, BPMN lanes with names written bottom to top;
labels exactly as drawn, from drawn_labels); optionally a `make_diagram_set` folder (Mermaid
drawings degraded like photos: turned, blurred, noisy, JPEG), reported by its degradation bucket.

A label counts as found when at least 80 % of its words are among the words read in the image
(case folded, ё as е; a word of four letters or more may differ by one letter: the matching the
coverage score uses). Seconds per megapixel are the reader's own time on one core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")

from PIL import Image  # noqa: E402

from describer.graph.generate import plan_item  # noqa: E402
from describer.graph.images import drawn_labels, render_png  # noqa: E402
from describer.graph.mermaid import read_mermaid  # noqa: E402
from describer.graph.model import ProcessGraph  # noqa: E402
from describer.grounding import _Bag, share_found  # noqa: E402
from describer.ocr import read_image, words_of  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def graph_labels(graph: ProcessGraph) -> list[str]:
    texts = [graph.title, *(p.name for p in graph.pools), *(lane.name for lane in graph.lanes)]
    texts += [node.label for node in graph.nodes] + [edge.label for edge in graph.edges]
    return [text for text in texts if words_of(text)]


def starter():
    for path in sorted((ROOT / "examples" / "starter").glob("*.mmd")):
        graph = read_mermaid(path.read_text(encoding="utf-8")).graph
        yield path.stem, Image.open(path.with_suffix(".png")).convert("RGB"), graph.language, graph_labels(graph), "mermaid"


def drawn(count: int):
    for index in range(count):
        graph = plan_item(3, index).graph
        image = Image.open(io.BytesIO(render_png(graph, scale=1.5))).convert("RGB")
        labels = [text for text, _ in drawn_labels(graph, 1.5) if words_of(text)]
        yield f"drawn_{index}", image, graph.language, labels, "lanes" if graph.lanes else "flowchart"


def photos(folder: Path):
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    for item in manifest["items"]:
        graph = ProcessGraph.model_validate_json((folder / item["graph"]).read_text(encoding="utf-8"))
        image = Image.open(folder / item["image"]).convert("RGB")
        yield item["name"], image, graph.language, graph_labels(graph), item["buckets"]["degradation"]


def plain_tesseract(image: Image.Image) -> tuple[str, float]:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    started = time.perf_counter()
    done = subprocess.run(["tesseract", "stdin", "-", "-l", "rus+eng"], input=buffer.getvalue(), capture_output=True, check=True)
    return done.stdout.decode("utf-8", "replace"), time.perf_counter() - started


def ours(image: Image.Image) -> tuple[str, float]:
    reading = read_image(image)
    return reading.text, reading.seconds


def measure(items, readers: dict) -> dict:
    figures: dict = {}
    for _name, image, language, labels, bucket in items:
        megapixels = image.width * image.height / 1e6
        for reader, read in readers.items():
            text, seconds = read(image)
            bag = _Bag(words_of(text))
            found = sum(share_found(words_of(label), bag) >= 0.8 for label in labels)
            for key in (language, f"{language}:{bucket}"):
                cell = figures.setdefault(reader, {}).setdefault(key, {"labels": 0, "found": 0, "seconds": 0.0, "megapixels": 0.0, "images": 0})
                cell["labels"] += len(labels)
                cell["found"] += found
                cell["seconds"] += seconds
                cell["megapixels"] += megapixels
                cell["images"] += 1
    for cells in figures.values():
        for cell in cells.values():
            cell["recall"] = round(cell["found"] / cell["labels"], 4) if cell["labels"] else None
            cell["seconds_per_megapixel"] = round(cell["seconds"] / cell["megapixels"], 3)
            cell["seconds"], cell["megapixels"] = round(cell["seconds"], 2), round(cell["megapixels"], 2)
    return figures


def report(name: str, figures: dict) -> None:
    print(f"\n{name}")
    print(f"{'':<24}{'ours recall':>12}{'s/MP':>8}{'plain recall':>14}{'s/MP':>8}")
    for key in sorted(figures["ours"]):
        a, b = figures["ours"][key], figures["plain"][key]
        print(f"{key:<24}{a['recall']:>12.3f}{a['seconds_per_megapixel']:>8.2f}{b['recall']:>14.3f}{b['seconds_per_megapixel']:>8.2f}"
              f"   ({a['found']}/{a['labels']} vs {b['found']}/{b['labels']} labels, {a['images']} images)")


def beside_the_decoder(image: Image.Image, seconds: float = 2.0) -> float:
    """How much of its speed a pure-Python loop (the decoder's host side stands for it) keeps
    while the reader works in another thread, as it does in the worker: about 1 when Tesseract
    and scipy let go of the GIL, about 0.5 or less when they hold it."""
    import threading

    def spin() -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            count += 1
        return count

    read_image(image)  # the engines are made once per thread
    ratios = []
    for _ in range(3):  # alternated, median: the dev machine's cores are shared
        alone = spin()
        reader = threading.Thread(target=lambda: [read_image(image) for _ in range(8)])
        reader.start()
        beside = spin()
        reader.join()
        ratios.append(beside / alone)
    return round(sorted(ratios)[1], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--drawn", type=int, default=40)
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    readers = {"ours": ours, "plain": plain_tesseract}
    results = {"cpu_count": os.cpu_count(), "sets": {}}
    sets = {"starter": lambda: starter(), "drawn": lambda: drawn(args.drawn)}
    if args.photos:
        sets["photos"] = lambda: photos(args.photos)
    for name, items in sets.items():
        results["sets"][name] = measure(items(), readers)
        report(name, results["sets"][name])
    sample = next(drawn(7))[1]
    results["python_loop_speed_beside_the_reader"] = beside_the_decoder(sample)
    print(f"\na Python loop keeps {results['python_loop_speed_beside_the_reader']:.0%} of its speed while the reader works beside it")
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
