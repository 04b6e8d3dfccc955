"""What transformers' own continuous batching can do for us (issue 17's peer), probed on the GPU.

    python bench/cb_probe.py [--out bench/results/cb-probe.json]    # the GPU machine (H200)
    python bench/cb_probe.py --tiny --out /tmp/cb-probe.json       # a CPU smoke run, tiny model

It records, in one JSON file: the installed transformers' API (`generate_batch`,
`init_continuous_batching`, `ContinuousBatchingConfig`'s fields), then for Qwen2.5-VL-3B's
architecture with random weights (bench/gpu_bench.py's builder), nf4 and bf16:
- whether `generate_batch` runs on text-only prompts at all (it takes token ids, no images);
- 16 prompts of 1,500 tokens with 256 new tokens each: wall time, tokens, tokens/s;
- whether its greedy output equals `generate`'s for two of them;
- the peak GPU memory, and how many cache blocks it gave itself.
Each stage is wrapped: a failure is recorded with its reason and the probe goes on. No timed test
asserts on these figures; docs/design/continuous-batching.md reads them.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402

PROMPTS, PROMPT_TOKENS, NEW_TOKENS = 16, 1500, 256


def api_surface() -> dict[str, Any]:
    import transformers
    from transformers import GenerationConfig, PreTrainedModel

    found: dict[str, Any] = {"transformers": transformers.__version__, "torch": torch.__version__}
    for name in ("generate_batch", "init_continuous_batching", "continuous_batching_context_manager"):
        method = getattr(PreTrainedModel, name, None) or _generation_mixin_attr(name)
        found[name] = str(inspect.signature(method)) if method else None
    try:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        found["ContinuousBatchingConfig"] = (
            [field.name for field in dataclasses.fields(ContinuousBatchingConfig)]
            if dataclasses.is_dataclass(ContinuousBatchingConfig)
            else str(inspect.signature(ContinuousBatchingConfig.__init__))
        )
    except ImportError as error:
        found["ContinuousBatchingConfig"] = f"absent: {error}"
    found["GenerationConfig_has_cb_fields"] = [
        name for name in vars(GenerationConfig()) if "batch" in name or "block" in name
    ]
    return found


def _generation_mixin_attr(name: str):
    from transformers.generation.utils import GenerationMixin

    return getattr(GenerationMixin, name, None)


def build_model(work: Path, tiny: bool) -> Path:
    if tiny:
        from describer.inference.tiny import ensure_tiny_models

        return Path(ensure_tiny_models(work).vlm)
    from describer.inference.tiny import build_random_qwen2_5_vl_3b

    target = work / "qwen2_5_vl_3b_random"
    if not (target / "config.json").exists():
        build_random_qwen2_5_vl_3b(target, device="cuda")
        gc.collect()
        torch.cuda.empty_cache()
    return target


def load(source: Path, quantization: str, device: str):
    from transformers import BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if device == "cuda":
        kwargs["device_map"] = "cuda"
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(source, attn_implementation="sdpa", **kwargs)
    return model.eval()


def prompts(vocab: int, count: int, length: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(17)
    low, high = min(1000, vocab // 4), min(vocab, 100_000)  # ordinary tokens, not the special ones
    return [torch.randint(low, high, (length,), generator=generator).tolist() for _ in range(count)]


def generation_config(model, new_tokens: int):
    from transformers import GenerationConfig

    # Random weights: no end-of-text, so every row writes exactly new_tokens.
    return GenerationConfig(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                            pad_token_id=model.generation_config.pad_token_id or 0)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_generate_batch(model, inputs: list[list[int]], new_tokens: int, device: str) -> dict[str, Any]:
    config = generation_config(model, new_tokens)
    synchronize(device)
    started = time.perf_counter()
    outputs = model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
    synchronize(device)
    wall = time.perf_counter() - started
    generated = [list(output.generated_tokens) for output in outputs.values()]
    tokens = sum(len(row) for row in generated)
    return {"wall_s": round(wall, 3), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "rows": len(generated), "outputs": outputs}


def greedy_equal(model, inputs: list[list[int]], outputs: dict, new_tokens: int, device: str) -> list[dict]:
    config = generation_config(model, new_tokens)
    by_prompt = {tuple(output.prompt_ids): list(output.generated_tokens) for output in outputs.values()}
    checks = []
    for prompt in inputs[:2]:
        ids = torch.tensor([prompt], device=model.device)
        single = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
        single_tokens = single[0, len(prompt):].tolist()
        batched = by_prompt.get(tuple(prompt), [])
        same = next((i for i, (a, b) in enumerate(zip(single_tokens, batched)) if a != b), None)
        checks.append({"equal": single_tokens == batched, "first_difference_at": same,
                       "lengths": [len(single_tokens), len(batched)]})
    return checks


def peak_gib(device: str) -> dict[str, float] | None:
    if device != "cuda":
        return None
    return {"allocated": round(torch.cuda.max_memory_allocated() / 2**30, 2),
            "reserved": round(torch.cuda.max_memory_reserved() / 2**30, 2)}


def stage(results: dict, name: str, action) -> Any:
    """Run one stage; its result or its failure goes into results[name]."""
    started = time.perf_counter()
    try:
        value = action()
        results[name] = value if not isinstance(value, dict) else {k: v for k, v in value.items() if k != "outputs"}
        return value
    except Exception as error:  # the probe records what does not work
        results[name] = {"failed": f"{type(error).__name__}: {error}"[:800],
                         "where": traceback.format_exc().strip().splitlines()[-3:]}
        return None
    finally:
        print(f"{time.perf_counter() - started:7.1f}s {name}: {json.dumps(results.get(name), default=str)[:300]}",
              flush=True)


def probe(source: Path, quantization: str, device: str, count: int, length: int, new_tokens: int) -> dict:
    results: dict[str, Any] = {}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = stage(results, "load", lambda: load(source, quantization, device))
    if model is None:
        return results
    results.pop("load", None)
    inputs = prompts(model.config.get_text_config().vocab_size, count, length)
    stage(results, "warm_up", lambda: run_generate_batch(model, inputs[:2], 8, device))
    run = stage(results, "generate_batch", lambda: run_generate_batch(model, inputs, new_tokens, device))
    if run:
        stage(results, "greedy_equal_to_generate", lambda: greedy_equal(model, inputs, run["outputs"], new_tokens, device))
    results["peak_gib"] = peak_gib(device)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cb-probe.json")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "diagramsite-bench")
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU: a smoke run")
    parser.add_argument("--configs", default="nf4,bf16")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("cb_probe.py needs a CUDA GPU (or --tiny).")
    count, length, new_tokens = (4, 64, 16) if args.tiny else (PROMPTS, PROMPT_TOKENS, NEW_TOKENS)
    results: dict[str, Any] = {"api": api_surface(), "prompts": count, "prompt_tokens": length,
                               "new_tokens": new_tokens, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    print(json.dumps(results["api"], indent=2), flush=True)
    source = build_model(args.work, args.tiny)
    configs = ["fp32"] if args.tiny else args.configs.split(",")
    results["configs"] = {name: probe(source, name, device, count, length, new_tokens) for name in configs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
