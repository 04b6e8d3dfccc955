"""Where the fast decoder's step time goes, on a CUDA GPU: graph replay times per (batch, cache
length), and the kernels of one eager step by GPU time.

    python bench/profile_decode.py [--quantization nf4] [--work /tmp/diagramsite-bench]

Uses the random Qwen2.5-VL-3B that gpu_bench.py builds (and builds it if missing).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402

from describer.inference import fast_decode  # noqa: E402
from describer.inference.fast_decode import _DecodeState  # noqa: E402
from describer.inference.runtime import DescriberRuntime  # noqa: E402
from describer.inference.tiny import build_random_clip_vit_b32, build_random_qwen2_5_vl_3b  # noqa: E402


def replay_ms(state: _DecodeState, repeats: int = 50) -> float:
    state.reset([fast_decode.RowLimits(10_000)] * state.batch)
    state.slot.fill_(state.length // 2)
    state.kv_valid[:, : state.length // 2] = True
    for _ in range(3):
        state.run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        state.run()
        state.slot.fill_(state.length // 2)  # stay inside the cache
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def loop_tok_s(runtime: DescriberRuntime, tokens: int = 200) -> float:
    """Tokens/s of FastDecoder.decode itself (no streaming thread, no detokenising)."""
    request = {"role": "user", "content": [{"type": "text", "text": "Describe a flowchart."}]}
    inputs = runtime.prepare_inputs([fast_decode_request(request, tokens)])
    limits = [fast_decode.RowLimits(tokens, tokens)]
    for _ in runtime.decoder.decode([inputs], limits):  # warm-up and capture
        pass
    times = [time.perf_counter() for _ in runtime.decoder.decode([inputs], limits)]
    return (len(times) - 2) / (times[-1] - times[1])


def fast_decode_request(message: dict, tokens: int):
    from describer.inference.runtime import GenerationRequest

    return GenerationRequest(messages=[message], max_new_tokens=tokens, min_new_tokens=tokens)


def kernel_table(state: _DecodeState, top: int = 15) -> str:
    from torch.profiler import ProfilerActivity, profile

    state.graph = None
    state.slot.fill_(state.length // 2)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        state.step()
        torch.cuda.synchronize()
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            name = event.name[:90]
            totals[name][0] += event.device_time_total if hasattr(event, "device_time_total") else event.cuda_time_total
            totals[name][1] += 1
    rows = sorted(totals.items(), key=lambda item: -item[1][0])
    total = sum(value[0] for value in totals.values())
    lines = [f"eager step: {total / 1000:.3f} ms of kernels, {sum(v[1] for v in totals.values())} launches"]
    lines += [f"  {us / 1000:8.3f} ms  {count:4d}x  {name}" for name, (us, count) in rows[:top]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("/tmp/diagramsite-bench"))
    parser.add_argument("--quantization", default="nf4")
    args = parser.parse_args()
    vlm, clip = args.work / "qwen2_5_vl_3b_random", args.work / "clip_vit_b32_random"
    if not (vlm / "config.json").exists():
        build_random_qwen2_5_vl_3b(vlm, device="cuda")
        torch.cuda.empty_cache()
    if not (clip / "modules.json").exists():
        build_random_clip_vit_b32(clip)
    runtime = DescriberRuntime.load(vlm, clip, quantization=args.quantization, max_vram="16GiB", max_ram="32GiB")
    stack = runtime.decoder.stack
    # Read per step: every language-model weight but the embedding table (one row of it), and the
    # output head (tied to that table).
    language_model = runtime.model.model.language_model
    weight_bytes = sum(p.numel() * p.element_size() for p in language_model.parameters())
    print(f"language model weights read per step: {weight_bytes / 2**30:.2f} GiB", flush=True)
    print(f"decode loop, one short request: {loop_tok_s(runtime):.1f} tok/s", flush=True)
    with torch.no_grad():
        for batch, length in ((1, 4096), (16, 4096)):
            state = _DecodeState(stack, batch, length)
            t = time.perf_counter()
            state.capture()
            print(f"batch {batch:2d} cache {length}: capture {time.perf_counter() - t:.2f} s, "
                  f"replay {replay_ms(state):.3f} ms/step", flush=True)
            print(kernel_table(state), flush=True)
            state = None
            torch.cuda.empty_cache()

if __name__ == "__main__":
    main()
