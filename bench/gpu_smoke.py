"""The runtime's CUDA-only behaviours on the tiny model (CI has no GPU): the CUDA-graph decoder streams,
is deterministic, batches, honours deadlines and early closing, and turns CUDA out-of-memory into
OutOfMemory and recovers. Prints one line a check and exits non-zero if one fails.

    python bench/gpu_smoke.py
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from describer.inference.errors import GenerationTimeout, OutOfMemory  # noqa: E402
from describer.inference.runtime import DescriberRuntime, GenerationRequest  # noqa: E402
from describer.inference.tiny import build_tiny_models  # noqa: E402


def diagram(size=(640, 400)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).rectangle((40, 40, 240, 120), outline="black", width=3)
    return image


def request(image=None, tokens: int = 24, text: str = "Describe this diagram.") -> GenerationRequest:
    content = ([{"type": "image", "image": image}] if image is not None else []) + [{"type": "text", "text": text}]
    return GenerationRequest(messages=[{"role": "user", "content": content}], max_new_tokens=tokens, min_new_tokens=tokens)


def no_threads_left() -> bool:
    return not [t for t in threading.enumerate() if t.name == "describer-generate" and t.is_alive()]


def main() -> None:
    paths = build_tiny_models(Path(tempfile.mkdtemp()))
    runtime = DescriberRuntime.load(paths.vlm, paths.clip, max_pixels=256 * 28 * 28)
    checks = {}

    def check(name, function):
        try:
            checks[name] = bool(function())
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            checks[name] = False
        print(f"{'PASS' if checks[name] else 'FAIL'}  {name}", flush=True)

    check("the CUDA-graph decoder is on", lambda: runtime.decoder is not None and runtime.decoder.cuda_graphs)
    check("stream() yields non-empty chunks", lambda: all(c for c in runtime.stream(request(diagram()))))
    check("stream() is deterministic", lambda: "".join(runtime.stream(request(diagram()))) == "".join(runtime.stream(request(diagram()))))

    def batch_counts():
        finals, tokens = Counter(), Counter()
        for index, chunk in runtime.stream_batch([request(diagram(), 5), request(None, 30, "Hi " * 30), request(diagram((300, 900)), 17)]):
            tokens[index] += chunk.tokens
            finals[index] += chunk.final
        return dict(tokens) == {0: 5, 1: 30, 2: 17} and set(finals.values()) == {1}

    check("a batch counts each row's tokens and ends each row once", batch_counts)

    def stopped_row_leaves_the_batch():
        # A cancelled job: its row leaves at the next graph step, the other rows go on unchanged.
        requests = [request(diagram(), 120), request(None, 120, "Hi " * 30), request(diagram((300, 900)), 120)]
        alone = {index: "" for index in range(3)}
        for index, chunk in runtime.stream_batch(requests):
            alone[index] += chunk
        stopped, tokens, texts, finals = set(), Counter(), {index: "" for index in range(3)}, Counter()
        for index, chunk in runtime.stream_batch(requests, stopped=stopped):
            tokens[index] += chunk.tokens
            texts[index] += chunk
            finals[index] += chunk.final
            if index == 1 and tokens[1] >= 10:
                stopped.add(1)
        print(f"      tokens per row with row 1 stopped at 10: {dict(tokens)}")
        return (
            10 <= tokens[1] <= 13 and finals[1] == 0
            and tokens[0] == tokens[2] == 120 and finals[0] == finals[2] == 1
            and texts[0] == alone[0] and texts[2] == alone[2] and no_threads_left()
        )

    check("a stopped row leaves the batch at the next step; the others go on unchanged", stopped_row_leaves_the_batch)

    def deadline():
        started = time.monotonic()
        try:
            list(runtime.stream(request(None, 20_000), deadline=started + 0.5))
        except GenerationTimeout:
            return time.monotonic() - started < 5 and no_threads_left()
        return False

    check("a deadline stops decoding with GenerationTimeout", deadline)

    def closing():
        stream = runtime.stream(request(None, 20_000))
        next(stream)
        stream.close()
        return no_threads_left()

    check("closing the stream stops the decode thread", closing)

    def out_of_memory():
        outcomes = []
        for spare_mib in (8, 4, 2, 1):
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info()
            try:
                blocker = torch.empty(free - spare_mib * 2**20, dtype=torch.uint8, device="cuda")
            except torch.OutOfMemoryError:
                continue  # the allocator's rounding: not this margin
            try:
                "".join(runtime.stream(request(diagram((4000, 3000)))))
                outcomes.append("ok")
            except OutOfMemory as error:
                outcomes.append("out of memory")
                assert "MODEL_MAX_VRAM" in str(error)
            except Exception as error:  # noqa: BLE001 - reported: the job would fail with it
                outcomes.append(f"{type(error).__name__}: {str(error)[:120]}")
            finally:
                del blocker
        print(f"      outcomes with a few MiB free: {outcomes}")
        recovered = bool("".join(runtime.stream(request(diagram())))) and no_threads_left()
        print(f"      the next request runs: {recovered}")
        return "out of memory" in outcomes and recovered

    check("CUDA out of memory becomes OutOfMemory, and the next request runs", out_of_memory)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
