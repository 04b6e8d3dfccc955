"""GPU benchmark of fine-tuning and of serving the adapter, with the project's own code
(describer/inference/finetune.py, loading.merged_with_adapter, DescriberRuntime).

Qwen2.5-VL-3B-Instruct's real architecture with random weights (no weights can be downloaded),
diagrams of the default size (1600x1200, seen at DESCRIBER_MAX_PIXELS = 1280 image tokens) with
generated process descriptions as answers. In one run it measures:

- QLoRA (4-bit NF4 base, LoRA r=16 on every projection of the language model), batch 1, gradient
  checkpointing: peak VRAM (allocated and reserved), samples per second, minutes per 1,000 samples;
- merging the adapter into the weights and quantising again: time to merge, time to load the
  merged model, against loading the base model;
- decode tokens/s of one request through the worker's fast decoder: base model and merged
  adapter, side by side (the goal: the adapter at least 90% of the base);
- the merge's quality: next-token agreement and KL divergence over the answer's positions of
  the served model (merged, 4-bit again) against the adapter as trained (4-bit base + LoRA) and
  against the bf16 base + LoRA; the 4-bit base against the bf16 base is the yardstick.

    python bench/finetune_gpu.py --json bench/results/finetune-gpu.json

Needs CUDA, torch, transformers, bitsandbytes, accelerate, peft, and pydantic (no Django).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from describer.graph.generate import plan_item  # noqa: E402
from describer.inference.finetune import Sample, TrainingSettings, finish_run, train  # noqa: E402
from describer.inference.loading import DEFAULT_MAX_IMAGE_PIXELS, load_vlm, merged_with_adapter  # noqa: E402
from describer.inference.runtime import DescriberRuntime, GenerationRequest  # noqa: E402
from describer.inference.tiny import build_random_clip_vit_b32, build_random_qwen2_5_vl_3b  # noqa: E402
from describer import prompts  # noqa: E402

GIB = 2**30


def diagram(plan, size=(1600, 1200)) -> Image.Image:
    """The plan's nodes as labelled boxes in rows, joined by arrows: a default-size diagram."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    nodes = plan.graph.nodes[:18]
    for index, node in enumerate(nodes):
        column, row = index % 3, index // 3
        x, y = 80 + column * 500, 60 + row * 180
        draw.rounded_rectangle((x, y, x + 400, y + 110), radius=18, outline="black", width=4)
        draw.text((x + 20, y + 40), node.label[:30], fill="black", font=font)
        if index:
            draw.line((x - 100, y + 55, x, y + 55), fill="black", width=3)
    return image


def samples(folder: Path, count: int) -> list[Sample]:
    found, index = [], 0
    folder.mkdir(parents=True, exist_ok=True)
    while len(found) < count:
        plan = plan_item(15, index)
        index += 1
        if len(plan.graph.nodes) > 18:
            continue
        path = folder / f"{plan.name}.png"
        diagram(plan).save(path)
        # truth None: no validation generation in the timed run (it is measured on the CPU).
        found.append(Sample(plan.name, path, plan.text, plan.graph.language, None))
    return found


def train_qlora(base: Path, data: list[Sample], work: Path, steps: int) -> tuple[Path, dict]:
    settings = TrainingSettings(rank=16, alpha=32, learning_rate=2e-4, epochs=1, repeats=1, patience=1,
                                max_pixels=DEFAULT_MAX_IMAGE_PIXELS, gradient_checkpointing=True,
                                quantization="nf4", max_vram="7GiB", max_ram="64GiB")  # fmt: skip
    run_dir = work / "v0001.partial"
    run_dir.mkdir(parents=True)
    torch.cuda.reset_peak_memory_stats()
    report = train(str(base), data[:steps], [], settings, run_dir, data_sha256="bench")
    figures = {
        "samples": steps,
        "seconds": report["seconds"],
        "samples_per_second": report["samples_per_second"],
        "minutes_per_1000_samples": round(1000 / report["samples_per_second"] / 60, 1),
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
        "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
        "train_loss": report["epochs"][-1]["train_loss"],
        "settings": report["settings"],
    }
    final = finish_run(run_dir, report)
    gc.collect()
    torch.cuda.empty_cache()
    return final, figures


def _time_steps() -> dict[str, list[float]]:
    """Where a training step's time goes: preparing the sample (CPU) and the rest."""
    from describer.inference import finetune

    timing: dict[str, list[float]] = {"prepare_sample": []}
    original = finetune._Encoder.__call__

    def timed(self, sample):
        started = time.perf_counter()
        result = original(self, sample)
        timing["prepare_sample"].append(time.perf_counter() - started)
        return result

    finetune._Encoder.__call__ = timed
    return timing


def decode_speed(runtime: DescriberRuntime, image: Image.Image, tokens: int, runs: int = 3) -> dict:
    request = GenerationRequest(
        messages=prompts.describe_messages(image, [], "en", short=True), max_new_tokens=tokens, min_new_tokens=tokens
    )
    rates = []
    for _ in range(runs + 1):  # the first warms up (CUDA graphs)
        torch.cuda.synchronize()
        first = None
        count = 0
        started = time.perf_counter()
        for chunk in runtime.stream(request):
            count += chunk.tokens
            if first is None and chunk.tokens:
                first, first_count = time.perf_counter(), count
        torch.cuda.synchronize()
        rates.append((count - first_count) / (time.perf_counter() - first))
    rates = sorted(rates[1:])
    return {"decode_tok_s_median": round(rates[len(rates) // 2], 1), "runs": [round(r, 1) for r in rates]}


def load_runtime(base: Path, clip: Path, adapter=None) -> DescriberRuntime:
    return DescriberRuntime.load(base, clip, max_vram="7GiB", max_ram="64GiB", quantization="nf4", adapter=adapter)


@torch.no_grad()
def next_token_logits(model, processor, sample: Sample) -> torch.Tensor:
    """Log-probabilities at the answer's positions, teacher-forced (the training encoder's inputs)."""
    from describer.inference.finetune import _Encoder

    encoder = _Encoder(processor, TrainingSettings(max_pixels=DEFAULT_MAX_IMAGE_PIXELS))
    inputs, predicting = encoder(sample)
    device = next(model.parameters()).device
    inputs = {key: value.to(device) for key, value in inputs.items()}
    logits = model(**inputs, logits_to_keep=predicting.to(device), use_cache=False).logits[0].float()
    return torch.log_softmax(logits, dim=-1).cpu()


def compare(reference: torch.Tensor, other: torch.Tensor) -> dict:
    agreement = (reference.argmax(-1) == other.argmax(-1)).float().mean().item()
    kl = torch.nn.functional.kl_div(other, reference, log_target=True, reduction="none").sum(-1).mean().item()
    return {"top1_agreement": round(agreement, 4), "kl_nats": round(kl, 5)}


def merge_quality(base: Path, adapter: Path, merged: Path, sample: Sample) -> dict:
    from peft import PeftModel

    logits = {}
    for name, source, quantization, with_adapter in (
        ("bf16 base + LoRA", base, "bf16", True), ("nf4 base + LoRA (as trained)", base, "nf4", True),
        ("nf4 merged (as served)", merged, "nf4", False), ("bf16 base", base, "bf16", False),
        ("nf4 base", base, "nf4", False),
    ):  # fmt: skip
        model, processor = load_vlm(str(source), max_vram="40GiB", max_ram="64GiB", quantization=quantization, cache_dir="")
        if with_adapter:
            model = PeftModel.from_pretrained(model, str(adapter))
        logits[name] = next_token_logits(model, processor, sample)
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return {
        "served vs as trained": compare(logits["nf4 base + LoRA (as trained)"], logits["nf4 merged (as served)"]),
        "served vs bf16 base + LoRA": compare(logits["bf16 base + LoRA"], logits["nf4 merged (as served)"]),
        "yardstick: nf4 base vs bf16 base": compare(logits["bf16 base"], logits["nf4 base"]),
        "adapter's effect: nf4 base + LoRA vs nf4 base": compare(logits["nf4 base"], logits["nf4 base + LoRA (as trained)"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="training samples (batch 1)")
    parser.add_argument("--tokens", type=int, default=256, help="decoded tokens per speed run")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "finetune-gpu.json")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--cap-gib", type=float, default=7.0,
                        help="cap the process's GPU memory here while training (what an 8 GB card leaves)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="finetune-bench-"))
    results: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version()}
    import peft
    import transformers

    results.update(transformers=transformers.__version__, peft=peft.__version__)
    started = time.perf_counter()
    base = build_random_qwen2_5_vl_3b(work / "qwen2_5_vl_3b", device="cuda")
    clip = build_random_clip_vit_b32(work / "clip")
    torch.cuda.empty_cache()
    results["build_s"] = round(time.perf_counter() - started, 1)
    data = samples(work / "images", args.steps)
    random.Random(0).shuffle(data)

    total = torch.cuda.get_device_properties(0).total_memory
    # The allocator may not reserve past the cap: a run that needed more would fail with OOM here.
    torch.cuda.set_per_process_memory_fraction(args.cap_gib * GIB / total)
    timing = _time_steps()
    adapter_dir, results["qlora"] = train_qlora(base, data, work / "adapters", args.steps)
    results["qlora"]["memory_cap_gib"] = args.cap_gib
    results["qlora"]["seconds_per_sample"] = {name: round(sum(values) / len(values), 3) for name, values in timing.items()}
    torch.cuda.set_per_process_memory_fraction(1.0)
    print(json.dumps(results["qlora"], indent=1), flush=True)

    from describer.adapters import check

    info = check(adapter_dir, base_source=str(base))
    image = Image.open(data[0].image).convert("RGB")
    started = time.perf_counter()
    runtime = load_runtime(base, clip)
    results["load_base_s"] = round(time.perf_counter() - started, 1)
    results["decode_base"] = decode_speed(runtime, image, args.tokens)
    del runtime
    gc.collect()
    torch.cuda.empty_cache()

    started = time.perf_counter()
    runtime = load_runtime(base, clip, adapter=info)
    results["load_adapter_first_s"] = round(time.perf_counter() - started, 1)
    results["load_adapter_first_parts_s"] = runtime.load_seconds
    results["decode_adapter"] = decode_speed(runtime, image, args.tokens)
    del runtime
    gc.collect()
    torch.cuda.empty_cache()
    started = time.perf_counter()
    runtime = load_runtime(base, clip, adapter=info)
    results["load_adapter_cached_s"] = round(time.perf_counter() - started, 1)
    del runtime
    gc.collect()
    torch.cuda.empty_cache()
    results["adapter_decode_vs_base"] = round(
        results["decode_adapter"]["decode_tok_s_median"] / results["decode_base"]["decode_tok_s_median"], 3
    )
    print(json.dumps({k: results[k] for k in ("load_base_s", "load_adapter_first_s", "load_adapter_cached_s",
                                              "decode_base", "decode_adapter", "adapter_decode_vs_base")}), flush=True)  # fmt: skip
    results["merge_quality"] = merge_quality(base, adapter_dir, Path(merged_with_adapter(str(base), adapter_dir)), data[0])
    print(json.dumps(results["merge_quality"], indent=1), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
