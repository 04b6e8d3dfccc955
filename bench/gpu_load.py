"""Load benchmark for issue 17 (continuous batching), docs/design/continuous-batching.md section 5.

The nf4 random Qwen2.5-VL-3B and gpu_bench.py's requests (a 1600x1200 diagram, 3 examples, ``--tokens``
forced, no grammar), loaded once with the engine's options (ceiling 32, 4,096 prompt tokens, chunks of
2,048 (--prefill-chunk), slots budgeted from ``--vram``). No Django needed.

    python bench/gpu_load.py --phase checks    # -> $OUT/gpu-load-checks.json
    python bench/gpu_load.py --phase load      # -> $OUT/gpu-load.json; no point starts past --budget-s 540
    python bench/gpu_load.py --tiny --phase all --out /tmp/gpuload-smoke    # CPU smoke run, tiny model

checks: one request's decode tok/s and TTFT, engine against static batcher, side by side; in a
subprocess capped at ``--vram``, 32 jobs at once through the engine (OutOfMemory count, peak, slots);
2 requests through transformers' continuous batching (the peer).
load: static capacity mu (16 requests at once), then for each rho in ``--loads`` one seeded Poisson
arrival sequence (lambda = rho * mu, ``--jobs`` jobs) through "engine" (submitted while a slot is
free), "static" (today's worker loop: take what has arrived, a 50 ms window, run the batch to its end)
and "peer". The JSON is written after every point; points past the budget are recorded as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import queue
import random
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, deque
from contextlib import closing
from pathlib import Path
from typing import Any

STARTED = time.perf_counter()  # --budget-s counts from here: torch's import included

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _without_django  # noqa: E402, F401 - before describer.inference

import torch  # noqa: E402

import gpu_bench as gb  # noqa: E402
from describer import prompts  # noqa: E402
from describer.inference.runtime import CONTINUOUS, STATIC, DescriberRuntime, GenerationRequest  # noqa: E402

CUDA = torch.cuda.is_available()
STATIC_BATCH, BATCH_WINDOW_S = 16, 0.05  # DESCRIBER_BATCH_SIZE and DESCRIBER_BATCH_WINDOW_MS today
SYSTEMS = ("engine", "static", "peer")
CAVEATS = [
    "p95 is nearest-rank: with 20 samples it is the second largest value (max is given too).",
    "peer: transformers' continuous batching gets the same input_ids (image pad tokens included) but no "
    "pixel_values, so it skips the vision tower; no M-RoPE (2-D positions), no penalty, no min_new_tokens "
    "(eos_token_id=-1 forces the length), no grammar; prefix sharing off unless --peer-prefix-sharing.",
    "static recaptures its CUDA graph when the batch shape changes (2 shapes kept), as the worker does today.",
    "engine TTFT and gaps are read at the consumer: tokens come one step behind, a step's tokens together.",
    "the clock starts at arrival, before prepare_inputs, for all three systems.",
    "peak_gib is the process's peak during a point: the engine's pool, the static decoder's buffers and the "
    "peer's cache all stay allocated (oom32's peak is the engine's alone).",
]
now = time.perf_counter
PREFIX = "[oom32] " if "oom32" in sys.argv else ""  # the subprocess's lines, in the same log


def log(message: str) -> None:
    print(f"{now() - STARTED:7.1f}s {PREFIX}{message}", flush=True)


def error_text(error: BaseException | str) -> str:
    return error if isinstance(error, str) else f"{type(error).__name__}: {error}"[:600]


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def size_bytes(size: str) -> int:
    from accelerate.utils import convert_file_size_to_int

    return convert_file_size_to_int(size)


def versions() -> dict:
    try:
        return gb.versions()
    except Exception:  # noqa: BLE001 - no nvidia-smi or bitsandbytes (the CPU smoke run)
        import transformers

        return {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}


# --- Setup ------------------------------------------------------------------------------------


def request(args, seed: int, tokens: int | None = None) -> GenerationRequest:
    tokens = tokens or args.tokens
    if not args.tiny:
        return gb.describe_request(seed, tokens)
    image = gb.synthetic_diagram(seed, (320, 240))  # the tiny tokenizer is byte-level: a short prompt
    return GenerationRequest(prompts.describe_messages(image, gb.EXAMPLE_DESCRIPTIONS[:1], ""), tokens, tokens)


def load_runtime(args) -> DescriberRuntime:
    if args.tiny:
        from describer.inference.tiny import ensure_tiny_models

        paths = ensure_tiny_models(args.work)
        vlm, clip = paths.vlm, paths.clip
    else:
        vlm, clip = gb.random_models(args.work)
    options = {"ceiling": 32, "max_prompt_tokens": 4096, "max_new_tokens": args.tokens, "prefill_chunk": args.prefill_chunk,
               "max_vram": size_bytes(args.vram), "constrained": False,
               # The slots are budgeted from --vram; the process is capped only in oom32's subprocess.
               "enforce_max_vram": False}  # fmt: skip
    started = now()
    runtime = DescriberRuntime.load(vlm, clip, max_vram=args.vram, quantization="nf4", scheduler=CONTINUOUS,
                                    engine_options=options)  # fmt: skip
    log(f"runtime loaded in {now() - started:.1f} s on {runtime.device}")
    return runtime


def build_engine(runtime: DescriberRuntime) -> dict:
    started = now()
    runtime.engine()  # sizes the slots (a warm-up prefill on CUDA) and captures every bucket's graph
    budget = runtime.budget
    result = {"build_s": round(now() - started, 2), "budget": budget.as_dict() if budget else None,
              "budget_notes": budget.notes if budget else None}  # fmt: skip
    log(f"engine: {result}")
    return result


def warm(runtime: DescriberRuntime, scheduler: str, requests: list[GenerationRequest]) -> None:
    """A few tokens, then close: the static batcher captures its graph for this shape."""
    runtime.scheduler = scheduler
    with closing(runtime.stream_batch(requests)) as stream:
        for count, _ in enumerate(stream):
            if count >= 3 * len(requests):
                break


# --- Jobs and figures ---------------------------------------------------------------------------


@dataclasses.dataclass
class Job:
    arrival: float  # seconds on the point's clock, as every time here
    first: float | None = None
    last: float | None = None
    end: float | None = None
    tokens: int = 0
    gap: float = 0.0  # the longest wait between two token arrivals
    error: str | None = None

    def token(self, at: float, count: int = 1) -> None:
        if count > 0:
            self.gap = max(self.gap, at - self.last) if self.first is not None else 0.0
            self.first = self.first if self.first is not None else at
            self.last, self.tokens = at, self.tokens + count

    def fail(self, at: float, error: BaseException | str) -> None:
        self.error, self.end = error_text(error), at


def pct(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return round(values[max(0, math.ceil(q * len(values)) - 1)], 3) if values else None


def figures(run: tuple[list[Job], dict], tokens: int) -> dict:
    jobs, extra = run
    done = [job for job in jobs if job.end is not None and job.error is None]
    span = (max(job.end for job in done) - min(job.arrival for job in jobs)) if done else None
    total = sum(job.tokens for job in jobs)
    ttft = [job.first - job.arrival for job in done if job.first is not None]
    latency, gaps = [job.end - job.arrival for job in done], [job.gap for job in done]
    return {
        "jobs": len(jobs), "completed": len(done), "errors": len(jobs) - len(done),
        "error_kinds": dict(Counter((job.error or "unfinished")[:100] for job in jobs if job not in done)),
        "ttft_p50_s": pct(ttft, 0.5), "ttft_p95_s": pct(ttft, 0.95), "ttft_max_s": pct(ttft, 1),
        "latency_p50_s": pct(latency, 0.5), "latency_p95_s": pct(latency, 0.95), "latency_max_s": pct(latency, 1),
        "tokens": total, "rows_short_of_tokens": sum(job.tokens < tokens for job in done),
        "makespan_s": round(span, 3) if span else None, "tokens_per_s": round(total / span, 1) if span else None,
        "jobs_per_s": round(len(done) / span, 3) if span else None,
        "max_gap_per_row_s": {"p50": pct(gaps, 0.5), "p95": pct(gaps, 0.95), "max": pct(gaps, 1)},
        "per_job": [[None if v is None else round(v, 3) for v in (j.arrival, j.first, j.last, j.end)] + [j.tokens]
                    for j in jobs],  # [arrival, first token, last token, end, tokens]
        **extra,
    }  # fmt: skip


def arrivals_for(rate: float, count: int, seed: int) -> list[float]:
    rng, times, at = random.Random(seed), [], 0.0
    for _ in range(count):
        times.append(round(at, 4))
        at += rng.expovariate(rate)
    return times


def feeder(arrivals: list[float], start: float, submit, ready, stop: threading.Event) -> threading.Thread:
    """A thread that hands job i to ``submit(i)`` at its arrival, FIFO, whenever ``ready()``."""

    def feed() -> None:
        pending, index = deque(), 0
        while (index < len(arrivals) or pending) and not stop.is_set():
            while index < len(arrivals) and arrivals[index] <= now() - start:
                pending.append(index)
                index += 1
            while pending and ready():
                submit(pending.popleft())
            wait = arrivals[index] - (now() - start) if index < len(arrivals) else 0.0
            time.sleep(0.005 if pending else max(0.0, wait))

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


# --- The three systems -------------------------------------------------------------------------


def run_engine(runtime, requests, arrivals, tag, timeout, gated: bool = True) -> tuple[list[Job], dict]:
    """submit at arrival while the engine has a free slot (the worker claims only then), else FIFO;
    ``gated=False`` submits at arrival whatever the room (the engine then queues them itself)."""
    runtime.scheduler = CONTINUOUS
    engine = runtime.engine().engine
    engine.steps.clear()  # stats() for this point only
    jobs, sink, stop, start = [Job(at) for at in arrivals], queue.Queue(), threading.Event(), now() + 0.05

    def submit(number: int) -> None:
        try:
            runtime.submit((tag, number), requests[number], sink)
        except Exception as error:  # noqa: BLE001 - recorded for that job
            sink.put((number, error))

    thread = feeder(arrivals, start, submit, lambda: not gated or runtime.free_slots() > 0, stop)
    open_jobs = set(range(len(jobs)))
    while open_jobs and now() - start < timeout:
        try:
            event = sink.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(event, tuple):
            jobs[event[0]].fail(now() - start, event[1])
            open_jobs.discard(event[0])
            continue
        job, at = jobs[event.rid[1]], now() - start
        if event.error is not None:
            job.fail(at, event.error)
        elif event.token is not None:
            job.token(at)
        if event.finished:
            open_jobs.discard(event.rid[1])
            job.end = job.end if job.end is not None else at
    stop.set()
    for number in open_jobs:
        runtime.cancel((tag, number))
        jobs[number].fail(now() - start, f"timed out after {timeout:.0f} s")
    thread.join(timeout=5)
    pieces: dict[str, list[float]] = {}  # step times by the prefill piece they also ran: the stall
    for record in list(engine.steps):
        kind = (record.prefill or "decode only") + ("" if record.rows else ", nothing decoding")
        pieces.setdefault(kind, []).append(record.seconds * 1000)
    by_piece = {kind: {"p50": pct(ms, 0.5), "p95": pct(ms, 0.95), "max": pct(ms, 1), "steps": len(ms)}
                for kind, ms in pieces.items()}  # fmt: skip
    return jobs, {"engine_stats": engine.stats(), "step_ms_by_piece": by_piece}


def run_static(runtime, requests, arrivals, timeout, window: float = BATCH_WINDOW_S) -> tuple[list[Job], dict]:
    """Today's loop: when idle, take what has arrived (<= 16), wait the batch window, take more, run to the end."""
    runtime.scheduler = STATIC
    jobs, batches, taken, start = [Job(at) for at in arrivals], [], 0, now() + 0.05
    arrived = lambda: sum(at <= now() - start for at in arrivals[taken : taken + STATIC_BATCH])  # noqa: E731
    while taken < len(jobs) and now() - start < timeout:
        time.sleep(max(0.0, arrivals[taken] - (now() - start)))
        if arrived() < STATIC_BATCH:
            time.sleep(window)
        batch = list(range(taken, taken + arrived()))
        taken += len(batch)
        batches.append(len(batch))
        try:
            for index, chunk in runtime.stream_batch([requests[number] for number in batch]):
                job, at = jobs[batch[index]], now() - start
                job.token(at, chunk.tokens)
                job.end = at if chunk.final else job.end
        except Exception as error:  # noqa: BLE001 - the whole batch fails, as in the worker
            for number in batch:
                if jobs[number].end is None:
                    jobs[number].fail(now() - start, error)
    for job in jobs[taken:]:
        job.fail(now() - start, f"timed out after {timeout:.0f} s")
    return jobs, {"batches": batches}


class Peer:
    """transformers' continuous batching on the runtime's model: made (and warmed up) once, started for
    each point and stopped after it. Its attention implementation is set only while it runs: older
    releases switch the model to "paged|sdpa" for good, which would break our prefills."""

    def __init__(self, runtime: DescriberRuntime, args) -> None:
        self.runtime, self.args, self.manager, self.info = runtime, args, None, {}

    def start(self, tokens: int):
        model = self.runtime.model
        if self.manager is not None:
            if model.config._attn_implementation != self.own:
                model.set_attn_implementation(self.own)
            self.manager.start()
            return self.manager
        from transformers import GenerationConfig

        try:
            from transformers.generation.configuration_utils import ContinuousBatchingConfig as Config
        except ImportError:
            Config = None  # noqa: N806
        fields = {f.name for f in dataclasses.fields(Config)} if Config else set()
        page = (getattr(Config(), "page_size", None) or getattr(Config(), "block_size", None)) if Config else None
        budget, slot_length = self.runtime.budget, self.runtime.engine().engine.slot_length
        wanted = {"num_blocks": math.ceil(budget.slots * (slot_length + 1) / (page or 256)),  # our K/V bytes
                  "max_requests_per_batch": budget.slots, "auto_switch_to_flash": False,
                  "allow_block_sharing": self.args.peer_prefix_sharing,
                  "max_batch_tokens": self.args.peer_batch_tokens or None}  # fmt: skip
        passed = {key: value for key, value in wanted.items() if key in fields and value is not None}
        generation = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=None,
                                      pad_token_id=model.generation_config.pad_token_id or 0)  # fmt: skip
        init = inspect.signature(model.init_continuous_batching).parameters
        kwargs: dict[str, Any] = {"generation_config": generation}
        if Config is not None and "continuous_batching_config" in init:
            kwargs["continuous_batching_config"] = Config(**passed)
        else:  # older releases read these from the generation config
            for key, value in passed.items():
                setattr(generation, key, value)
        self.original = model.config._attn_implementation
        self.manager = model.init_continuous_batching(**kwargs)
        self.own = model.config._attn_implementation
        add = list(inspect.signature(self.manager.add_request).parameters)
        self.info["config"] = {"page_size": page, "passed": passed, "absent": sorted(set(wanted) - fields),
                               "init_params": list(init), "attn_implementation": [self.original, self.own],
                               "add_request_params": add}  # fmt: skip
        if hasattr(self.manager, "warmup") and not getattr(self.manager, "warmed_up", True):
            started = now()
            try:  # captures its CUDA graphs; without it they are captured during the first point
                self.manager.warmup()
            except Exception as error:  # noqa: BLE001
                traceback.print_exc()
                self.info["warmup_error"] = error_text(error)
            self.info["warmup_s"] = round(now() - started, 2)
        self.manager.start()
        return self.manager

    def stop(self) -> None:
        keep = "keep_for_next_session" in inspect.signature(self.manager.stop).parameters
        self.manager.stop(block=True, timeout=30, **({"keep_for_next_session": True} if keep else {}))
        if self.runtime.model.config._attn_implementation != self.original:
            self.runtime.model.set_attn_implementation(self.original)

    def close(self) -> None:
        try:
            if self.manager is not None and hasattr(self.runtime.model, "destroy_cached_continuous_batching_manager"):
                self.runtime.model.destroy_cached_continuous_batching_manager()
        except Exception:  # noqa: BLE001 - the results are written already
            traceback.print_exc()
        self.manager = None


def run_peer(peer: Peer, requests, arrivals, tag, timeout, tokens) -> tuple[list[Job], dict]:
    """add_request at arrival: the same input_ids, prepared at arrival as for the others, no pixel_values."""
    jobs, stop, failures, extra = [Job(at) for at in arrivals], threading.Event(), queue.Queue(), {}
    manager = peer.start(tokens)
    options = {"max_new_tokens": tokens, "streaming": True}
    options.update({"eos_token_id": -1} if "eos_token_id" in peer.info["config"]["add_request_params"] else {})

    def submit(number: int) -> None:
        try:
            ids = peer.runtime.prepare_inputs([requests[number]])["input_ids"][0].tolist()
            manager.add_request(ids, request_id=f"{tag}-{number}", **options)
        except Exception as error:  # noqa: BLE001
            failures.put((number, error))

    start = now() + 0.05
    thread, open_jobs = feeder(arrivals, start, submit, lambda: True, stop), set(range(len(jobs)))
    try:
        while open_jobs and now() - start < timeout:
            while not failures.empty():
                number, error = failures.get()
                jobs[number].fail(now() - start, error)
                open_jobs.discard(number)
            result = manager.get_result(timeout=0.1)
            if result is None:
                if not manager.is_running():
                    raise RuntimeError("the peer's generation thread stopped")
                continue
            number = int(str(result.request_id).rsplit("-", 1)[1])
            job, at = jobs[number], now() - start
            if result.error:
                job.fail(at, f"peer: {result.error}")
            else:  # streaming: every output holds all the tokens so far
                job.token(at, len(result.generated_tokens) - job.tokens)
            if result.is_finished():
                open_jobs.discard(number)
                job.end = job.end if job.end is not None else at
    finally:
        stop.set()
        for number in open_jobs:
            manager.cancel_request(f"{tag}-{number}")
            jobs[number].fail(now() - start, jobs[number].error or f"timed out after {timeout:.0f} s")
        cache = getattr(getattr(manager, "batch_processor", None), "cache", None)
        extra["resolved"] = {key: getattr(cache, key, None) for key in ("num_blocks", "max_batch_tokens")}
        peer.stop()
        thread.join(timeout=5)
    return jobs, extra


def point(name: str, action) -> dict:
    """One system at one load: its figures, or the error; never an exception."""
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    started = now()
    try:
        result = action()
    except Exception as error:  # noqa: BLE001 - recorded; the other systems go on
        traceback.print_exc()
        result = {"error": error_text(error)}
    result.update(wall_s=round(now() - started, 2), peak_gib=gb.peak_gib() if CUDA else None)
    keys = ("error", "completed", "ttft_p50_s", "ttft_p95_s", "latency_p50_s", "latency_p95_s", "tokens_per_s",
            "jobs_per_s")  # fmt: skip
    log(f"{name}: { {key: result[key] for key in keys if key in result} }")
    return result


# --- Phases ----------------------------------------------------------------------------------------


def single(runtime, system: str, req: GenerationRequest) -> dict:
    """One request alone (no batch window): TTFT, and decode tok/s = (tokens - 1) / (last - first token)."""
    if system == "engine":
        job = run_engine(runtime, [req], [0.0], f"single-{now()}", 300)[0][0]
    else:
        job = run_static(runtime, [req], [0.0], 300, window=0.0)[0][0]
    timed = job.error is None and job.first is not None and job.last > job.first
    decode = (job.tokens - 1) / (job.last - job.first) if timed else None
    return {"ttft_s": round(job.first - job.arrival, 4) if job.first is not None else None, "tokens": job.tokens,
            "error": job.error, "decode_tok_s": round(decode, 1) if decode else None}  # fmt: skip


def chunk_sweep(runtime, args) -> dict:
    """A newcomer joins one running row, with prefill pieces of 512, 1024 and 2048 tokens: the
    newcomer's time to first token and the running row's longest wait between two tokens."""
    engine, results = runtime.engine().engine, {}
    for chunk in (512, 1024, 2048):
        engine.prefill_chunk, sink = chunk, queue.Queue()
        engine.steps.clear()
        runtime.submit(("sweep", chunk, 0), request(args, 300, 256), sink)
        seen, last, gaps, first, added, done = 0, None, [], None, None, set()
        while len(done) < 2:
            event = sink.get(timeout=120)
            at = now()
            if event.error is not None:
                results[chunk] = {"error": error_text(event.error)}
                break
            if event.rid[2] == 0:
                seen += 1
                if last is not None and added is not None:
                    gaps.append(at - last)
                last = at
                if seen == 20:
                    added = now()
                    runtime.submit(("sweep", chunk, 1), request(args, 301, 8), sink)
            elif first is None:
                first = at - added
            if event.finished:
                done.add(event.rid[2])
        else:
            results[chunk] = {"newcomer_ttft_s": round(first, 4), "running_row_max_gap_ms": round(max(gaps) * 1000, 1),
                              "steps_with_piece": engine.stats()["step_with_piece"]}  # fmt: skip
        log(f"chunk {chunk}: {results[chunk]}")
    engine.prefill_chunk = args.prefill_chunk
    return results


def constrained_check(runtime, args) -> dict:
    """The production path: grammars on (split graphs captured per bucket). 8 requests, half
    descriptions under the English grammar, through the engine and the static batcher: tokens/s,
    and how many answers the grammar accepts."""
    results: dict[str, Any] = {"compile_s": round(runtime.grammars.compile_all(), 2)}
    runtime.stop_engine()
    runtime.engine_options["constrained"] = True
    results["engine"] = build_engine(runtime)
    items = []
    for seed in range(8):
        item = request(args, 400 + seed, 256)
        item.min_new_tokens, item.grammar = 0, "description:en" if seed % 2 == 0 else None
        items.append(item)
    for scheduler in (CONTINUOUS, STATIC, CONTINUOUS):
        runtime.scheduler, texts, started = scheduler, {}, now()
        tokens = 0
        for index, chunk in runtime.stream_batch(items):
            texts[index] = texts.get(index, "") + chunk
            tokens += chunk.tokens
        seconds = now() - started
        accepted = sum(runtime.grammars.matcher("description:en").accept_string(texts[i]) for i in range(0, 8, 2))
        results[f"{scheduler}-{len(results)}"] = {"tokens": tokens, "wall_s": round(seconds, 2),
                                                  "tokens_per_s": round(tokens / seconds, 1),
                                                  "constrained_answers_accepted": f"{accepted}/4"}  # fmt: skip
        log(f"constrained, {scheduler}: {results[f'{scheduler}-{len(results) - 1}']}")
    runtime.stop_engine()
    runtime.engine_options["constrained"] = False
    runtime.scheduler = CONTINUOUS
    return results


def run_checks(args, runtime, peer: Peer, meta: dict) -> None:
    path = args.out / "gpu-load-checks.json"
    results: dict[str, Any] = {**meta, "engine": build_engine(runtime)}
    child, started = args.out / "gpu-load-oom32.json", now()
    limit = max(60.0, min(420.0, args.budget_s - (now() - STARTED)))
    command = [sys.executable, __file__, "--phase", "oom32", "--work", str(args.work), "--out", str(args.out),
               "--tokens", str(args.tokens), "--vram", args.vram, "--budget-s", str(limit - 10)]  # fmt: skip
    command += ["--tiny"] * args.tiny
    try:
        child.unlink(missing_ok=True)
        env = {**os.environ, "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
        code = subprocess.run(command, env=env, timeout=limit, check=False).returncode
        results["oom32"] = json.loads(child.read_text()) if child.exists() else {"error": f"exit status {code}"}
    except Exception as error:  # noqa: BLE001
        results["oom32"] = {"error": error_text(error)}
    results["oom32"]["subprocess_s"] = round(now() - started, 1)
    log(f"oom32 subprocess done in {now() - started:.1f} s")
    write(path, results)

    req = request(args, 1)
    warm(runtime, CONTINUOUS, [req])
    warm(runtime, STATIC, [req])
    runs: dict[str, list] = {"engine": [], "static": []}
    for system in ("engine", "static", "engine", "static"):
        runs[system].append(single(runtime, system, req))
        log(f"one request, {system}: {runs[system][-1]}")
    best = {system: max(run["decode_tok_s"] or 0 for run in values) for system, values in runs.items()}
    ratio = round(best["engine"] / best["static"], 3) if best["static"] else None
    results["single"] = {**runs, "best_decode_tok_s": best, "engine_over_static": ratio}
    write(path, results)

    if not args.skip_sweep:
        results["chunk_sweep"] = chunk_sweep(runtime, args)
        write(path, results)
    results["constrained"] = point("constrained", lambda: constrained_check(runtime, args))
    write(path, results)

    if args.skip_peer:
        return
    try:
        from cb_probe import api_surface

        peer.info["api"] = api_surface()
    except Exception as error:  # noqa: BLE001
        peer.info["api"] = {"error": error_text(error)}
    tokens = min(args.tokens, 32)
    pair = [request(args, 5, tokens), request(args, 6, tokens)]
    smoke = lambda: figures(run_peer(peer, pair, [0.0, 0.0], "smoke", 300, tokens), tokens)  # noqa: E731
    results["peer_smoke"] = point("peer, 2 requests", smoke)
    results["peer"] = peer.info
    write(path, results)
    log(f"written: {path}")


def run_oom32(args) -> None:
    """The subprocess: capped at --vram before loading, then 32 jobs at once through the engine."""
    result: dict[str, Any] = {"vram": args.vram, "submitted": 32, "max_new_tokens": args.tokens}
    try:
        if CUDA:
            fraction = min(1.0, size_bytes(args.vram) / torch.cuda.get_device_properties(0).total_memory)
            torch.cuda.set_per_process_memory_fraction(fraction, 0)
            result["memory_fraction"] = round(fraction, 4)
        result["alloc_conf"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
        runtime = load_runtime(args)
        result["engine"] = build_engine(runtime)
        requests = [request(args, 100 + number) for number in range(32)]
        result["peak_load_and_build_gib"] = gb.peak_gib(reset=True) if CUDA else None
        timeout = max(30.0, args.budget_s - (now() - STARTED))
        result.update(figures(run_engine(runtime, requests, [0.0] * 32, "oom32", timeout, gated=False), args.tokens))
        result["out_of_memory_errors"] = sum(n for kind, n in result["error_kinds"].items() if "OutOfMemory" in kind)
        result["peak_gib"] = gb.peak_gib() if CUDA else None
        runtime.stop_engine()
    except Exception as error:  # noqa: BLE001
        traceback.print_exc()
        result["error"] = error_text(error)
    keys = ("error", "completed", "out_of_memory_errors", "makespan_s", "peak_gib")
    log(f"oom32: { {key: result.get(key) for key in keys} }")
    write(args.out / "gpu-load-oom32.json", result)


def run_load(args, runtime, peer: Peer, meta: dict) -> None:
    path = args.out / "gpu-load.json"
    results: dict[str, Any] = {**meta, "engine": build_engine(runtime), "points": {}}
    size = 4 if args.tiny else STATIC_BATCH
    warm(runtime, STATIC, [request(args, seed) for seed in range(size)])
    warm(runtime, CONTINUOUS, [request(args, 0)])
    runtime.scheduler, started = STATIC, now()
    for _ in runtime.stream_batch([request(args, 200 + seed) for seed in range(size)]):
        pass
    mu_wall = now() - started
    mu = size / mu_wall
    results["static_capacity"] = {"requests": size, "wall_s": round(mu_wall, 3), "mu_jobs_per_s": round(mu, 4)}
    log(f"static capacity: {results['static_capacity']}")
    write(path, results)
    requests = [request(args, seed) for seed in range(args.jobs)]  # built before the clocks start
    walls: dict[str, float] = {}
    for rho in args.loads:
        key = f"{rho:g}"
        arrivals = arrivals_for(rho * mu, args.jobs, seed=17 + round(rho * 1000))
        entry = results["points"][key] = {"rho": rho, "lambda_jobs_per_s": round(rho * mu, 4), "arrivals_s": arrivals}
        for system in SYSTEMS:
            estimate = arrivals[-1] + 1.5 * mu_wall + 10 + (30 if system == "peer" and peer.manager is None else 0)
            # A system slower than the arrivals (the peer took 214 s at 80%) is judged by its own last point.
            estimate = max(estimate, walls.get(system, 0.0))
            if now() - STARTED + estimate > args.budget_s:
                reason = f"budget: at {now() - STARTED:.0f} s, ~{estimate:.0f} s more > {args.budget_s:.0f} s"
                entry[system] = {"skipped": reason}
                log(f"rho={key} {system}: {entry[system]['skipped']}")
                continue
            timeout, tag = max(60.0, 4 * estimate), f"{system}-{key}"
            runs = {"engine": lambda: run_engine(runtime, requests, arrivals, tag, timeout),
                    "static": lambda: run_static(runtime, requests, arrivals, timeout),
                    "peer": lambda: run_peer(peer, requests, arrivals, tag, timeout, args.tokens)}  # fmt: skip
            entry[system] = point(f"rho={key} {system}", lambda: figures(runs[system](), args.tokens))
            walls[system] = entry[system]["wall_s"]
            write(path, results)
    results["peer"] = peer.info
    write(path, results)
    print(table(results), flush=True)
    log(f"written: {path}")


def table(results: dict) -> str:
    lines = ["| rho | system | TTFT p50 / p95 s | latency p50 / p95 s | tok/s | jobs/s | errors | peak reserved GiB |",
             "|---|---|---|---|---|---|---|---|"]
    for key, entry in results["points"].items():
        for system in SYSTEMS:
            f = entry.get(system, {})
            if f.get("ttft_p50_s") is None:
                why = f.get("skipped") or f.get("error") or f.get("error_kinds")
                lines.append(f"| {key} | {system} | {why!s:.70} | | | | | |")
            else:
                lines.append(f"| {key} | {system} | {f['ttft_p50_s']} / {f['ttft_p95_s']} | {f['latency_p50_s']} / "
                             f"{f['latency_p95_s']} | {f['tokens_per_s']} | {f['jobs_per_s']} | {f['errors']} | "
                             f"{(f.get('peak_gib') or {}).get('reserved_gib')} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/diagramsite-bench"), help="where the models are built")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results"))
    parser.add_argument("--phase", choices=("checks", "load", "all", "oom32"), default="all")
    parser.add_argument("--tokens", type=int, default=1024, help="new tokens per job, forced")
    parser.add_argument("--jobs", type=int, default=20, help="jobs per load point")
    parser.add_argument("--loads", type=lambda text: [float(v) for v in text.split(",")], default=[0.8, 1.0, 0.5])
    parser.add_argument("--budget-s", type=float, default=540.0, help="start no point that would end past this")
    parser.add_argument("--vram", default="8GiB", help="MODEL_MAX_VRAM: the engine's budget, and oom32's cap")
    parser.add_argument("--prefill-chunk", type=int, default=2048, help="DESCRIBER_PREFILL_CHUNK for the engine")
    parser.add_argument("--skip-sweep", action="store_true", help="checks: leave out the chunk-size sweep")
    parser.add_argument("--skip-peer", action="store_true", help="checks: leave out the peer's smoke run")
    parser.add_argument("--tiny", action="store_true", help="a CPU smoke run: the tiny model, small sizes")
    parser.add_argument("--peer-batch-tokens", type=int, default=0, help="the peer's max_batch_tokens (0: its own)")
    parser.add_argument("--peer-prefix-sharing", action="store_true", help="let the peer share prompt prefixes")
    args = parser.parse_args()
    if not CUDA and not args.tiny:
        sys.exit("gpu_load.py needs a CUDA GPU (or --tiny).")
    if args.tiny:
        args.tokens, args.jobs = min(args.tokens, 16), min(args.jobs, 6)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.phase == "oom32":
        return run_oom32(args)
    meta = {"gpu": torch.cuda.get_device_name(0) if CUDA else "cpu", "versions": versions(), "args": vars(args),
            "caveats": CAVEATS}  # fmt: skip
    log(f"{meta['gpu']} {meta['versions']}")
    runtime = load_runtime(args)
    peer = Peer(runtime, args)
    try:
        if args.phase in ("checks", "all"):
            run_checks(args, runtime, peer, meta)
        if args.phase in ("load", "all"):
            run_load(args, runtime, peer, meta)
    finally:
        peer.close()
        runtime.stop_engine()


if __name__ == "__main__":
    main()
