"""Parse rate of the model's answers, unconstrained against grammar-constrained, in one run.

With the tiny random models (the only weights here) it writes N answers of each kind through the
worker's own runtime (DescriberRuntime.stream_batch, batches of 16, the job's token limit) and
reads them the way a finished job does (describing.Describe / drawing.Draw result logic):

- Diagram → text: the prompt is the worker's (describe_messages) with a generated diagram's
  image and three other diagrams' canonical descriptions as the retrieved examples. An answer
  parses when it gives a process graph in the asked-for layout (evaluation.parsed: numbered
  steps, a step besides the implied start); "clean" also means no line was left not understood.
- Text → diagram: the prompt is draw_messages with a diagram's canonical description and three
  examples' (description, Mermaid) pairs. An answer parses when Mermaid's own parser in Chromium
  (the site's vendored mermaid.min.js) and the project's reader (graphs.from_mermaid: a graph
  with a node, no line skipped) both take the extracted code.

An answer cut off at the limit is read as the job reads it: its complete lines (and closed
subgraphs); the figures say how many were cut off.

    python bench/parse_rate.py                         # 200 of each kind, writes bench/results/parse-rate.json
    python bench/parse_rate.py --count 32 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")

BATCH = 16
EXAMPLES = 3


def setup() -> None:
    import django

    django.setup()


def tiny_runtime(models_dir: Path):
    from django.core.management import call_command

    from describer.inference.runtime import DescriberRuntime
    from describer.inference.tiny import tiny_model_paths

    if not (models_dir / "qwen2_5_vl").exists():
        call_command("make_tiny_models", str(models_dir), verbosity=0)
    paths = tiny_model_paths(models_dir)
    from django.conf import settings

    return DescriberRuntime.load(paths.vlm, paths.clip, max_pixels=settings.DESCRIBER_MAX_PIXELS)


def items(count: int, seed: int) -> list:
    from describer.graph.generate import plan_item

    return [plan_item(seed, index) for index in range(count + EXAMPLES)]


def describe_requests(plans: list, count: int, max_new_tokens: int, constrained: bool) -> list:
    from PIL import Image

    from describer import prompts
    from describer.describing import grammar_name
    from describer.graph.images import render_png
    from describer.graph.text import render_text
    from describer.inference.runtime import GenerationRequest

    requests = []
    for index in range(count):
        graph = plans[index].graph
        image = Image.open(io.BytesIO(render_png(graph, scale=1.0))).convert("RGB")
        language = graph.language if graph.language in ("en", "ru") else ""
        examples = [render_text(plans[index + k].graph, language or "en") for k in range(1, EXAMPLES + 1)]
        requests.append(
            GenerationRequest(
                messages=prompts.describe_messages(image, examples, language),
                max_new_tokens=max_new_tokens,
                grammar=grammar_name(language) if constrained else None,
            )
        )
    return requests


def draw_requests(plans: list, count: int, max_new_tokens: int, constrained: bool) -> list:
    from describer import prompts
    from describer.graph.mermaid import render_mermaid
    from describer.graph.text import render_text
    from describer.inference.runtime import GenerationRequest

    requests = []
    for index in range(count):
        graph = plans[index].graph
        examples = [
            (render_text(plans[index + k].graph, plans[index + k].graph.language), render_mermaid(plans[index + k].graph))
            for k in range(1, EXAMPLES + 1)
        ]
        requests.append(
            GenerationRequest(
                messages=prompts.draw_messages(render_text(graph, graph.language), examples),
                max_new_tokens=max_new_tokens,
                grammar="mermaid" if constrained else None,
            )
        )
    return requests


def generate(runtime, requests: list) -> tuple[list[tuple[str, bool, int]], float]:
    """(text, cut off, tokens) per request, and the seconds it took."""
    answers: list[tuple[str, bool, int]] = []
    started = time.monotonic()
    for first in range(0, len(requests), BATCH):
        batch = requests[first : first + BATCH]
        texts, cut, tokens = [""] * len(batch), [False] * len(batch), [0] * len(batch)
        for index, chunk in runtime.stream_batch(batch):
            texts[index] += chunk
            tokens[index] += chunk.tokens
            if chunk.final:
                cut[index] = chunk.cut_off
        answers += list(zip(texts, cut, tokens))
        print(f"  {first + len(batch)}/{len(requests)}", file=sys.stderr, flush=True)
    return answers, time.monotonic() - started


def read_descriptions(plans: list, answers: list) -> dict:
    from describer import graphs
    from describer.evaluation import parsed
    from describer.describing import answer_text

    results = []
    for plan, (text, cut_off, _) in zip(plans, answers):
        text = answer_text(text, cut_off=cut_off)
        reading = graphs.from_description(text, plan.graph.language)
        ok = parsed(text, reading)
        results.append({"parsed": ok, "clean": ok and not reading.fields()["graph_notes"]["not_understood"],
                        "cut_off": cut_off})  # fmt: skip
    return _summary(results, answers)


def read_drawings(answers: list, drawer) -> dict:
    from describer import graphs
    from describer.drawing import answer_code

    results, failures = [], []
    for text, cut_off, _ in answers:
        code = answer_code(text, cut_off=cut_off)
        reading = graphs.from_mermaid(code)
        own = reading.graph is not None and bool(reading.graph.nodes) and not reading.fields()["graph_notes"]["unsupported"]
        browser_error = drawer.parse_error(code)
        ok = own and browser_error is None
        results.append({"parsed": ok, "own_parser": own, "browser": browser_error is None, "cut_off": cut_off})
        if not ok and len(failures) < 3:
            failures.append({"code": code[:600], "browser_error": (browser_error or "")[:300], "own_parser": own})
    summary = _summary(results, answers)
    summary["own_parser_rate"] = _rate(results, "own_parser")
    summary["browser_rate"] = _rate(results, "browser")
    summary["failures"] = failures
    return summary


def _summary(results: list[dict], answers: list) -> dict:
    summary = {
        "answers": len(results),
        "parse_rate": _rate(results, "parsed"),
        "cut_off": sum(result["cut_off"] for result in results),
        "parse_rate_of_complete": _rate([result for result in results if not result["cut_off"]], "parsed"),
        "mean_tokens": round(sum(tokens for _, _, tokens in answers) / max(len(answers), 1), 1),
    }
    if results and "clean" in results[0]:
        summary["clean_rate"] = _rate(results, "clean")
    return summary


def _rate(results: list[dict], key: str) -> float | None:
    return round(sum(result[key] for result in results) / len(results), 4) if results else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: DESCRIBER_MAX_NEW_TOKENS")
    parser.add_argument("--models", type=Path, default=ROOT / "var" / "tiny-models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "parse-rate.json")
    args = parser.parse_args()
    setup()
    from django.conf import settings

    from describer.graph.generate import mermaid_drawer

    max_new_tokens = args.max_new_tokens or settings.DESCRIBER_MAX_NEW_TOKENS
    runtime = tiny_runtime(args.models)
    plans = items(args.count, args.seed)
    report = {"count": args.count, "seed": args.seed, "max_new_tokens": max_new_tokens, "batch": BATCH,
              "model": "tiny random Qwen2.5-VL (make_tiny_models)", "runs": {}}  # fmt: skip
    with mermaid_drawer() as drawer:
        for constrained in (False, True):
            mode = "constrained" if constrained else "unconstrained"
            print(f"{mode}: descriptions", file=sys.stderr)
            answers, seconds = generate(runtime, describe_requests(plans, args.count, max_new_tokens, constrained))
            descriptions = read_descriptions(plans, answers) | {"seconds": round(seconds, 1)}
            print(f"{mode}: drawings", file=sys.stderr)
            answers, seconds = generate(runtime, draw_requests(plans, args.count, max_new_tokens, constrained))
            drawings = read_drawings(answers, drawer) | {"seconds": round(seconds, 1)}
            report["runs"][mode] = {"descriptions": descriptions, "drawings": drawings}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    print(f"{report['count']} answers of each kind, max {report['max_new_tokens']} tokens, {report['model']}")
    print(f"{'':15} {'kind':13} {'parse rate':>10} {'complete ones':>13} {'cut off':>7} {'tokens':>7} {'seconds':>7}  detail")
    for mode, run in report["runs"].items():
        for kind, summary in run.items():
            detail = (
                f"clean {summary['clean_rate']:.1%}" if "clean_rate" in summary
                else f"browser {summary['browser_rate']:.1%}, own parser {summary['own_parser_rate']:.1%}"
            )  # fmt: skip
            complete = summary["parse_rate_of_complete"]
            print(
                f"{mode:15} {kind:13} {summary['parse_rate']:>10.1%} {'-' if complete is None else f'{complete:.1%}':>13} "
                f"{summary['cut_off']:>7} {summary['mean_tokens']:>7} {summary['seconds']:>7}  {detail}"
            )


if __name__ == "__main__":
    main()
