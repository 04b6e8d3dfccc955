"""GPU benchmark: decode speed with grammar constraints against without, side by side in one run.

The worker's own runtime (DescriberRuntime, nf4, the fast decoder with CUDA graphs) on Qwen2.5-VL-3B's
real architecture with random weights (describer.inference.tiny; its tokenizer is padded to the
real 151,936 ids, so every bitmask covers the full vocabulary). Requests are the worker's: a
1600x1200 diagram with 3 retrieved example descriptions (describe), or a description to draw
(mermaid). For 1 request and for 16 concurrent ones it measures decode tokens/s unconstrained and
constrained, alternating the two over several rounds (the median is reported), and how much host
time the grammar matchers took per decode step (filling the bitmask, accepting the tokens) — the
per-step round trip the constrained step adds. It also checks that every constrained answer is one
its grammar accepts, and how long compiling the grammars took.

    python bench/gpu_constrained.py                     # writes bench/results/gpu-constrained.json
    python bench/gpu_constrained.py --tokens 128 --rounds 1

Needs a CUDA GPU, torch, transformers, bitsandbytes, accelerate, sentence-transformers, xgrammar.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402
import xgrammar  # noqa: E402

from describer import prompts  # noqa: E402
from describer.inference import constraints  # noqa: E402
from describer.inference.loading import DEFAULT_MAX_IMAGE_PIXELS  # noqa: E402
from describer.inference.runtime import DescriberRuntime, GenerationRequest  # noqa: E402
from gpu_bench import EXAMPLE_DESCRIPTIONS, measure_stream, random_models, synthetic_diagram, versions  # noqa: E402

GRAMMARS = {"describe": "description:en", "mermaid": "mermaid"}


def request(kind: str, seed: int, tokens: int, constrained: bool) -> GenerationRequest:
    if kind == "describe":
        messages = prompts.describe_messages(synthetic_diagram(seed), EXAMPLE_DESCRIPTIONS, "en")
    else:
        messages = prompts.draw_messages(EXAMPLE_DESCRIPTIONS[seed % len(EXAMPLE_DESCRIPTIONS)], [])
    # min_new_tokens keeps lengths equal; under a grammar an answer still ends where only an end
    # is allowed (the grammar wins), which the token counts show.
    return GenerationRequest(
        messages=messages, max_new_tokens=tokens, min_new_tokens=tokens,
        grammar=GRAMMARS[kind] if constrained else None,
    )  # fmt: skip


class Recorder:
    """Keeps the RowConstraints of each constrained batch, for their host-time counters."""

    def __init__(self, grammars: constraints.Grammars) -> None:
        self.made: list[constraints.RowConstraints] = []
        original = grammars.rows

        def rows(names):
            made = original(names)
            self.made.append(made)
            return made

        grammars.rows = rows


def run_once(runtime: DescriberRuntime, kind: str, rows: int, tokens: int, constrained: bool, seed: int) -> dict:
    requests = [request(kind, seed + index, tokens, constrained) for index in range(rows)]
    texts: dict[int, list[str]] = {}

    def start():
        for index, chunk in runtime.stream_batch(requests):
            texts.setdefault(index, []).append(chunk)
            yield index, chunk

    figures = measure_stream(start)
    figures["texts"] = {index: "".join(chunks) for index, chunks in texts.items()}
    return figures


def bench(runtime: DescriberRuntime, recorder: Recorder, kind: str, rows: int, tokens: int, rounds: int, log) -> dict:
    results: dict[str, list[dict]] = {"unconstrained": [], "constrained": []}
    host: list[dict] = []
    accepted = total = 0
    for round_ in range(rounds):
        for mode in ("unconstrained", "constrained") if round_ % 2 == 0 else ("constrained", "unconstrained"):
            before = len(recorder.made)
            figures = run_once(runtime, kind, rows, tokens, mode == "constrained", seed=round_ * 100)
            texts = figures.pop("texts")
            if mode == "constrained":
                made = recorder.made[before:]
                steps = sum(item.fills for item in made)
                host.append({
                    "fill_us_per_step": round(1e6 * sum(item.fill_s for item in made) / max(steps, 1), 1),
                    "accept_us_per_step": round(1e6 * sum(item.accept_s for item in made) / max(steps, 1), 1),
                })  # fmt: skip
                for text in texts.values():
                    total += 1
                    accepted += runtime.grammars.matcher(GRAMMARS[kind]).accept_string(text)
            results[mode].append(figures)
            log(f"[{kind} x{rows}] {mode}: {figures}")
    key = "decode_tok_s" if rows == 1 else "total_tok_s"
    figures = ("decode_tok_s", "total_tok_s", "steady_decode_tok_s", "all_rows_started_s", "tokens", "ttft_s")
    summary = {mode: _median(runs, figures) for mode, runs in results.items()}
    summary["ratio"] = round(summary["constrained"][key] / summary["unconstrained"][key], 3)
    summary["ratio_of"] = key
    if rows > 1:  # once every row decodes: the decode step alone, without the rows' prefills
        steady = "steady_decode_tok_s"
        summary["steady_ratio"] = round(summary["constrained"][steady] / summary["unconstrained"][steady], 3)
    summary["host_per_step"] = _median(host, ("fill_us_per_step", "accept_us_per_step"))
    summary["constrained_answers_the_grammar_accepts"] = f"{accepted}/{total}"
    summary["runs"] = results
    return summary


def _median(runs: list[dict], keys: tuple[str, ...]) -> dict:
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in keys if runs and key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/diagramsite-bench"), help="where the random models go")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-constrained.json")
    parser.add_argument("--tokens", type=int, default=512, help="forced output length")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_constrained.py needs a CUDA GPU.")
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s {message}", flush=True)

    vlm, clip = random_models(args.work)
    runtime = DescriberRuntime.load(vlm, clip, max_vram="7GiB", max_ram="32GiB", quantization="nf4",
                                    max_pixels=DEFAULT_MAX_IMAGE_PIXELS)  # fmt: skip
    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "versions": versions() | {
        "xgrammar": getattr(xgrammar, "__version__", "0.2.8")}, "tokens": args.tokens, "rounds": args.rounds}  # fmt: skip
    results["cuda_graphs"] = bool(runtime.decoder and runtime.decoder.cuda_graphs)
    results["grammar_compile_s"] = round(runtime.grammars.compile_all(), 2)
    results["vocab"] = runtime.grammars.vocab_size
    log(f"loaded; grammars compiled in {results['grammar_compile_s']} s; CUDA graphs {results['cuda_graphs']}")
    recorder = Recorder(runtime.grammars)
    results["cases"] = {}
    for kind in ("describe", "mermaid"):
        for rows in (1, 16):
            # Warm-up at the measured shape: the decoder keeps the buffers and CUDA graphs of two
            # shapes, and a new shape captures the step's graphs (both forms once constrained).
            for constrained in (False, True):
                run_once(runtime, kind, rows, args.tokens, constrained, 0)
            results["cases"][f"{kind} x{rows}"] = bench(runtime, recorder, kind, rows, args.tokens, args.rounds, log)
    results["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"{'case':14} {'unconstrained':>14} {'constrained':>12} {'ratio':>6} {'steady':>6} {'fill µs/step':>12} {'accept µs/step':>14}  accepted")
    for name, case in results["cases"].items():
        key = case["ratio_of"]
        print(f"{name:14} {case['unconstrained'][key]:>14} {case['constrained'][key]:>12} {case['ratio']:>6} {case.get('steady_ratio', '-'):>6} "
              f"{case['host_per_step'].get('fill_us_per_step', 0):>12} {case['host_per_step'].get('accept_us_per_step', 0):>14}"
              f"  {case['constrained_answers_the_grammar_accepts']}")  # fmt: skip


if __name__ == "__main__":
    main()
