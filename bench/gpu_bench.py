"""GPU benchmark of the worker's own inference code (DescriberRuntime), not a copy of it.

No weights can be downloaded, so it builds Qwen2.5-VL-3B-Instruct's real architecture with random
weights (describer.inference.tiny) and forces output lengths with min_new_tokens. For the default
configuration (nf4) and for bf16 it prints, next to the baseline (plain ``generate``, one request at
a time) measured in the same run: time to first token for a 1600x1200 diagram with 3 retrieved
examples, decode tokens/s for one request, total tokens/s for 4 and 16 concurrent requests, and
peak VRAM. It checks that the fast decoder writes the tokens ``generate`` writes, reports the largest
logit difference between batched and single runs, and shows what too small a MODEL_MAX_VRAM does.

    python bench/gpu_bench.py                  # writes bench/results/gpu-latest.json
    python bench/gpu_bench.py --quick          # a smoke run: nf4 only, short outputs

Needs a CUDA GPU, torch, transformers, bitsandbytes, accelerate, sentence-transformers (no Django).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from describer import prompts  # noqa: E402
from describer.inference.errors import InferenceError  # noqa: E402
from describer.inference.fast_decode import RowLimits  # noqa: E402
from describer.inference.loading import DEFAULT_MAX_IMAGE_PIXELS  # noqa: E402
from describer.inference.runtime import DescriberRuntime, GenerationRequest  # noqa: E402
from describer.inference.tiny import build_random_clip_vit_b32, build_random_qwen2_5_vl_3b  # noqa: E402

GIB = 2**30
# The settings' defaults (MODEL_MAX_VRAM, MODEL_MAX_RAM); bf16 weights alone take 7 GiB, so it gets more.
MAX_VRAM = {"nf4": "7GiB", "bf16": "16GiB"}
MAX_RAM = "32GiB"

EXAMPLE_DESCRIPTIONS = [
    """# Order approval
## Participants
- Customer
- Sales
## Steps
1. The customer submits an order (Customer)
2. Sales checks whether the order is complete (Sales)
   - If yes: go to step 3.
   - If no: go to step 5.
3. Sales checks the customer's credit limit (Sales)
   - If within the limit: go to step 4.
   - If over the limit: end: Order rejected.
4. Sales confirms the order (Sales)
5. Sales asks the customer for the missing data, then go to step 2. (Sales)
## End states
- Order confirmed: the order goes to the warehouse.
- Order rejected: the customer is told why.""",
    """# Запрос на отпуск
## Участники
- Сотрудник
- Руководитель
## Шаги
1. Сотрудник подаёт заявление на отпуск (Сотрудник)
2. Руководитель проверяет график (Руководитель)
   - Если даты свободны: перейти к шагу 3.
   - Если даты заняты: конец: Отказ.
3. Руководитель согласует отпуск (Руководитель)
## Конечные состояния
- Отпуск согласован: отдел кадров оформляет приказ.
- Отказ: сотрудник выбирает другие даты.""",
    """# Incident handling
## Steps
1. Monitoring raises an alert.
2. The on-call engineer acknowledges the alert within 15 minutes.
   - If acknowledged: go to step 3.
   - If not: go to step 6.
3. The engineer assesses the impact.
   - If customers are affected: go to step 4.
   - If not: go to step 5.
4. The engineer opens an incident and informs the status page, then go to step 5.
5. The engineer fixes the cause and closes the alert. End: Resolved.
6. The alert escalates to the team lead, then go to step 3.
## End states
- Resolved: the alert is closed and a post-mortem is scheduled when customers were affected.""",
]


# --- Inputs ---------------------------------------------------------------------------------


def synthetic_diagram(seed: int, size: tuple[int, int] = (1600, 1200)) -> Image.Image:
    """A flowchart-like picture: boxes, a decision diamond, arrows and labels."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    labels = ["Start", "Receive request", f"Check #{seed}", "Approve", "Reject", "Archive", "End"]
    for row, label in enumerate(labels):
        x, y = 200 + (row % 2) * 700, 60 + row * 160
        if label.startswith("Check"):
            draw.polygon([(x + 200, y), (x + 400, y + 60), (x + 200, y + 120), (x, y + 60)], outline="black", width=4)
        else:
            draw.rounded_rectangle((x, y, x + 400, y + 110), radius=20, outline="black", width=4)
        draw.text((x + 40, y + 45), label, fill="black", font=font)
        if row:
            draw.line((x + 200, y - 50, x + 200, y), fill="black", width=4)
            draw.polygon([(x + 190, y - 14), (x + 210, y - 14), (x + 200, y)], fill="black")
    return image


def describe_request(seed: int, tokens: int, *, examples: int = 3) -> GenerationRequest:
    return GenerationRequest(
        messages=prompts.describe_messages(synthetic_diagram(seed), EXAMPLE_DESCRIPTIONS[:examples], ""),
        max_new_tokens=tokens,
        min_new_tokens=tokens,
    )


def text_request(tokens: int) -> GenerationRequest:
    return GenerationRequest(
        messages=[{"role": "user", "content": [{"type": "text", "text": "Describe a flowchart."}]}],
        max_new_tokens=tokens,
        min_new_tokens=tokens,
    )


# --- Measuring ------------------------------------------------------------------------------


def synchronize() -> None:
    torch.cuda.synchronize()


def measure_stream(start: Callable[[], Iterator[Any]]) -> dict[str, float]:
    """Time one stream: to its first chunk, and the tokens after it over the time after it. For a
    batch also the steady rate: tokens after every row has started, over the time after that
    (rows are prefilled one after another, so the first is generating while the last waits)."""
    synchronize()
    started = time.perf_counter()
    first_at = all_started_at = None
    first_tokens = all_started_tokens = tokens = 0
    rows_started: set[int] = set()
    for item in start():
        row, chunk = item if isinstance(item, tuple) else (0, item)
        tokens += chunk.tokens
        if first_at is None and chunk:
            first_at, first_tokens = time.perf_counter(), tokens
        if row not in rows_started and chunk.tokens:
            rows_started.add(row)
            all_started_at, all_started_tokens = time.perf_counter(), tokens
    finished = time.perf_counter()
    first_at = first_at or finished
    decode_s = finished - first_at
    figures = {
        "ttft_s": round(first_at - started, 4),
        "tokens": tokens,
        "total_s": round(finished - started, 3),
        "decode_tok_s": round((tokens - first_tokens) / decode_s, 1) if decode_s > 0 else 0.0,
        "total_tok_s": round(tokens / (finished - started), 1),
    }
    if len(rows_started) > 1 and all_started_at is not None and finished > all_started_at:
        figures["all_rows_started_s"] = round(all_started_at - started, 3)
        figures["steady_decode_tok_s"] = round((tokens - all_started_tokens) / (finished - all_started_at), 1)
    return figures


def median_ttft(start: Callable[[], Iterator[Any]], runs: int = 3) -> float:
    return statistics.median(measure_stream(start)["ttft_s"] for _ in range(runs))


def peak_gib(reset: bool = False) -> dict[str, float]:
    figures = {
        "allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
        "reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
    }
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return figures


def consume(iterator: Iterator[Any]) -> None:
    for _ in iterator:
        pass


def prompt_tokens(runtime: DescriberRuntime, request: GenerationRequest) -> dict[str, int]:
    inputs = runtime.prepare_inputs([request])
    image_tokens = int(inputs["image_grid_thw"].prod(dim=-1).sum()) // 4 if "image_grid_thw" in inputs else 0
    return {"prompt_tokens": int(inputs["input_ids"].shape[1]), "image_tokens": image_tokens}


# --- Correctness checks -------------------------------------------------------------------


def greedy_match(runtime: DescriberRuntime, request: GenerationRequest, tokens: int) -> dict[str, Any]:
    """Tokens and logits of plain generate vs the fast decoder for the same request.

    Where the greedy tokens part, the gap between generate's two best logits there says whether it
    was a near-tie (random weights give flat logits) rather than a bug. For scale: the difference
    between generate's step-by-step logits and one forward pass over the same tokens, which is
    transformers' own rounding noise.
    """
    inputs = runtime.prepare_inputs([request])
    prompt_length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        output = runtime.model.generate(
            **inputs, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens,
            return_dict_in_generate=True, output_logits=True,
        )
    reference = output.sequences[0, prompt_length:].tolist()
    reference_logits = [step[0].float() for step in output.logits]
    fast_logits: list[torch.Tensor] = []
    fast = [
        item.token
        for step in runtime.decoder.decode(
            [inputs], [RowLimits(tokens, tokens)], observe=lambda logits: fast_logits.append(logits[0])
        )
        for item in step
    ]
    same = next((index for index, (a, b) in enumerate(zip(reference, fast)) if a != b), min(len(reference), len(fast)))
    compared = range(min(same + 1, len(fast_logits), len(reference_logits)))
    differences = [float((fast_logits[i] - reference_logits[i]).abs().max()) for i in compared]
    result = {"compared": tokens, "equal_prefix": same, "all_equal": reference == fast,
              "max_logit_diff_vs_generate": round(max(differences, default=0.0), 5),
              "logit_diff_first_steps": [round(value, 5) for value in differences[:6]]}
    if same < len(reference_logits):
        top = reference_logits[same].topk(2).values
        result["top2_gap_at_divergence"] = round(float(top[0] - top[1]), 5)
    with torch.no_grad():
        one_pass = runtime.model(
            input_ids=output.sequences[:, :-1],
            attention_mask=torch.ones_like(output.sequences[:, :-1]),
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
            mm_token_type_ids=torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, tokens - 1)),
            logits_to_keep=tokens,
        ).logits[0].float()
    noise = max(float((one_pass[i] - reference_logits[i]).abs().max()) for i in range(tokens))
    result["generate_vs_one_pass_logit_diff"] = round(noise, 5)
    return result


def batched_logit_difference(runtime: DescriberRuntime, requests: list[GenerationRequest], steps: int) -> dict[str, Any]:
    """Largest |logit| difference between each request decoded alone and in one batch, over the
    first ``steps`` tokens (compared while the greedy tokens still agree)."""
    prompts_ = [runtime.prepare_inputs([request]) for request in requests]
    limits = [RowLimits(steps, steps) for _ in requests]

    def run(indices: list[int]) -> tuple[list[torch.Tensor], list[list[int]]]:
        seen: list[torch.Tensor] = []
        tokens: list[list[int]] = [[] for _ in indices]
        for step in runtime.decoder.decode(
            [prompts_[i] for i in indices], [limits[i] for i in indices], observe=lambda logits: seen.append(logits)
        ):
            for item in step:
                tokens[item.row].append(item.token)
        return seen, tokens

    batched_logits, batched_tokens = run(list(range(len(requests))))
    worst, compared, same_tokens = 0.0, 0, True
    scale = 0.0
    for index in range(len(requests)):
        alone_logits, alone_tokens = run([index])
        same_tokens &= alone_tokens[0] == batched_tokens[index]
        for step, (alone, together) in enumerate(zip(alone_logits, batched_logits)):
            if alone_tokens[0][:step] != batched_tokens[index][:step]:
                break
            worst = max(worst, float((alone[0] - together[index]).abs().max()))
            scale = max(scale, float(alone[0].abs().max()))
            compared += 1
    return {
        "max_logit_diff": round(worst, 5),
        "max_abs_logit": round(scale, 3),
        "steps_compared": compared,
        "same_tokens": same_tokens,
    }


# --- One configuration ----------------------------------------------------------------------


def bench_config(vlm: Path, clip: Path, quantization: str, tokens: int, batches: list[int], log: Callable) -> dict:
    result: dict[str, Any] = {"quantization": quantization, "max_vram": MAX_VRAM[quantization]}
    started = time.perf_counter()
    runtime = DescriberRuntime.load(
        vlm, clip, max_vram=MAX_VRAM[quantization], max_ram=MAX_RAM, quantization=quantization,
        max_pixels=DEFAULT_MAX_IMAGE_PIXELS,
    )
    result["load_s"] = round(time.perf_counter() - started, 1)
    result["weights_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
    result["fast_decoder"] = runtime.decoder is not None and runtime.decoder.cuda_graphs
    log(f"[{quantization}] loaded in {result['load_s']} s, {result['weights_gib']} GiB allocated, "
        f"CUDA graphs: {result['fast_decoder']}")
    result.update(prompt_tokens(runtime, describe_request(0, tokens)))
    image = synthetic_diagram(0)
    runtime.embed_image(image)
    embed = []
    for _ in range(5):
        synchronize()
        t = time.perf_counter()
        runtime.embed_image(image)
        embed.append(time.perf_counter() - t)
    result["clip_embed_s"] = round(statistics.median(embed), 4)

    # Warm-ups: lazy initialisation, and the capture of the one-request graph (timed: a worker pays
    # it once per shape).
    consume(runtime.stream_generate(describe_request(0, 8)))
    synchronize()
    t = time.perf_counter()
    consume(runtime.stream(describe_request(0, 8)))
    synchronize()
    result["first_fast_request_s"] = round(time.perf_counter() - t, 3)

    peak_gib(reset=True)
    result["baseline"] = measure_stream(lambda: runtime.stream_generate(describe_request(1, tokens)))
    result["baseline"]["peak"] = peak_gib(reset=True)
    log(f"[{quantization}] baseline generate: {result['baseline']}")
    result["fast"] = measure_stream(lambda: runtime.stream(describe_request(1, tokens)))
    result["fast"]["peak"] = peak_gib(reset=True)
    log(f"[{quantization}] fast decoder: {result['fast']}")
    result["speedup_single_decode"] = round(result["fast"]["decode_tok_s"] / result["baseline"]["decode_tok_s"], 2)
    result["baseline"]["ttft_median_s"] = median_ttft(lambda: runtime.stream_generate(describe_request(4, 2)))
    result["fast"]["ttft_median_s"] = median_ttft(lambda: runtime.stream(describe_request(4, 2)))

    for name, check in (
        ("greedy_match", lambda: greedy_match(runtime, describe_request(2, 64), 64)),
        ("batched_logits", lambda: batched_logit_difference(
            runtime, [describe_request(3, 8, examples=n) for n in (3, 0, 1, 2)], 8)),
    ):
        try:
            result[name] = check()
        except Exception as error:  # noqa: BLE001 - report and go on
            result[name] = {"error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        log(f"[{quantization}] {name}: {result[name]}")

    # The baseline serves one request at a time, so its total rate for N concurrent requests is its
    # rate for one (first token included), whatever N is.
    baseline_total = result["baseline"]["total_tok_s"]
    for size in batches:
        consume(runtime.stream_batch([describe_request(seed, 8) for seed in range(size)]))  # capture
        peak_gib(reset=True)
        batch = measure_stream(lambda: runtime.stream_batch([describe_request(seed, tokens) for seed in range(size)]))
        batch["peak"] = peak_gib(reset=True)
        batch["speedup_vs_one_at_a_time"] = round(batch["total_tok_s"] / baseline_total, 2)
        result[f"batch{size}"] = batch
        log(f"[{quantization}] {size} concurrent: {batch}")
    if runtime.decoder is not None:
        runtime.decoder.release()
    del runtime
    gc.collect()
    torch.cuda.empty_cache()
    return result


def memory_limit_checks(vlm: Path, clip: Path, log: Callable) -> list[dict]:
    """MODEL_MAX_VRAM below the model's size: it must offload or refuse clearly, never crash."""
    outcomes = []
    for quantization, max_vram, max_ram in (("nf4", "1GiB", "48GiB"), ("bf16", "4GiB", "48GiB"), ("bf16", "1GiB", "1GiB")):
        outcome: dict[str, Any] = {"quantization": quantization, "max_vram": max_vram, "max_ram": max_ram}
        try:
            runtime = DescriberRuntime.load(vlm, clip, max_vram=max_vram, max_ram=max_ram, quantization=quantization)
        except InferenceError as error:
            outcome.update(result="refused", message=str(error))
        except Exception as error:  # noqa: BLE001 - the worker would fail every job with this
            outcome.update(result="crashed", message=f"{type(error).__name__}: {error}")
        else:
            placement = getattr(runtime.model, "hf_device_map", {})
            outcome["modules_offloaded"] = sum(1 for device in placement.values() if device in ("cpu", "disk"))
            outcome["modules_on_gpu"] = len(placement) - outcome["modules_offloaded"]
            outcome["gpu_allocated_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
            outcome["fast_decoder"] = runtime.decoder is not None
            try:
                outcome["run"] = measure_stream(lambda: runtime.stream(text_request(4)))
                outcome["result"] = "offloaded and ran"
            except Exception as error:  # noqa: BLE001
                outcome.update(result="loaded, generation failed", message=f"{type(error).__name__}: {error}")
            del runtime
        gc.collect()
        torch.cuda.empty_cache()
        log(f"[memory limits] {outcome}")
        outcomes.append(outcome)
    return outcomes


# --- Reporting --------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import accelerate
    import bitsandbytes
    import transformers

    driver = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "driver": driver,
        "transformers": transformers.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "accelerate": accelerate.__version__,
    }


def summary(results: dict) -> dict:
    default = results["configs"]["nf4"]
    summary = {
        "baseline_decode_tok_s": default["baseline"]["decode_tok_s"],
        "decode_tok_s": default["fast"]["decode_tok_s"],
        "single_decode_speedup": default["speedup_single_decode"],
        "ttft_s": default["fast"]["ttft_median_s"],
        "baseline_ttft_s": default["baseline"]["ttft_median_s"],
        "peak_vram_gib_default": default["fast"]["peak"]["allocated_gib"],
        "peak_vram_reserved_gib_default": default["fast"]["peak"]["reserved_gib"],
        "max_logit_diff_batched": default.get("batched_logits", {}).get("max_logit_diff"),
        "greedy_tokens_equal_to_generate": default.get("greedy_match", {}).get("equal_prefix"),
    }
    if "batch16" in default:
        summary["batch16_total_tok_s"] = default["batch16"]["total_tok_s"]
        summary["batched_speedup_16"] = default["batch16"]["speedup_vs_one_at_a_time"]
    return summary


def table(results: dict) -> str:
    lines = ["| config | path | TTFT s | decode tok/s (1 req) | 4 concurrent tok/s | 16 concurrent tok/s | peak VRAM GiB (1 req) |",
             "|---|---|---|---|---|---|---|"]
    for name, config in results["configs"].items():
        base, fast = config["baseline"], config["fast"]
        b4, b16 = config.get("batch4", {}), config.get("batch16", {})
        lines.append(f"| {name} | generate, one at a time | {base['ttft_median_s']} | {base['decode_tok_s']} | "
                     f"{base['total_tok_s']} | {base['total_tok_s']} | {base['peak']['allocated_gib']} |")
        lines.append(f"| {name} | fast decoder + batching | {fast['ttft_median_s']} | {fast['decode_tok_s']} "
                     f"({config['speedup_single_decode']}x) | {b4.get('total_tok_s')} ({b4.get('speedup_vs_one_at_a_time')}x) | "
                     f"{b16.get('total_tok_s')} ({b16.get('speedup_vs_one_at_a_time')}x) | {fast['peak']['allocated_gib']} |")
    return "\n".join(lines)


def random_models(work: Path) -> tuple[Path, Path]:
    """Qwen2.5-VL-3B's and clip-ViT-B-32's architectures with random weights, built once in `work`."""
    vlm, clip = work / "qwen2_5_vl_3b_random", work / "clip_vit_b32_random"
    if not (vlm / "config.json").exists():
        build_random_qwen2_5_vl_3b(vlm, device="cuda")
        gc.collect()
        torch.cuda.empty_cache()
    if not (clip / "modules.json").exists():
        build_random_clip_vit_b32(clip)
    return vlm, clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/diagramsite-bench"), help="where the random models go")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu-latest.json")
    parser.add_argument("--tokens", type=int, default=256, help="forced output length")
    parser.add_argument("--configs", default="nf4,bf16")
    parser.add_argument("--quick", action="store_true", help="smoke run: nf4, 48 tokens, batch of 4")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_bench.py needs a CUDA GPU.")
    configs, tokens, batches = args.configs.split(","), args.tokens, [4, 16]
    if args.quick:
        configs, tokens, batches = ["nf4"], 48, [4]
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:7.1f}s {message}", flush=True)

    results: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "versions": versions(), "tokens": tokens}
    log(f"{results['gpu']} {results['versions']}")
    vlm, clip = random_models(args.work)
    log("random models ready")
    results["configs"] = {}
    for quantization in configs:
        results["configs"][quantization] = bench_config(vlm, clip, quantization, tokens, batches, log)
    if not args.quick:
        results["memory_limits"] = memory_limit_checks(vlm, clip, log)
    results.update(summary(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(table(results))
    print(json.dumps({key: value for key, value in results.items() if key not in ("configs", "memory_limits")}, indent=2))


if __name__ == "__main__":
    main()
