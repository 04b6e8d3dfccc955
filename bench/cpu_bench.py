"""CPU-side figures on the ordinary dev machine: what CLIP retrieval adds to a job, and how fast the
history page answers under load. They print figures; they are not tests.

    python bench/cpu_bench.py retrieval [--examples 1000] [--runs 20]
    python bench/cpu_bench.py history [--conversions 200] [--connections 50] [--seconds 20]

Both use their own database (POSTGRES_DB, default ``diagramsite_bench``; created and migrated if
missing) and the project's code: ``load_for_model`` + ``describing.retrieve`` (CLIP embedding,
``Example.objects.nearest``, saving the examples used) with clip-ViT-B-32's architecture and random
weights; daphne serving the app and wrk as the load, logged in with a real session cookie.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")
os.environ.setdefault("POSTGRES_DB", "diagramsite_bench")
os.environ.setdefault("CHANNELS_PREFIX", "dsbench")

MODELS_DIR = ROOT / "var" / "bench-models"


def setup_django() -> None:
    import django
    import psycopg

    name = os.environ["POSTGRES_DB"]
    admin = {key: os.environ.get(f"POSTGRES_{key.upper()}", default) for key, default in
             (("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"), ("password", ""))}
    with psycopg.connect(dbname="postgres", autocommit=True, **admin) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


# --- CLIP embedding + retrieval ----------------------------------------------------------------


def bench_retrieval(examples: int, runs: int, float32: bool = False) -> None:
    import torch
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from PIL import Image, ImageDraw

    from describer.images import load_for_model
    from describer.inference.loading import load_clip
    from describer.inference.runtime import DescriberRuntime
    from describer.inference.tiny import build_random_clip_vit_b32
    from describer.models import Conversion, Example
    from describer.describing import retrieve

    clip_dir = MODELS_DIR / "clip_vit_b32_random"
    if not (clip_dir / "modules.json").exists():
        build_random_clip_vit_b32(clip_dir)
    clip = load_clip(str(clip_dir), "")
    if float32:
        clip.to(torch.float32)  # for comparison: what load_clip does on CPUs without native bf16
    parameters = sum(p.numel() for p in clip.parameters())
    runtime = DescriberRuntime(model=None, processor=None, clip=clip, model_name="bench")

    seed_examples(examples)
    user, _ = get_user_model().objects.get_or_create(username="bench-retrieval")
    job = Conversion.objects.create(owner=user, kind=Conversion.Kind.DIAGRAM_TO_TEXT)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "diagram.png"
        image = Image.new("RGB", (1600, 1200), "white")
        draw = ImageDraw.Draw(image)
        for row in range(6):
            draw.rectangle((200, 60 + row * 180, 700, 180 + row * 180), outline="black", width=4)
            draw.text((240, 110 + row * 180), f"Step {row}", fill="black")
        image.save(path)

        timings: dict[str, list[float]] = {"preprocessing": [], "embedding": [], "nearest": [], "retrieve": [], "total": []}
        # retrieve = embedding + nearest + saving the examples used; the two below time its parts again.
        for run in range(runs + 2):  # two warm-ups
            started = time.perf_counter()
            loaded = load_for_model(path, settings.DESCRIBER_MAX_PIXELS)
            preprocessed = time.perf_counter()
            retrieve(runtime, job, loaded)  # embedding + nearest + saving the examples used
            finished = time.perf_counter()
            embedding = runtime.embed_image(loaded)
            embedded = time.perf_counter()
            list(Example.objects.nearest(embedding, k=settings.RETRIEVAL_K, max_distance=2.0))
            searched = time.perf_counter()
            if run >= 2:
                timings["preprocessing"].append(preprocessed - started)
                timings["retrieve"].append(finished - preprocessed)
                timings["total"].append(finished - started)
                timings["embedding"].append(embedded - finished)
                timings["nearest"].append(searched - embedded)
    job.delete()
    print(f"CLIP: clip-ViT-B-32 architecture, random weights, {parameters / 1e6:.0f} M parameters, "
          f"torch {torch.__version__} on the CPU with {torch.get_num_threads()} threads")
    print(f"examples in the table: {Example.objects.embedded().count()}; median of {runs} runs, 1600x1200 PNG")
    for name, values in timings.items():
        print(f"  {name:14s} {median_ms(values):7.1f} ms   (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})")
    print(f"added to a job by CLIP embedding + retrieval (describing.retrieve): {median_ms(timings['retrieve'])} ms "
          f"median (target <= 100 ms); the image preprocessing every job needs anyway (load_for_model): "
          f"{median_ms(timings['preprocessing'])} ms; CLIP weights in {next(clip.parameters()).dtype}")


def seed_examples(count: int) -> None:
    import numpy as np

    from describer.models import Example

    have = Example.objects.filter(name__startswith="bench-").count()
    if have >= count:
        return
    generator = np.random.default_rng(1)
    vectors = generator.normal(size=(count - have, 512))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    Example.objects.bulk_create(
        Example(
            name=f"bench-{have + index}",
            image=f"examples/bench-{have + index}.png",
            description=f"# Process {have + index}\n\n## Steps\n1. Start.\n2. Finish.",
            embedding=vector.tolist(),
            embedding_model="bench",
        )
        for index, vector in enumerate(vectors)
    )


# --- The history page under load --------------------------------------------------------------


def bench_history(conversions: int, connections: int, seconds: int, threads: int) -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install wrk).")
    user = seed_history(conversions)
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    port = free_port()
    access_log = open(ROOT / "var" / "bench-daphne.log", "w")  # noqa: SIM115 - closed with the server
    # The same settings as this process (secret key included, or the session cookie is refused).
    env = {**os.environ, "DJANGO_DEBUG": "0", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-v", "1", "-b", "127.0.0.1", "-p", str(port), "diagramsite.asgi:application"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=access_log, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_listening(port, server)
        check_logged_in(url, cookie, get_user_model().objects.get(pk=user.pk))
        print(f"history of {conversions} conversions ({settings.HISTORY_PAGE_SIZE} a page), daphne, "
              f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.2f} before the runs")
        runs = (
            ("1 client", url, 1, 0),
            (f"{connections} clients, closed loop", url, connections, 0),
            (f"{connections} clients, 1 request/s each", url, connections, 1000),
            # The server's own ceiling: a static file through daphne and WhiteNoise, no view at all.
            (f"static file, {connections} clients, closed loop", f"{url}static/css/site.css", connections, 0),
        )
        for label, target, clients, think_ms in runs:
            output = run_wrk(target, cookie, clients, seconds, threads, think_ms)
            print(f"  {label:42s} {summarise_wrk(output)}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # daphne waits for open connections; this is a benchmark
            server.kill()
            server.wait()


def seed_history(count: int):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from describer.models import Conversion

    user, _ = get_user_model().objects.get_or_create(username="bench-history")
    have = Conversion.objects.filter(owner=user).count()
    random.seed(1)
    rows = []
    for index in range(have, count):
        kind = Conversion.Kind.DIAGRAM_TO_TEXT if index % 3 else Conversion.Kind.TEXT_TO_DIAGRAM
        rows.append(Conversion(
            owner=user, kind=kind, status=Conversion.Status.DONE, stage=Conversion.Stage.FINISHED,
            title=f"Order approval process {index}", original_filename=f"diagram-{index}.png",
            input_image=f"uploads/bench/{index}.png" if kind == Conversion.Kind.DIAGRAM_TO_TEXT else "",
            input_thumbnail=f"uploads/bench/{index}-thumb.jpg" if kind == Conversion.Kind.DIAGRAM_TO_TEXT else "",
            input_text="Describe the process. " * 40 if kind == Conversion.Kind.TEXT_TO_DIAGRAM else "",
            output_raw="The customer submits an order. " * 60, output_text="# Order approval\n" + "1. Step.\n" * 40,
            output_structure={"title": "Order approval", "steps": [{"text": "Step"}] * 20},
            output_mermaid="flowchart TD\n" + "    A --> B\n" * 20 if kind == Conversion.Kind.TEXT_TO_DIAGRAM else "",
            tokens_generated=400, timings={"tokens": 400}, finished_at=timezone.now(),
        ))
    Conversion.objects.bulk_create(rows)
    return user


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"daphne exited; see {ROOT / 'var' / 'bench-daphne.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    sys.exit("daphne did not start within 30 s")


def check_logged_in(url: str, cookie: str, user) -> None:
    import urllib.request

    request = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read().decode()
    if response.status != 200 or "Order approval process" not in body:
        sys.exit(f"the history page did not show {user}'s conversions (status {response.status}).")


def run_wrk(url: str, cookie: str, connections: int, seconds: int, threads: int, think_ms: int = 0) -> str:
    """wrk's latency figures; with `think_ms`, each connection waits that long between requests
    (a person reading the page), through wrk's Lua `delay()` hook."""
    # A 10 s timeout: wrk's default (2 s) drops slower answers from the latency figures.
    command = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency",
               "-H", f"Cookie: {cookie}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if think_ms:
            script.write(f"function delay() return {think_ms} end\n")
            script.flush()
            command += ["-s", script.name]
        return subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout


def summarise_wrk(output: str) -> str:
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.MULTILINE))
    rate = re.search(r"Requests/sec:\s+(\S+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return (f"median {percentiles.get('50')}, p90 {percentiles.get('90')}, p99 {percentiles.get('99')}, "
            f"{rate.group(1) if rate else '?'} requests/s, non-2xx: {errors.group(1) if errors else 0}, "
            f"socket errors: {socket_errors.group(1) if socket_errors else 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    retrieval = commands.add_parser("retrieval")
    retrieval.add_argument("--examples", type=int, default=1000)
    retrieval.add_argument("--runs", type=int, default=20)
    retrieval.add_argument("--float32", action="store_true", help="CLIP in float32 even where bf16 is native")
    history = commands.add_parser("history")
    history.add_argument("--conversions", type=int, default=200)
    history.add_argument("--connections", type=int, default=50)
    history.add_argument("--seconds", type=int, default=20)
    history.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    setup_django()
    if args.command == "retrieval":
        bench_retrieval(args.examples, args.runs, args.float32)
    else:
        bench_history(args.conversions, args.connections, args.seconds, args.threads)


if __name__ == "__main__":
    main()
